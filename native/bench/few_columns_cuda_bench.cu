// GPU benchmark of the products of a batched decode step (2 to 8 activation columns) on the Llama-3-8B
// shapes, f16 weights with random values: per shape and column count, the conversion of the activations
// to f16 plus cublasGemmEx (as compute_cuda.cu issued them before few_columns_cuda.cu) against the
// few-column kernel in each of its layouts. Weights rotate through copies of at least 256 MB in all, so
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
#include <memory>
#include <string>
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
    double gpu_us = 0, host_us = 0;
};

template <typename F>
Timing time_calls(int reps, F&& call) {
    Timer t;
    Timing r;
    r.gpu_us = t.us_per_call(reps, call);
    CK(cudaDeviceSynchronize());
    const auto a = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) call(i);
    r.host_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count() / reps;
    CK(cudaDeviceSynchronize());
    return r;
}

double max_abs(const std::vector<float>& v) {
    double m = 0;
    for (float x : v) m = std::max(m, double(std::fabs(x)));
    return m;
}

}  // namespace

int main(int argc, char** argv) {
    cudaDeviceProp prop{};
    if (!first_device(prop)) return 0;
    const char* out_path = argc > 1 ? argv[1] : nullptr;
    const std::string commit = argc > 2 ? argv[2] : "unknown";
    cublasHandle_t cublas = nullptr;
    if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(cublas, nullptr) != CUBLAS_STATUS_SUCCESS) {
        std::printf("cuBLAS could not start\n");
        return 2;
    }
    const int layouts[][2] = {{1, 8}, {1, 4}, {2, 4}, {2, 2}};
    constexpr int kLayouts = 4, kReps = 200;
    std::string table =
        "| shape (M x K) | columns | cuBLAS us | TB/s | host us | 1 tile, 8 steps us | TB/s | 1 tile, 4 steps us | TB/s | 2 tiles, 4 steps "
        "us | TB/s | 2 tiles, 2 steps us | TB/s | host us (first layout) | worst difference |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    // Per column count: a layer's products (cuBLAS, each layout).
    std::vector<std::vector<double>> layer(9, std::vector<double>(1 + kLayouts, 0.0));
    const int columns[] = {2, 4, 8};
    for (int si = 0; si < 4; ++si) {
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
        for (int N : columns) {
            const float alpha = 1.0f, beta = 0.0f;
            auto cublas_call = [&](int i) {
                mc::launch_kernel(to_half, unsigned((N * s.K + 255) / 256), 256, 0, nullptr, x.as<float>(), xh.as<__half>(), int64_t(N) * s.K);
                CK(cudaGetLastError());
                if (cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(s.M), N, int(s.K), &alpha, w[i % copies]->p, CUDA_R_16F, int(s.K), xh.p,
                                 CUDA_R_16F, int(s.K), &beta, ref.p, CUDA_R_32F, int(s.M), CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
                    std::printf("cublasGemmEx failed\n");
                    std::exit(3);
                }
            };
            const Timing tc = time_calls(kReps, cublas_call);
            cublas_call(0);
            CK(cudaDeviceSynchronize());
            std::vector<float> want(size_t(N) * s.M), got(size_t(N) * s.M);
            CK(cudaMemcpy(want.data(), ref.p, want.size() * 4, cudaMemcpyDeviceToHost));
            const double scale = std::max(max_abs(want), 1e-30);
            double worst = 0;
            Timing tl[kLayouts];
            for (int l = 0; l < kLayouts; ++l) {
                mc::FewColumns f;
                f.ldw = size_t(s.K);
                f.x = x.as<float>();
                f.ldx = size_t(s.K);
                f.y = y.as<float>();
                f.ldy = size_t(s.M);
                f.M = s.M;
                f.N = N;
                f.K = s.K;
                auto call = [&](int i) {
                    f.w = w[i % copies]->as<__half>();
                    if (!mc::few_columns_f16_layout(f, nullptr, layouts[l][0], layouts[l][1])) {
                        std::printf("few_columns_f16_layout failed\n");
                        std::exit(3);
                    }
                };
                tl[l] = time_calls(kReps, call);
                CK(cudaMemset(y.p, 0xff, size_t(8) * s.M * 4));  // NaN: an output not written shows
                call(0);
                CK(cudaDeviceSynchronize());
                CK(cudaMemcpy(got.data(), y.p, got.size() * 4, cudaMemcpyDeviceToHost));
                for (size_t i = 0; i < got.size(); ++i) {
                    const double d = std::fabs(double(got[i]) - double(want[i])) / scale;
                    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
                }
            }
            const double gb = double(wbytes) / 1e9;
            char row[512];
            std::snprintf(row, sizeof row, "| %s (%lld x %lld) | %d | %.2f | %.2f | %.1f |", s.name, (long long)s.M, (long long)s.K, N, tc.gpu_us,
                          gb / (tc.gpu_us * 1e-6) / 1e3, tc.host_us);
            std::string line = row;
            layer[N][0] += kPerLayer[si] * tc.gpu_us;
            for (int l = 0; l < kLayouts; ++l) {
                std::snprintf(row, sizeof row, " %.2f | %.2f |", tl[l].gpu_us, gb / (tl[l].gpu_us * 1e-6) / 1e3);
                line += row;
                layer[N][1 + l] += kPerLayer[si] * tl[l].gpu_us;
            }
            std::snprintf(row, sizeof row, " %.1f | %.1e |\n", tl[0].host_us, worst);
            line += row;
            std::fputs(line.c_str(), stdout);
            table += line;
        }
    }
    table += "\nA layer's seven products (GPU us; 218 M weights, 436 MB):\n\n| columns | cuBLAS | 1 tile, 8 steps | 1 tile, 4 steps | 2 tiles, "
             "4 steps | 2 tiles, 2 steps |\n|---|---|---|---|---|---|\n";
    for (int N : columns) {
        char row[256];
        std::snprintf(row, sizeof row, "| %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", N, layer[N][0], layer[N][1], layer[N][2], layer[N][3], layer[N][4]);
        table += row;
    }
    std::printf("%s", table.substr(table.find("\nA layer")).c_str());
    cublasDestroy(cublas);
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
