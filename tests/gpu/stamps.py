#!/usr/bin/env python3
# Makes an instrumented copy of native/src/cuda/attention_decode.cu for tests/gpu/ab.sh: thread 0 of every
# block of the tensor-core decode kernel writes %globaltimer at twelve points (and its SM id) (0 entry, 1 after waiting for the
# previous kernel, 2 queries staged, 3 first step's data in, 4 walk done, 5 warps' states in shared memory,
# 6 partial written, 7 arrival counted (after the barrier that follows it); each merging block: 11 thread 0's
# count or wait done, 9 its role known (the barrier after it), 10 thread 0's share of the sums loaded and folded,
# 8 merge done), for two consecutive calls (the 44th and
# 45th launch of a process); the 53rd launch prints, per point, min / 10 % / median / 90 % / max over the
# blocks in ns from the first block's entry of call 44. The timing of that build is not the kernel's (the
# printing synchronises): compare phases, not totals.
# Usage: python3 tests/gpu/stamps.py native/src/cuda/attention_decode.cu artifacts/gpu/ref/stamps.cu
#        REF=artifacts/gpu/ref/stamps.cu OUT=... POINTS="0,1,32768" tests/gpu/ab.sh 2> stamps.txt
#        python3 tests/gpu/stamps_phases.py stamps.txt $OUT/ab.txt ref1   (the merge's phases as a table)
# It patches by exact text: when the kernel changes, the assertion names the anchor to update.
import sys

# --refold (diagnostic): a merger folds its share twice, the same instructions on the same partials (stamp 13 after
# the second pass); the output is stored once. Forty-first session: the first pass 1.4-1.5 us, the second 0.5-0.7
# (dense batch 1), and not for cold code (gpu-attention-2026-12-03.md).
refold = '--refold' in sys.argv
args = [a for a in sys.argv[1:] if a != '--refold']
src = open(args[0]).read()
s = src
s=s.replace('''namespace mustafar::cuda {
namespace {
''','''namespace mustafar::cuda {
namespace {
constexpr int kStamps = 14, kMaxBlocks = 8192;  // stamp 12: the block's SM id
__device__ unsigned long long g_st[2][kMaxBlocks][kStamps];
__device__ __forceinline__ unsigned long long gtime() { unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }
#define STAMP(i) do { if (slot >= 0 && threadIdx.x == 0) { const unsigned b_ = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z); if (b_ < kMaxBlocks) g_st[slot][b_][i] = gtime(); } } while (0)
''',1)
def rep(old,new):
    global s
    assert old in s, old
    s=s.replace(old,new,1)
rep('''                                                       int* counters, int mergers) {''','''                                                       int* counters, int mergers, int slot) {
    STAMP(0);''')
rep('''    if (!early) start_after_previous();''','''
    if (slot >= 0 && threadIdx.x == 0) { unsigned sm_; asm volatile("mov.u32 %0, %%smid;" : "=r"(sm_)); const unsigned b_ = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z); if (b_ < kMaxBlocks) g_st[slot][b_][12] = sm_ + 1; }
    if (!early) { start_after_previous(); STAMP(1); }''')
rep('''    if (early) start_after_previous();''','''    if (early) { start_after_previous(); STAMP(1); }''')
rep('''    __syncthreads();
    // Over the dense cache the queries' A fragments''','''    __syncthreads();
    STAMP(2);
    bool first_ = true;
    // Over the dense cache the queries' A fragments''')
rep('''            __pipeline_wait_prior(kStages - 1);
        }
        __syncwarp();
        if (live != 0u) {''','''            __pipeline_wait_prior(kStages - 1);
        }
        __syncwarp();
        if (first_) { STAMP(3); first_ = false; }
        if (live != 0u) {''')
rep('''    __syncthreads();  // the merge arrays overlay''','''    STAMP(4);
    __syncthreads();  // the merge arrays overlay''')
rep('''    merge_warps<D>(p, pl, G, s_acc, s_m, s_l, part, splits);
    if (counters != nullptr) {''','''    STAMP(5);
    merge_warps<D>(p, pl, G, s_acc, s_m, s_l, part, splits);
    STAMP(6);
    if (counters != nullptr) {''')
rep('''reinterpret_cast<float*>(smem), bar);''','''reinterpret_cast<float*>(smem), bar, slot);''')
rep('''int* counters, float* w,
                              unsigned bar) {''','''int* counters, float* w,
                              unsigned bar, int slot) {''')
rep('''    __syncthreads();
    const int role = s_role;
    if (role < 0) return;''','''    __syncthreads();
    STAMP(7);
    const int role = s_role;
    if (role < 0) return;''')
rep('''            counted = atomicAdd(c, 1);
        }''','''            counted = atomicAdd(c, 1);
        }
        STAMP(11);''')
