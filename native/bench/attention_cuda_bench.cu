// GPU benchmark of decode attention, one layer of Llama-3-8B (32 query heads, 8 KV heads, D = 128),
// one query token per sequence: our flash-decoding over the dense f16 cache and over the Mustafar
// store at s = 0.5 and 0.7 (window of 32 dense cells per sequence), against the device-to-device
// copy bandwidth measured in the same run; prune + compress time per decode step; how many 32K
// sequences fit next to the model's weights. Caches smaller than 256 MB are rotated over several
// copies so that the L2 cache does not serve them. Writes a Markdown table.
// Usage: attention_cuda_bench <results.md> [commit]
//        attention_cuda_bench --one <s> <batch> <context> [splits] [window]   (one configuration, for a profiler; s = 0: dense;
//                                                                     window: the store's dense cells a sequence, 32 unless given)
//        attention_cuda_bench --prompt <s> <context> [causal] [expand]   (a 512-row prompt micro-batch; causal unless 0;
//                                                                        over the store, expand 0: tiles expanded in the prompt kernel)
//        attention_cuda_bench --prompt-shared <s> <context> <sequences> [expand]   (the same at the end of the last of
//                                                                        that many sequences of context cells in one cache)
//        attention_cuda_bench --compress   (a decode step's prune + compress, as the executor launches it and per store)
//        attention_cuda_bench --masked <s> <context> <visible> [reuse] [cold]   (batch-1 decode with a mask row hiding cells
//                                                          from visible on; reuse 1: the rows' ranges computed once, as a
//                                                          model's layers share them; cold 1: as --cold)
//        attention_cuda_bench --cold <s> <batch> <context> [splits] [window]   (as --one, each call timed alone after 256 MB
//                                                          read through the L2, as a layer's weights pass through it)
//        attention_cuda_bench --read <bytes>   (the plain read of that many bytes)
//        attention_cuda_bench --pattern <context>   (plain reads of batch 1's dense cache in the decode kernel's pattern and others)
//        attention_cuda_bench --walk <context>   (the decode kernel's walk of batch 1's dense cache without its work: 16-byte
//                                                asynchronous copies, row bulk copies, tensor copies)
#include <cuda.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/attention_decode.h"
#include "cuda/bulk_copy_cuda.h"
#include "kv/record.h"
#include "bench_cuda.h"

namespace {

namespace mc = mustafar::cuda;
using namespace mustafar::bench;
namespace kv = mustafar::kv;

constexpr int kHeads = 32, kHeadsKv = 8, kD = 128, kLayers = 32, kWindow = 32;
constexpr double kWeightBytes = 16.06e9;  // Llama-3-8B in f16
constexpr size_t kRotateBytes = size_t(256) << 20;

void fill(void* p, size_t n_halves, uint32_t seed) {
    fill_f16<<<4096, 256>>>(static_cast<__half*>(p), n_halves, seed, 2.0f);
    CK(cudaGetLastError());
}

double copy_bandwidth() {  // bytes read + written per second
    const size_t bytes = size_t(1) << 30;
    DevMem src(bytes), dst(bytes);
    CK(cudaMemset(src.p, 1, bytes));
    Timer t;
    const double us = t.us_per_call(10, [&](int) { CK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice)); });
    return 2.0 * double(bytes) / (us * 1e-6);
}

// --cold: attention_time() times each call alone, after a read that replaces the L2's contents (data and the
// kernels' code alike) with clean lines, as a layer's weights do, instead of calls back to back. The
// multiprocessors' own instruction caches stay warm (Nsight Compute's --cache-control all flushes those too).
bool g_cold = false;

// --masked with reuse: the rows' ranges and tile lists are computed by the first call and kept for the next ones,
// as a model's layers share one mask (DecodeWorkspace::reuse_ranges); without it every call computes them.
bool g_reuse = false;

// Plain loads (not read_all's streaming ones, which the L2 evicts first and so keep less of it).
__global__ void evict_l2(const uint4* x, size_t n, uint32_t* sink) {
    uint32_t acc = 0;
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) acc ^= x[i].x ^ x[i].w;
    if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;
}

template <typename F>
double attention_time(Timer& t, int reps, F&& call) {
    if (!g_cold) return t.us_per_call(reps, call);
    static DevMem scratch(kRotateBytes), sink(1024 * 4);
    Timer one;
    double us = 0;
    for (int i = -3; i < reps; ++i) {
        evict_l2<<<1024, 512>>>(scratch.as<uint4>(), kRotateBytes / 16, sink.as<uint32_t>());
        CK(cudaEventRecord(one.a));
        call(i + 3);
        CK(cudaEventRecord(one.b));
        CK(cudaEventSynchronize(one.b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, one.a, one.b));
        if (i >= 0) us += 1000.0 * ms;
    }
    return us / reps;
}

// Up to 64 copies, so that every point's rotation exceeds the L2: with 8, a batch-1 store at 4K and s = 0.7 (6.3 MB)
// rotated through 50 MB of the H200's 60 MB L2 (its time was the same with 41 copies: 13.2 us, 2026-12-02).
int copies_for(size_t bytes) { return int(std::max<size_t>(1, std::min<size_t>(64, (kRotateBytes + bytes - 1) / bytes))); }

// read_all over `bytes` (rotated copies), one call after another like the attention kernels (plain
// launches, without their programmatic dependent launch): the floor of the tables.
double read_time(size_t bytes, int sms) {
    const int copies = copies_for(bytes);
    std::vector<std::unique_ptr<DevMem>> bufs;
    for (int c = 0; c < copies; ++c) {
        bufs.push_back(std::make_unique<DevMem>(bytes));
        CK(cudaMemset(bufs.back()->p, c + 1, bytes));
    }
    DevMem sink(size_t(sms) * 4 * 4);
    Timer t;
    return t.us_per_call(50, [&](int i) {
        read_all<<<sms * 4, 512>>>(bufs[i % copies]->as<uint4>(), bytes / 16, sink.as<uint32_t>());
        CK(cudaGetLastError());
    });
}

