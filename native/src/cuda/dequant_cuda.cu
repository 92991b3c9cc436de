// Weight block formats -> f16, for weights converted when they are uploaded (buffer_cuda.cu).
// One description per GGUF block format: its size, the number of values it holds and how value i of
// a block is decoded; one kernel template turns whole blocks into f16, one thread per value. The
// layouts are those of ggml 0.18 (ggml-common.h's block structs, ggml-quants.c's dequantize_row_*);
// every multi-byte field is little-endian, and the products are taken in the order ggml's CPU
// dequantisation takes them, so the f32 value before rounding to f16 is the one ggml computes (except
// that the GPU may fuse a multiply with the subtraction in Q4_K's d * scale * code - dmin * min, which
// can change the last bit).
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cuda_check.h"
#include "flavour_cuda.h"
#include "launch_cuda.h"

namespace mustafar::cuda {
namespace {

// IEEE half and bfloat16 fields, read byte by byte (block sizes such as 18 or 210 bytes leave no
// alignment to rely on).
__host__ __device__ inline float half_at(const uint8_t* p) {
    __half_raw raw;
    raw.x = static_cast<unsigned short>(p[0] | (p[1] << 8));
    return __half2float(__half(raw));
}

__host__ __device__ inline float bf16_at(const uint8_t* p) {
    const uint32_t bits = (uint32_t(p[0]) | (uint32_t(p[1]) << 8)) << 16;  // the high half of an f32
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
#endif
}

// BF16: a block of one value.
struct Bf16Format {
    static constexpr int kValues = 1;
    static constexpr size_t kBytes = 2;
    __host__ __device__ static float value(const uint8_t* block, int) { return bf16_at(block); }
};

// Q8_0: an f16 scale d, then 32 signed bytes q; value i = d * q[i].
struct Q8_0Format {
    static constexpr int kValues = 32;
    static constexpr size_t kBytes = 2 + 32;
    __host__ __device__ static float value(const uint8_t* block, int i) {
        return half_at(block) * float(static_cast<int8_t>(block[2 + i]));
    }
};

// Q4_0: an f16 scale d, then 16 bytes of 4-bit codes. Byte j carries value j in its low nibble and
// value j + 16 in its high nibble; value = (code - 8) * d.
struct Q4_0Format {
    static constexpr int kValues = 32;
    static constexpr size_t kBytes = 2 + 16;
    __host__ __device__ static float value(const uint8_t* block, int i) {
        const uint8_t byte = block[2 + (i % 16)];
        const int code = i < 16 ? (byte & 0x0F) : (byte >> 4);
        return float(code - 8) * half_at(block);
    }
};

// Q4_K, a super-block of 256 values in eight sub-blocks of 32: f16 d, f16 dmin, 12 bytes holding a
// 6-bit scale and a 6-bit min per sub-block, then 128 bytes of 4-bit codes. The codes come in four
// runs of 32 bytes; run r gives sub-block 2r from its low nibbles and sub-block 2r + 1 from its high
// nibbles. value = d * scale * code - dmin * min.
//   Packing of the 12 bytes s[0..11], for sub-block j:
//     j < 4:  scale = low 6 bits of s[j],  min = low 6 bits of s[j + 4]
//     j >= 4: scale = low nibble of s[j + 4] | (top 2 bits of s[j - 4]) << 4,
//             min   = high nibble of s[j + 4] | (top 2 bits of s[j]) << 4
struct Q4_KFormat {
    static constexpr int kValues = 256;
    static constexpr size_t kBytes = 2 + 2 + 12 + 128;
    __host__ __device__ static float value(const uint8_t* block, int i) {
        const int run = i / 64, in_run = i % 64;
        const int sub = 2 * run + in_run / 32;
        const uint8_t byte = block[16 + 32 * run + in_run % 32];
        const int code = in_run < 32 ? (byte & 0x0F) : (byte >> 4);
        const uint8_t* s = block + 4;
        int scale, offset;  // the sub-block's scale and min codes
        if (sub < 4) {
            scale = s[sub] & 63;
            offset = s[sub + 4] & 63;
        } else {
            scale = (s[sub + 4] & 0x0F) | ((s[sub - 4] >> 6) << 4);
            offset = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4);
        }
        return half_at(block) * float(scale) * float(code) - half_at(block + 2) * float(offset);
    }
};

// Q6_K, a super-block of 256 values: 128 bytes of low 4 bits (ql), 64 bytes of high 2 bits (qh), 16
// signed 8-bit scales (one per 16 values), then the f16 d. Two halves of 128 values; half h reads
// ql[64h..], qh[32h..] and scales[8h..]. In a half, value 32g + l (quarter g = 0..3, l = 0..31) takes
// its low 4 bits from ql[l + 32 * (g % 2)] (low nibble for g < 2, high nibble otherwise), its high 2
// bits from bits 2g, 2g + 1 of qh[l], and scale 2g + l / 16; value = d * scale * (code - 32).
struct Q6_KFormat {
    static constexpr int kValues = 256;
    static constexpr size_t kBytes = 128 + 64 + 16 + 2;
    __host__ __device__ static float value(const uint8_t* block, int i) {
        const int part = i / 128, quarter = (i % 128) / 32, l = i % 32;
        const uint8_t* ql = block + 64 * part;
        const uint8_t* qh = block + 128 + 32 * part;
        const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192) + 8 * part;
        const uint8_t low_byte = ql[l + 32 * (quarter % 2)];
        const int low = quarter < 2 ? (low_byte & 0x0F) : (low_byte >> 4);
        const int high = (qh[l] >> (2 * quarter)) & 3;
        const int code = (low | (high << 4)) - 32;
        return half_at(block + 208) * float(scales[2 * quarter + l / 16]) * float(code);
    }
};

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
    switch (type) {
        case GGML_TYPE_BF16: return Bf16Format::kBytes;
        case GGML_TYPE_Q8_0: return Q8_0Format::kBytes;
        case GGML_TYPE_Q4_0: return Q4_0Format::kBytes;
        case GGML_TYPE_Q4_K: return Q4_KFormat::kBytes;
        case GGML_TYPE_Q6_K: return Q6_KFormat::kBytes;
        default: return 0;
    }
}

int block_values(int type) {
    switch (type) {
        case GGML_TYPE_BF16: return Bf16Format::kValues;
        case GGML_TYPE_Q8_0: return Q8_0Format::kValues;
        case GGML_TYPE_Q4_0: return Q4_0Format::kValues;
        case GGML_TYPE_Q4_K: return Q4_KFormat::kValues;
        case GGML_TYPE_Q6_K: return Q6_KFormat::kValues;
        default: return 0;
    }
}

bool dequantize_to_f16(int type, const void* device_src, __half* device_dst, int64_t n_blocks, cudaStream_t stream) {
    switch (type) {
        case GGML_TYPE_BF16: return launch<Bf16Format>(device_src, device_dst, n_blocks, stream);
        case GGML_TYPE_Q8_0: return launch<Q8_0Format>(device_src, device_dst, n_blocks, stream);
        case GGML_TYPE_Q4_0: return launch<Q4_0Format>(device_src, device_dst, n_blocks, stream);
        case GGML_TYPE_Q4_K: return launch<Q4_KFormat>(device_src, device_dst, n_blocks, stream);
        case GGML_TYPE_Q6_K: return launch<Q6_KFormat>(device_src, device_dst, n_blocks, stream);
        default:
            log_error("%s: no f16 conversion for ggml type %d\n", kDeviceName, type);
            return false;
    }
}

}  // namespace mustafar::cuda
