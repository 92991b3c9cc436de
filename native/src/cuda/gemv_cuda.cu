// gemv_cuda.h: a block of 4 warps computes a few weight rows (unpaired: 4 rows m0..m0+3 of one part; paired:
// rows m0..m0+3 of gate and of up), each warp a quarter of K for all its rows: per step a lane loads 8
// consecutive weights of each row (16-byte loads that bypass L1: weights are read once) and the
// activation's 8 values once for all rows, steps unrolled so that 16 loads of a lane wait on memory
// together. The warps' partial sums meet in shared memory. The products of a group take consecutive
// ranges of blocks of one grid.
// Before this layout each warp took two rows over all of K: a 1024-row product (the V projection of a
// Llama-3-8B layer) kept only 4 warps on an SM and read its weights at 0.8 TB/s on the H200.
#include <cuda_fp16.h>

#include "cuda_check.h"
#include "gemv_cuda.h"
#include "launch_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr int kWarps = 4, kChunk = 8;  // weights per 16-byte load
// Rows per block: 8 for gate and up (4 of each), 4 for unpaired products, whose blocks are then twice as
// many and a lane keeps 16 loads in flight over 4 steps instead of 2. H200, a batch-1 step's products
// (gemv_cuda_bench, 32 layers): Q/K/V 14.0 against 15.8 us, down 28.6 against 29.3, output level; gate and
// up with 4 rows 58.1 against 57.0.
constexpr int kPairedRows = 8, kUnpairedRows = 4;
constexpr int kPrefetchSteps = 2;                  // steps of each row brought into L2 before the wait

__device__ __forceinline__ uint4 load_streaming(const __half* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ void prefetch_l2(const __half* p) { asm volatile("prefetch.global.L2 [%0];\n" : : "l"(p)); }

__device__ __forceinline__ float as_f16(float v) { return __half2float(__float2half_rn(v)); }

template <int kRows>
__global__ void __launch_bounds__(kWarps * 32, 4) gemv_kernel(GemvGroup g) {
    constexpr int kSteps = 16 / kRows;  // steps of a lane in flight: 16 loads
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
#pragma unroll kSteps
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
        // Every load before the first store: a load after a store that may alias it waits for the store's
        // trip to memory. The addend also because the sum may share memory with it or with y (in-place ADD).
        const float r = part.add != nullptr ? part.add[m] : 0.0f;
        float out = y;
        const GemvRope& rp = part.rope;
        if (rp.out != nullptr) {
            const int64_t d = m % rp.head_dim, pair = d / 2;
            float r0 = y, r1 = y;
            if (2 * pair < rp.p.n_dims) {
                const float other = total(t ^ 1);  // row m ^ 1, the pair's other channel, is this block's too
                rope_rotate(rp.p, *rp.pos, pair, rp.freq_factors, d % 2 == 0 ? y : other, d % 2 == 0 ? other : y, r0, r1);
            }
            out = d % 2 == 0 ? r0 : r1;
        }
        const GemvCacheRow& cr = part.cache;
        const int64_t row = cr.dst == nullptr || cr.idx == nullptr ? 0
                            : cr.idx64                         ? *static_cast<const int64_t*>(cr.idx)
                                                               : *static_cast<const int32_t*>(cr.idx);
        if (part.y != nullptr) part.y[m] = y;
        if (part.add != nullptr) part.sum[m] = y + r;
        // The ROPE's output after y: it may be in place.
        if (rp.out != nullptr) rp.out[(m / rp.head_dim) * rp.head_stride + m % rp.head_dim] = out;
        if (cr.dst != nullptr) {
            if (row >= 0 && row < cr.rows) cr.dst[size_t(row) * cr.row_stride + size_t(m)] = __float2half_rn(out);
            if (cr.slot_entry != nullptr && m == 0) *cr.slot_entry = cr.slot;
        }
    }
}

}  // namespace

bool gemv_shape_ok(const void* w, size_t ldw, int64_t K, const float* x) {
    return K > 0 && K % 8 == 0 && ldw % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
           K < (int64_t(1) << 31);
}

bool gemv_f16(const GemvGroup& group, cudaStream_t stream) {
    GemvGroup g = group;
    int64_t blocks = 0;
    if (g.paired) {
        if (g.n != 2 || g.part[0].M != g.part[1].M) return false;
        blocks = (g.part[0].M + kPairedRows / 2 - 1) / (kPairedRows / 2);
    } else {
        for (int i = 0; i < g.n; ++i) {
            g.part[i].first_block = unsigned(blocks);
            blocks += (g.part[i].M + kUnpairedRows - 1) / kUnpairedRows;
        }
    }
    if (blocks == 0) return true;
    if (g.paired) {
        launch_kernel(gemv_kernel<kPairedRows>, unsigned(blocks), kWarps * 32, 0, stream, g);
    } else {
        launch_kernel(gemv_kernel<kUnpairedRows>, unsigned(blocks), kWarps * 32, 0, stream, g);
    }
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace mustafar::cuda
