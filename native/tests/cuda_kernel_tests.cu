// GPU tests of the Mustafar CUDA kernels against their CPU twins: prune + compress byte for byte
// against kv::compress (ties included), and attention (flash-decoding and, for 32 rows or more with
// the split count left open, the prompt kernel) over the dense f16 cache and over the compressed store
// against attention computed in double on the CPU over the same vectors (records decompressed by
// kv::decompress). Exit code 0 when all pass. Usage: cuda_kernel_tests [seed]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/attention_decode.h"
#include "fp16.h"
#include "kv/record.h"
#include "checks.h"
#include "cuda_exit_on_error.h"

namespace {

using mustafar::fp16_to_fp32;
using mustafar::fp32_to_fp16;
namespace kv = mustafar::kv;
namespace mc = mustafar::cuda;

using mustafar::testing::check;
using mustafar::testing::g_checks;
using mustafar::testing::g_failed;

// Device copy of a host vector; freed on scope exit.
template <typename T>
struct Dev {
    T* p = nullptr;
    size_t n = 0;
    explicit Dev(const std::vector<T>& h) : n(h.size()) {
        CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
        CK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    }
    ~Dev() { cudaFree(p); }
    Dev(const Dev&) = delete;
    Dev& operator=(const Dev&) = delete;
    std::vector<T> down() const {
        std::vector<T> h(n);
        CK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
        return h;
    }
};

int sm_count() {
    cudaDeviceProp prop{};
    CK(cudaGetDeviceProperties(&prop, 0));
    return prop.multiProcessorCount;
}

// Values with many equal magnitudes (both signs, zeros): the tie rule matters.
uint16_t tied_value(std::mt19937_64& rng) {
    std::uniform_int_distribution<int> level(-6, 6);
    const int l = level(rng);
    if (l == 0) return (rng() & 1) ? 0x8000 : 0x0000;
    return fp32_to_fp16(0.25f * float(l));
}

void test_compress(std::mt19937_64& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int n = 50, heads = 3, rows = 64;
    for (int D : {8, 16, 40, 64, 128, 256}) {
        for (double s : {0.0, 0.3, 0.5, 0.7, 0.9}) {
            for (bool ties : {false, true}) {
                const kv::RecordLayout layout = kv::make_layout(D, s);
                std::vector<uint16_t> src(size_t(rows) * heads * D);
                for (auto& x : src) x = ties ? tied_value(rng) : fp32_to_fp16(normal(rng));
                std::vector<int32_t> src_rows(n), dst_rows(rows);
                for (auto& r : src_rows) r = int32_t(rng() % rows);
                std::iota(dst_rows.begin(), dst_rows.end(), 0);
                std::shuffle(dst_rows.begin(), dst_rows.end(), rng);
                dst_rows.resize(n);
                std::vector<uint8_t> expected(size_t(rows) * heads * layout.stride, 0xab);
                for (int i = 0; i < n; ++i)
                    for (int h = 0; h < heads; ++h)
                        kv::compress(&src[(size_t(src_rows[i]) * heads + h) * D], layout, &expected[(size_t(h) * rows + dst_rows[i]) * layout.stride]);
                Dev<uint16_t> d_src(src);
                Dev<int32_t> d_src_rows(src_rows), d_dst_rows(dst_rows);
                Dev<uint8_t> d_records(std::vector<uint8_t>(expected.size(), 0xab));
                const bool launched = mc::compress_rows(reinterpret_cast<const char*>(d_src.p), size_t(heads) * D * 2, d_src_rows.p, d_dst_rows.p, n,
                                                        heads, D, layout.kept, layout.stride, size_t(rows) * layout.stride, d_records.p, nullptr);
                CK(cudaDeviceSynchronize());
                const std::string what = "compress D=" + std::to_string(D) + " s=" + std::to_string(s) + (ties ? " ties" : "");
                check(launched, what + " launched");
                check(d_records.down() == expected, what + " records equal kv::compress byte for byte");
            }
        }
    }
}

// Several stores' compressions in one launch (compress_jobs, the CUDA executor's end of a decode graph):
// each job's records equal kv::compress byte for byte, its slot table gets -1 at the compressed rows and
// keeps its other entries.
void test_compress_jobs(std::mt19937_64& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int rows = 40, pool = 12;
    const int dims[] = {40, 64, 128, 256};
    const double sparsities[] = {0.5, 0.7, 0.9};
    struct Store {
        int D, heads, n;
        kv::RecordLayout layout;
        std::vector<uint16_t> pool;
        std::vector<int32_t> src_rows, dst_rows, slots;
        std::vector<uint8_t> expected;
    };
    for (int n_jobs : {1, 5, mc::kMaxJobs}) {
        std::vector<Store> stores(n_jobs);
        std::vector<std::unique_ptr<Dev<uint16_t>>> d_pools;
        std::vector<std::unique_ptr<Dev<uint8_t>>> d_records;
        std::vector<std::unique_ptr<Dev<int32_t>>> d_slots;
        mc::CompressJobs jobs;
        for (int j = 0; j < n_jobs; ++j) {
            Store& st = stores[j];
            st.D = dims[rng() % 4];
            st.heads = 1 + int(rng() % 8);
            st.n = 1 + int(rng() % mc::kJobRows);
            st.layout = kv::make_layout(st.D, sparsities[rng() % 3]);
            st.pool.resize(size_t(pool) * st.heads * st.D);
            for (auto& x : st.pool) x = (rng() % 4 == 0) ? tied_value(rng) : fp32_to_fp16(normal(rng));
            std::vector<int32_t> order(rows);
            std::iota(order.begin(), order.end(), 0);
            std::shuffle(order.begin(), order.end(), rng);
            st.dst_rows.assign(order.begin(), order.begin() + st.n);
            for (int i = 0; i < st.n; ++i) st.src_rows.push_back(int32_t(rng() % pool));
            st.slots.assign(rows, 3);
            st.expected.assign(size_t(rows) * st.heads * st.layout.stride, 0xab);
            for (int i = 0; i < st.n; ++i)
                for (int h = 0; h < st.heads; ++h)
                    kv::compress(&st.pool[(size_t(st.src_rows[i]) * st.heads + h) * st.D], st.layout,
                                 &st.expected[(size_t(h) * rows + st.dst_rows[i]) * st.layout.stride]);
            d_pools.push_back(std::make_unique<Dev<uint16_t>>(st.pool));
            d_records.push_back(std::make_unique<Dev<uint8_t>>(std::vector<uint8_t>(st.expected.size(), 0xab)));
            d_slots.push_back(std::make_unique<Dev<int32_t>>(st.slots));
            mc::CompressJob& job = jobs.job[jobs.n++];
            job.src = reinterpret_cast<const char*>(d_pools.back()->p);
            job.src_row_bytes = size_t(st.heads) * st.D * 2;
            job.records = d_records.back()->p;
            job.head_bytes = size_t(rows) * st.layout.stride;
            job.stride = st.layout.stride;
            job.slot_table = d_slots.back()->p;
            job.n_head_kv = st.heads;
            job.head_dim = st.D;
            job.kept = st.layout.kept;
            job.n = st.n;
            std::copy(st.src_rows.begin(), st.src_rows.end(), job.src_rows);
            std::copy(st.dst_rows.begin(), st.dst_rows.end(), job.dst_rows);
        }
        const bool launched = mc::compress_jobs(jobs, nullptr);
        CK(cudaDeviceSynchronize());
        const std::string what = "compress_jobs, " + std::to_string(n_jobs) + " stores in one launch";
        check(launched, what + ": launched");
        bool records = true, slots = true;
        for (int j = 0; j < n_jobs; ++j) {
            records = records && d_records[j]->down() == stores[j].expected;
            std::vector<int32_t> want = stores[j].slots;
            for (int32_t r : stores[j].dst_rows) want[r] = -1;
            slots = slots && d_slots[j]->down() == want;
        }
        check(records, what + ": every store's records equal kv::compress byte for byte");
        check(slots, what + ": -1 in the slot table at the compressed rows, the others kept");
    }
}

// The kernels' view of a store built on the host and copied to the device: head-major records of `rows`
// rows, one slot table for K and V, pools of rows of row_elems f16 values, seq_rows rows a sequence index.
mc::CompressedCache device_store(const Dev<uint8_t>& k, const Dev<uint8_t>& v, const Dev<int32_t>& slot, const Dev<uint16_t>& k_pool,
                                 const Dev<uint16_t>& v_pool, const kv::RecordLayout& lk, const kv::RecordLayout& lv, int64_t rows, size_t row_elems,
                                 int64_t seq_rows) {
    mc::CompressedCache cache;
    cache.k_records = k.p;
    cache.v_records = v.p;
    cache.k_kept = lk.kept;
    cache.v_kept = lv.kept;
    cache.k_stride = lk.stride;
    cache.v_stride = lv.stride;
    cache.k_head_bytes = size_t(rows) * lk.stride;
    cache.v_head_bytes = size_t(rows) * lv.stride;
    cache.k_slot = cache.v_slot = slot.p;
    cache.k_pool = reinterpret_cast<const char*>(k_pool.p);
    cache.v_pool = reinterpret_cast<const char*>(v_pool.p);
    cache.pool_row_bytes = row_elems * 2;
    cache.seq_rows = seq_rows;
    return cache;
}

// The expanded copy that prompts over the store read: every cell of a range, byte for byte kv::decompress of
// its record, or its pool row where it is a window cell (whose record holds stale bytes).
void test_expand_cells(std::mt19937_64& rng, int sms) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int heads = 3, n_seq = 2, window = 32;
    const int64_t seq_rows = 300, rows = n_seq * seq_rows;
    mc::DecodeWorkspace ws;
    for (int D : {64, 128})
        for (const auto& [sk, sv] : std::vector<std::pair<double, double>>{{0.5, 0.5}, {0.7, 0.7}, {0.7, 0.5}, {0.0, 0.0}})
            for (bool ties : {false, true}) {
                const kv::RecordLayout lk = kv::make_layout(D, sk), lv = kv::make_layout(D, sv);
                const size_t row_elems = size_t(heads) * D;
                std::vector<uint16_t> dense_k(size_t(rows) * row_elems), dense_v(dense_k.size());
                for (auto* dense : {&dense_k, &dense_v})
                    for (auto& x : *dense) x = ties ? tied_value(rng) : fp32_to_fp16(normal(rng));
                std::vector<uint8_t> krec(size_t(rows) * heads * lk.stride, 0xab), vrec(size_t(rows) * heads * lv.stride, 0xab);
                std::vector<int32_t> slot(rows, -1);
                std::vector<uint16_t> kpool, vpool;
                for (int64_t row = 0; row < rows; ++row) {
                    if (row % seq_rows >= seq_rows - window) {  // the sequence's window: dense in the pool, its record stale
                        slot[row] = int32_t(kpool.size() / row_elems);
                        kpool.insert(kpool.end(), &dense_k[row * row_elems], &dense_k[row * row_elems] + row_elems);
                        vpool.insert(vpool.end(), &dense_v[row * row_elems], &dense_v[row * row_elems] + row_elems);
                        continue;
                    }
                    for (int h = 0; h < heads; ++h) {
                        kv::compress(&dense_k[row * row_elems + h * D], lk, &krec[(size_t(h) * rows + row) * lk.stride]);
                        kv::compress(&dense_v[row * row_elems + h * D], lv, &vrec[(size_t(h) * rows + row) * lv.stride]);
                    }
                }
                Dev<uint8_t> dk(krec), dv(vrec);
                Dev<int32_t> dslot(slot);
                Dev<uint16_t> dkp(kpool), dvp(vpool);
                const mc::CompressedCache cache = device_store(dk, dv, dslot, dkp, dvp, lk, lv, rows, row_elems, seq_rows);
                for (const auto& [first, n] : std::vector<std::pair<int64_t, int64_t>>{{0, seq_rows}, {37, 250}}) {
                    std::vector<uint16_t> want_k(size_t(n_seq) * n * row_elems), want_v(want_k.size());
                    for (int sq = 0; sq < n_seq; ++sq)
                        for (int64_t c = first; c < first + n; ++c)
                            for (int h = 0; h < heads; ++h) {
                                const int64_t row = sq * seq_rows + c;
                                const size_t at = ((size_t(sq) * n + size_t(c - first)) * heads + h) * D;
                                for (int kvi = 0; kvi < 2; ++kvi) {
                                    auto& want = kvi == 0 ? want_k : want_v;
                                    if (slot[row] >= 0) {
                                        const auto& dense = kvi == 0 ? dense_k : dense_v;
                                        std::copy_n(&dense[row * row_elems + h * D], D, &want[at]);
                                    } else {
                                        const auto& rec = kvi == 0 ? krec : vrec;
                                        const kv::RecordLayout& l = kvi == 0 ? lk : lv;
                                        kv::decompress(&rec[(size_t(h) * rows + row) * l.stride], l, &want[at]);
                                    }
                                }
                            }
                    Dev<uint16_t> ko(std::vector<uint16_t>(want_k.size(), 0x7e00)), vo(std::vector<uint16_t>(want_v.size(), 0x7e00));
                    const bool ok = mc::expand_cells(cache, D, heads, n_seq, first, n, ko.p, vo.p, ws, sms, nullptr);
                    CK(cudaDeviceSynchronize());
                    const std::string what = "expand_cells D=" + std::to_string(D) + " sK=" + std::to_string(sk) + " sV=" + std::to_string(sv) +
                                             (ties ? " ties" : "") + " cells [" + std::to_string(first) + ", " + std::to_string(first + n) + ")";
                    check(ok, what + ": launched");
                    check(ko.down() == want_k && vo.down() == want_v, what + ": K and V rows equal kv::decompress (window cells: the pool) bit for bit");
                }
            }
}

