#!/usr/bin/env bash
# A short GPU call for kernel work: builds only the kernel test and benchmark programs, runs the kernel
# tests, times chosen attention points and profiles some of them (tests/gpu/profile.sh), once for each
# variant. Variants are environment settings that a kernel under experiment reads (getenv in the launcher),
# e.g. VARIANTS="default MY_SWITCH=1"; "default" runs with none.
# POINTS: "s,batch,context" triples to time (s = 0: dense); PROFILE: the ones to profile.
# Usage on the GPU machine: OUT=<folder> tests/gpu/kernels.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
ggml="$PWD/artifacts/gpu/ggml"
build=artifacts/gpu/build
cmake -S native -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR="$ggml" -DMUSTAFAR_CUDA=ON > "$OUT/cmake.txt" 2>&1 || { tail -30 "$OUT/cmake.txt"; exit 1; }
cmake --build "$build" --target cuda_kernel_tests attention_cuda_bench > "$OUT/build.txt" 2>&1 || { grep -E "error" "$OUT/build.txt" | head -30; exit 1; }
grep -A2 "mma_kernel" "$OUT/build.txt" | grep -E "Used" | head -8
for variant in ${VARIANTS:-default}; do
  vars=()
  [ "$variant" != default ] && vars=("$variant")
  name="${variant//[^A-Za-z0-9_.-]/_}"  # a file name
  echo "== $variant"
  env "${vars[@]}" "$build/cuda_kernel_tests" 1 > "$OUT/kernel-tests-$name.txt" 2>&1
  tail -1 "$OUT/kernel-tests-$name.txt"
  grep FAIL "$OUT/kernel-tests-$name.txt" | head -5
  for point in ${POINTS:-"0.7,8,32768"}; do
    IFS=, read -r s batch ctx <<< "$point"
    env "${vars[@]}" "$build/attention_cuda_bench" --one "$s" "$batch" "$ctx"
  done
  if [ -n "${PROFILE:-}" ]; then
    mkdir -p "$OUT/ncu-$name"
    env "${vars[@]}" OUT="$OUT/ncu-$name" bash tests/gpu/profile.sh $PROFILE
  fi
done
