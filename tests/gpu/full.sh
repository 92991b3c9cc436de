#!/usr/bin/env bash
# One complete GPU session in one call; everything lands in one archive, $OUT/o.tgz:
# 1. tests/gpu/run.sh: build, tests, attention table (BENCH=0 skips it), end to end at batch 8 and
#    B8_CONTEXT cells (default 16384) with the store at s = 0.7 and dense;
# 2. with CUDA graphs off (MUSTAFAR_CUDA_GRAPHS=0): op_conformance and the dense end-to-end outputs;
# 3. end-to-end decode at batch 1, 32K (s = 0.7 and dense) and a per-op profile of a batch-1, 4K decode;
# 4. dense decodes at 4K, batch 1 and 8: as shipped, without CUDA graphs, without graphs and fusion.
# Usage on the GPU machine: COMMIT=<sha from the build machine> OUT=<folder> tests/gpu/full.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}" "${COMMIT:?set COMMIT}"
o=/tmp/full-o
rm -rf "$o" && mkdir -p "$o"
bench=artifacts/gpu/publish/Mustafar.Bench
model=artifacts/gpu/llama3-8b-f16.gguf
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader)"
(COMMIT=$COMMIT OUT=$o E2E_BENCH=1 E2E_SPARSITY="0.7 0" BENCH_CONTEXTS="${B8_CONTEXT:-16384}" BENCH_BATCHES=8 timeout "${RUN_LIMIT:-420}" \
  bash tests/gpu/run.sh > "$o/run.txt" 2>&1; echo "rc=$?" >> "$o/run.txt")

MUSTAFAR_CUDA_GRAPHS=0 artifacts/gpu/build/op_conformance 4 > "$o/op_conformance-nographs.txt" 2>&1
echo "op_conformance without CUDA graphs: $(tail -1 "$o/op_conformance-nographs.txt")" >> "$o/run.txt"
MUSTAFAR_CUDA_GRAPHS=0 tests/gpu/e2e.sh artifacts/gpu/publish artifacts/gpu/models "$o/e2e-cuda-s0-nographs.txt" 0
if cmp -s "$o/e2e-cuda-s0-nographs.txt" artifacts/gpu/expected/e2e-s0.txt; then
  echo "e2e s=0 without CUDA graphs: identical to the CPU flavour" >> "$o/run.txt"
else
  echo "e2e s=0 without CUDA graphs: DIFFERS from the CPU flavour" >> "$o/run.txt"
fi

for s in 0.7 0; do
  timeout 45 "$bench" --model "$model" --contexts 32768 --batches 1 --decode-tokens 64 --k-sparsity $s --v-sparsity $s \
    --title "End-to-end, batch 1, 32K, s = $s: $gpu, commit $COMMIT" --out "$o/b1-32k-s$s.md" > "$o/b1-32k-s$s.txt" 2>&1
done
MUSTAFAR_PROFILE=1 timeout 40 "$bench" --model "$model" --contexts 4096 --batches 1 --decode-tokens 130 \
  --out "$o/profile-b1-4k.md" > "$o/profile-b1-4k.txt" 2>&1

# The weights-bandwidth floor: what CUDA graphs (replay_cuda.h) and fusion (fusion_cuda.h) take off a step.
for variant in shipped no-graphs no-graphs-no-fusion; do
  case $variant in
    shipped) vars=() ;;
    no-graphs) vars=(MUSTAFAR_CUDA_GRAPHS=0) ;;
    no-graphs-no-fusion) vars=(MUSTAFAR_CUDA_GRAPHS=0 MUSTAFAR_NO_FUSION=1) ;;
  esac
  env "${vars[@]}" timeout 60 "$bench" --model "$model" --contexts 4096 --batches 1,8 --decode-tokens 130 \
    --title "End-to-end, 4K, dense, $variant: $gpu, commit $COMMIT" --out "$o/4k-$variant.md" > "$o/4k-$variant.txt" 2>&1
done
tar -czf "$OUT/o.tgz" -C /tmp full-o
tail -40 "$o/run.txt"
grep -H "^| [18] " "$o"/b1-*.md "$o"/4k-*.md "$o/profile-b1-4k.md" 2>/dev/null
grep -h "profile" "$o/profile-b1-4k.txt" | tail -14
grep -h "replayed\|CUDA graph" "$o"/op_conformance-*.txt "$o"/*.txt 2>/dev/null | sort | uniq -c | head
