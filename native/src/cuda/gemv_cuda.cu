// gemv_cuda.h: a block of 4 warps computes 8 weight rows (unpaired: rows m0..m0+7 of one part; paired: rows
// m0..m0+3 of gate and of up), each warp a quarter of K for all 8 rows: per step a lane loads 8
// consecutive weights of each row (16-byte loads that bypass L1: weights are read once) and the
// activation's 8 values once for the 8 rows, two steps in flight, so that 16 loads of a lane wait on
// memory together. The warps' partial sums meet in shared memory. The products of a group take
// consecutive ranges of blocks of one grid.
// Before this layout each warp took two rows over all of K: a 1024-row product (the V projection of a
// Llama-3-8B layer) kept only 4 warps on an SM and read its weights at 0.8 TB/s on the H200.
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda_check.h"
#include "gemv_cuda.h"
#include "launch_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr int kWarps = 4, kRows = 8, kChunk = 8;  // rows per block; weights per 16-byte load
constexpr int kPrefetchSteps = 2;                  // steps of each row brought into L2 before the wait

__device__ __forceinline__ uint4 load_streaming(const __half* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ void prefetch_l2(const __half* p) { asm volatile("prefetch.global.L2 [%0];\n" : : "l"(p)); }

__device__ __forceinline__ float as_f16(float v) { return __half2float(__float2half_rn(v)); }

__global__ void __launch_bounds__(kWarps * 32, 4) gemv_kernel(GemvGroup g) {
    // The block's product: parts are laid out one after the other over the grid (at most kMaxParts).
    GemvPart part = g.part[0];
#pragma unroll
    for (int i = 1; i < GemvGroup::kMaxParts; ++i)
        if (!g.paired && i < g.n && blockIdx.x >= g.part[i].first_block) part = g.part[i];
    const int64_t K = g.K, M = part.M;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t m0 = g.paired ? int64_t(blockIdx.x) * (kRows / 2) : int64_t(blockIdx.x - part.first_block) * kRows;
    // Row r's weights; rows past M read row M - 1 and are not written.
    const __half* w[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        const bool up = g.paired && r >= kRows / 2;
        const int64_t m = min(m0 + (g.paired ? r % (kRows / 2) : r), M - 1);
        w[r] = up ? g.part[1].w + size_t(m) * g.part[1].ldw : part.w + size_t(m) * part.ldw;
    }
    // This warp's quarter of K, in chunks of 8.
    const int64_t chunks = K / kChunk, c0 = chunks * warp / kWarps, c1 = chunks * (warp + 1) / kWarps;
    // The weights are no kernel's output: their first steps come into L2 while the kernel before this one
    // finishes (launch_cuda.h); the activation is read only after it has.
#pragma unroll
    for (int i = 0; i < kPrefetchSteps; ++i) {
        const int64_t c = c0 + lane + 32 * i;
        if (c < c1)
#pragma unroll
            for (int r = 0; r < kRows; ++r) prefetch_l2(w[r] + c * kChunk);
    }
    wait_for_previous();
    let_next_start();
    const float* x = g.x;
    float acc[kRows] = {};
#pragma unroll 2
    for (int64_t c = c0 + lane; c < c1; c += 32) {
        const int64_t k = c * kChunk;
        uint4 v[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) v[r] = load_streaming(w[r] + k);
        const float4 x0 = __ldg(reinterpret_cast<const float4*>(x + k)), x1 = __ldg(reinterpret_cast<const float4*>(x + k + 4));
        const float xv[8] = {as_f16(x0.x), as_f16(x0.y), as_f16(x0.z), as_f16(x0.w), as_f16(x1.x), as_f16(x1.y), as_f16(x1.z), as_f16(x1.w)};
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            const __half2* h = reinterpret_cast<const __half2*>(&v[r]);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float2 f = __half22float2(h[i]);
                acc[r] += f.x * xv[2 * i] + f.y * xv[2 * i + 1];
            }
        }
    }
    __shared__ float partial[kWarps][kRows];
    float mine = 0.0f;  // lane r < kRows keeps row r's warp sum (no indexing of acc by lane: local memory)
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        float a = acc[r];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
        if (lane == r) mine = a;
    }
    if (lane < kRows) partial[warp][lane] = mine;
    __syncthreads();
    const int t = threadIdx.x;
    auto total = [&](int r) {
        float sum = 0.0f;
#pragma unroll
        for (int q = 0; q < kWarps; ++q) sum += partial[q][r];
        return sum;
    };
    if (g.paired) {
        const int64_t m = m0 + t;
        if (t < kRows / 2 && m < M) {
            // silu(a) * b as the SWIGLU kernel computes it; the GLU output, written last, may share
            // memory with a product (in place).
            const float a = total(t), b = total(t + kRows / 2);
            part.y[m] = a;
            g.part[1].y[m] = b;
            if (g.glu != nullptr) g.glu[m] = a / (1.0f + expf(-a)) * b;
        }
        return;
    }
    const int64_t m = m0 + t;
    if (t < kRows && m < M) {
        const float y = total(t);
        // Read the addend before any write: the sum may share memory with it or with y (in-place ADD).
        const float r = part.add != nullptr ? part.add[m] : 0.0f;
        if (part.y != nullptr) part.y[m] = y;
        if (part.add != nullptr) part.sum[m] = y + r;
        float out = y;
        const GemvRope& rp = part.rope;
        if (rp.out != nullptr) {  // written after y: the ROPE may be in place
            const int64_t d = m % rp.head_dim, pair = d / 2;
            float r0 = y, r1 = y;
            if (2 * pair < rp.p.n_dims) {
                const float other = total(t ^ 1);  // row m ^ 1, the pair's other channel, is this block's too
                rope_rotate(rp.p, *rp.pos, pair, rp.freq_factors, d % 2 == 0 ? y : other, d % 2 == 0 ? other : y, r0, r1);
            }
            out = d % 2 == 0 ? r0 : r1;
            rp.out[(m / rp.head_dim) * rp.head_stride + d] = out;
        }
        const GemvCacheRow& cr = part.cache;
        if (cr.dst != nullptr) {
            const int64_t row = cr.idx == nullptr ? 0 : cr.idx64 ? *static_cast<const int64_t*>(cr.idx) : *static_cast<const int32_t*>(cr.idx);
            if (row >= 0 && row < cr.rows) cr.dst[size_t(row) * cr.row_stride + size_t(m)] = __float2half_rn(out);
            if (cr.slot_entry != nullptr && m == 0) *cr.slot_entry = cr.slot;
        }
    }
}

