// GGUF weight block formats decoded value by value: the CUDA flavour converts weights of these types to
// f16 when they are uploaded (cuda/dequant_cuda.cu); op_conformance checks every format against ggml's own
// dequantisation on the host, so the decoding is tested in CI without a GPU.
// One description per format: its size, the number of values it holds and how value i of a block is
// decoded. The layouts are those of ggml 0.18 (ggml-common.h's block structs, ggml-quants.c's
// dequantize_row_*); every multi-byte field is little-endian, and the products are taken in the order
// ggml's CPU dequantisation takes them, so the f32 value is the one ggml computes, except where a compiler
// fuses a multiply with the add or subtraction that follows it (d * code + m, d * scale * code - dmin * min),
// which can change the last bit.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ggml_abi.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define MUSTAFAR_HD __host__ __device__
#else
#include "fp16.h"
#define MUSTAFAR_HD
#endif

namespace mustafar::blocks {

// IEEE half and bfloat16 fields, read byte by byte (block sizes such as 18 or 210 bytes leave no
// alignment to rely on).
MUSTAFAR_HD inline float half_at(const uint8_t* p) {
    const uint16_t bits = static_cast<uint16_t>(p[0] | (p[1] << 8));
#if defined(__CUDACC__)
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
#else
    return fp16_to_fp32(bits);
#endif
}

MUSTAFAR_HD inline float bf16_at(const uint8_t* p) {
    const uint32_t bits = (uint32_t(p[0]) | (uint32_t(p[1]) << 8)) << 16;  // the high half of an f32
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
#endif
}

// The 32-bit little-endian field at p.
MUSTAFAR_HD inline uint32_t u32_at(const uint8_t* p) {
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

// BF16: a block of one value.
struct Bf16Format {
    static constexpr int kValues = 1;
    static constexpr size_t kBytes = 2;
    MUSTAFAR_HD static float value(const uint8_t* block, int) { return bf16_at(block); }
};

// Q8_0: an f16 scale d, then 32 signed bytes q; value i = d * q[i].
struct Q8_0Format {
    static constexpr int kValues = 32;
    static constexpr size_t kBytes = 2 + 32;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) { return half_at(block) * float(static_cast<int8_t>(block[2 + i])); }
};

// The 4-bit code of value i (0..31) in 16 bytes of nibbles: byte j carries value j in its low nibble and
// value j + 16 in its high nibble (Q4_0, Q4_1, and the low bits of Q5_0 and Q5_1).
MUSTAFAR_HD inline int nibble_of(const uint8_t* qs, int i) {
    const uint8_t byte = qs[i % 16];
    return i < 16 ? (byte & 0x0F) : (byte >> 4);
}

// Q4_0: an f16 scale d, then 16 bytes of 4-bit codes; value = (code - 8) * d.
struct Q4_0Format {
    static constexpr int kValues = 32;
    static constexpr size_t kBytes = 2 + 16;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) { return float(nibble_of(block + 2, i) - 8) * half_at(block); }
};

// Q4_1: f16 d, f16 m, then 16 bytes of 4-bit codes; value = code * d + m.
struct Q4_1Format {
    static constexpr int kValues = 32;
    static constexpr size_t kBytes = 2 + 2 + 16;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) {
        return float(nibble_of(block + 4, i)) * half_at(block) + half_at(block + 2);
    }
};

// Q5_0: f16 d, 4 bytes qh (bit i: the fifth bit of value i), then 16 bytes of low nibbles;
// value = (code - 16) * d.
struct Q5_0Format {
    static constexpr int kValues = 32;
    static constexpr size_t kBytes = 2 + 4 + 16;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) {
        const int code = nibble_of(block + 6, i) | int(((u32_at(block + 2) >> i) & 1u) << 4);
        return float(code - 16) * half_at(block);
    }
};

