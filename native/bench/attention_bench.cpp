// CPU benchmark of decode attention over the KV cache, Llama-3-8B attention shape (32 query heads,
// 8 KV heads, head_dim 128): KV bytes per token and time per attention call, dense f16 cache
// (our backend and ggml's CPU backend) against the Mustafar cache at s = 0.5 and 0.7.
// Usage: attention_bench <threads> <results.md> [commit]
//        attention_bench --one <threads> <context> <cache: 0 ggml, 1 ours dense, 2 s = 0.5, 3 s = 0.7> [calls]
//        (one point, µs per call on one line: to compare builds call by call, e.g. with LD_PRELOAD of another library)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../include/mustafar.h"
#include "../tests/ggml_graph_api.h"

namespace {

constexpr int64_t kHeads = 32, kHeadsKv = 8, kD = 128, kLayers = 32, kWindow = 32, kUbatch = 512;

struct Setup {
    ggml_backend_t backend;
    ggml_backend_buffer_type_t buft;
    double sparsity;  // < 0: dense cache
};

std::string cpu_name() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown CPU";
}

// Builds a cache of n_ctx cells, fills it like llama.cpp does (SET_ROWS per micro-batch, then
// attention, which compresses what left the window), then times one-token decode attention.
struct Result {
    double us;
    size_t cache_bytes;  // K + V of one layer
};

