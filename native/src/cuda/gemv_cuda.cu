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

// The norm's scale 1 / sqrt(mean(in^2) + eps) as rms_norm_kernel (compute_cuda.cu) computes it with
// nm.threads threads: thread t sums in[t], in[t + threads], ... in order, each warp's sums meet by the
// same shuffles, and the warps' sums are added in warp order. This block's 4 warps play its warps in turn.
// Blocks then write the norm's and the MUL's outputs, a few values each.
__device__ float norm_scale(const GemvGroup::Norm& nm, int64_t K) {
    __shared__ float part[32];
    const int lane = threadIdx.x % 32;
    for (int vt = threadIdx.x; vt < nm.threads; vt += kWarps * 32) {  // whole warps of the norm kernel per round
        float sum = 0.0f;
#pragma unroll 4
        for (int64_t c = vt; c < K; c += nm.threads) {
            const float v = nm.in[c];
            sum += v * v;
        }
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if (lane == 0) part[vt / 32] = sum;
    }
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < nm.threads / 32; ++i) total += part[i];
    const float scale = rsqrtf(total / float(K) + nm.eps);
    if (nm.norm_out != nullptr || nm.mul_out != nullptr)
        for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < K; c += int64_t(gridDim.x) * blockDim.x) {
            const float y = nm.in[c] * scale;
            if (nm.norm_out != nullptr) nm.norm_out[c] = y;
            if (nm.mul_out != nullptr) nm.mul_out[c] = y * nm.w[c];
        }
    return scale;
}