// The dense decode kernel's access pattern without its work: block (split, group of HB KV heads) reads
// cells [c0, c1) of its split, per cell HB heads' K row parts and then V's (HB * 256 bytes each, at a
// stride of all heads' 2 KB), L 16-byte loads in flight per thread. HB = 8 reads whole cell rows.
template <int HB, int L>
__global__ void read_pattern(const uint4* k, const uint4* v, int64_t n_kv, int splits, uint32_t* sink) {
    constexpr int kPerCell = HB * kD * 2 / 16, kRow = kHeadsKv * kD * 2 / 16;  // 16-byte chunks
    const int64_t c0 = n_kv * blockIdx.x / splits, c1 = n_kv * (blockIdx.x + 1) / splits;
    const int64_t n = (c1 - c0) * 2 * kPerCell;
    const size_t head0 = size_t(blockIdx.y) * kPerCell;
    uint32_t acc = 0;
    for (int64_t i0 = threadIdx.x; i0 < n; i0 += int64_t(L) * blockDim.x) {
        uint4 r[L];
#pragma unroll
        for (int j = 0; j < L; ++j) {
            const int64_t i = i0 + int64_t(j) * blockDim.x;
            const int64_t cell = c0 + i / (2 * kPerCell);
            const int rest = int(i % (2 * kPerCell));
            const uint4* base = rest < kPerCell ? k : v;
            r[j] = i < n ? __ldcs(base + size_t(cell) * kRow + head0 + rest % kPerCell) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int j = 0; j < L; ++j) acc ^= r[j].x ^ r[j].y ^ r[j].z ^ r[j].w;
    }
    if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;  // keeps the loads
}

// µs per call of read_pattern<HB, L> over batch 1's dense cache of ctx cells (rotated copies), `blocks`
// blocks of `threads` threads in all.
template <int HB, int L>
double pattern_time(int64_t ctx, int blocks, int threads) {
    const size_t cache = size_t(ctx) * kHeadsKv * kD * 2;
    const int copies = copies_for(2 * cache);
    std::vector<std::unique_ptr<DevMem>> k, v;
    for (int c = 0; c < copies; ++c) {
        k.push_back(std::make_unique<DevMem>(cache));
        v.push_back(std::make_unique<DevMem>(cache));
        CK(cudaMemset(k.back()->p, c + 1, cache));
        CK(cudaMemset(v.back()->p, c + 2, cache));
    }
    const int groups = kHeadsKv / HB, splits = std::max(1, blocks / groups);
    DevMem sink(size_t(splits) * 4);
    Timer t;
    return t.us_per_call(50, [&](int i) {
        read_pattern<HB, L><<<dim3(unsigned(splits), unsigned(groups)), threads>>>(k[i % copies]->as<uint4>(), v[i % copies]->as<uint4>(), ctx, splits,
                                                                            sink.as<uint32_t>());
        CK(cudaGetLastError());
    });
}

#if CUDART_VERSION >= 12000  // tensor maps
// ---- The dense decode kernel's walk without its work (--walk) ----------------------------------------
// Grid (splits, KV heads) of 128 threads; warp w of a block takes its split's 16-cell steps w, w + 4, ...
// with S steps (K and V, 8 KB) in flight, brought by one of three copy kinds:
//   0: 16-byte asynchronous copies, the kernel's (lane: chunk l % 16 of rows l / 16 + 2 i), commit groups;
//   1: one bulk copy per cell row (lanes 0-15 K, 16-31 V), an mbarrier per stage;
//   2: tensor copies (lane 0: K's and V's channels 0-63 and 64-127 of the 16 cells, 128-byte swizzle).
// A step "uses" its buffer by one 16-byte read a lane.
struct WalkMaps {
    CUtensorMap k, v;
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900  // its callers are sm_90 code only
__device__ __forceinline__ unsigned walk_smem(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
#endif

template <int kKind, int S>
__global__ void __launch_bounds__(128) walk_kernel(const __grid_constant__ WalkMaps maps, const char* k, const char* v, int64_t n_kv, int splits,
                                                   uint32_t* sink) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(1024) uint8_t smem[];
    constexpr int kStep = 2 * 16 * kD * 2;  // K and V of 16 cells
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, hk = blockIdx.y;
    const int64_t c0 = n_kv * blockIdx.x / splits, c1 = n_kv * (blockIdx.x + 1) / splits, steps = (c1 - c0 + 15) / 16;
    uint8_t* mine = smem + size_t(warp) * S * kStep;
    const unsigned bars = walk_smem(smem + 4 * S * kStep) + 8u * unsigned(warp * S);
    if (kKind != 0 && lane == 0)
        for (int b = 0; b < S; ++b) mustafar::cuda::barrier_init(bars + 8u * b);
    __syncwarp();
    const size_t row = size_t(kHeadsKv) * kD * 2;  // a cell's K (or V) row: all heads
    auto issue = [&](int64_t st, int buf) {
        const int64_t base = c0 + 16 * st;
        const unsigned dst = walk_smem(mine + size_t(buf) * kStep);
        if constexpr (kKind == 0) {
            const int r = lane / 16, ch = lane % 16;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const int64_t cell = base + r + 2 * i;
                if (cell < c1) {
                    const size_t off = size_t(cell) * row + size_t(hk) * kD * 2 + ch * 16;
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + unsigned((r + 2 * i) * 256 + ch * 16)), "l"(k + off) : "memory");
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + 4096u + unsigned((r + 2 * i) * 256 + ch * 16)), "l"(v + off)
                                 : "memory");
                }
            }
            asm volatile("cp.async.commit_group;\n" ::: "memory");
        } else {
            const unsigned bar = bars + 8u * buf, cells = unsigned(min(int64_t(16), c1 - base));
            // A tensor copy's box always lands whole (cells past the tensor as zeros): 8 KB.
            if (lane == 0) mustafar::cuda::expect_bytes(bar, kKind == 2 ? 8192u : cells * 2u * kD * 2u);
            if constexpr (kKind == 1) {
                if (unsigned(lane % 16) < cells) {
                    const size_t off = size_t(base + lane % 16) * row + size_t(hk) * kD * 2;
                    mustafar::cuda::bulk_copy(dst + (lane >= 16 ? 4096u : 0u) + unsigned(lane % 16) * 256u, (lane < 16 ? k : v) + off, kD * 2, bar);
                }
            } else if (lane == 0) {
                // Boxes of 64 channels x 1 head x 16 cells: two for K (channels 0-63, 64-127), two for V. Cells
                // past n_kv are filled with zeros by the copy engine and still counted; the split's last step
                // may read the next split's cells (counted too).
                for (int j = 0; j < 4; ++j) {
                    const CUtensorMap* m = j < 2 ? &maps.k : &maps.v;
                    asm volatile(
                        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
                            dst + unsigned(j) * 2048u),
                        "l"(reinterpret_cast<uint64_t>(m)), "r"((j % 2) * 64), "r"(hk), "r"(int(base)), "r"(bar)
                        : "memory");
                }
            }
        }
    };
    (void)maps;
    int64_t st = warp;
    for (int b = 0; b < S; ++b) {
        if (st + 4 * b < steps) {
            issue(st + 4 * b, b);
        } else if constexpr (kKind == 0) {
            asm volatile("cp.async.commit_group;\n" ::: "memory");
        }
    }
    uint32_t acc = 0, parity = 0;
    int buf = 0;
    for (; st < steps; st += 4) {
        if constexpr (kKind == 0) {
            asm volatile("cp.async.wait_group %0;\n" ::"n"(S - 1) : "memory");
        } else {
            mustafar::cuda::wait_phase(bars + 8u * buf, (parity >> buf) & 1u);
            parity ^= 1u << buf;
        }
        __syncwarp();
        const uint4 x = *reinterpret_cast<const uint4*>(mine + size_t(buf) * kStep + lane * 16);
        acc ^= x.x ^ x.w;
        __syncwarp();
        if (st + 4 * S < steps) {
            issue(st + 4 * S, buf);
        } else if constexpr (kKind == 0) {
            asm volatile("cp.async.commit_group;\n" ::: "memory");
        }
        buf = buf + 1 == S ? 0 : buf + 1;
    }
    if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;