// Masks: none; blocks (rows' cells interleaved in blocks of 7); runs (each row's prompt one run, then
// its decode cells interleaved with the others' at the end of the cache, as in a batched decode).
// causal: a prompt micro-batch at the end of the cache (row r sees cells up to n_kv - n_rows + r).
// causal_bias: causal, with rows that begin at different cells and finite nonzero values in their history
// (cells 200-202 of every row, cell 40 + r of rows r >= 64 with r % 4 = 1): the prompt kernel takes tiles
// inside every row's run of zeros as full without their mask, and must read it elsewhere.
// span: a micro-batch of one sequence in a cache that others share: the sequence's cells are the cache's
// last n_kv / 2 (its window among them), the rows its last n_rows, causal (a prompt's copy holds only those).
// chunks: a micro-batch of several sequences' prompts (64 rows each) in a shared cache whose history lies in
// chunks of 48 cells, each sequence's far apart among others' (cached prefixes, requests that left): long
// runs of tiles that no row of a prompt block sees between the tiles it does (the prompt kernel skips them).
enum class MaskKind { none, blocks, runs, causal, causal_bias, span, chunks };

// One attention problem on the host, with the cache in llama.cpp's layout: cell c of KV head h of
// sequence index s at ((s * n_kv + c) * n_head_kv + h) * D.
struct Problem {
    int D, G, n_head_kv, n_rows, n_seq;
    int64_t n_kv;
    bool masked;
    MaskKind kind;
    std::vector<float> q;         // [D, n_rows, n_head, n_seq]
    std::vector<uint16_t> k, v;   // as above
    std::vector<uint16_t> mask;   // [n_kv, n_rows, 1, n_seq] when masked
    int n_head() const { return G * n_head_kv; }
    size_t at(int s, int64_t c, int h) const { return ((size_t(s) * n_kv + c) * n_head_kv + h) * D; }
};

