// Op conformance: every op and type our backend claims, on fresh random inputs, computed by our
// backend and by ggml's CPU backend from the same graph; the outputs must agree (in the manner of
// ggml's test-backend-ops). Exit code 0 when every case passes. Usage: op_conformance [seed]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../include/mustafar.h"
#include "fp16.h"
#include "weight_blocks.h"
#include "ggml_graph_api.h"

namespace {

using Builder = std::function<ggml_tensor*(ggml_context*)>;

struct Result {
    std::vector<float> values;
    bool supported = true;
};

std::vector<float> to_floats(const ggml_tensor* t) {
    const size_t n = size_t(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    std::vector<uint8_t> raw(ggml_nbytes(t));
    ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
    std::vector<float> out(n);
    size_t k = 0;
    for (int64_t i3 = 0; i3 < t->ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < t->ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < t->ne[1]; ++i1)
                for (int64_t i0 = 0; i0 < t->ne[0]; ++i0) {
                    const uint8_t* p = raw.data() + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
                    float v;
                    if (t->type == GGML_TYPE_F16) v = mustafar::fp16_to_fp32(*reinterpret_cast<const uint16_t*>(p));
                    else if (t->type == GGML_TYPE_BF16) v = mustafar::bf16_to_fp32(*reinterpret_cast<const uint16_t*>(p));
                    else std::memcpy(&v, p, 4);
                    out[k++] = v;
                }
    return out;
}

// The ggml type ids that weight_blocks.h decodes (the CUDA flavour's weights converted to f16).
std::vector<int> converted_types() {
    std::vector<int> ids;
    for (int id = 0; id < 64; ++id)
        if (mustafar::blocks::with_format(id, [](auto) {})) ids.push_back(id);
    return ids;
}

// Fills every leaf with data that depends only on the leaf's name and the seed.
void fill(ggml_tensor* t, uint64_t seed, int64_t index_range) {
    std::mt19937_64 rng(seed ^ std::hash<std::string>()(t->name));
    const size_t n = ggml_nbytes(t);
    std::vector<uint8_t> raw(n);
    const int64_t count = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    if (std::strncmp(t->name, "mask_run", 8) == 0) {
        // mask rows as llama.cpp gives a decode step: one run of zeros (row r of sequence s sees cells
        // [2 s + 1, ne0 - ne1 + r + 1)), -inf elsewhere
        auto* p = reinterpret_cast<uint16_t*>(raw.data());
        for (int64_t i = 0; i < count; ++i) {
            const int64_t c = i % t->ne[0], r = (i / t->ne[0]) % t->ne[1], s = i / (t->ne[0] * t->ne[1]);
            p[i] = c >= 2 * s + 1 && c < t->ne[0] - t->ne[1] + r + 1 ? 0 : 0xfc00;
        }
    } else if (std::strncmp(t->name, "mask", 4) == 0) {
        // mask rows: 0 or -inf, at least one 0 per row
        auto* p = reinterpret_cast<uint16_t*>(raw.data());
        for (int64_t i = 0; i < count; ++i) p[i] = (rng() % 3 == 0 && i % t->ne[0] != 0) ? 0xfc00 : 0;
    } else if (t->type == GGML_TYPE_Q8_0) {
        // Blocks of 32: an f16 scale and 32 int8 values, quantized from uniform floats.
        for (int64_t b = 0; b < count / 32; ++b) {
            float x[32], amax = 0.0f;
            for (float& v : x) {
                v = uni(rng);
                amax = std::max(amax, std::fabs(v));
            }
            const float d = amax / 127.0f;
            uint8_t* block = raw.data() + b * 34;
            const uint16_t dh = mustafar::fp32_to_fp16(d);
            std::memcpy(block, &dh, 2);
            for (int i = 0; i < 32; ++i) block[2 + i] = uint8_t(int8_t(std::lround(d > 0 ? x[i] / d : 0.0f)));
        }
    } else if (t->type != GGML_TYPE_BF16 && mustafar::blocks::with_format(t->type, [](auto) {})) {
        // Uniform floats through ggml's own quantizer, row by row, as a GGUF converter writes them.
        std::vector<float> x(static_cast<size_t>(count));
        for (float& v : x) v = uni(rng);
        ggml_quantize_chunk(t->type, x.data(), raw.data(), 0, count / t->ne[0], t->ne[0], nullptr);
    } else if (t->type == GGML_TYPE_I64 || t->type == GGML_TYPE_I32) {
        // distinct row indices per column: a shuffled range
        std::vector<int64_t> perm(index_range);
        for (int64_t i = 0; i < index_range; ++i) perm[i] = i;
        for (int64_t col = 0; t->ne[0] > 0 && col < count / t->ne[0]; ++col) {  // none in an empty index list
            std::shuffle(perm.begin(), perm.end(), rng);
            for (int64_t i = 0; i < t->ne[0]; ++i) {
                if (t->type == GGML_TYPE_I64) reinterpret_cast<int64_t*>(raw.data())[col * t->ne[0] + i] = perm[i];
                else reinterpret_cast<int32_t*>(raw.data())[col * t->ne[0] + i] = int32_t(perm[i]);
            }
        }
    } else {
        for (int64_t i = 0; i < count; ++i) {
            const float v = uni(rng);
            if (t->type == GGML_TYPE_F16) reinterpret_cast<uint16_t*>(raw.data())[i] = mustafar::fp32_to_fp16(v);
            else if (t->type == GGML_TYPE_BF16) reinterpret_cast<uint16_t*>(raw.data())[i] = mustafar::fp32_to_bf16(v);
            else reinterpret_cast<float*>(raw.data())[i] = v;
        }
    }
    ggml_backend_tensor_set(t, raw.data(), 0, n);
}

// The graph is built once and computed `rounds` times, its leaves filled anew before each round (as
// llama.cpp uploads the inputs of successive decode steps into the same tensors); one Result a round.
std::vector<Result> run_rounds(ggml_backend_t backend, ggml_backend_buffer_type_t buft, ggml_backend_dev_t dev, const Builder& build,
                               uint64_t seed, int64_t index_range, int rounds) {
    ggml_init_params params{64 * 1024 * 1024, nullptr, true};
    ggml_context* ctx = ggml_init(params);
    ggml_tensor* out = build(ctx);
    ggml_cgraph* graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, out);
    Result r;
    // leaves: tensors with a name and no op that the graph reads
    std::vector<ggml_tensor*> leaves;
    for (int i = 0; i < ggml_graph_n_nodes(graph); ++i) {
        ggml_tensor* node = ggml_graph_node(graph, i);
        for (ggml_tensor* s : node->src) {
            if (s == nullptr) continue;
            ggml_tensor* leaf = mustafar::root_of(s);
            bool seen = false;
            for (const ggml_tensor* l : leaves) seen = seen || l == leaf;
            if (leaf->op == GGML_OP_NONE && leaf->name[0] != '\0' && !seen) leaves.push_back(leaf);
        }
    }
    // Leaves named "weights:<name>" get a buffer of their own marked as weights, as llama.cpp's model weights
    // are: the CUDA flavour may read those before the kernel before has finished (launch_cuda.h).
    std::vector<ggml_tensor*> weights;
    size_t weight_bytes = 0;
    auto padded = [](const ggml_tensor* t) { return (ggml_nbytes(t) + 511) / 512 * 512; };
    for (ggml_tensor* leaf : leaves)
        if (std::strncmp(leaf->name, "weights:", 8) == 0) {
            weights.push_back(leaf);
            weight_bytes += padded(leaf);
        }
    ggml_backend_buffer_t weight_buffer = weights.empty() ? nullptr : ggml_backend_buft_alloc_buffer(buft, weight_bytes);
    if (weight_buffer != nullptr) {
        ggml_backend_buffer_set_usage(weight_buffer, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        char* at = static_cast<char*>(ggml_backend_buffer_get_base(weight_buffer));
        for (ggml_tensor* w : weights) {
            if (ggml_backend_tensor_alloc(weight_buffer, w, at) != GGML_STATUS_SUCCESS) r.supported = false;
            at += padded(w);
        }
    }
    ggml_backend_buffer_t buffer = ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft);
    // A node named "reuses:<name>" takes over the memory of node <name>, as ggml's graph allocator gives a
    // new output the memory of a tensor whose last reader has run (views of it follow).
    for (int i = 0; i < ggml_graph_n_nodes(graph); ++i) {
        ggml_tensor* node = ggml_graph_node(graph, i);
        if (std::strncmp(node->name, "reuses:", 7) != 0) continue;
        for (int j = 0; j < ggml_graph_n_nodes(graph); ++j) {
            const ggml_tensor* old = ggml_graph_node(graph, j);
            if (std::strcmp(old->name, node->name + 7) != 0 || ggml_nbytes(old) < ggml_nbytes(node)) continue;
            node->data = old->data;
            for (int k = 0; k < ggml_graph_n_nodes(graph); ++k) {
                ggml_tensor* view = ggml_graph_node(graph, k);
                if (view->view_src == node) view->data = static_cast<char*>(old->data) + view->view_offs;
            }
            break;
        }
    }
    if (dev != nullptr) {
        for (int i = 0; i < ggml_graph_n_nodes(graph); ++i)
            if (!ggml_backend_dev_supports_op(dev, ggml_graph_node(graph, i))) r.supported = false;
    }
    std::vector<Result> results;
    for (int round = 0; round < rounds; ++round) {
        for (ggml_tensor* leaf : leaves) fill(leaf, seed + 7919 * uint64_t(round), index_range);
        Result got = r;
        if (got.supported) {
            if (ggml_backend_graph_compute(backend, graph) != GGML_STATUS_SUCCESS) got.supported = false;
            else {
                got.values = to_floats(out->op == GGML_OP_SET_ROWS || out->op == GGML_OP_CPY ? mustafar::root_of(out) : out);
                // Every cache the graph writes, also where the output only reads it.
                for (int i = 0; i < ggml_graph_n_nodes(graph); ++i) {
                    const ggml_tensor* node = ggml_graph_node(graph, i);
                    if (node == out || node->op != GGML_OP_SET_ROWS) continue;
                    const std::vector<float> cache = to_floats(mustafar::root_of(node));
                    got.values.insert(got.values.end(), cache.begin(), cache.end());
                }
            }
        }
        results.push_back(std::move(got));
    }
    ggml_backend_buffer_free(buffer);
    if (weight_buffer != nullptr) ggml_backend_buffer_free(weight_buffer);
    ggml_free(ctx);
    return results;
}

Result run(ggml_backend_t backend, ggml_backend_buffer_type_t buft, ggml_backend_dev_t dev, const Builder& build, uint64_t seed,
           int64_t index_range) {
    return run_rounds(backend, buft, dev, build, seed, index_range, 1).front();
}

// One layer of a decode step (norm, projections, attention over a dense cache with a mask, output
// projection and residual) computed in four rounds with new inputs: the CUDA flavour runs the first,
// captures the second as a CUDA graph and replays it for the last two (replay_cuda.h). F16 and F32
// weights: the matrix-vector kernel and cuBLAS inside the captured graph.
Builder decode_layer() {
    constexpr int64_t D = 128, heads = 8, heads_kv = 2, hidden = D * heads, n_kv = 300;
    return [=](ggml_context* c) {
        auto t = [c](ggml_type type, int64_t a, int64_t b, int64_t d2, int64_t d3, const char* n) {
            return ggml_set_name(ggml_new_tensor_4d(c, type, a, b, d2, d3), n);
        };
        ggml_tensor* x = t(GGML_TYPE_F32, hidden, 1, 1, 1, "x");
        ggml_tensor* cur = ggml_mul(c, ggml_rms_norm(c, x, 1e-5f), t(GGML_TYPE_F32, hidden, 1, 1, 1, "weights:wn"));
        ggml_tensor* q = ggml_mul_mat(c, t(GGML_TYPE_F16, hidden, hidden, 1, 1, "wq"), cur);
        ggml_tensor* qv = ggml_view_4d(c, q, D, 1, heads, 1, D * 4, D * 4, hidden * 4, 0);  // [D, 1 row, heads, 1]
        ggml_tensor* kc = t(GGML_TYPE_F16, D * heads_kv, n_kv + 3, 1, 1, "cache_k_l0");
        ggml_tensor* vc = t(GGML_TYPE_F16, D * heads_kv, n_kv + 3, 1, 1, "cache_v_l0");
        ggml_tensor* k = ggml_view_4d(c, kc, D, n_kv, heads_kv, 1, kc->nb[1], D * 2, kc->nb[3], 0);
        ggml_tensor* v = ggml_view_4d(c, vc, D, n_kv, heads_kv, 1, vc->nb[1], D * 2, vc->nb[3], 0);
        ggml_tensor* a = ggml_flash_attn_ext(c, qv, k, v, t(GGML_TYPE_F16, n_kv, 1, 1, 1, "mask"), 1.0f / std::sqrt(float(D)), 0.0f, 0.0f);
        ggml_tensor* flat = ggml_view_4d(c, a, hidden, 1, 1, 1, hidden * 4, hidden * 4, hidden * 4, 0);
        return ggml_add(c, ggml_mul_mat(c, t(GGML_TYPE_F32, hidden, hidden, 1, 1, "wo"), flat), x);
    };
}

double nmse(const std::vector<float>& a, const std::vector<float>& ref) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        if (std::isnan(a[i]) != std::isnan(ref[i])) return INFINITY;
        const double d = double(a[i]) - ref[i];
        err += d * d;
        norm += double(ref[i]) * ref[i];
    }
    return norm == 0 ? err : err / norm;
}

