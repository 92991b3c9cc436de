// Row conversions between the float types the KV path handles (f32, f16, bf16).
#pragma once
#include <cstdint>

#include "../fp16.h"
#include "../simd.h"
#include "../ggml_abi.h"

namespace mustafar::cpu {

inline float load_float(ggml_type type, const void* p) {
    switch (type) {
        case GGML_TYPE_F16: return fp16_table().values[*static_cast<const uint16_t*>(p)];
        case GGML_TYPE_BF16: return bf16_to_fp32(*static_cast<const uint16_t*>(p));
        default: return *static_cast<const float*>(p);
    }
}

inline void store_float(ggml_type type, void* p, float v) {
    switch (type) {
        case GGML_TYPE_F16: *static_cast<uint16_t*>(p) = fp32_to_fp16(v); break;
        case GGML_TYPE_BF16: *static_cast<uint16_t*>(p) = fp32_to_bf16(v); break;
        default: *static_cast<float*>(p) = v; break;
    }
}

inline void row_to_f32(ggml_type type, const void* src, float* dst, int64_t n) {
    switch (type) {
        case GGML_TYPE_F16: simd::f16_to_f32(static_cast<const uint16_t*>(src), dst, n); break;
        case GGML_TYPE_BF16:
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(static_cast<const uint16_t*>(src)[i]);
            break;
        default:
            for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<const float*>(src)[i];
            break;
    }
}

}  // namespace mustafar::cpu
