// Attention kernels (attention_decode.h), three families:
//  - tensor-core kernels (D = 64, 128; up to 8 query heads per KV head), the fast path: flash-decoding
//    over the dense cache and over the Mustafar store (mma_kernel), and prompts (prompt_kernel);
//  - f32 SIMT flash-decoding for the other shapes (D = 256): block = 4 warps, (context split, KV head,
//    query row); each lane owns 8 consecutive channels, so D/8 lanes share one cell; scores of all G
//    query heads of the group come from one read of K; the compressed variant stages each step's
//    records in shared memory with 16-byte asynchronous copies and expands them there (a lane's 8
//    channels are one bitmap byte, its values start at the popcount of the bitmap below that byte);
//  - the merge of the context splits (in the tensor-core kernels, by their last block) and, per query
//    row, the range of cells its mask shows and the list of 16-cell tiles that hold them, which the
//    decode kernels divide among their context splits.
// Softmax in f32 and log2 units throughout.
#include <cuda_fp16.h>
#include <cuda_pipeline.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "attention_decode.h"
#include "bulk_copy_cuda.h"
#include "cuda_check.h"
#include "launch_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kStepCells = 8;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ void to_float8(const uint4& r, float (&x)[8]) {
    const __half2* h = reinterpret_cast<const __half2*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(h[i]);
        x[2 * i] = f.x;
        x[2 * i + 1] = f.y;
    }
}

__device__ __forceinline__ uint4 load16(const char* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

__device__ __forceinline__ float merge_factor(float m, float m_new) { return m == -INFINITY ? 0.0f : exp2f(m - m_new); }

// A context split's partial result per head: [acc (D) | m | l | 2 floats of padding], 16-byte aligned
// so that the merge reads it with 16-byte loads.
__host__ __device__ constexpr int part_stride(int D) { return D + 4; }

// Online softmax of one lane: G heads x its 8 channels.
template <int G>
struct State {
    float m[G], l[G], acc[G][8];

    __device__ void init() {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            m[g] = -INFINITY;
            l[g] = 0.0f;
#pragma unroll
            for (int d = 0; d < 8; ++d) acc[g][d] = 0.0f;
        }
    }

    // One step of U cells (dead ones at -inf): the running max and the rescale of the accumulators
    // move once per step, not once per cell. value(u, v) yields cell u's 8 channels of V.
    template <int U, typename Value>
    __device__ void add_step(const float (&s)[U][G], Value&& value) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float m_new = m[g];
#pragma unroll
            for (int u = 0; u < U; ++u) m_new = fmaxf(m_new, s[u][g]);
            if (m_new > m[g]) {
                const float a = exp2f(m[g] - m_new);
                l[g] *= a;
#pragma unroll
                for (int d = 0; d < 8; ++d) acc[g][d] *= a;
                m[g] = m_new;
            }
        }
        // Cell by cell, so that only one cell's V is expanded at a time (registers).
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float v[8];
            value(u, v);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const float pr = s[u][g] == -INFINITY ? 0.0f : exp2f(s[u][g] - m[g]);
                l[g] += pr;
#pragma unroll
                for (int d = 0; d < 8; ++d) acc[g][d] += pr * v[d];
            }
        }
    }
};

// q . k for each head, summed over the L lanes of the cell (all 32 lanes must call).
template <int L, int G>
__device__ __forceinline__ void scores(const float (&q)[G][8], const float (&k)[8], float (&s)[G]) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float t = 0.0f;
#pragma unroll
        for (int d = 0; d < 8; ++d) t += q[g][d] * k[d];
#pragma unroll
        for (int o = 1; o < L; o <<= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        s[g] = t;
    }
}

constexpr int kWalkTile = 16;  // cells per entry of a row's tile list

// The 16-cell tiles a decode kernel walks for each query row: with a mask, the list of tiles that hold
// a cell the row sees, in cell order (range_kernel), so that no block walks other sequences' cells of a
// shared cache; without one, every tile of [0, n_kv).
struct TileLists {
    const int* tiles = nullptr;   // [row][stride]
    const int* counts = nullptr;  // tiles in each row's list
    int64_t stride = 0;
    // The rows' ranges (range_kernel), read by the tensor-core kernels only: a row whose seen cells are one run of
    // zero mask values is walked without its list and mask row (Place::lo, hi).
    const int4* ranges = nullptr;
    // The lists come from an earlier launch's range_kernel (DecodeWorkspace::reuse_ranges), not from the kernel
    // just before this one: by launch_cuda.h's contract they and the mask they were made from may be read
    // before wait_for_previous().
    bool settled = false;
};

struct Place {
    int split, hk, row, seq;
    const int* tiles;  // the row's list (null: tile i is cells 16 i ...)
    int64_t t0, t1;    // this block's positions in it: an equal share of the row's tiles
    // Cells outside [lo, hi) are hidden (hi <= n_kv). run: the row sees exactly [lo, hi), each with mask value 0 (TileLists::ranges),
    // so that its tiles and mask values need no loads; else [0, n_kv).
    int64_t lo, hi;
    bool run;

    // First cell of step q of a walk in steps of `cells` (16 or 8) cells, or -1 past the block's tiles.
    __device__ int64_t step_base(int64_t q, int cells) const {
        const int per = kWalkTile / cells;
        const int64_t pos = t0 + q / per;
        if (pos >= t1) return -1;
        return (tiles != nullptr ? int64_t(tiles[pos]) : pos) * kWalkTile + (q % per) * cells;
    }
};

__device__ Place place(const DecodeProblem& p, const TileLists& tl, int splits) {
    Place pl;
    pl.split = blockIdx.x;
    pl.hk = blockIdx.y;
    pl.row = blockIdx.z % p.n_rows;
    pl.seq = blockIdx.z / p.n_rows;
    int64_t n_tiles = (p.n_kv + kWalkTile - 1) / kWalkTile, first = 0;
    pl.tiles = nullptr;
    pl.lo = 0;
    pl.hi = p.n_kv;
    pl.run = false;
    if (tl.tiles != nullptr) {
        const size_t rs = size_t(pl.seq) * p.n_rows + pl.row;
        if (tl.ranges != nullptr) {
            const int4 r = tl.ranges[rs];
            pl.run = r.z >= r.y;  // the zero run from the first seen cell reaches past the last
            if (pl.run) {
                pl.lo = r.x;
                pl.hi = r.y;
                first = r.x / kWalkTile;
                n_tiles = r.y > r.x ? (r.y + kWalkTile - 1) / kWalkTile - first : 0;
            }
        }
        if (!pl.run) {
            pl.tiles = tl.tiles + rs * tl.stride;
            n_tiles = tl.counts[rs];
        }
    }
    pl.t0 = first + n_tiles * pl.split / splits;
    pl.t1 = first + n_tiles * (pl.split + 1) / splits;
    return pl;
}

// The group's queries, pre-scaled so that scores are in log2 units.
template <int G>
__device__ void load_q(const DecodeProblem& p, const Place& pl, int li, float (&q)[G][8]) {
    const float f = p.scale * kLog2e;
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const float* src = reinterpret_cast<const float*>(p.q + size_t(pl.row) * p.q_nb1 + size_t(pl.hk * G + g) * p.q_nb2 +
                                                          size_t(pl.seq) * p.q_nb3) + li * 8;
#pragma unroll
        for (int d = 0; d < 8; ++d) q[g][d] = src[d] * f;
    }
}

__device__ __forceinline__ const __half* mask_row(const DecodeProblem& p, const Place& pl) {
    if (p.mask == nullptr) return nullptr;
    return reinterpret_cast<const __half*>(p.mask + size_t(pl.row) * p.mask_nb1 + size_t(pl.seq % p.mask_ne3) * p.mask_nb3);
}

__device__ __forceinline__ float* out_row(const DecodeProblem& p, int h, int row, int seq) {
    return reinterpret_cast<float*>(p.out + size_t(h) * p.out_nb1 + size_t(row) * p.out_nb2 + size_t(seq) * p.out_nb3);
}

// Four channels of the output, a / l (0 where the row saw no cell): one 16-byte store where `out` is aligned.
__device__ __forceinline__ void store_out4(float* out, float4 a, float l) {
    const float4 v = l == 0.0f ? make_float4(0.0f, 0.0f, 0.0f, 0.0f) : make_float4(a.x / l, a.y / l, a.z / l, a.w / l);
    if ((reinterpret_cast<uintptr_t>(out) & 15u) == 0u) {
        *reinterpret_cast<float4*>(out) = v;
    } else {
        out[0] = v.x;
        out[1] = v.y;
        out[2] = v.z;
        out[3] = v.w;
    }
}

// Merges the warps' states (acc [warp][G][D], m and l [warp][G] in shared memory, 16-byte aligned); writes
// the output (one split) or the split's unnormalised partial [acc[D], m, l] per head. A thread takes four
// neighbouring channels: one 16-byte load per warp and one 16-byte store of the partial (H200, one thread a
// channel before: dense batch 1, 32K 39.7-39.8 against 39.3 us, the store at s = 0.7 36.0 against 34.9).
// Each head's warp weights computed once by one thread, behind a barrier, instead of by every thread for its
// channels: level or slower; a thread's channels merged side by side without branches before any store: level.
template <int D>
__device__ void merge_warps(const DecodeProblem& p, const Place& pl, int G, const float* s_acc, const float* s_m, const float* s_l, float* part,
                            int splits) {
    constexpr int C = D / 4;
    for (int t = threadIdx.x; t < G * C; t += kThreads) {
        const int g = t / C, c = t % C;
        float m = -INFINITY;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) m = fmaxf(m, s_m[w * G + g]);
        float l = 0.0f;
        float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
            const float f = merge_factor(s_m[w * G + g], m);
            const float4 x = *reinterpret_cast<const float4*>(s_acc + (w * G + g) * D + 4 * c);
            l += s_l[w * G + g] * f;
            a = make_float4(a.x + x.x * f, a.y + x.y * f, a.z + x.z * f, a.w + x.w * f);
        }
        const int h = pl.hk * G + g;
        if (splits == 1) {
            store_out4(out_row(p, h, pl.row, pl.seq) + 4 * c, a, l);
        } else {
            float* pp = part + (((size_t(pl.seq) * p.n_rows + pl.row) * p.n_head + h) * size_t(splits) + pl.split) * part_stride(D);
            *reinterpret_cast<float4*>(pp + 4 * c) = a;
            // m and l with the stride's two pad floats: every 32-byte sector of the partials is then written whole, so
            // that a merger's first read of it waits for no fill from memory. Against a float2 of m and l (H200, one
            // call): a merger's first fold 1.22-1.34 against 1.38-1.47 us; dense batch 1, 32K 38.8-38.9 against 39.1,
            // the store at s = 0.7, batch 1, 32K 34.1 against 34.8.
            if (c == 0) *reinterpret_cast<float4*>(pp + D) = make_float4(m, l, 0.0f, 0.0f);
        }
    }
}

// Merges the lane groups of each warp into shared memory, then the warps (merge_warps).
template <int D, int G>
__device__ void finish(const DecodeProblem& p, const Place& pl, State<G>& st, float* part, int splits) {
    constexpr int L = D / 8;
    __shared__ __align__(16) float s_acc[kWarps][G][D];
    __shared__ float s_m[kWarps][G], s_l[kWarps][G];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int o = L; o < 32; o <<= 1) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float mo = __shfl_xor_sync(0xffffffffu, st.m[g], o), lo = __shfl_xor_sync(0xffffffffu, st.l[g], o);
            const float m_new = fmaxf(st.m[g], mo);
            const float a = merge_factor(st.m[g], m_new), b = merge_factor(mo, m_new);
            st.l[g] = st.l[g] * a + lo * b;
#pragma unroll
            for (int d = 0; d < 8; ++d) st.acc[g][d] = st.acc[g][d] * a + __shfl_xor_sync(0xffffffffu, st.acc[g][d], o) * b;
            st.m[g] = m_new;
        }
    }
    if (lane < L) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
#pragma unroll
            for (int d = 0; d < 8; ++d) s_acc[warp][g][lane * 8 + d] = st.acc[g][d];
            if (lane == 0) {
                s_m[warp][g] = st.m[g];
                s_l[warp][g] = st.l[g];
            }
        }
    }
    __syncthreads();
    merge_warps<D>(p, pl, G, &s_acc[0][0][0], &s_m[0][0], &s_l[0][0], part, splits);
}

// The merge of the context splits inside the decode kernel: each block counts its arrival once its
// partial is written, and the last `mergers` blocks of a (row, KV head)'s splits merge them, each a share of
// the group's channels (a second launch would add its start-up to every layer's step). A merger that is
// not the last arrival waits for it, so the launcher asks for more than one only where all of the launch's
// blocks are resident at once. The counter counts the arrivals, then the mergers that waited (the last
// arrival does not wait on a second atomic); the last to count, or the last arrival when it merges alone,
// sets it back to 0 for the next launch. `w`: shared memory for merge_bulk.
// Partials that carry their own readiness instead (a poison value the mergers wait out and write back; relaxed
// arrivals, no wait for the count) were slower: batch 1, 32K 40.4 against 40.1-40.2 us, batch 4, 4K 23.9 against 22.8.
// With one merger (H200, batch 1, 32K, dense: 33 splits) the merge ended about 4 us after the last arrival,
// about 1.4 us for each 34 KB batch of sums that its one multiprocessor read (globaltimer stamps per block);
// with eight, 2.9 us (store, s = 0.7: 3.3 against 7.7 us; its batch-1, 32K call 40.3 against 43.2 us).
// Mergers for every split, with the last arrival waiting on its second atomic, made batch 4 and 8 at 4K
// about 1 us slower; this protocol with mergers only from 16 splits on took back half of it (one call:
// batch 4, 4K 25.1 against 25.6 us; 0240899, without several mergers, 24.5).
// A merger's threads load their splits' sums with their m and l, fold them with a running m each and then across
// lanes by shuffles; before, every split's m and l went through shared memory for the weights first (two more
// barriers and a block-wide reduction of the sums). H200, two machines: dense batch 1, 32K 39.1-39.2 against
// 39.6 us and 39.7 against 40.2; the store at s = 0.7, batch 8, 32K 204.5-204.9 against 208.9-209.1.
// Each warp's state a partial of its own (no merge of a block's warps), half of the splits merging (16 or 32):
// the last arrival came 0.7 us sooner but the merge ended 4.0 us after it instead of 2.1; dense batch 1, 32K
// 41.3 against 39.1 us, the store's 41.9-42.2 against 34.9 (H200, one call; branch next/warp-partials).
// A merger's first loads and fold of its share took 1.4-1.5 us, the same again 0.5-0.7 (dense batch 1, stamps):
// not cold code, since a dry pass through the kernel's end before the wait left them at 1.8 us and made batch 1
// slower (32K 39.5 against 39.1 us, 4K 11.1 against 10.3; branch next/warm-tail), nor small pages (the scratch and
// counters in 2 MiB allocations: level; next/big-pages). Partials written in whole sectors (merge_warps) took the
// first pass to 1.22-1.34 us; the rest of its time was not found.
constexpr int kMaxMergers = 8;

// The arrival count as a release (the block's partial, written before the barrier that precedes it, is
// visible to whoever acquires the count) and an acquire (the earlier arrivals' partials are visible to this
// block after the barrier that follows it): no full fence on either side. Against __threadfence() in every
// thread and plain atomics (H200, one call): dense batch 1, 4K 12.6-12.7 against 13.0 us, 32K 41.8-41.9
// against 42.2; batch 4 and 8 at 4K 0.2 us less; long contexts level.
__device__ __forceinline__ int add_acq_rel(int* p, int v) {
    int old;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
    return old;
}
__device__ __forceinline__ int load_acquire(const int* p) {
    int v;
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// Each head g's weight of each of its splits s against the largest m (into s_w[g * splits + s]) and its
// weighted sum of l (into s_sum[g]), from the staged partials of merge_bulk (pair i = g * splits + s at w + i * P).
template <int D>
__device__ void split_weights(int G, int splits, const float* w, float* s_w, float* s_sum) {
    constexpr int P = part_stride(D);
    auto m_of = [&](int i) { return w[size_t(i) * P + D]; };
    auto l_of = [&](int i) { return w[size_t(i) * P + D + 1]; };
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int g = warp; g < G; g += kWarps) {
        float m = -INFINITY;
        for (int s = lane; s < splits; s += 32) m = fmaxf(m, m_of(g * splits + s));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        float l = 0.0f;
        for (int s = lane; s < splits; s += 32) {
            const int i = g * splits + s;
            const float f = merge_factor(m_of(i), m);
            s_w[i] = f;
            l += l_of(i) * f;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
        if (lane == 0) s_sum[g] = l;
    }
}

// mergers == 0 (dense cache, compute capability 9.0 on, where one merger would load with its threads): the
// last arrival merges alone, its group's partials brought into shared memory `w` by one bulk copy completed
// on the barrier at `bar` (never used before). The merge is a fixed cost of every call: on the H200, dense
// batch 1, the kernel with its merge against without took 41.0 against 37.2 us at 32K, 12.4 against 8.8 at
// 4K. One bulk merger against one loading merger: batch 4, 4K 24.0 against 24.6 us, batch 8, 4K 40.1 against
// 40.7; against eight loading mergers (batch 1, 32K, 33 splits) it was slower, 41.7 against 41.45, so the
// launcher keeps those where they apply.
template <int D>
__device__ void merge_bulk(const DecodeProblem& p, const Place& pl, int G, const float* base, int splits, float* w, unsigned bar) {
    constexpr int P = part_stride(D);
    const int n = G * splits;
    float* s_w = w + size_t(n) * P;  // [n]: each pair's weight
    float* s_sum = s_w + n;          // [G]: each head's weighted sum of l
    if (threadIdx.x == 0) {
        // The other blocks' partials were written by the generic proxy and acquired by the count; the
        // bulk copy reads through the async proxy.
        asm volatile("fence.proxy.async.global;" ::: "memory");
        barrier_init(bar);
        expect_bytes(bar, unsigned(n) * P * 4u);
        bulk_copy(static_cast<unsigned>(__cvta_generic_to_shared(w)), base, unsigned(n) * P * 4u, bar);
    }
    __syncthreads();  // the barrier is initialised
    wait_phase(bar, 0);
    split_weights<D>(G, splits, w, s_w, s_sum);
    __syncthreads();
    // Item t: head t / (D / 4), channels 4 (t % (D / 4)) + 0..3, summed over the splits in order.
    for (int t = threadIdx.x; t < G * (D / 4); t += kThreads) {
        const int g = t / (D / 4), c = t % (D / 4);
        float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int s = 0; s < splits; ++s) {
            const float f = s_w[g * splits + s];
            const float4 x = *reinterpret_cast<const float4*>(w + size_t(g * splits + s) * P + 4 * c);
            a.x += x.x * f;
            a.y += x.y * f;
            a.z += x.z * f;
            a.w += x.w * f;
        }
        store_out4(out_row(p, pl.hk * G + g, pl.row, pl.seq) + 4 * c, a, s_sum[g]);
    }
}