struct Case {
    std::string name;
    Builder build;
    double max_nmse;
    int64_t index_range = 0;
    bool compute = false;  // beyond the KV path: the CUDA flavour claims it, the CPU flavour must not
};

// Ops of the model graph (matrix work, norms, RoPE, activations); inputs named so that fill() makes them random.
Case compute_case(const char* name, int64_t index_range, Builder build, double max_nmse = 1e-8) {
    return {name, std::move(build), max_nmse, index_range, true};
}

std::vector<Case> compute_cases() {
    auto t = [](ggml_context* ctx, ggml_type type, int64_t a, int64_t b, int64_t c, int64_t d, const char* n) {
        return ggml_set_name(ggml_new_tensor_4d(ctx, type, a, b, c, d), n);
    };
    std::vector<Case> cs;
    cs.push_back(compute_case("ADD broadcast rows", 0, [=](ggml_context* c) {
        return ggml_add(c, t(c, GGML_TYPE_F32, 64, 7, 3, 1, "a"), t(c, GGML_TYPE_F32, 64, 1, 3, 1, "b")); }));
    // The last layer of a micro-batch without outputs (llama.cpp selects no rows): every op ours, so that the
    // scheduler keeps the micro-batch in one graph on our backend.
    cs.push_back(compute_case("last layer of a micro-batch without outputs: GET_ROWS, ADD, RMS_NORM, MUL, MUL_MAT of 0 rows", 9,
                              [=](ggml_context* c) {
        ggml_tensor* ids = t(c, GGML_TYPE_I32, 0, 1, 1, 1, "ids");
        ggml_tensor* h = ggml_add(c, ggml_get_rows(c, t(c, GGML_TYPE_F32, 64, 9, 1, 1, "x"), ids), ggml_get_rows(c, t(c, GGML_TYPE_F32, 64, 9, 1, 1, "r"), ids));
        ggml_tensor* n = ggml_mul(c, ggml_rms_norm(c, h, 1e-5f), t(c, GGML_TYPE_F32, 64, 1, 1, 1, "w"));
        return ggml_add(c, ggml_mul_mat(c, t(c, GGML_TYPE_F16, 64, 64, 1, 1, "wo"), n), h); }));
    cs.push_back(compute_case("MUL broadcast", 0, [=](ggml_context* c) {
        return ggml_mul(c, t(c, GGML_TYPE_F32, 64, 7, 3, 1, "a"), t(c, GGML_TYPE_F32, 64, 1, 1, 1, "b")); }));
    cs.push_back(compute_case("RMS_NORM", 0, [=](ggml_context* c) { return ggml_rms_norm(c, t(c, GGML_TYPE_F32, 256, 9, 2, 1, "a"), 1e-5f); }));
    cs.push_back(compute_case("SCALE", 0, [=](ggml_context* c) { return ggml_scale(c, t(c, GGML_TYPE_F32, 40, 5, 1, 1, "a"), 0.125f); }));
    cs.push_back(compute_case("UNARY SILU", 0, [=](ggml_context* c) { return ggml_silu(c, t(c, GGML_TYPE_F32, 100, 7, 1, 1, "a")); }));
    cs.push_back(compute_case("GLU SWIGLU fused halves", 0, [=](ggml_context* c) { return ggml_swiglu(c, t(c, GGML_TYPE_F32, 128, 5, 1, 1, "a")); }));
    cs.push_back(compute_case("GLU SWIGLU split", 0, [=](ggml_context* c) {
        return ggml_swiglu_split(c, t(c, GGML_TYPE_F32, 64, 5, 1, 1, "a"), t(c, GGML_TYPE_F32, 64, 5, 1, 1, "b")); }));
    // The CUDA flavour's 4-wide kernels take contiguous operands of a multiple of 4 values (same shape, or b
    // repeated in order); the rest goes through the strided kernels. Both kinds of each op:
    cs.push_back(compute_case("ADD, SUB, DIV of one shape (4 values a thread)", 0, [=](ggml_context* c) {
        ggml_tensor* a = t(c, GGML_TYPE_F32, 256, 9, 2, 1, "a");
        return ggml_div(c, ggml_sub(c, ggml_add(c, a, t(c, GGML_TYPE_F32, 256, 9, 2, 1, "b")), a), t(c, GGML_TYPE_F32, 256, 9, 2, 1, "d")); }));
    cs.push_back(compute_case("MUL by a 5-value row (strided: not a multiple of 4)", 0, [=](ggml_context* c) {
        return ggml_mul(c, t(c, GGML_TYPE_F32, 5, 7, 1, 1, "a"), t(c, GGML_TYPE_F32, 5, 1, 1, 1, "b")); }));
    cs.push_back(compute_case("ADD of a column view (strided: not contiguous)", 0, [=](ggml_context* c) {
        ggml_tensor* a = t(c, GGML_TYPE_F32, 16, 8, 1, 1, "a");
        return ggml_add(c, ggml_view_4d(c, a, 8, 8, 1, 1, a->nb[1], a->nb[2], a->nb[3], 4 * sizeof(float)), t(c, GGML_TYPE_F32, 8, 8, 1, 1, "b")); }));
    cs.push_back(compute_case("GLU SWIGLU split, rows of 63 (strided)", 0, [=](ggml_context* c) {
        return ggml_swiglu_split(c, t(c, GGML_TYPE_F32, 63, 5, 1, 1, "a"), t(c, GGML_TYPE_F32, 63, 5, 1, 1, "b")); }));
    for (ggml_type wt : {GGML_TYPE_F32, GGML_TYPE_F16}) {
        cs.push_back(compute_case(wt == GGML_TYPE_F32 ? "GET_ROWS f32" : "GET_ROWS f16", 50, [=](ggml_context* c) {
            return ggml_get_rows(c, t(c, wt, 64, 50, 1, 1, "w"), t(c, GGML_TYPE_I32, 7, 1, 1, 1, "idx")); }));
        cs.push_back(compute_case(wt == GGML_TYPE_F32 ? "MUL_MAT f32 weights" : "MUL_MAT f16 weights", 0, [=](ggml_context* c) {
            return ggml_mul_mat(c, t(c, wt, 128, 40, 1, 1, "w"), t(c, GGML_TYPE_F32, 128, 9, 1, 1, "x")); }));
    }
    // F16 weights with one column (batch-1 decode) take the matrix-vector kernel: rows of 264 end in a
    // partial step, 41 rows leave one warp a single row; more columns, and rows of 100 (not a multiple of
    // 8), stay on cuBLAS.
    for (int64_t cols : {1, 4, 8}) {
        const std::string name = "MUL_MAT f16 weights 264x41, " + std::to_string(cols) + (cols == 1 ? " column" : " columns");
        cs.push_back(compute_case(name.c_str(), 0, [=](ggml_context* c) {
            return ggml_mul_mat(c, t(c, GGML_TYPE_F16, 264, 41, 1, 1, "w"), t(c, GGML_TYPE_F32, 264, cols, 1, 1, "x")); }));
    }
    cs.push_back(compute_case("MUL_MAT f16 weights 100x40, 1 column", 0, [=](ggml_context* c) {
        return ggml_mul_mat(c, t(c, GGML_TYPE_F16, 100, 40, 1, 1, "w"), t(c, GGML_TYPE_F32, 100, 1, 1, 1, "x")); }));
    // 2 to 8 columns (batched decode) with K a multiple of 32 take the few-column kernel: 41 rows end in a
    // partial tile, K = 1152 (36 steps of 32) leaves its 8 warps 4 or 5 steps each.
    for (int64_t k : {256, 512, 1152})
        for (int64_t cols : {2, 5, 8}) {
            const std::string name = "MUL_MAT f16 weights " + std::to_string(k) + "x41, " + std::to_string(cols) + " columns";
            cs.push_back(compute_case(name.c_str(), 0, [=](ggml_context* c) {
                return ggml_mul_mat(c, t(c, GGML_TYPE_F16, k, 41, 1, 1, "w"), t(c, GGML_TYPE_F32, k, cols, 1, 1, "x")); }));
        }
    // Two in a row, the second reading the first's output.
    cs.push_back(compute_case("MUL_MAT f16 weights 512x192 then 192x300, 5 columns", 0, [=](ggml_context* c) {
        ggml_tensor* h = ggml_mul_mat(c, t(c, GGML_TYPE_F16, 512, 192, 1, 1, "w1"), t(c, GGML_TYPE_F32, 512, 5, 1, 1, "x"));
        return ggml_mul_mat(c, t(c, GGML_TYPE_F16, 192, 300, 1, 1, "w2"), h); }));
    // Q8_0 weights are stored as f16 on the GPU: GET_ROWS rounds d * q to f16; MUL_MAT differs from ggml's
    // CPU, which quantizes the activations to Q8_0, by that quantization.
    cs.push_back(compute_case("GET_ROWS q8_0", 50, [=](ggml_context* c) {
        return ggml_get_rows(c, t(c, GGML_TYPE_Q8_0, 64, 50, 1, 1, "w"), t(c, GGML_TYPE_I32, 7, 1, 1, 1, "idx")); }, 1e-6));
    cs.push_back(compute_case("MUL_MAT q8_0 weights", 0, [=](ggml_context* c) {
        return ggml_mul_mat(c, t(c, GGML_TYPE_Q8_0, 128, 40, 1, 1, "w"), t(c, GGML_TYPE_F32, 128, 9, 1, 1, "x")); }, 1e-4));
    // The other weight types that are stored as f16 on the GPU (weight_blocks.h), likewise (ggml's CPU takes
    // the activations in BF16 for BF16 weights, in Q8_0 for Q4_0, Q5_0 and IQ4_NL, in Q8_1 for Q4_1 and Q5_1
    // and in Q8_K for the K-quants and IQ4_XS). Rows of 256 and 512: whole super-blocks; one column
    // (generation) and seven (a prompt batch).
    for (int id : converted_types()) {
        if (id == GGML_TYPE_Q8_0) continue;  // above
        const ggml_type wt = ggml_type(id);
        const std::string type = ggml_type_name(wt);
        cs.push_back(compute_case(("GET_ROWS " + type).c_str(), 50, [=](ggml_context* c) {
            return ggml_get_rows(c, t(c, wt, 256, 50, 1, 1, "w"), t(c, GGML_TYPE_I32, 7, 1, 1, 1, "idx")); }, 1e-6));
        for (int64_t k : {256, 512})
            for (int64_t cols : {1, 7}) {
                const int64_t rows = k == 256 ? 64 : 32;
                const std::string name = "MUL_MAT " + type + " weights " + std::to_string(k) + "x" + std::to_string(rows) + ", " +
                                         std::to_string(cols) + (cols == 1 ? " column" : " columns");
                cs.push_back(compute_case(name.c_str(), 0, [=](ggml_context* c) {
                    return ggml_mul_mat(c, t(c, wt, k, rows, 1, 1, "w"), t(c, GGML_TYPE_F32, k, cols, 1, 1, "x")); }, 1e-4));
            }
    }
    // Patterns the CUDA executor runs as one launch (fusion_cuda.h); the graphs also read the fused
    // nodes' own outputs, which must still be written.
    cs.push_back(compute_case("RMS_NORM then MUL by a weight row (fused), norm read again", 0, [=](ggml_context* c) {
        ggml_tensor* norm = ggml_rms_norm(c, t(c, GGML_TYPE_F32, 256, 3, 1, 1, "a"), 1e-5f);
        return ggml_add(c, ggml_mul(c, norm, t(c, GGML_TYPE_F32, 256, 1, 1, 1, "w")), norm); }));
    cs.push_back(compute_case("RMS_NORM, MUL, then two 1-column MUL_MATs (grouped), norm and MUL read again", 0, [=](ggml_context* c) {
        auto first24 = [c](ggml_tensor* y) { return ggml_view_4d(c, y, 24, 1, 1, 1, 96, 96, 96, 0); };
        ggml_tensor* norm = ggml_rms_norm(c, t(c, GGML_TYPE_F32, 264, 1, 1, 1, "x"), 1e-5f);
        ggml_tensor* mul = ggml_mul(c, norm, t(c, GGML_TYPE_F32, 264, 1, 1, 1, "wn"));
        ggml_tensor* q = ggml_mul_mat(c, t(c, GGML_TYPE_F16, 264, 40, 1, 1, "wq"), mul);
        ggml_tensor* k = ggml_mul_mat(c, t(c, GGML_TYPE_F16, 264, 24, 1, 1, "wk"), mul);
        return ggml_add(c, ggml_add(c, ggml_add(c, first24(q), k), first24(mul)), first24(norm)); }));
    cs.push_back(compute_case("RMS_NORM, MUL, gate and up 1-column MUL_MATs, SWIGLU (two launches)", 0, [=](ggml_context* c) {
        ggml_tensor* norm = ggml_rms_norm(c, t(c, GGML_TYPE_F32, 4096, 1, 1, 1, "x"), 1e-6f);
        ggml_tensor* mul = ggml_mul(c, norm, t(c, GGML_TYPE_F32, 4096, 1, 1, 1, "weights:wn"));
        ggml_tensor* g = ggml_mul_mat(c, t(c, GGML_TYPE_F16, 4096, 72, 1, 1, "wg"), mul);
        ggml_tensor* u = ggml_mul_mat(c, t(c, GGML_TYPE_F16, 4096, 72, 1, 1, "wu"), mul);
        return ggml_swiglu_split(c, g, u); }));
    // Rows longer than 8 values a thread of the RMS_NORM kernel (its loop); the MUL in place over the norm,
    // as ggml's allocator places it (the norm has no other reader).
    cs.push_back(compute_case("RMS_NORM of 8200 values then MUL (fused), a 1-column MUL_MAT", 0, [=](ggml_context* c) {
        ggml_tensor* norm = ggml_rms_norm(c, t(c, GGML_TYPE_F32, 8200, 1, 1, 1, "x"), 1e-5f);
        ggml_tensor* mul = ggml_mul(c, norm, t(c, GGML_TYPE_F32, 8200, 1, 1, 1, "wn"));
        return ggml_mul_mat(c, t(c, GGML_TYPE_F16, 8200, 24, 1, 1, "w"), mul); }));
    cs.push_back(compute_case("RMS_NORM then MUL in place over it (fused), three 1-column MUL_MATs (grouped)", 0, [=](ggml_context* c) {
        ggml_tensor* norm = ggml_set_name(ggml_rms_norm(c, t(c, GGML_TYPE_F32, 4096, 1, 1, 1, "x"), 1e-5f), "normed");
        ggml_tensor* mul = ggml_set_name(ggml_mul(c, norm, t(c, GGML_TYPE_F32, 4096, 1, 1, 1, "wn")), "reuses:normed");
        ggml_tensor* q = ggml_mul_mat(c, t(c, GGML_TYPE_F16, 4096, 64, 1, 1, "wq"), mul);
        ggml_tensor* k = ggml_mul_mat(c, t(c, GGML_TYPE_F16, 4096, 16, 1, 1, "wk"), mul);
        ggml_tensor* v = ggml_mul_mat(c, t(c, GGML_TYPE_F16, 4096, 16, 1, 1, "wv"), mul);
        return ggml_add(c, ggml_add(c, ggml_view_4d(c, q, 16, 1, 1, 1, 64, 64, 64, 0), k), v); }));
    // A decode step's K and V stored into f16 caches by the products' kernel (dense cache); the attention
    // reads the caches through the SET_ROWS outputs, and both caches are compared too.
    cs.push_back(compute_case("Q, K, V 1-column MUL_MATs, ROPEs and SET_ROWS of K and V into f16 caches (one launch), attention", 40, [=](ggml_context* c) {
        constexpr int64_t D = 64, heads = 4, heads_kv = 2, E = D * heads, n_kv = 40;
        ggml_tensor* norm = ggml_rms_norm(c, t(c, GGML_TYPE_F32, E, 1, 1, 1, "x"), 1e-5f);
        ggml_tensor* mul = ggml_mul(c, norm, t(c, GGML_TYPE_F32, E, 1, 1, 1, "wn"));
        ggml_tensor* pos = t(c, GGML_TYPE_I32, 1, 1, 1, 1, "pos");
        auto rope = [&](ggml_tensor* y, int64_t h) {
            ggml_tensor* rows = ggml_view_4d(c, y, D, h, 1, 1, D * sizeof(float), h * D * sizeof(float), h * D * sizeof(float), 0);
            return ggml_rope_ext(c, rows, pos, nullptr, int(D), 0, 0, 10000.0f, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
        };
        ggml_tensor* q = rope(ggml_mul_mat(c, t(c, GGML_TYPE_F16, E, E, 1, 1, "wq"), mul), heads);
        ggml_tensor* k = rope(ggml_mul_mat(c, t(c, GGML_TYPE_F16, E, D * heads_kv, 1, 1, "wk"), mul), heads_kv);
        ggml_tensor* v = ggml_mul_mat(c, t(c, GGML_TYPE_F16, E, D * heads_kv, 1, 1, "wv"), mul);
        ggml_tensor* idx = t(c, GGML_TYPE_I64, 1, 1, 1, 1, "idx");
        auto store = [&](ggml_tensor* y, const char* name) {
            ggml_tensor* row = ggml_view_4d(c, y, D * heads_kv, 1, 1, 1, D * heads_kv * 4, D * heads_kv * 4, D * heads_kv * 4, 0);
            ggml_tensor* set = ggml_set_rows(c, t(c, GGML_TYPE_F16, D * heads_kv, n_kv, 1, 1, name), row, idx);
            return ggml_view_4d(c, set, D, n_kv, heads_kv, 1, set->nb[1], D * 2, set->nb[1] * n_kv, 0);
        };
        ggml_tensor* ks = store(k, "kcache");
        ggml_tensor* vs = store(v, "vcache");
        ggml_tensor* qv = ggml_view_4d(c, q, D, 1, heads, 1, D * 4, D * 4, E * 4, 0);
        return ggml_flash_attn_ext(c, qv, ks, vs, t(c, GGML_TYPE_F16, n_kv, 1, 1, 1, "mask"), 1.0f / std::sqrt(float(D)), 0.0f, 0.0f); }));
    // Q and K of a decode step: the products rotate their rows as the ROPEs that follow them would.
    for (bool yarn : {false, true}) {
        const char* name = yarn ? "RMS_NORM, MUL, two 1-column MUL_MATs, each then a ROPE (fused), YaRN"
                                : "RMS_NORM, MUL, two 1-column MUL_MATs, each then a ROPE (fused)";
        cs.push_back(compute_case(name, 1000, [=](ggml_context* c) {
            ggml_tensor* norm = ggml_rms_norm(c, t(c, GGML_TYPE_F32, 256, 1, 1, 1, "x"), 1e-5f);
            ggml_tensor* mul = ggml_mul(c, norm, t(c, GGML_TYPE_F32, 256, 1, 1, 1, "wn"));
            ggml_tensor* pos = t(c, GGML_TYPE_I32, 1, 1, 1, 1, "pos");
            auto rope = [&](ggml_tensor* y, int64_t heads) {
                ggml_tensor* rows = ggml_view_4d(c, y, 64, heads, 1, 1, 64 * sizeof(float), heads * 64 * sizeof(float), heads * 64 * sizeof(float), 0);
                return ggml_rope_ext(c, rows, pos, nullptr, 64, 0, yarn ? 4096 : 0, 10000.0f,
                                     yarn ? 0.25f : 1.0f, yarn ? 1.0f : 0.0f, 1.0f, 32.0f, 1.0f);
            };
            ggml_tensor* q = rope(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 256, 1, 1, "wq"), mul), 4);
            ggml_tensor* k = rope(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 128, 1, 1, "wk"), mul), 2);
            auto flat128 = [c](ggml_tensor* y, size_t offset) { return ggml_view_4d(c, y, 128, 1, 1, 1, 512, 512, 512, offset); };
            return ggml_add(c, ggml_add(c, flat128(q, 0), flat128(q, 512)), flat128(k, 0)); }));
    }
    // V after the roped K, its output in K's unrotated output (ggml's allocator frees that once the ROPE has
    // read it): the three products in one launch, which leaves K's own output unwritten.
    cs.push_back(compute_case("Q and K 1-column MUL_MATs each then a ROPE, V's MUL_MAT in K's output memory (grouped)", 1000, [=](ggml_context* c) {
        ggml_tensor* x = t(c, GGML_TYPE_F32, 256, 1, 1, 1, "x");
        ggml_tensor* pos = t(c, GGML_TYPE_I32, 1, 1, 1, 1, "pos");
        auto rope = [&](ggml_tensor* y, int64_t heads) {
            ggml_tensor* rows = ggml_view_4d(c, y, 64, heads, 1, 1, 64 * sizeof(float), heads * 64 * sizeof(float), heads * 64 * sizeof(float), 0);
            return ggml_rope_ext(c, rows, pos, nullptr, 64, 0, 0, 10000.0f, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
        };
        auto flat128 = [c](ggml_tensor* y, size_t offset) { return ggml_view_4d(c, y, 128, 1, 1, 1, 512, 512, 512, offset); };
        ggml_tensor* q = rope(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 256, 1, 1, "wq"), x), 4);
        ggml_tensor* qsum = ggml_add(c, flat128(q, 0), flat128(q, 512));
        ggml_tensor* k = rope(ggml_set_name(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 128, 1, 1, "wk"), x), "Kcur"), 2);
        ggml_tensor* v = ggml_set_name(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 128, 1, 1, "wv"), x), "reuses:Kcur");
        return ggml_add(c, qsum, ggml_add(c, flat128(k, 0), v)); }));
    // Several columns (batched decode, the few-column kernel): each column a token at its own position; V in K's
    // unrotated output as above.
    for (int yarn = 0; yarn < 3; ++yarn) {
        const char* name = yarn == 0   ? "two 8-column MUL_MATs, each then a ROPE (fused)"
                           : yarn == 1 ? "two 8-column MUL_MATs, each then a ROPE (fused), YaRN"
                                       : "Q and K 8-column MUL_MATs each then a ROPE, V's MUL_MAT in K's output memory (grouped)";
        cs.push_back(compute_case(name, 1000, [=](ggml_context* c) {
            ggml_tensor* x = t(c, GGML_TYPE_F32, 256, 8, 1, 1, "x");
            ggml_tensor* pos = t(c, GGML_TYPE_I32, 8, 1, 1, 1, "pos");
            auto rope = [&](ggml_tensor* y, int64_t heads) {  // y: heads * 64 rows, 8 columns
                ggml_tensor* rows = ggml_view_4d(c, y, 64, heads, 8, 1, 64 * sizeof(float), y->nb[1], y->nb[1] * 8, 0);
                return ggml_rope_ext(c, rows, pos, nullptr, 64, 0, yarn == 1 ? 4096 : 0, 10000.0f, yarn == 1 ? 0.25f : 1.0f, yarn == 1 ? 1.0f : 0.0f,
                                     1.0f, 32.0f, 1.0f);
            };
            auto first128 = [c](ggml_tensor* r) { return ggml_view_4d(c, r, 128, 8, 1, 1, r->nb[2], r->nb[2] * 8, r->nb[2] * 8, 0); };
            ggml_tensor* q = rope(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 256, 1, 1, "wq"), x), 4);
            ggml_tensor* k = rope(ggml_set_name(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 128, 1, 1, "wk"), x), "Kcur8"), 2);
            if (yarn < 2) return ggml_add(c, first128(q), first128(k));
            ggml_tensor* v = ggml_set_name(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 128, 1, 1, "wv"), x), "reuses:Kcur8");
            return ggml_add(c, first128(q), ggml_add(c, first128(k), v)); }));
    }
    // The same groups at one column (the matrix-vector kernel) and at several (batched decode, the few-column
    // kernel): 37 and 41 rows end in partial tiles; K = 1152 leaves the few-column kernel's warps 4 or 5 steps each.
    struct Group {
        int64_t k, cols, glu_k, glu_cols;
    };
    for (const Group gr : {Group{264, 1, 264, 1}, Group{1152, 8, 256, 5}}) {
        const std::string cols = std::to_string(gr.cols) + "-column", glu_cols = std::to_string(gr.glu_cols) + "-column";
        cs.push_back(compute_case(("three " + cols + " MUL_MATs of one activation (grouped), 40, 24 and 40 rows").c_str(), 0, [=](ggml_context* c) {
            auto first24 = [c, gr](ggml_tensor* y, size_t offset) {
                return ggml_view_4d(c, y, 24, gr.cols, 1, 1, y->nb[1], y->nb[1] * gr.cols, y->nb[1] * gr.cols, offset);
            };
            ggml_tensor* x = t(c, GGML_TYPE_F32, gr.k, gr.cols, 1, 1, "x");
            ggml_tensor* q = ggml_mul_mat(c, t(c, GGML_TYPE_F16, gr.k, 40, 1, 1, "wq"), x);
            ggml_tensor* k = ggml_mul_mat(c, t(c, GGML_TYPE_F16, gr.k, 24, 1, 1, "wk"), x);
            ggml_tensor* sum = ggml_add(c, first24(q, 0), k);
            ggml_tensor* v = ggml_mul_mat(c, t(c, GGML_TYPE_F16, gr.k, 40, 1, 1, "wv"), x);
            return ggml_add(c, sum, first24(v, 16 * sizeof(float))); }));
        cs.push_back(compute_case(("gate and up " + glu_cols + " MUL_MATs then SWIGLU (fused), products read again").c_str(), 0, [=](ggml_context* c) {
            ggml_tensor* x = t(c, GGML_TYPE_F32, gr.glu_k, gr.glu_cols, 1, 1, "x");
            ggml_tensor* g = ggml_mul_mat(c, t(c, GGML_TYPE_F16, gr.glu_k, 37, 1, 1, "wg"), x);
            ggml_tensor* u = ggml_mul_mat(c, t(c, GGML_TYPE_F16, gr.glu_k, 37, 1, 1, "wu"), x);
            return ggml_add(c, ggml_swiglu_split(c, g, u), ggml_mul(c, g, u)); }));
        cs.push_back(compute_case((cols + " MUL_MAT then residual ADD (fused), product read again").c_str(), 0, [=](ggml_context* c) {
            ggml_tensor* y = ggml_mul_mat(c, t(c, GGML_TYPE_F16, gr.glu_k, 41, 1, 1, "w"), t(c, GGML_TYPE_F32, gr.glu_k, gr.cols, 1, 1, "x"));
            return ggml_mul(c, ggml_add(c, y, t(c, GGML_TYPE_F32, 41, gr.cols, 1, 1, "r")), y); }));
    }
    // In place, as ggml's allocator may give the ADD's or the SWIGLU's output a product's memory: the fused kernel
    // must write the sum (the SWIGLU) after the product.
    cs.push_back(compute_case("8-column MUL_MAT then residual ADD in the product's memory (fused)", 0, [=](ggml_context* c) {
        ggml_tensor* y = ggml_set_name(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 41, 1, 1, "w"), t(c, GGML_TYPE_F32, 256, 8, 1, 1, "x")), "y8");
        return ggml_set_name(ggml_add(c, y, t(c, GGML_TYPE_F32, 41, 8, 1, 1, "r")), "reuses:y8"); }));
    cs.push_back(compute_case("gate and up 8-column MUL_MATs then SWIGLU in gate's memory (fused)", 0, [=](ggml_context* c) {
        ggml_tensor* x = t(c, GGML_TYPE_F32, 256, 8, 1, 1, "x");
        ggml_tensor* g = ggml_set_name(ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 37, 1, 1, "wg"), x), "g8");
        ggml_tensor* u = ggml_mul_mat(c, t(c, GGML_TYPE_F16, 256, 37, 1, 1, "wu"), x);
        return ggml_set_name(ggml_swiglu_split(c, g, u), "reuses:g8"); }));
    cs.push_back(compute_case("MUL_MAT batched, weights broadcast", 0, [=](ggml_context* c) {
        return ggml_mul_mat(c, t(c, GGML_TYPE_F32, 32, 16, 2, 1, "w"), t(c, GGML_TYPE_F32, 32, 5, 4, 1, "x")); }));
    for (int mode : {0, 2}) {
        cs.push_back(compute_case(mode == 0 ? "ROPE normal" : "ROPE neox", 1000, [=](ggml_context* c) {
            return ggml_rope_ext(c, t(c, GGML_TYPE_F32, 128, 8, 6, 1, "a"), t(c, GGML_TYPE_I32, 6, 1, 1, 1, "pos"), nullptr, 128, mode,
                                 0, 10000.0f, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f); }));
    }
    cs.push_back(compute_case("ROPE neox, YaRN, partial dims", 1000, [=](ggml_context* c) {
        return ggml_rope_ext(c, t(c, GGML_TYPE_F32, 64, 4, 5, 1, "a"), t(c, GGML_TYPE_I32, 5, 1, 1, 1, "pos"), nullptr, 32, 2,
                             4096, 500000.0f, 0.25f, 1.0f, 1.0f, 32.0f, 1.0f); }));
    return cs;
}