#else
    (void)maps, (void)k, (void)v, (void)n_kv, (void)splits, (void)sink;
#endif
}

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// A dense cache's K or V (ctx cells of kHeadsKv heads of kD f16 channels) as boxes of 64 channels x 1 head x 16 cells.
CUtensorMap cache_map(void* base, int64_t ctx) {
    static EncodeTiled encode = [] {
        void* fn = nullptr;
        cudaDriverEntryPointQueryResult q{};
#if CUDART_VERSION >= 12050
        CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
#else
        CK(cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &q));
#endif
        if (fn == nullptr) {
            std::fprintf(stderr, "cuTensorMapEncodeTiled not found\n");
            std::exit(2);
        }
        return reinterpret_cast<EncodeTiled>(fn);
    }();
    CUtensorMap m;
    const cuuint64_t dims[3] = {cuuint64_t(kD), cuuint64_t(kHeadsKv), cuuint64_t(ctx)};
    const cuuint64_t strides[2] = {cuuint64_t(kD) * 2, cuuint64_t(kHeadsKv) * kD * 2};
    const cuuint32_t box[3] = {64, 1, 16}, elem[3] = {1, 1, 1};
    const CUresult r = encode(&m, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, base, dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        std::fprintf(stderr, "cuTensorMapEncodeTiled: error %d\n", int(r));
        std::exit(2);
    }
    return m;
}

// µs per call of walk_kernel<kind, S> over batch 1's dense cache of ctx cells (rotated copies), `per_sm`
// blocks a multiprocessor (33 splits at 2, as the decode kernel's launcher takes at 32K).
template <int kKind, int S>
double walk_time(int64_t ctx, int sms, int per_sm) {
    const size_t cache = size_t(ctx) * kHeadsKv * kD * 2;
    const int copies = copies_for(2 * cache);
    std::vector<std::unique_ptr<DevMem>> k, v;
    std::vector<WalkMaps> maps;
    for (int c = 0; c < copies; ++c) {
        k.push_back(std::make_unique<DevMem>(cache));
        v.push_back(std::make_unique<DevMem>(cache));
        fill(k.back()->p, cache / 2, 11u + c);
        fill(v.back()->p, cache / 2, 23u + c);
        maps.push_back({cache_map(k.back()->p, ctx), cache_map(v.back()->p, ctx)});
    }
    const int splits = std::max(1, per_sm * sms / kHeadsKv);
    const size_t smem = size_t(4) * S * 2 * 16 * kD * 2 + 4 * S * 8;
    const auto fn = walk_kernel<kKind, S>;
    CK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    DevMem sink(size_t(splits) * 4);
    Timer t;
    return t.us_per_call(50, [&](int i) {
        fn<<<dim3(unsigned(splits), unsigned(kHeadsKv)), 128, smem>>>(maps[i % copies], k[i % copies]->as<char>(), v[i % copies]->as<char>(), ctx,
                                                                     splits, sink.as<uint32_t>());
        CK(cudaGetLastError());
    });
}

#endif

// `rows` query rows per sequence (1: decode; a prompt's micro-batch), each seeing all ctx cells.
mc::DecodeProblem problem(int batch, int64_t ctx, const float* q, float* out, int rows) {
    mc::DecodeProblem p;
    p.head_dim = kD;
    p.n_head = kHeads;
    p.n_head_kv = kHeadsKv;
    p.n_rows = rows;
    p.n_seq = batch;
    p.n_kv = ctx;
    p.scale = 1.0f / std::sqrt(float(kD));
    p.q = reinterpret_cast<const char*>(q);
    p.q_nb1 = kD * 4;
    p.q_nb2 = p.q_nb1 * rows;
    p.q_nb3 = p.q_nb2 * kHeads;
    p.out = reinterpret_cast<char*>(out);
    p.out_nb1 = kD * 4;
    p.out_nb2 = p.out_nb1 * kHeads;
    p.out_nb3 = p.out_nb2 * rows;
    return p;
}

// One sequence's mask over ctx cells (batch 1): null keeps the problem unmasked.
mc::DecodeProblem with_mask(mc::DecodeProblem p, const char* mask) {
    if (mask == nullptr) return p;
    p.mask = mask;
    p.mask_nb1 = size_t(p.n_kv) * 2;
    p.mask_nb3 = p.mask_nb1 * p.n_rows;
    return p;
}

// A causal prompt micro-batch as llama.cpp masks it: `rows` tokens at the end of ctx cells, row r
// seeing cells [first, ctx - rows + r] (first > 0: the sequence's cells begin there in a shared cache).
std::unique_ptr<DevMem> causal_mask(int64_t ctx, int rows, int64_t first = 0) {
    std::vector<uint16_t> mask(size_t(ctx) * rows, 0xfc00u);
    for (int r = 0; r < rows; ++r) std::fill(mask.begin() + size_t(r) * ctx + first, mask.begin() + size_t(r) * ctx + ctx - rows + r + 1, uint16_t(0));
    auto d = std::make_unique<DevMem>(mask.size() * 2);
    CK(cudaMemcpy(d->p, mask.data(), mask.size() * 2, cudaMemcpyHostToDevice));
    return d;
}

struct Row {
    std::string kind;
    int batch;
    int64_t ctx;
    double us, bytes, target_us;
};

// llama.cpp's cache layout over K and V buffers of n_kv cells per sequence.
mc::DenseCache dense_cache(const DevMem& k, const DevMem& v, int64_t n_kv) {
    mc::DenseCache c;
    c.k = k.as<char>();
    c.v = v.as<char>();
    c.k_nb1 = c.v_nb1 = size_t(kHeadsKv) * kD * 2;
    c.k_nb2 = c.v_nb2 = size_t(kD) * 2;
    c.k_nb3 = c.v_nb3 = c.k_nb1 * n_kv;
    return c;
}

