// few_columns_cuda.h: mma.sync m16n8k16 with the weights as A and the (up to 8) activation columns as B.
// A block of 8 warps takes kTiles tiles of 16 rows; each warp a contiguous eighth of K, in steps of 32.
// Per step a lane loads 8 consecutive weights of row g and of row g + 8 of each tile (16-byte loads that
// bypass L1) and the same 8 k of column g of the activation: the order of k inside a step is free as long
// as A and B share it, so two MMAs take the 8 values as they come, with no shuffles. The warps' partial
// tiles are summed in shared memory in warp order (a deterministic sum); nothing crosses blocks.
#include <cuda_fp16.h>

#include "cuda_check.h"
#include "few_columns_cuda.h"
#include "launch_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr int kWarps = 8, kStep = 32;
// One tile of 16 rows a block, 4 steps of loads in flight (8 weight loads a lane), registers for two blocks an
// SM. H200, a Llama-3-8B layer's seven products at 8 columns: 122.6 us against cuBLAS's 145.4 (from a CUDA graph).
// Capping the registers for 3 or 4 blocks an SM was 2-3x slower (272 and 385 us), as were 8 steps under this cap
// (308 us; 139 us uncapped); 2 tiles a block took 133 us (few_columns_cuda_bench, gpu-products-2026-12-02.md).
constexpr int kLayoutTiles = 1, kLayoutSteps = 4;

__device__ __forceinline__ uint4 load_streaming(const __half* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];\n" : : "l"(p)); }

__device__ __forceinline__ uint32_t half_pair(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// kUnroll steps of a lane's loads are issued before their MMAs: 2 * kTiles * kUnroll weight loads in flight.
template <int kTiles, int kUnroll>
__global__ void __launch_bounds__(kWarps * 32, 2) few_columns_kernel(FewColumns f) {
    constexpr int kRows = 16 * kTiles;
    __shared__ float4 partial[kWarps][kTiles][32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const int64_t steps = f.K / kStep, j0 = steps * warp / kWarps, j1 = steps * (warp + 1) / kWarps;
    const int64_t m0 = int64_t(blockIdx.x) * kRows;
    // Rows g and g + 8 of each tile; rows past M read row M - 1 and are not written.
    const __half* w[2 * kTiles];
#pragma unroll
    for (int i = 0; i < 2 * kTiles; ++i)
        w[i] = f.w + size_t(min(m0 + 16 * (i / 2) + g + 8 * (i % 2), f.M - 1)) * f.ldw + size_t(8 * t);
    // Weights are no kernel's output: the first steps come into L2 while the previous kernel ends.
    if (j0 < j1)
#pragma unroll
        for (int i = 0; i < 2 * kTiles; ++i) prefetch_l2(w[i] + j0 * kStep);
    wait_for_previous();
    let_next_start();
    const bool column = g < f.N;
    const float* x = f.x + size_t(column ? g : 0) * f.ldx + size_t(8 * t);
    float acc[kTiles][4] = {};
    for (int64_t j = j0; j < j1; j += kUnroll) {
        uint4 v[kUnroll][2 * kTiles];
        float4 xa[kUnroll], xb[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const int64_t k = min(j + u, j1 - 1) * kStep;  // past the slice: reloads the last step, summed as zeros
#pragma unroll
            for (int i = 0; i < 2 * kTiles; ++i) v[u][i] = load_streaming(w[i] + k);
            xa[u] = __ldg(reinterpret_cast<const float4*>(x + k));
            xb[u] = __ldg(reinterpret_cast<const float4*>(x + k + 4));
        }
        // No branch between the loads and their use: with a `break` past the slice's end nvcc moved each step's
        // loads below it, leaving a lane 2 weight loads in flight instead of 8 (1.5x slower, 66 registers
        // against 118). A step past the end, or a column past N, multiplies zeros instead.
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            uint32_t b[4] = {half_pair(xa[u].x, xa[u].y), half_pair(xa[u].z, xa[u].w), half_pair(xb[u].x, xb[u].y), half_pair(xb[u].z, xb[u].w)};
            if (!column || j + u >= j1) b[0] = b[1] = b[2] = b[3] = 0;
#pragma unroll
            for (int i = 0; i < kTiles; ++i) {
                const uint4 lo = v[u][2 * i], hi = v[u][2 * i + 1];
                mma16816(acc[i], lo.x, hi.x, lo.y, hi.y, b[0], b[1]);
                mma16816(acc[i], lo.z, hi.z, lo.w, hi.w, b[2], b[3]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < kTiles; ++i) partial[warp][i][lane] = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
    __syncthreads();
    // C of a tile: lane (g, t) holds (row g, columns 2t, 2t + 1) and (row g + 8, the same columns).
    // Thread i sums output (row i % kRows, column i / kRows), so that a warp writes consecutive rows.
    for (int i = threadIdx.x; i < kRows * kFewColumnsMax; i += kWarps * 32) {
        const int r = i % kRows, n = i / kRows, tile = r / 16, rr = r % 16;
        const int64_t m = m0 + r;
        if (n >= f.N || m >= f.M) continue;
        const int src = (rr % 8) * 4 + n / 2, reg = (rr / 8) * 2 + n % 2;
        float sum = 0.0f;
#pragma unroll
        for (int q = 0; q < kWarps; ++q) sum += reinterpret_cast<const float*>(&partial[q][tile][src])[reg];
        f.y[size_t(n) * f.ldy + size_t(m)] = sum;
    }
}

template <int kTiles, int kUnroll>
bool launch(const FewColumns& f, cudaStream_t stream) {
    const int64_t blocks = (f.M + 16 * kTiles - 1) / (16 * kTiles);
    if (blocks > 0x7fffffff) return false;
    launch_kernel(few_columns_kernel<kTiles, kUnroll>, unsigned(blocks), kWarps * 32, 0, stream, f);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace

bool few_columns_shape_ok(const FewColumns& f) {
    const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    return f.N >= 2 && f.N <= kFewColumnsMax && f.M > 0 && f.K > 0 && f.K % kStep == 0 && f.ldw % 8 == 0 && f.ldx % 4 == 0 &&
           f.ldw >= size_t(f.K) && f.ldx >= size_t(f.K) && f.ldy >= size_t(f.M) && aligned(f.w) && aligned(f.x);
}

bool few_columns_f16(const FewColumns& f, cudaStream_t stream) {
    if (!few_columns_shape_ok(f)) return false;
    return launch<kLayoutTiles, kLayoutSteps>(f, stream);
}

}  // namespace mustafar::cuda