ggml_tensor* named(ggml_tensor* t, const char* name) { return ggml_set_name(t, name); }

// llama.cpp's shapes: the cache is [D*n_head_kv, n_cells, 1, n_stream]; attention reads views of it.
// layers > 1: that many attentions over their own caches with one mask, each layer's output the next
// one's query (as in a model's graph, where the CUDA flavour computes the mask's tile lists once).
Case flash_attn_case(int64_t D, int64_t n_head, int64_t n_head_kv, int64_t n_q, int64_t n_kv, int64_t n_seq,
                     ggml_type kv_type, bool mask, float softcap, float max_bias, int layers = 1, bool run_mask = false) {
    char name[200];
    std::snprintf(name, sizeof name, "FLASH_ATTN_EXT D=%lld heads=%lld/%lld q=%lld kv=%lld seq=%lld kv=%s mask=%d%s softcap=%g alibi=%g layers=%d",
                  (long long)D, (long long)n_head, (long long)n_head_kv, (long long)n_q, (long long)n_kv,
                  (long long)n_seq, ggml_type_name(kv_type), int(mask), run_mask ? " (one zero run a row)" : "", softcap, max_bias, layers);
    auto build = [=](ggml_context* ctx) {
        ggml_tensor* q = named(ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, n_head, n_q, n_seq), "q");
        ggml_tensor* qp = ggml_permute(ctx, q, 0, 2, 1, 3);  // [D, n_q, n_head, n_seq]
        ggml_tensor* m = mask ? named(ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_kv, n_q, 1, n_seq), run_mask ? "mask_run" : "mask") : nullptr;
        ggml_tensor* out = nullptr;
        for (int l = 0; l < layers; ++l) {
            const std::string kn = "cache_k_l" + std::to_string(l), vn = "cache_v_l" + std::to_string(l);
            ggml_tensor* kc = named(ggml_new_tensor_4d(ctx, kv_type, D * n_head_kv, n_kv + 3, 1, n_seq), kn.c_str());
            ggml_tensor* vc = named(ggml_new_tensor_4d(ctx, kv_type, D * n_head_kv, n_kv + 3, 1, n_seq), vn.c_str());
            const size_t es = ggml_type_size(kv_type);
            ggml_tensor* k = ggml_view_4d(ctx, kc, D, n_kv, n_head_kv, n_seq, kc->nb[1], D * es, kc->nb[3], 0);
            ggml_tensor* v = ggml_view_4d(ctx, vc, D, n_kv, n_head_kv, n_seq, vc->nb[1], D * es, vc->nb[3], 0);
            ggml_tensor* query = out == nullptr ? qp : ggml_permute(ctx, out, 0, 2, 1, 3);  // out: [D, n_head, n_q, n_seq]
            out = ggml_flash_attn_ext(ctx, query, k, v, m, 1.0f / std::sqrt(float(D)), max_bias, softcap);
        }
        return out;
    };
    // The CPU flavour makes ggml's numerical choices (f16 query and accumulator on its per-row path,
    // f32 tiles, per-thread KV chunks), so only the order of f32 sums differs, which now and then
    // flips the last bit of an f16 accumulator. The CUDA flavour accumulates in f32 throughout, so
    // it differs from ggml's CPU by ggml's own f16 rounding.
    const bool cuda = std::strcmp(mustafar_flavour(), "cuda") == 0;
    // Each layer's error feeds the next one's query.
    return {name, build, (kv_type == GGML_TYPE_F32 ? (cuda ? 1e-9 : 1e-12) : (cuda ? 2e-5 : 1e-8)) * layers};
}

