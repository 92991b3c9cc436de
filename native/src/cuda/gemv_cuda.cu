// gemv_cuda.h: a block of 4 warps, each warp two weight rows (so each load of the activation serves
// two rows); a lane takes 8 consecutive weights per step (one 16-byte load that bypasses L1: weights are
// read once), the activation comes through L1, where the block's warps share it. The products of a group
// take consecutive ranges of blocks of one grid.
#include <cuda_fp16.h>

#include "cuda_check.h"
#include "gemv_cuda.h"
#include "launch_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr int kWarps = 4, kRowsPerWarp = 2, kStep = 32 * 8;
constexpr int kPrefetchSteps = 4;  // a 4096-wide row is 16 steps

__device__ __forceinline__ uint4 load_streaming(const __half* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ void prefetch_l2(const __half* p) { asm volatile("prefetch.global.L2 [%0];\n" : : "l"(p)); }

__device__ __forceinline__ float as_f16(float v) { return __half2float(__float2half_rn(v)); }

__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(GemvGroup g) {
    // The block's product: parts are laid out one after the other over the grid (at most kMaxParts).
    GemvPart part = g.part[0];
#pragma unroll
    for (int i = 1; i < GemvGroup::kMaxParts; ++i)
        if (!g.paired && i < g.n && blockIdx.x >= g.part[i].first_block) part = g.part[i];
    const int64_t K = g.K, M = part.M;
    const size_t ldw = part.ldw;
    const float* x = g.x;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    // Paired: the warp's two rows are row m of part 0 and row m of part 1; else two rows of one part.
    const int64_t m0 = g.paired ? int64_t(blockIdx.x) * kWarps + warp : (int64_t(blockIdx.x - part.first_block) * kWarps + warp) * kRowsPerWarp;
    if (m0 >= M) return;
    const bool second = g.paired || m0 + 1 < M;
    const __half* w0 = part.w + size_t(m0) * ldw;
    const __half* w1 = g.paired ? g.part[1].w + size_t(m0) * g.part[1].ldw : second ? w0 + ldw : w0;
    // The weights are no kernel's output: their first steps come into L2 while the kernel before
    // this one finishes (launch_cuda.h); the activation is read only after it has.
#pragma unroll
    for (int i = 0; i < kPrefetchSteps; ++i) {
        const int64_t k = int64_t(lane) * 8 + int64_t(i) * kStep;
        if (k < K) {
            prefetch_l2(w0 + k);
            prefetch_l2(w1 + k);
        }
    }
    wait_for_previous();
    let_next_start();
    float acc[kRowsPerWarp] = {};
#pragma unroll 4
    for (int64_t k = int64_t(lane) * 8; k < K; k += kStep) {
        const uint4 a = load_streaming(w0 + k), b = load_streaming(w1 + k);
        const __half2* ha = reinterpret_cast<const __half2*>(&a);
        const __half2* hb = reinterpret_cast<const __half2*>(&b);
        const float4 x0 = __ldg(reinterpret_cast<const float4*>(x + k)), x1 = __ldg(reinterpret_cast<const float4*>(x + k + 4));
        const float xv[8] = {as_f16(x0.x), as_f16(x0.y), as_f16(x0.z), as_f16(x0.w), as_f16(x1.x), as_f16(x1.y), as_f16(x1.z), as_f16(x1.w)};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 fa = __half22float2(ha[i]), fb = __half22float2(hb[i]);
            acc[0] += fa.x * xv[2 * i] + fa.y * xv[2 * i + 1];
            acc[1] += fb.x * xv[2 * i] + fb.y * xv[2 * i + 1];
        }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
    if (g.paired) {
        if (lane == 0) {
            // silu(a) * b as the SWIGLU kernel computes it; the GLU output, written last, may share
            // memory with a product (in place).
            part.y[m0] = acc[0];
            g.part[1].y[m0] = acc[1];
            if (g.glu != nullptr) g.glu[m0] = acc[0] / (1.0f + expf(-acc[0])) * acc[1];
        }
        return;
    }
    if (lane < kRowsPerWarp && (lane == 0 || second)) {
        const int64_t m = m0 + lane;
        const float y = acc[lane == 0 ? 0 : 1];
        // Read the addend before any write: the sum may share memory with it or with y (in-place ADD).
        const float r = part.add != nullptr ? part.add[m] : 0.0f;
        part.y[m] = y;
        if (part.add != nullptr) part.sum[m] = y + r;
    }
}

}  // namespace

bool gemv_shape_ok(const void* w, size_t ldw, int64_t K, const float* x) {
    return K > 0 && K % 8 == 0 && ldw % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
           K < (int64_t(1) << 31);
}

bool gemv_f16(const GemvGroup& group, cudaStream_t stream) {
    GemvGroup g = group;
    constexpr int64_t rows_per_block = kWarps * kRowsPerWarp;
    int64_t blocks = 0;
    if (g.paired) {
        if (g.n != 2 || g.part[0].M != g.part[1].M) return false;
        blocks = (g.part[0].M + kWarps - 1) / kWarps;
    } else {
        for (int i = 0; i < g.n; ++i) {
            g.part[i].first_block = unsigned(blocks);
            blocks += (g.part[i].M + rows_per_block - 1) / rows_per_block;
        }
    }
    if (blocks == 0) return true;
    launch_kernel(gemv_kernel, unsigned(blocks), kWarps * 32, 0, stream, g);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace mustafar::cuda
