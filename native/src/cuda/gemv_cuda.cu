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

// The group's activation from the norm's input (GemvNorm) into `staged` as f16. The row and the weight
// row come in with one round of loads (kNormVec 16-byte loads of each a thread); the sums of squares
// follow the RMS_NORM kernel's order: its thread vt (of n.threads) sums elements vt, vt + threads, ... in
// order, its warps reduce by the same shuffles and their sums are added in warp order; here each warp
// takes the place of every kWarps-th of those warps, reading the row from shared memory.
constexpr int kNormVec = int(kGemvNormMaxK / (4 * kWarps * 32));

__device__ __forceinline__ void stage_norm(const GemvNorm& n, int K, uint4* staged) {
    __shared__ float partial[32];
    float* row = reinterpret_cast<float*>(staged);
    const int t = threadIdx.x, lane = t % 32, warp = t / 32, quads = K / 4;
    float4 xv[kNormVec], wv[kNormVec];
#pragma unroll
    for (int i = 0; i < kNormVec; ++i) {
        const int q = t + i * kWarps * 32;
        xv[i] = wv[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (q < quads) {
            xv[i] = __ldg(reinterpret_cast<const float4*>(n.x) + q);
            wv[i] = __ldg(reinterpret_cast<const float4*>(n.w) + q);
        }
    }
#pragma unroll
    for (int i = 0; i < kNormVec; ++i) {
        const int q = t + i * kWarps * 32;
        if (q < quads) reinterpret_cast<float4*>(row)[q] = xv[i];
    }
    __syncthreads();
    for (int base = warp * 32; base < n.threads; base += kWarps * 32) {
        float sum = 0.0f;
        for (int c = base + lane; c < K; c += n.threads) sum += row[c] * row[c];
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if (lane == 0) partial[base / 32] = sum;
    }
    __syncthreads();  // every read of `row` done: the f16 activation takes its place
    float total = 0.0f;
    for (int i = 0; i < n.threads / 32; ++i) total += partial[i];
    const float scale = rsqrtf(total / float(K) + n.eps);
    __half2* act = reinterpret_cast<__half2*>(staged);
#pragma unroll
    for (int i = 0; i < kNormVec; ++i) {
        const int q = t + i * kWarps * 32;
        if (q >= quads) continue;
        const float4 y = make_float4(xv[i].x * scale, xv[i].y * scale, xv[i].z * scale, xv[i].w * scale);
        const float4 m = make_float4(y.x * wv[i].x, y.y * wv[i].y, y.z * wv[i].z, y.w * wv[i].w);
        act[2 * q] = __floats2half2_rn(m.x, m.y);
        act[2 * q + 1] = __floats2half2_rn(m.z, m.w);
        if ((q / 8) % int(gridDim.x) == int(blockIdx.x)) {  // the outputs, 32 values a block (in place: norm first)
            reinterpret_cast<float4*>(n.norm)[q] = y;
            reinterpret_cast<float4*>(n.mul)[q] = m;
        }
    }
    __syncthreads();
}

// Row block rb of the group: its product, first row and weight rows, and this warp's quarter of K.
struct RowBlock {
    GemvPart part;
    int64_t m0, c0, c1;
    const __half* w[kRows];

    __device__ __forceinline__ RowBlock(const GemvGroup& g, unsigned rb) {
        // Parts are laid out one after the other over the row blocks (at most kMaxParts).
        part = g.part[0];
#pragma unroll
        for (int i = 1; i < GemvGroup::kMaxParts; ++i)
            if (!g.paired && i < g.n && rb >= g.part[i].first_block) part = g.part[i];
        const int64_t M = part.M;
        m0 = g.paired ? int64_t(rb) * (kRows / 2) : int64_t(rb - part.first_block) * kRows;
        // Row r's weights; rows past M read row M - 1 and are not written.
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            const bool up = g.paired && r >= kRows / 2;
            const int64_t m = min(m0 + (g.paired ? r % (kRows / 2) : r), M - 1);
            w[r] = up ? g.part[1].w + size_t(m) * g.part[1].ldw : part.w + size_t(m) * part.ldw;
        }
        const int warp = threadIdx.x / 32;
        const int64_t chunks = g.K / kChunk;
        c0 = chunks * warp / kWarps;
        c1 = chunks * (warp + 1) / kWarps;
    }
};

