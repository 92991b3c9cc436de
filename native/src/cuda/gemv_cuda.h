// Matrix-vector products for batch-1 decode steps: MUL_MAT with f16 weights and one activation
// column. Bound by reading the weights once; cuBLAS plus a separate conversion of the activation to f16
// cost two launches and more host time per node. Several columns (batched decode) go to the
// few-column kernel (few_columns_cuda.h): this kernel, which re-reads the activations for every 8 rows,
// made a batch-8 decode step slower (bench/results/gpu-e2e-sparse-2026-11-25.md).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "rope_cuda.h"

namespace mustafar::cuda {

// One product of a group: y[m] = sum_k w[m * ldw + k] * x[k] for m < M, k < K (ldw in elements), and,
// when `add` is set, also sum[m] = y[m] + add[m] (a residual ADD that follows the product).
// When `rope.out` is set, y read as rows of rope.head_dim values (heads) also goes through a ROPE of
// normal mode at position *rope.pos: channel d of head h to rope.out[h * rope.head_stride + d] (the pairs
// (2i, 2i + 1) are rows of one block).
struct GemvRope {
    float* out = nullptr;
    int64_t head_dim = 0;
    int64_t head_stride = 0;  // in floats
    const int32_t* pos = nullptr;
    const float* freq_factors = nullptr;
    RopeParams p{};
};

// A SET_ROWS of one row, the part's final output (its ROPE's, where it has one), into an f16 cache (a
// decode step's K or V): element m to dst[row * row_stride + m], row read from idx[0] on the device; or,
// without idx, to dst[m] (a Mustafar store's pool slot, placed by the host), setting *slot_entry = slot.
struct GemvCacheRow {
    __half* dst = nullptr;
    size_t row_stride = 0;  // in halves
    int64_t rows = 0;       // rows outside [0, rows) are not written, as SET_ROWS does
    const void* idx = nullptr;
    bool idx64 = false;
    int32_t* slot_entry = nullptr;
    int32_t slot = -1;
};

struct GemvPart {
    const __half* w = nullptr;
    size_t ldw = 0;
    int64_t M = 0;
    float* y = nullptr;  // null: not written (only with a ROPE, whose output is)
    const float* add = nullptr;
    float* sum = nullptr;
    GemvRope rope;
    GemvCacheRow cache;  // with rope.out: only with rows of head_stride == head_dim (element m is row m)
    unsigned first_block = 0;  // set by gemv_f16
};

// Products of one activation x of K values, one launch (the Q, K and V projections of a decode step read
// the same normed activation). The activation is rounded to f16 first, as on the cuBLAS path and in ggml's
// CPU backend, and the products summed in f32.
struct GemvGroup {
    static constexpr int kMaxParts = 4;
    GemvPart part[kMaxParts];
    int n = 0;
    int64_t K = 0;
    const float* x = nullptr;
    // Two parts of the same M (gate and up) computed row by row together, so that `glu`, when set,
    // receives silu(part 0's y) * part 1's y: the SWIGLU that follows them, in the same pass.
    bool paired = false;
    float* glu = nullptr;
};

// Needs K and ldw multiples of 8, w and x 16-byte aligned.
bool gemv_shape_ok(const void* w, size_t ldw, int64_t K, const float* x);
bool gemv_f16(const GemvGroup& group, cudaStream_t stream);

}  // namespace mustafar::cuda
