#!/usr/bin/env bash
# On the build machine (no GPU): a kernel file's registers and spills and, per kernel, the order of its global
# loads and tensor-core MMAs in SASS, to see before a GPU call whether nvcc keeps a lane's loads together (the
# few-column kernel lost 1.5x when it did not, bench/results/gpu-products-2026-12-02.md). Needs an nvcc: Debian's
# nvidia-cuda-toolkit (11.8, in the non-free component) serves for files without CUDA 12 features (the attention
# kernels' bulk copies need 12). The GPU machine's nvcc 13.0 may schedule differently: the benchmark decides.
# Usage: tests/gpu/sass-local.sh native/src/cuda/few_columns_cuda.cu [sm_90]
set -euo pipefail
cd "$(dirname "$0")/../.."
file=$1 arch=${2:-sm_90}
command -v nvcc >/dev/null || { echo "needs nvcc (apt-get install nvidia-cuda-toolkit, non-free)" >&2; exit 1; }
host=$(command -v clang++-14 || command -v g++)
out=$(mktemp -d)
nvcc -ccbin "$host" -std=c++17 -arch="$arch" -O3 -cubin -Xptxas -v -Inative/src -Inative/src/cuda -Inative/include \
  -o "$out/k.cubin" "$file" 2>&1 | grep -E "Compiling entry|registers|spill" | sed 's/ptxas info    : //'
# Per kernel: its loads (L), MMAs (M), conversions to f16 pairs (C) and branches (B) in program order.
cuobjdump -sass "$out/k.cubin" | awk '
  /Function :/ { if (seq != "") print name ": " seq; name = $3; seq = "" }
  /LDG|LDS|LDSM/ { seq = seq "L" } /HMMA/ { seq = seq "M" } /F2FP/ { seq = seq "C" } / BRA / { seq = seq "B" }
  END { if (seq != "") print name ": " seq }'
rm -rf "$out"