Problem make_problem(std::mt19937_64& rng, int D, int G, int n_rows, int n_seq, int64_t n_kv, MaskKind kind) {
    const bool masked = kind != MaskKind::none;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Problem p{D, G, 2, n_rows, n_seq, n_kv, masked, kind, {}, {}, {}, {}};
    p.q.resize(size_t(D) * n_rows * p.n_head() * n_seq);
    for (auto& x : p.q) x = normal(rng);
    p.k.resize(size_t(n_seq) * n_kv * p.n_head_kv * D);
    p.v.resize(p.k.size());
    for (auto& x : p.k) x = fp32_to_fp16(normal(rng));
    for (auto& x : p.v) x = fp32_to_fp16(normal(rng));
    const uint16_t minus_inf = 0xfc00;
    if (kind == MaskKind::blocks) {
        // Rows are sequences sharing one cache: a common prefix of 5 cells, then each row's cells in
        // blocks, with the other rows' cells interleaved; the last row sees nothing.
        p.mask.assign(size_t(n_kv) * n_rows, minus_inf);
        for (int r = 0; r < n_rows - 1; ++r)
            for (int64_t c = 0; c < n_kv; ++c)
                if (c < 5 || (c / 7) % (n_rows - 1) == r) p.mask[size_t(r) * n_kv + c] = fp32_to_fp16(c % 3 == 0 ? -0.5f : 0.0f);
    } else if (kind == MaskKind::causal) {
        p.mask.assign(size_t(n_kv) * n_rows, minus_inf);
        for (int r = 0; r < n_rows; ++r) std::fill_n(p.mask.begin() + size_t(r) * n_kv, n_kv - n_rows + r + 1, uint16_t(0));
    } else if (kind == MaskKind::causal_bias) {
        p.mask.assign(size_t(n_kv) * n_rows, minus_inf);
        for (int r = 0; r < n_rows; ++r)
            for (int64_t c = (r % 5) * 3; c <= n_kv - n_rows + r; ++c) {
                float v = 0.0f;
                if (c >= 200 && c < 203) v = -1.0f;
                if (r >= 64 && r % 4 == 1 && c == 40 + r) v = 0.25f;
                p.mask[size_t(r) * n_kv + c] = fp32_to_fp16(v);
            }
    } else if (kind == MaskKind::span) {
        p.mask.assign(size_t(n_kv) * n_rows, minus_inf);
        const int64_t first = n_kv - n_kv / 2;
        for (int r = 0; r < n_rows; ++r) std::fill(p.mask.begin() + size_t(r) * n_kv + first, p.mask.begin() + size_t(r) * n_kv + n_kv - n_rows + r + 1, uint16_t(0));
    } else if (kind == MaskKind::chunks) {
        p.mask.assign(size_t(n_kv) * n_rows, minus_inf);
        const int owners = (n_rows + 63) / 64 + 5;
        const int64_t history = n_kv - n_rows;
        for (int r = 0; r < n_rows; ++r) {
            const int s = r / 64;
            for (int64_t c = 0; c < history; ++c) {
                const int64_t chunk = c / 48;
                if (int((chunk * 5 + chunk / 4) % owners) == s) p.mask[size_t(r) * n_kv + c] = fp32_to_fp16(c % 11 == 0 ? -0.5f : 0.0f);
            }
            for (int r2 = 64 * s; r2 <= r; ++r2) p.mask[size_t(r) * n_kv + history + r2] = 0;
        }
    } else if (kind == MaskKind::runs) {
        // Row r's prompt fills cells [r, r + 1) * run of the first 90 %; the last 10 % holds the rows'
        // decode cells in turn: a split that ends a row's run must not walk the others' runs.
        p.mask.assign(size_t(n_kv) * n_rows, minus_inf);
        const int64_t prompt = n_kv * 9 / 10, run = prompt / n_rows;
        for (int r = 0; r < n_rows; ++r)
            for (int64_t c = 0; c < n_kv; ++c)
                if ((c >= r * run && c < (r + 1) * run) || (c >= prompt && c % n_rows == r))
                    p.mask[size_t(r) * n_kv + c] = fp32_to_fp16(c % 5 == 0 ? -0.25f : 0.0f);
    }
    // One mask per sequence index, as llama.cpp gives a cache with a stream of cells per sequence: sequence s
    // hides the first 7 s cells each row of sequence 0 sees (one stays), so that mixing them up shows.
    if (masked && n_seq > 1) {
        const size_t per_seq = size_t(n_kv) * n_rows;
        p.mask.resize(per_seq * n_seq);
        for (int sq = 1; sq < n_seq; ++sq)
            for (int r = 0; r < n_rows; ++r) {
                uint16_t* row = &p.mask[sq * per_seq + size_t(r) * n_kv];
                std::copy_n(&p.mask[size_t(r) * n_kv], n_kv, row);
                const int64_t seen = std::count_if(row, row + n_kv, [&](uint16_t m) { return m != minus_inf; });
                int64_t hide = std::min<int64_t>(7 * sq, seen - 1);
                for (int64_t c = 0; c < n_kv && hide > 0; ++c)
                    if (row[c] != minus_inf) {
                        row[c] = minus_inf;
                        --hide;
                    }
            }
    }
    return p;
}

