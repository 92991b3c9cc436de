// The end of a flash-decoding launch in isolation: what merging the context splits' partials adds to a
// launch, by the protocol the decode kernel uses (the last block of a KV head's splits to count its
// arrival in global memory merges them all) and by thread block clusters (the splits of one cluster merge
// through distributed shared memory behind a cluster barrier, and only the clusters' partials meet in
// global memory). Each block stands for a split of the dense batch-1, 32K decode: it "walks" for a fixed
// time with a spread (the real kernel's blocks end 21-30 us after their start), writes a partial of G
// heads x (D sums, m, l) and merges; "none" writes the partial and ends. The shared memory a block asks
// for is the dense decode kernel's, so that two blocks share a multiprocessor as there.
// Usage: merge_cuda_bench [walk_us] [spread_us]. Prints µs a launch for each protocol and the largest
// difference between the protocols' outputs.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_cuda.h"

namespace cg = cooperative_groups;
using mustafar::bench::DevMem;
using mustafar::bench::Timer;

namespace {

constexpr int kD = 128, kG = 4, kP = kD + 4, kThreads = 128, kHeadsKv = 8;
constexpr size_t kSmem = 108800;  // the dense D = 128 decode kernel's (two blocks a multiprocessor)

__device__ unsigned long long now_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

// A split's partial: head g's sums, m and l, from the split's number (so that outputs can be compared).
__device__ void make_partial(int hk, int split, float* dst) {
    for (int i = threadIdx.x; i < kG * kP; i += kThreads) {
        const int g = i / kP, d = i % kP;
        const float x = float((hk * 131 + split * 17 + g * 7 + d) % 97) / 97.0f;
        dst[i] = d < kD ? x : d == kD ? 4.0f * x : d == kD + 1 ? 1.0f + x : 0.0f;
    }
}

__device__ void walk(int hk, int split, float walk_us, float spread_us) {
    const unsigned long long t0 = now_ns();
    const unsigned h = unsigned(hk * 977 + split * 7919) * 2654435761u;
    const double ns = 1000.0 * (walk_us + spread_us * double(h >> 8) / double(1u << 24));
    while (double(now_ns() - t0) < ns) {
    }
}

__device__ int add_acq_rel(int* p, int v) {
    int old;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
    return old;
}

// Merges n partials (pp(i) gives partial i, written by other blocks: loads bypass L1) of G heads into
// out[g * D + d], with all threads.
template <typename Part>
__device__ void merge_parts(int n, Part&& pp, float* out, float* s_w) {
    if (threadIdx.x < kG) {
        const int g = threadIdx.x;
        float m = -INFINITY;
        for (int i = 0; i < n; ++i) m = fmaxf(m, __ldcg(pp(i) + g * kP + kD));
        float l = 0.0f;
        for (int i = 0; i < n; ++i) {
            const float f = exp2f(__ldcg(pp(i) + g * kP + kD) - m);
            s_w[g * 32 + i] = f;
            l += __ldcg(pp(i) + g * kP + kD + 1) * f;
        }
        s_w[kG * 32 + g] = l;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < kG * kD; t += kThreads) {
        const int g = t / kD, d = t % kD;
        float a = 0.0f;
        for (int i = 0; i < n; ++i) a += __ldcg(pp(i) + g * kP + d) * s_w[g * 32 + i];
        out[t] = a / s_w[kG * 32 + g];
    }
}

// grid (splits, heads): partials to global memory; the last arrival of a head merges them (mode 1) or
// nobody does (mode 0).
__global__ void __launch_bounds__(kThreads) global_kernel(int mode, float walk_us, float spread_us, float* part, int* counters, float* out) {
    extern __shared__ float smem[];
    __shared__ int s_last;
    const int split = blockIdx.x, splits = gridDim.x, hk = blockIdx.y;
    walk(hk, split, walk_us, spread_us);
    float* mine = part + (size_t(hk) * splits + split) * kG * kP;
    make_partial(hk, split, mine);
    if (mode == 0) return;
    __syncthreads();
    if (threadIdx.x == 0) {
        const int arrived = add_acq_rel(counters + hk, 1);
        s_last = arrived == splits - 1;
        if (s_last) atomicExch(counters + hk, 0);
    }
    __syncthreads();
    if (!s_last) return;
    const float* base = part + size_t(hk) * splits * kG * kP;
    merge_parts(splits, [&](int i) { return base + size_t(i) * kG * kP; }, out + size_t(hk) * kG * kD, smem);
}

// grid (splits, heads), clusters of C splits: each block's partial in its shared memory; after the
// cluster barrier, rank r merges channels [r * D / C, (r + 1) * D / C) of every head from the cluster's
// blocks; the clusters of a head then meet in global memory per rank (the last cluster to count a rank's
// slice merges that slice).
__global__ void __launch_bounds__(kThreads) cluster_kernel(float walk_us, float spread_us, float* part, int* counters, float* out) {
    extern __shared__ float smem[];
    __shared__ float s_w[kG * 32 + kG];
    __shared__ int s_last;
    cg::cluster_group cluster = cg::this_cluster();
    const int C = int(cluster.num_blocks()), r = int(cluster.block_rank());
    const int split = blockIdx.x, splits = gridDim.x, hk = blockIdx.y, clusters = splits / C, ci = split / C;
    walk(hk, split, walk_us, spread_us);
    make_partial(hk, split, smem);
    cluster.sync();
    // m and l of every head over the cluster's blocks, then this rank's slice of the sums.
    const int w = kD / C, d0 = r * w;
    float* slice = part + ((size_t(hk) * clusters + ci) * C + r) * kG * (w + 2);  // [G][w sums, m, l]
    if (threadIdx.x < kG) {
        const int g = threadIdx.x;
        float m = -INFINITY;
        for (int i = 0; i < C; ++i) m = fmaxf(m, cluster.map_shared_rank(smem, i)[g * kP + kD]);
        float l = 0.0f;
        for (int i = 0; i < C; ++i) {
            const float* o = cluster.map_shared_rank(smem, i);
            const float f = exp2f(o[g * kP + kD] - m);
            s_w[g * 32 + i] = f;
            l += o[g * kP + kD + 1] * f;
        }
        slice[g * (w + 2) + w] = m;
        slice[g * (w + 2) + w + 1] = l;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < kG * w; t += kThreads) {
        const int g = t / w, d = t % w;
        float a = 0.0f;
        for (int i = 0; i < C; ++i) a += cluster.map_shared_rank(smem, i)[g * kP + d0 + d] * s_w[g * 32 + i];
        slice[g * (w + 2) + d] = a;
    }
    // The others may read this block's shared memory until they pass the barrier.
    cluster.sync();
    __syncthreads();
    if (threadIdx.x == 0) {
        int* c = counters + hk * C + r;
        const int arrived = add_acq_rel(c, 1);
        s_last = arrived == clusters - 1;
        if (s_last) atomicExch(c, 0);
    }
    __syncthreads();
    if (!s_last) return;
    for (int t = threadIdx.x; t < kG * w; t += kThreads) {
        const int g = t / w, d = t % w;
        float m = -INFINITY;
        for (int k = 0; k < clusters; ++k) m = fmaxf(m, __ldcg(part + ((size_t(hk) * clusters + k) * C + r) * kG * (w + 2) + g * (w + 2) + w));
        float a = 0.0f, l = 0.0f;
        for (int k = 0; k < clusters; ++k) {
            const float* o = part + ((size_t(hk) * clusters + k) * C + r) * kG * (w + 2) + g * (w + 2);
            const float f = exp2f(__ldcg(o + w) - m);
            a += __ldcg(o + d) * f;
            l += __ldcg(o + w + 1) * f;
        }
        out[size_t(hk) * kG * kD + g * kD + d0 + d] = a / l;
    }
}

}  // namespace

