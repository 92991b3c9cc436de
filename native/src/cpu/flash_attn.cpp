#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "convert.h"
#include "kernels.h"

namespace mustafar::cpu {
namespace {

// Eight partial sums so that the compiler vectorises without reassociating a single chain.
inline float dot(const float* a, const float* b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

inline void axpy(float* y, const float* x, float a, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

inline void scale(float* y, float a, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

constexpr int64_t kRowBlock = 16;

}  // namespace

void flash_attn_ext(const ggml_tensor* node, ThreadPool& pool) {
    const ggml_tensor* q = node->src[0];
    const ggml_tensor* k = node->src[1];
    const ggml_tensor* v = node->src[2];
    const ggml_tensor* mask = node->src[3];

    const int64_t DK = k->ne[0], DV = v->ne[0];
    const int64_t n_q = q->ne[1], n_head = q->ne[2], n_kv = k->ne[1];
    const int64_t n_head_kv = k->ne[2];
    const int64_t group = n_head / n_head_kv;  // query heads per KV head
    const int64_t rk3 = q->ne[3] / k->ne[3];

    float scale_v, max_bias, softcap;
    std::memcpy(&scale_v, &node->op_params[0], sizeof(float));
    std::memcpy(&max_bias, &node->op_params[1], sizeof(float));
    std::memcpy(&softcap, &node->op_params[2], sizeof(float));
    if (softcap != 0.0f) scale_v /= softcap;

    const uint32_t n_head_log2 = 1u << uint32_t(std::floor(std::log2(double(n_head))));
    const float m0 = std::pow(2.0f, -max_bias / n_head_log2);
    const float m1 = std::pow(2.0f, -(max_bias / 2.0f) / n_head_log2);
    auto slope_of = [&](int64_t h) -> float {
        if (max_bias <= 0.0f) return 1.0f;
        return h < int64_t(n_head_log2) ? std::pow(m0, float(h + 1)) : std::pow(m1, float(2 * (h - n_head_log2) + 1));
    };

    // ggml takes the dot of an f16 key with the query rounded to f16; do the same so that the
    // dense path agrees with ggml's CPU backend to the last bit that matters.
    const bool round_q = k->type == GGML_TYPE_F16;

    const int64_t n_blocks = (n_q + kRowBlock - 1) / kRowBlock;
    const int64_t n_tasks = q->ne[3] * n_head_kv * n_blocks;

    pool.parallel_for(n_tasks, [&](int64_t begin, int64_t end, int) {
        const int64_t lanes = kRowBlock * group;
        std::vector<float> qs(lanes * DK), acc(lanes * DV), mx(lanes), sum(lanes), slopes(group);
        std::vector<const uint16_t*> mrow(lanes);
        std::vector<float> krow(DK), vrow(DV);

        for (int64_t task = begin; task < end; ++task) {
            const int64_t blk = task % n_blocks;
            const int64_t hk = (task / n_blocks) % n_head_kv;
            const int64_t iq3 = task / (n_blocks * n_head_kv);
            const int64_t ik3 = iq3 / rk3;
            const int64_t r0 = blk * kRowBlock;
            const int64_t rows = std::min(kRowBlock, n_q - r0);
            const int64_t n_lanes = rows * group;

            for (int64_t g = 0; g < group; ++g) slopes[g] = slope_of(hk * group + g);
            for (int64_t r = 0; r < rows; ++r) {
                for (int64_t g = 0; g < group; ++g) {
                    const int64_t lane = r * group + g, h = hk * group + g, iq1 = r0 + r;
                    const char* qp = static_cast<const char*>(q->data) + iq1 * q->nb[1] + h * q->nb[2] + iq3 * q->nb[3];
                    float* qd = &qs[lane * DK];
                    row_to_f32(q->type, qp, qd, DK);
                    if (round_q)
                        for (int64_t d = 0; d < DK; ++d) qd[d] = fp16_table().values[fp32_to_fp16(qd[d])];
                    mrow[lane] = mask ? reinterpret_cast<const uint16_t*>(
                                            static_cast<const char*>(mask->data) + iq1 * mask->nb[1] +
                                            (h % mask->ne[2]) * mask->nb[2] + (iq3 % mask->ne[3]) * mask->nb[3])
                                      : nullptr;
                }
            }
            std::fill(acc.begin(), acc.begin() + n_lanes * DV, 0.0f);
            std::fill(mx.begin(), mx.begin() + n_lanes, -INFINITY);
            std::fill(sum.begin(), sum.begin() + n_lanes, 0.0f);

            const char* kbase = static_cast<const char*>(k->data) + hk * k->nb[2] + ik3 * k->nb[3];
            const char* vbase = static_cast<const char*>(v->data) + hk * v->nb[2] + ik3 * v->nb[3];
            const float* f16 = fp16_table().values;
            for (int64_t ic = 0; ic < n_kv; ++ic) {
                bool any = mask == nullptr;
                for (int64_t lane = 0; lane < n_lanes && !any; ++lane) any = f16[mrow[lane][ic]] != -INFINITY;
                if (!any) continue;  // every lane masks this cell: skip converting it
                row_to_f32(k->type, kbase + ic * k->nb[1], krow.data(), DK);
                row_to_f32(v->type, vbase + ic * v->nb[1], vrow.data(), DV);
                for (int64_t lane = 0; lane < n_lanes; ++lane) {
                    const float mv = mask ? slopes[lane % group] * f16[mrow[lane][ic]] : 0.0f;
                    if (mv == -INFINITY) continue;
                    float s = dot(&qs[lane * DK], krow.data(), DK) * scale_v;
                    if (softcap != 0.0f) s = softcap * std::tanh(s);
                    s += mv;
                    float* a = &acc[lane * DV];
                    if (s > mx[lane]) {
                        const float ms = std::exp(mx[lane] - s);
                        mx[lane] = s;
                        scale(a, ms, DV);
                        sum[lane] = sum[lane] * ms + 1.0f;
                        axpy(a, vrow.data(), 1.0f, DV);
                    } else {
                        const float vs = std::exp(s - mx[lane]);
                        sum[lane] += vs;
                        axpy(a, vrow.data(), vs, DV);
                    }
                }
            }
            // dst: [DV, n_head, n_q, ne3]
            for (int64_t r = 0; r < rows; ++r) {
                for (int64_t g = 0; g < group; ++g) {
                    const int64_t lane = r * group + g, h = hk * group + g;
                    const float inv = sum[lane] == 0.0f ? 0.0f : 1.0f / sum[lane];
                    float* out = reinterpret_cast<float*>(static_cast<char*>(node->data) + h * node->nb[1] +
                                                          (r0 + r) * node->nb[2] + iq3 * node->nb[3]);
                    for (int64_t d = 0; d < DV; ++d) out[d] = acc[lane * DV + d] * inv;
                }
            }
        }
    });
}

}  // namespace mustafar::cpu