// Reference output [D, n_head, n_rows, n_seq] in double; key/value vectors come from the callbacks.
template <typename KFn, typename VFn>
std::vector<double> reference(const Problem& p, KFn key, VFn value) {
    std::vector<double> out(size_t(p.D) * p.n_head() * p.n_rows * p.n_seq, 0.0);
    const double scale = 1.0 / std::sqrt(double(p.D));
    std::vector<double> kx(p.D), vx(p.D), score(p.n_kv);
    for (int s = 0; s < p.n_seq; ++s)
        for (int r = 0; r < p.n_rows; ++r)
            for (int h = 0; h < p.n_head(); ++h) {
                const int hk = h / p.G;
                const float* q = &p.q[((size_t(s) * p.n_head() + h) * p.n_rows + r) * p.D];
                double m = -INFINITY;
                for (int64_t c = 0; c < p.n_kv; ++c) {
                    const float mv = p.masked ? fp16_to_fp32(p.mask[(size_t(s) * p.n_rows + r) * p.n_kv + c]) : 0.0f;
                    if (mv == -INFINITY) {
                        score[c] = -INFINITY;
                        continue;
                    }
                    key(s, c, hk, kx.data());
                    double dot = 0.0;
                    for (int d = 0; d < p.D; ++d) dot += double(q[d]) * kx[d];
                    score[c] = dot * scale + mv;
                    m = std::max(m, score[c]);
                }
                double* o = &out[((size_t(s) * p.n_rows + r) * p.n_head() + h) * p.D];
                if (m == -INFINITY) continue;
                double sum = 0.0;
                for (int64_t c = 0; c < p.n_kv; ++c) {
                    if (score[c] == -INFINITY) continue;
                    const double w = std::exp(score[c] - m);
                    sum += w;
                    value(s, c, hk, vx.data());
                    for (int d = 0; d < p.D; ++d) o[d] += w * vx[d];
                }
                for (int d = 0; d < p.D; ++d) o[d] /= sum;
            }
    return out;
}

