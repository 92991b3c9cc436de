// Products of f16 weights with a few activation columns (batched decode: one column per sequence, 2 to 8),
// on tensor cores in one launch, instead of a conversion of the activations to f16 plus cublasGemmEx.
// At these shapes the product is a read of the weights. On the H200 cuBLAS read a Llama-3-8B layer's at 3.0 TB/s
// (its Q, K, V and O products at 1.0-2.4 TB/s) and cost 11-16 us of host time a call; this kernel 3.6 TB/s and
// 3-4 us (few_columns_cuda_bench; bench/results/gpu-products-2026-12-02.md).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mustafar::cuda {

// y[n * ldy + m] = sum_k w[m * ldw + k] * x[n * ldx + k] for m < M, n < N, k < K (strides in elements).
// x is rounded to f16 first, as on the cuBLAS path; the products are summed in f32 in a fixed order.
struct FewColumns {
    const __half* w = nullptr;
    size_t ldw = 0;
    const float* x = nullptr;
    size_t ldx = 0;
    float* y = nullptr;
    size_t ldy = 0;
    int64_t M = 0, N = 0, K = 0;
};

constexpr int64_t kFewColumnsMax = 8;

// N in [2, kFewColumnsMax], K a multiple of 32, ldw a multiple of 8 and ldx of 4, w and x 16-byte aligned.
bool few_columns_shape_ok(const FewColumns& f);
// Launches the product on `stream`; false where the shape does not fit or the launch failed.
bool few_columns_f16(const FewColumns& f, cudaStream_t stream);

}  // namespace mustafar::cuda