double dense_time(int batch, int64_t ctx, int sms, double* bytes_out, int rows = 1, int splits = 0, const char* mask = nullptr) {
    const size_t cache = size_t(batch) * ctx * kHeadsKv * kD * 2;  // K or V
    const int copies = copies_for(2 * cache);
    std::vector<std::unique_ptr<DevMem>> k, v;
    for (int c = 0; c < copies; ++c) {
        k.push_back(std::make_unique<DevMem>(cache));
        v.push_back(std::make_unique<DevMem>(cache));
        fill(k.back()->p, cache / 2, 17u * c + 1);
        fill(v.back()->p, cache / 2, 17u * c + 2);
    }
    const size_t qbytes = size_t(batch) * rows * kHeads * kD * 4;
    DevMem q(qbytes), out(qbytes);
    CK(cudaMemset(q.p, 0, qbytes));
    const mc::DecodeProblem p = with_mask(problem(batch, ctx, q.as<float>(), out.as<float>(), rows), mask);
    mc::DecodeWorkspace ws;
    ws.reuse_ranges(g_reuse);
    Timer t;
    const double us = attention_time(t, rows > 1 ? 10 : 50, [&](int i) {
        if (!mc::decode_attention_dense(p, dense_cache(*k[i % copies], *v[i % copies], ctx), ws, sms, nullptr, splits)) std::exit(3);
    });
    *bytes_out = 2.0 * double(cache);
    return us;
}

// One layer's Mustafar store for `batch` sequences of ctx cells: records made by our compress kernel
// from random vectors, each sequence's last `window` cells dense in the pool.
struct Store {
    kv::RecordLayout layout;
    int64_t rows = 0;  // records are head-major: head h's start rows * stride bytes after head h - 1's
    std::unique_ptr<DevMem> k, v, slot, k_pool, v_pool;
    double bytes = 0;  // what one attention call reads
};

Store make_store(int batch, int64_t ctx, double s, int window = kWindow) {
    Store st;
    st.layout = kv::make_layout(kD, s);
    const int64_t rows = st.rows = int64_t(batch) * ctx;
    const size_t rec_bytes = size_t(rows) * kHeadsKv * st.layout.stride, row_bytes = size_t(kHeadsKv) * kD * 2;
    st.k = std::make_unique<DevMem>(rec_bytes);
    st.v = std::make_unique<DevMem>(rec_bytes);
    // Compress in chunks of rows from a random dense chunk.
    const int64_t chunk = std::min<int64_t>(rows, 65536);
    DevMem dense(size_t(chunk) * row_bytes), src_rows(size_t(chunk) * 4), dst_rows(size_t(chunk) * 4);
    std::vector<int32_t> idx(chunk);
    for (int64_t i = 0; i < chunk; ++i) idx[i] = int32_t(i);
    CK(cudaMemcpy(src_rows.p, idx.data(), size_t(chunk) * 4, cudaMemcpyHostToDevice));
    for (int64_t r0 = 0, n = 0; r0 < rows; r0 += chunk, ++n) {
        const int64_t m = std::min(chunk, rows - r0);
        for (int64_t i = 0; i < m; ++i) idx[i] = int32_t(r0 + i);
        CK(cudaMemcpy(dst_rows.p, idx.data(), size_t(m) * 4, cudaMemcpyHostToDevice));
        for (int kvi = 0; kvi < 2; ++kvi) {
            fill(dense.p, size_t(m) * row_bytes / 2, uint32_t(2 * n + kvi + 1));
            if (!mc::compress_rows(dense.as<char>(), row_bytes, src_rows.as<int32_t>(), dst_rows.as<int32_t>(), int(m), kHeadsKv, kD, st.layout.kept,
                                   st.layout.stride, size_t(rows) * st.layout.stride, (kvi == 0 ? st.k : st.v)->as<uint8_t>(), nullptr))
                std::exit(3);
        }
        CK(cudaDeviceSynchronize());
    }
    std::vector<int32_t> slot(rows, -1);
    for (int b = 0; b < batch; ++b)
        for (int w = 0; w < window; ++w) slot[size_t(b) * ctx + ctx - window + w] = b * window + w;
    st.slot = std::make_unique<DevMem>(size_t(rows) * 4);
    CK(cudaMemcpy(st.slot->p, slot.data(), size_t(rows) * 4, cudaMemcpyHostToDevice));
    st.k_pool = std::make_unique<DevMem>(size_t(batch) * window * row_bytes);
    st.v_pool = std::make_unique<DevMem>(size_t(batch) * window * row_bytes);
    fill(st.k_pool->p, size_t(batch) * window * row_bytes / 2, 99);
    fill(st.v_pool->p, size_t(batch) * window * row_bytes / 2, 98);
    const double compressed = double(batch) * (ctx - window) * kHeadsKv * 2.0 * double(st.layout.stride);
    st.bytes = compressed + double(batch) * window * 2.0 * double(row_bytes) + double(rows) * 4;
    return st;
}

// The kernel's view of a store whose sequences hold seq_rows rows each.
mc::CompressedCache compressed_cache(const Store& st, int64_t seq_rows) {
    mc::CompressedCache c;
    c.k_records = st.k->as<uint8_t>();
    c.v_records = st.v->as<uint8_t>();
    c.k_kept = c.v_kept = st.layout.kept;
    c.k_stride = c.v_stride = st.layout.stride;
    c.k_head_bytes = c.v_head_bytes = size_t(st.rows) * st.layout.stride;
    c.k_slot = c.v_slot = st.slot->as<int32_t>();
    c.k_pool = st.k_pool->as<char>();
    c.v_pool = st.v_pool->as<char>();
    c.pool_row_bytes = size_t(kHeadsKv) * kD * 2;
    c.seq_rows = seq_rows;
    return c;
}

double compressed_time(int batch, int64_t ctx, double s, int sms, double* bytes_out, int rows = 1, int splits = 0, const char* mask = nullptr,
                       bool expand = true, int window = kWindow) {
    const size_t one = size_t(batch) * ctx * kHeadsKv * 2 * kv::make_layout(kD, s).stride;
    const int copies = copies_for(one);
    std::vector<Store> stores;
    for (int c = 0; c < copies; ++c) stores.push_back(make_store(batch, ctx, s, window));
    const size_t qbytes = size_t(batch) * rows * kHeads * kD * 4;
    DevMem q(qbytes), out(qbytes);
    CK(cudaMemset(q.p, 0, qbytes));
    const mc::DecodeProblem p = with_mask(problem(batch, ctx, q.as<float>(), out.as<float>(), rows), mask);
    mc::DecodeWorkspace ws;
    ws.expand_prompts(expand);
    ws.reuse_ranges(g_reuse);
    Timer t;
    const double us = attention_time(t, rows > 1 ? 10 : 50, [&](int i) {
        if (!mc::decode_attention_compressed(p, compressed_cache(stores[i % copies], ctx), ws, sms, nullptr, splits)) std::exit(3);
    });
    *bytes_out = stores[0].bytes;
    return us;
}