mc::DecodeProblem device_problem(const Problem& p, const float* q, float* out, const uint16_t* mask) {
    mc::DecodeProblem d;
    d.head_dim = p.D;
    d.n_head = p.n_head();
    d.n_head_kv = p.n_head_kv;
    d.n_rows = p.n_rows;
    d.n_seq = p.n_seq;
    d.n_kv = p.n_kv;
    d.scale = float(1.0 / std::sqrt(double(p.D)));
    d.q = reinterpret_cast<const char*>(q);
    d.q_nb1 = size_t(p.D) * 4;
    d.q_nb2 = d.q_nb1 * p.n_rows;
    d.q_nb3 = d.q_nb2 * p.n_head();
    d.out = reinterpret_cast<char*>(out);
    d.out_nb1 = size_t(p.D) * 4;
    d.out_nb2 = d.out_nb1 * p.n_head();
    d.out_nb3 = d.out_nb2 * p.n_rows;
    if (mask != nullptr) {
        d.mask = reinterpret_cast<const char*>(mask);
        d.mask_nb1 = size_t(p.n_kv) * 2;
        d.mask_nb3 = d.mask_nb1 * p.n_rows;
        d.mask_ne3 = p.n_seq;
    }
    return d;
}

double relative_error(const std::vector<float>& got, const std::vector<double>& ref) {
    double worst = 0.0, peak = 1e-6;
    for (size_t i = 0; i < ref.size(); ++i) {
        if (!std::isfinite(got[i])) return INFINITY;
        worst = std::max(worst, std::fabs(double(got[i]) - ref[i]));
        peak = std::max(peak, std::fabs(ref[i]));
    }
    return worst / peak;
}

