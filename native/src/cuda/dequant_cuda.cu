// Weights converted to f16 when they are uploaded (buffer_cuda.cu): one kernel template turns whole blocks
// of a format in weight_blocks.h into f16, one thread per value.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "../weight_blocks.h"
#include "cuda_check.h"
#include "flavour_cuda.h"
#include "launch_cuda.h"

namespace mustafar::cuda {
namespace {

// Values beyond the f16 range saturate to +-65504 (a BF16 weight can exceed it); NaN stays NaN.
__device__ inline __half to_f16(float v) {
    constexpr float kMaxHalf = 65504.0f;
    return __float2half_rn(v > kMaxHalf ? kMaxHalf : (v < -kMaxHalf ? -kMaxHalf : v));
}

// One thread per output value, over whole blocks laid end to end.
template <class Format>
__global__ void blocks_to_f16(const uint8_t* blocks, __half* out, int64_t n_values) {
    start_after_previous();
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n_values; k += int64_t(gridDim.x) * blockDim.x)
        out[k] = to_f16(Format::value(blocks + (k / Format::kValues) * Format::kBytes, int(k % Format::kValues)));
}

template <class Format>
bool launch(const void* src, __half* dst, int64_t n_blocks, cudaStream_t stream) {
    const int64_t n_values = n_blocks * Format::kValues;
    if (n_values <= 0) return true;
    constexpr int kThreads = 256;
    const unsigned grid = unsigned(std::min<int64_t>((n_values + kThreads - 1) / kThreads, 1 << 20));
    launch_kernel(blocks_to_f16<Format>, grid, kThreads, 0, stream, static_cast<const uint8_t*>(src), dst, n_values);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace

bool converts_to_f16(int type) { return block_values(type) > 0; }

size_t block_bytes(int type) {
    size_t bytes = 0;
    blocks::with_format(type, [&](auto format) { bytes = decltype(format)::kBytes; });
    return bytes;
}

int block_values(int type) {
    int values = 0;
    blocks::with_format(type, [&](auto format) { values = decltype(format)::kValues; });
    return values;
}

bool dequantize_to_f16(int type, const void* device_src, __half* device_dst, int64_t n_blocks, cudaStream_t stream) {
    bool ok = false;
    if (!blocks::with_format(type, [&](auto format) { ok = launch<decltype(format)>(device_src, device_dst, n_blocks, stream); })) {
        log_error("%s: no f16 conversion for ggml type %d\n", kDeviceName, type);
        return false;
    }
    return ok;
}

}  // namespace mustafar::cuda