// Row group b of the grid (8 rows): the products' sums, then their outputs. x: the activation, multiplied
// by `scale` and the norm's weights first with kNorm.
template <bool kNorm>
__device__ __forceinline__ void row_group(const GemvGroup& g, unsigned b, const float* x, float scale) {
    // The group's product: parts are laid out one after the other over the groups (at most kMaxParts).
    GemvPart part = g.part[0];
#pragma unroll
    for (int i = 1; i < GemvGroup::kMaxParts; ++i)
        if (!g.paired && i < g.n && b >= g.part[i].first_block) part = g.part[i];
    const int64_t K = g.K, M = part.M;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t m0 = g.paired ? int64_t(b) * (kRows / 2) : int64_t(b - part.first_block) * kRows;
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
    float acc[kRows] = {};
#pragma unroll 2
    for (int64_t c = c0 + lane; c < c1; c += 32) {
        const int64_t k = c * kChunk;
        uint4 v[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) v[r] = load_streaming(w[r] + k);
        float4 x0 = __ldg(reinterpret_cast<const float4*>(x + k)), x1 = __ldg(reinterpret_cast<const float4*>(x + k + 4));
        if constexpr (kNorm) {  // the norm's output times the MUL's weights, as the two kernels round them
            const float4 w0 = __ldg(reinterpret_cast<const float4*>(g.norm.w + k)), w1 = __ldg(reinterpret_cast<const float4*>(g.norm.w + k + 4));
            x0 = make_float4((x0.x * scale) * w0.x, (x0.y * scale) * w0.y, (x0.z * scale) * w0.z, (x0.w * scale) * w0.w);
            x1 = make_float4((x1.x * scale) * w1.x, (x1.y * scale) * w1.y, (x1.z * scale) * w1.z, (x1.w * scale) * w1.w);
        }
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
    const int64_t m = m0 + t;
    if (g.paired) {
        if (t < kRows / 2 && m < M) {
            // silu(a) * b as the SWIGLU kernel computes it; the GLU output, written last, may share
            // memory with a product (in place).
            const float a = total(t), b = total(t + kRows / 2);
            part.y[m] = a;
            g.part[1].y[m] = b;
            if (g.glu != nullptr) g.glu[m] = a / (1.0f + expf(-a)) * b;
        }
    } else if (t < kRows && m < M) {
        const float y = total(t);
        // Read the addend before any write: the sum may share memory with it or with y (in-place ADD).
        const float r = part.add != nullptr ? part.add[m] : 0.0f;
        part.y[m] = y;
        if (part.add != nullptr) part.sum[m] = y + r;
        const GemvRope& rp = part.rope;
        if (rp.out != nullptr) {  // written after y: the ROPE may be in place
            const int64_t d = m % rp.head_dim, pair = d / 2;
            float r0 = y, r1 = y;
            if (2 * pair < rp.p.n_dims) {
                const float other = total(t ^ 1);  // row m ^ 1, the pair's other channel, is this block's too
                rope_rotate(rp.p, *rp.pos, pair, rp.freq_factors, d % 2 == 0 ? y : other, d % 2 == 0 ? other : y, r0, r1);
            }
            rp.out[(m / rp.head_dim) * rp.head_stride + d] = d % 2 == 0 ? r0 : r1;
        }
    }
    __syncthreads();  // `partial` is the next group's
}

// One block per row group, or with kNorm a block per resident slot that takes groups blockIdx.x,
// blockIdx.x + gridDim.x, ...: the norm's scale, which each block must compute from the whole row, once a
// block. (A block per group computing it, 3584 blocks for gate and up of a Llama-3-8B layer, made a
// batch-1 decode step slower: 6.15 against 5.64 ms on the H200.)
template <bool kNorm>
__global__ void __launch_bounds__(kWarps * 32, 4) gemv_kernel(GemvGroup g, unsigned groups) {
    // The weights are no kernel's output: the first steps of the block's first rows come into L2 while the
    // kernel before this one finishes (launch_cuda.h); the activation is read only after it has.
    {
        const unsigned b = blockIdx.x;
        GemvPart part = g.part[0];
#pragma unroll
        for (int i = 1; i < GemvGroup::kMaxParts; ++i)
            if (!g.paired && i < g.n && b >= g.part[i].first_block) part = g.part[i];
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        const int64_t m0 = g.paired ? int64_t(b) * (kRows / 2) : int64_t(b - part.first_block) * kRows;
        const int64_t chunks = g.K / kChunk, c0 = chunks * warp / kWarps, c1 = chunks * (warp + 1) / kWarps;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            const bool up = g.paired && r >= kRows / 2;
            const int64_t m = min(m0 + (g.paired ? r % (kRows / 2) : r), part.M - 1);
            const __half* w = up ? g.part[1].w + size_t(m) * g.part[1].ldw : part.w + size_t(m) * part.ldw;
#pragma unroll
            for (int i = 0; i < kPrefetchSteps; ++i) {
                const int64_t c = c0 + lane + 32 * i;
                if (c < c1) prefetch_l2(w + c * kChunk);
            }
        }
    }
    wait_for_previous();
    let_next_start();
    const float* x = kNorm ? g.norm.in : g.x;
    const float scale = kNorm ? norm_scale(g.norm, g.K) : 1.0f;
    for (unsigned b = blockIdx.x; b < groups; b += gridDim.x) row_group<kNorm>(g, b, x, scale);
}

}  // namespace

bool gemv_shape_ok(const void* w, size_t ldw, int64_t K, const float* x) {
    return K > 0 && K % 8 == 0 && ldw % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
           K < (int64_t(1) << 31);
}

bool gemv_norm_ok(const float* in, const float* w, int threads) {
    return reinterpret_cast<uintptr_t>(in) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && threads > 0 && threads % 32 == 0 &&
           threads <= 1024;
}

int gemv_norm_resident_blocks() {
    int device = 0, sms = 0, per_sm = 0;
    if (!MUSTAFAR_CUDA_OK(cudaGetDevice(&device)) || !MUSTAFAR_CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device)) ||
        !MUSTAFAR_CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_kernel<true>, kWarps * 32, 0)))
        return 0;
    return sms * per_sm;
}

bool gemv_f16(const GemvGroup& group, cudaStream_t stream, int resident_blocks) {
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
    if (g.norm.in != nullptr) {
        if (!gemv_norm_ok(g.norm.in, g.norm.w, g.norm.threads) || resident_blocks <= 0) return false;
        launch_kernel(gemv_kernel<true>, unsigned(std::min<int64_t>(blocks, resident_blocks)), kWarps * 32, 0, stream, g, unsigned(blocks));
    } else {
        launch_kernel(gemv_kernel<false>, unsigned(blocks), kWarps * 32, 0, stream, g, unsigned(blocks));
    }
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace mustafar::cuda
