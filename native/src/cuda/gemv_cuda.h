// Matrix-vector products for batch-1 decode steps: MUL_MAT with f16 weights and one activation
// column. Bound by reading the weights once; cuBLAS plus a separate conversion of the activation to f16
// cost two launches and more host time per node. With several columns (batched decode) cuBLAS keeps
// the product: this kernel, which re-reads the activations for every 8 rows, made a batch-8 decode
// step slower (bench/results/gpu-e2e-sparse-2026-11-25.md).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mustafar::cuda {

// y[m] = sum_k w[m * ldw + k] * x[k] for m < M, k < K (ldw in elements). The activation is rounded to
// f16 first, as on the cuBLAS path and in ggml's CPU backend, and the products summed in f32. Needs K
// and ldw multiples of 8, w and x 16-byte aligned.
bool gemv_shape_ok(const void* w, size_t ldw, int64_t K, const float* x);
bool gemv_f16(const __half* w, size_t ldw, int64_t K, int64_t M, const float* x, float* y, cudaStream_t stream);

}  // namespace mustafar::cuda
