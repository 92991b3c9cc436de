#!/usr/bin/env bash
# A syntax and type check of the CUDA sources on a machine without a CUDA toolkit (the build machine): clang's CUDA
# front end, device side (sm_80) and host side, against our own stand-ins for the CUDA headers in
# tests/gpu/syntax/ (declarations only, nothing is compiled or linked). It catches what a C++ compiler catches
# before the GPU machine's nvcc does; it does not see the sm_90 paths (clang 14 knows no sm_90) or PTX.
# --cuda-path points nowhere so that a CUDA toolkit installed on the machine (Debian's, for SASS) is not detected.
# Usage: tests/gpu/syntax-check.sh [file.cu ...]   (default: every .cu under native/ but one, below)
set -uo pipefail
cd "$(dirname "$0")/../.."
clang=$(command -v clang++-14 || command -v clang++) || { echo "needs clang++ (14 or newer)" >&2; exit 1; }
files=("$@")
# merge_cuda_bench is left out: thread block clusters are compute capability 9.0 only.
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(find native -name '*.cu' ! -name merge_cuda_bench.cu | sort)
status=0
for f in "${files[@]}"; do
  for side in --cuda-device-only --cuda-host-only; do
    out=$("$clang" -x cuda -nocudainc -nocudalib -include cuda_runtime.h "$side" --cuda-gpu-arch=sm_80 -std=c++17 -fsyntax-only --cuda-path=/nonexistent-cuda \
      -Xclang -fcuda-allow-variadic-functions -Itests/gpu/syntax -Inative/src -Inative/src/cuda -Inative/include -Inative/tests -Inative/bench "$f" 2>&1)
    if [ -n "$out" ]; then
      echo "== $f ($side)"
      echo "$out" | grep -E "error|warning" | head -20
      status=1
    fi
  done
done
[ $status = 0 ] && echo "syntax check: ${#files[@]} files, no errors or warnings"
exit $status
