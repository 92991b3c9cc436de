// fusion_cuda.h: the patterns and the checks that keep them exact.
#include "fusion_cuda.h"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

#include "compute_cuda.h"
#include "few_columns_cuda.h"
#include "gemv_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr int kLookahead = 24;  // nodes scanned for products of the same activation

struct Range {
    uintptr_t begin, end;
    bool overlaps(const Range& o) const { return begin < o.end && o.begin < end; }
};

Range range_of(const ggml_tensor* t) {
    const auto b = reinterpret_cast<uintptr_t>(t->data);
    return {b, b + ggml_nbytes(t)};
}

bool is_f32(const ggml_tensor* t) { return t != nullptr && t->type == GGML_TYPE_F32; }

// The next node after i that does work and has not run yet, or -1.
int next_compute(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done) {
    const int n = ggml_graph_n_nodes(graph);
    for (int j = i + 1; j < n; ++j) {
        const ggml_tensor* node = ggml_graph_node(graph, j);
        if (!is_view_op(node->op) && !done[j]) return j;
    }
    return -1;
}

bool contains(const std::vector<int>& v, int x) {
    for (int y : v)
        if (y == x) return true;
    return false;
}

// visit(k, node) for the nodes after i that do work and have not run, at most kLookahead of them, in
// order, until it returns false.
template <typename Visit>
void scan_ahead(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, Visit&& visit) {
    const int n = ggml_graph_n_nodes(graph);
    int scanned = 0;
    for (int k = i + 1; k < n && scanned < kLookahead; ++k) {
        const ggml_tensor* node = ggml_graph_node(graph, k);
        if (is_view_op(node->op) || done[k]) continue;
        ++scanned;
        if (!visit(k, node)) return;
    }
}

// Node k can run at i's place: no node between them that is still to run touches k's output, or
// writes what k reads.
bool can_move_forward(ggml_cgraph* graph, int i, int k, const std::vector<uint8_t>& done, const std::vector<int>& moved) {
    const ggml_tensor* node = ggml_graph_node(graph, k);
    const Range out = range_of(node);
    for (int m = i + 1; m < k; ++m) {
        const ggml_tensor* between = ggml_graph_node(graph, m);
        if (is_view_op(between->op) || done[m]) continue;
        if (contains(moved, m)) continue;
        const Range written = range_of(between);
        if (written.overlaps(out)) return false;
        for (const ggml_tensor* src : between->src)
            if (src != nullptr && src->data != nullptr && range_of(src).overlaps(out)) return false;
        for (const ggml_tensor* src : node->src)
            if (src != nullptr && src->data != nullptr && range_of(src).overlaps(written)) return false;
    }
    return true;
}

Fusion plan_norm_mul(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done) {
    Fusion f;
    const ggml_tensor* norm = ggml_graph_node(graph, i);
    const int j = next_compute(graph, i, done);
    if (j < 0) return f;
    const ggml_tensor* mul = ggml_graph_node(graph, j);
    if (mul->op != GGML_OP_MUL || mul->src[0] != norm || mul->src[1] == norm) return f;
    const ggml_tensor* w = mul->src[1];
    if (!is_f32(norm) || !is_f32(mul) || !is_f32(w) || !ggml_is_contiguous(w) || !ggml_are_same_shape(mul, norm) || w->ne[0] != norm->ne[0] ||
        w->ne[1] != 1 || w->ne[2] != 1 || w->ne[3] != 1)
        return f;
    f.kind = Fusion::Kind::norm_mul;
    f.mul = j;
    return f;
}

// Two grouped products of the same rows, then the SWIGLU of the two (split form): it joins them when it
// may run at i's place.
void plan_glu(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, Fusion& f) {
    const ggml_tensor* a = ggml_graph_node(graph, f.mats[0]);
    const ggml_tensor* b = ggml_graph_node(graph, f.mats[1]);
    if (!ggml_are_same_shape(a, b) || !ggml_is_contiguous(a) || !ggml_is_contiguous(b)) return;
    const int n = ggml_graph_n_nodes(graph);
    int j = -1;
    for (int k = i + 1; k < n && j < 0; ++k) {
        const ggml_tensor* node = ggml_graph_node(graph, k);
        if (!is_view_op(node->op) && !done[k] && k != f.mats[1]) j = k;
    }
    if (j < 0) return;
    const ggml_tensor* glu = ggml_graph_node(graph, j);
    if (glu->op != GGML_OP_GLU || glu->op_params[0] != kGgmlGluOpSwiglu || glu->src[1] == nullptr) return;
    const bool swapped = glu->op_params[1] != 0;
    const ggml_tensor* x = swapped ? glu->src[1] : glu->src[0];  // the operand that goes through silu
    const ggml_tensor* g = swapped ? glu->src[0] : glu->src[1];
    if (!((x == a && g == b) || (x == b && g == a)) || !is_f32(glu) || !ggml_are_same_shape(glu, a) || !ggml_is_contiguous(glu) ||
        !can_move_forward(graph, i, j, done, f.mats))
        return;
    if (x == b) std::swap(f.mats[0], f.mats[1]);
    f.glu = j;
}