const char* mask_name(MaskKind k) {
    switch (k) {
        case MaskKind::blocks: return " masked (blocks)";
        case MaskKind::runs: return " masked (runs)";
        case MaskKind::causal: return " masked (causal)";
        case MaskKind::causal_bias: return " masked (causal, with a bias)";
        case MaskKind::span: return " masked (one sequence's span of a shared cache)";
        case MaskKind::chunks: return " masked (sequences' prompts over scattered chunks of a shared cache)";
        default: return "";
    }
}

std::string describe(const Problem& p, int splits) {
    return "D=" + std::to_string(p.D) + " G=" + std::to_string(p.G) + " rows=" + std::to_string(p.n_rows) + " seqs=" + std::to_string(p.n_seq) +
           " n_kv=" + std::to_string(p.n_kv) + mask_name(p.kind) +
           " splits=" + std::to_string(splits);
}

// The rows per sequence index of a prompt's packed copy that holds every 32-cell tile any of its rows sees
// (all n_kv cells, rounded up to whole tiles, without a mask), the largest over the sequence indices.
int64_t packed_rows(const Problem& p) {
    const int64_t tiles = (p.n_kv + 31) / 32;
    if (!p.masked) return 32 * tiles;
    int64_t most = 0;
    for (int s = 0; s < p.n_seq; ++s) {
        std::vector<char> seen(size_t(tiles), 0);
        for (int r = 0; r < p.n_rows; ++r)
            for (int64_t c = 0; c < p.n_kv; ++c)
                if (p.mask[(size_t(s) * p.n_rows + r) * p.n_kv + c] != 0xfc00) seen[size_t(c / 32)] = 1;
        most = std::max<int64_t>(most, 32 * std::count(seen.begin(), seen.end(), char(1)));
    }
    return most;
}

struct Shape {
    int D, G, rows, seqs;
    int64_t n_kv;
    MaskKind mask;
};

constexpr MaskKind kNo = MaskKind::none, kBlocks = MaskKind::blocks, kRuns = MaskKind::runs, kCausal = MaskKind::causal,
                   kCausalBias = MaskKind::causal_bias, kSpan = MaskKind::span, kChunks = MaskKind::chunks;
const Shape kShapes[] = {
    {128, 4, 1, 1, 1, kNo},      {128, 4, 1, 1, 37, kNo},  {128, 4, 1, 3, 3000, kNo}, {128, 4, 4, 1, 2000, kBlocks},
    {64, 1, 2, 2, 700, kNo},     {64, 8, 3, 1, 900, kBlocks}, {256, 2, 1, 2, 1500, kNo}, {256, 8, 1, 1, 600, kNo},
    {128, 8, 5, 1, 5000, kBlocks}, {128, 1, 1, 1, 9000, kNo},
    // Batch 1 at a length that fills the device with splits, which eight blocks merge (Llama-3-8B's group of 4).
    {128, 4, 1, 1, 20000, kNo},
    // A batched decode over one cache: each row's prompt a run, its decode cells at the end.
    {128, 4, 8, 1, 6000, kRuns}, {64, 2, 8, 1, 4000, kRuns}, {256, 4, 4, 1, 3000, kRuns},
    // Prompt shapes (32 rows or more: the prompt kernel when the split count is left to the library).
    {128, 4, 100, 1, 700, kBlocks}, {64, 2, 64, 2, 300, kNo}, {128, 8, 40, 1, 2000, kBlocks}, {128, 1, 33, 1, 100, kBlocks},
    // Causal prompts: tiles every row sees whole, tiles on the diagonal, rows past the last block's end;
    // 16-byte aligned mask rows (n_kv 1024) and unaligned ones (n_kv 333).
    {128, 4, 96, 1, 1024, kCausal}, {64, 8, 70, 1, 333, kCausal},
    // Tiles full without their mask next to tiles whose zeros end (unaligned rows: n_kv 1001).
    {128, 4, 130, 1, 1001, kCausalBias}, {64, 2, 64, 1, 512, kCausalBias},
    // A sequence's micro-batch in a shared cache (unaligned mask rows: n_kv 777).
    {128, 4, 96, 1, 2000, kSpan}, {64, 8, 40, 1, 777, kSpan},
    // Several sequences' prompts over scattered chunks of a shared cache (unaligned mask rows: n_kv 3001).
    {128, 4, 130, 1, 3000, kChunks}, {64, 2, 96, 1, 3001, kChunks},
    // A stream of cells per sequence (MustafarCacheLayout.PerRequest): masked decode rows and prompts of
    // several sequence indices, each with its own mask.
    {128, 4, 1, 4, 3000, kCausal}, {64, 8, 2, 3, 900, kCausalBias}, {128, 4, 96, 3, 1024, kCausal}, {64, 2, 40, 2, 777, kSpan},
};

// After a launch that merged its splits inside the kernel, every arrival counter is 0 again, as the next launch needs.
void check_counters(const mc::DecodeWorkspace& ws, const std::string& what) {
    size_t n = 0;
    const int* counters = ws.counters_now(n);
    std::vector<int> c(n);
    if (n > 0) CK(cudaMemcpy(c.data(), counters, n * sizeof(int), cudaMemcpyDeviceToHost));
    const size_t counted = size_t(std::count_if(c.begin(), c.end(), [](int x) { return x != 0; }));
    check(counted == 0, what + ": after the launch " + std::to_string(counted) + " of " + std::to_string(n) + " arrival counters are not 0");
}