Case set_rows_case(ggml_type dst_type, ggml_type idx_type, int64_t width, int64_t n_rows, int64_t n_cells, int64_t ne2,
                   int64_t idx_ne1) {
    char name[128];
    std::snprintf(name, sizeof name, "SET_ROWS dst=%s idx=%s width=%lld rows=%lld cells=%lld ne2=%lld idx_ne1=%lld",
                  ggml_type_name(dst_type), ggml_type_name(idx_type), (long long)width, (long long)n_rows,
                  (long long)n_cells, (long long)ne2, (long long)idx_ne1);
    auto build = [=](ggml_context* ctx) {
        ggml_tensor* dst = named(ggml_new_tensor_4d(ctx, dst_type, width, n_cells, ne2, 1), "cache_k_l0");
        ggml_tensor* src = named(ggml_new_tensor_4d(ctx, GGML_TYPE_F32, width, n_rows, ne2, 1), "src");
        ggml_tensor* idx = named(ggml_new_tensor_4d(ctx, idx_type, n_rows, idx_ne1, 1, 1), "idx");
        return ggml_set_rows(ctx, dst, src, idx);
    };
    return {name, build, 0.0, n_cells};
}

Case copy_case(const char* what, ggml_type src_type, ggml_type dst_type, bool transposed) {
    char name[128];
    std::snprintf(name, sizeof name, "%s %s->%s%s", what, ggml_type_name(src_type), ggml_type_name(dst_type),
                  transposed ? " (transposed source)" : "");
    const bool cont = std::strcmp(what, "CONT") == 0;
    auto build = [=](ggml_context* ctx) {
        ggml_tensor* a = named(ggml_new_tensor_4d(ctx, src_type, 24, 10, 3, 2), "cache_v_l0");
        ggml_tensor* s = transposed ? ggml_transpose(ctx, a) : a;
        if (cont) return ggml_cont(ctx, s);
        ggml_tensor* b = named(ggml_new_tensor_4d(ctx, dst_type, s->ne[0], s->ne[1], s->ne[2], s->ne[3]), "dst");
        return ggml_cpy(ctx, s, b);
    };
    return {name, build, 0.0};
}