// A batched decode as llama.cpp runs it: 8 sequences of `ctx` cells share one cache, each prompt one
// run of cells, then 64 decode cells per sequence interleaved at the end; row r's mask shows its run
// and its decode cells. s = 0: the dense cache; else the store (the last kWindow cells dense).
double shared_cache_time(int64_t ctx, double s, int sms) {
    constexpr int kSeqs = 8, kDecoded = 64;
    const int64_t n_kv = kSeqs * (ctx + kDecoded), prompt = kSeqs * ctx;
    std::vector<uint16_t> mask(size_t(n_kv) * kSeqs, 0xfc00u);
    for (int r = 0; r < kSeqs; ++r)
        for (int64_t c = 0; c < n_kv; ++c)
            if ((c >= r * ctx && c < (r + 1) * ctx) || (c >= prompt && (c - prompt) % kSeqs == r)) mask[size_t(r) * n_kv + c] = 0;
    DevMem dmask(mask.size() * 2);
    CK(cudaMemcpy(dmask.p, mask.data(), mask.size() * 2, cudaMemcpyHostToDevice));
    const size_t qbytes = size_t(kSeqs) * kHeads * kD * 4;
    DevMem q(qbytes), out(qbytes);
    CK(cudaMemset(q.p, 0, qbytes));
    mc::DecodeProblem p = problem(1, n_kv, q.as<float>(), out.as<float>(), kSeqs);
    p.mask = dmask.as<char>();
    p.mask_nb1 = size_t(n_kv) * 2;
    p.mask_nb3 = p.mask_nb1 * kSeqs;
    mc::DecodeWorkspace ws;
    Timer t;
    if (s == 0.0) {
        const size_t cache = size_t(n_kv) * kHeadsKv * kD * 2;
        DevMem k(cache), v(cache);
        fill(k.p, cache / 2, 7);
        fill(v.p, cache / 2, 8);
        const mc::DenseCache c = dense_cache(k, v, n_kv);
        return t.us_per_call(20, [&](int) {
            if (!mc::decode_attention_dense(p, c, ws, sms, nullptr)) std::exit(3);
        });
    }
    const Store st = make_store(1, n_kv, s);
    const mc::CompressedCache c = compressed_cache(st, n_kv);
    return t.us_per_call(20, [&](int) {
        if (!mc::decode_attention_compressed(p, c, ws, sms, nullptr)) std::exit(3);
    });
}

// Prune + compress of a decode step as the CUDA executor launches it at the end of its graph (flush_deferred):
// each of the 64 stores (32 layers, K and V) retires `batch` rows, 16 stores a launch (compress_jobs).
double compress_jobs_us(int batch, double s, int reps) {
    constexpr int kStores = 2 * kLayers;
    const kv::RecordLayout l = kv::make_layout(kD, s);
    const size_t row_bytes = size_t(kHeadsKv) * kD * 2;
    std::vector<std::unique_ptr<DevMem>> pool, rec, slot;
    for (int i = 0; i < kStores; ++i) {
        pool.push_back(std::make_unique<DevMem>(size_t(batch) * row_bytes));
        fill(pool.back()->p, size_t(batch) * row_bytes / 2, 7u + unsigned(i));
        rec.push_back(std::make_unique<DevMem>(size_t(batch) * kHeadsKv * l.stride));
        slot.push_back(std::make_unique<DevMem>(size_t(batch) * 4));
    }
    Timer t;
    return t.us_per_call(reps, [&](int) {
        for (int first = 0; first < kStores; first += mc::kMaxJobs) {
            mc::CompressJobs jobs;
            for (int i = first; i < std::min(kStores, first + mc::kMaxJobs); ++i) {
                mc::CompressJob& j = jobs.job[jobs.n++];
                j.src = pool[i]->as<char>();
                j.src_row_bytes = row_bytes;
                j.records = rec[i]->as<uint8_t>();
                j.head_bytes = size_t(batch) * l.stride;
                j.stride = l.stride;
                j.slot_table = slot[i]->as<int32_t>();
                j.n_head_kv = kHeadsKv;
                j.head_dim = kD;
                j.kept = l.kept;
                j.n = batch;
                for (int r = 0; r < batch; ++r) j.src_rows[r] = j.dst_rows[r] = r;
            }
            if (!mc::compress_jobs(jobs, nullptr)) std::exit(3);
        }
    });
}

// Prune + compress of `n` rows in K and V of `layers` layers, one launch per store: a decode step (n = batch,
// all 32 layers; the executor's way before it batched the stores) or a whole prompt in one layer.
double compress_us(int64_t n, int layers, int reps, double s) {
    const kv::RecordLayout l = kv::make_layout(kD, s);
    const size_t row_bytes = size_t(kHeadsKv) * kD * 2;
    DevMem dense(size_t(n) * row_bytes), rec(size_t(n) * kHeadsKv * l.stride), rows(size_t(n) * 4);
    fill(dense.p, size_t(n) * row_bytes / 2, 5);
    std::vector<int32_t> idx(n);
    for (int64_t i = 0; i < n; ++i) idx[i] = int32_t(i);
    CK(cudaMemcpy(rows.p, idx.data(), size_t(n) * 4, cudaMemcpyHostToDevice));
    Timer t;
    return t.us_per_call(reps, [&](int) {
        for (int layer = 0; layer < layers; ++layer)
            for (int kvi = 0; kvi < 2; ++kvi)
                if (!mc::compress_rows(dense.as<char>(), row_bytes, rows.as<int32_t>(), rows.as<int32_t>(), int(n), kHeadsKv, kD, l.kept, l.stride, size_t(n) * l.stride,
                                       rec.as<uint8_t>(), nullptr))
                    std::exit(3);
    });
}

