// GPU benchmark of the products of a batched decode step (2 to 8 activation columns) on the Llama-3-8B
// shapes, f16 weights with random values: per shape and column count, the conversion of the activations
// to f16 plus cublasGemmEx (as compute_cuda.cu issues them with MUSTAFAR_FEW_COLUMNS=0) against the
// few-column kernel. Weights rotate through copies of at least 256 MB in all, so
// that L2 serves none of them, and calls follow each other as in a step (programmatic dependent launch
// where the device has it). Prints GPU time a call, bandwidth on the weights, host time to issue a call,
// and the kernel's largest difference from cuBLAS (relative to cuBLAS's largest output).
// Usage: few_columns_cuda_bench [results.md] [commit]
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bench_cuda.h"
#include "cuda/few_columns_cuda.h"
#include "cuda/launch_cuda.h"

namespace {

namespace mc = mustafar::cuda;
using namespace mustafar::bench;

struct Shape {
    const char* name;
    int64_t M, K;
};
// One layer: Q and O, K and V, gate and up, down.
const Shape kShapes[] = {{"Q, O", 4096, 4096}, {"K, V", 1024, 4096}, {"gate, up", 14336, 4096}, {"down", 4096, 14336}};
constexpr int kPerLayer[] = {2, 2, 2, 1};

__global__ void fill_f32(float* x, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        x[i] = float(h & 0xffffu) / 32768.0f - 1.0f;
    }
}

__global__ void to_half(const float* src, __half* dst, int64_t n) {
    mc::start_after_previous();
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) dst[k] = __float2half_rn(src[k]);
}

struct Timing {
    double gpu_us = 0, plain_us = 0, host_us = 0;
};

// GPU time: `reps` calls captured into a CUDA graph, replayed once, so that the host's issue rate (cuBLAS
// takes about 20 us a call) does not set the pace. Host time: the same calls issued plainly.
// Microseconds per rep of what issue() puts on the stream, from events around it.
template <typename F>
double stream_us(cudaStream_t stream, int reps, F&& issue) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaEventRecord(e0, stream));
    issue();
    CK(cudaEventRecord(e1, stream));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return 1000.0 * ms / reps;
}

template <typename F>
Timing time_calls(cudaStream_t stream, int reps, F&& call) {
    Timing r;
    for (int i = 0; i < 3; ++i) call(i);
    CK(cudaStreamSynchronize(stream));
    const auto a = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) call(i);
    r.host_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count() / reps;
    CK(cudaStreamSynchronize(stream));
    r.plain_us = stream_us(stream, reps, [&] {
        for (int i = 0; i < reps; ++i) call(i);
    });
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < reps; ++i) call(i);
    CK(cudaStreamEndCapture(stream, &graph));
    CK(cudaGraphInstantiateWithFlags(&exec, graph, 0));
    CK(cudaGraphLaunch(exec, stream));  // warm
    r.gpu_us = stream_us(stream, reps, [&] { CK(cudaGraphLaunch(exec, stream)); });
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
    return r;
}

double max_abs(const std::vector<float>& v) {
    double m = 0;
    for (float x : v) m = std::max(m, double(std::fabs(x)));
    return m;
}