// Q5_1: f16 d, f16 m, 4 bytes qh, then 16 bytes of low nibbles; value = code * d + m.
struct Q5_1Format {
    static constexpr int kValues = 32;
    static constexpr size_t kBytes = 2 + 2 + 4 + 16;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) {
        const int code = nibble_of(block + 8, i) | int(((u32_at(block + 4) >> i) & 1u) << 4);
        return float(code) * half_at(block) + half_at(block + 2);
    }
};

// The 6-bit scale and min of sub-block j (0..7) in the K-quants' 12 bytes s[0..11]:
//   j < 4:  scale = low 6 bits of s[j],  min = low 6 bits of s[j + 4]
//   j >= 4: scale = low nibble of s[j + 4] | (top 2 bits of s[j - 4]) << 4,
//           min   = high nibble of s[j + 4] | (top 2 bits of s[j]) << 4
MUSTAFAR_HD inline void scale_min_k4(const uint8_t* s, int j, int& scale, int& min) {
    if (j < 4) {
        scale = s[j] & 63;
        min = s[j + 4] & 63;
    } else {
        scale = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Q4_K, a super-block of 256 values in eight sub-blocks of 32: f16 d, f16 dmin, 12 bytes of scales and
// mins, then 128 bytes of 4-bit codes in four runs of 32 bytes; run r gives sub-block 2r from its low
// nibbles and sub-block 2r + 1 from its high nibbles. value = d * scale * code - dmin * min.
struct Q4_KFormat {
    static constexpr int kValues = 256;
    static constexpr size_t kBytes = 2 + 2 + 12 + 128;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) {
        const int run = i / 64, in_run = i % 64, sub = 2 * run + in_run / 32;
        const uint8_t byte = block[16 + 32 * run + in_run % 32];
        const int code = in_run < 32 ? (byte & 0x0F) : (byte >> 4);
        int scale, min;
        scale_min_k4(block + 4, sub, scale, min);
        return half_at(block) * float(scale) * float(code) - half_at(block + 2) * float(min);
    }
};

// Q5_K: Q4_K's layout with 32 bytes qh between the scales and the low nibbles; bit `sub` of qh[l] is the
// fifth bit of value l of sub-block `sub` (value = d * scale * code - dmin * min).
struct Q5_KFormat {
    static constexpr int kValues = 256;
    static constexpr size_t kBytes = 2 + 2 + 12 + 32 + 128;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) {
        const int run = i / 64, in_run = i % 64, sub = 2 * run + in_run / 32, l = i % 32;
        const uint8_t byte = block[48 + 32 * run + l];
        const int code = (in_run < 32 ? (byte & 0x0F) : (byte >> 4)) | (((block[16 + l] >> sub) & 1) << 4);
        int scale, min;
        scale_min_k4(block + 4, sub, scale, min);
        return half_at(block) * float(scale) * float(code) - half_at(block + 2) * float(min);
    }
};

