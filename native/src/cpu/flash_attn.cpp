#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../kv/view.h"
#include "convert.h"
#include "../simd.h"
#include "ggml_cpu_numerics.h"
#include "kernels.h"

namespace mustafar::cpu {
namespace {

// exp of a softmax weight: below -104 the float result is 0 (e^-104 is under half the smallest subnormal), which
// glibc's expf also returns, but through its underflow handler, which took a quarter of expf's time in a
// batch-1, 4K decode of stories260K (perf on the build machine). Bit for bit std::exp's result.
inline float softmax_exp(float x) { return x < -104.0f ? 0.0f : std::exp(x); }

using simd::dot;

constexpr int64_t kRowBlock = 16;

// Cells read this far ahead are asked for first: a walk over the cells of one head strides by a whole
// cache row, which the hardware prefetchers do not follow across pages.
constexpr int64_t kPrefetchCells = 8;

// Query rows (lanes) whose scores and accumulators take one load of a cell's K and V rows.
constexpr int kLanesTogether = 4;

// A K or V operand: an ordinary tensor, or a view of a Mustafar store (decompressed per vector on
// the fly, never into a dense copy of the cache).
struct KvOperand {
    const ggml_tensor* t = nullptr;
    const kv::KvStore* store = nullptr;

    // Cell ic of head h, stream s: over a store, its row and head. llama.cpp's views step one store row a
    // cell, so the row follows from cell 0's without the two divisions of kv::locate.
    struct Walk {
        kv::RowHead first;
        bool row_per_cell = false;
        size_t head_bytes = 0;  // an ordinary tensor's bytes of one cell and head
    };
    Walk walk(int64_t h, int64_t s, int64_t n) const {
        Walk w;
        if (store != nullptr) {
            w.first = kv::locate(t, *store, 0, h, s);
            w.row_per_cell = size_t(t->nb[1]) == store->dense_row_bytes();
        } else {
            w.head_bytes = size_t(n) * ggml_type_size(t->type);
        }
        return w;
    }
    kv::RowHead at(const Walk& w, int64_t ic, int64_t h, int64_t s) const {
        return w.row_per_cell ? kv::RowHead{w.first.row + ic, w.first.head} : kv::locate(t, *store, ic, h, s);
    }
    const char* row(int64_t ic, int64_t h, int64_t s) const { return static_cast<const char*>(t->data) + ic * t->nb[1] + h * t->nb[2] + s * t->nb[3]; }

    void load(const Walk& w, int64_t ic, int64_t h, int64_t s, float* out, int64_t n) const {
        if (store != nullptr) {
            const kv::RowHead a = at(w, ic, h, s);
            store->read_head_f32(a.row, a.head, out);
        } else {
            row_to_f32(t->type, row(ic, h, s), out, n);
        }
    }
    void prefetch(const Walk& w, int64_t ic, int64_t h, int64_t s) const {
        if (store != nullptr) {
            const kv::RowHead a = at(w, ic, h, s);
            store->prefetch_head(a.row, a.head);
        } else {
            const char* p = row(ic, h, s);
            for (size_t b = 0; b < w.head_bytes; b += 64) __builtin_prefetch(p + b);
        }
    }
};

struct Attention {
    const ggml_tensor *q, *k, *v, *mask;
    KvOperand kop, vop;
    int64_t DK, DV, n_q, n_head, n_kv, n_head_kv, group, rk3;
    float scale, softcap, max_bias, m0, m1;
    uint32_t n_head_log2;
    bool round_q;  // query rounded to f16 before the dot with an f16 key
    bool f16_acc;  // V accumulator rounded to f16 after every update

