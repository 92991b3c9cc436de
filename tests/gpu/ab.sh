#!/usr/bin/env bash
# A/B timing of the attention kernels on one machine: the work tree's native/src/cuda/attention_decode.cu
# against a reference copy of that file (REF, default artifacts/gpu/ref/attention_decode.cu; make it with
# `git show <commit>:native/src/cuda/attention_decode.cu > artifacts/gpu/ref/attention_decode.cu` and carry
# artifacts/gpu/ref). Dense times of one point differ by a few per cent between machines of one kind, so a
# change is judged against its reference in the same call. Both builds run the kernel tests.
# POINTS: "s,batch,context[,splits]" (s = 0: dense; splits 0 or absent: the launcher's choice).
# Usage on the GPU machine: OUT=<folder> POINTS="..." tests/gpu/ab.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
ref="${REF:-artifacts/gpu/ref/attention_decode.cu}"
[ -f "$ref" ] || { echo "missing $ref" >&2; exit 1; }
ggml="$PWD/artifacts/gpu/ggml"
src=native/src/cuda/attention_decode.cu
mkdir -p "$OUT"
cp "$src" "$OUT/new-attention_decode.cu"
trap 'cp "$OUT/new-attention_decode.cu" "$src"' EXIT
for tree in new ref; do
  build="artifacts/gpu/build-$tree"
  [ "$tree" = ref ] && cp "$ref" "$src"
  cmake -S native -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR="$ggml" -DMUSTAFAR_CUDA=ON > "$OUT/cmake-$tree.txt" 2>&1 ||
    { tail -30 "$OUT/cmake-$tree.txt"; exit 1; }
  cmake --build "$build" --target cuda_kernel_tests attention_cuda_bench > "$OUT/build-$tree.txt" 2>&1 ||
    { grep -E "error" "$OUT/build-$tree.txt" | head -30; exit 1; }
  "$build/cuda_kernel_tests" 1 > "$OUT/kernel-tests-$tree.txt" 2>&1
  echo "$tree kernel tests: $(tail -1 "$OUT/kernel-tests-$tree.txt")"
done
cp "$OUT/new-attention_decode.cu" "$src"
# Alternate the two builds point by point, so that a drift of the machine hits both alike.
for point in ${POINTS:-"0.7,8,32768"}; do
  IFS=, read -r s batch ctx splits <<< "$point"
  for tree in new ref; do
    printf '%s ' "$tree"
    "artifacts/gpu/build-$tree/attention_cuda_bench" --one "$s" "$batch" "$ctx" "${splits:-0}"
  done
done | tee "$OUT/ab.txt"