rep('''    const int role = s_role;
    if (role < 0) return;
    constexpr int P''','''    const int role = s_role;
    if (role < 0) return;
    STAMP(9);
    constexpr int P''')
rep('''                fold_splits<D, 9>(hb, c, q, parts, splits, m, l, a);  // the store's 66 splits at batch 1 in one batch
            }
        }''','''                fold_splits<D, 9>(hb, c, q, parts, splits, m, l, a);  // the store's 66 splits at batch 1 in one batch
            }
            if (r0 == 0) STAMP(10);
        }''')
if refold:
    rep('''        if (mine) {
            const int n = (splits + parts - 1) / parts''','''#pragma unroll 1
        for (int pass_ = 0; pass_ < 2; ++pass_) {
        m = -INFINITY, l = 0.0f, a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (mine) {
            const int n = (splits + parts - 1) / parts''')
    rep('''            if (r0 == 0) STAMP(10);
        }''','''            if (r0 == 0) STAMP(pass_ == 0 ? 10 : 13);
        }
        }''')
rep('''    if (counted == splits + mergers - 2)''', '''    __syncthreads();
    STAMP(8);
    if (counted == splits + mergers - 2)''')
rep('''    launch_kernel(fn, grid_of(p, splits), kThreads, smem, stream, p, dc, cc, tl, pr.part, splits, counters, mergers);''','''    static int calls_ = 0;
    ++calls_;
    int slot_ = calls_ == 44 ? 0 : calls_ == 45 ? 1 : -1;
    if (calls_ == 44) {
        void* a_ = nullptr;
        cudaGetSymbolAddress(&a_, g_st);
        cudaMemsetAsync(a_, 0, sizeof(g_st), stream);
    }
    launch_kernel(fn, grid_of(p, splits), kThreads, smem, stream, p, dc, cc, tl, pr.part, splits, counters, mergers, slot_);
    if (calls_ == 53) dump_stamps(grid_of(p, splits));''')
rep('''// The tensor-core kernels for D = 64 and 128 (up to 8 query heads per KV head).
bool launch_mma(''','''void dump_stamps(dim3 g) {
    static unsigned long long h[2][kMaxBlocks][kStamps];
    cudaDeviceSynchronize();
    cudaMemcpyFromSymbol(h, g_st, sizeof(h));
    const unsigned n = std::min<unsigned>(g.x * g.y * g.z, kMaxBlocks);
    unsigned long long t0 = ~0ull;
    for (unsigned b = 0; b < n; ++b) t0 = std::min(t0, h[0][b][0]);
    fprintf(stderr, "stamps: %u blocks; ns from the first block's entry of call 44 (min / 10%% / median / 90%% / max; n)\\n", n);
    for (int c = 0; c < 2; ++c)
        for (int i = 0; i < kStamps; ++i) {
            if (i == 12) continue;
            std::vector<long long> v;
            for (unsigned b = 0; b < n; ++b) if (h[c][b][i] != 0) v.push_back((long long)(h[c][b][i] - t0));
            if (v.empty()) continue;
            std::sort(v.begin(), v.end());
            fprintf(stderr, "  call %d stamp %d: %lld / %lld / %lld / %lld / %lld; %zu\\n", 44 + c, i, v[0], v[v.size() / 10], v[v.size() / 2], v[v.size() * 9 / 10], v.back(), v.size());
        }
    // Call 45 per SM: each block's walk (first step's data to walk done) and its end, ns; is a slow walk a place's?
    fprintf(stderr, "per SM, call 45: sm: (block: walk ns, walk done ns from the call's first entry)...\\n");
    unsigned long long t1 = ~0ull;
    for (unsigned b = 0; b < n; ++b) t1 = std::min(t1, h[1][b][0]);
    for (unsigned sm = 1; sm <= 1024; ++sm) {
        bool any = false;
        for (unsigned b = 0; b < n; ++b) {
            if (h[1][b][12] != sm || h[1][b][3] == 0 || h[1][b][4] == 0) continue;
            if (!any) fprintf(stderr, "  sm %u:", sm - 1);
            any = true;
            fprintf(stderr, " (%u: %lld, %lld)", b, (long long)(h[1][b][4] - h[1][b][3]), (long long)(h[1][b][4] - t1));
        }
        if (any) fprintf(stderr, "\\n");
    }
}

// The tensor-core kernels for D = 64 and 128 (up to 8 query heads per KV head).
bool launch_mma(''')
rep('using MmaFn = void (*)(DecodeProblem, DenseCache, CompressedCache, TileLists, float*, int, int*, int);','using MmaFn = void (*)(DecodeProblem, DenseCache, CompressedCache, TileLists, float*, int, int*, int, int);')
s=s.replace('#include <cmath>\n','#include <cmath>\n#include <cstdio>\n#include <vector>\n',1)
open(args[1],'w').write(s)