// Shared floats that merge_bulk needs for G heads' splits.
__host__ __device__ constexpr size_t merge_bulk_floats(int D, int G, int splits) { return size_t(G) * splits * (part_stride(D) + 1) + G; }

// Folds a lane's splits q, q + parts, ... < splits of one head (split s's partial at hb + s * P) into its
// running (m, l, a) for channels 4c .. 4c + 3: B sums with their m and l loaded at once; the loads bypass L1
// (other blocks wrote them).
template <int D, int B>
__device__ __forceinline__ void fold_splits(const float* hb, int c, int q, int parts, int splits, float& m, float& l, float4& a) {
    constexpr int P = part_stride(D);
    for (int k0 = 0; q + parts * k0 < splits; k0 += B) {
        float4 v[B];
        float2 ml[B];
#pragma unroll
        for (int j = 0; j < B; ++j) {
            const int sp = q + parts * (k0 + j);
            const float* pp = hb + size_t(sp) * P;
            v[j] = sp < splits ? __ldcg(reinterpret_cast<const float4*>(pp + 4 * c)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            ml[j] = sp < splits ? __ldcg(reinterpret_cast<const float2*>(pp + D)) : make_float2(-INFINITY, 0.0f);
        }
        float mb = m;
#pragma unroll
        for (int j = 0; j < B; ++j) mb = fmaxf(mb, ml[j].x);
        const float f = merge_factor(m, mb);
        l *= f;
        a = make_float4(a.x * f, a.y * f, a.z * f, a.w * f);
#pragma unroll
        for (int j = 0; j < B; ++j) {
            const float w = merge_factor(ml[j].x, mb);
            l += ml[j].y * w;
            a = make_float4(a.x + v[j].x * w, a.y + v[j].y * w, a.z + v[j].z * w, a.w + v[j].w * w);
        }
        m = mb;
    }
}

// kBulkMerge: the dense kernel, which may be launched with mergers == 0 (merge_bulk).
template <int D, bool kBulkMerge>
__device__ void merge_if_last(const DecodeProblem& p, const Place& pl, int G, const float* part, int splits, int mergers, int* counters, float* w,
                              unsigned bar) {
    __shared__ int s_role;
    const bool bulk = kBulkMerge && mergers == 0;
    if (bulk) mergers = 1;
    __syncthreads();  // the block's partial is written
    int counted = -1;  // a waiting merger's second count, read only once its share is merged
    if (threadIdx.x == 0) {
        int* c = counters + (size_t(pl.seq) * p.n_rows + pl.row) * p.n_head_kv + pl.hk;
        const int arrived = add_acq_rel(c, 1), role = arrived - (splits - mergers);
        if (arrived == splits - 1) {
            if (mergers == 1) atomicExch(c, 0);
        } else if (role >= 0) {
            while (load_acquire(c) < splits) __nanosleep(64);
            counted = atomicAdd(c, 1);
        }
        s_role = role;
    }
    __syncthreads();
    const int role = s_role;
    if (role < 0) return;
    constexpr int P = part_stride(D);
    // Pair i = g * splits + s (head g, split s) at base + i * P.
    const float* base = part + ((size_t(pl.seq) * p.n_rows + pl.row) * p.n_head + size_t(pl.hk) * G) * size_t(splits) * P;
    if constexpr (kBulkMerge && kBulkCopies) {
        if (bulk) {
            merge_bulk<D>(p, pl, G, base, splits, w, bar);
            return;
        }
    }
    // Item t: head t / (D / 4), channels 4 (t % (D / 4)) + 0..3; this merger's are first .. first + count - 1,
    // each folded by `parts` neighbouring lanes (lane q of them: splits q, q + parts, ...; its own running m),
    // then across those lanes by shuffles: no shared memory and no barrier between the loads and the output.
    const int items = G * (D / 4), per = (items + mergers - 1) / mergers, first = role * per;
    const int count = min(per, items - first);
    int parts = 1;
    while (parts < 32 && 2 * parts * per <= kThreads) parts *= 2;
    const int q = int(threadIdx.x) % parts, R = kThreads / parts;
    for (int r0 = 0; r0 < count; r0 += R) {
        const int it = r0 + int(threadIdx.x) / parts, t = first + min(it, count - 1), g = t / (D / 4);
        const bool mine = it < count;
        const float* hb = base + size_t(g) * splits * P;
        float m = -INFINITY, l = 0.0f;
        float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        // Batches no longer than a lane's splits: a batch's slots past them cost as much as the rest (dense batch 1,
        // 32K: 5 splits a lane in a batch of 9 before, 39.2-39.4 against 39.1 us).
        if (mine) {
            const int n = (splits + parts - 1) / parts, c = t % (D / 4);  // lane 0's count: the same path for all
            if (n <= 2) {
                fold_splits<D, 2>(hb, c, q, parts, splits, m, l, a);
            } else if (n <= 5) {
                fold_splits<D, 5>(hb, c, q, parts, splits, m, l, a);
            } else {
                fold_splits<D, 9>(hb, c, q, parts, splits, m, l, a);  // the store's 66 splits at batch 1 in one batch
            }
        }
        for (int o = 1; o < parts; o <<= 1) {
            const float mo = __shfl_xor_sync(0xffffffffu, m, o), lo = __shfl_xor_sync(0xffffffffu, l, o);
            const float4 ao = make_float4(__shfl_xor_sync(0xffffffffu, a.x, o), __shfl_xor_sync(0xffffffffu, a.y, o),
                                          __shfl_xor_sync(0xffffffffu, a.z, o), __shfl_xor_sync(0xffffffffu, a.w, o));
            const float mn = fmaxf(m, mo), fa = merge_factor(m, mn), fb = merge_factor(mo, mn);
            l = l * fa + lo * fb;
            a = make_float4(a.x * fa + ao.x * fb, a.y * fa + ao.y * fb, a.z * fa + ao.z * fb, a.w * fa + ao.w * fb);
            m = mn;
        }
        if (mine && q == 0) store_out4(out_row(p, pl.hk * G + g, pl.row, pl.seq) + (t % (D / 4)) * 4, a, l);
    }
    if (counted == splits + mergers - 2) atomicExch(counters + (size_t(pl.seq) * p.n_rows + pl.row) * p.n_head_kv + pl.hk, 0);  // the last waiting merger
}

template <int D, int G>
__global__ void __launch_bounds__(kThreads) dense_kernel(DecodeProblem p, DenseCache c, TileLists tl, float* part, int splits) {
    start_after_previous();
    constexpr int L = D / 8, CPW = 32 / L, SUB = kStepCells / CPW;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, grp = lane / L, li = lane % L;
    const Place pl = place(p, tl, splits);
    float q[G][8];
    load_q<G>(p, pl, li, q);
    const __half* mrow = mask_row(p, pl);
    const char* kb = c.k + size_t(pl.hk) * c.k_nb2 + size_t(pl.seq) * c.k_nb3 + li * 16;
    const char* vb = c.v + size_t(pl.hk) * c.v_nb2 + size_t(pl.seq) * c.v_nb3 + li * 16;
    State<G> st;
    st.init();
    for (int64_t step = warp, base = pl.step_base(step, kStepCells); base >= 0; step += kWarps, base = pl.step_base(step, kStepCells)) {
        uint4 kr[SUB], vr[SUB];
        float mk[SUB];
        bool live[SUB];
#pragma unroll
        for (int u = 0; u < SUB; ++u) {  // all loads of the step first: bytes in flight
            const int64_t cell = base + u * CPW + grp;
            live[u] = cell < p.n_kv;
            mk[u] = 0.0f;
            if (live[u] && mrow != nullptr) {
                mk[u] = __half2float(mrow[cell]);
                live[u] = mk[u] != -INFINITY;
            }
            kr[u] = live[u] ? load16(kb + size_t(cell) * c.k_nb1) : make_uint4(0, 0, 0, 0);
            vr[u] = live[u] ? load16(vb + size_t(cell) * c.v_nb1) : make_uint4(0, 0, 0, 0);
        }
        float s[SUB][G];
#pragma unroll
        for (int u = 0; u < SUB; ++u) {
            float k[8];
            to_float8(kr[u], k);
            scores<L, G>(q, k, s[u]);
#pragma unroll
            for (int g = 0; g < G; ++g) s[u][g] = live[u] ? s[u][g] + mk[u] * kLog2e : -INFINITY;
        }
        st.template add_step<SUB>(s, [&](int u, float (&v)[8]) { to_float8(vr[u], v); });
    }
    finish<D, G>(p, pl, st, part, splits);
}

// A lane's 8 channels of a record in shared memory (16-byte aligned), pruned ones as 0.
template <int D>
__device__ __forceinline__ void expand(const uint8_t* rec, int li, float (&x)[8]) {
    const uint32_t* words = reinterpret_cast<const uint32_t*>(rec);
    const int wi = li >> 2, sh = (li & 3) * 8;
    int prefix = 0;
#pragma unroll
    for (int w = 0; w < D / 32; ++w)
        if (w < wi) prefix += __popc(words[w]);
    const uint32_t word = words[wi];
    prefix += __popc(word & ((1u << sh) - 1u));
    const uint32_t bits = (word >> sh) & 0xffu;
    const __half* vals = reinterpret_cast<const __half*>(rec + D / 8) + prefix;
    int n = 0;
#pragma unroll
    for (int t = 0; t < 8; ++t) {
        const bool set = (bits >> t) & 1u;
        x[t] = set ? __half2float(vals[n]) : 0.0f;
        n += set;
    }
}

template <int D, int G>
__global__ void __launch_bounds__(kThreads) compressed_kernel(DecodeProblem p, CompressedCache c, TileLists tl, float* part, int splits) {
    start_after_previous();
    constexpr int L = D / 8, CPW = 32 / L, SUB = kStepCells / CPW;
    extern __shared__ __align__(16) uint8_t stage[];  // [warp][buffer][cell][K record | V record]
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, grp = lane / L, li = lane % L;
    const Place pl = place(p, tl, splits);
    float q[G][8];
    load_q<G>(p, pl, li, q);
    const __half* mrow = mask_row(p, pl);
    const size_t rec = c.k_stride + c.v_stride;
    const int ck = int(c.k_stride / 16), cn = int(rec / 16);
    uint8_t* mine = stage + size_t(warp) * 2 * kStepCells * rec;
    const int64_t row0 = int64_t(pl.seq) * c.seq_rows;
    const size_t head_off = size_t(pl.hk) * D * 2 + li * 16;

    auto issue = [&](int64_t base, int buf) {
        uint8_t* dst = mine + size_t(buf) * kStepCells * rec;
        for (int j = lane; j < kStepCells * cn; j += 32) {
            const int u = j / cn, r = j - u * cn;
            const int64_t cell = base + u;
            if (cell < p.n_kv) {
                const size_t row = size_t(row0 + cell);
                const uint8_t* src = r < ck ? c.k_records + pl.hk * c.k_head_bytes + row * c.k_stride + size_t(r) * 16
                                            : c.v_records + pl.hk * c.v_head_bytes + row * c.v_stride + size_t(r - ck) * 16;
                __pipeline_memcpy_async(dst + size_t(u) * rec + size_t(r) * 16, src, 16);
            }
        }
        __pipeline_commit();
    };

    State<G> st;
    st.init();
    int64_t step = warp, base = pl.step_base(step, kStepCells);
    int buf = 0;
    if (base >= 0) issue(base, 0);
    for (; base >= 0; step += kWarps, base = pl.step_base(step, kStepCells)) {
        const int64_t next = pl.step_base(step + kWarps, kStepCells);
        if (next >= 0)
            issue(next, buf ^ 1);
        else
            __pipeline_commit();
        __pipeline_wait_prior(1);
        __syncwarp();
        const uint8_t* cur = mine + size_t(buf) * kStepCells * rec;
        float s[SUB][G];
        int32_t slot[SUB], vslot[SUB];
#pragma unroll
        for (int u = 0; u < SUB; ++u) {
            const int cu = u * CPW + grp;
            const int64_t cell = base + cu;
            bool live = cell < p.n_kv;
            float mk = 0.0f;
            if (live && mrow != nullptr) {
                mk = __half2float(mrow[cell]);
                live = mk != -INFINITY;
            }
            slot[u] = live ? c.k_slot[row0 + cell] : -2;
            vslot[u] = live ? c.v_slot[row0 + cell] : -2;
            float k[8];
            if (slot[u] == -2) {
#pragma unroll
                for (int d = 0; d < 8; ++d) k[d] = 0.0f;
            } else if (slot[u] >= 0) {
                to_float8(load16(c.k_pool + size_t(slot[u]) * c.pool_row_bytes + head_off), k);
            } else {
                expand<D>(cur + size_t(cu) * rec, li, k);
            }
            scores<L, G>(q, k, s[u]);
#pragma unroll
            for (int g = 0; g < G; ++g) s[u][g] = live ? s[u][g] + mk * kLog2e : -INFINITY;
        }
        st.template add_step<SUB>(s, [&](int u, float (&v)[8]) {
            if (vslot[u] == -2) {
#pragma unroll
                for (int d = 0; d < 8; ++d) v[d] = 0.0f;
            } else if (vslot[u] >= 0) {
                to_float8(load16(c.v_pool + size_t(vslot[u]) * c.pool_row_bytes + head_off), v);
            } else {
                expand<D>(cur + size_t(u * CPW + grp) * rec + c.k_stride, li, v);
            }
        });
        __syncwarp();
        buf ^= 1;
    }
    finish<D, G>(p, pl, st, part, splits);
}

// ---- Tensor-core flash-decoding, D = 64 and 128 ------------------------------------------------
// mma.sync m16n8k16 (f16 inputs, f32 accumulation) over 16 cells per warp step: S = Q K^T, then
// O += P V. Q and P are split into f16 high and low parts so that products keep about f32 precision:
// rows 0-7 of A hold the high parts of the group's query heads (up to 8), rows 8-15 the low parts, and
// the two halves of C are added. Fragment layouts (PTX ISA, m16n8k16), g = lane / 4, t = lane % 4:
// A (g, 2t..2t+1), (g+8, ..), (g, 2t+8..), (g+8, 2t+8..); B (k 2t..2t+1, n g), (k 2t+8.., n g);
// C (g, 2t..2t+1), (g+8, 2t..2t+1). Dense K and V fragments come from ldmatrix (V transposed).
// Each warp streams its steps into shared memory with asynchronous copies (over the store from compute
// capability 9.0 on, three bulk copies a step), two steps deep over the store and three over the dense cache.
// Over the store, K's fragments come straight from the staged records (RunK), V's records expand
// into a dense tile first (lane = cell and half row); a step's mask values and row-table entries are
// loaded a step or two ahead, so that no load waits in the step's critical path.
constexpr int kTile = 16;

// All 16 rows of A used: rows 0-7 carry the f16 high parts, rows 8-15 the low parts of the same heads.
__device__ __forceinline__ void mma16816_split(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned smem_u32(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }

// A 16-byte asynchronous copy to a shared-memory address (the __pipeline_ functions' group: commit and wait
// with them); the address once converted saves the conversion per chunk.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

// Four 8x8 f16 matrices from shared memory; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint8_t* p) {
    const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const uint8_t* p) {
    const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}

// The 8x8 f16 matrix whose row g, columns 2t and 2t + 1 lane (g, t) holds, transposed in the same layout.
__device__ __forceinline__ uint32_t transpose8x8(uint32_t x) {
    uint32_t y;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}

__device__ __forceinline__ uint32_t as_u32(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }

// x as one f16 pair (high part, low part): their sum is x to about 2^-22 (split2's split of one value).
__device__ __forceinline__ uint32_t high_low(float x) {
    const __half hi = __float2half_rn(x);
    return as_u32(__halves2half2(hi, __float2half_rn(x - __half2float(hi))));
}

// (x, y) as f16 pairs: hi + lo == (x, y) to about 2^-22.
__device__ __forceinline__ void split2(float x, float y, uint32_t& hi, uint32_t& lo) {
    const __half2 h = __floats2half2_rn(x, y);
    hi = as_u32(h);
    lo = as_u32(__floats2half2_rn(x - __low2float(h), y - __high2float(h)));
}

// Channels `bit` and `bit` + 1 of bitmap word x as an f16 pair, pruned ones 0; `at`, the shared address of
// the next kept value, moves past the kept ones. The add in place waits until the load has read `at` (s = 0.7,
// batch 8, 32K: 4477 of the kernel's 6969 short-scoreboard stall samples); fresh addresses per channel cost more
// instructions than that: H200, 210.3-210.4 against 204.1-204.3 us for K's runs, 284.5-285.2 for V's expansion
// too (next/k-starts, next/kv-starts).
__device__ __forceinline__ uint32_t take2(uint32_t x, int bit, unsigned& at) {
    uint32_t lo = 0, hi = 0;
    asm volatile(
        "{\n .reg .pred p;\n"
        " setp.ne.b32 p, %3, 0;\n @p ld.shared.u16 %0, [%2];\n @p add.u32 %2, %2, 2;\n"
        " setp.ne.b32 p, %4, 0;\n @p ld.shared.u16 %1, [%2];\n @p add.u32 %2, %2, 2;\n}"
        : "+r"(lo), "+r"(hi), "+r"(at)
        : "r"(x & (1u << bit)), "r"(x & (2u << bit)));
    return __byte_perm(lo, hi, 0x5410);
}

// Half a record's D channels (half 0: the first D/2) into a dense f16 row half, pruned ones as 0.
// The half's channels are split into kChains runs (a bitmap byte at least), each with its own address of
// the next kept value (the kept values below the run by a popcount), walked side by side: with one address
// for the half, each load waited for the add of the one before it. H200, s = 0.7, D = 128 (one call, 4 against
// 1 chain): decode batch 8, 32K 224.1 against 232.6 us, batch 1, 128K 116.7 against 121.5; a 16K prompt
// micro-batch whose kernel expands its tiles 1737 against 1902 us. 8 chains made the decode and prompt
// kernels 1-2 % slower than 4. (The prompts' expanded copy, its one user with 8, now takes LaneExpand.)
template <int D>
__device__ __forceinline__ void expand_half(const uint8_t* rec, int half, uint8_t* dst, bool keep = true) {
    constexpr int kChains = 4;
    constexpr int kWords = D / 64;  // bitmap words per half
    constexpr int C = kChains < D / 16 ? kChains : D / 16, S = D / 2 / C;  // runs, channels a run
    static_assert(S % 8 == 0 && (C == 1 || S <= 32), "runs of whole bitmap bytes within a word");
    uint32_t words[D / 32];         // the whole bitmap in one load (records are 16-byte aligned)
    if constexpr (D == 128) {
        const uint4 b = *reinterpret_cast<const uint4*>(rec);
        words[0] = b.x, words[1] = b.y, words[2] = b.z, words[3] = b.w;
    } else {
        static_assert(D == 64, "bitmaps of 64 or 128 bits");
        const uint2 b = *reinterpret_cast<const uint2*>(rec);
        words[0] = b.x, words[1] = b.y;
    }
    const uint16_t* vals = reinterpret_cast<const uint16_t*>(rec + D / 8);
    int n = 0;
    uint32_t own[kWords];  // this half's words, chosen without indexing by `half` (that would go to local memory)
#pragma unroll
    for (int w = 0; w < kWords; ++w) {
        if (half) n += __popc(words[w]);
        own[w] = !keep ? 0u : half ? words[kWords + w] : words[w];  // !keep: all zeros, no value read
    }
    // Each run's next value's shared-memory address, moved on by each kept channel: per channel one predicated
    // load and one predicated add (an index would cost an address computation and a copy each).
    unsigned at[C];
    at[0] = static_cast<unsigned>(__cvta_generic_to_shared(vals + n));
#pragma unroll
    for (int j = 1; j < C; ++j) {
        const int c = j * S, w = (c - S) / 32, sh = (c - S) % 32;  // the run before: S bits from channel c - S
        const uint32_t bits = S == 32 ? own[w] : (own[w] >> sh) & ((1u << (S % 32)) - 1u);
        at[j] = at[j - 1] + 2u * unsigned(__popc(bits));
    }
#pragma unroll
    for (int q = 0; q < S / 8; ++q) {  // a bitmap byte of each run, the runs' channel pairs in turn
        uint32_t packed[C][4];
#pragma unroll
        for (int e = 0; e < 4; ++e)
#pragma unroll
            for (int j = 0; j < C; ++j) {
                const int c = j * S + q * 8;  // the byte's first channel
                packed[j][e] = take2(own[c / 32], c % 32 + 2 * e, at[j]);
            }
#pragma unroll
        for (int j = 0; j < C; ++j) {
            const int c = j * S + q * 8;
            *reinterpret_cast<uint4*>(dst + c * 2) = make_uint4(packed[j][0], packed[j][1], packed[j][2], packed[j][3]);
        }
    }
}

// ---- K's B fragments straight from the records (the tensor-core kernel over the store) -----------
// The scores' MMAs may take the channels in any order that the queries share, so lane (g, t) takes a run:
// channels t D/4 .. (t + 1) D/4 - 1 of cells g and g + 8, whose kept values are consecutive in each
// record. MMA kc's k positions 2t, 2t + 1, 2t + 8 and 2t + 9 are the run's channels 4 kc + 0, 1, 2 and 3;
// a permuted copy of the queries (q_channel) matches them. A lane then walks its two runs with one
// moving shared address each: per channel a bit test, a predicated 2-byte load and a predicated add,
// where the pairs of the natural order each needed a popcount and an address (d50a959). On the H200,
// batch 8, 32K, s = 0.7: 272 us before, 251 us after. Window cells' K (dense rows in the pool) still
// goes through the natural-order tile and queries.

// The channel that MMA kc's k position k takes, for the lane runs above.
__host__ __device__ constexpr int q_channel(int D, int kc, int k) { return ((k % 8) / 2) * (D / 4) + 4 * kc + 2 * (k / 8) + k % 2; }
// Where channel d sits in that order (kc * 16 + k).
__host__ __device__ constexpr int q_position(int D, int d) {
    return (d % (D / 4)) / 4 * 16 + 2 * (d / (D / 4)) + d % 2 + 8 * ((d % 4) / 2);
}
constexpr bool q_order_inverts(int D) {
    for (int pos = 0; pos < D; ++pos)
        if (q_position(D, q_channel(D, pos / 16, pos % 16)) != pos) return false;
    return true;
}
static_assert(q_order_inverts(64) && q_order_inverts(128), "q_position inverts q_channel");

template <int D>
struct RunK {
    static_assert(D == 64 || D == 128, "runs of 16 or 32 channels");
    uint32_t x[2];   // the run's bitmap bits (0 for a dead cell: all its values read as 0)
    unsigned at[2];  // shared address of the run's next kept value

    __device__ RunK(const uint8_t* raw, uint32_t live, int lane, size_t k_at) {
        const int g = lane / 4, t = lane % 4;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int c = g + 8 * i;
            const uint8_t* rec = raw + size_t(c) * k_at;
            uint32_t w[D / 32];
            if constexpr (D == 128) {
                const uint4 b = *reinterpret_cast<const uint4*>(rec);
                w[0] = b.x, w[1] = b.y, w[2] = b.z, w[3] = b.w;
            } else {
                const uint2 b = *reinterpret_cast<const uint2*>(rec);
                w[0] = b.x, w[1] = b.y;
            }
            // Kept values below the run, and the run's bits, chosen without indexing by t (local memory).
            const int start = t * (D / 4);
            int below = 0;
            uint32_t bits = 0;
#pragma unroll
            for (int j = 0; j < D / 32; ++j) {
                const int n = start - 32 * j;  // bits of word j below the run
                below += n >= 32 ? __popc(w[j]) : n > 0 ? __popc(w[j] & ((1u << n) - 1u)) : 0;
                if (n >= 0 && n < 32) bits = w[j] >> n;
            }
            x[i] = (live >> c) & 1u ? (D == 128 ? bits : bits & 0xffffu) : 0u;
            at[i] = smem_u32(rec + D / 8) + 2u * unsigned(below);
        }
    }
    __device__ void operator()(int kc, uint32_t (&b)[4]) {
        b[0] = take2(x[0], 4 * kc, at[0]);
        b[1] = take2(x[0], 4 * kc + 2, at[0]);
        b[2] = take2(x[1], 4 * kc, at[1]);
        b[3] = take2(x[1], 4 * kc + 2, at[1]);
    }
};

