// few_columns_cuda.h: mma.sync m16n8k16 with the weights as A and the (up to 8) activation columns as B.
// A block of 8 warps takes a tile of 16 rows (of two products where paired); each warp a contiguous eighth of K,
// in steps of 32.
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
// (308 us; 139 us uncapped); 2 tiles of one product a block took 133 us (few_columns_cuda_bench,
// gpu-products-2026-12-02.md).

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
// Unpaired groups: one tile of 16 rows of one part a block. Paired: tile 0 of part 0 and tile 1 of part 1, the same
// rows (gate and up, then their SWIGLU).
template <int kTiles, int kUnroll>
__global__ void __launch_bounds__(kWarps * 32, 2) few_columns_kernel(FewGroup g) {
    __shared__ float4 partial[kWarps][kTiles][32];
    // The block's product: parts are laid out one after the other over the grid (at most kMaxParts).
    FewPart part = g.part[0];
#pragma unroll
    for (int i = 1; i < FewGroup::kMaxParts; ++i)
        if (!g.paired && i < g.n && blockIdx.x >= g.part[i].first_block) part = g.part[i];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, gr = lane / 4, t = lane % 4;
    const int64_t steps = g.K / kStep, j0 = steps * warp / kWarps, j1 = steps * (warp + 1) / kWarps;
    const int64_t M = part.M, m0 = int64_t(blockIdx.x - part.first_block) * 16;
    // Rows gr and gr + 8 of each tile; rows past M read row M - 1 and are not written.
    const __half* w[2 * kTiles];
#pragma unroll
    for (int i = 0; i < 2 * kTiles; ++i) {
        const FewPart& p = i / 2 == 0 ? part : g.part[1];
        w[i] = p.w + size_t(min(m0 + gr + 8 * (i % 2), M - 1)) * p.ldw + size_t(8 * t);
    }
    // Weights are no kernel's output: the first steps come into L2 while the previous kernel ends.
    if (j0 < j1)
#pragma unroll
        for (int i = 0; i < 2 * kTiles; ++i) prefetch_l2(w[i] + j0 * kStep);
    wait_for_previous();
    const bool column = gr < g.N;
    const float* x = g.x + size_t(column ? gr : 0) * g.ldx + size_t(8 * t);
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
    // The next kernel may launch once every block has read its weights, not as it starts: with the trigger after the
    // wait, H200 decode steps of the Llama-3-8B-shaped model at 4K took 9.26-9.85 ms at batch 8 (7.50 at batch 4)
    // against 7.37 (6.63) with it here (bench/results/gpu-fusion-2026-12-03.md). Our reading: the RMS_NORM + MUL
    // between a product + ADD and the paired gate/up launched into SMs the product still held.
    let_next_start();
#pragma unroll
    for (int i = 0; i < kTiles; ++i) partial[warp][i][lane] = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
    __syncthreads();
    // C of a tile: lane (gr, t) holds (row gr, columns 2t, 2t + 1) and (row gr + 8, the same columns).
    // Thread i sums output (row i % 16, column i / 16) of each tile, so that a warp writes consecutive rows.
    for (int i = threadIdx.x; i < 16 * kFewColumnsMax; i += kWarps * 32) {
        const int r = i % 16, n = i / 16;
        const int64_t m = m0 + r;
        if (n >= g.N || m >= M) continue;
        auto total = [&](int tile, int row) {
            const int src = (row % 8) * 4 + n / 2, reg = (row / 8) * 2 + n % 2;
            float sum = 0.0f;
#pragma unroll
            for (int q = 0; q < kWarps; ++q) sum += reinterpret_cast<const float*>(partial[q][tile])[src * 4 + reg];
            return sum;
        };
        const float y = total(0, r);
        if (kTiles == 2) {
            // silu(a) * b as the SWIGLU kernel computes it; the GLU output, written last, may be a product's memory.
            const float b = total(kTiles - 1, r);
            part.y[size_t(n) * part.ldy + size_t(m)] = y;
            g.part[1].y[size_t(n) * g.part[1].ldy + size_t(m)] = b;
            if (g.glu != nullptr) g.glu[size_t(n) * g.ld_glu + size_t(m)] = y / (1.0f + expf(-y)) * b;
            continue;
        }
        // Read the addend before any write: the sum may share memory with it or with y (in-place ADD).
        const float add = part.add != nullptr ? part.add[size_t(n) * part.ld_add + size_t(m)] : 0.0f;
        if (part.y != nullptr) part.y[size_t(n) * part.ldy + size_t(m)] = y;
        if (part.add != nullptr) part.sum[size_t(n) * part.ld_sum + size_t(m)] = y + add;
        const FewRope& rp = part.rope;
        if (rp.out != nullptr) {  // written after y: the ROPE may be in place
            const int64_t d = m % rp.head_dim, pair = d / 2;
            float r0 = y, r1 = y;
            if (2 * pair < rp.p.n_dims) {
                const float other = total(0, r ^ 1);  // row m ^ 1, the pair's other channel, is this tile's too
                rope_rotate(rp.p, rp.pos[n], pair, rp.freq_factors, d % 2 == 0 ? y : other, d % 2 == 0 ? other : y, r0, r1);
            }
            rp.out[size_t(n) * rp.col_stride + size_t(m / rp.head_dim) * rp.head_stride + size_t(d)] = d % 2 == 0 ? r0 : r1;
        }
    }
}