// A layer's products at 2-8 columns as the executor launches them with its fusions (fusion_cuda.h): Q, K and V in
// one launch, O with its residual ADD, gate and up with their SWIGLU, down with its residual ADD; against the
// seven products launched one by one (without the ADDs and the SWIGLU, which would be three launches more).
// Two layers' weights, alternated, set up once for every count of columns. Returns GPU us a layer from a CUDA graph
// per count: {one by one, grouped}.
std::vector<std::pair<double, double>> grouped_layers(cudaStream_t stream, const std::vector<int>& columns) {
    constexpr int64_t H = 4096, F = 14336, KV = 1024;
    int N = 0;  // the count being timed
    struct LayerW {
        DevMem q{size_t(H) * H * 2}, k{size_t(KV) * H * 2}, v{size_t(KV) * H * 2}, o{size_t(H) * H * 2};
        DevMem gate{size_t(F) * H * 2}, up{size_t(F) * H * 2}, down{size_t(H) * F * 2};
    };
    std::vector<std::unique_ptr<LayerW>> layers;
    uint32_t seed = 100;
    auto fill = [&](const DevMem& m, int64_t rows, int64_t cols) {
        fill_f16<<<4096, 256>>>(m.as<__half>(), size_t(rows) * cols, ++seed, 1.7f / std::sqrt(float(cols)));
        CK(cudaGetLastError());
    };
    for (int l = 0; l < 2; ++l) {
        layers.push_back(std::make_unique<LayerW>());
        const LayerW& w = *layers.back();
        fill(w.q, H, H);
        fill(w.k, KV, H);
        fill(w.v, KV, H);
        fill(w.o, H, H);
        fill(w.gate, F, H);
        fill(w.up, F, H);
        fill(w.down, H, F);
    }
    DevMem x(size_t(8) * F * 4), q(size_t(8) * H * 4), k(size_t(8) * KV * 4), v(size_t(8) * KV * 4), o(size_t(8) * H * 4), res(size_t(8) * H * 4),
        sum(size_t(8) * H * 4), g(size_t(8) * F * 4), u(size_t(8) * F * 4), glu(size_t(8) * F * 4);
    fill_f32<<<1024, 256>>>(x.as<float>(), size_t(8) * F, 7u);
    fill_f32<<<1024, 256>>>(res.as<float>(), size_t(8) * H, 8u);
    CK(cudaGetLastError());
    auto part = [&](const DevMem& w, int64_t M, float* y) {
        mc::FewPart p;
        p.w = w.as<__half>();
        p.ldw = size_t(H);
        p.M = M;
        p.y = y;
        p.ldy = size_t(M);
        return p;
    };
    auto group = [&](int64_t K) {
        mc::FewGroup gr;
        gr.N = N;
        gr.K = K;
        gr.x = x.as<float>();
        gr.ldx = size_t(K);
        return gr;
    };
    auto run = [&](const mc::FewGroup& gr) {
        if (!mc::few_columns_group(gr, stream)) {
            std::printf("few_columns_group failed\n");
            std::exit(3);
        }
    };
    auto one_by_one = [&](int i) {
        const LayerW& l = *layers[i % 2];
        const std::pair<const DevMem*, std::pair<int64_t, float*>> mats[] = {{&l.q, {H, q.as<float>()}}, {&l.k, {KV, k.as<float>()}},
                                                                            {&l.v, {KV, v.as<float>()}}, {&l.o, {H, o.as<float>()}},
                                                                            {&l.gate, {F, g.as<float>()}}, {&l.up, {F, u.as<float>()}}};
        for (const auto& m : mats) {
            mc::FewGroup gr = group(H);
            gr.n = 1;
            gr.part[0] = part(*m.first, m.second.first, m.second.second);
            run(gr);
        }
        mc::FewGroup d = group(F);
        d.n = 1;
        d.part[0] = part(l.down, H, o.as<float>());
        d.part[0].ldw = size_t(F);
        run(d);
    };
    auto grouped = [&](int i) {
        const LayerW& l = *layers[i % 2];
        mc::FewGroup qkv = group(H);
        qkv.n = 3;
        qkv.part[0] = part(l.q, H, q.as<float>());
        qkv.part[1] = part(l.k, KV, k.as<float>());
        qkv.part[2] = part(l.v, KV, v.as<float>());
        run(qkv);
        auto with_add = [&](mc::FewPart p) {
            p.add = res.as<float>();
            p.ld_add = size_t(H);
            p.sum = sum.as<float>();
            p.ld_sum = size_t(H);
            return p;
        };
        mc::FewGroup og = group(H);
        og.n = 1;
        og.part[0] = with_add(part(l.o, H, o.as<float>()));
        run(og);
        mc::FewGroup gu = group(H);
        gu.n = 2;
        gu.paired = true;
        gu.part[0] = part(l.gate, F, g.as<float>());
        gu.part[1] = part(l.up, F, u.as<float>());
        gu.glu = glu.as<float>();
        gu.ld_glu = size_t(F);
        run(gu);
        mc::FewGroup d = group(F);
        d.n = 1;
        d.part[0] = with_add(part(l.down, H, o.as<float>()));
        d.part[0].ldw = size_t(F);
        run(d);
    };
    std::vector<std::pair<double, double>> times;
    for (int n : columns) {
        N = n;
        times.emplace_back(time_calls(stream, 100, one_by_one).gpu_us, time_calls(stream, 100, grouped).gpu_us);
    }
    return times;
}

