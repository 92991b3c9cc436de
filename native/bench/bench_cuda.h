// Shared by the GPU benchmark programs: device memory that frees itself, timing of repeated calls with
// CUDA events, the plain read that gives a bandwidth floor, and number formatting for their tables.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include "../tests/cuda_exit_on_error.h"

namespace mustafar::bench {

struct DevMem {
    void* p = nullptr;
    explicit DevMem(size_t bytes) { CK(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
    ~DevMem() { cudaFree(p); }
    DevMem(const DevMem&) = delete;
    DevMem& operator=(const DevMem&) = delete;
    template <typename T>
    T* as() const { return static_cast<T*>(p); }
};

// Mean time of `reps` calls issued back to back (call(i), i = 0, 1, ...) after three not timed.
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
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;
    template <typename F>
    double us_per_call(int reps, F&& call) {
        for (int i = 0; i < 3; ++i) call(i);
        CK(cudaEventRecord(a));
        for (int i = 0; i < reps; ++i) call(i);
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        return 1000.0 * ms / reps;
    }
};

// The floor for a kernel that reads `n` 16-byte words once: a plain read of them (16-byte loads, four in
// flight per thread; launch it with every SM full). Internal to each program that includes it.
static __global__ void read_all(const uint4* x, size_t n, uint32_t* sink) {
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

// Values in [-scale, scale) from a hash of the index and the seed.
static __global__ void fill_f16(__half* x, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        x[i] = __float2half_rn((float(h & 0xffffu) / 65536.0f - 0.5f) * 2.0f * scale);
    }
}

// Device 0's properties; false, with a SKIP line for the GPU scripts, where there is no CUDA device.
inline bool first_device(cudaDeviceProp& prop) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("SKIP: no CUDA device\n");
        return false;
    }
    CK(cudaGetDeviceProperties(&prop, 0));
    return true;
}

inline std::string fmt(const char* f, double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, x);
    return buf;
}

}  // namespace mustafar::bench
