// Products of f16 weights with a few activation columns (batched decode: one column per sequence, 2 to 8),
// on tensor cores in one launch, instead of a conversion of the activations to f16 plus cublasGemmEx.
// At these shapes the product is a read of the weights; cuBLAS's kernels read them at about 2.4 TB/s on
// the H200 (a batch-8, 4K decode step, bench/results/gpu-e2e-2026-12-02.md) and cost about 20 us of host
// time a call. few_columns_cuda_bench measures both on the Llama-3-8B shapes.
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
    // Instead of x: the activation already in f16 (same ldx, in halves).
    const __half* xh = nullptr;
    float* y = nullptr;
    size_t ldy = 0;
    int64_t M = 0, N = 0, K = 0;
};

constexpr int64_t kFewColumnsMax = 8;

// N in [2, kFewColumnsMax], K a multiple of 32, ldw a multiple of 8 and ldx of 8, w and x (or xh) 16-byte aligned.
bool few_columns_shape_ok(const FewColumns& f);
// Launches the product on `stream`; false where the shape does not fit or the launch failed.
bool few_columns_f16(const FewColumns& f, cudaStream_t stream);
// The same with a chosen layout, for few_columns_cuda_bench: tiles of 16 rows a block (1 or 2), steps of loads
// in flight (4 or 8) and the blocks an SM that the registers must allow (2, 3 or 4).
bool few_columns_f16_layout(const FewColumns& f, cudaStream_t stream, int tiles, int unroll, int min_blocks);

}  // namespace mustafar::cuda