template <bool kNorm>
__device__ __forceinline__ void compute_rows(const GemvGroup& g, const RowBlock& b, const uint4* staged) {
    const GemvPart& part = b.part;
    const int64_t M = part.M, m0 = b.m0;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const float* x = g.x;
    float acc[kRows] = {};
#pragma unroll 2
    for (int64_t c = b.c0 + lane; c < b.c1; c += 32) {
        const int64_t k = c * kChunk;
        uint4 v[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) v[r] = load_streaming(b.w[r] + k);
        float xv[8];
        if constexpr (kNorm) {
            const uint4 packed = staged[c];
            const __half2* h = reinterpret_cast<const __half2*>(&packed);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float2 f = __half22float2(h[i]);
                xv[2 * i] = f.x;
                xv[2 * i + 1] = f.y;
            }
        } else {
            const float4 x0 = __ldg(reinterpret_cast<const float4*>(x + k)), x1 = __ldg(reinterpret_cast<const float4*>(x + k + 4));
            const float f[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
            for (int i = 0; i < 8; ++i) xv[i] = as_f16(f[i]);
        }
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
            const int64_t row = cr.idx64 ? *static_cast<const int64_t*>(cr.idx) : *static_cast<const int32_t*>(cr.idx);
            if (row >= 0 && row < cr.rows) cr.dst[size_t(row) * cr.row_stride + size_t(m)] = __float2half_rn(out);
        }
    }
}

// Without a norm, one block per row block. With one, each block first computes the activation and then
// takes row blocks rb, rb + gridDim.x, ... (a grid of the blocks that fit at once): a block per row block
// would repeat that start a wave at a time (gate and up: 3584 row blocks, 4 blocks an SM), which made the
// two products twice as slow.
template <bool kNorm>
__global__ void __launch_bounds__(kWarps * 32, 4) gemv_kernel(GemvGroup g) {
    extern __shared__ uint4 staged[];  // kNorm: the activation in f16 (first the norm's input row in f32)
    {
        // The weights are no kernel's output: the first steps of the block's first rows come into L2 while
        // the kernel before this one finishes (launch_cuda.h); the activation is read only after it has.
        const RowBlock b(g, blockIdx.x);
        const int lane = threadIdx.x % 32;
#pragma unroll
        for (int i = 0; i < kPrefetchSteps; ++i) {
            const int64_t c = b.c0 + lane + 32 * i;
            if (c < b.c1)
#pragma unroll
                for (int r = 0; r < kRows; ++r) prefetch_l2(b.w[r] + c * kChunk);
        }
    }
    wait_for_previous();
    let_next_start();
    if constexpr (kNorm) {
        stage_norm(g.norm, int(g.K), staged);
        for (unsigned rb = blockIdx.x; rb < g.row_blocks; rb += gridDim.x) {
            compute_rows<true>(g, RowBlock(g, rb), staged);
            __syncthreads();  // the row sums' shared memory, before the next row block writes it
        }
    } else {
        compute_rows<false>(g, RowBlock(g, blockIdx.x), nullptr);
    }
}

}  // namespace

unsigned gemv_norm_blocks_per_sm() {
    int n = 0;
    if (!MUSTAFAR_CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gemv_kernel<true>, kWarps * 32, size_t(kGemvNormMaxK) * 4)))
        return 1;
    return unsigned(n > 0 ? n : 1);
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
    g.row_blocks = unsigned(blocks);
    if (g.norm.x != nullptr) {
        const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
        if (g.K > kGemvNormMaxK || g.norm.threads % 32 != 0 || g.norm.threads > 1024 || g.norm_grid == 0 || !aligned(g.norm.x) ||
            !aligned(g.norm.w) || !aligned(g.norm.norm) || !aligned(g.norm.mul))
            return false;
        launch_kernel(gemv_kernel<true>, unsigned(std::min<int64_t>(blocks, g.norm_grid)), kWarps * 32, size_t(g.K) * 4, stream, g);
    } else {
        launch_kernel(gemv_kernel<false>, unsigned(blocks), kWarps * 32, 0, stream, g);
    }
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace mustafar::cuda
