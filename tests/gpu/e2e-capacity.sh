#!/usr/bin/env bash
# How many concurrent 32K-cell requests one GPU holds end to end: samples/Mustafar.Bench loads the generated
# Llama-3-8B-shaped F16 model with MaxConcurrentRequests = N and ContextSize = N x 32768 (per-request layout: each
# request its own 32768 cells), dense or with the store, and decodes 16 tokens for each of N short prompts. llama.cpp
# allocates every cell at load, so a load that fits holds N full 32K contexts; one that does not is refused with
# llama.cpp's reason. POINTS: "s,N" pairs (default: the limits found on an H200, dense 31 and 32, s = 0.7 80 and 84;
# issue 5 asks 2.4x dense's count).
# Peak GPU memory comes from nvidia-smi, sampled every 0.5 s. Builds the library and unpacks the carried publish
# (tests/gpu/prepare.sh --e2e) as e2e-bench.sh does. Usage on the GPU machine: OUT=<folder> tests/gpu/e2e-capacity.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
app=artifacts/gpu/publish
model=artifacts/gpu/llama3-8b-f16.gguf
mkdir -p "$OUT"
# shellcheck source=tests/gpu/publish-lib.sh
. tests/gpu/publish-lib.sh
build_publish
# Short prompts of the synthetic vocabulary's characters (one token each), one a line.
python3 -c "
import random
random.seed(5)
chars = 'abcdefghijklmnopqrstuvwxyz0123456789'
for _ in range(256): print(''.join(random.choice(chars) for _ in range(200)))" > "$OUT/prompts.txt"
gpu="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader)"
echo "GPU: $gpu"
for point in ${POINTS:-0,31 0,32 0.7,80 0.7,84}; do
  IFS=, read -r s n <<< "$point"
  run="s$s-n$n"
  (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.5; done) > "$OUT/$run-memory.txt" 2>/dev/null &
  sampler=$!
  timeout "${POINT_LIMIT:-300}" "$app/Mustafar.Bench" --generate-llama3-8b --model "$model" --contexts 32768 --batches "$n" \
    --decode-tokens 16 --k-sparsity "$s" --v-sparsity "$s" --cache-layout per-request --prompts "$OUT/prompts.txt" \
    --title "Capacity, s = $s, $n requests of 32768 cells: $gpu" --out "$OUT/$run.md" > "$OUT/$run.txt" 2>&1
  rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  peak=$(sort -n "$OUT/$run-memory.txt" | tail -1)
  echo "$run rc=$rc peak ${peak:-?} MiB; $(grep -h -m1 "loaded in" "$OUT/$run.txt") $(grep -h -m1 "^error" "$OUT/$run.txt")"
  grep -h "^| [0-9]" "$OUT/$run.md" 2>/dev/null || true  # a refused load has no table
done
