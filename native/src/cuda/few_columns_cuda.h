// Products of f16 weights with a few activation columns (batched decode: one column per sequence, 2 to 8),
// on tensor cores in one launch, instead of a conversion of the activations to f16 plus cublasGemmEx.
// At these shapes the product is a read of the weights. On the H200 cuBLAS read a Llama-3-8B layer's at 3.0 TB/s
// (its Q, K, V and O products at 1.0-2.4 TB/s) and cost 11-16 us of host time a call; this kernel 3.6 TB/s and
// 3-4 us (few_columns_cuda_bench; bench/results/gpu-products-2026-12-02.md).
// As the matrix-vector kernel does for one column (gemv_cuda.h), one launch also takes several products of one
// activation (Q, K and V) with the ROPEs of their outputs, a residual ADD after a product, or gate and up with their
// SWIGLU.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "rope_cuda.h"

namespace mustafar::cuda {

// y[n * ldy + m] = sum_k w[m * ldw + k] * x[n * ldx + k] for m < M, n < N, k < K (strides in elements).
// x is rounded to f16 first, as on the cuBLAS path; the products are summed in f32 in a fixed order, the same
// for a product alone and in a group.
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

// A ROPE (normal mode) of a product's output read as rows of head_dim values (heads) per column: channel d of head
// h of column n to out[n * col_stride + h * head_stride + d], at position pos[n] (the pairs (2i, 2i + 1) are rows
// of one tile).
struct FewRope {
    float* out = nullptr;
    int64_t head_dim = 0;
    size_t head_stride = 0, col_stride = 0;  // in floats
    const int32_t* pos = nullptr;
    const float* freq_factors = nullptr;
    RopeParams p{};
};

// One product of a group, with an optional residual ADD: sum[n * ld_sum + m] = y + add[n * ld_add + m], or an
// optional ROPE of its output (then y may be null: only the rotation is written).
struct FewPart {
    const __half* w = nullptr;
    size_t ldw = 0;
    int64_t M = 0;
    float* y = nullptr;
    size_t ldy = 0;
    const float* add = nullptr;
    size_t ld_add = 0;
    float* sum = nullptr;
    size_t ld_sum = 0;
    FewRope rope;
    unsigned first_block = 0;  // set by few_columns_group
};

// Products of one activation x (N columns of K values), one launch. Paired: two parts of the same M (gate and
// up) computed row by row together, so that `glu`, when set, receives silu(part 0's y) * part 1's y.
struct FewGroup {
    static constexpr int kMaxParts = 4;
    FewPart part[kMaxParts];
    int n = 0;
    int64_t N = 0, K = 0;
    const float* x = nullptr;
    size_t ldx = 0;
    bool paired = false;
    float* glu = nullptr;
    size_t ld_glu = 0;
};

// N in [2, kFewColumnsMax], K a multiple of 32, ldw a multiple of 8 and ldx of 4, w and x 16-byte aligned.
bool few_columns_shape_ok(const FewColumns& f);
// Launches the product on `stream`; false where the shape does not fit or the launch failed.
bool few_columns_f16(const FewColumns& f, cudaStream_t stream);
// The same for a group (each part's weights as few_columns_shape_ok asks).
bool few_columns_group(const FewGroup& g, cudaStream_t stream);

}  // namespace mustafar::cuda