std::string fmt_g(double x) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2g", x);
    return b;
}

struct Dependence {
    double relative = 0;
    bool as_alone = true;
    bool repeatable = true;
    bool supported = true;
};

// How far the first `count` outputs of build(n) are from those of build(1) on one backend (the largest
// difference over the largest magnitude, or bit for bit equal), and whether build(n) computed twice gives the
// same bits. Leaves fill in order, so the first column (row) of every input is the same for every n.
Dependence dependence(ggml_backend_t backend, ggml_backend_buffer_type_t buft, ggml_backend_dev_t dev,
                      const std::function<Builder(int64_t)>& build, int64_t n, size_t count, uint64_t seed) {
    const Result alone = run(backend, buft, dev, build(1), seed, 0);
    const Result beside[2] = {run(backend, buft, dev, build(n), seed, 0), run(backend, buft, dev, build(n), seed, 0)};
    Dependence d;
    for (const Result* r : {&alone, &beside[0], &beside[1]}) d.supported = d.supported && r->supported && r->values.size() >= count;
    if (!d.supported) return d;
    double diff = 0, mag = 0;
    for (size_t i = 0; i < count; ++i) {
        diff = std::max(diff, std::fabs(double(beside[0].values[i]) - alone.values[i]));
        mag = std::max(mag, std::fabs(double(alone.values[i])));
        d.as_alone = d.as_alone && std::memcmp(&beside[0].values[i], &alone.values[i], sizeof(float)) == 0;
    }
    d.relative = mag > 0 ? diff / mag : diff;
    d.repeatable = std::memcmp(beside[0].values.data(), beside[1].values.data(), beside[0].values.size() * sizeof(float)) == 0;
    return d;
}

