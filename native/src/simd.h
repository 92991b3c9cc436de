// Vector helpers for the CPU kernels. Built with AVX2, FMA and F16C (x86-64-v3) where the compiler
// targets them (CMake option MUSTAFAR_X86_64_V3); scalar code with the same results otherwise.
#pragma once
#include <cmath>
#include <cstdint>

#include "fp16.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define MUSTAFAR_AVX2 1
#endif

namespace mustafar::simd {

inline void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
#ifdef MUSTAFAR_AVX2
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
    const float* t = fp16_table().values;
    for (; i < n; ++i) dst[i] = t[src[i]];
}

// f32 -> nearest f16 -> f32, as a value stored in an f16 array and loaded again.
inline void round_to_f16(float* x, int64_t n) {
    int64_t i = 0;
#ifdef MUSTAFAR_AVX2
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
#endif
    const float* t = fp16_table().values;
    for (; i < n; ++i) x[i] = t[fp32_to_fp16(x[i])];
}

// y = y * a
inline void scale(float* y, float a, int64_t n) {
    int64_t i = 0;
#ifdef MUSTAFAR_AVX2
    const __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), va));
#endif
    for (; i < n; ++i) y[i] *= a;
}

// out[l] = the dot product of a[l] and b (n values) for L vectors a[l], b loaded once for all of them; each
// product's operations and their order do not depend on L, so every L gives the same bits (dot is L = 1).
template <int L>
inline void dot_lanes(const float* const* a, const float* b, int64_t n, float* out) {
    int64_t i = 0;
#ifdef MUSTAFAR_AVX2
    __m256 acc0[L], acc1[L];
    for (int l = 0; l < L; ++l) acc0[l] = acc1[l] = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        const __m256 b0 = _mm256_loadu_ps(b + i), b1 = _mm256_loadu_ps(b + i + 8);
        for (int l = 0; l < L; ++l) {
            acc0[l] = _mm256_fmadd_ps(_mm256_loadu_ps(a[l] + i), b0, acc0[l]);
            acc1[l] = _mm256_fmadd_ps(_mm256_loadu_ps(a[l] + i + 8), b1, acc1[l]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 b0 = _mm256_loadu_ps(b + i);
        for (int l = 0; l < L; ++l) acc0[l] = _mm256_fmadd_ps(_mm256_loadu_ps(a[l] + i), b0, acc0[l]);
    }
    for (int l = 0; l < L; ++l) {
        const __m256 acc = _mm256_add_ps(acc0[l], acc1[l]);
        __m128 r = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        r = _mm_add_ss(r, _mm_movehdup_ps(r));
        out[l] = _mm_cvtss_f32(r);
    }
#else
    float acc[L][8] = {};
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < L; ++l)
            for (int j = 0; j < 8; ++j) acc[l][j] += a[l][i + j] * b[i + j];
    for (int l = 0; l < L; ++l)
        out[l] = ((acc[l][0] + acc[l][1]) + (acc[l][2] + acc[l][3])) + ((acc[l][4] + acc[l][5]) + (acc[l][6] + acc[l][7]));
#endif
    for (int l = 0; l < L; ++l)  // an explicit fma: the compiler's contraction choice could differ between Ls
        for (int64_t j = i; j < n; ++j) out[l] = std::fma(a[l][j], b[j], out[l]);
}

inline float dot(const float* a, const float* b, int64_t n) {
    float s;
    dot_lanes<1>(&a, b, n, &s);
    return s;
}

// y[l] = fma(x, a[l], y[l]) element by element for the first `lanes` (at most 4) of y, x loaded once for all
// of them. ToF16: each result rounded to f16 as it is stored, as round_to_f16 would round it afterwards (ggml's
// f16 accumulator), in the same pass.
template <bool ToF16 = false>
inline void axpy_lanes(float* const* y, const float* x, const float* a, int lanes, int64_t n) {
    int64_t i = 0;
#ifdef MUSTAFAR_AVX2
    __m256 va[4];
    for (int l = 0; l < lanes; ++l) va[l] = _mm256_set1_ps(a[l]);
    for (; i + 8 <= n; i += 8) {
        const __m256 vx = _mm256_loadu_ps(x + i);
        for (int l = 0; l < lanes; ++l) {
            __m256 r = _mm256_fmadd_ps(vx, va[l], _mm256_loadu_ps(y[l] + i));
            if constexpr (ToF16) r = _mm256_cvtph_ps(_mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT));
            _mm256_storeu_ps(y[l] + i, r);
        }
    }
#endif
    const float* t = fp16_table().values;
    for (; i < n; ++i)
        for (int l = 0; l < lanes; ++l) {
            const float r = std::fma(x[i], a[l], y[l][i]);
            y[l][i] = ToF16 ? t[fp32_to_fp16(r)] : r;
        }
}

}  // namespace mustafar::simd