int main(int argc, char** argv) {
    const float walk_us = argc > 1 ? float(std::atof(argv[1])) : 21.0f, spread_us = argc > 2 ? float(std::atof(argv[2])) : 8.0f;
    const int splits = 32;
    cudaDeviceProp prop{};
    CK(cudaGetDeviceProperties(&prop, 0));
    std::printf("%s, %d SMs; blocks of %d threads, %zu B shared; %d splits x %d KV heads; walk %.1f + up to %.1f us\n", prop.name,
                prop.multiProcessorCount, kThreads, kSmem, splits, kHeadsKv, walk_us, spread_us);
    CK(cudaFuncSetAttribute(global_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem)));
    CK(cudaFuncSetAttribute(cluster_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem)));
    CK(cudaFuncSetAttribute(cluster_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, global_kernel, kThreads, kSmem));
    std::printf("blocks a multiprocessor: %d\n", per_sm);

    DevMem part(size_t(kHeadsKv) * splits * kG * kP * sizeof(float)), counters(kHeadsKv * 32 * sizeof(int));
    DevMem out_g(size_t(kHeadsKv) * kG * kD * sizeof(float)), out_c(size_t(kHeadsKv) * kG * kD * sizeof(float));
    CK(cudaMemset(counters.p, 0, kHeadsKv * 32 * sizeof(int)));
    Timer timer;
    const dim3 grid(splits, kHeadsKv);
    const int reps = 200;
    for (int mode = 0; mode < 2; ++mode) {
        const double us = timer.us_per_call(reps, [&](int) {
            global_kernel<<<grid, kThreads, kSmem>>>(mode, walk_us, spread_us, part.as<float>(), counters.as<int>(), out_g.as<float>());
        });
        std::printf("%-34s %8.2f us a launch\n", mode == 0 ? "none (partials written)" : "global, last arrival merges", us);
    }
    std::vector<float> a(size_t(kHeadsKv) * kG * kD), b(a.size());
    CK(cudaMemcpy(a.data(), out_g.p, a.size() * sizeof(float), cudaMemcpyDeviceToHost));
    for (int C : {2, 4, 8, 16}) {
        cudaLaunchConfig_t cfg{};
        cfg.gridDim = grid;
        cfg.blockDim = dim3(kThreads);
        cfg.dynamicSmemBytes = kSmem;
        cudaLaunchAttribute attr{};
        attr.id = cudaLaunchAttributeClusterDimension;
        attr.val.clusterDim.x = unsigned(C);
        attr.val.clusterDim.y = 1;
        attr.val.clusterDim.z = 1;
        cfg.attrs = &attr;
        cfg.numAttrs = 1;
        int active = 0;
        if (cudaOccupancyMaxActiveClusters(&active, cluster_kernel, &cfg) != cudaSuccess) {
            std::printf("clusters of %2d: %s\n", C, cudaGetErrorString(cudaGetLastError()));
            continue;
        }
        const int needed = splits / C * kHeadsKv;
        if (active < needed) {
            std::printf("clusters of %2d: %d resident at most, %d needed: not launched\n", C, active, needed);
            continue;
        }
        CK(cudaMemset(counters.p, 0, kHeadsKv * 32 * sizeof(int)));
        const double us = timer.us_per_call(reps, [&](int) {
            CK(cudaLaunchKernelEx(&cfg, cluster_kernel, walk_us, spread_us, part.as<float>(), counters.as<int>(), out_c.as<float>()));
        });
        CK(cudaMemcpy(b.data(), out_c.p, b.size() * sizeof(float), cudaMemcpyDeviceToHost));
        double diff = 0.0;
        for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, double(std::fabs(a[i] - b[i])));
        std::printf("clusters of %2d (%3d resident at most) %8.2f us a launch, largest difference from global %.2e\n", C, active, us, diff);
    }
    return 0;
}