// The weight formats that the CUDA flavour converts to f16 when they are uploaded (weight_blocks.h), decoded on
// the host against ggml's own dequantisation of the same blocks, so that CI checks them without a GPU: rows that
// ggml quantizes from uniform floats of magnitudes 2^-4 to 2^3, every other row offset from 0 (the formats with a
// min). A value may differ from ggml's by the rounding of one product, where one compiler fuses a multiply with
// the add that follows it and the other does not: at most 2^-21 of its row's largest magnitude. Returns the
// formats that failed.
int check_weight_blocks(uint64_t seed) {
    int failed = 0;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    constexpr int64_t kPerRow = 512, kRows = 16, kN = kPerRow * kRows;
    for (int type : converted_types()) {
        const ggml_type gt = ggml_type(type);
        const ggml_type_traits* traits = ggml_get_type_traits(gt);
        int64_t values = 0;
        size_t bytes = 0;
        mustafar::blocks::with_format(type, [&](auto format) {
            values = decltype(format)::kValues;
            bytes = decltype(format)::kBytes;
        });
        if (traits == nullptr || traits->to_float == nullptr || traits->blck_size != values || traits->type_size != bytes) {
            std::printf("FAIL weight blocks %s: ggml's block is %lld values in %zu bytes, ours %lld in %zu\n", ggml_type_name(gt),
                        traits ? (long long)traits->blck_size : -1LL, traits ? traits->type_size : size_t(0), (long long)values, bytes);
            ++failed;
            continue;
        }
        std::vector<float> x(kN), ref(kN), ours(kN);
        for (int64_t r = 0; r < kRows; ++r) {
            const float scale = std::ldexp(1.0f, int(r % 8) - 4), offset = r % 2 ? 0.5f * scale : 0.0f;
            for (int64_t i = 0; i < kPerRow; ++i) x[r * kPerRow + i] = uni(rng) * scale + offset;
        }
        std::vector<uint8_t> q(size_t(kN / values) * bytes);
        ggml_quantize_chunk(gt, x.data(), q.data(), 0, kRows, kPerRow, nullptr);
        traits->to_float(q.data(), ref.data(), kN);
        mustafar::blocks::with_format(type, [&](auto format) {
            using Format = decltype(format);
            for (int64_t k = 0; k < kN; ++k) ours[k] = Format::value(q.data() + (k / values) * bytes, int(k % values));
        });
        int64_t equal = 0, beyond = 0;
        double worst = 0;  // the largest difference, relative to its row's largest magnitude
        for (int64_t r = 0; r < kRows; ++r) {
            float row_max = 0;
            for (int64_t i = 0; i < kPerRow; ++i) row_max = std::max(row_max, std::fabs(ref[r * kPerRow + i]));
            for (int64_t i = 0; i < kPerRow; ++i) {
                const float a = ours[r * kPerRow + i], b = ref[r * kPerRow + i];
                equal += std::memcmp(&a, &b, sizeof a) == 0;
                const double d = std::fabs(double(a) - double(b)) / (row_max > 0 ? row_max : 1.0f);
                worst = std::max(worst, std::isnan(d) ? INFINITY : d);
                beyond += !(d <= std::ldexp(1.0, -21));
            }
        }
        const bool ok = beyond == 0;
        std::printf("%s weight blocks %s on the host against ggml's dequantisation: %lld values, %lld bit for bit, largest difference "
                    "%.3g of the row's largest\n",
                    ok ? "ok  " : "FAIL", ggml_type_name(gt), (long long)kN, (long long)equal, worst);
        failed += ok ? 0 : 1;
    }
    return failed;
}

}  // namespace

