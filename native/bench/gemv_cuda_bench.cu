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

#include "../tests/cuda_exit_on_error.h"
#include "cuda/gemv_cuda.h"

namespace {

namespace mc = mustafar::cuda;

constexpr int64_t kHidden = 4096, kQkv = 4096 + 2 * 1024, kFfn = 14336, kVocab = 128256;
constexpr int kLayers = 32;

struct DevMem {
    void* p = nullptr;
    explicit DevMem(size_t bytes) { CK(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
    ~DevMem() { cudaFree(p); }
    DevMem(const DevMem&) = delete;
    DevMem& operator=(const DevMem&) = delete;
    template <typename T>
    T* as() const { return static_cast<T*>(p); }
};

// Values in [-scale, scale): the products stay finite over any number of layers.
__global__ void fill_f16(__half* x, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        x[i] = __float2half_rn((float(h & 0xffffu) / 65536.0f - 0.5f) * 2.0f * scale);
    }
}

__global__ void read_all(const uint4* x, size_t n, uint32_t* sink) {
    uint32_t acc = 0;
    const size_t stride = size_t(gridDim.x) * blockDim.x;
    size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 r[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) r[j] = __ldcs(x + i + j * stride);
#pragma unroll
        for (int j = 0; j < 4; ++j) acc ^= r[j].x ^ r[j].y ^ r[j].z ^ r[j].w;
    }
    for (; i < n; i += stride) acc ^= x[i].x;
    if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;  // keeps the loads
}

struct Timer {
    cudaEvent_t a, b;
    Timer() {
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
    }
    ~Timer() {
        cudaEventDestroy(a);
        cudaEventDestroy(b);
    }
    template <typename F>
    double us_per_call(int reps, F&& call) {
        for (int i = 0; i < 2; ++i) call();
        CK(cudaEventRecord(a));
        for (int i = 0; i < reps; ++i) call();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        return 1000.0 * ms / reps;
    }
};

std::unique_ptr<DevMem> weights(int64_t rows, int64_t cols, uint32_t seed) {
    auto m = std::make_unique<DevMem>(size_t(rows) * cols * 2);
    // Scale 1/sqrt(cols): outputs of the size of the inputs.
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

void out_proj(const Layer& l, Acts& a) {
    mc::GemvGroup g;
    g.K = kHidden;
    g.x = a.attn.as<float>();
    g.n = 1;
    g.part[0] = part(*l.o, kHidden, kHidden, a.o.as<float>());
    g.part[0].add = a.x.as<float>();
    g.part[0].sum = a.sum.as<float>();
    run(g);
}

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

void down_proj(const Layer& l, Acts& a) {
    mc::GemvGroup g;
    g.K = kFfn;
    g.x = a.glu.as<float>();
    g.n = 1;
    g.part[0] = part(*l.down, kHidden, kFfn, a.down.as<float>());
    g.part[0].add = a.x.as<float>();
    g.part[0].sum = a.sum.as<float>();
    run(g);
}

void head(const DevMem& w, Acts& a) {
    mc::GemvGroup g;
    g.K = kHidden;
    g.x = a.x.as<float>();
    g.n = 1;
    g.part[0] = part(w, kVocab, kHidden, a.logits.as<float>());
    run(g);
}

std::string fmt(const char* f, double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, x);
    return buf;
}

}  // namespace

int main(int argc, char** argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("SKIP: no CUDA device\n");
        return 0;
    }
    cudaDeviceProp prop{};
    CK(cudaGetDeviceProperties(&prop, 0));
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
    const double step = t.us_per_call(10, [&] {
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
        kinds[k].us = t.us_per_call(10, [&] {
                          for (const Layer& l : layers) {
                              if (k == 0) qkv(l, a);
                              if (k == 1) out_proj(l, a);
                              if (k == 2) gate_up(l, a);
                              if (k == 3) down_proj(l, a);
                          }
                      }) /
                      kLayers;
    kinds.push_back({"output head", b_head, t.us_per_call(10, [&] { head(*out_head, a); })});
    // The floor: a plain read of the gate and up weights of every layer (65 % of the step's bytes).
    DevMem sink(size_t(prop.multiProcessorCount) * 4 * 4);
    const double read = t.us_per_call(10, [&] {
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
