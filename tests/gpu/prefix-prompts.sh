#!/usr/bin/env bash
# Whether the prefixes that earlier points leave cached slow a later long prompt: in the end-to-end grid
# (e2e-bench.sh) the batch-8, 32K prompts ran at a third to a half of their speed alone, until the prompt kernel
# skipped the tiles its rows do not see (cda1a94). Runs the Bench's batch-BATCH prompts of CONTEXT tokens alone, then after a point of BEFORE tokens in the same client (whose
# prompts stay cached in the shared pool), each with MUSTAFAR_PROFILE=$PROFILE (graphs, the default, or 1: also
# per kind of node, with events around each node; 0: none, and graphs are then queued without waiting for them,
# as without the profile); prompt-accounts.py splits the profile's running
# prompt-graph account at the points. SPARSITY: K and V sparsity (0, the default: a dense cache).
# LIB: another build of our library to run instead of the work tree's (an A/B on one machine).
# Usage on the GPU machine: COMMIT=<sha> OUT=<folder> BATCH=8 CONTEXT=32768 BEFORE=16384 tests/gpu/prefix-prompts.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}" "${COMMIT:?set COMMIT}"
# shellcheck source=tests/gpu/publish-lib.sh
. tests/gpu/publish-lib.sh
build_publish
[ -z "${LIB:-}" ] || cp "$LIB" artifacts/gpu/publish/runtimes/linux-x64/native/libggml-mustafar.so || exit 1
batch="${BATCH:-8}" context="${CONTEXT:-32768}" before="${BEFORE:-16384}"
# ALONE=0 skips the run alone.
runs=("$before,$context"); [ "${ALONE:-1}" = 1 ] && runs=("$context" "${runs[@]}")
for contexts in "${runs[@]}"; do
  run="b$batch-${contexts/,/-}"
  MUSTAFAR_PROFILE="${PROFILE:-graphs}" artifacts/gpu/publish/Mustafar.Bench --generate-llama3-8b --model artifacts/gpu/llama3-8b-f16.gguf \
    --contexts "$contexts" --batches "$batch" --decode-tokens "${DECODE_TOKENS:-16}" --k-sparsity "${SPARSITY:-0}" --v-sparsity "${SPARSITY:-0}" \
    --title "Prompts after cached prefixes: $(nvidia-smi --query-gpu=name --format=csv,noheader), commit $COMMIT" \
    --out "$OUT/$run.md" > "$OUT/$run.txt" 2>&1
  echo "$run rc=$?"
  grep -h "^| [0-9]" "$OUT/$run.md" 2>/dev/null || tail -5 "$OUT/$run.txt"
  python3 tests/gpu/prompt-accounts.py "$OUT/$run.txt"
done