// How many 32K-token sequences (all 32 layers, K and V) fit in device memory next to the weights
// and 1 GiB of working memory, by allocating them.
int sequences_that_fit(double bytes_per_seq) {
    std::vector<void*> held;
    void* weights = nullptr;
    int n = -1;
    if (cudaMalloc(&weights, size_t(kWeightBytes) + (size_t(1) << 30)) == cudaSuccess) {
        n = 0;
        void* p = nullptr;
        while (cudaMalloc(&p, size_t(bytes_per_seq)) == cudaSuccess) {
            held.push_back(p);
            ++n;
        }
        cudaGetLastError();
    }
    for (void* p : held) cudaFree(p);
    if (weights != nullptr) cudaFree(weights);
    return n;
}

std::string ctx_name(int64_t ctx) { return std::to_string(ctx / 1024) + "K"; }

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::printf("usage: attention_cuda_bench <results.md> [commit]\n");
        return 2;
    }
    cudaDeviceProp prop{};
    if (!first_device(prop)) return 0;
    const int sms = prop.multiProcessorCount;
    if ((std::string(argv[1]) == "--one" || std::string(argv[1]) == "--cold") && argc >= 5) {
        g_cold = std::string(argv[1]) == "--cold";
        const double s = std::atof(argv[2]);
        const int batch = std::atoi(argv[3]);
        const int64_t ctx = std::atoll(argv[4]);
        const int splits = argc >= 6 ? std::atoi(argv[5]) : 0;  // 0: the launcher's choice
        const int window = argc >= 7 ? std::atoi(argv[6]) : kWindow;
        double bytes = 0;
        const double us = s == 0.0 ? dense_time(batch, ctx, sms, &bytes, 1, splits)
                                   : compressed_time(batch, ctx, s, sms, &bytes, 1, splits, nullptr, true, window);
        std::printf("%ss=%.2f b=%d ctx=%lld splits=%d: %.1f us, %.0f GB/s\n", g_cold ? "cold " : "", s, batch, (long long)ctx, splits, us, bytes / (us * 1e-6) / 1e9);
        return 0;
    }
    if (std::string(argv[1]) == "--masked" && argc >= 5) {
        // Batch-1 decode with a mask row, as in a model's graph: cells from `visible` on hidden; then optionally
        // reuse (1: the ranges computed once, g_reuse) and cold (1: as --cold).
        const double s = std::atof(argv[2]);
        const int64_t ctx = std::atoll(argv[3]), visible = std::atoll(argv[4]);
        g_reuse = argc >= 6 && std::atoi(argv[5]) != 0;
        g_cold = argc >= 7 && std::atoi(argv[6]) != 0;
        std::vector<uint16_t> row(size_t(ctx), 0xfc00u);
        std::fill(row.begin(), row.begin() + std::min(visible, ctx), uint16_t(0));
        DevMem mask(row.size() * 2);
        CK(cudaMemcpy(mask.p, row.data(), row.size() * 2, cudaMemcpyHostToDevice));
        double bytes = 0;
        const double us = s == 0.0 ? dense_time(1, ctx, sms, &bytes, 1, 0, mask.as<char>()) : compressed_time(1, ctx, s, sms, &bytes, 1, 0, mask.as<char>());
        std::printf("%s%smasked s=%.2f ctx=%lld visible=%lld: %.1f us\n", g_cold ? "cold " : "", g_reuse ? "reused " : "", s, (long long)ctx,
                    (long long)visible, us);
        return 0;
    }
    if (std::string(argv[1]) == "--compress") {
        // A decode step's prune + compress (32 layers, K and V), as the executor launches it and one launch per store.
        for (double s : {0.5, 0.7})
            for (int batch : {1, 8})
                std::printf("compress s=%.1f b=%d: %.1f us a step, 16 stores a launch; %.1f us one launch per store\n", s, batch,
                            compress_jobs_us(batch, s, 20), compress_us(batch, kLayers, 20, s));
        return 0;
    }
    if (std::string(argv[1]) == "--prompt" && argc >= 4) {
        // A prompt micro-batch of 512 rows over ctx cells, causal unless the fourth argument is 0.
        const double s = std::atof(argv[2]);
        const int64_t ctx = std::atoll(argv[3]);
        const bool causal = argc < 5 || std::atoi(argv[4]) != 0, expand = argc < 6 || std::atoi(argv[5]) != 0;
        constexpr int kRows = 512;
        const std::unique_ptr<DevMem> mask = causal ? causal_mask(ctx, kRows) : nullptr;
        const char* m = mask ? mask->as<char>() : nullptr;
        double bytes = 0;
        const double us = s == 0.0 ? dense_time(1, ctx, sms, &bytes, kRows, 0, m) : compressed_time(1, ctx, s, sms, &bytes, kRows, 0, m, expand);
        // Useful work: Q K^T and P V over the cells each row sees.
        const double cells = causal ? double(kRows) * double(ctx - kRows) + double(kRows) * (kRows + 1) / 2.0 : double(kRows) * double(ctx);
        const double tflops = 4.0 * kD * kHeads * cells / (us * 1e-6) / 1e12;
        std::printf("prompt s=%.2f rows=%d ctx=%lld %s%s: %.1f us, %.0f TFLOPS\n", s, kRows, (long long)ctx, causal ? "causal" : "unmasked",
                    s != 0.0 && !expand ? " (tiles expanded in the kernel)" : "", us, tflops);
        return 0;
    }
    if (std::string(argv[1]) == "--prompt-shared" && argc >= 5) {
        // The last of `seqs` sequences of ctx cells in one cache (filled one after the other, as the chat
        // client's scheduler fills prompts) takes a 512-row micro-batch at the end of its cells.
        const double s = std::atof(argv[2]);
        const int64_t ctx = std::atoll(argv[3]), seqs = std::atoll(argv[4]), n_kv = ctx * seqs;
        const bool expand = argc < 6 || std::atoi(argv[5]) != 0;
        constexpr int kRows = 512;
        const std::unique_ptr<DevMem> mask = causal_mask(n_kv, kRows, n_kv - ctx);
        double bytes = 0;
        const double us = s == 0.0 ? dense_time(1, n_kv, sms, &bytes, kRows, 0, mask->as<char>())
                                   : compressed_time(1, n_kv, s, sms, &bytes, kRows, 0, mask->as<char>(), expand);
        std::printf("prompt s=%.2f rows=%d ctx=%lld of %lld sequences in one cache%s: %.1f us\n", s, kRows, (long long)ctx, (long long)seqs,
                    s != 0.0 && !expand ? " (tiles expanded in the kernel)" : "", us);
        return 0;
    }
    if (std::string(argv[1]) == "--pattern" && argc >= 3) {
        // Plain reads of batch 1's dense K and V (ctx cells) in the decode kernel's pattern and in others.
        const int64_t ctx = std::atoll(argv[2]);
        const double bytes = 2.0 * double(ctx) * kHeadsKv * kD * 2;
        auto line = [&](const char* what, double us) { std::printf("pattern ctx=%lld %s: %.1f us, %.0f GB/s\n", (long long)ctx, what, us, bytes / (us * 1e-6) / 1e9); };
        line("contiguous (read_all)", read_time(size_t(bytes), sms));
        line("1 head a block, 4 x 512 threads an SM, 4 loads a thread", pattern_time<1, 4>(ctx, 4 * sms, 512));
        line("2 heads a block, 4 x 512 threads an SM, 4 loads a thread", pattern_time<2, 4>(ctx, 4 * sms, 512));
        line("8 heads a block, 4 x 512 threads an SM, 4 loads a thread", pattern_time<8, 4>(ctx, 4 * sms, 512));
        line("1 head a block, 2 x 128 threads an SM, 16 loads a thread", pattern_time<1, 16>(ctx, 2 * sms, 128));
        line("8 heads a block, 2 x 128 threads an SM, 16 loads a thread", pattern_time<8, 16>(ctx, 2 * sms, 128));
        line("1 head a block, 2 x 128 threads an SM, 48 loads a thread", pattern_time<1, 48>(ctx, 2 * sms, 128));
        return 0;
    }
