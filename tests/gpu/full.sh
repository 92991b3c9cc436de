#!/usr/bin/env bash
# One complete GPU session in one call: tests/gpu/run.sh (build, tests, attention table, end to end at
# batch 8, 16K dense and s = 0.7), then the end-to-end decode at batch 1, 32K, a per-op profile of a
# batch-1, 4K decode (MUSTAFAR_PROFILE=1) and decodes at 4K with and without fusion. Everything lands in
# one archive, $OUT/o.tgz. BENCH=0 skips the attention table (run.sh).
# Usage on the GPU machine: COMMIT=<sha from the build machine> OUT=<folder> tests/gpu/full.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}" "${COMMIT:?set COMMIT}"
o=/tmp/full-o
rm -rf "$o" && mkdir -p "$o"
bench=artifacts/gpu/publish/Mustafar.Bench
model=artifacts/gpu/llama3-8b-f16.gguf
(COMMIT=$COMMIT OUT=$o E2E_BENCH=1 E2E_SPARSITY="0.7 0" BENCH_CONTEXTS=16384 BENCH_BATCHES=8 timeout "${RUN_LIMIT:-420}" \
  bash tests/gpu/run.sh > "$o/run.txt" 2>&1; echo "rc=$?" >> "$o/run.txt")
for s in 0.7 0; do
  timeout 45 "$bench" --model "$model" --contexts 32768 --batches 1 --decode-tokens 64 --k-sparsity $s --v-sparsity $s \
    --title "End-to-end, batch 1, 32K, s = $s: $(nvidia-smi --query-gpu=name --format=csv,noheader), commit $COMMIT" \
    --out "$o/b1-32k-s$s.md" > "$o/b1-32k-s$s.txt" 2>&1
done
MUSTAFAR_PROFILE=1 timeout 40 "$bench" --model "$model" --contexts 4096 --batches 1 --decode-tokens 130 \
  --out "$o/profile-b1-4k.md" > "$o/profile-b1-4k.txt" 2>&1
# Decode at 4K, batch 1 and 8, dense, with and without fusion (fusion_cuda.h): the weights-bandwidth floor.
for fusion in on off; do
  if [ $fusion = off ]; then export MUSTAFAR_NO_FUSION=1; else unset MUSTAFAR_NO_FUSION; fi
  timeout 60 "$bench" --model "$model" --contexts 4096 --batches 1,8 --decode-tokens 130 \
    --title "End-to-end, 4K, dense, fusion $fusion: $(nvidia-smi --query-gpu=name --format=csv,noheader), commit $COMMIT" \
    --out "$o/4k-fusion-$fusion.md" > "$o/4k-fusion-$fusion.txt" 2>&1
done
unset MUSTAFAR_NO_FUSION
tar -czf "$OUT/o.tgz" -C /tmp full-o
tail -60 "$o/run.txt"
grep -H "^| [18] " "$o"/b1-*.md "$o"/4k-*.md "$o/profile-b1-4k.md" 2>/dev/null
grep -h "profile" "$o/profile-b1-4k.txt" | tail -14