// A masked call again with the ranges of the call before (as a model's later layers run: DecodeWorkspace::reuse_ranges),
// which the decode kernels read before their wait for the kernel before them.
template <typename Call>
void check_reused(mc::DecodeWorkspace& ws, bool masked, Dev<float>& out, const std::vector<double>& ref, const std::string& what, Call&& call) {
    if (!masked) return;
    ws.reuse_ranges(true);
    for (int i = 0; i < 2; ++i) {
        CK(cudaMemset(out.p, 0xff, out.n * sizeof(float)));
        const bool ok = call();
        CK(cudaDeviceSynchronize());
        const double err = relative_error(out.down(), ref);
        check(ok && err <= 1e-3, what + (i == 0 ? ", ranges computed for reuse" : ", ranges reused") + ": relative error " + std::to_string(err));
        check_counters(ws, what);
    }
    ws.reuse_ranges(false);
    ws.forget_ranges();  // the next problem's mask may get this one's address
}

void test_dense(std::mt19937_64& rng, int sms) {
    mc::DecodeWorkspace ws;
    for (const Shape& sh : kShapes) {
        const Problem p = make_problem(rng, sh.D, sh.G, sh.rows, sh.seqs, sh.n_kv, sh.mask);
        const auto ref = reference(
            p, [&](int s, int64_t c, int h, double* x) { for (int d = 0; d < p.D; ++d) x[d] = fp16_to_fp32(p.k[p.at(s, c, h) + d]); },
            [&](int s, int64_t c, int h, double* x) { for (int d = 0; d < p.D; ++d) x[d] = fp16_to_fp32(p.v[p.at(s, c, h) + d]); });
        Dev<float> q(p.q), out(std::vector<float>(ref.size(), NAN));
        Dev<uint16_t> k(p.k), v(p.v), mask(p.masked ? p.mask : std::vector<uint16_t>{0});
        const mc::DecodeProblem dp = device_problem(p, q.p, out.p, p.masked ? mask.p : nullptr);
        mc::DenseCache cache;
        cache.k = reinterpret_cast<const char*>(k.p);
        cache.v = reinterpret_cast<const char*>(v.p);
        cache.k_nb1 = cache.v_nb1 = size_t(p.n_head_kv) * p.D * 2;
        cache.k_nb2 = cache.v_nb2 = size_t(p.D) * 2;
        cache.k_nb3 = cache.v_nb3 = cache.k_nb1 * p.n_kv;
        // 17 splits: where all blocks are resident, several mergers (as at batch 1, long context) for every shape's D and G.
        for (int splits : {0, 1, 5, 17}) {
            const bool ok = mc::decode_attention_dense(dp, cache, ws, sms, nullptr, splits);
            CK(cudaDeviceSynchronize());
            const double err = relative_error(out.down(), ref);
            check(ok && err <= 1e-3, "dense attention " + describe(p, splits) + ": relative error " + std::to_string(err));
            check_counters(ws, "dense attention " + describe(p, splits));
        }
        check_reused(ws, p.masked, out, ref, "dense attention " + describe(p, 0), [&] { return mc::decode_attention_dense(dp, cache, ws, sms, nullptr, 0); });
    }
}

