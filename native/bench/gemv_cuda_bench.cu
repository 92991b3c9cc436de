// GPU benchmark of a batch-1 decode step's matrix-vector products on the Llama-3-8B shape (hidden 4096,
// 32 query and 8 KV heads of 128, FFN 14336, 32 layers, vocabulary 128256), f16 weights with random
// values: per layer the Q/K/V products in one launch, the output projection with its residual ADD,
// gate and up paired with their SWIGLU, the down projection with its ADD; then the output head. Every
// layer has its own weights (14 GB in all), so that L2 serves none of them, and the launches follow each
// other as in a decode step (programmatic dependent launch where the device has it). Prints the step's
// time and bandwidth on the weights, each kind of product alone (its 32 layers back to back), and a
// plain read of the same bytes; the norms, RoPEs, cache writes and attention of a real step are not here.
// Usage: gemv_cuda_bench [results.md] [commit]
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "bench_cuda.h"
#include "cuda/gemv_cuda.h"

namespace {

namespace mc = mustafar::cuda;
using namespace mustafar::bench;

constexpr int64_t kHidden = 4096, kQkv = 4096 + 2 * 1024, kFfn = 14336, kVocab = 128256;
constexpr int kLayers = 32;

std::unique_ptr<DevMem> weights(int64_t rows, int64_t cols, uint32_t seed) {
    auto m = std::make_unique<DevMem>(size_t(rows) * cols * 2);
    // Scale 1/sqrt(cols): outputs of the size of the inputs, finite over any number of layers.
    fill_f16<<<4096, 256>>>(m->as<__half>(), size_t(rows) * cols, seed, 1.7f / std::sqrt(float(cols)));
    CK(cudaGetLastError());
    return m;
}

struct Layer {
    std::unique_ptr<DevMem> qkv, o, gate, up, down;
};

// The activations of a step. The residual ADDs write their own buffer, not the stream the next products
// read: with random weights 32 layers of residual sums would overflow the f16 the activations are rounded to.
struct Acts {
    DevMem x{size_t(kHidden) * 4}, qkv{size_t(kQkv) * 4}, attn{size_t(kHidden) * 4}, o{size_t(kHidden) * 4}, sum{size_t(kHidden) * 4};
    DevMem gate{size_t(kFfn) * 4}, up{size_t(kFfn) * 4}, glu{size_t(kFfn) * 4}, down{size_t(kHidden) * 4}, logits{size_t(kVocab) * 4};
};

mc::GemvPart part(const DevMem& w, int64_t M, int64_t K, float* y) {
    mc::GemvPart p;
    p.w = w.as<__half>();
    p.ldw = size_t(K);
    p.M = M;
    p.y = y;
    return p;
}

void run(const mc::GemvGroup& g) {
    if (!mc::gemv_f16(g, nullptr)) {
        std::printf("gemv_f16 failed\n");
        std::exit(3);
    }
}

void qkv(const Layer& l, Acts& a) {
    mc::GemvGroup g;
    g.K = kHidden;
    g.x = a.x.as<float>();
    g.n = 3;
    g.part[0] = part(*l.qkv, 4096, kHidden, a.qkv.as<float>());
    g.part[1] = part(*l.qkv, 1024, kHidden, a.qkv.as<float>() + 4096);
    g.part[1].w += size_t(4096) * kHidden;
    g.part[2] = part(*l.qkv, 1024, kHidden, a.qkv.as<float>() + 5120);
    g.part[2].w += size_t(5120) * kHidden;
    run(g);
}

// One product y = w x.
mc::GemvGroup product(const DevMem& w, int64_t M, int64_t K, const DevMem& x, DevMem& y) {
    mc::GemvGroup g;
    g.K = K;
    g.x = x.as<float>();
    g.n = 1;
    g.part[0] = part(w, M, K, y.as<float>());
    return g;
}

// A product followed by the residual ADD (the output and down projections).
void product_add(const DevMem& w, int64_t M, int64_t K, const DevMem& x, DevMem& y, Acts& a) {
    mc::GemvGroup g = product(w, M, K, x, y);
    g.part[0].add = a.x.as<float>();
    g.part[0].sum = a.sum.as<float>();
    run(g);
}

void out_proj(const Layer& l, Acts& a) { product_add(*l.o, kHidden, kHidden, a.attn, a.o, a); }

void gate_up(const Layer& l, Acts& a) {
    mc::GemvGroup g;
    g.K = kHidden;
    g.x = a.x.as<float>();
    g.n = 2;
    g.paired = true;
    g.part[0] = part(*l.gate, kFfn, kHidden, a.gate.as<float>());
    g.part[1] = part(*l.up, kFfn, kHidden, a.up.as<float>());
    g.glu = a.glu.as<float>();
    run(g);
}

void down_proj(const Layer& l, Acts& a) { product_add(*l.down, kHidden, kFfn, a.glu, a.down, a); }

void head(const DevMem& w, Acts& a) { run(product(w, kVocab, kHidden, a.x, a.logits)); }

}  // namespace