// ---- 2 to 8 columns ------------------------------------------------------------------------------
// mma.sync m16n8k16 (f16 inputs, f32 accumulation): 16 weight rows are A, the activation's columns B
// (column g of the fragment layout; zero past N). A product's k order is free as long as A and B share
// it, so lane (g, t) takes the 16 consecutive k 16t..16t+15 of a 64-wide step from rows g and g + 8 (two
// 16-byte loads each; four lanes cover a row's 128-byte line) and from column g, and hands them to four
// MMAs, pair 2j as the fragments' k 2t, 2t + 1 and pair 2j + 1 as 2t + 8, 2t + 9.
// A block of 8 warps takes 128 rows (16 a warp) over one slice of K: the block first stages the slice of
// the activation in shared memory as f16, so that it is read once per 128 rows (read by every warp from
// memory, it was as much traffic as the weights, and the kernel was slower than cuBLAS). The slices
// (grid y) are as many as keep the grid within one wave of resident blocks; each block writes its partial
// sums, and the last block of a row block to finish adds them in slice order (deterministic) into y.
constexpr int kFewWarps = 8, kFewRows = 16 * kFewWarps, kFewStep = 64;
constexpr int kFewMaxSteps = 32;  // steps per slice at most: 32 KB of staged activation

__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t half_pair(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}

// A staged column's halves: the slice plus 8, so that columns start 16 bytes apart in the banks.
__host__ __device__ constexpr int few_row_halves(int steps) { return steps * kFewStep + 8; }