void test_compressed(std::mt19937_64& rng, int sms) {
    mc::DecodeWorkspace ws;
    const int window = 32;
    for (const Shape& sh : kShapes) {
        const std::vector<std::pair<double, double>> sparsities = {{0.5, 0.5}, {0.7, 0.7}, {0.7, 0.5}, {0.0, 0.0}};
        for (const auto& [sk, sv] : sparsities) {
            const Problem p = make_problem(rng, sh.D, sh.G, sh.rows, sh.seqs, sh.n_kv, sh.mask);
            const kv::RecordLayout lk = kv::make_layout(p.D, sk), lv = kv::make_layout(p.D, sv);
            // Rows = (seq, cell); each sequence's last `window` cells stay dense in the pool.
            const int64_t rows = int64_t(p.n_seq) * p.n_kv;
            std::vector<uint8_t> krec(size_t(rows) * p.n_head_kv * lk.stride), vrec(size_t(rows) * p.n_head_kv * lv.stride);
            std::vector<int32_t> slot(rows, -1);
            std::vector<uint16_t> kpool, vpool;
            const size_t row_elems = size_t(p.n_head_kv) * p.D;
            for (int s = 0; s < p.n_seq; ++s)
                for (int64_t c = 0; c < p.n_kv; ++c) {
                    const int64_t row = int64_t(s) * p.n_kv + c;
                    if (c >= p.n_kv - window) {
                        slot[row] = int32_t(kpool.size() / row_elems);
                        kpool.insert(kpool.end(), &p.k[p.at(s, c, 0)], &p.k[p.at(s, c, 0)] + row_elems);
                        vpool.insert(vpool.end(), &p.v[p.at(s, c, 0)], &p.v[p.at(s, c, 0)] + row_elems);
                        continue;
                    }
                    for (int h = 0; h < p.n_head_kv; ++h) {
                        kv::compress(&p.k[p.at(s, c, h)], lk, &krec[(size_t(h) * rows + row) * lk.stride]);  // head-major, as on the device
                        kv::compress(&p.v[p.at(s, c, h)], lv, &vrec[(size_t(h) * rows + row) * lv.stride]);
                    }
                }
            auto fetch = [&](const std::vector<uint16_t>& dense, const std::vector<uint8_t>& rec, const kv::RecordLayout& l, int s, int64_t c, int h,
                             double* x) {
                const int64_t row = int64_t(s) * p.n_kv + c;
                std::vector<uint16_t> tmp(p.D);
                if (slot[row] >= 0)
                    std::copy_n(&dense[p.at(s, c, h)], p.D, tmp.begin());
                else
                    kv::decompress(&rec[(size_t(h) * rows + row) * l.stride], l, tmp.data());
                for (int d = 0; d < p.D; ++d) x[d] = fp16_to_fp32(tmp[d]);
            };
            const auto ref = reference(
                p, [&](int s, int64_t c, int h, double* x) { fetch(p.k, krec, lk, s, c, h, x); },
                [&](int s, int64_t c, int h, double* x) { fetch(p.v, vrec, lv, s, c, h, x); });
            Dev<float> q(p.q), out(std::vector<float>(ref.size(), NAN));
            Dev<uint8_t> dk(krec), dv(vrec);
            Dev<int32_t> dslot(slot);
            Dev<uint16_t> dkp(kpool), dvp(vpool), mask(p.masked ? p.mask : std::vector<uint16_t>{0});
            const mc::DecodeProblem dp = device_problem(p, q.p, out.p, p.masked ? mask.p : nullptr);
            const mc::CompressedCache cache = device_store(dk, dv, dslot, dkp, dvp, lk, lv, rows, row_elems, p.n_kv);
            // Prompts (32 rows or more, splits left to the library) run four times: through an expanded copy of
            // the cache, with the prompt kernel expanding its tiles, and with copies just large enough for the
            // 32-cell tiles the rows of every sequence index see (packed_rows) and of one row less, where the
            // store's kernel takes the largest on the device (and with one sequence index, all of it).
            struct Run {
                int splits;
                bool expand;
                int64_t cap;  // cells the copy may hold; 0: the default limit
            };
            const int64_t fit = packed_rows(p);
            const Run runs[] = {{0, true, 0}, {0, false, 0}, {0, true, fit}, {0, true, fit - 1}, {1, true, 0}, {3, true, 0}, {17, true, 0}};
            for (const Run& run : runs) {
                if ((!run.expand || run.cap > 0) && sh.rows < 32) continue;
                ws.expand_prompts(run.expand);
                ws.limit_expanded(run.cap > 0 ? 2 * size_t(p.n_seq) * size_t(run.cap) * cache.pool_row_bytes : mc::DecodeWorkspace::kMaxExpandedBytes);
                CK(cudaMemset(out.p, 0xff, out.n * sizeof(float)));  // NaN: an output no launch writes fails the check
                const bool ok = mc::decode_attention_compressed(dp, cache, ws, sms, nullptr, run.splits);
                CK(cudaDeviceSynchronize());
                const double err = relative_error(out.down(), ref);
                const std::string how = !run.expand ? " (tiles expanded in the prompt kernel)"
                                        : run.cap > 0 ? " (a copy of " + std::to_string(run.cap) + " rows a sequence index)"
                                                      : "";
                check(ok && err <= 1e-3, "compressed attention sK=" + std::to_string(sk) + " sV=" + std::to_string(sv) + " " + describe(p, run.splits) + how +
                                             ": relative error " + std::to_string(err));
                check_counters(ws, "compressed attention " + describe(p, run.splits) + how);
            }
            ws.expand_prompts(true);
            ws.limit_expanded(mc::DecodeWorkspace::kMaxExpandedBytes);
            check_reused(ws, p.masked, out, ref, "compressed attention sK=" + std::to_string(sk) + " sV=" + std::to_string(sv) + " " + describe(p, 0),
                         [&] { return mc::decode_attention_compressed(dp, cache, ws, sms, nullptr, 0); });
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    const unsigned seed = argc > 1 ? unsigned(std::atoi(argv[1])) : 1u;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("SKIP: no CUDA device\n");
        return 0;
    }
    std::mt19937_64 rng(seed);
    const int sms = sm_count();
    test_compress(rng);
    test_compress_jobs(rng);
    test_dense(rng, sms);
    test_expand_cells(rng, sms);
    test_compressed(rng, sms);
    std::printf("%s: %d of %d checks passed (seed %u)\n", g_failed == 0 ? "PASS" : "FAIL", g_checks - g_failed, g_checks, seed);
    return g_failed == 0 ? 0 : 1;
}
