// gemv_cuda.h: a block of 4 warps, each warp two weight rows (so each load of the activation serves
// two rows); a lane takes 8 consecutive weights per step (one 16-byte load that bypasses L1: weights are
// read once), the activation comes through L1, where the block's warps share it.
#include <cuda_fp16.h>

#include "cuda_check.h"
#include "gemv_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr int kWarps = 4, kRowsPerWarp = 2, kStep = 32 * 8;

__device__ __forceinline__ uint4 load_streaming(const __half* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ float as_f16(float v) { return __half2float(__float2half_rn(v)); }

__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const __half* w, size_t ldw, int64_t K, int64_t M, const float* x, float* y) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t m0 = (int64_t(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
    if (m0 >= M) return;
    const bool second = m0 + 1 < M;
    const __half* w0 = w + size_t(m0) * ldw;
    const __half* w1 = second ? w0 + ldw : w0;
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
    if (lane == 0) {
        y[m0] = acc[0];
        if (second) y[m0 + 1] = acc[1];
    }
}

}  // namespace

bool gemv_shape_ok(const void* w, size_t ldw, int64_t K, const float* x) {
    return K > 0 && K % 8 == 0 && ldw % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
           K < (int64_t(1) << 31);
}

bool gemv_f16(const __half* w, size_t ldw, int64_t K, int64_t M, const float* x, float* y, cudaStream_t stream) {
    if (M <= 0) return true;
    const int64_t rows_per_block = kWarps * kRowsPerWarp;
    gemv_kernel<<<unsigned((M + rows_per_block - 1) / rows_per_block), kWarps * 32, 0, stream>>>(w, ldw, K, M, x, y);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace mustafar::cuda