#if CUDART_VERSION >= 12000
    if (std::string(argv[1]) == "--walk" && argc >= 3) {
        const int64_t ctx = std::atoll(argv[2]);
        const double bytes = 2.0 * double(ctx) * kHeadsKv * kD * 2;
        auto line = [&](const char* what, double us) { std::printf("walk ctx=%lld %s: %.1f us, %.0f GB/s\n", (long long)ctx, what, us, bytes / (us * 1e-6) / 1e9); };
        line("contiguous (read_all)", read_time(size_t(bytes), sms));
        line("16-byte copies, 3 steps a warp, 2 blocks an SM (the kernel's)", walk_time<0, 3>(ctx, sms, 2));
        line("16-byte copies, 6 steps a warp, 1 block an SM", walk_time<0, 6>(ctx, sms, 1));
        line("row bulk copies, 3 steps a warp, 2 blocks an SM", walk_time<1, 3>(ctx, sms, 2));
        line("tensor copies, 2 steps a warp, 2 blocks an SM", walk_time<2, 2>(ctx, sms, 2));
        line("tensor copies, 3 steps a warp, 2 blocks an SM", walk_time<2, 3>(ctx, sms, 2));
        line("tensor copies, 6 steps a warp, 1 block an SM", walk_time<2, 6>(ctx, sms, 1));
        line("tensor copies, 3 steps a warp, 1 block an SM", walk_time<2, 3>(ctx, sms, 1));
        return 0;
    }