// Steps in flight per warp: the dense walk keeps three (two blocks a multiprocessor at D = 128, so fewer
// splits with longer walks: H200, batch 1, 4K 12.8 against 15.0 us with two, 32K 42.4 against 44.4);
// over the store two, with four blocks a multiprocessor.
__host__ __device__ constexpr int mma_stages(bool sparse) { return sparse ? 2 : 3; }

// Rows of query staging: f16 high and low parts of 8 heads, in the natural channel order and, over the
// store, also in the lane runs' order (q_channel).
__host__ __device__ constexpr int q_rows(bool sparse) { return sparse ? 32 : 16; }

// Shared memory before the copy barriers: the queries and the warps' tiles, or (overlaying them) the merge.
__host__ __device__ inline size_t mma_body_bytes(int D, bool sparse, size_t record_bytes) {
    const size_t row = size_t(2 * D + 16);
    // Sparse: one expanded tile (K, then V) and the raw records of two steps; dense: K and V tiles of each step in flight.
    const size_t warp = sparse ? kTile * row + 2 * kTile * (record_bytes + 16) : 2 * mma_stages(false) * kTile * row;
    const size_t fin = (size_t(kWarps) * 8 * D + 2 * kWarps * 8) * sizeof(float);
    const size_t tiles = q_rows(sparse) * row + kWarps * warp;
    return ((tiles > fin ? tiles : fin) + 15) / 16 * 16;
}

// The body, then each warp's two copy barriers (one per buffer; 16 bytes a warp).
size_t mma_smem(int D, bool sparse, size_t record_bytes) { return mma_body_bytes(D, sparse, record_bytes) + kWarps * 16; }

// kPacked (the store, G <= 4): the scores are S^T = K Q^T with the queries' B fragments in registers (each
// column one head's f16 high or low part), and the values' product is O^T = V^T P^T (M: 16 channels, N: the
// same columns, P^T from the scores' C fragments by movmatrix), so a lane keeps one head's softmax state and
// accumulates 32 floats instead of 64, with 16 MMAs a step instead of 32. H200, one call: S = Q K^T with Q
// as A, loaded from shared memory every step (8 ldmatrix), took s = 0.7, batch 8, 32K 221.3 against 209.5 us,
// batch 1, 128K 115.2 against 109.4; s = 0.5, batch 8, 32K 253.4 against 236.8.
// kBlocks: the blocks a multiprocessor is to hold over the store (the register cap follows: 128 at 4, 168
// at 3); 4 where the staging fits four, else 3 (s = 0.5 at D = 128: 65 KB a block), where the cap of 4 only
// made the kernel spill (H200, s = 0.5, batch 8, 32K, packed: 264.8 against 269.5 us, one call).
template <int D, bool kSparse, bool kPacked = false, int kBlocks = kSparse ? 4 : 0>
__global__ void __launch_bounds__(kThreads, kBlocks) mma_kernel(DecodeProblem p, DenseCache dc, CompressedCache cc, TileLists tl, float* part, int splits,
                                                       int* counters, int mergers) {
    // Over settled tile lists (or none) the block finds its place, its first steps' tiles and their mask values
    // before the wait, so that this set-up overlaps the end of the kernel before it (the projections of the
    // same layer in a model's step); the copies of the cells, the row tables and the queries wait for it.
    // H200, back-to-back calls, no mask: batch 1, 32K dense 39.8 against 41.0 us, 4K 11.4 against 12.3.
    const bool early = p.mask == nullptr || tl.settled;
    if (!early) start_after_previous();
    extern __shared__ __align__(16) uint8_t smem[];
    constexpr int kRow = 2 * D + 16;  // a padded tile row: the fragment loads are free of bank conflicts
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const int G = p.n_head / p.n_head_kv;
    const Place pl = place(p, tl, splits);
    const size_t rec = kSparse ? cc.k_stride + cc.v_stride : 0, raw_row = rec + 16;
    // Over the store from compute capability 9.0 on, a step's 16 K records and 16 V records come as
    // three bulk copies (bulk_copy_cuda.h): K's block, then V's cells 0-7 and, 16 bytes further on, its
    // cells 8-15; below, 16-byte copies interleave them per cell, padded (raw_row). Staged cell u's
    // records: K at u * k_at, V at v_first + u * v_at (+ v_gap from cell 8 on).
    // On the H200 (batch 8, 32K): s = 0.7 250 against 259 us, s = 0.5 282 against 322; one bulk copy per
    // record instead was slower (293). The dense cache keeps the 16-byte copies: bulk copies of its
    // rows were 2 % slower at batch 1, 32K (45.9 against 45.1 us), 3 % faster at batch 8.
    // The gap: at s = 0.7 (96-byte records) cells u and u + 4 begin on the same bank; V's expansion reads
    // all 16 cells at once, and with cells 8-15 moved by 4 banks its loads need about 111 wavefronts a
    // step instead of 135 (tests/gpu/bank_conflicts.py, a model of the loads with random bitmaps).
    constexpr bool kBulk = kSparse && kBulkCopies;
    const size_t k_at = kBulk ? cc.k_stride : raw_row, v_at = kBulk ? cc.v_stride : raw_row;
    const size_t v_first = kBulk ? kTile * cc.k_stride : cc.k_stride, v_gap = kBulk ? 16 : 0;
    constexpr int kStages = mma_stages(kSparse);
    const size_t warp_bytes = kSparse ? kTile * kRow + 2 * kTile * raw_row : 2 * kStages * kTile * kRow;
    uint8_t* mine = smem + q_rows(kSparse) * kRow + warp * warp_bytes;
    const __half* mrow = pl.run ? nullptr : mask_row(p, pl);
    const int64_t row0 = kSparse ? int64_t(pl.seq) * cc.seq_rows : 0;
    // With bulk copies: this warp's barriers of buffers 0 and 1, and the parity of each one's next phase.
    const unsigned bars = kBulk ? smem_u32(smem + mma_body_bytes(D, kSparse, rec)) + 16u * unsigned(warp) : 0u;
    unsigned parity = 0;
    if constexpr (kBulk) {
        if (lane == 0) {
            barrier_init(bars);
            barrier_init(bars + 8u);
        }
        __syncwarp();
    }

    // A step's mask values: lane l holds cell base + l % 16's, -inf where the row does not see it (or
    // past n_kv). The value of step s + 2 is loaded while step s is computed, so that deciding which
    // cells of s + 1 to copy waits on nothing; the scores take theirs from the lanes by shuffles.
    // A row of one zero run (pl.run) loads none: H200, batch 1, 32K, ranges reused, back-to-back calls, 40.2 us
    // dense and 36.5 at s = 0.7 (as without a mask) against 45.5 and 40.5 with the tile list and mask row read.
    auto mask_value = [&](int64_t base) {
        if (base < 0) return -INFINITY;
        const int64_t cell = base + (lane & 15);
        if (cell < pl.lo || cell >= pl.hi) return -INFINITY;  // pl.hi <= n_kv
        return mrow != nullptr ? __half2float(mrow[cell]) : 0.0f;
    };
    // Which of the step's 16 cells the row sees (a cache shared by several sequences has long runs of
    // other sequences' cells): their K and V are neither read nor computed on.
    auto live_of = [&](float mv) { return __ballot_sync(0xffffffffu, mv != -INFINITY) & 0xffffu; };

    // 16-byte copies of the store: copy rounds of a step's records at the most (no pruning), and the
    // reciprocals of the chunks per record.
    constexpr int kCopyRounds = (kTile * ((D / 8 + 2 * D + 15) / 16) + 31) / 32;
    const uint32_t k_magic = kSparse && !kBulk ? 0xffffffffu / uint32_t(cc.k_stride / 16) + 1u : 0u;
    const uint32_t v_magic = kSparse && !kBulk ? 0xffffffffu / uint32_t(cc.v_stride / 16) + 1u : 0u;

    // The dense cache's copies: kChunks 16-byte chunks a row, kRowsPer rows per copy instruction.
    constexpr int kChunks = D / 8, kRowsPer = 32 / kChunks, kIters = kTile / kRowsPer;
    const char* k_row0 = nullptr;
    const char* v_row0 = nullptr;
    unsigned dense_at = 0;
    if constexpr (!kSparse) {
        const int r = lane / kChunks, ch = lane % kChunks;
        k_row0 = dc.k + size_t(pl.hk) * dc.k_nb2 + size_t(pl.seq) * dc.k_nb3 + size_t(r) * dc.k_nb1 + ch * 16;
        v_row0 = dc.v + size_t(pl.hk) * dc.v_nb2 + size_t(pl.seq) * dc.v_nb3 + size_t(r) * dc.v_nb1 + ch * 16;
        dense_at = unsigned(r * kRow + ch * 16);
    }
    auto issue = [&](int64_t base, int buf, uint32_t live) {
        if constexpr (kBulk) {
            // Lane 0 copies the K block, lanes 1 and 2 V's two halves: the step's cells inside [0, n_kv), seen or not.
            const unsigned bar = bars + 8u * unsigned(buf), n_valid = unsigned(min(int64_t(kTile), p.n_kv - base));
            if (lane == 0) expect_bytes(bar, live != 0u ? n_valid * unsigned(rec) : 0u);
            const unsigned first = lane == 2 ? 8u : 0u, cells = lane == 0 ? n_valid : lane == 1 ? min(n_valid, 8u) : n_valid - min(n_valid, 8u);
            if (lane < 3 && live != 0u && cells > 0u) {
                const size_t stride = lane == 0 ? cc.k_stride : cc.v_stride;
                const uint8_t* src = lane == 0 ? cc.k_records + pl.hk * cc.k_head_bytes : cc.v_records + pl.hk * cc.v_head_bytes;
                const unsigned raw = smem_u32(mine + kTile * kRow + size_t(buf) * kTile * raw_row);
                const unsigned dst = lane == 0 ? raw : raw + unsigned(v_first + first * v_at) + (lane == 2 ? unsigned(v_gap) : 0u);
                bulk_copy(dst, src + size_t(row0 + base + first) * stride, cells * unsigned(stride), bar);
            }
        } else if constexpr (kSparse) {
            // A step's 16 records of K (and of V) are one block of the head-major store: lane l copies its
            // 16-byte chunks l, l + 32, ..., chunk j being chunk j % chunks of cell j / chunks (a multiply
            // by the reciprocal). Each copy instruction reads 512 contiguous bytes; with row-major records
            // it read 32 bytes of each of 16 records: 24 shared-memory wavefronts an instruction on the
            // H200, 15 now, and a step at s = 0.5 took about 10 % less time (s = 0.7: level).
            const int n_valid = int(min(int64_t(kTile), p.n_kv - base));
            const unsigned raw = smem_u32(mine + kTile * kRow + size_t(buf) * kTile * raw_row);
#pragma unroll
            for (int kv = 0; kv < 2; ++kv) {
                const int chunks = int((kv == 0 ? cc.k_stride : cc.v_stride) / 16);
                const uint32_t magic = kv == 0 ? k_magic : v_magic;
                const uint8_t* src = kv == 0 ? cc.k_records + pl.hk * cc.k_head_bytes + size_t(row0 + base) * cc.k_stride
                                             : cc.v_records + pl.hk * cc.v_head_bytes + size_t(row0 + base) * cc.v_stride;
                const unsigned at = raw + (kv == 0 ? 0u : unsigned(cc.k_stride));
#pragma unroll
                for (int i = 0; i < kCopyRounds; ++i) {
                    const int j = lane + 32 * i;
                    if (j >= kTile * chunks) break;
                    const int u = int(__umulhi(unsigned(j), magic)), c = j - u * chunks;
                    if (u < n_valid && ((live >> u) & 1u)) cp_async16(at + unsigned(u) * unsigned(raw_row) + 16u * unsigned(c), src + 16 * j);
                }
            }
        } else {
            // Lane l copies chunk l % kChunks of cells l / kChunks + kRowsPer i (i < kIters), of K and of V:
            // addresses are the lane's fixed start plus multiples of one stride, set up once per kernel.
            // Computed per chunk (divisions, 64-bit products) the copies took about 30 instructions
            // each: batch 1, 32K executed 16.3 M instructions a call, now 9.9 M (H200: 45.3 against 44.3 us).
            const char* k = k_row0 + int64_t(base) * dc.k_nb1;
            const char* v = v_row0 + int64_t(base) * dc.v_nb1;
            const unsigned dst = smem_u32(mine + size_t(buf) * 2 * kTile * kRow) + dense_at;
#pragma unroll
            for (int i = 0; i < kIters; ++i) {
                const unsigned d = dst + unsigned(i * kRowsPer * kRow);
                if ((live >> (lane / kChunks + kRowsPer * i)) & 1u) {
                    cp_async16(d, k + i * kRowsPer * dc.k_nb1);
                    cp_async16(d + kTile * kRow, v + i * kRowsPer * dc.v_nb1);
                } else if (live != 0u) {  // P = 0 must meet a finite V
                    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(d), "r"(0u) : "memory");
                    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(d + kTile * kRow), "r"(0u) : "memory");
                }
            }
        }
        if constexpr (!kBulk) __pipeline_commit();
    };

    static_assert(!kPacked || kSparse, "the packed rows serve the store");
    constexpr int kOut = kPacked ? D / 16 : D / 8;  // accumulator tiles: 16 channels (packed) or 8
    float o[kOut][4];