// For each product of the group, a later ROPE of its output that may run at i's place joins it. Its
// output must not meet the group's other outputs or its activation; it may be its own product's output
// (in place: the kernel writes the product's value, then the rotated one).
void plan_ropes(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, Fusion& f) {
    f.ropes.assign(f.mats.size(), -1);
    const Range x = range_of(ggml_graph_node(graph, f.mats[0])->src[1]);
    std::vector<int> moved = f.mats;
    for (size_t p = 0; p < f.mats.size(); ++p) {
        const ggml_tensor* product = ggml_graph_node(graph, f.mats[p]);
        scan_ahead(graph, i, done, [&](int k, const ggml_tensor* node) {
            if (node->op != GGML_OP_ROPE || !rope_fits_product(product, node)) return true;
            const Range out = range_of(node);
            bool clear = !out.overlaps(x);
            for (int m : f.mats) {
                const ggml_tensor* other = ggml_graph_node(graph, m);
                if (other != product && range_of(other).overlaps(out)) clear = false;
            }
            for (int r : f.ropes)
                if (r >= 0 && range_of(ggml_graph_node(graph, r)).overlaps(out)) clear = false;
            // In place only as the same rows: element (m, n) of the product is element (m, n) of the rotation.
            const Range own = range_of(product);
            const bool same_rows = node->data == product->data && size_t(node->nb[1]) == size_t(node->ne[0]) * 4 &&
                                   (node->ne[2] == 1 || node->nb[2] == product->nb[1]);
            if (own.overlaps(out) && !same_rows) clear = false;
            if (clear && can_move_forward(graph, i, k, done, moved)) {
                f.ropes[p] = k;
                moved.push_back(k);
            }
            return false;  // the first ROPE of this product decides
        });
    }
}

// The later products of node i's activation on the matrix-vector kernel (rows of the same length) within
// the lookahead, not in `moved`, that may run at i's place (with `moved`), in order; take(k) returns false
// to stop.
template <typename Take>
void scan_products(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, const std::vector<int>& moved, Take&& take) {
    const ggml_tensor* lead = ggml_graph_node(graph, i);
    const bool one_column = takes_gemv(lead);  // else the few-column kernel's (the same activation: the same columns)
    scan_ahead(graph, i, done, [&](int k, const ggml_tensor* node) {
        if (contains(moved, k) || node->src[1] != lead->src[1] || !(one_column ? takes_gemv(node) : takes_few_columns(node)) ||
            node->src[0]->ne[0] != lead->src[0]->ne[0] ||
            !can_move_forward(graph, i, k, done, moved))
            return true;
        return take(k);
    });
}

// Between nodes i and `over` (a later product that writes over it), the product's own output is read by its
// fused ROPE alone (directly or through views), and it is no graph output: the group may leave it
// unwritten. Nothing from `over` on reads it: ggml's allocator gives memory to a new output only after the
// last reader of what was there (scanning the whole graph, ~1000 nodes, once per layer would cost host time).
bool read_by_rope_only(ggml_cgraph* graph, int i, int over, const ggml_tensor* product, const ggml_tensor* rope) {
    if (product->flags & kGgmlTensorFlagOutput) return false;
    for (int k = i + 1; k < over; ++k) {
        const ggml_tensor* node = ggml_graph_node(graph, k);
        if (node == rope || is_view_op(node->op)) continue;
        for (const ggml_tensor* src : node->src)
            if (src != nullptr && root_of(src) == product) return false;
    }
    return true;
}

