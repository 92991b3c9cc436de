#!/usr/bin/env bash
# End-to-end benchmark only, for long runs that do not fit beside the tests (tests/gpu/full.sh): builds
# just the library, unpacks the carried publish (tests/gpu/prepare.sh --e2e) and runs samples/Mustafar.Bench
# on the generated Llama-3-8B-shaped model for each sparsity in SPARSITY (0: dense cache). LAYOUT: the Bench's
# --cache-layout (shared, the default, or per-request: MustafarCacheLayout).
# Usage on the GPU machine: COMMIT=<sha> OUT=<folder> CONTEXTS=32768 BATCHES=8 SPARSITY="0.7 0" tests/gpu/e2e-bench.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}" "${COMMIT:?set COMMIT}"
# shellcheck source=tests/gpu/publish-lib.sh
. tests/gpu/publish-lib.sh
build_publish
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader)"
for s in ${SPARSITY:-0.7 0}; do
  if [ "$s" = 0 ]; then cache="dense f16 cache"; else cache="Mustafar cache, K and V sparsity $s"; fi
  artifacts/gpu/publish/Mustafar.Bench --generate-llama3-8b --model artifacts/gpu/llama3-8b-f16.gguf \
    --contexts "${CONTEXTS:-32768}" --batches "${BATCHES:-8}" --decode-tokens "${DECODE_TOKENS:-64}" --k-sparsity "$s" --v-sparsity "$s" \
    --cache-layout "${LAYOUT:-shared}" --title "End-to-end throughput, $cache, cache layout ${LAYOUT:-shared}: $gpu, commit $COMMIT" --out "$OUT/e2e-s$s.md" > "$OUT/e2e-s$s.txt" 2>&1
  echo "s=$s rc=$?"; grep "^| [0-9]" "$OUT/e2e-s$s.md" 2>/dev/null || tail -5 "$OUT/e2e-s$s.txt"
done
