// IEEE half <-> float conversions with the same results as ggml's (round to nearest even).
#pragma once
#include <cstdint>
#include <cstring>

namespace mustafar {

inline float bits_to_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint32_t float_to_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
    if (exp != 0) return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0) return bits_to_float(sign);
    // subnormal: value = man * 2^-24
    const float v = float(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
}

inline uint16_t fp32_to_fp16(float f) {
    const uint32_t x = float_to_bits(f);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));  // inf / nan
    if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // rounds past 65504: overflow to inf
    if (ax < 0x38800000u) {
        // result is subnormal or zero: add 0.5 and let the float adder round to nearest even
        const float r = bits_to_float(ax) + 0.5f;
        return uint16_t(sign | uint16_t(float_to_bits(r) - 0x3f000000u));
    }
    const uint32_t odd = (ax >> 13) & 1u;
    const uint32_t rounded = ax + 0xc8000fffu + odd;  // rebias exponent (-112 << 23) and round to nearest even
    return uint16_t(sign | uint16_t(rounded >> 13));
}

// A table makes the hot conversion in attention one load; built once, read-only afterwards.
struct Fp16Table {
    float values[65536];
    Fp16Table() {
        for (uint32_t i = 0; i < 65536; ++i) values[i] = fp16_to_fp32(uint16_t(i));
    }
};
const Fp16Table& fp16_table();

inline float bf16_to_fp32(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }
inline uint16_t fp32_to_bf16(float f) {
    uint32_t u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 64);  // quiet nan
    return uint16_t((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

}  // namespace mustafar