#endif
    if (std::string(argv[1]) == "--read" && argc >= 3) {
        const size_t bytes = size_t(std::atoll(argv[2])) / 16 * 16;
        const double us = read_time(bytes, sms);
        std::printf("read %zu bytes: %.1f us, %.0f GB/s\n", bytes, us, double(bytes) / (us * 1e-6) / 1e9);
        return 0;
    }
    const double bw = copy_bandwidth();
    std::ostringstream md;
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
    md << "# Decode attention on the GPU: " << prop.name << ", " << date << "\n\n"
       << "Commit " << (argc > 2 ? argv[2] : "unknown") << ". Program: `native/bench/attention_cuda_bench.cu` (run by `tests/gpu/run.sh`).\n"
       << "One layer of Llama-3-8B attention (32 query heads, 8 KV heads, D = 128), one query token per sequence, f32 query and output.\n"
       << "Device-to-device copy bandwidth in this run: **" << fmt("%.2f", bw / 1e12) << " TB/s** (read + write).\n"
       << "Bandwidth columns: bytes the kernel must read (K and V; for the Mustafar store the records, the dense window and the slot array) per second.\n\n";

    // llama.cpp's f16 CUDA kernels on this H100 (issue 4) and the Mustafar targets (issue 5).
    const std::map<std::pair<int, int64_t>, double> llama_f16 = {{{1, 4096}, 25.7}, {{1, 32768}, 80.6}, {{1, 131072}, 264},
                                                                 {{8, 4096}, 70}, {{8, 32768}, 389}};
    const std::map<std::pair<int, int64_t>, double> sparse_target = {{{8, 32768}, 160}, {{1, 32768}, 45}, {{1, 131072}, 110}};

    md << "## Dense f16 cache (flash-decoding)\n\nPlain read: `read_all`, a kernel that only reads the same bytes, one call after another (plain launches; the floor).\n\n"
       << "| batch | context | time (µs) | GB/s | % of copy | plain read (µs) | llama.cpp f16 (µs) | verdict |\n|---|---|---|---|---|---|---|---|\n";
    std::printf("copy bandwidth %.2f TB/s\n", bw / 1e12);
    std::map<std::pair<int, int64_t>, double> dense_us;
    for (int batch : {1, 4, 8})
        for (int64_t ctx : {4096, 16384, 32768, 131072}) {
            double bytes = 0;
            const double us = dense_time(batch, ctx, sms, &bytes);
            const double read_us = read_time(size_t(bytes), sms);
            dense_us[{batch, ctx}] = us;
            const auto it = llama_f16.find({batch, ctx});
            const double pct = 100.0 * bytes / (us * 1e-6) / bw;
            std::string verdict = "-";
            if (it != llama_f16.end()) verdict = us <= it->second ? "faster" : "SLOWER";
            if (batch == 1 && ctx >= 32768) verdict += pct >= 80.0 ? ", >= 80 % of copy" : ", below 80 % of copy";
            md << "| " << batch << " | " << ctx_name(ctx) << " | " << fmt("%.1f", us) << " | " << fmt("%.0f", bytes / (us * 1e-6) / 1e9) << " | "
               << fmt("%.0f", pct) << " | " << fmt("%.1f", read_us) << " | " << (it != llama_f16.end() ? fmt("%.1f", it->second) : "-") << " | " << verdict
               << " |\n";
            std::printf("dense  b=%d ctx=%6lld %8.1f us %6.0f GB/s %3.0f %% (plain read %.1f us)\n", batch, (long long)ctx, us, bytes / (us * 1e-6) / 1e9, pct,
                        read_us);
        }

    md << "\n## Mustafar store (K and V at the same sparsity, 32 dense window cells per sequence)\n\n"
       << "| s | batch | context | time (µs) | GB/s | % of copy | speedup over our dense | target (µs) | verdict |\n|---|---|---|---|---|---|---|---|---|\n";
    for (double s : {0.5, 0.7})
        for (int batch : {1, 8})
            for (int64_t ctx : {4096, 32768, 131072}) {
                double bytes = 0;
                const double us = compressed_time(batch, ctx, s, sms, &bytes);
                const double pct = 100.0 * bytes / (us * 1e-6) / bw;
                const auto d = dense_us.find({batch, ctx});
                const auto tg = s == 0.7 ? sparse_target.find({batch, ctx}) : sparse_target.end();
                std::string verdict = "-";
                if (tg != sparse_target.end()) verdict = us <= tg->second ? "met" : "MISSED";
                if (s == 0.7 && batch == 8 && ctx == 32768) verdict += pct >= 85.0 ? ", >= 85 % of copy" : ", below 85 % of copy";
                md << "| " << s << " | " << batch << " | " << ctx_name(ctx) << " | " << fmt("%.1f", us) << " | " << fmt("%.0f", bytes / (us * 1e-6) / 1e9) << " | "
                   << fmt("%.0f", pct) << " | " << fmt("%.2fx", d->second / us) << " | " << (tg != sparse_target.end() ? fmt("%.0f", tg->second) : "-")
                   << " | " << verdict << " |\n";
                std::printf("s=%.1f  b=%d ctx=%6lld %8.1f us %6.0f GB/s %3.0f %% %.2fx\n", s, batch, (long long)ctx, us, bytes / (us * 1e-6) / 1e9, pct,
                            d->second / us);
            }

    // A prompt's later micro-batch: 512 query rows of one sequence over a cache that already holds ctx
    // cells (compressed ones in the store), all visible; the prompt kernel shares each tile among 64 rows.
    constexpr int kPromptRows = 512;
    md << "\n## Prompt attention: " << kPromptRows << " query rows of one sequence over a filled cache\n\n"
       << "| cache | context | time (µs) | time over dense |\n|---|---|---|---|\n";
    for (int64_t ctx : {4096, 32768}) {
        double bytes = 0;
        const double dense = dense_time(1, ctx, sms, &bytes, kPromptRows);
        md << "| dense f16 | " << ctx_name(ctx) << " | " << fmt("%.1f", dense) << " | 1.00x |\n";
        std::printf("prompt %d rows dense ctx=%6lld %9.1f us\n", kPromptRows, (long long)ctx, dense);
        for (double s : {0.5, 0.7}) {
            const double us = compressed_time(1, ctx, s, sms, &bytes, kPromptRows);
            md << "| Mustafar s = " << s << " | " << ctx_name(ctx) << " | " << fmt("%.1f", us) << " | " << fmt("%.2fx", us / dense) << " |\n";
            std::printf("prompt %d rows s=%.1f ctx=%6lld %9.1f us %.2fx dense\n", kPromptRows, s, (long long)ctx, us, us / dense);
        }
    }

    md << "\n## Batched decode over one shared cache (8 sequences, each row sees its prompt run and its decode cells)\n\n"
       << "| cache | context per sequence | time (µs) | same batch and context, one cache per sequence (µs) |\n|---|---|---|---|\n";
    for (double s : {0.0, 0.7}) {
        const int64_t ctx = 16384;
        const double us = shared_cache_time(ctx, s, sms);
        double bytes = 0;
        const double apart = s == 0.0 ? dense_us[{8, ctx}] : compressed_time(8, ctx, s, sms, &bytes);
        md << "| " << (s == 0.0 ? std::string("dense f16") : "Mustafar s = " + fmt("%.1f", s)) << " | " << ctx_name(ctx) << " | " << fmt("%.1f", us)
           << " | " << fmt("%.1f", apart) << " |\n";
        std::printf("shared cache s=%.1f 8 x %lld: %.1f us (apart: %.1f us)\n", s, (long long)ctx, us, apart);
    }

    md << "\n## Prune + compress\n\n| s | batch | per decode step, 32 layers, K and V (µs) | share of a 32K decode step | one launch per store (µs) | "
          "32K-token prompt, one layer (µs) |\n"
       << "|---|---|---|---|---|---|\n";
    for (double s : {0.5, 0.7})
        for (int batch : {1, 8}) {
            const double step = compress_jobs_us(batch, s, 20), per_store = compress_us(batch, kLayers, 20, s);
            double bytes = 0;
            // A decode step at 32K: 32 layers of sparse attention plus reading the f16 weights once.
            const double attn = compressed_time(batch, 32768, s, sms, &bytes);
            const double decode_step = kLayers * attn + kWeightBytes / bw * 2.0 * 1e6;
            const double prompt = compress_us(32768, 1, 10, s);
            md << "| " << s << " | " << batch << " | " << fmt("%.1f", step) << " | " << fmt("%.2f %%", 100.0 * step / decode_step) << " | "
               << fmt("%.1f", per_store) << " | " << fmt("%.0f", prompt) << " |\n";
            std::printf("compress s=%.1f b=%d step %.1f us (%.2f %% of %.0f us; one launch per store %.1f us), prompt 32K %.0f us\n", s, batch, step,
                        100.0 * step / decode_step, decode_step, per_store, prompt);
        }
    md << "\nA decode step here = 32 x the sparse attention time above + reading 16.06 GB of f16 weights at the copy bandwidth's read half. "
          "The step's compressions as the CUDA executor launches them: 16 stores a launch (compress_jobs).\n";

    const double dense_seq = double(kLayers) * 32768 * kHeadsKv * kD * 2 * 2;
    const kv::RecordLayout l7 = kv::make_layout(kD, 0.7);
    const double sparse_seq = double(kLayers) * (32768.0 * kHeadsKv * 2 * l7.stride + kWindow * 2.0 * kHeadsKv * kD * 2);
    const int n_dense = sequences_that_fit(dense_seq), n_sparse = sequences_that_fit(sparse_seq);
    md << "\n## 32K sequences that fit (all 32 layers, K and V), next to 16.06 GB of weights and 1 GiB of working memory\n\n"
       << "| cache | bytes per sequence | sequences allocated |\n|---|---|---|\n"
       << "| dense f16 | " << fmt("%.2f GB", dense_seq / 1e9) << " | " << n_dense << " |\n"
       << "| Mustafar s = 0.7 | " << fmt("%.2f GB", sparse_seq / 1e9) << " | " << n_sparse << " (" << fmt("%.2fx", double(n_sparse) / std::max(n_dense, 1))
       << ") |\n";
    std::printf("32K sequences that fit: dense %d, s=0.7 %d\n", n_dense, n_sparse);

    FILE* f = std::fopen(argv[1], "w");
    if (f == nullptr) {
        std::printf("cannot write %s\n", argv[1]);
        return 1;
    }
    std::fputs(md.str().c_str(), f);
    std::fclose(f);
    return 0;
}