// After the ROPEs have joined: ggml's allocator may have given a later product of the same activation
// the memory of a roped product's output, which it frees once the ROPE has read it (llama.cpp's decode
// graph: Q, its ROPE, V in Q's unrotated output, K, its ROPE; V ran alone). Such a product joins the group
// when that output has no other reader; the group then writes only the rotation (rope_only).
void plan_reusing_products(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, Fusion& f) {
    const ggml_tensor* lead = ggml_graph_node(graph, i);
    std::vector<int> moved = f.mats;
    for (int r : f.ropes)
        if (r >= 0) moved.push_back(r);
    f.rope_only.assign(f.mats.size(), 0);
    if (int(f.mats.size()) >= GemvGroup::kMaxParts) return;
    scan_products(graph, i, done, moved, [&](int k) {
        const Range out = range_of(ggml_graph_node(graph, k));
        bool ok = !out.overlaps(range_of(lead->src[1]));
        std::vector<size_t> reused;
        for (size_t p = 0; p < f.mats.size() && ok; ++p) {
            const ggml_tensor* product = ggml_graph_node(graph, f.mats[p]);
            const ggml_tensor* rope = f.ropes[p] >= 0 ? ggml_graph_node(graph, f.ropes[p]) : nullptr;
            if (rope != nullptr && range_of(rope).overlaps(out)) ok = false;
            if (!range_of(product).overlaps(out)) continue;
            if (rope == nullptr || range_of(rope).overlaps(range_of(product)) || !read_by_rope_only(graph, i, k, product, rope)) ok = false;
            reused.push_back(p);
        }
        if (!ok) return true;
        for (size_t p : reused) f.rope_only[p] = 1;
        f.mats.push_back(k);
        f.ropes.push_back(-1);
        f.rope_only.push_back(0);
        moved.push_back(k);
        return int(f.mats.size()) < GemvGroup::kMaxParts;
    });
}

// SET_ROWS of one row of a product's final output (its ROPE's, or its own where it has none; then no ADD
// joins) into an f16 cache: the kernel stores the row's values as it computes them. Into a Mustafar store
// the executor places the row first (place_store_row), or runs the SET_ROWS after the kernel where it
// cannot.
void plan_cache_rows(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, Fusion& f) {
    f.cache_rows.assign(f.mats.size(), -1);
    std::vector<int> moved = f.mats;
    std::vector<const ggml_tensor*> finals;
    for (size_t p = 0; p < f.mats.size(); ++p) {
        const int r = p < f.ropes.size() ? f.ropes[p] : -1;
        if (r >= 0) moved.push_back(r);
        finals.push_back(ggml_graph_node(graph, r >= 0 ? r : f.mats[p]));
    }
    const Range x = range_of(ggml_graph_node(graph, i)->src[1]);
    scan_ahead(graph, i, done, [&](int k, const ggml_tensor* set) {
        if (set->op != GGML_OP_SET_ROWS || contains(moved, k)) return true;
        const ggml_tensor* src = set->src[0];
        const ggml_tensor* idx = set->src[1];
        size_t p = 0;
        while (p < finals.size() && root_of(src) != finals[p]) ++p;
        if (p == finals.size() || f.cache_rows[p] >= 0) return true;
        const ggml_tensor* out = finals[p];
        const int64_t values = out->ne[0] * out->ne[1] * out->ne[2] * out->ne[3];
        const bool one_row = src->ne[0] == values && src->ne[1] * src->ne[2] * src->ne[3] == 1;
        if (!one_row || src->data != out->data || !ggml_is_contiguous(src) || !ggml_is_contiguous(out) || set->type != GGML_TYPE_F16 ||
            set->nb[0] != 2 || set->ne[0] != values || (idx->type != GGML_TYPE_I64 && idx->type != GGML_TYPE_I32) ||
            idx->data == nullptr || range_of(set).overlaps(x) || !can_move_forward(graph, i, k, done, moved))
            return true;
        for (const ggml_tensor* final_out : finals)
            if (range_of(set).overlaps(range_of(final_out))) return true;
        f.cache_rows[p] = k;
        moved.push_back(k);
        return true;
    });
}