struct Method {
    const char* name;
    bool cublas;
};
const Method kMethods[] = {{"cuBLAS (to_half + GemmEx)", true}, {"ours (few_columns_f16)", false}};
constexpr int kNumMethods = int(sizeof kMethods / sizeof kMethods[0]);

}  // namespace

int main(int argc, char** argv) {
    cudaDeviceProp prop{};
    if (!first_device(prop)) return 0;
    // --profile: only the Q shape at 8 columns, cuBLAS and ours 20 times each (for Nsight Compute).
    const bool profile = argc > 1 && std::string(argv[1]) == "--profile";
    const char* out_path = !profile && argc > 1 ? argv[1] : nullptr;
    const std::string commit = argc > 2 ? argv[2] : "unknown";
    cudaStream_t stream = nullptr;
    CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cublasHandle_t cublas = nullptr;
    if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(cublas, stream) != CUBLAS_STATUS_SUCCESS) {
        std::printf("cuBLAS could not start\n");
        return 2;
    }
    constexpr int kReps = 200;
    std::string table = "GPU us a call (the calls replayed from a CUDA graph), TB/s on the weights; us a call issued plainly (back to back, "
                        "events around them: the host's pace where it is slower); host us to issue a call plainly.\n\n"
                        "| shape (M x K) | columns |";
    std::string rule = "|---|---|";
    for (const Method& m : kMethods) {
        table += std::string(" ") + m.name + " us | TB/s | plain us | host us |";
        rule += "---|---|---|---|";
    }
    table += " worst difference |\n" + rule + "---|\n";
    std::vector<std::vector<double>> layer(9, std::vector<double>(kNumMethods, 0.0)), layer_plain = layer;
    const int columns[] = {2, 4, 8};
    for (int si = 0; si < (profile ? 1 : 4); ++si) {
        const Shape& s = kShapes[si];
        const size_t wbytes = size_t(s.M) * s.K * 2;
        const int copies = int(std::max<size_t>(1, std::min<size_t>(32, ((size_t(256) << 20) + wbytes - 1) / wbytes)));
        std::vector<std::unique_ptr<DevMem>> w;
        for (int c = 0; c < copies; ++c) {
            w.push_back(std::make_unique<DevMem>(wbytes));
            fill_f16<<<4096, 256>>>(w.back()->as<__half>(), size_t(s.M) * s.K, 17u + c, 1.7f / std::sqrt(float(s.K)));
            CK(cudaGetLastError());
        }
        DevMem x(size_t(8) * s.K * 4), xh(size_t(8) * s.K * 2), y(size_t(8) * s.M * 4), ref(size_t(8) * s.M * 4);
        fill_f32<<<1024, 256>>>(x.as<float>(), size_t(8) * s.K, 5u);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        for (int N : columns) {
            if (profile && N != 8) continue;
            const float alpha = 1.0f, beta = 0.0f;
            auto method_call = [&](const Method& m, int i, float* out) {
                if (m.cublas) {
                    mc::launch_kernel(to_half, unsigned((N * s.K + 255) / 256), 256, 0, stream, x.as<float>(), xh.as<__half>(), int64_t(N) * s.K);
                    CK(cudaGetLastError());
                    if (cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(s.M), N, int(s.K), &alpha, w[i % copies]->p, CUDA_R_16F, int(s.K), xh.p,
                                     CUDA_R_16F, int(s.K), &beta, out, CUDA_R_32F, int(s.M), CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
                        std::printf("cublasGemmEx failed\n");
                        std::exit(3);
                    }
                    return;
                }
                mc::FewColumns f;
                f.w = w[i % copies]->as<__half>();
                f.ldw = size_t(s.K);
                f.x = x.as<float>();
                f.ldx = size_t(s.K);
                f.y = out;
                f.ldy = size_t(s.M);
                f.M = s.M;
                f.N = N;
                f.K = s.K;
                if (!mc::few_columns_f16(f, stream)) {
                    std::printf("few_columns_f16 failed\n");
                    std::exit(3);
                }
            };
            if (profile) {
                for (const Method& m : kMethods)
                    for (int i = 0; i < 20; ++i) method_call(m, i, y.as<float>());
                CK(cudaStreamSynchronize(stream));
                std::printf("profile: Q shape, 8 columns, each method 20 times\n");
                break;
            }
            method_call(kMethods[0], 0, ref.as<float>());
            CK(cudaStreamSynchronize(stream));
            std::vector<float> want(size_t(N) * s.M), got(size_t(N) * s.M);
            CK(cudaMemcpy(want.data(), ref.p, want.size() * 4, cudaMemcpyDeviceToHost));
            const double scale = std::max(max_abs(want), 1e-30);
            double worst = 0;
            const double gb = double(wbytes) / 1e9;
            char row[512];
            std::snprintf(row, sizeof row, "| %s (%lld x %lld) | %d |", s.name, (long long)s.M, (long long)s.K, N);
            std::string line = row;
            for (int mi = 0; mi < kNumMethods; ++mi) {
                const Method& m = kMethods[mi];
                const Timing tm = time_calls(stream, kReps, [&](int i) { method_call(m, i, y.as<float>()); });
                std::snprintf(row, sizeof row, " %.2f | %.2f | %.2f | %.1f |", tm.gpu_us, gb / (tm.gpu_us * 1e-6) / 1e3, tm.plain_us, tm.host_us);
                line += row;
                layer[N][mi] += kPerLayer[si] * tm.gpu_us;
                layer_plain[N][mi] += kPerLayer[si] * tm.plain_us;
                if (m.cublas) continue;
                CK(cudaMemsetAsync(y.p, 0xff, size_t(8) * s.M * 4, stream));  // NaN: an output not written shows
                method_call(m, 0, y.as<float>());
                CK(cudaStreamSynchronize(stream));
                CK(cudaMemcpy(got.data(), y.p, got.size() * 4, cudaMemcpyDeviceToHost));
                for (size_t i = 0; i < got.size(); ++i) {
                    const double d = std::fabs(double(got[i]) - double(want[i])) / scale;
                    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
                }
            }
            std::snprintf(row, sizeof row, " %.1e |\n", worst);
            line += row;
            std::fputs(line.c_str(), stdout);
            table += line;
        }
    }
    if (!profile) {
        table += "\nA layer on the few-column kernel as the executor fuses it (Q/K/V in one launch, O + ADD, gate/up + SWIGLU, down + "
                 "ADD: 4 launches) against its seven products one by one (without the ADDs and the SWIGLU), GPU us from a graph:\n\n"
                 "| columns | one by one | grouped |\n|---|---|---|\n";
        const std::vector<int> counts(std::begin(columns), std::end(columns));
        const std::vector<std::pair<double, double>> times = grouped_layers(stream, counts);
        for (size_t c = 0; c < counts.size(); ++c) {
            const auto [alone, grouped] = times[c];
            table += "| " + std::to_string(counts[c]) + " | " + fmt("%.1f", alone) + " | " + fmt("%.1f", grouped) + " |\n";
            std::printf("layer at %d columns: one by one %.1f us, grouped %.1f us\n", counts[c], alone, grouped);
        }
    }
    cublasDestroy(cublas);
    CK(cudaStreamDestroy(stream));
    if (profile) return 0;
    std::string sums = "\nA layer's seven products (218 M weights, 436 MB), us: from a graph / issued plainly:\n\n| columns |";
    std::string sums_rule = "|---|";
    for (const Method& m : kMethods) {
        sums += std::string(" ") + m.name + " |";
        sums_rule += "---|";
    }
    sums += "\n" + sums_rule + "\n";
    for (int N : columns) {
        sums += "| " + std::to_string(N) + " |";
        for (int mi = 0; mi < kNumMethods; ++mi) sums += " " + fmt("%.1f", layer[N][mi]) + " / " + fmt("%.1f", layer_plain[N][mi]) + " |";
        sums += "\n";
    }
    table += sums;
    std::printf("%s", sums.c_str());
    if (out_path != nullptr) {
        FILE* fo = std::fopen(out_path, "w");
        if (fo == nullptr) return 1;
        char date[32];
        const std::time_t now = std::time(nullptr);
        std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
        std::fprintf(fo, "# Few-column products (%s, %s, commit %s)\n\n%s", date, prop.name, commit.c_str(), table.c_str());
        std::fclose(fo);
    }
    return 0;
}