// Unpaired: 4 steps in flight of one tile; paired: 2 steps of two tiles (8 weight loads a lane either way).
constexpr int kUnpairedSteps = 4, kPairedSteps = 2;

bool part_ok(const FewPart& p, const FewGroup& g) {
    FewColumns f;
    f.w = p.w;
    f.ldw = p.ldw;
    f.x = g.x;
    f.ldx = g.ldx;
    f.y = p.y != nullptr ? p.y : p.rope.out;  // y may be left out where the rotation is written
    f.ldy = p.y != nullptr ? p.ldy : size_t(p.M);
    if (p.rope.out != nullptr && (p.add != nullptr || p.rope.head_dim <= 0 || p.rope.head_dim % 2 != 0 || p.M % p.rope.head_dim != 0 ||
                                  p.rope.pos == nullptr))
        return false;
    f.M = p.M;
    f.N = g.N;
    f.K = g.K;
    return few_columns_shape_ok(f) && (p.add == nullptr || (p.sum != nullptr && p.ld_add >= size_t(p.M) && p.ld_sum >= size_t(p.M)));
}

}  // namespace

bool few_columns_shape_ok(const FewColumns& f) {
    const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    return f.N >= 2 && f.N <= kFewColumnsMax && f.M > 0 && f.K > 0 && f.K % kStep == 0 && f.ldw % 8 == 0 && f.ldx % 4 == 0 &&
           f.ldw >= size_t(f.K) && f.ldx >= size_t(f.K) && f.ldy >= size_t(f.M) && aligned(f.w) && aligned(f.x) && f.y != nullptr;
}

bool few_columns_f16(const FewColumns& f, cudaStream_t stream) {
    FewGroup g;
    g.n = 1;
    g.N = f.N;
    g.K = f.K;
    g.x = f.x;
    g.ldx = f.ldx;
    g.part[0].w = f.w;
    g.part[0].ldw = f.ldw;
    g.part[0].M = f.M;
    g.part[0].y = f.y;
    g.part[0].ldy = f.ldy;
    return few_columns_group(g, stream);
}

bool few_columns_group(const FewGroup& group, cudaStream_t stream) {
    FewGroup g = group;
    if (g.n < 1 || g.n > FewGroup::kMaxParts) return false;
    for (int i = 0; i < g.n; ++i)
        if (!part_ok(g.part[i], g)) return false;
    int64_t blocks = 0;
    if (g.paired) {
        if (g.n != 2 || g.part[0].M != g.part[1].M || g.part[0].add != nullptr || g.part[1].add != nullptr || g.part[0].y == nullptr ||
            g.part[1].y == nullptr || g.part[0].rope.out != nullptr || g.part[1].rope.out != nullptr ||
            (g.glu != nullptr && g.ld_glu < size_t(g.part[0].M)))
            return false;
        blocks = (g.part[0].M + 15) / 16;
    } else {
        if (g.glu != nullptr) return false;
        for (int i = 0; i < g.n; ++i) {
            g.part[i].first_block = unsigned(blocks);
            blocks += (g.part[i].M + 15) / 16;
        }
    }
    if (blocks > 0x7fffffff) return false;
    if (g.paired) {
        launch_kernel(few_columns_kernel<2, kPairedSteps>, unsigned(blocks), kWarps * 32, 0, stream, g);
    } else {
        launch_kernel(few_columns_kernel<1, kUnpairedSteps>, unsigned(blocks), kWarps * 32, 0, stream, g);
    }
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace mustafar::cuda