#pragma unroll
    for (int n = 0; n < kOut; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    // ldmatrix row addresses of this lane: S uses K as (cell = 8 * ((lane >> 4) & 1) + lane % 8,
    // channels + 8 * ((lane >> 3) & 1)); P V uses V transposed as (cell = 8 * ((lane >> 3) & 1) + lane % 8,
    // channels + 8 * ((lane >> 4) & 1)).
    const int k_row = ((lane >> 4) & 1) * 8 + (lane & 7), k_col = ((lane >> 3) & 1) * 16;
    const int v_row = ((lane >> 3) & 1) * 8 + (lane & 7), v_col = ((lane >> 4) & 1) * 16;
    const int a_row = v_row, a_col = v_col;  // A (the queries) by the same matrices as V^T, untransposed

    // mv: the step's mask values (mask_value), lane l holding cell l % 16's. kfrag(kc, b) gives the B
    // fragments of channel block kc for cells 0-7 (b[0], b[1]) and 8-15 (b[2], b[3]); vfrag(n, b) those
    // of V's channel tiles n (b[0], b[1]) and n + 1 (b[2], b[3]); between() runs after the scores,
    // before V is read (where K's tile expanded, V expands there into the same tile).
    // qfrag(kc, a): the queries' A fragments in the order kfrag takes the channels (high parts in rows 0-7, low 8-15).
    // The step's scores in log2 units (s4[i]: cell (i / 2) * 8 + 2t + i % 2 of row g, -inf where masked), and
    // their maximum over the row's 16 cells.
    auto scores_of = [&](auto&& qfrag, float mv, auto&& kfrag, float (&s4)[4]) {
        // C rows g: Q_high K^T, rows g + 8: Q_low K^T, for cells 0-7 and 8-15.
        float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
            uint32_t a[4];  // A: the high parts (rows 0-7) and low parts (8-15), channels kc*16 + 0..7, + 8..15
            qfrag(kc, a);
            uint32_t b[4];  // B of cells 0-7 (channels kc*16 + 0..7, + 8..15), then of cells 8-15
            kfrag(kc, b);
            mma16816_split(sc[0], a[0], a[1], a[2], a[3], b[0], b[1]);
            mma16816_split(sc[1], a[0], a[1], a[2], a[3], b[2], b[3]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float mk = __shfl_sync(0xffffffffu, mv, (i / 2) * 8 + 2 * t + (i % 2));
            s4[i] = mk != -INFINITY ? sc[i / 2][i % 2] + sc[i / 2][i % 2 + 2] + mk * kLog2e : -INFINITY;
        }
        float tmax = fmaxf(fmaxf(s4[0], s4[1]), fmaxf(s4[2], s4[3]));
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
        return fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    };
    // The step's probabilities against the running maximum m, added to l, as f16 pairs (cells 2t, 2t + 1 and
    // 2t + 8, 2t + 9): high parts ph, low parts pl.
    auto probabilities = [&](const float (&s4)[4], uint32_t& ph0, uint32_t& pl0, uint32_t& ph2, uint32_t& pl2) {
        float pr[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            pr[i] = s4[i] == -INFINITY ? 0.0f : exp2f(s4[i] - m);
            l += pr[i];
        }
        split2(pr[0], pr[1], ph0, pl0);
        split2(pr[2], pr[3], ph2, pl2);
    };
    auto compute = [&](auto&& qfrag, float mv, auto&& kfrag, auto&& between, auto&& vfrag) {
        float s4[4];
        const float tmax = scores_of(qfrag, mv, kfrag, s4);
        if (tmax > m) {
            const float a = exp2f(m - tmax);
            l *= a;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                o[n][0] *= a;
                o[n][1] *= a;
                o[n][2] *= a;
                o[n][3] *= a;
            }
            m = tmax;
        }
        uint32_t ph0, pl0, ph2, pl2;
        probabilities(s4, ph0, pl0, ph2, pl2);
        between();
#pragma unroll
        for (int n = 0; n < D / 8; n += 2) {
            uint32_t b[4];  // B of channel tiles n (cells 0-7, 8-15) and n + 1
            vfrag(n, b);
            mma16816_split(o[n], ph0, pl0, ph2, pl2, b[0], b[1]);  // rows g: P_high V, rows g + 8: P_low V
            mma16816_split(o[n + 1], ph0, pl0, ph2, pl2, b[2], b[3]);
        }
    };

    // The packed step (kPacked), V's tile vt: the scores as S^T = K Q^T, A = K (rows: cells g and g + 8, from
    // kfrag's B layout), B = Q^T (column c: head c / 2's high part for even c, its low part for odd c; qtfrag),
    // so that one MMA a channel block covers the step's 16 cells and the queries' fragments stay in registers
    // (with Q as A each step loaded them again: 8 ldmatrix, in the shared-memory pipe that bounds this kernel).
    // C: cells g (c0, c1) and g + 8 (c2, c3), columns 2t and 2t + 1: head t's high and low products, so lane
    // (g, t) keeps head t's running maximum and sum (m, l). Of O^T = V^T P^T, lane (g, t) holds channels g and
    // g + 8 of each 16-channel tile for the same two columns: a growing maximum rescales them without a shuffle.
    auto compute_packed = [&](auto&& qtfrag, float mv, auto&& kfrag, auto&& between, const uint8_t* vt, auto&& side) {
        float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
            uint32_t b[2], k[4];
            qtfrag(kc, b);
            kfrag(kc, k);
            mma16816_split(sc, k[0], k[2], k[1], k[3], b[0], b[1]);
        }
        side();  // independent work that overlaps the MMAs' latency and the shuffles
        const float mk0 = __shfl_sync(0xffffffffu, mv, g), mk8 = __shfl_sync(0xffffffffu, mv, g + 8);
        const float s0 = mk0 != -INFINITY ? sc[0] + sc[1] + mk0 * kLog2e : -INFINITY;
        const float s8 = mk8 != -INFINITY ? sc[2] + sc[3] + mk8 * kLog2e : -INFINITY;
        float tmax = fmaxf(s0, s8);
#pragma unroll
        for (int x = 4; x < 32; x *= 2) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, x));
        const bool grow = tmax > m;
        float alpha = 1.0f;
        if (grow) {
            alpha = exp2f(m - tmax);
            l *= alpha;
            m = tmax;
        }
        if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
            for (int n = 0; n < kOut; ++n) {
                o[n][0] *= alpha;
                o[n][1] *= alpha;
                o[n][2] *= alpha;
                o[n][3] *= alpha;
            }
        }
        const float p0 = s0 == -INFINITY ? 0.0f : exp2f(s0 - m), p8 = s8 == -INFINITY ? 0.0f : exp2f(s8 - m);
        l += p0 + p8;
        // Row g, columns 2t, 2t + 1 of P (cells x columns, as Q^T's), transposed: B = P^T, column g for cells
        // 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1).
        const uint32_t b0 = transpose8x8(high_low(p0)), b1 = transpose8x8(high_low(p8));
        between();
#pragma unroll
        for (int n = 0; n < kOut; ++n) {
            uint32_t a[4];  // A = V^T: channels n*16 + g (a0, a2) and + 8 (a1, a3), cells 2t.. (a0, a1) and 2t + 8.. (a2, a3)
            ldsm_x4_trans(a, vt + k_row * kRow + n * 32 + k_col);
            mma16816_split(o[n], a[0], a[1], a[2], a[3], b0, b1);
        }
    };

    // Fragments from a dense tile in shared memory (ldmatrix), K as is and V transposed; the queries' A
    // from their staging (qh: rows 0-15 in one channel order).
    auto tile_q = [&](const uint8_t* qh) { return [=](int kc, uint32_t(&a)[4]) { ldsm_x4(a, qh + a_row * kRow + kc * 32 + a_col); }; };
    auto tile_k = [&](const uint8_t* kt) { return [=](int kc, uint32_t(&b)[4]) { ldsm_x4(b, kt + k_row * kRow + kc * 32 + k_col); }; };
    auto tile_v = [&](const uint8_t* vt) { return [=](int n, uint32_t(&b)[4]) { ldsm_x4_trans(b, vt + v_row * kRow + n * 16 + v_col); }; };

    // The step's K (kv = 0) or V (1) into the warp's tile. Lanes 0-15 take the first halves of the 16
    // cells, 16-31 the second: the eight lanes of a 16-byte store phase then write eight different
    // tile rows, whose padding puts them on different banks (two halves of one row would share them).
    // slot: the cell's entry of the K or V row table (loaded with the step's copies).
    // This lane's record half (cell lane % 16, half lane / 16) of the step's K or V into the tile; keep false: zeros.
    auto expand_own = [&](const uint8_t* raw, int kv, bool keep) {
        const int u = lane % 16, half = lane / 16;
        expand_half<D>(raw + (kv == 0 ? size_t(u) * k_at : v_first + size_t(u) * v_at + (u >= 8 ? v_gap : 0)), half, mine + u * kRow + half * D,
                          keep);
    };
    auto expand_step = [&](const uint8_t* raw, int kv, uint32_t live, int32_t slot) {
        const int u = lane % 16, half = lane / 16;
        uint8_t* dst = mine + u * kRow + half * D;  // D bytes: half a row
        if (!((live >> u) & 1u)) {
#pragma unroll
            for (int o16 = 0; o16 < D; o16 += 16) *reinterpret_cast<uint4*>(dst + o16) = make_uint4(0, 0, 0, 0);
        } else if (slot >= 0) {
            const char* src = (kv == 0 ? cc.k_pool : cc.v_pool) + size_t(slot) * cc.pool_row_bytes + size_t(pl.hk) * D * 2 + half * D;
#pragma unroll
            for (int o16 = 0; o16 < D; o16 += 16) *reinterpret_cast<uint4*>(dst + o16) = load16(src + o16);
        } else {
            expand_own(raw, kv, true);
        }
    };

    static_assert(kTile == kWalkTile, "a step is one tile of the walk");
    // The sparse kernel's row-table entries of a step's cell (lane % 16), K and V, loaded when its
    // copies are issued and used a step later.
    auto slots_of = [&](int64_t b, uint32_t live, int32_t& ks, int32_t& vs) {
        ks = vs = -1;
        if constexpr (kSparse) {
            if (b >= 0 && ((live >> (lane & 15)) & 1u)) {
                ks = cc.k_slot[row0 + b + (lane & 15)];
                vs = cc.v_slot[row0 + b + (lane & 15)];
            }
        }
    };
    // The warp's steps in flight: base (computed next), next and, with three stages, next2.
    int64_t step = warp, base = pl.step_base(step, kTile), next = pl.step_base(step + kWarps, kTile);
    int64_t next2 = kStages > 2 ? pl.step_base(step + 2 * kWarps, kTile) : -1;
    float mv = mask_value(base), mv_next = mask_value(next), mv_next2 = mask_value(next2);
    uint32_t live = live_of(mv);
    if (early) start_after_previous();
    int32_t ks, vs;
    slots_of(base, live, ks, vs);
    // Every buffer's copies go out before the queries are staged, the queries' loads first: the staging
    // ends 3-7 us after the start at batch 1 (H200, globaltimer stamps per block); with only the first
    // step's copies out before it, batch 1, 4K took 15.3 against 14.4 us and batch 4, 4K 28.7 against 27.8; with two of the
    // dense walk's three before it, level (batch 1, 32K 39.7 us both).
    const float f = p.scale * kLog2e;
    constexpr int kPer = 8 * D / kThreads;
    float x[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
        const int i = threadIdx.x + j * kThreads, h = i / D, d = i % D;
        x[j] = h < G ? reinterpret_cast<const float*>(p.q + size_t(pl.row) * p.q_nb1 + size_t(pl.hk * G + h) * p.q_nb2 + size_t(pl.seq) * p.q_nb3)[d] : 0.0f;
    }
    int buf = 0;
    if (base >= 0) issue(base, 0, live);
    if (next >= 0) {
        issue(next, 1, live_of(mv_next));
    } else if constexpr (!kBulk) {
        __pipeline_commit();
    }
    if constexpr (kStages > 2) {
        if (next2 >= 0) {
            issue(next2, 2, live_of(mv_next2));
        } else if constexpr (!kBulk) {
            __pipeline_commit();
        }
    }
    // The group's queries in log2 units, as f16 high and low parts; rows >= G stay zero. Over the store they
    // are written in both orders.
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
        const int i = threadIdx.x + j * kThreads, r = i / D, d = i % D;
        const float v = x[j] * f;
        const __half hi = __float2half_rn(v), lo = __float2half_rn(v - __half2float(hi));
        reinterpret_cast<__half*>(smem + r * kRow)[d] = hi;
        reinterpret_cast<__half*>(smem + (8 + r) * kRow)[d] = lo;
        if constexpr (kSparse) {  // rows 16-31: the K runs' order
            const int pos = q_position(D, d);
            reinterpret_cast<__half*>(smem + (16 + r) * kRow)[pos] = hi;
            reinterpret_cast<__half*>(smem + (24 + r) * kRow)[pos] = lo;
        }
    }
    __syncthreads();
    // Over the dense cache the queries' A fragments stay in registers (32 at D = 128; the kernel has room at
    // two blocks a multiprocessor), where each step loaded them again from the staging.
    uint32_t qa[kSparse ? 1 : D / 16][4];
    if constexpr (!kSparse) {
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) ldsm_x4(qa[kc], smem + a_row * kRow + kc * 32 + a_col);
    }
    // The packed kernel's B = Q^T fragments (compute_packed) in the K runs' order, kept in registers; a step with
    // window cells takes them in the natural order from the staging. Column g: head g / 2's row of high parts
    // (even g) or of low parts (odd g).
    uint32_t qt[kPacked ? D / 16 : 1][2] = {};
    auto staged_qt = [&](int rows) {
        const uint8_t* r = smem + (rows + 8 * (g % 2) + g / 2) * kRow + 4 * t;
        return [=](int kc, uint32_t(&b)[2]) {
            b[0] = *reinterpret_cast<const uint32_t*>(r + kc * 32);
            b[1] = *reinterpret_cast<const uint32_t*>(r + kc * 32 + 16);
        };
    };
    if constexpr (kPacked) {
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) staged_qt(16)(kc, qt[kc]);
    }
    auto reg_qt = [&qt](int kc, uint32_t(&b)[2]) {
        b[0] = qt[kc][0];
        b[1] = qt[kc][1];
    };
    auto reg_q = [&qa](int kc, uint32_t(&a)[4]) {
#pragma unroll
        for (int e = 0; e < 4; ++e) a[e] = qa[kc][e];
    };
    // Step s's copies are in buffer s % kStages; after its computation the buffer takes step s + kStages's
    // (far), whose mask values load at the step's start.
    while (base >= 0) {
        const int64_t far = pl.step_base(step + kStages * kWarps, kTile);
        const uint32_t live_next = live_of(mv_next);
        int32_t ks_next, vs_next;
        slots_of(next, live_next, ks_next, vs_next);
        const float mv_far = mask_value(far);
        if constexpr (kBulk) {
            wait_phase(bars + 8u * unsigned(buf), (parity >> buf) & 1u);
            parity ^= 1u << buf;
        } else {
            __pipeline_wait_prior(kStages - 1);
        }
        __syncwarp();
        if (live != 0u) {
            if constexpr (kSparse) {
                const uint8_t* raw = mine + kTile * kRow + size_t(buf) * kTile * raw_row;
                // V expands into the tile; K's fragments come straight from the records, except in a step
                // with K window cells (their rows are dense, in the pool), which expands K into the tile too.
                if (kPacked && !__any_sync(0xffffffffu, ks >= 0 || vs >= 0)) {
                    // No window cell (the packed kernel): V's records expand after the scores' MMAs, before their
                    // maximum's shuffles, without a branch (a dead cell as an empty bitmap), so that the expansion
                    // overlaps the scores' latencies (H200, one call: s = 0.7, batch 8, 32K 221.3 against 224.1 us
                    // with the expansion first; s = 0.5 253.3 against 259.3).
                    auto v_side = [&] { expand_own(raw, 1, (live >> (lane % 16)) & 1u); };
                    if constexpr (kPacked) compute_packed(reg_qt, mv, RunK<D>(raw, live, lane, k_at), [] { __syncwarp(); }, mine, v_side);
                } else if (!__any_sync(0xffffffffu, ks >= 0)) {
                    expand_step(raw, 1, live, vs);
                    __syncwarp();
                    if constexpr (kPacked) {
                        compute_packed(reg_qt, mv, RunK<D>(raw, live, lane, k_at), [] {}, mine, [] {});
                    } else {
                        compute(tile_q(smem + 16 * kRow), mv, RunK<D>(raw, live, lane, k_at), [] {}, tile_v(mine));
                    }
                } else {
                    expand_step(raw, 0, live, ks);
                    __syncwarp();
                    auto v_after_k = [&] {
                        __syncwarp();  // every lane has its K fragments
                        expand_step(raw, 1, live, vs);
                        __syncwarp();
                    };
                    if constexpr (kPacked) {
                        compute_packed(staged_qt(0), mv, tile_k(mine), v_after_k, mine, [] {});
                    } else {
                        compute(tile_q(smem), mv, tile_k(mine), v_after_k, tile_v(mine));
                    }
                }
            } else {
                const uint8_t* tile = mine + size_t(buf) * 2 * kTile * kRow;
                compute(reg_q, mv, tile_k(tile), [] {}, tile_v(tile + kTile * kRow));
            }
        }
        __syncwarp();
        if (far >= 0) {
            issue(far, buf, live_of(mv_far));
        } else if constexpr (!kBulk) {
            __pipeline_commit();
        }
        buf = buf + 1 == kStages ? 0 : buf + 1;
        step += kWarps;
        base = next;
        mv = mv_next;
        if constexpr (kStages > 2) {
            next = next2;
            mv_next = mv_next2;
            next2 = far;
            mv_next2 = mv_far;
        } else {
            next = far;
            mv_next = mv_far;
        }
        live = live_next;
        ks = ks_next;
        vs = vs_next;
    }

    if constexpr (kPacked) {  // head t's sum over the cells of lanes g
#pragma unroll
        for (int x = 4; x < 32; x *= 2) l += __shfl_xor_sync(0xffffffffu, l, x);
    } else {
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
    }
    __syncthreads();  // the merge arrays overlay the queries and the warps' tiles
    float* s_acc = reinterpret_cast<float*>(smem);
    float* s_m = s_acc + kWarps * G * D;
    float* s_l = s_m + kWarps * G;
    if constexpr (kPacked) {  // columns 2t and 2t + 1: head t's high and low parts
        if (t < G) {
            if (g == 0) {
                s_m[warp * G + t] = m;
                s_l[warp * G + t] = l;
            }
#pragma unroll
            for (int n = 0; n < kOut; ++n) {
                s_acc[(warp * G + t) * D + n * 16 + g] = o[n][0] + o[n][1];
                s_acc[(warp * G + t) * D + n * 16 + g + 8] = o[n][2] + o[n][3];
            }
        }
    } else if (g < G) {  // rows g: head g's high and low parts
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            s_acc[(warp * G + g) * D + n * 8 + 2 * t] = o[n][0] + o[n][2];
            s_acc[(warp * G + g) * D + n * 8 + 2 * t + 1] = o[n][1] + o[n][3];
        }
        if (t == 0) {
            s_m[warp * G + g] = m;
            s_l[warp * G + g] = l;
        }
    }
    __syncthreads();
    merge_warps<D>(p, pl, G, s_acc, s_m, s_l, part, splits);
    if (counters != nullptr) {
        // merge_bulk's barrier: warp 0's first copy barrier, which the dense walk leaves unused.
        const unsigned bar = smem_u32(smem + mma_body_bytes(D, kSparse, rec));
        merge_if_last<D, !kSparse>(p, pl, G, part, splits, mergers, counters, reinterpret_cast<float*>(smem), bar);
    }
}