// partial: [slice][column][M] floats; counters: one per row block, 0 between launches.
__global__ void __launch_bounds__(kFewWarps * 32) few_columns_kernel(FewColumns f, float* partial, int* counters) {
    extern __shared__ __align__(16) uint8_t few_smem[];
    __shared__ int last;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const int splits = int(gridDim.y), s = int(blockIdx.y);
    const int64_t steps = f.K / kFewStep, s0 = steps * s / splits, s1 = steps * (s + 1) / splits;
    const int n_steps = int(s1 - s0), row_halves = few_row_halves(n_steps);
    const int64_t m0 = int64_t(blockIdx.x) * kFewRows + warp * 16;
    // Rows past M read row M - 1 and are not written.
    const __half* w_lo = f.w + size_t(min(m0 + g, f.M - 1)) * f.ldw + s0 * kFewStep + 16 * t;
    const __half* w_hi = f.w + size_t(min(m0 + g + 8, f.M - 1)) * f.ldw + s0 * kFewStep + 16 * t;
    // The weights are no kernel's output: the first steps come into L2 before the wait (launch_cuda.h).
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        if (i < n_steps) {
            prefetch_l2(w_lo + i * kFewStep);
            prefetch_l2(w_hi + i * kFewStep);
        }
    }
    wait_for_previous();
    let_next_start();
    __half* xs = reinterpret_cast<__half*>(few_smem);
    const int quads = n_steps * kFewStep / 4;  // float4 of one column's slice
    for (int i = threadIdx.x; i < 8 * quads; i += kFewWarps * 32) {
        const int n = i / quads, q = i % quads;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (n < f.N) v = __ldg(reinterpret_cast<const float4*>(f.x + size_t(n) * f.ldx + size_t(s0) * kFewStep) + q);
        *reinterpret_cast<uint2*>(xs + n * row_halves + 4 * q) = make_uint2(half_pair(v.x, v.y), half_pair(v.z, v.w));
    }
    __syncthreads();
    const __half* xr = xs + g * row_halves + 16 * t;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 2
    for (int j = 0; j < n_steps; ++j) {
        const int k = j * kFewStep;
        const uint4 l0 = load_streaming(w_lo + k), l1 = load_streaming(w_lo + k + 8);
        const uint4 h0 = load_streaming(w_hi + k), h1 = load_streaming(w_hi + k + 8);
        const uint4 x0 = *reinterpret_cast<const uint4*>(xr + k), x1 = *reinterpret_cast<const uint4*>(xr + k + 8);
        const uint32_t lo[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
        const uint32_t hi[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
        const uint32_t xb[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) mma16816(acc, lo[2 * i], hi[2 * i], lo[2 * i + 1], hi[2 * i + 1], xb[2 * i], xb[2 * i + 1]);
    }
    // C: (row g, columns 2t, 2t + 1) and (row g + 8, the same columns).
    const int n0 = 2 * t;
    const int64_t rows[2] = {m0 + g, m0 + g + 8};
    float* out = splits == 1 ? f.y : partial + size_t(s) * 8 * size_t(f.M);
    const size_t ld = splits == 1 ? f.ldy : size_t(f.M);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int n = n0 + i % 2;
        const int64_t m = rows[i / 2];
        if (n < f.N && m < f.M) out[size_t(n) * ld + size_t(m)] = acc[i];
    }
    if (splits == 1) return;
    // The partials, written by every thread, are visible before the block counts itself.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&counters[blockIdx.x], 1) == splits - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int i = threadIdx.x; i < kFewRows * 8; i += kFewWarps * 32) {
        const int n = i / kFewRows;
        const int64_t m = int64_t(blockIdx.x) * kFewRows + i % kFewRows;
        if (n >= f.N || m >= f.M) continue;
        float sum = 0.0f;
        for (int q = 0; q < splits; ++q) sum += __ldcg(partial + (size_t(q) * 8 + size_t(n)) * size_t(f.M) + size_t(m));
        f.y[size_t(n) * f.ldy + size_t(m)] = sum;
    }
    if (threadIdx.x == 0) counters[blockIdx.x] = 0;  // for the next launch, which waits for this one
}

}  // namespace