Result run(const Setup& s, int64_t n_ctx, int reps, std::mt19937_64& rng) {
    if (s.sparsity >= 0) {
        mustafar_cache_config cfg{s.sparsity, s.sparsity, int32_t(kWindow), int32_t(kD), int32_t(kD), 1, int32_t(kUbatch), 99};
        mustafar_set_cache_config(&cfg);
    }
    ggml_context* cctx = ggml_init({1 << 20, nullptr, true});
    ggml_tensor* kc = ggml_set_name(ggml_new_tensor_4d(cctx, GGML_TYPE_F16, kD * kHeadsKv, n_ctx, 1, 1), "cache_k_l0");
    ggml_tensor* vc = ggml_set_name(ggml_new_tensor_4d(cctx, GGML_TYPE_F16, kD * kHeadsKv, n_ctx, 1, 1), "cache_v_l0");
    ggml_backend_buffer_t cbuf = ggml_backend_alloc_ctx_tensors_from_buft(cctx, s.buft);
    mustafar_set_cache_config(nullptr);
    Result r{0, ggml_backend_buffer_get_size(cbuf)};

    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto attention_graph = [&](int64_t n_q, int64_t n_kv, std::vector<ggml_tensor*>& inputs, ggml_context*& ctx) {
        ctx = ggml_init({1 << 20, nullptr, true});
        ggml_tensor* q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, kD, kHeads, n_q, 1);
        ggml_tensor* k = ggml_view_4d(ctx, kc, kD, n_kv, kHeadsKv, 1, kc->nb[1], kD * 2, kc->nb[3], 0);
        ggml_tensor* v = ggml_view_4d(ctx, vc, kD, n_kv, kHeadsKv, 1, vc->nb[1], kD * 2, vc->nb[3], 0);
        ggml_tensor* mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_kv, n_q, 1, 1);
        ggml_tensor* out = ggml_flash_attn_ext(ctx, ggml_permute(ctx, q, 0, 2, 1, 3), k, v, mask, 1.0f / std::sqrt(float(kD)), 0, 0);
        ggml_cgraph* g = ggml_new_graph(ctx);
        ggml_build_forward_expand(g, out);
        inputs = {q, mask};
        return g;
    };

    // Fill: micro-batches of SET_ROWS + causal attention, as a prompt would.
    for (int64_t start = 0; start < n_ctx; start += kUbatch) {
        const int64_t n = std::min(kUbatch, n_ctx - start);
        ggml_context* ctx = ggml_init({1 << 20, nullptr, true});
        ggml_tensor* kcur = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, kD * kHeadsKv, n, 1, 1);
        ggml_tensor* vcur = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, kD * kHeadsKv, n, 1, 1);
        ggml_tensor* idx = ggml_new_tensor_4d(ctx, GGML_TYPE_I64, n, 1, 1, 1);
        ggml_cgraph* g = ggml_new_graph(ctx);
        ggml_build_forward_expand(g, ggml_set_rows(ctx, kc, kcur, idx));
        ggml_build_forward_expand(g, ggml_set_rows(ctx, vc, vcur, idx));
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(ctx, s.buft);
        std::vector<float> data(size_t(kD * kHeadsKv * n));
        for (auto& x : data) x = normal(rng);
        ggml_backend_tensor_set(kcur, data.data(), 0, data.size() * 4);
        for (auto& x : data) x = normal(rng);
        ggml_backend_tensor_set(vcur, data.data(), 0, data.size() * 4);
        std::vector<int64_t> rows(n);
        for (int64_t i = 0; i < n; ++i) rows[i] = start + i;
        ggml_backend_tensor_set(idx, rows.data(), 0, rows.size() * 8);
        ggml_backend_graph_compute(s.backend, g);
        ggml_backend_buffer_free(buf);
        ggml_free(ctx);
        // The last query of the micro-batch sees everything so far: the window moves on.
        std::vector<ggml_tensor*> in;
        ggml_context* actx;
        ggml_cgraph* ag = attention_graph(1, start + n, in, actx);
        ggml_backend_buffer_t abuf = ggml_backend_alloc_ctx_tensors_from_buft(actx, s.buft);
        std::vector<float> q(size_t(kD * kHeads));
        for (auto& x : q) x = normal(rng);
        ggml_backend_tensor_set(in[0], q.data(), 0, q.size() * 4);
        std::vector<uint16_t> mask(size_t(start + n), 0);
        ggml_backend_tensor_set(in[1], mask.data(), 0, mask.size() * 2);
        ggml_backend_graph_compute(s.backend, ag);
        ggml_backend_buffer_free(abuf);
        ggml_free(actx);
    }

    // Time decode: one query over all cells.
    std::vector<ggml_tensor*> in;
    ggml_context* actx;
    ggml_cgraph* ag = attention_graph(1, n_ctx, in, actx);
    ggml_backend_buffer_t abuf = ggml_backend_alloc_ctx_tensors_from_buft(actx, s.buft);
    std::vector<float> q(size_t(kD * kHeads));
    for (auto& x : q) x = normal(rng);
    ggml_backend_tensor_set(in[0], q.data(), 0, q.size() * 4);
    std::vector<uint16_t> mask(size_t(n_ctx), 0);
    ggml_backend_tensor_set(in[1], mask.data(), 0, mask.size() * 2);
    std::vector<double> times;
    for (int i = 0; i < reps + 1; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        ggml_backend_graph_compute(s.backend, ag);
        const auto t1 = std::chrono::steady_clock::now();
        if (i > 0) times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::sort(times.begin(), times.end());
    r.us = times[times.size() / 2];
    ggml_backend_buffer_free(abuf);
    ggml_free(actx);
    ggml_backend_buffer_free(cbuf);
    ggml_free(cctx);
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    const bool one = argc > 1 && std::string(argv[1]) == "--one";
    if (argc < 3 || (one && argc < 5)) {
        std::fprintf(stderr, "usage: %s <threads> <results.md> [commit]\n       %s --one <threads> <context> <cache 0-3> [calls]\n", argv[0], argv[0]);
        return 2;
    }
    const int threads = std::atoi(argv[one ? 2 : 1]);
    const std::string out_path = one ? "" : argv[2];
    const std::string commit = !one && argc > 3 ? argv[3] : "unknown";

    ggml_backend_reg_t reg = ggml_backend_init();
    if (reg == nullptr) return 1;
    ggml_backend_dev_t dev = reg->iface.get_device(reg, 0);
    ggml_backend_t ours = ggml_backend_dev_init(dev, nullptr);
    ggml_backend_t cpu = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(cpu, threads);
    using SetThreads = void (*)(ggml_backend_t, int);
    reinterpret_cast<SetThreads>(reg->iface.get_proc_address(reg, "ggml_backend_set_n_threads"))(ours, threads);

    const Setup setups[] = {
        {cpu, ggml_backend_cpu_buffer_type(), -1.0},
        {ours, ggml_backend_dev_buffer_type(dev), -1.0},
        {ours, ggml_backend_dev_buffer_type(dev), 0.5},
        {ours, ggml_backend_dev_buffer_type(dev), 0.7},
    };
    const char* names[] = {"ggml CPU, f16 cache", "Mustafar backend, dense f16", "Mustafar s = 0.5", "Mustafar s = 0.7"};

    if (one) {
        const int64_t n_ctx = std::atoll(argv[3]);
        const int cache = std::atoi(argv[4]);
        if (n_ctx < 1 || cache < 0 || cache > 3) return 2;
        std::mt19937_64 rng(1);
        const Result r = run(setups[cache], n_ctx, argc > 5 ? std::atoi(argv[5]) : 11, rng);
        std::printf("%s, %lld cells: %.0f us\n", names[cache], (long long)n_ctx, r.us);
        ggml_backend_free(ours);
        ggml_backend_free(cpu);
        return 0;
    }

    std::ostringstream table;
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
    table << "# Decode attention on the CPU, Llama-3-8B attention shape\n\n"
          << "Date " << date << ", commit " << commit << ", device: " << cpu_name() << ", " << threads << " threads.\n"
          << "Command: `native/bench/run-cpu.sh` (builds native/ and runs `attention_bench " << threads << " <file> <commit>`).\n\n"
          << "One layer: 32 query heads, 8 KV heads, head_dim 128, one query token, local window " << kWindow
          << ", micro-batch " << kUbatch << ". KV bytes per token = K + V of all 32 layers, dense pool included. "
          << "Time = median of repeated calls.\n\n"
          << "| context | cache | KV bytes/token (32 layers) | vs f16 | attention time (us) | vs ggml CPU |\n"
          << "|---|---|---|---|---|---|\n";
    std::mt19937_64 rng(1);
    for (int64_t n_ctx : {1024, 2048, 4096, 8192, 16384}) {
        double base_us = 0;
        size_t base_bytes = 0;
        for (int i = 0; i < 4; ++i) {
            const Result r = run(setups[i], n_ctx, n_ctx >= 8192 ? 5 : 11, rng);
            if (i == 0) {
                base_us = r.us;
                base_bytes = r.cache_bytes;
            }
            char line[256];
            std::snprintf(line, sizeof line, "| %lld | %s | %.0f | %.1f %% | %.0f | %.2fx |\n", (long long)n_ctx, names[i],
                          double(r.cache_bytes) * kLayers / double(n_ctx), 100.0 * double(r.cache_bytes) / double(base_bytes), r.us,
                          base_us / r.us);
            table << line;
            std::fputs(line, stdout);
            std::fflush(stdout);
        }
    }
    std::ofstream(out_path) << table.str();
    ggml_backend_free(ours);
    ggml_backend_free(cpu);
    return 0;
}