// f16 bits of -inf: a mask value that hides its cell.
constexpr uint16_t kMaskHidden = 0xfc00u;

// Mask values [c, c + 8) of a row as four words of f16 pairs (cells from n on: hidden); one 16-byte load
// where the row is aligned (`aligned`: mrow is 16-byte aligned and c a multiple of 8).
__device__ __forceinline__ uint4 mask8(const __half* mrow, int64_t c, int64_t n, bool aligned) {
    if (aligned && c + 8 <= n) return *reinterpret_cast<const uint4*>(mrow + c);
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t lo = c + 2 * i < n ? __half_as_ushort(mrow[c + 2 * i]) : kMaskHidden;
        const uint32_t hi = c + 2 * i + 1 < n ? __half_as_ushort(mrow[c + 2 * i + 1]) : kMaskHidden;
        w[i] = lo | hi << 16;
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}

// ---- Tensor-core attention for many query rows (prompts), D = 64 and 128 -------------------------
// A block takes 64 consecutive query rows of one head (16 per warp, the A rows of the MMAs) and walks
// the cells its rows see in tiles of 32, which the four warps load together (asynchronous copies,
// two tiles deep) and all use: K and V are read once per 64 rows. Q and P are split into f16 high
// and low parts (two MMAs each: halving them measured no faster, as ggml's CPU backend computes
// prompts in f32); one online softmax per row in f32. The high and low parts of Q sum into separate
// scores, so that a warp has eight independent MMA chains in Q K^T instead of four.
// The block's mask tile is read once (its loads issued a tile ahead) into shared memory before the
// tile's copies are issued: a tile no row sees is skipped, one every row sees whole (all zeros, the
// usual case of a causal prompt over its history) needs no mask values, and only the rest read theirs
// from shared memory.
// Over the Mustafar store (a prompt's later micro-batches, a second turn), window cells come from the
// pool straight into the tile and compressed cells' records into a staging area; once a tile has
// arrived the block expands its 64 records there (a thread per record half), so each record is
// expanded once for the 64 rows.
constexpr int kPromptRows = 64, kPromptTile = 32;
// A prompt block's bitmap of the 16-cell tiles that any of its rows sees (range_kernel), in shared memory:
// up to 524 288 cells. Beyond that prepare() gives none and the block reads the mask of every tile of its range.
constexpr int kLiveWords = 1024;

// What a prompt's expanded copy of the store holds (launch_prompt): `cap` rows per sequence index. Without
// a mask, the cells [first, first + cap), cell c in row c - first. With one, the 32-cell tiles that any row
// of the micro-batch sees (range_kernel, order_kernel), packed in cell order: tile k of the order in rows
// 32 k to 32 k + 31. A micro-batch's sequence in a pool shared with cached prefixes has its cells in short
// runs all over the pool: the span from its first to its last cell held the others' cells too and, past
// the copy's limit, left the prompt to the store's own slower kernel.
struct CopyPlan {
    const int* rank = nullptr;   // per sequence index and 32-cell tile: its place in the order, -1 if unseen
    const int* order = nullptr;  // per sequence index: the seen tiles in cell order
    const int* count = nullptr;  // per sequence index: how many tiles are seen
    int64_t tiles = 0;           // rank's and order's entries per sequence index
    int64_t cap = 0;
    int64_t first = 0;  // without a mask: the copy's first cell
};
// Whether the copy holds sequence index seq's tiles (none too), and how many there are.
__device__ __forceinline__ bool copy_holds(const CopyPlan& plan, int seq, int& n_tiles) {
    n_tiles = plan.count[seq];
    return int64_t(n_tiles) * kPromptTile <= plan.cap;
}
// Mask tile rows of 40 halves (80 bytes): the softmax's pair reads (8 rows x 4 lanes a warp) hit 32 banks.
constexpr int kPromptMaskRow = kPromptTile + 8;
enum PromptTile : int { kTileDead = 0, kTilePartial = 1, kTileFull = 2 };

// Staged records are padded by 16 bytes: with a stride of an odd number of 16-byte units the
// threads of a warp, reading 16 records, spread over the banks.
__host__ __device__ size_t prompt_raw_row(size_t record_bytes) { return (record_bytes / 16) % 2 == 1 ? record_bytes : record_bytes + 16; }

size_t prompt_smem(int D, bool sparse, size_t record_bytes) {
    const size_t tiles = size_t(2) * 2 * kPromptTile * (2 * D + 16);
    return sparse ? tiles + size_t(2) * kPromptTile * prompt_raw_row(record_bytes) : tiles;
}

// A tile of kPromptTile cells of KV head hk from the store into the prompt kernel's shared memory: thread j
// copies 16-byte chunks j, j + kThreads, ... of the tile's records, cell u's K record then its V record at
// raw + u * raw_row; skip(u, kv) leaves out cells past the range and window cells (their rows are in the
// pool). row0: the store row of cell 0.
template <typename Skip>
__device__ __forceinline__ void stage_records(const CompressedCache& cc, int hk, int64_t row0, uint8_t* raw, size_t raw_row, Skip&& skip) {
    const int cn = int((cc.k_stride + cc.v_stride) / 16), ck = int(cc.k_stride / 16);
    const uint32_t cn_magic = 0xffffffffu / uint32_t(cn) + 1u;  // j / cn as a multiply (cn >= 2, j < 32 cn)
    for (int j = threadIdx.x; j < kPromptTile * cn; j += kThreads) {
        const int u = int(__umulhi(unsigned(j), cn_magic)), r = j - u * cn, kv = r < ck ? 0 : 1;
        if (skip(u, kv)) continue;
        const size_t row = size_t(row0 + u);
        const uint8_t* src = kv == 0 ? cc.k_records + hk * cc.k_head_bytes + row * cc.k_stride + size_t(r) * 16
                                     : cc.v_records + hk * cc.v_head_bytes + row * cc.v_stride + size_t(r - ck) * 16;
        cp_async16(smem_u32(raw + size_t(u) * raw_row + size_t(r) * 16), src);
    }
}

// The thread that expands a staged tile's record half: K or V, cell u and half row; a warp's lanes 0-15 take
// first halves, 16-31 second halves (tile rows on different banks).
struct ExpandShare {
    int kv, u, half;
};
__device__ __forceinline__ ExpandShare expand_share() {
    static_assert(kThreads == 128 && kPromptTile == 32, "one thread per record half");
    const int t = int(threadIdx.x);
    return {t / 64, t % 16 + 16 * ((t / 32) % 2), (t / 16) % 2};
}