// One product: a residual ADD right after it joins it.
void plan_add(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, Fusion& f) {
    const ggml_tensor* lead = ggml_graph_node(graph, i);
    const int j = next_compute(graph, i, done);
    if (j < 0) return;
    const ggml_tensor* add = ggml_graph_node(graph, j);
    if (add->op != GGML_OP_ADD || (add->src[0] == lead) == (add->src[1] == lead)) return;
    const ggml_tensor* r = add->src[0] == lead ? add->src[1] : add->src[0];
    if (is_f32(add) && is_f32(r) && ggml_are_same_shape(r, lead) && ggml_are_same_shape(add, lead) && ggml_is_contiguous(r) && ggml_is_contiguous(add) &&
        ggml_is_contiguous(lead))
        f.add = j;
}

// The ROPEs of the group's outputs (plan_ropes), then the later products that take a roped output's memory
// (plan_reusing_products).
void plan_rotations(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, Fusion& f) {
    plan_ropes(graph, i, done, f);
    bool any_rope = false;
    for (int r : f.ropes) any_rope = any_rope || r >= 0;
    if (any_rope) plan_reusing_products(graph, i, done, f);
}

// Node i and the later products of its activation (scan_products), at most `parts`; with two, their SWIGLU.
Fusion group_products(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, Fusion::Kind kind, int parts) {
    Fusion f;
    f.kind = kind;
    f.mats.push_back(i);
    if (parts > 1)
        scan_products(graph, i, done, f.mats, [&](int k) {
            f.mats.push_back(k);
            return int(f.mats.size()) < parts;
        });
    if (f.mats.size() == 2) plan_glu(graph, i, done, f);
    return f;
}

Fusion plan_gemv(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done) {
    Fusion f = group_products(graph, i, done, Fusion::Kind::gemv, GemvGroup::kMaxParts);
    if (f.glu < 0) {
        plan_rotations(graph, i, done, f);
        plan_cache_rows(graph, i, done, f);
    }
    if (f.mats.size() == 1 && f.ropes[0] < 0 && f.cache_rows[0] < 0) plan_add(graph, i, done, f);
    return f;
}

// Batched decode steps: the products of one activation in one launch of the few-column kernel, with the ROPEs of
// their outputs (and a product in a roped output's memory); gate and up with their SWIGLU; one product with the
// residual ADD after it. One token's cache rows stay the matrix-vector kernel's.
Fusion plan_few(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, const FusionSet& set) {
    Fusion f = group_products(graph, i, done, Fusion::Kind::few, set.few_group ? FewGroup::kMaxParts : 2);
    if ((f.glu >= 0 && !set.few_glu) || (f.glu < 0 && f.mats.size() > 1 && !set.few_group)) {  // left out: node i alone
        f.mats.assign(1, i);  // plan_glu may have put up first
        f.glu = -1;
    }
    if (f.glu < 0 && set.few_rope) plan_rotations(graph, i, done, f);
    if (f.mats.size() == 1 && (f.ropes.empty() || f.ropes[0] < 0) && set.few_add) plan_add(graph, i, done, f);
    return f;
}

}  // namespace

FusionSet FusionSet::from_env() {
    const char* env = std::getenv("MUSTAFAR_NO_FUSION");
    if (env == nullptr) return {};
    const std::pair<const char*, bool FusionSet::*> names[] = {{"norm_mul", &FusionSet::norm_mul}, {"gemv", &FusionSet::gemv},
                                                               {"few_group", &FusionSet::few_group}, {"few_rope", &FusionSet::few_rope},
                                                               {"few_glu", &FusionSet::few_glu}, {"few_add", &FusionSet::few_add}};
    FusionSet some;
    for (std::string rest = env;;) {
        const size_t comma = rest.find(',');
        const std::string name = rest.substr(0, comma);
        bool known = false;
        for (const auto& [n, member] : names)
            if (name == n) {
                some.*member = false;
                known = true;
            }
        if (!known) {  // not a list of names ("1"): no fusion
            FusionSet none;
            for (const auto& [n, member] : names) none.*member = false;
            return none;
        }
        if (comma == std::string::npos || comma + 1 == rest.size()) return some;
        rest = rest.substr(comma + 1);
    }
}

Fusion plan_fusion(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, const FusionSet& set) {
    const ggml_tensor* node = ggml_graph_node(graph, i);
    if (node->op == GGML_OP_RMS_NORM) return set.norm_mul ? plan_norm_mul(graph, i, done) : Fusion{};
    if (takes_gemv(node)) return set.gemv ? plan_gemv(graph, i, done) : Fusion{};
    if (takes_few_columns(node)) return plan_few(graph, i, done, set);
    return {};
}

}  // namespace mustafar::cuda
