#!/usr/bin/env bash
# The products of batched decode steps on the GPU machine, in one call: builds the library, op_conformance and
# few_columns_cuda_bench; runs the benchmark (few-column kernel against cuBLAS on the Llama-3-8B shapes), then
# op_conformance (OP_SEEDS, default "1 2"), then, where POINTS is set, tests/gpu/e2e-variants.sh with
# VARIANTS (default "default MUSTAFAR_FEW_COLUMNS=0") on the unpacked publish. Results in $OUT.
# Usage on the GPU machine: COMMIT=<sha> OUT=<folder> [POINTS="0,8,4096 0,4,4096" ROUNDS=2] tests/gpu/products.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}" "${COMMIT:?set COMMIT}"
mkdir -p "$OUT"
source tests/gpu/publish-lib.sh
cmake -S native -B artifacts/gpu/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR="$PWD/artifacts/gpu/ggml" -DMUSTAFAR_CUDA=ON \
  > "$OUT/cmake.txt" 2>&1 || { tail -30 "$OUT/cmake.txt"; exit 1; }
cmake --build artifacts/gpu/build --target ggml-mustafar op_conformance few_columns_cuda_bench > "$OUT/build.txt" 2>&1 ||
  { grep -E "error" "$OUT/build.txt" | head -20; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
artifacts/gpu/build/few_columns_cuda_bench "$OUT/few-columns.md" "$COMMIT" > "$OUT/few-columns.txt" 2>&1
echo "few_columns_cuda_bench rc=$?"
cat "$OUT/few-columns.txt"
# PROFILE=1: Nsight Compute on the Q shape at 8 columns (few_columns_cuda_bench --profile runs cuBLAS, then ours,
# 20 times each): our kernel's sixth launch.
if [ "${PROFILE:-0}" = 1 ]; then
  ncu --clock-control none --section SpeedOfLight --section Occupancy --section MemoryWorkloadAnalysis --section LaunchStats \
    -k regex:few_columns --launch-skip 5 --launch-count 1 artifacts/gpu/build/few_columns_cuda_bench --profile > "$OUT/ncu-ours.txt" 2>&1
  grep -E "Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy|L1/TEX Hit|L2 Hit" "$OUT/ncu-ours.txt"
fi
status=0
for seed in ${OP_SEEDS:-1 2}; do
  artifacts/gpu/build/op_conformance "$seed" > "$OUT/op_conformance-$seed.txt" 2>&1 || status=1
  tail -1 "$OUT/op_conformance-$seed.txt"
done
grep -h FAIL "$OUT"/op_conformance-*.txt
if [ -n "${POINTS:-}" ]; then
  unpack_publish artifacts/gpu/build/libggml-mustafar.so
  VARIANTS="${VARIANTS:-default MUSTAFAR_FEW_COLUMNS=0}" tests/gpu/e2e-variants.sh
fi
exit $status