bool few_columns_shape_ok(const FewColumns& f) {
    return f.N >= 2 && f.N <= kFewColumnsMax && f.M > 0 && f.K > 0 && f.K % kFewStep == 0 && f.ldw % 8 == 0 && f.ldx % 4 == 0 &&
           reinterpret_cast<uintptr_t>(f.w) % 16 == 0 && reinterpret_cast<uintptr_t>(f.x) % 16 == 0 && f.M < (int64_t(1) << 31) / kFewRows;
}

FewColumnsRunner::~FewColumnsRunner() {
    if (partial_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(partial_));
    if (counters_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(counters_));
}

bool FewColumnsRunner::run(const FewColumns& f, cudaStream_t stream) {
    if (!few_columns_shape_ok(f)) return false;
    if (slots_ == 0) {  // resident blocks of the largest staging, over the device
        int device = 0, sms = 0, per_sm = 0;
        if (!MUSTAFAR_CUDA_OK(cudaGetDevice(&device)) || !MUSTAFAR_CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device)) ||
            !MUSTAFAR_CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, few_columns_kernel, kFewWarps * 32,
                                                                          size_t(8) * few_row_halves(kFewMaxSteps) * 2)))
            return false;
        slots_ = std::max(1, sms * per_sm);
    }
    const int64_t steps = f.K / kFewStep, row_blocks = (f.M + kFewRows - 1) / kFewRows;
    // One wave where the rows allow, slices of at least four steps, at most kFewMaxSteps.
    int64_t splits = std::max<int64_t>(1, slots_ / row_blocks);
    splits = std::min(splits, std::max<int64_t>(1, steps / 4));
    splits = std::max(splits, (steps + kFewMaxSteps - 1) / kFewMaxSteps);
    if (splits > 65535) return false;
    const int max_steps = int((steps + splits - 1) / splits);
    if (splits > 1) {
        const size_t partial_bytes = size_t(splits) * 8 * size_t(f.M) * sizeof(float);
        if (partial_bytes > partial_bytes_) {
            if (partial_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(partial_));
            partial_ = nullptr;
            partial_bytes_ = 0;
            if (!MUSTAFAR_CUDA_OK(cudaMalloc(&partial_, partial_bytes))) return false;
            partial_bytes_ = partial_bytes;
        }
        if (size_t(row_blocks) > counter_count_) {
            if (counters_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(counters_));
            counters_ = nullptr;
            counter_count_ = 0;
            if (!MUSTAFAR_CUDA_OK(cudaMalloc(&counters_, size_t(row_blocks) * sizeof(int))) ||
                !MUSTAFAR_CUDA_OK(cudaMemsetAsync(counters_, 0, size_t(row_blocks) * sizeof(int), stream)))
                return false;
            counter_count_ = size_t(row_blocks);
        }
    }
    launch_kernel(few_columns_kernel, dim3(unsigned(row_blocks), unsigned(splits)), kFewWarps * 32, size_t(8) * few_row_halves(max_steps) * 2,
                  stream, f, partial_, counters_);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool gemv_shape_ok(const void* w, size_t ldw, int64_t K, const float* x) {
    return K > 0 && K % 8 == 0 && ldw % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
           K < (int64_t(1) << 31);
}

bool gemv_f16(const GemvGroup& group, cudaStream_t stream) {
    GemvGroup g = group;
    int64_t blocks = 0;
    if (g.paired) {
        if (g.n != 2 || g.part[0].M != g.part[1].M) return false;
        blocks = (g.part[0].M + kRows / 2 - 1) / (kRows / 2);
    } else {
        for (int i = 0; i < g.n; ++i) {
            g.part[i].first_block = unsigned(blocks);
            blocks += (g.part[i].M + kRows - 1) / kRows;
        }
    }
    if (blocks == 0) return true;
    launch_kernel(gemv_kernel, unsigned(blocks), kWarps * 32, 0, stream, g);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace mustafar::cuda