    float slope(int64_t h) const {
        if (max_bias <= 0.0f) return 1.0f;
        return h < int64_t(n_head_log2) ? std::pow(m0, float(h + 1)) : std::pow(m1, float(2 * (h - n_head_log2) + 1));
    }
};

// Online-softmax state of `lanes` query rows (each a query token and head of one GQA group).
struct Lanes {
    std::vector<float> q, acc, mx, sum, slope;
    std::vector<const uint16_t*> mask;
    std::vector<float> krow, vrow;
    Lanes(int64_t lanes, int64_t DK, int64_t DV)
        : q(lanes * DK), acc(lanes * DV), mx(lanes), sum(lanes), slope(lanes), mask(lanes), krow(DK), vrow(DV) {}
};

// Loads rows [r0, r0 + rows) of every head of KV head hk (stream iq3) into the lanes.
int64_t load_lanes(const Attention& a, Lanes& l, int64_t iq3, int64_t hk, int64_t r0, int64_t rows) {
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t g = 0; g < a.group; ++g) {
            const int64_t lane = r * a.group + g, h = hk * a.group + g, iq1 = r0 + r;
            const char* qp = static_cast<const char*>(a.q->data) + iq1 * a.q->nb[1] + h * a.q->nb[2] + iq3 * a.q->nb[3];
            float* qd = &l.q[lane * a.DK];
            row_to_f32(a.q->type, qp, qd, a.DK);
            if (a.round_q) simd::round_to_f16(qd, a.DK);
            l.slope[lane] = a.slope(h);
            l.mask[lane] = a.mask ? reinterpret_cast<const uint16_t*>(static_cast<const char*>(a.mask->data) +
                                                                      iq1 * a.mask->nb[1] + (h % a.mask->ne[2]) * a.mask->nb[2] +
                                                                      (iq3 % a.mask->ne[3]) * a.mask->nb[3])
                                  : nullptr;
        }
    }
    const int64_t n = rows * a.group;
    std::fill(l.acc.begin(), l.acc.begin() + n * a.DV, 0.0f);
    std::fill(l.mx.begin(), l.mx.begin() + n, -INFINITY);
    std::fill(l.sum.begin(), l.sum.begin() + n, 0.0f);
    return n;
}

// Accumulates cells [ic0, ic1) of KV head hk into the lanes.
void attend(const Attention& a, Lanes& l, int64_t n_lanes, int64_t iq3, int64_t hk, int64_t ic0, int64_t ic1) {
    const int64_t ik3 = iq3 / a.rk3;
    const float* f16 = fp16_table().values;
    const int64_t DV = a.DV;
    const KvOperand::Walk kw = a.kop.walk(hk, ik3, a.DK), vw = a.vop.walk(hk, ik3, DV);
    for (int64_t ic = ic0; ic < ic1; ++ic) {
        if (ic + kPrefetchCells < ic1) {
            a.kop.prefetch(kw, ic + kPrefetchCells, hk, ik3);
            a.vop.prefetch(vw, ic + kPrefetchCells, hk, ik3);
        }
        bool any = a.mask == nullptr;
        for (int64_t lane = 0; lane < n_lanes && !any; ++lane) any = f16[l.mask[lane][ic]] != -INFINITY;
        if (!any) continue;  // every lane masks this cell: skip converting it
        a.kop.load(kw, ic, hk, ik3, l.krow.data(), a.DK);
        a.vop.load(vw, ic, hk, ik3, l.vrow.data(), DV);
        const float* vr = l.vrow.data();
        // The lanes that see the cell, four at a time, share each load of K's and V's row (every lane's
        // arithmetic as one lane's alone); lanes whose mask hides the cell (other sequences' cells in a shared
        // cache) are not computed at all.
        int64_t taken[kLanesTogether];
        float mvs[kLanesTogether];
        int pending = 0;
        auto attend_pending = [&] {
            const float* qs[kLanesTogether];
            float dots[kLanesTogether];
            for (int j = 0; j < pending; ++j) qs[j] = &l.q[taken[j] * a.DK];
            if (pending == kLanesTogether) simd::dot_lanes<kLanesTogether>(qs, l.krow.data(), a.DK, dots);
            else
                for (int j = 0; j < pending; ++j) dots[j] = dot(qs[j], l.krow.data(), a.DK);
            float* accs[kLanesTogether];
            float weights[kLanesTogether];
            for (int j = 0; j < pending; ++j) {
                const int64_t lane = taken[j];
                float s = dots[j] * a.scale;
                if (a.softcap != 0.0f) s = a.softcap * std::tanh(s);
                s += mvs[j];
                float* acc = &l.acc[lane * DV];
                float ms = 1.0f, vs = 1.0f;
                if (s > l.mx[lane]) {
                    ms = softmax_exp(l.mx[lane] - s);
                    l.mx[lane] = s;
                    simd::scale(acc, ms, DV);
                    if (a.f16_acc) simd::round_to_f16(acc, DV);
                } else {
                    vs = softmax_exp(s - l.mx[lane]);
                }
                accs[j] = acc;
                weights[j] = vs;
                l.sum[lane] = l.sum[lane] * ms + vs;
            }
            // ggml's f16 accumulator (f16_acc) is rounded after each update.
            if (a.f16_acc) simd::axpy_lanes<true>(accs, vr, weights, pending, DV);
            else simd::axpy_lanes(accs, vr, weights, pending, DV);
            pending = 0;
        };
        for (int64_t lane = 0; lane < n_lanes; ++lane) {
            const float mv = a.mask ? l.slope[lane] * f16[l.mask[lane][ic]] : 0.0f;
            if (mv == -INFINITY) continue;
            taken[pending] = lane;
            mvs[pending] = mv;
            if (++pending == kLanesTogether) attend_pending();
        }
        if (pending > 0) attend_pending();
    }
}

