// Matrix-vector products for decode steps: MUL_MAT with f16 weights and a few activation columns (one
// per sequence of the batch). At these shapes the product is bound by reading the weights once; a
// general GEMM (cuBLAS) plus a separate conversion of the activations to f16 costs two launches and
// more host time per node.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mustafar::cuda {

// Columns up to which gemv_f16 serves a product.
constexpr int kGemvMaxColumns = 8;

// y[c * ldy + m] = sum_k w[m * ldw + k] * x[c * ldx + k] for m < M, c < N, k < K (element strides).
// The activations are rounded to f16 first, as on the cuBLAS path and in ggml's CPU backend, and the
// products summed in f32. Needs K and ldw multiples of 8, ldx a multiple of 4, w and x 16-byte aligned.
bool gemv_shape_ok(const void* w, size_t ldw, int64_t K, const float* x, size_t ldx, int N);
bool gemv_f16(const __half* w, size_t ldw, int64_t K, int64_t M, const float* x, size_t ldx, int N, float* y, size_t ldy, cudaStream_t stream);

}  // namespace mustafar::cuda