int main(int argc, char** argv) {
    cudaDeviceProp prop{};
    if (!first_device(prop)) return 0;
    std::vector<Layer> layers(kLayers);
    for (int i = 0; i < kLayers; ++i) {
        const uint32_t s = 16u * uint32_t(i);
        layers[i].qkv = weights(kQkv, kHidden, s + 1);
        layers[i].o = weights(kHidden, kHidden, s + 2);
        layers[i].gate = weights(kFfn, kHidden, s + 3);
        layers[i].up = weights(kFfn, kHidden, s + 4);
        layers[i].down = weights(kHidden, kFfn, s + 5);
    }
    const auto out_head = weights(kVocab, kHidden, 999);
    Acts a;
    std::vector<float> x0(kHidden);
    for (int64_t i = 0; i < kHidden; ++i) x0[i] = float((i * 37) % 101) / 101.0f - 0.5f;
    CK(cudaMemcpy(a.x.p, x0.data(), x0.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(a.attn.p, x0.data(), x0.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize());

    const double b_qkv = double(kQkv) * kHidden * 2, b_o = double(kHidden) * kHidden * 2, b_gu = 2.0 * kFfn * kHidden * 2,
                 b_down = double(kHidden) * kFfn * 2, b_head = double(kVocab) * kHidden * 2;
    const double b_step = kLayers * (b_qkv + b_o + b_gu + b_down) + b_head;
    Timer t;
    const double step = t.us_per_call(10, [&](int) {
        for (const Layer& l : layers) {
            qkv(l, a);
            out_proj(l, a);
            gate_up(l, a);
            down_proj(l, a);
        }
        head(*out_head, a);
    });
    struct Kind {
        const char* name;
        double bytes;
        double us;
    };
    std::vector<Kind> kinds = {{"Q, K and V (one launch)", b_qkv, 0}, {"output + ADD", b_o, 0}, {"gate and up + SWIGLU", b_gu, 0}, {"down + ADD", b_down, 0}};
    for (int k = 0; k < 4; ++k)
        kinds[k].us = t.us_per_call(10, [&](int) {
                          for (const Layer& l : layers) {
                              if (k == 0) qkv(l, a);
                              if (k == 1) out_proj(l, a);
                              if (k == 2) gate_up(l, a);
                              if (k == 3) down_proj(l, a);
                          }
                      }) /
                      kLayers;
    kinds.push_back({"output head", b_head, t.us_per_call(10, [&](int) { head(*out_head, a); })});
    // The floor: a plain read of the gate and up weights of every layer (65 % of the step's bytes).
    DevMem sink(size_t(prop.multiProcessorCount) * 4 * 4);
    const double read = t.us_per_call(10, [&](int) {
        for (const Layer& l : layers) {
            read_all<<<prop.multiProcessorCount * 4, 512>>>(l.gate->as<uint4>(), size_t(kFfn) * kHidden * 2 / 16, sink.as<uint32_t>());
            read_all<<<prop.multiProcessorCount * 4, 512>>>(l.up->as<uint4>(), size_t(kFfn) * kHidden * 2 / 16, sink.as<uint32_t>());
            CK(cudaGetLastError());
        }
    });
    const double b_read = kLayers * b_gu;
    std::vector<float> logits(8);
    CK(cudaMemcpy(logits.data(), a.logits.p, logits.size() * 4, cudaMemcpyDeviceToHost));
    for (float v : logits)
        if (!std::isfinite(v)) {
            std::printf("non-finite logits\n");
            return 4;
        }

    std::string md;
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
    md += "# Decode-step matrix-vector products on the GPU: " + std::string(prop.name) + ", " + date + "\n\n";
    md += "Commit " + std::string(argc > 2 ? argv[2] : "unknown") + ". Program: `native/bench/gemv_cuda_bench.cu`. Llama-3-8B shape, f16 weights, batch 1;\n";
    md += "the products only (no norms, RoPE, cache writes or attention).\n\n";
    md += "| what | µs | weights (MB) | TB/s |\n|---|---|---|---|\n";
    md += "| a step's products (32 layers and the output head) | " + fmt("%.1f", step) + " | " + fmt("%.0f", b_step / 1e6) + " | " +
          fmt("%.2f", b_step / (step * 1e-6) / 1e12) + " |\n";
    for (const Kind& k : kinds)
        md += "| " + std::string(k.name) + ", each | " + fmt("%.2f", k.us) + " | " + fmt("%.1f", k.bytes / 1e6) + " | " +
              fmt("%.2f", k.bytes / (k.us * 1e-6) / 1e12) + " |\n";
    md += "| plain read of the gate and up weights (64 buffers of 117 MB) | " + fmt("%.1f", read) + " | " + fmt("%.0f", b_read / 1e6) + " | " +
          fmt("%.2f", b_read / (read * 1e-6) / 1e12) + " |\n";
    std::printf("%s", md.c_str());
    if (argc > 1) {
        FILE* f = std::fopen(argv[1], "w");
        if (f == nullptr) return 5;
        std::fputs(md.c_str(), f);
        std::fclose(f);
    }
    return 0;
}