template <int D, bool kSparse>
__global__ void __launch_bounds__(kThreads) prompt_kernel(DecodeProblem p, DenseCache dc, CompressedCache cc, const int4* ranges, CopyPlan plan,
                                                           const uint32_t* live, int live_words) {
    start_after_previous();
    extern __shared__ __align__(16) uint8_t smem[];
    constexpr int kRow = 2 * D + 16, kChunks = D / 8;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const int h = blockIdx.y, seq = blockIdx.z, G = p.n_head / p.n_head_kv, hk = h / G;
    const int row0 = blockIdx.x * kPromptRows + warp * 16;  // this warp's rows: row0 + g, row0 + g + 8
    // Over an expanded copy of seen tiles, the dense kernel serves the sequence indices whose tiles the copy
    // holds and the store's kernel the others.
    const bool packed = plan.rank != nullptr;
    const int* const rank = packed ? plan.rank + int64_t(seq) * plan.tiles : nullptr;
    if (packed) {
        int n_tiles;
        if (copy_holds(plan, seq, n_tiles) == kSparse) return;
    }

    // The cells any row of the block sees, [c_lo, c_hi), and those every row sees with mask value 0,
    // [f_lo, f_hi) (the intersection of the rows' zero runs; empty without a mask). A tile inside the latter
    // is full without loading its mask: a causal micro-batch's history, where the mask's loads, its
    // classification and two block-wide reductions were 137 of a warp's instructions a tile (Nsight
    // Compute, dense 16K).
    __shared__ int s_lo, s_hi, s_full_lo, s_full_hi;
    if (threadIdx.x == 0) {
        s_lo = 0;
        s_hi = int(p.n_kv);
        s_full_lo = s_full_hi = 0;
        if (ranges != nullptr) {
            int lo = INT_MAX, hi = 0, full_lo = 0, full_hi = INT_MAX;
            for (int r = blockIdx.x * kPromptRows; r < min(p.n_rows, int(blockIdx.x + 1) * kPromptRows); ++r) {
                const int4 rr = ranges[size_t(seq) * p.n_rows + r];
                if (rr.y > rr.x) {
                    lo = min(lo, rr.x);
                    hi = max(hi, rr.y);
                }
                full_lo = max(full_lo, rr.x);
                full_hi = min(full_hi, rr.y > rr.x ? rr.z : 0);
            }
            s_lo = lo == INT_MAX ? 0 : lo;
            s_hi = lo == INT_MAX ? 0 : hi;
            s_full_lo = full_lo;
            s_full_hi = max(full_lo, full_hi);
        }
    }
    // The block's live tiles: where the rows' cells lie scattered over a shared cache (a long prompt placed
    // around cached prefixes), most tiles of [c_lo, c_hi) are dead, and each cost a mask tile's load: a
    // batch-8, 32K prompt after cached 16K prefixes spent 222 ms a graph in attention against 34 ms alone.
    __shared__ uint32_t s_live[kLiveWords];
    if (live != nullptr) {
        const uint32_t* own = live + (size_t(seq) * gridDim.x + blockIdx.x) * size_t(live_words);
        for (int i = int(threadIdx.x); i < live_words; i += int(blockDim.x)) s_live[i] = own[i];
    }
    __syncthreads();
    // Over a packed copy the walk's tiles are the copy's (32-cell aligned): a tile's rows are then together.
    const int c_lo = packed && !kSparse ? s_lo / kPromptTile * kPromptTile : s_lo, c_hi = s_hi, f_lo = s_full_lo, f_hi = s_full_hi;
    auto known_full = [&](int base) { return base >= f_lo && base + kPromptTile <= f_hi; };
    // The walk's tile after the one at base: the first base + 32 k (k >= 1) holding a cell of a live 16-cell
    // tile, c_hi when none. Tiles stay 32 cells apart from c_lo, so the mask loads keep their alignment.
    auto next_base = [&](int base) -> int {
        const int following = base + kPromptTile;
        if (live == nullptr || following >= c_hi) return following;
        const int first = following / kWalkTile, last = (c_hi - 1) / kWalkTile;
        int w = first >> 5;
        uint32_t bits = s_live[w] & (0xffffffffu << (first & 31));
        while (bits == 0u) {
            if (++w > (last >> 5)) return c_hi;
            bits = s_live[w];
        }
        const int j = w * 32 + __ffs(bits) - 1;
        if (j > last) return c_hi;
        return base + (max(j * kWalkTile, following) - base) / kPromptTile * kPromptTile;
    };

    // A fragments of the warp's 16 query rows (log2 units) per 16 channels: [0] high, [1] low parts.
    uint32_t qa[2][D / 16][4];
    {
        const float f = p.scale * kLog2e;
        auto q_at = [&](int r, int d) {
            const int row = row0 + r;
            if (row >= p.n_rows) return 0.0f;
            return reinterpret_cast<const float*>(p.q + size_t(row) * p.q_nb1 + size_t(h) * p.q_nb2 + size_t(seq) * p.q_nb3)[d] * f;
        };
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {  // a0 (g, 2t), a1 (g+8, 2t), a2 (g, 2t+8), a3 (g+8, 2t+8)
                const int r = g + (i % 2) * 8, d = kc * 16 + 2 * t + (i / 2) * 8;
                split2(q_at(r, d), q_at(r, d + 1), qa[0][kc][i], qa[1][kc][i]);
            }
        }
    }

    // The thread's 16 mask values of a tile (row tid / 2, half tid % 2; rows past n_rows and cells past
    // c_hi: -inf), loaded a tile ahead of their use so that no tile waits for them.
    // The row pointer and its alignment are the thread's for the whole walk (tiles start 32 cells apart):
    // computed per tile, with a division for the sequence's mask, they were 4 % of the loop's instructions.
    const int mask_r = threadIdx.x / 2, mask_row = blockIdx.x * kPromptRows + mask_r;
    const __half* const mr = p.mask == nullptr || mask_row >= p.n_rows
                                 ? nullptr
                                 : reinterpret_cast<const __half*>(p.mask + size_t(mask_row) * p.mask_nb1 + size_t(seq % p.mask_ne3) * p.mask_nb3);
    const bool mask_aligned = mr != nullptr && reinterpret_cast<uintptr_t>(mr + c_lo) % 16 == 0;
    auto load_mask = [&](int base, uint32_t (&w)[8]) {
        if (p.mask == nullptr || known_full(base)) return;
        if (mr == nullptr) {
#pragma unroll
            for (int i = 0; i < 8; ++i) w[i] = kMaskHidden * 0x10001u;
            return;
        }
        const int c0 = base + (threadIdx.x % 2) * 16;
        const uint4 a = mask8(mr, c0, c_hi, mask_aligned), b = mask8(mr, c0 + 8, c_hi, mask_aligned);
        w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
    };
    // The tile's mask into s_mask[mbuf] and what the tile is to the block: dead, partial or full
    // (block-wide, so all threads agree).
    __shared__ __align__(16) uint16_t s_mask[2][kPromptRows][kPromptMaskRow];
    // The store: each cell's pool slot (>= 0: its rows are dense in the pool; < 0: records) per tile buffer,
    // [buffer][K or V][cell]. Threads 0-63 load those of the tile after next (load_slot), so that the copies
    // and the expansion wait on no global load; before, every copy looked its cell's slot up in memory.
    __shared__ int32_t s_slot[kSparse ? 2 : 1][2][kPromptTile];
    const int64_t store_row0 = kSparse ? int64_t(seq) * cc.seq_rows : 0;  // the store's row of the sequence's cell 0
    auto load_slot = [&](int base) -> int32_t {
        const int tid = int(threadIdx.x), cell = base + tid % kPromptTile;
        if (!kSparse || tid >= 2 * kPromptTile || cell >= c_hi) return -1;
        return (tid < kPromptTile ? cc.k_slot : cc.v_slot)[store_row0 + cell];
    };
    // With the slots of the tile (staged before the barriers that publish the mask).
    auto tile_state = [&](int base, int mbuf, const uint32_t (&w)[8], int32_t slot) -> int {
        if constexpr (kSparse) {
            const int tid = int(threadIdx.x);
            if (tid < 2 * kPromptTile) s_slot[mbuf][tid / kPromptTile][tid % kPromptTile] = slot;
        }
        if (p.mask == nullptr || known_full(base)) {
            if constexpr (kSparse) __syncthreads();
            return base + kPromptTile <= c_hi ? kTileFull : kTilePartial;
        }
        bool any = false, zeros = true;  // zeros: every value 0 (or -0)
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            any |= (w[i] & 0xffffu) != kMaskHidden || (w[i] >> 16) != kMaskHidden;
            zeros &= (w[i] & 0x7fff7fffu) == 0u;
        }
        if (mask_row >= p.n_rows) zeros = true;
        uint4* dst = reinterpret_cast<uint4*>(&s_mask[mbuf][mask_r][(threadIdx.x % 2) * 16]);
        dst[0] = make_uint4(w[0], w[1], w[2], w[3]);
        dst[1] = make_uint4(w[4], w[5], w[6], w[7]);
        if (!__syncthreads_or(any)) return kTileDead;
        return __syncthreads_and(zeros) ? kTileFull : kTilePartial;
    };

    // The store: staged records ([K record | V record] per cell) after the two tiles.
    const size_t rec = kSparse ? cc.k_stride + cc.v_stride : 0, raw_row = kSparse ? prompt_raw_row(rec) : 0;
    uint8_t* const raw_base = smem + size_t(2) * 2 * kPromptTile * kRow;
    auto slot_of = [&](int sbuf, int kv, int u) { return s_slot[kSparse ? sbuf : 0][kv][u]; };

    // The thread's share of a tile's dense rows: chunk ch of cells u0 + kCopyRows i (i < kCopies) of K and of
    // V, at fixed strides from addresses set up once. Computed per chunk (divisions, 64-bit products, the
    // shared-memory address) they were over a third of the loop's instructions (Nsight Compute, 16K).
    constexpr int kCopyRows = kThreads / kChunks, kCopies = kPromptTile / kCopyRows;
    static_assert(kThreads % kChunks == 0 && kPromptTile % kCopyRows == 0, "whole rows per round of copies");
    const int u0 = threadIdx.x / kChunks, ch = threadIdx.x % kChunks;
    const unsigned tile_at = smem_u32(smem) + unsigned(u0 * kRow + ch * 16);
    const char* const k_at = kSparse ? nullptr : dc.k + size_t(hk) * dc.k_nb2 + size_t(seq) * dc.k_nb3 + size_t(u0) * dc.k_nb1 + ch * 16;
    const char* const v_at = kSparse ? nullptr : dc.v + size_t(hk) * dc.v_nb2 + size_t(seq) * dc.v_nb3 + size_t(u0) * dc.v_nb1 + ch * 16;
    const size_t k_step = kSparse ? 0 : size_t(kCopyRows) * dc.k_nb1, v_step = kSparse ? 0 : size_t(kCopyRows) * dc.v_nb1;

    // The dense rows' row of a tile's first cell: the cell, or over a packed copy the tile's place in it
    // (negative for a tile no row sees, whose rows the copy lacks). Loaded with the tile's mask, a tile ahead.
    auto row_of = [&](int base) -> int64_t {
        if (kSparse || !packed) return base;
        return int64_t(__ldg(rank + base / kPromptTile)) * kPromptTile;
    };
    auto issue = [&](int base, int buf, bool live, int64_t row) {
        if (!live) {
            __pipeline_commit();
            return;
        }
        const unsigned dst = tile_at + unsigned(buf * 2 * kPromptTile * kRow);
        const char* k = kSparse ? nullptr : k_at + row * int64_t(dc.k_nb1);
        const char* v = kSparse ? nullptr : v_at + row * int64_t(dc.v_nb1);
#pragma unroll
        for (int i = 0; i < kCopies; ++i) {
            const int cell = base + u0 + kCopyRows * i;
#pragma unroll
            for (int kv = 0; kv < 2; ++kv) {
                const unsigned d = dst + unsigned((kv * kPromptTile + kCopyRows * i) * kRow);
                if (cell >= c_hi || row < 0) {
                    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(d), "r"(0u) : "memory");
                } else if constexpr (kSparse) {
                    const int32_t slot = slot_of(buf, kv, u0 + kCopyRows * i);  // compressed cells are expanded into the tile later
                    if (slot >= 0)
                        cp_async16(d, (kv == 0 ? cc.k_pool : cc.v_pool) + size_t(slot) * cc.pool_row_bytes + size_t(hk) * D * 2 + ch * 16);
                } else {
                    cp_async16(d, kv == 0 ? k : v);
                }
            }
            if constexpr (!kSparse) k += k_step, v += v_step;
        }
        if constexpr (kSparse)
            stage_records(cc, hk, store_row0 + base, raw_base + size_t(buf) * kPromptTile * raw_row, raw_row,
                          [&](int u, int kv) { return base + u >= c_hi || slot_of(buf, kv, u) >= 0; });
        __pipeline_commit();
    };

    // Compressed cells of the arrived tile into its dense rows.
    auto expand_tile = [&](int base, int buf) {
        const ExpandShare e = expand_share();
        if (base + e.u < c_hi && slot_of(buf, e.kv, e.u) < 0) {
            const uint8_t* raw = raw_base + size_t(buf) * kPromptTile * raw_row + size_t(e.u) * raw_row + (e.kv == 0 ? 0 : cc.k_stride);
            expand_half<D>(raw, e.half, smem + size_t(buf) * 2 * kPromptTile * kRow + size_t(e.kv * kPromptTile + e.u) * kRow + e.half * D);
        }
    };

    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int k_row = ((lane >> 4) & 1) * 8 + (lane & 7), k_col = ((lane >> 3) & 1) * 16;
    const int v_row = ((lane >> 3) & 1) * 8 + (lane & 7), v_col = ((lane >> 4) & 1) * 16;

    int buf = 0;
    uint32_t mask_next[8] = {};  // the mask values of the tile to classify next
    int32_t slot_next = -1;      // and this thread's slot of it (the store)
    load_mask(c_lo, mask_next);
    if constexpr (kSparse) slot_next = load_slot(c_lo);
    int state = c_lo < c_hi ? tile_state(c_lo, 0, mask_next, slot_next) : kTileDead;
    int next = c_lo < c_hi ? next_base(c_lo) : c_hi, after = c_hi;  // the walk's next two tiles
    int64_t row_next = 0;  // the dense rows' row of tile `next`
    if (next < c_hi) {
        load_mask(next, mask_next);
        if constexpr (kSparse) slot_next = load_slot(next);
        row_next = row_of(next);
    }
    if (c_lo < c_hi) issue(c_lo, 0, state != kTileDead, row_of(c_lo));
    for (int base = c_lo; base < c_hi; base = next, next = after) {
        int next_state = kTileDead;
        after = c_hi;
        if (next < c_hi) {
            next_state = tile_state(next, buf ^ 1, mask_next, slot_next);
            after = next_base(next);
            const int64_t row = row_next;
            if (after < c_hi) {  // in flight while this tile computes
                load_mask(after, mask_next);
                if constexpr (kSparse) slot_next = load_slot(after);
                row_next = row_of(after);
            }
            issue(next, buf ^ 1, next_state != kTileDead, row);
        } else {
            __pipeline_commit();
        }
        __pipeline_wait_prior(1);
        __syncthreads();
        if (state == kTileDead) {  // no row of the block sees these cells
            buf ^= 1;
            state = next_state;
            continue;
        }
        if constexpr (kSparse) {
            expand_tile(base, buf);
            __syncthreads();
        }
        const uint8_t* kt = smem + size_t(buf) * 2 * kPromptTile * kRow;
        const uint8_t* vt = kt + kPromptTile * kRow;
        float sc[2][4][4];  // Q's high, low part; n-tiles of 8 cells; C rows g (c0, c1) and g + 8 (c2, c3)
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) sc[j][nt][0] = sc[j][nt][1] = sc[j][nt][2] = sc[j][nt][3] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {  // cells 0-15, 16-31
                uint32_t b[4];
                ldsm_x4(b, kt + (half * 16 + k_row) * kRow + kc * 32 + k_col);
#pragma unroll
                for (int part = 0; part < 2; ++part) {
                    const uint32_t (&a)[4] = qa[part][kc];
                    mma16816_split(sc[part][half * 2], a[0], a[1], a[2], a[3], b[0], b[1]);
                    mma16816_split(sc[part][half * 2 + 1], a[0], a[1], a[2], a[3], b[2], b[3]);
                }
            }
        }
        // Masks and the online softmax of the lane's two rows (i = 0: row g, 1: row g + 8).
        float pr[4][4];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float tmax = -INFINITY;
            const uint16_t* ms = s_mask[buf][warp * 16 + g + i * 8];
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                const int c = nt * 8 + 2 * t;
                float2 mk = make_float2(0.0f, 0.0f);
                if (state == kTilePartial) {
                    if (p.mask != nullptr) mk = __half22float2(*reinterpret_cast<const __half2*>(ms + c));
                    else mk = make_float2(base + c < c_hi ? 0.0f : -INFINITY, base + c + 1 < c_hi ? 0.0f : -INFINITY);
                }
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const float mv = e == 0 ? mk.x : mk.y;
                    const float v = mv == -INFINITY ? -INFINITY : sc[0][nt][i * 2 + e] + sc[1][nt][i * 2 + e] + mv * kLog2e;
                    pr[nt][i * 2 + e] = v;
                    tmax = fmaxf(tmax, v);
                }
            }
            tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
            tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
            if (tmax > m[i]) {
                const float a = exp2f(m[i] - tmax);
                l[i] *= a;
#pragma unroll
                for (int n = 0; n < D / 8; ++n) {
                    o[n][i * 2] *= a;
                    o[n][i * 2 + 1] *= a;
                }
                m[i] = tmax;
            }
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float& v = pr[nt][i * 2 + e];
                    v = v == -INFINITY ? 0.0f : exp2f(v - m[i]);
                    l[i] += v;
                }
        }
        // O += P V over the two 16-cell chunks; P's A fragment comes straight from S's C layout.
#pragma unroll
        for (int kh = 0; kh < 2; ++kh) {
            uint32_t ph[4], pl[4];
            split2(pr[2 * kh][0], pr[2 * kh][1], ph[0], pl[0]);          // (g, 2t)
            split2(pr[2 * kh][2], pr[2 * kh][3], ph[1], pl[1]);          // (g+8, 2t)
            split2(pr[2 * kh + 1][0], pr[2 * kh + 1][1], ph[2], pl[2]);  // (g, 2t+8)
            split2(pr[2 * kh + 1][2], pr[2 * kh + 1][3], ph[3], pl[3]);  // (g+8, 2t+8)
#pragma unroll
            for (int n = 0; n < D / 8; n += 2) {
                uint32_t b[4];
                ldsm_x4_trans(b, vt + (kh * 16 + v_row) * kRow + n * 16 + v_col);
                mma16816_split(o[n], ph[0], ph[1], ph[2], ph[3], b[0], b[1]);
                mma16816_split(o[n + 1], ph[0], ph[1], ph[2], ph[3], b[2], b[3]);
                mma16816_split(o[n], pl[0], pl[1], pl[2], pl[3], b[0], b[1]);
                mma16816_split(o[n + 1], pl[0], pl[1], pl[2], pl[3], b[2], b[3]);
            }
        }
        __syncthreads();  // the next issue overwrites this buffer
        buf ^= 1;
        state = next_state;
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        if (row0 + g + i * 8 >= p.n_rows) continue;
        float* out = out_row(p, h, row0 + g + i * 8, seq);
        const float inv = l[i] == 0.0f ? 0.0f : 1.0f / l[i];
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            out[n * 8 + 2 * t] = o[n][i * 2] * inv;
            out[n * 8 + 2 * t + 1] = o[n][i * 2 + 1] * inv;
        }
    }
}

using MmaFn = void (*)(DecodeProblem, DenseCache, CompressedCache, TileLists, float*, int, int*, int);

template <int D>
MmaFn store_fn(bool packed, bool four_fit) {
    if (packed) return four_fit ? mma_kernel<D, true, true, 4> : mma_kernel<D, true, true, 3>;
    return four_fit ? mma_kernel<D, true, false, 4> : mma_kernel<D, true, false, 3>;
}

// packed: over the store with at most 4 query heads per KV head; four_fit: four blocks' shared memory fits
// a multiprocessor (the store's variant for four blocks).
MmaFn mma_fn(int d, bool sparse, bool packed, bool four_fit) {
    switch (d) {
        case 64: return sparse ? store_fn<64>(packed, four_fit) : mma_kernel<64, false>;
        case 128: return sparse ? store_fn<128>(packed, four_fit) : mma_kernel<128, false>;
        default: return nullptr;
    }
}

__device__ float block_reduce(float v, bool take_max, float* red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = take_max ? fmaxf(v, w) : v + w;
    }
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    float r = take_max ? -INFINITY : 0.0f;
    for (int w = 0; w < int(blockDim.x / 32); ++w) r = take_max ? fmaxf(r, red[w]) : r + red[w];
    __syncthreads();
    return r;
}

// One block per (head, row): the splits' weights exp2(m_s - m) go to shared memory once, then each
// thread sums one channel over the splits.
__global__ void merge_kernel(DecodeProblem p, const float* part, int splits) {
    start_after_previous();
    extern __shared__ float weight[];
    __shared__ float red[32];
    const int D = p.head_dim, h = blockIdx.x, rs = blockIdx.y;
    const int P = part_stride(D);
    const float* pp = part + (size_t(rs) * p.n_head + h) * size_t(splits) * P;
    float m = -INFINITY;
    for (int s = threadIdx.x; s < splits; s += blockDim.x) m = fmaxf(m, pp[size_t(s) * P + D]);
    m = block_reduce(m, true, red);
    float l = 0.0f;
    for (int s = threadIdx.x; s < splits; s += blockDim.x) {
        const float f = merge_factor(pp[size_t(s) * P + D], m);
        weight[s] = f;
        l += pp[size_t(s) * P + D + 1] * f;
    }
    l = block_reduce(l, false, red);
    float* out = out_row(p, h, rs % p.n_rows, rs / p.n_rows);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0.0f;
#pragma unroll 4
        for (int s = 0; s < splits; ++s) a += pp[size_t(s) * P + d] * weight[s];
        out[d] = l == 0.0f ? 0.0f : a / l;
    }
}

// Per query row (one block of kRangeThreads): the cells its mask shows, [first, last + 1) (empty: 0, 0);
// where the run of zero mask values that begins at the first ends (the prompt kernel takes tiles inside
// every row's run as full without reading their mask); and, for the decode kernels, the list of 16-cell
// tiles that hold a cell it sees, in cell order (a cache shared by several sequences interleaves their
// cells; each context split then takes an equal share of the row's own tiles and walks no gap between
// them). Each thread takes a contiguous chunk of whole tiles, read 8 cells at a time (one 16-byte load
// where the row is aligned), counts its visible tiles, and after a block-wide scan writes their indices
// at its offset in the list.
// (Masks of shared caches are long: 8 sequences of 16K give 131K cells a row, read once per layer.)
constexpr int kRangeThreads = 1024;

// Bit i of vis: cell c + i is visible (c + i < n); of nonzero: its mask value is not 0 or -0 (hidden
// cells, those from n on included, are not).
__device__ __forceinline__ void mask_bits8(const __half* mrow, int64_t c, int64_t n, bool aligned, uint32_t& vis, uint32_t& nonzero) {
    const uint4 v = mask8(mrow, c, n, aligned);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    vis = nonzero = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t lo = w[i] & 0xffffu, hi = w[i] >> 16;
        vis |= uint32_t(lo != kMaskHidden) << (2 * i) | uint32_t(hi != kMaskHidden) << (2 * i + 1);
        nonzero |= uint32_t((lo & 0x7fffu) != 0u) << (2 * i) | uint32_t((hi & 0x7fffu) != 0u) << (2 * i + 1);
    }
}

__device__ __forceinline__ uint32_t visible8(const __half* mrow, int64_t c, int64_t n, bool aligned) {
    uint32_t vis, nonzero;
    mask_bits8(mrow, c, n, aligned, vis, nonzero);
    return vis;
}

// Exclusive scan of each thread's n over a block of kRangeThreads: within the warp, then over the warps
// (s_warp: a shared int per warp). `between` runs after the first barrier, before the second, which the
// caller's shared updates there need; total: the block's sum.
template <typename Between>
__device__ __forceinline__ int block_exclusive_scan(int n, int* s_warp, int& total, Between&& between) {
    const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
    int incl = n;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
    }
    if (lane == 31) s_warp[warp] = incl;
    __syncthreads();
    between();
    int before = incl - n;
    total = 0;
    for (int w = 0; w < kRangeThreads / 32; ++w) {
        if (w < warp) before += s_warp[w];
        total += s_warp[w];
    }
    __syncthreads();
    return before;
}