float* output_row(const ggml_tensor* node, int64_t h, int64_t iq1, int64_t iq3) {
    // dst: [DV, n_head, n_q, ne3]
    return reinterpret_cast<float*>(static_cast<char*>(node->data) + h * node->nb[1] + iq1 * node->nb[2] +
                                    iq3 * node->nb[3]);
}

}  // namespace

void flash_attn_ext(const ggml_tensor* node, ThreadPool& pool) {
    Attention a{};
    a.q = node->src[0];
    a.k = node->src[1];
    a.v = node->src[2];
    a.mask = node->src[3];
    a.kop = {a.k, kv::store_of(a.k)};
    a.vop = {a.v, kv::store_of(a.v)};
    a.DK = a.k->ne[0];
    a.DV = a.v->ne[0];
    a.n_q = a.q->ne[1];
    a.n_head = a.q->ne[2];
    a.n_kv = a.k->ne[1];
    a.n_head_kv = a.k->ne[2];
    a.group = a.n_head / a.n_head_kv;
    a.rk3 = a.q->ne[3] / a.k->ne[3];
    std::memcpy(&a.scale, &node->op_params[0], sizeof(float));
    std::memcpy(&a.max_bias, &node->op_params[1], sizeof(float));
    std::memcpy(&a.softcap, &node->op_params[2], sizeof(float));
    if (a.softcap != 0.0f) a.scale /= a.softcap;
    a.n_head_log2 = 1u << uint32_t(std::floor(std::log2(double(a.n_head))));
    a.m0 = std::pow(2.0f, -a.max_bias / a.n_head_log2);
    a.m1 = std::pow(2.0f, -(a.max_bias / 2.0f) / a.n_head_log2);

    // Over a Mustafar store: f32 query and f32 accumulation. Over dense operands: the numerical
    // choices of ggml's CPU backend (see ggml_cpu_numerics.h), so that the dense path matches it.
    const bool mustafar = a.kop.store != nullptr || a.vop.store != nullptr;
    const GgmlCpuNumerics& ref = ggml_cpu_numerics();
    const bool same_plain_type = a.k->type == a.v->type && (a.k->type == GGML_TYPE_F16 || a.k->type == GGML_TYPE_F32);
    const bool split = !mustafar && a.n_q == 1 && a.q->ne[3] == 1 && same_plain_type && a.n_kv >= GgmlCpuNumerics::kSplitMinKv;
    const bool tiled = mustafar || (!split && a.n_q >= GgmlCpuNumerics::kTileRows && same_plain_type && a.DV % ref.f32_lanes == 0);
    a.round_q = !tiled && a.k->type == GGML_TYPE_F16;
    a.f16_acc = !tiled && a.v->type == GGML_TYPE_F16;

    if (split) {
        // One KV chunk per thread, each with its own softmax state, merged in chunk order.
        const int64_t n_chunks = pool.size();
        const int64_t chunk = (a.n_kv + n_chunks - 1) / n_chunks;
        const int64_t part = 2 + a.DV;
        std::vector<float> partials(size_t(a.n_head * n_chunks * part));
        pool.parallel_for(a.n_head_kv * n_chunks, [&](int64_t begin, int64_t end, int) {
            Lanes l(a.group, a.DK, a.DV);
            for (int64_t t = begin; t < end; ++t) {
                const int64_t hk = t / n_chunks, c = t % n_chunks;
                const int64_t n = load_lanes(a, l, 0, hk, 0, 1);
                attend(a, l, n, 0, hk, std::min(a.n_kv, c * chunk), std::min(a.n_kv, (c + 1) * chunk));
                for (int64_t g = 0; g < a.group; ++g) {
                    float* p = &partials[size_t(((hk * a.group + g) * n_chunks + c) * part)];
                    p[0] = l.mx[g];
                    p[1] = l.sum[g];
                    std::memcpy(p + 2, &l.acc[g * a.DV], a.DV * sizeof(float));
                }
            }
        });
        std::vector<float> acc(a.DV);
        for (int64_t h = 0; h < a.n_head; ++h) {
            float m = -INFINITY, s = 0.0f;
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int64_t c = 0; c < n_chunks; ++c) {
                const float* p = &partials[size_t((h * n_chunks + c) * part)];
                if (c * chunk >= a.n_kv || p[1] == 0.0f) continue;
                const float m_new = std::fmax(m, p[0]);
                const float so = std::exp(m - m_new), sn = std::exp(p[0] - m_new);
                for (int64_t d = 0; d < a.DV; ++d) acc[d] = acc[d] * so + p[2 + d] * sn;
                s = s * so + p[1] * sn;
                m = m_new;
            }
            const float inv = s == 0.0f ? 1.0f : 1.0f / s;
            float* out = output_row(node, h, 0, 0);
            for (int64_t d = 0; d < a.DV; ++d) out[d] = acc[d] * inv;
        }
        return;
    }

    const int64_t n_blocks = (a.n_q + kRowBlock - 1) / kRowBlock;
    pool.parallel_for(a.q->ne[3] * a.n_head_kv * n_blocks, [&](int64_t begin, int64_t end, int) {
        Lanes l(kRowBlock * a.group, a.DK, a.DV);
        for (int64_t task = begin; task < end; ++task) {
            const int64_t blk = task % n_blocks;
            const int64_t hk = (task / n_blocks) % a.n_head_kv;
            const int64_t iq3 = task / (n_blocks * a.n_head_kv);
            const int64_t r0 = blk * kRowBlock, rows = std::min(kRowBlock, a.n_q - r0);
            const int64_t n = load_lanes(a, l, iq3, hk, r0, rows);
            attend(a, l, n, iq3, hk, 0, a.n_kv);
            for (int64_t lane = 0; lane < n; ++lane) {
                const float inv = l.sum[lane] == 0.0f ? 0.0f : 1.0f / l.sum[lane];
                float* out = output_row(node, hk * a.group + lane % a.group, r0 + lane / a.group, iq3);
                for (int64_t d = 0; d < a.DV; ++d) out[d] = l.acc[lane * a.DV + d] * inv;
            }
        }
    });
}

}  // namespace mustafar::cpu
