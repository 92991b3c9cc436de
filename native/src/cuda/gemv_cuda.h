// Products of f16 weights with few activation columns, bound by reading the weights once: one column
// (batch-1 decode steps; gemv_f16, with the nodes fused into it) and 2 to 8 columns (batched decode;
// FewColumnsRunner, tensor cores). cuBLAS plus a separate conversion of the activation to f16 cost two
// launches and about 20 us of host time per product (H200, batch 8, 4K: 4.4 ms a step for 225
// products, more than the GPU's time for them).
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

// y[n * ldy + m] = sum_k w[m * ldw + k] * x[n * ldx + k] for m < M, n < N (2..8), k < K; the activation
// rounded to f16 first, the products summed in f32, as on the other paths.
struct FewColumns {
    const __half* w = nullptr;
    size_t ldw = 0;  // in halves
    int64_t M = 0, K = 0;
    const float* x = nullptr;
    size_t ldx = 0;  // in floats
    int N = 0;
    float* y = nullptr;
    size_t ldy = 0;  // in floats
};

constexpr int kFewColumnsMax = 8;
// Needs K a multiple of 64, ldw of 8 and ldx of 4, w and x 16-byte aligned.
bool few_columns_shape_ok(const FewColumns& f);

// Runs the products with few columns; owns the partial sums of K's slices and the row blocks' arrival
// counters (device memory, grown as products need; a growth waits for the device).
class FewColumnsRunner {
public:
    FewColumnsRunner() = default;
    ~FewColumnsRunner();
    FewColumnsRunner(const FewColumnsRunner&) = delete;
    FewColumnsRunner& operator=(const FewColumnsRunner&) = delete;
    bool run(const FewColumns& f, cudaStream_t stream);

private:
    float* partial_ = nullptr;
    size_t partial_bytes_ = 0;
    int* counters_ = nullptr;
    size_t counter_count_ = 0;
    int slots_ = 0;  // blocks resident at once over the device
};

}  // namespace mustafar::cuda