int main(int argc, char** argv) {
    const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : std::random_device{}();
    std::printf("op_conformance seed %llu\n", (unsigned long long)seed);
    // The replay checks below need CUDA graphs, which the CUDA flavour leaves off by default where
    // launches overlap (compute capability 9.0 on): turned on here unless the environment decides.
    setenv("MUSTAFAR_CUDA_GRAPHS", "1", 0);

    ggml_backend_reg_t reg = ggml_backend_init();
    if (reg == nullptr) {
        std::printf("FAIL: ggml_backend_init returned null (ABI mismatch)\n");
        return 1;
    }
    ggml_backend_dev_t dev = reg->iface.get_device(reg, 0);
    ggml_backend_t ours = ggml_backend_dev_init(dev, nullptr);
    ggml_backend_t cpu = ggml_backend_cpu_init();
    // Same thread count on both sides, as llama.cpp sets it: long decodes are split per thread.
    const int n_threads = 3;
    ggml_backend_cpu_set_n_threads(cpu, n_threads);
    using SetThreads = void (*)(ggml_backend_t, int);
    const auto set_threads = reinterpret_cast<SetThreads>(reg->iface.get_proc_address(reg, "ggml_backend_set_n_threads"));
    set_threads(ours, n_threads);
    ggml_backend_buffer_type_t our_buft = ggml_backend_dev_buffer_type(dev);
    // The same device without fusions (fusion_cuda.h): fused launches must give the unfused results bit
    // for bit.
    const bool computes_model_ops = std::strcmp(mustafar_flavour(), "cuda") == 0;
    ggml_backend_t unfused = nullptr;
    if (computes_model_ops) {
        setenv("MUSTAFAR_NO_FUSION", "1", 1);
        unfused = ggml_backend_dev_init(dev, nullptr);
        unsetenv("MUSTAFAR_NO_FUSION");
        set_threads(unfused, n_threads);
    }

    std::vector<Case> cases;
    for (ggml_type dt : {GGML_TYPE_F16, GGML_TYPE_F32})
        for (ggml_type it : {GGML_TYPE_I64, GGML_TYPE_I32}) cases.push_back(set_rows_case(dt, it, 256, 7, 32, 1, 1));
    cases.push_back(set_rows_case(GGML_TYPE_F16, GGML_TYPE_I64, 64, 5, 16, 4, 1));  // index broadcast over dim 2
    cases.push_back(set_rows_case(GGML_TYPE_F16, GGML_TYPE_I64, 64, 5, 16, 4, 2));
    cases.push_back(set_rows_case(GGML_TYPE_BF16, GGML_TYPE_I64, 64, 5, 16, 1, 1));
    for (const char* what : {"CPY", "CONT"})
        for (ggml_type s : {GGML_TYPE_F32, GGML_TYPE_F16})
            for (ggml_type d : {GGML_TYPE_F32, GGML_TYPE_F16})
                for (bool tr : {false, true}) {
                    if (std::strcmp(what, "CONT") == 0 && s != d) continue;
                    cases.push_back(copy_case(what, s, d, tr));
                }
    for (int64_t D : {8, 16, 64, 128, 256})
        for (int64_t gqa : {1, 2, 4, 8}) cases.push_back(flash_attn_case(D, 8, 8 / gqa, 5, 37, 1, GGML_TYPE_F16, true, 0, 0));
    cases.push_back(flash_attn_case(128, 32, 8, 1, 300, 1, GGML_TYPE_F16, true, 0, 0));    // decode, Llama-3-8B shape
    cases.push_back(flash_attn_case(128, 4, 2, 33, 300, 3, GGML_TYPE_F16, true, 0, 0));    // several sequences
    cases.push_back(flash_attn_case(64, 8, 2, 7, 64, 1, GGML_TYPE_F16, false, 0, 0));      // no mask
    cases.push_back(flash_attn_case(64, 8, 2, 7, 64, 1, GGML_TYPE_F16, true, 30.0f, 0));   // soft-capping
    cases.push_back(flash_attn_case(64, 8, 2, 7, 64, 1, GGML_TYPE_F16, true, 0, 8.0f));    // ALiBi
    cases.push_back(flash_attn_case(64, 8, 4, 7, 64, 1, GGML_TYPE_F32, true, 0, 0));       // f32 cache
    cases.push_back(flash_attn_case(128, 32, 8, 1, 1000, 1, GGML_TYPE_F16, true, 0, 0));   // long decode: KV split per thread
    cases.push_back(flash_attn_case(128, 32, 8, 4, 1000, 1, GGML_TYPE_F16, true, 0, 0, 3));  // three layers, one mask
    // Three layers over a decode step's masks (the CUDA kernels walk such rows without their tile lists, the later
    // layers reading the first one's ranges before their wait).
    cases.push_back(flash_attn_case(128, 32, 8, 1, 1000, 2, GGML_TYPE_F16, true, 0, 0, 3, true));
    cases.push_back(flash_attn_case(64, 8, 2, 4, 300, 1, GGML_TYPE_F16, true, 0, 0, 3, true));
    cases.push_back(flash_attn_case(128, 8, 2, 70, 200, 1, GGML_TYPE_F16, true, 0, 0));    // prompt batch: f32 tiles
    cases.push_back(flash_attn_case(16, 8, 4, 100, 200, 2, GGML_TYPE_F16, true, 0, 0));

    for (Case& c : compute_cases()) cases.push_back(std::move(c));

    int failed = check_weight_blocks(seed);
    size_t checks = cases.size() + converted_types().size();
    if (computes_model_ops) {
        // No GPU holds 4 TiB: the allocation must be refused, and every case below then runs after it (a refused
        // allocation once failed the next launch's error check).
        ggml_backend_buffer_t huge = ggml_backend_buft_alloc_buffer(our_buft, size_t(1) << 42);
        std::printf("%s a 4 TiB buffer: %s\n", huge == nullptr ? "ok  " : "FAIL", huge == nullptr ? "refused" : "allocated");
        if (huge != nullptr) ggml_backend_buffer_free(huge);
        failed += huge == nullptr ? 0 : 1;
        ++checks;
    }
    for (const Case& c : cases) {
        const Result ref = run(cpu, ggml_backend_cpu_buffer_type(), nullptr, c.build, seed, c.index_range);
        const Result got = run(ours, our_buft, dev, c.build, seed, c.index_range);
        if (c.compute && !computes_model_ops) {
            // The CPU flavour leaves model ops to ggml's CPU backend and must say so.
            std::printf("%s %s: supports_op is false on the CPU flavour\n", got.supported ? "FAIL" : "ok  ", c.name.c_str());
            failed += got.supported ? 1 : 0;
            continue;
        }
        if (!got.supported) {
            std::printf("FAIL %s: not supported by our backend\n", c.name.c_str());
            ++failed;
            continue;
        }
        const double e = nmse(got.values, ref.values);
        bool ok = got.values.size() == ref.values.size() && e <= c.max_nmse;
        std::string unfused_note;
        if (c.compute && unfused != nullptr) {
            const Result plain = run(unfused, our_buft, dev, c.build, seed, c.index_range);
            const bool same_size = plain.values.size() == got.values.size();
            size_t differ = 0;
            for (size_t k = 0; same_size && k < got.values.size(); ++k) differ += std::memcmp(&got.values[k], &plain.values[k], sizeof(float)) != 0;
            ok = ok && same_size && differ == 0;
            unfused_note = !same_size ? ", unfused: another size" : differ == 0 ? ", bits as unfused" : ", " + std::to_string(differ) + " values differ from unfused";
        }
        std::printf("%s %s: nmse %.3g (limit %.1g)%s\n", ok ? "ok  " : "FAIL", c.name.c_str(), e, c.max_nmse, unfused_note.c_str());
        failed += ok ? 0 : 1;
    }

    // A repeated graph, round by round against ggml's CPU backend on the same inputs.
    if (computes_model_ops) {
        constexpr int kRounds = 4;
        using Count = uint64_t (*)();
        const auto replayed = reinterpret_cast<Count>(reg->iface.get_proc_address(reg, "mustafar_graphs_replayed"));
        const uint64_t before = replayed();
        const std::vector<Result> ref = run_rounds(cpu, ggml_backend_cpu_buffer_type(), nullptr, decode_layer(), seed, 0, kRounds);
        const std::vector<Result> got = run_rounds(ours, our_buft, dev, decode_layer(), seed, 0, kRounds);
        // Rounds 3 and 4 are replays, unless MUSTAFAR_CUDA_GRAPHS=0 turns them off (main turns them on).
        const char* graphs = std::getenv("MUSTAFAR_CUDA_GRAPHS");
        const uint64_t want = graphs != nullptr && std::strcmp(graphs, "0") == 0 ? 0 : kRounds - 2;
        const bool replays_ok = replayed() - before == want;
        std::printf("%s decode layer: %llu of %d rounds replayed as a CUDA graph (expected %llu)\n", replays_ok ? "ok  " : "FAIL",
                    (unsigned long long)(replayed() - before), kRounds, (unsigned long long)want);
        failed += replays_ok ? 0 : 1;
        ++checks;
        for (int round = 0; round < kRounds; ++round, ++checks) {
            const double e = got[round].supported ? nmse(got[round].values, ref[round].values) : INFINITY;
            const bool ok = got[round].values.size() == ref[round].values.size() && e <= 2e-5;
            std::printf("%s decode layer, round %d of one graph computed %d times: nmse %.3g (limit 2e-05)\n", ok ? "ok  " : "FAIL", round + 1,
                        kRounds, e);
            failed += ok ? 0 : 1;
        }
    }

    // Batch dependence: whether a row's result changes with the rows computed beside it. A continuous-batching
    // engine computes a request's token in micro-batches whose size follows the other requests' timing, so where a
    // row depends on its batch, a concurrent request's greedy text can part from its text alone at a near tie.
    // Reported, not checked (both flavours depend on it): ggml's CPU backend, whose numerics the CPU flavour's
    // attention copies, splits one decode row's cells among its threads and several rows by row, with f16
    // accumulators; the CUDA flavour takes our matrix-vector kernel for one column and cuBLAS's choice by shape
    // for more, and splits each decode row's cells by the batch's size (32 rows and more take the prompt kernel).
    // Checked: the same batch computed twice gives the same bits (a request alone is reproducible).
    {
        constexpr int64_t K = 4096, M = 4096, D = 128, heads = 32, heads_kv = 8, n_kv = 4096;
        auto mul_mat = [](int64_t n) -> Builder {
            return [=](ggml_context* c) {
                return ggml_mul_mat(c, named(ggml_new_tensor_4d(c, GGML_TYPE_F16, K, M, 1, 1), "w"), named(ggml_new_tensor_4d(c, GGML_TYPE_F32, K, n, 1, 1), "x"));
            };
        };
        auto attention = [](int64_t rows) -> Builder {
            return [=](ggml_context* c) {
                ggml_tensor* q = ggml_permute(c, named(ggml_new_tensor_4d(c, GGML_TYPE_F32, D, heads, rows, 1), "q"), 0, 2, 1, 3);
                ggml_tensor* kc = named(ggml_new_tensor_4d(c, GGML_TYPE_F16, D * heads_kv, n_kv, 1, 1), "cache_k_l0");
                ggml_tensor* vc = named(ggml_new_tensor_4d(c, GGML_TYPE_F16, D * heads_kv, n_kv, 1, 1), "cache_v_l0");
                ggml_tensor* k = ggml_view_4d(c, kc, D, n_kv, heads_kv, 1, kc->nb[1], D * 2, kc->nb[1] * n_kv, 0);
                ggml_tensor* v = ggml_view_4d(c, vc, D, n_kv, heads_kv, 1, vc->nb[1], D * 2, vc->nb[1] * n_kv, 0);
                ggml_tensor* m = named(ggml_new_tensor_4d(c, GGML_TYPE_F16, n_kv, rows, 1, 1), "mask");
                return ggml_flash_attn_ext(c, q, k, v, m, 1.0f / std::sqrt(float(D)), 0.0f, 0.0f);
            };
        };
        auto report = [&](const std::string& what, const char* backend_name, const Dependence& d, bool checked) {
            const bool ok = !checked || (d.supported && d.repeatable);
            std::printf("%s %s on %s: ", checked ? (ok ? "ok  " : "FAIL") : "info", what.c_str(), backend_name);
            if (!d.supported) std::printf("not computed there\n");
            else
                std::printf("%s twice; %s\n", d.repeatable ? "the same bits" : "OTHER BITS", d.as_alone ? "every bit as alone" :
                            ("differs from alone by up to " + fmt_g(d.relative) + " of its largest value (batch dependence)").c_str());
            if (checked) {
                failed += ok ? 0 : 1;
                ++checks;
            }
        };
        const char* flavour = computes_model_ops ? "the CUDA flavour" : "the CPU flavour";
        for (int64_t n : {2, 8, 64}) {
            const std::string what = "MUL_MAT f16 4096x4096, column 0 of " + std::to_string(n);
            report(what, "ggml's CPU backend", dependence(cpu, ggml_backend_cpu_buffer_type(), nullptr, mul_mat, n, size_t(M), seed), false);
            if (computes_model_ops) report(what, flavour, dependence(ours, our_buft, dev, mul_mat, n, size_t(M), seed), true);
        }
        for (int64_t rows : {2, 8, 40}) {
            const std::string what = "FLASH_ATTN_EXT D=128 heads=32/8 kv=4096, row 0 of " + std::to_string(rows);
            report(what, "ggml's CPU backend", dependence(cpu, ggml_backend_cpu_buffer_type(), nullptr, attention, rows, size_t(D * heads), seed), false);
            report(what, flavour, dependence(ours, our_buft, dev, attention, rows, size_t(D * heads), seed), true);
        }
    }

    ggml_backend_free(ours);
    if (unfused != nullptr) ggml_backend_free(unfused);
    ggml_backend_free(cpu);
    std::printf("%d of %zu cases failed\n", failed, checks);
    return failed == 0 ? 0 : 1;
}