__global__ void __launch_bounds__(kRangeThreads) range_kernel(DecodeProblem p, int4* ranges, int* tiles, int* counts, int64_t stride, uint32_t* seen,
                                                               int64_t seen_words, uint32_t* live, int live_words) {
    start_after_previous();
    __shared__ int s_lo, s_hi, s_zero_end, s_warp[kRangeThreads / 32];
    const int rs = blockIdx.x, t = threadIdx.x;
    Place pl{};
    pl.row = rs % p.n_rows;
    pl.seq = rs / p.n_rows;
    const __half* mrow = mask_row(p, pl);
    const bool aligned = reinterpret_cast<uintptr_t>(mrow) % 16 == 0;
    if (t == 0) {
        s_lo = INT_MAX;
        s_hi = -1;
        s_zero_end = INT_MAX;
    }
    // Chunks of whole tiles (so that aligned rows stay aligned and tiles are the list's tiles).
    const int64_t chunk = ((p.n_kv + kRangeThreads - 1) / kRangeThreads + kWalkTile - 1) / kWalkTile * kWalkTile;
    const int64_t c_begin = min(p.n_kv, int64_t(t) * chunk), c_end = min(p.n_kv, c_begin + chunk);
    auto visible16 = [&](int64_t c) { return visible8(mrow, c, c_end, aligned) | visible8(mrow, c + 8, c_end, aligned) << 8; };
    // The chunk's first cell of a nonzero value, and its first such cell at or after its first visible one.
    int count = 0, lo = INT_MAX, hi = -1, first_nonzero = INT_MAX, nonzero_after_visible = INT_MAX;
    // The row's visible 16-cell tiles into its prompt block's bitmap (zeroed by prepare), a word at a time.
    uint32_t* const own_live =
        live != nullptr ? live + (size_t(pl.seq) * ((p.n_rows + kPromptRows - 1) / kPromptRows) + pl.row / kPromptRows) * size_t(live_words) : nullptr;
    int live_word = 0;
    uint32_t live_bits = 0u;
    // And its visible 32-cell tiles into its sequence index's `seen` (zeroed by prepare): the packed copy's tiles.
    uint32_t* const own_seen = seen != nullptr ? seen + int64_t(pl.seq) * seen_words : nullptr;
    int64_t seen_word = 0;
    uint32_t seen_bits = 0u;
#pragma unroll 2
    for (int64_t c = c_begin; c < c_end; c += kWalkTile) {
        uint32_t v0, n0, v1, n1;
        mask_bits8(mrow, c, c_end, aligned, v0, n0);
        mask_bits8(mrow, c + 8, c_end, aligned, v1, n1);
        const uint32_t bits = v0 | v1 << 8, nonzero = n0 | n1 << 8;
        if (first_nonzero == INT_MAX && nonzero != 0u) first_nonzero = int(c) + __ffs(nonzero) - 1;
        if (nonzero_after_visible == INT_MAX && (lo != INT_MAX || bits != 0u)) {
            const uint32_t after = lo != INT_MAX ? nonzero : nonzero & ~((1u << (__ffs(bits) - 1)) - 1u);
            if (after != 0u) nonzero_after_visible = int(c) + __ffs(after) - 1;
        }
        if (bits != 0u) {
            ++count;
            lo = min(lo, int(c) + __ffs(bits) - 1);
            hi = int(c) + 31 - __clz(bits);
            if (own_live != nullptr) {
                const int tile = int(c / kWalkTile);
                if (tile >> 5 != live_word && live_bits != 0u) {
                    atomicOr(own_live + live_word, live_bits);
                    live_bits = 0u;
                }
                live_word = tile >> 5;
                live_bits |= 1u << (tile & 31);
            }
            if (own_seen != nullptr) {
                const int64_t tile = c / kPromptTile;
                if (tile >> 5 != seen_word && seen_bits != 0u) {
                    atomicOr(own_seen + seen_word, seen_bits);
                    seen_bits = 0u;
                }
                seen_word = tile >> 5;
                seen_bits |= 1u << (tile & 31);
            }
        }
    }
    if (live_bits != 0u) atomicOr(own_live + live_word, live_bits);
    if (seen_bits != 0u) atomicOr(own_seen + seen_word, seen_bits);
    // Where this thread's tiles go in the row's list; the row's first and last visible cells.
    int total;
    const int before = block_exclusive_scan(count, s_warp, total, [&] {
        if (lo != INT_MAX) atomicMin(&s_lo, lo);
        if (hi >= 0) atomicMax(&s_hi, hi);
    });
    // The row's first visible cell is s_lo: the run ends at the first nonzero value from there on.
    const int row_lo = s_lo;
    if (c_begin > row_lo) {
        if (first_nonzero != INT_MAX) atomicMin(&s_zero_end, first_nonzero);
    } else if (row_lo < c_end && nonzero_after_visible != INT_MAX) {
        atomicMin(&s_zero_end, nonzero_after_visible);
    }
    __syncthreads();
    if (t == 0) {
        ranges[rs] = total == 0 ? make_int4(0, 0, 0, 0) : make_int4(s_lo, s_hi + 1, min(int(p.n_kv), s_zero_end), 0);
        if (counts != nullptr) counts[rs] = total;
    }
    if (tiles == nullptr || count == 0) return;
    int* out = tiles + size_t(rs) * stride + before;
    for (int64_t c = c_begin; c < c_end; c += kWalkTile)
        if (visible16(c) != 0u) *out++ = int(c / kWalkTile);
}

// The packed copy's order (CopyPlan) from range_kernel's `seen` bits: one block per sequence index, a word
// of 32 tiles per thread a round, their places by a scan of the words' counts.
__global__ void __launch_bounds__(kRangeThreads) order_kernel(const uint32_t* seen, int64_t words, int64_t tiles, int* rank, int* order, int* count) {
    start_after_previous();
    __shared__ int s_warp[kRangeThreads / 32];
    const int seq = blockIdx.x, t = threadIdx.x;
    seen += int64_t(seq) * words;
    rank += int64_t(seq) * tiles;
    order += int64_t(seq) * tiles;
    int done = 0;  // tiles placed by the rounds before
    for (int64_t w0 = 0; w0 < words; w0 += kRangeThreads) {
        const int64_t w = w0 + t;
        const uint32_t bits = w < words ? seen[w] : 0u;
        int total;
        int at = done + block_exclusive_scan(__popc(bits), s_warp, total, [] {});
        for (int b = 0; b < 32 && w * 32 + b < tiles; ++b) {
            const int64_t tile = w * 32 + b;
            if ((bits >> b) & 1u) {
                rank[tile] = at;
                order[at++] = int(tile);
            } else {
                rank[tile] = -1;
            }
        }
        done += total;
    }
    if (t == 0) count[seq] = done;
}

using DenseFn = void (*)(DecodeProblem, DenseCache, TileLists, float*, int);
using CompressedFn = void (*)(DecodeProblem, CompressedCache, TileLists, float*, int);

template <int D>
DenseFn dense_for(int g) {
    switch (g) {
        case 1: return dense_kernel<D, 1>;
        case 2: return dense_kernel<D, 2>;
        case 4: return dense_kernel<D, 4>;
        case 8: return dense_kernel<D, 8>;
        default: return nullptr;
    }
}

template <int D>
CompressedFn compressed_for(int g) {
    switch (g) {
        case 1: return compressed_kernel<D, 1>;
        case 2: return compressed_kernel<D, 2>;
        case 4: return compressed_kernel<D, 4>;
        case 8: return compressed_kernel<D, 8>;
        default: return nullptr;
    }
}

// The SIMT kernels serve D = 256 only: D = 64 and 128 take the tensor-core kernels.
DenseFn dense_fn(int d, int g) { return d == 256 ? dense_for<256>(g) : nullptr; }

CompressedFn compressed_fn(int d, int g) { return d == 256 ? compressed_for<256>(g) : nullptr; }

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Lays out the workspace (ranges, tile counts and lists, then partials) and, when there is a mask,
// computes the ranges and, for the decode kernels (want_tiles), the tile lists.
struct Prepared {
    int4* ranges = nullptr;  // {first visible cell, last + 1, end of the zero run from the first, 0}
    // Per sequence index (want_order): the packed order of the 32-cell tiles any row sees (CopyPlan).
    int* rank = nullptr;
    int* order = nullptr;
    int* count = nullptr;
    int64_t tiles32 = 0;
    uint32_t* live = nullptr;  // per prompt block, the 16-cell tiles any of its rows sees (want_live)
    int live_words = 0;
    TileLists tiles;
    float* part = nullptr;
    bool ok = false;
};

Prepared prepare(const DecodeProblem& p, int splits, bool want_tiles, DecodeWorkspace& ws, cudaStream_t stream, bool want_order = false,
                 bool want_live = false) {
    Prepared r;
    const size_t row_seqs = size_t(p.n_rows) * p.n_seq;
    const bool masked = p.mask != nullptr;
    want_order = want_order && masked;
    const int64_t stride = (p.n_kv + kWalkTile - 1) / kWalkTile;
    const int live_words = int((stride + 31) / 32);
    want_live = want_live && masked && live_words <= kLiveWords;
    const int64_t tiles32 = (p.n_kv + kPromptTile - 1) / kPromptTile, seen_words = (tiles32 + 31) / 32;
    const size_t seen_at = row_seqs * sizeof(int4), seen_bytes = want_order ? size_t(p.n_seq) * size_t(seen_words) * sizeof(uint32_t) : 0;
    const size_t tiles_bytes = want_order ? size_t(p.n_seq) * size_t(tiles32) * sizeof(int) : 0;
    const size_t rank_at = round_up(seen_at + seen_bytes, 16), order_at = round_up(rank_at + tiles_bytes, 16),
                 count_at = round_up(order_at + tiles_bytes, 16), seen_count_bytes = want_order ? size_t(p.n_seq) * sizeof(int) : 0;
    const size_t live_at = round_up(count_at + seen_count_bytes, 16);
    const size_t live_bytes =
        want_live ? size_t(p.n_seq) * size_t((p.n_rows + kPromptRows - 1) / kPromptRows) * size_t(live_words) * sizeof(uint32_t) : 0;
    const size_t range_bytes = masked ? round_up(live_at + live_bytes, 256) : 0;
    const size_t count_bytes = masked && want_tiles ? round_up(row_seqs * sizeof(int), 256) : 0;
    const size_t tile_bytes = masked && want_tiles ? round_up(row_seqs * size_t(stride) * sizeof(int), 256) : 0;
    const size_t part_bytes = splits > 1 ? row_seqs * p.n_head * size_t(splits) * part_stride(p.head_dim) * sizeof(float) : 0;
    const size_t total = range_bytes + count_bytes + tile_bytes + part_bytes;
    uint32_t* seen = nullptr;  // per sequence index, the tiles any row sees (range_kernel), which order_kernel packs
    if (total > 0) {
        auto* base = static_cast<char*>(ws.get(total));
        if (base == nullptr) return r;
        if (range_bytes > 0) r.ranges = reinterpret_cast<int4*>(base);
        if (want_order) {
            seen = reinterpret_cast<uint32_t*>(base + seen_at);
            r.rank = reinterpret_cast<int*>(base + rank_at);
            r.order = reinterpret_cast<int*>(base + order_at);
            r.count = reinterpret_cast<int*>(base + count_at);
            r.tiles32 = tiles32;
        }
        if (live_bytes > 0) {
            r.live = reinterpret_cast<uint32_t*>(base + live_at);
            r.live_words = live_words;
        }
        if (count_bytes > 0) {
            r.tiles.counts = reinterpret_cast<int*>(base + range_bytes);
            r.tiles.tiles = reinterpret_cast<int*>(base + range_bytes + count_bytes);
            r.tiles.stride = stride;
        }
        if (part_bytes > 0) r.part = reinterpret_cast<float*>(base + range_bytes + count_bytes + tile_bytes);
    }
    // The ranges sit at the start of the workspace, the partials after them: a later layer's prepare
    // with the same mask and sizes finds them in place (DecodeWorkspace::reuse_ranges).
    DecodeWorkspace::RangesKey key;
    if (r.ranges != nullptr) {
        key.mask = p.mask;
        key.mask_nb1 = p.mask_nb1;
        key.mask_nb3 = p.mask_nb3;
        key.mask_ne3 = p.mask_ne3;
        key.n_rows = p.n_rows;
        key.n_seq = p.n_seq;
        key.n_kv = p.n_kv;
        key.tiles = want_tiles;
        key.order = want_order;
        key.live = want_live;
        key.bytes = range_bytes + count_bytes + tile_bytes;
    }
    if (r.ranges == nullptr) {
        if (total > 0) ws.forget_ranges();  // the partials go where ranges were
    } else if (ws.has_ranges(key)) {
        r.tiles.settled = true;
    } else {
        if (seen != nullptr && !MUSTAFAR_CUDA_OK(cudaMemsetAsync(seen, 0, seen_bytes, stream))) return r;
        if (r.live != nullptr && !MUSTAFAR_CUDA_OK(cudaMemsetAsync(r.live, 0, live_bytes, stream))) return r;
        launch_kernel(range_kernel, unsigned(row_seqs), kRangeThreads, 0, stream, p, r.ranges, const_cast<int*>(r.tiles.tiles), const_cast<int*>(r.tiles.counts),
                      stride, seen, seen_words, r.live, r.live_words);
        if (!MUSTAFAR_CUDA_OK(cudaGetLastError())) return r;
        if (seen != nullptr) {
            launch_kernel(order_kernel, unsigned(p.n_seq), kRangeThreads, 0, stream, static_cast<const uint32_t*>(seen), seen_words, tiles32, r.rank,
                          r.order, r.count);
            if (!MUSTAFAR_CUDA_OK(cudaGetLastError())) return r;
        }
    }
    r.ok = true;
    return r;
}

bool merge(const DecodeProblem& p, const Prepared& pr, int splits, cudaStream_t stream) {
    if (splits == 1) return true;
    launch_kernel(merge_kernel, dim3(unsigned(p.n_head), unsigned(p.n_rows * p.n_seq)), unsigned(p.head_dim), size_t(splits) * sizeof(float), stream,
                  p, pr.part, splits);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

dim3 grid_of(const DecodeProblem& p, int splits) { return dim3(unsigned(splits), unsigned(p.n_head_kv), unsigned(p.n_rows * p.n_seq)); }

}  // namespace

DecodeWorkspace::~DecodeWorkspace() {
    if (data_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(data_));
    if (expanded_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(expanded_));
    if (counters_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(counters_));
}

int* DecodeWorkspace::counters(size_t n) {
    if (n <= counters_n_) return counters_;
    if (counters_ != nullptr) {
        MUSTAFAR_CUDA_OK(cudaDeviceSynchronize());  // queued kernels may still count in the old array
        MUSTAFAR_CUDA_OK(cudaFree(counters_));
        counters_ = nullptr;
        counters_n_ = 0;
    }
    void* c = nullptr;
    if (!MUSTAFAR_CUDA_OK(cudaMalloc(&c, n * sizeof(int)))) return nullptr;
    if (!MUSTAFAR_CUDA_OK(cudaMemset(c, 0, n * sizeof(int))) || !MUSTAFAR_CUDA_OK(cudaDeviceSynchronize())) {
        MUSTAFAR_CUDA_OK(cudaFree(c));
        return nullptr;
    }
    counters_ = static_cast<int*>(c);
    counters_n_ = n;
    return counters_;
}

void* DecodeWorkspace::expanded(size_t bytes) {
    if (bytes <= expanded_bytes_) return expanded_;
    if (expanded_ != nullptr) {
        MUSTAFAR_CUDA_OK(cudaDeviceSynchronize());  // queued kernels may still read the old copy
        MUSTAFAR_CUDA_OK(cudaFree(expanded_));
        expanded_ = nullptr;
        expanded_bytes_ = 0;
    }
    // A prompt's cache view grows micro-batch by micro-batch: room for the next few.
    const size_t want = std::min(expanded_limit_, std::max(bytes, bytes + bytes / 2));
    if (cudaMalloc(&expanded_, want) != cudaSuccess) {
        cudaGetLastError();  // not left for the next launch's check
        expanded_ = nullptr;
        if (!warned_expanded_)  // every layer of every micro-batch asks again: once is enough to say so
            ggml_log_internal(GGML_LOG_LEVEL_WARN,
                              "%s: no room for a %zu-byte expanded copy of a layer's cache: prompts over the store expand their tiles in the attention kernel\n",
                              kDeviceName, want);
        warned_expanded_ = true;
        return nullptr;
    }
    expanded_bytes_ = want;
    return expanded_;
}

void* DecodeWorkspace::get(size_t bytes) {
    if (bytes <= bytes_) return data_;
    forget_ranges();
    if (data_ != nullptr) {
        // The old scratch may still be in use by queued kernels.
        MUSTAFAR_CUDA_OK(cudaDeviceSynchronize());
        MUSTAFAR_CUDA_OK(cudaFree(data_));
        data_ = nullptr;
        bytes_ = 0;
    }
    if (!MUSTAFAR_CUDA_OK(cudaMalloc(&data_, bytes))) {
        data_ = nullptr;
        return nullptr;
    }
    bytes_ = bytes;
    return data_;
}

bool decode_supported(int head_dim, int n_head, int n_head_kv) {
    if (n_head_kv <= 0 || n_head % n_head_kv != 0) return false;
    const int g = n_head / n_head_kv;
    return (head_dim == 64 || head_dim == 128 || head_dim == 256) && (g == 1 || g == 2 || g == 4 || g == 8);
}

bool compressed_supported(const CompressedCache& c, int head_dim) {
    return c.k_stride % 16 == 0 && c.v_stride % 16 == 0 && c.pool_row_bytes % 16 == 0 && head_dim % 32 == 0 &&
           c.k_stride >= size_t(head_dim / 8 + 2 * c.k_kept) && c.v_stride >= size_t(head_dim / 8 + 2 * c.v_kept);
}

int DecodeWorkspace::blocks_per_sm(const void* kernel, size_t smem) {
    for (const Occupancy& o : occupancy_)
        if (o.kernel == kernel && o.smem == smem) return o.blocks;
    int blocks = 0;
    if (!MUSTAFAR_CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, smem))) blocks = 1;
    occupancy_.push_back({kernel, smem, std::max(blocks, 1)});
    return occupancy_.back().blocks;
}

bool DecodeWorkspace::allow_smem(const void* kernel, size_t smem) {
    auto it = std::find_if(smem_limits_.begin(), smem_limits_.end(), [&](const auto& e) { return e.first == kernel; });
    if (it != smem_limits_.end() && it->second >= smem) return true;
    if (!MUSTAFAR_CUDA_OK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)))) return false;
    if (it != smem_limits_.end()) it->second = smem;
    else smem_limits_.emplace_back(kernel, smem);
    return true;
}

int decode_splits(const DecodeProblem& p, int resident_blocks) {
    const int64_t pairs = int64_t(p.n_head_kv) * p.n_rows * p.n_seq;
    // With a mask (a cache shared by the sequences of the batch) a row sees about n_kv / n_rows cells.
    const int64_t len = p.mask != nullptr ? std::max<int64_t>(1, p.n_kv / p.n_rows) : p.n_kv;
    // One wave of blocks: a second, partial wave would cost as much as the first.
    const int64_t want = std::max<int64_t>(1, resident_blocks / pairs);
    const int64_t most = std::max<int64_t>(1, len / 128);
    return int(std::min(want, most));
}

