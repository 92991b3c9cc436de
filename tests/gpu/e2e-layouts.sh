#!/usr/bin/env bash
# The two cache layouts (MustafarCacheLayout) end to end through samples/Mustafar.Bench on the CUDA flavour:
#  1. greedy text of 4 concurrent requests (tests/gpu/layout-digests.sh: story prompts on the stories model, recall
#     prompts on recall-hd128-q8_0) at s = 0 and 0.7 in each layout, against the CPU flavour's
#     (artifacts/gpu/expected/layouts.txt from tests/gpu/prepare.sh --e2e);
#  2. the Llama-3-8B-shaped model at POINTS ("s,batch,context"; s = 0: dense), each layout in turn, with
#     MUSTAFAR_PROFILE=graphs (the backend's account of the decode graphs: host issue, wait, time between graphs).
# After tests/gpu/run.sh (library built, publish unpacked). Usage on the GPU machine:
#   OUT=<folder> POINTS="0,8,32768 0.7,8,32768" tests/gpu/e2e-layouts.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
app=artifacts/gpu/publish
model=artifacts/gpu/llama3-8b-f16.gguf
[ -x "$app/Mustafar.Bench" ] || { echo "missing $app/Mustafar.Bench: run tests/gpu/run.sh first" >&2; exit 1; }
mkdir -p "$OUT"
status=0
tests/gpu/layout-digests.sh "$app" artifacts/gpu/models "$OUT/layouts-cuda.txt" || status=1
if diff artifacts/gpu/expected/layouts.txt "$OUT/layouts-cuda.txt"; then
  echo "layouts: greedy text as the CPU flavour's"
else
  echo "layouts: FAILED"
  diff artifacts/gpu/expected/layouts.txt.texts "$OUT/layouts-cuda.txt.texts"
  status=1
fi
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader)"
for point in ${POINTS-"0,8,32768"}; do  # POINTS="": the digests alone
  IFS=, read -r s batch ctx <<< "$point"
  for layout in shared per-request; do
    run="s$s-b$batch-$ctx-$layout"
    MUSTAFAR_PROFILE=graphs timeout "${POINT_LIMIT:-200}" "$app/Mustafar.Bench" --generate-llama3-8b --model "$model" --contexts "$ctx" \
      --batches "$batch" --decode-tokens "${DECODE_TOKENS:-70}" --k-sparsity "$s" --v-sparsity "$s" --cache-layout "$layout" \
      --title "End-to-end, s = $s, batch $batch, $ctx, cache layout $layout: $gpu" --out "$OUT/$run.md" > "$OUT/$run.txt" 2>&1
    echo "$run rc=$? $(grep -h "^| [0-9]" "$OUT/$run.md" 2>/dev/null)"
    grep -h "decode graphs, per graph" "$OUT/$run.txt" | tail -1 | sed 's/.*profile: /  /'
  done
done
exit $status