// Q2_K, a super-block of 256 values in 16 sub-blocks of 16: 16 bytes of scales (sub-block j: scale in the low
// nibble of byte j, min in the high nibble), 64 bytes of 2-bit codes, f16 d, f16 dmin. Value i of half h
// (128 values) takes bits 2q, 2q + 1 (q = (i % 128) / 32) of byte 32h + i % 32;
// value = d * scale * code - dmin * min.
struct Q2_KFormat {
    static constexpr int kValues = 256;
    static constexpr size_t kBytes = 16 + 64 + 2 + 2;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) {
        const int code = (block[16 + 32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        const uint8_t sc = block[i / 16];
        return half_at(block + 80) * float(sc & 0x0F) * float(code) - half_at(block + 82) * float(sc >> 4);
    }
};

// Q3_K, a super-block of 256 values in 16 sub-blocks of 16: 32 bytes hmask, 64 bytes of 2-bit codes (placed
// as Q2_K's), 12 bytes of 6-bit scales, f16 d. Scale k: low 4 bits from the low (k < 8) or high (k >= 8)
// nibble of byte k % 8, high 2 bits from bits 2 (k / 4), 2 (k / 4) + 1 of byte 8 + k % 4; it counts from -32.
// Bit i / 32 of hmask[i % 32] set: code as it is, clear: code - 4; value = d * (scale - 32) * code.
struct Q3_KFormat {
    static constexpr int kValues = 256;
    static constexpr size_t kBytes = 32 + 64 + 12 + 2;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) {
        const int low = (block[32 + 32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        const int code = low - (((block[i % 32] >> (i / 32)) & 1) ? 0 : 4);
        const int k = i / 16;
        const uint8_t* s = block + 96;
        const int scale = (k < 8 ? (s[k] & 0x0F) : (s[k - 8] >> 4)) | (((s[8 + k % 4] >> (2 * (k / 4))) & 3) << 4);
        return half_at(block + 108) * float(scale - 32) * float(code);
    }
};

// IQ4_NL's 16 levels (ggml-common.h's kvalues_iq4nl: -127 -104 -83 -65 -49 -35 -22 -10 1 13 25 38 53 69 89 113),
// as the bytes of two words, so that device code needs no table in memory.
MUSTAFAR_HD inline int iq4nl_level(int code) {
    const uint64_t levels = code < 8 ? 0xf6eaddcfbfad9881ull : 0x7159453526190d01ull;
    return static_cast<int8_t>(static_cast<uint8_t>(levels >> (8 * (code % 8))));
}

// IQ4_NL: an f16 scale d, then 16 bytes of 4-bit codes placed as Q4_0's; value = d * level(code).
struct Iq4NlFormat {
    static constexpr int kValues = 32;
    static constexpr size_t kBytes = 2 + 16;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) { return half_at(block) * float(iq4nl_level(nibble_of(block + 2, i))); }
};

// IQ4_XS, a super-block of 256 values in 8 sub-blocks of 32: f16 d, 16 bits of scales' high bits (2 a
// sub-block), 4 bytes of their low nibbles (sub-block b: nibble b % 2 of byte b / 2), then 16 bytes of
// codes a sub-block placed as Q4_0's; value = d * (scale - 32) * level(code).
struct Iq4XsFormat {
    static constexpr int kValues = 256;
    static constexpr size_t kBytes = 2 + 2 + 4 + 128;
    MUSTAFAR_HD static float value(const uint8_t* block, int i) {
        const int b = i / 32;
        const uint32_t high = uint32_t(block[2]) | (uint32_t(block[3]) << 8);
        const int scale = ((block[4 + b / 2] >> (4 * (b % 2))) & 0x0F) | int(((high >> (2 * b)) & 3u) << 4);
        return half_at(block) * float(scale - 32) * float(iq4nl_level(nibble_of(block + 8 + 16 * b, i % 32)));
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
    MUSTAFAR_HD static float value(const uint8_t* block, int i) {
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

// Calls f(Format{}) with the block format of ggml type `type`; false where it has none.
template <class F>
bool with_format(int type, F&& f) {
    switch (type) {
        case GGML_TYPE_BF16: f(Bf16Format{}); return true;
        case GGML_TYPE_Q8_0: f(Q8_0Format{}); return true;
        case GGML_TYPE_Q4_0: f(Q4_0Format{}); return true;
        case GGML_TYPE_Q4_1: f(Q4_1Format{}); return true;
        case GGML_TYPE_Q5_0: f(Q5_0Format{}); return true;
        case GGML_TYPE_Q5_1: f(Q5_1Format{}); return true;
        case GGML_TYPE_Q2_K: f(Q2_KFormat{}); return true;
        case GGML_TYPE_Q3_K: f(Q3_KFormat{}); return true;
        case GGML_TYPE_Q4_K: f(Q4_KFormat{}); return true;
        case GGML_TYPE_Q5_K: f(Q5_KFormat{}); return true;
        case GGML_TYPE_Q6_K: f(Q6_KFormat{}); return true;
        case GGML_TYPE_IQ4_NL: f(Iq4NlFormat{}); return true;
        case GGML_TYPE_IQ4_XS: f(Iq4XsFormat{}); return true;
        default: return false;
    }
}

}  // namespace mustafar::blocks