namespace {

// The tensor-core kernels for D = 64 and 128 (up to 8 query heads per KV head).
bool launch_mma(const DecodeProblem& p, const DenseCache& dc, const CompressedCache& cc, bool sparse, DecodeWorkspace& ws, int sm_count,
                cudaStream_t stream, int splits) {
    const bool packed = sparse && p.n_head / p.n_head_kv <= 4;
    MmaFn fn = mma_fn(p.head_dim, sparse, packed, true);
    const size_t smem = mma_smem(p.head_dim, sparse, cc.k_stride + cc.v_stride);
    if (!ws.allow_smem(reinterpret_cast<const void*>(fn), smem)) return false;
    if (sparse && ws.blocks_per_sm(reinterpret_cast<const void*>(fn), smem) < 4) {
        fn = mma_fn(p.head_dim, sparse, packed, false);
        if (!ws.allow_smem(reinterpret_cast<const void*>(fn), smem)) return false;
    }
    const int64_t resident = int64_t(ws.blocks_per_sm(reinterpret_cast<const void*>(fn), smem)) * sm_count;
    if (splits <= 0) splits = decode_splits(p, int(resident));
    const Prepared pr = prepare(p, splits, true, ws, stream);
    if (!pr.ok) return false;
    // The splits merge inside the kernel; a quarter of the splits (at most 8) share the merge from 16 splits on,
    // when all blocks are resident.
    int* counters = nullptr;
    const size_t G = size_t(p.n_head / p.n_head_kv);
    if (splits > 1) {
        counters = ws.counters(size_t(p.n_rows) * p.n_seq * p.n_head_kv);
        if (counters == nullptr) return false;
    }
    const int64_t blocks = int64_t(splits) * p.n_head_kv * p.n_rows * p.n_seq;
    int mergers = blocks <= resident && splits >= 16 ? std::min(kMaxMergers, splits / 4) : 1;
    // Over the dense cache from compute capability 9.0 on, a lone merger takes its group's partials by a bulk
    // copy where they fit in the kernel's shared memory (merge_bulk).
    if (!sparse && mergers == 1 && counters != nullptr && hopper_or_newer() &&
        merge_bulk_floats(p.head_dim, int(G), splits) * sizeof(float) <= mma_body_bytes(p.head_dim, false, 0))
        mergers = 0;
    TileLists tl = pr.tiles;
    tl.ranges = pr.ranges;
    launch_kernel(fn, grid_of(p, splits), kThreads, smem, stream, p, dc, cc, tl, pr.part, splits, counters, mergers);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());  // the kernel merges its splits
}

// From this many query rows on (a prompt's micro-batch), rows share K and V in the prompt kernel.
constexpr int kPromptMinRows = 32;

// A lane's C = D / 32 channels [C lane, C lane + C) of a record (global memory, 16-byte aligned), pruned ones
// 0, as f16 pairs, in three steps that a warp runs for several records side by side: the bitmap (one load),
// the lane's bits and the kept values below them (popcounts) with its at most C kept values (one to three
// 4-byte loads inside the record), then byte permutes that place them. No lane waits on another's progress,
// and no load on an address the one before it moved (expand_half walks a run of channels that way).
template <int D>
struct LaneExpand {
    static_assert(D == 64 || D == 128, "bitmaps of 64 or 128 bits");
    static constexpr int C = D / 32, kLanesPerWord = 32 / C;
    uint32_t w[D / 32];  // the bitmap, then w[0..2]: the words that hold the lane's values
    uint32_t bits = 0;
    int below = 0;

    __device__ __forceinline__ void load_bitmap(const uint8_t* rec) {
        if constexpr (D == 128) {
            const uint4 b = __ldg(reinterpret_cast<const uint4*>(rec));
            w[0] = b.x, w[1] = b.y, w[2] = b.z, w[3] = b.w;
        } else {
            const uint2 b = __ldg(reinterpret_cast<const uint2*>(rec));
            w[0] = b.x, w[1] = b.y;
        }
    }
    __device__ __forceinline__ void load_values(const uint8_t* rec, int lane) {
        const int wi = lane / kLanesPerWord, sh = C * (lane % kLanesPerWord);
        uint32_t word = w[0];
#pragma unroll
        for (int j = 1; j < D / 32; ++j) {  // chosen without indexing by wi (that would go to local memory)
            below += j <= wi ? __popc(w[j - 1]) : 0;
            word = j == wi ? w[j] : word;
        }
        below += __popc(word & ((1u << sh) - 1u));
        bits = (word >> sh) & ((1u << C) - 1u);
        const int n = __popc(bits);
        // Values [below, below + n) are halfwords of the words from below / 2 on: at most C / 2 + 1 of them.
        const uint32_t* vw = reinterpret_cast<const uint32_t*>(rec + D / 8) + below / 2;
        const int last = n == 0 ? -1 : ((below + n - 1) >> 1) - (below >> 1);  // the words' count - 1
#pragma unroll
        for (int j = 0; j <= C / 2; ++j) w[j] = last >= j ? __ldg(vw + j) : 0u;
    }
    __device__ __forceinline__ void place(uint32_t (&out)[D / 64]) const {
        const bool odd = below & 1;
        const uint32_t lo = odd ? __funnelshift_r(w[0], w[1], 16) : w[0];  // values below, below + 1
        const uint32_t b0 = bits & 1u, b1 = (bits >> 1) & 1u;
        // Channel 0 takes value 0, channel 1 value b0 (bytes 2 b0, 2 b0 + 1); pruned channels are masked to 0.
        const uint32_t sel01 = 0x10u | (2u * b0) << 8 | (2u * b0 + 1u) << 12;
        const uint32_t m01 = (b0 ? 0xffffu : 0u) | (b1 ? 0xffff0000u : 0u);
        if constexpr (C == 2) {
            out[0] = __byte_perm(lo, 0u, sel01) & m01;
        } else {
            const uint32_t hi = odd ? __funnelshift_r(w[1], w[2], 16) : w[1];  // values below + 2, below + 3
            const uint32_t b2 = (bits >> 2) & 1u, b3 = bits >> 3, k2 = b0 + b1, k3 = k2 + b2;
            const uint32_t sel23 = (2u * k2) | (2u * k2 + 1u) << 4 | (2u * k3) << 8 | (2u * k3 + 1u) << 12;
            const uint32_t m23 = (b2 ? 0xffffu : 0u) | (b3 ? 0xffff0000u : 0u);
            out[0] = __byte_perm(lo, hi, sel01) & m01;
            out[1] = __byte_perm(lo, hi, sel23) & m23;
        }
    }
};

// The store's cells that a prompt's copy holds (CopyPlan) into dense f16 rows in ggml's layout (row r of KV
// head h of sequence index s at ((s * cap + r) * n_head_kv + h) * D). A warp takes kCopyCells
// consecutive cells of one head's K or V at a time (grid y: head and K or V), every lane a share of each
// row's channels (LaneExpand), window cells copied from the pool; each row is one 2D-byte store.
// H200, 32K cells of Llama-3-8B's 8 heads, s = 0.7: 281 us with a thread per half record walking its
// channels (expand_half) after staging a block's 32 cells in shared memory.
constexpr int kCopyCells = 4;
template <int D>
__global__ void __launch_bounds__(kThreads) expand_kernel(CompressedCache cc, int64_t n_kv, int n_head_kv, __half* k_out, __half* v_out, CopyPlan plan) {
    start_after_previous();
    const int hk = blockIdx.y / 2, kv = blockIdx.y % 2, seq = blockIdx.z, lane = threadIdx.x % 32;
    static_assert(kPromptTile % kCopyCells == 0, "a warp's cells lie in one tile of a packed copy");
    const bool packed = plan.rank != nullptr;
    int n_tiles = 0;
    if (packed && !copy_holds(plan, seq, n_tiles)) return;  // the store's prompt kernel takes it
    const int64_t end = packed ? n_kv : min(n_kv, plan.first + plan.cap), rows = packed ? int64_t(n_tiles) * kPromptTile : end - plan.first;
    const int* const order = packed ? plan.order + int64_t(seq) * plan.tiles : nullptr;
    const int32_t* const slots = (kv == 0 ? cc.k_slot : cc.v_slot) + int64_t(seq) * cc.seq_rows;
    const uint8_t* const records = (kv == 0 ? cc.k_records + hk * cc.k_head_bytes : cc.v_records + hk * cc.v_head_bytes) +
                                   size_t(int64_t(seq) * cc.seq_rows) * (kv == 0 ? cc.k_stride : cc.v_stride);
    const size_t stride = kv == 0 ? cc.k_stride : cc.v_stride;
    const char* const pool = (kv == 0 ? cc.k_pool : cc.v_pool) + size_t(hk) * D * 2;
    __half* const out = (kv == 0 ? k_out : v_out) + (size_t(seq) * size_t(plan.cap) * n_head_kv + hk) * D;
    const int64_t warps = int64_t(gridDim.x) * kWarps;
    for (int64_t r0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kCopyCells; r0 < rows; r0 += warps * kCopyCells) {
        const int64_t c0 = packed ? int64_t(__ldg(order + r0 / kPromptTile)) * kPromptTile + r0 % kPromptTile : plan.first + r0;
        if (c0 >= end) continue;  // the rows of a packed copy's last tile past n_kv (uniform in the warp)
        // Cells past the end repeat c0 (read, not written), so that every step below runs for all kCopyCells.
        int64_t cell[kCopyCells];
        int32_t slot[kCopyCells];
        LaneExpand<D> e[kCopyCells];
#pragma unroll
        for (int i = 0; i < kCopyCells; ++i) {
            cell[i] = c0 + i < end ? c0 + i : c0;
            slot[i] = __ldg(slots + cell[i]);
            e[i].load_bitmap(records + size_t(cell[i]) * stride);
        }
#pragma unroll
        for (int i = 0; i < kCopyCells; ++i) e[i].load_values(records + size_t(cell[i]) * stride, lane);
#pragma unroll
        for (int i = 0; i < kCopyCells; ++i) {
            uint32_t v[D / 64];
            if (slot[i] >= 0) {  // a window cell: its row is dense in the pool (its record's bytes are stale)
                const uint32_t* src = reinterpret_cast<const uint32_t*>(pool + size_t(slot[i]) * cc.pool_row_bytes) + lane * (D / 64);
#pragma unroll
                for (int j = 0; j < D / 64; ++j) v[j] = __ldg(src + j);
            } else {
                e[i].place(v);
            }
            uint32_t* dst = reinterpret_cast<uint32_t*>(out + size_t(r0 + i) * n_head_kv * D) + lane * (D / 64);
            if (c0 + i >= end) continue;
            if constexpr (D == 128) *reinterpret_cast<uint2*>(dst) = make_uint2(v[0], v[1]);
            else *dst = v[0];
        }
    }
}

bool launch_expand(const CompressedCache& cc, int head_dim, int n_head_kv, int n_seq, int64_t n_kv, const CopyPlan& plan, __half* k_out, __half* v_out,
                   DecodeWorkspace& ws, int sm_count, cudaStream_t stream) {
    const auto fn = head_dim == 64 ? expand_kernel<64> : expand_kernel<128>;
    // Two waves of blocks at most, each walking its share of the rows: over a packed copy, most of cap's rows
    // may be beyond the tiles a sequence index's rows see.
    const int64_t warp_jobs = (plan.cap + kCopyCells - 1) / kCopyCells, pairs = int64_t(2) * n_head_kv * n_seq;
    const int64_t resident = int64_t(ws.blocks_per_sm(reinterpret_cast<const void*>(fn), 0)) * sm_count;
    const int64_t blocks = std::max<int64_t>(1, std::min((warp_jobs + kWarps - 1) / kWarps, 2 * resident / pairs));
    launch_kernel(fn, dim3(unsigned(blocks), unsigned(2 * n_head_kv), unsigned(n_seq)), kThreads, 0, stream, cc, n_kv, n_head_kv, k_out, v_out, plan);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool launch_prompt_kernel(const DecodeProblem& p, const DenseCache& dc, const CompressedCache& cc, bool sparse, const Prepared& pr, const CopyPlan& plan,
                          DecodeWorkspace& ws, cudaStream_t stream) {
    const auto fn = p.head_dim == 64 ? (sparse ? prompt_kernel<64, true> : prompt_kernel<64, false>)
                                     : (sparse ? prompt_kernel<128, true> : prompt_kernel<128, false>);
    const size_t smem = prompt_smem(p.head_dim, sparse, cc.k_stride + cc.v_stride);
    if (!ws.allow_smem(reinterpret_cast<const void*>(fn), smem)) return false;
    const dim3 grid(unsigned((p.n_rows + kPromptRows - 1) / kPromptRows), unsigned(p.n_head), unsigned(p.n_seq));
    launch_kernel(fn, grid, kThreads, smem, stream, p, dc, cc, pr.ranges, plan, static_cast<const uint32_t*>(pr.live), pr.live_words);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

// A prompt (32 rows or more). Over the store it first expands the cells its rows see into a dense copy
// (DecodeWorkspace::expand_prompts) that the dense prompt kernel reads. The copy holds `cap` rows per
// sequence index, as many as the workspace's limit allows: with a mask, the range and order kernels
// collect the 32-cell tiles each sequence index's rows see, and the kernels decide on the device whose
// tiles the copy holds; the store's prompt kernel, expanding its own tiles, serves the others (its launch
// exits at once where all fit).
// Without a mask, or where the copy is off or cannot be allocated, the store's kernel serves all.
bool launch_prompt(const DecodeProblem& p, const DenseCache& dc, const CompressedCache& cc, bool sparse, DecodeWorkspace& ws, int sm_count,
                   cudaStream_t stream) {
    const bool masked = p.mask != nullptr;
    const Prepared pr = prepare(p, 1, false, ws, stream, sparse && ws.expands_prompts(), true);
    if (!pr.ok) return false;
    if (!sparse) return launch_prompt_kernel(p, dc, CompressedCache{}, false, pr, CopyPlan{}, ws, stream);
    const size_t row_bytes = size_t(p.n_head_kv) * p.head_dim * 2;
    // Whole tiles: a packed copy of every tile holds up to 31 rows past n_kv.
    const int64_t all = (p.n_kv + kPromptTile - 1) / kPromptTile * kPromptTile;
    const int64_t cap = std::min<int64_t>(all, int64_t(ws.expanded_limit() / (2 * size_t(p.n_seq) * row_bytes)));
    const bool copy = ws.expands_prompts() && cap > 0 && (masked || cap >= p.n_kv);
    const size_t half_bytes = size_t(p.n_seq) * size_t(cap) * row_bytes;
    auto* k = copy ? static_cast<char*>(ws.expanded(2 * half_bytes)) : nullptr;
    if (k == nullptr) return launch_prompt_kernel(p, DenseCache{}, cc, true, pr, CopyPlan{}, ws, stream);
    CopyPlan plan;
    plan.rank = pr.rank;
    plan.order = pr.order;
    plan.count = pr.count;
    plan.tiles = pr.tiles32;
    plan.cap = cap;
    if (!launch_expand(cc, p.head_dim, p.n_head_kv, p.n_seq, p.n_kv, plan, reinterpret_cast<__half*>(k), reinterpret_cast<__half*>(k + half_bytes), ws,
                       sm_count, stream))
        return false;
    DenseCache copy_dc;
    copy_dc.k = k;
    copy_dc.v = k + half_bytes;
    copy_dc.k_nb1 = copy_dc.v_nb1 = row_bytes;
    copy_dc.k_nb2 = copy_dc.v_nb2 = size_t(p.head_dim) * 2;
    copy_dc.k_nb3 = copy_dc.v_nb3 = size_t(cap) * row_bytes;
    if (!launch_prompt_kernel(p, copy_dc, CompressedCache{}, false, pr, plan, ws, stream)) return false;
    return plan.rank == nullptr || cap == all || launch_prompt_kernel(p, DenseCache{}, cc, true, pr, plan, ws, stream);
}

bool use_mma(const DecodeProblem& p) { return p.head_dim == 64 || p.head_dim == 128; }

}  // namespace

bool expand_cells(const CompressedCache& cache, int head_dim, int n_head_kv, int n_seq, int64_t first, int64_t n, void* k_out, void* v_out,
                  DecodeWorkspace& ws, int sm_count, cudaStream_t stream) {
    if ((head_dim != 64 && head_dim != 128) || !compressed_supported(cache, head_dim) || first < 0 || n < 0 || first + n > INT_MAX) return false;
    if (n == 0 || n_seq == 0) return true;
    CopyPlan plan;
    plan.cap = n;
    plan.first = first;
    return launch_expand(cache, head_dim, n_head_kv, n_seq, first + n, plan, static_cast<__half*>(k_out), static_cast<__half*>(v_out), ws, sm_count, stream);
}

bool decode_attention_dense(const DecodeProblem& p, const DenseCache& c, DecodeWorkspace& ws, int sm_count, cudaStream_t stream, int splits) {
    if (!decode_supported(p.head_dim, p.n_head, p.n_head_kv)) return false;
    if (p.n_rows * p.n_seq == 0) return true;
    if (use_mma(p) && splits <= 0 && p.n_rows >= kPromptMinRows) return launch_prompt(p, c, CompressedCache{}, false, ws, sm_count, stream);
    if (use_mma(p)) return launch_mma(p, c, CompressedCache{}, false, ws, sm_count, stream, splits);
    const DenseFn fn = dense_fn(p.head_dim, p.n_head / p.n_head_kv);
    if (splits <= 0) splits = decode_splits(p, ws.blocks_per_sm(reinterpret_cast<const void*>(fn), 0) * sm_count);
    const Prepared pr = prepare(p, splits, true, ws, stream);
    if (!pr.ok) return false;
    launch_kernel(fn, grid_of(p, splits), kThreads, 0, stream, p, c, pr.tiles, pr.part, splits);
    if (!MUSTAFAR_CUDA_OK(cudaGetLastError())) return false;
    return merge(p, pr, splits, stream);
}

bool decode_attention_compressed(const DecodeProblem& p, const CompressedCache& c, DecodeWorkspace& ws, int sm_count, cudaStream_t stream,
                                 int splits) {
    if (!decode_supported(p.head_dim, p.n_head, p.n_head_kv) || !compressed_supported(c, p.head_dim)) return false;
    if (p.n_rows * p.n_seq == 0) return true;
    if (use_mma(p) && splits <= 0 && p.n_rows >= kPromptMinRows) return launch_prompt(p, DenseCache{}, c, true, ws, sm_count, stream);
    if (use_mma(p)) return launch_mma(p, DenseCache{}, c, true, ws, sm_count, stream, splits);
    const CompressedFn fn = compressed_fn(p.head_dim, p.n_head / p.n_head_kv);
    const size_t smem = size_t(kWarps) * 2 * kStepCells * (c.k_stride + c.v_stride);
    // Above 48 KB in all (finish() adds its static share) the kernel must opt in.
    if (!ws.allow_smem(reinterpret_cast<const void*>(fn), smem)) return false;
    if (splits <= 0) splits = decode_splits(p, ws.blocks_per_sm(reinterpret_cast<const void*>(fn), smem) * sm_count);
    const Prepared pr = prepare(p, splits, true, ws, stream);
    if (!pr.ok) return false;
    launch_kernel(fn, grid_of(p, splits), kThreads, smem, stream, p, c, pr.tiles, pr.part, splits);
    if (!MUSTAFAR_CUDA_OK(cudaGetLastError())) return false;
    return merge(p, pr, splits, stream);
}

}  // namespace mustafar::cuda
