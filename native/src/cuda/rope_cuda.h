// ROPE's rotation of one channel pair, shared by the ROPE kernel and the matrix-vector kernel that
// rotates its products' rows in place of a following ROPE (fusion_cuda.h): one definition, so that both
// give the same bits.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mustafar::cuda {

struct RopeParams {
    int n_dims, neox;
    float freq_scale, ext_factor, attn_factor, theta_scale, corr0, corr1;
};

// Pair `pair` (< n_dims / 2) at position pos: (x0, x1) -> (y0, y1); theta is built by the same repeated
// products as ggml's cache, with YaRN as ggml defines it.
__device__ __forceinline__ void rope_rotate(const RopeParams& p, int32_t pos, int64_t pair, const float* freq_factors, float x0, float x1, float& y0,
                                            float& y1) {
    float theta_extrap = float(pos);
    for (int64_t j = 0; j < pair; ++j) theta_extrap *= p.theta_scale;
    if (freq_factors != nullptr) theta_extrap /= freq_factors[pair];
    const float theta_interp = p.freq_scale * theta_extrap;
    float theta = theta_interp, mscale = p.attn_factor;
    if (p.ext_factor != 0.0f) {
        const float y = (pair - p.corr0) / fmaxf(0.001f, p.corr1 - p.corr0);
        const float ramp = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * p.ext_factor;
        theta = theta_interp * (1 - ramp) + theta_extrap * ramp;
        mscale *= 1.0f + 0.1f * logf(1.0f / p.freq_scale);
    }
    const float c = cosf(theta) * mscale, s = sinf(theta) * mscale;
    y0 = x0 * c - x1 * s;
    y1 = x0 * s + x1 * c;
}

}  // namespace mustafar::cuda
