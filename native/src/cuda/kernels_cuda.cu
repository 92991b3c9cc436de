// CUDA kernels of the KV path: SET_ROWS, element-wise copies, and FLASH_ATTN_EXT. Attention goes to
// the flash-decoding kernels (attention_decode.cu) for the shapes they take (f16 cache, D 64/128/256,
// GQA 1/2/4/8, no ALiBi or soft-cap); a plain kernel, one block per query row and head with one
// online softmax in f32, serves every other shape.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "attention_decode.h"
#include "cuda_check.h"
#include "flavour_cuda.h"

namespace mustafar::cuda {
namespace {

struct Shape {
    int64_t ne[4];
    size_t nb[4];
    int type;
};

Shape shape_of(const ggml_tensor* t) {
    Shape s;
    for (int i = 0; i < 4; ++i) {
        s.ne[i] = t->ne[i];
        s.nb[i] = t->nb[i];
    }
    s.type = t->type;
    return s;
}

__device__ float load(int type, const char* p) {
    switch (type) {
        case GGML_TYPE_F16: return __half2float(*reinterpret_cast<const __half*>(p));
        case GGML_TYPE_BF16: return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
        default: return *reinterpret_cast<const float*>(p);
    }
}

__device__ void store(int type, char* p, float v) {
    switch (type) {
        case GGML_TYPE_F16: *reinterpret_cast<__half*>(p) = __float2half_rn(v); break;
        case GGML_TYPE_BF16: *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v); break;
        default: *reinterpret_cast<float*>(p) = v; break;
    }
}

__device__ int elem_size(int type) { return type == GGML_TYPE_F32 ? 4 : 2; }

__global__ void set_rows_kernel(const char* src, Shape s, const char* idx, Shape si, char* dst, Shape sd) {
    const int64_t r = blockIdx.x;  // over rows x ne02 x ne03
    const int64_t i = r % s.ne[1], i02 = (r / s.ne[1]) % s.ne[2], i03 = r / (s.ne[1] * s.ne[2]);
    const char* ip = idx + i * si.nb[0] + (i02 % si.ne[1]) * si.nb[1] + (i03 % si.ne[2]) * si.nb[2];
    const int64_t row = si.type == GGML_TYPE_I64 ? *reinterpret_cast<const int64_t*>(ip) : *reinterpret_cast<const int32_t*>(ip);
    if (row < 0 || row >= sd.ne[1]) return;
    const char* sp = src + i * s.nb[1] + i02 * s.nb[2] + i03 * s.nb[3];
    char* dp = dst + row * sd.nb[1] + i02 * sd.nb[2] + i03 * sd.nb[3];
    for (int64_t c = threadIdx.x; c < s.ne[0]; c += blockDim.x)
        store(sd.type, dp + c * elem_size(sd.type), load(s.type, sp + c * s.nb[0]));
}

__device__ size_t offset_of(const Shape& s, int64_t linear) {
    size_t off = 0;
    for (int d = 0; d < 4; ++d) {
        off += size_t(linear % s.ne[d]) * s.nb[d];
        linear /= s.ne[d];
    }
    return off;
}

__global__ void copy_kernel(const char* src, Shape s, char* dst, Shape sd, int64_t n) {
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x)
        store(sd.type, dst + offset_of(sd, k), load(s.type, src + offset_of(s, k)));
}

constexpr int kThreads = 128;
constexpr int kMaxPerThread = 2;  // head sizes up to 256

__device__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
    return total;
}

struct AttnParams {
    Shape q, k, v, mask, dst;
    float scale, max_bias, softcap, m0, m1;
    unsigned n_head_log2;
    int has_mask;
};

__global__ void flash_attn_kernel(const char* q, const char* k, const char* v, const char* mask, char* dst, AttnParams p) {
    __shared__ float scratch[kThreads / 32];
    const int64_t iq1 = blockIdx.x, h = blockIdx.y, iq3 = blockIdx.z;
    const int64_t DK = p.k.ne[0], DV = p.v.ne[0];
    const int64_t hk = h / (p.q.ne[2] / p.k.ne[2]);
    const int64_t ik3 = iq3 / (p.q.ne[3] / p.k.ne[3]);
    const float slope = p.max_bias <= 0.0f ? 1.0f
                        : h < int64_t(p.n_head_log2) ? powf(p.m0, float(h + 1))
                                                     : powf(p.m1, float(2 * (h - p.n_head_log2) + 1));
    float qv[kMaxPerThread], acc[kMaxPerThread];
    for (int j = 0; j < kMaxPerThread; ++j) {
        const int64_t d = threadIdx.x + j * kThreads;
        qv[j] = d < DK ? load(p.q.type, q + d * p.q.nb[0] + iq1 * p.q.nb[1] + h * p.q.nb[2] + iq3 * p.q.nb[3]) : 0.0f;
        acc[j] = 0.0f;
    }
    const char* mrow = p.has_mask ? mask + iq1 * p.mask.nb[1] + (h % p.mask.ne[2]) * p.mask.nb[2] + (iq3 % p.mask.ne[3]) * p.mask.nb[3] : nullptr;
    float m = -INFINITY, sum = 0.0f;
    for (int64_t ic = 0; ic < p.k.ne[1]; ++ic) {
        const float mv = mrow ? slope * __half2float(reinterpret_cast<const __half*>(mrow)[ic]) : 0.0f;
        if (mv == -INFINITY) continue;
        const char* kr = k + ic * p.k.nb[1] + hk * p.k.nb[2] + ik3 * p.k.nb[3];
        float part = 0.0f;
        for (int j = 0; j < kMaxPerThread; ++j) {
            const int64_t d = threadIdx.x + j * kThreads;
            if (d < DK) part += qv[j] * load(p.k.type, kr + d * p.k.nb[0]);
        }
        float s = block_sum(part, scratch) * p.scale;
        if (p.softcap != 0.0f) s = p.softcap * tanhf(s);
        s += mv;
        const float m_new = fmaxf(m, s);
        const float ms = expf(m - m_new), vs = expf(s - m_new);
        m = m_new;
        sum = sum * ms + vs;
        const char* vr = v + ic * p.v.nb[1] + hk * p.v.nb[2] + ik3 * p.v.nb[3];
        for (int j = 0; j < kMaxPerThread; ++j) {
            const int64_t d = threadIdx.x + j * kThreads;
            if (d < DV) acc[j] = acc[j] * ms + vs * load(p.v.type, vr + d * p.v.nb[0]);
        }
    }
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
    for (int j = 0; j < kMaxPerThread; ++j) {
        const int64_t d = threadIdx.x + j * kThreads;
        if (d < DV)
            *reinterpret_cast<float*>(dst + d * 4 + h * p.dst.nb[1] + iq1 * p.dst.nb[2] + iq3 * p.dst.nb[3]) = acc[j] * inv;
    }
}

}  // namespace

bool set_rows(const ggml_tensor* node, cudaStream_t stream) {
    const ggml_tensor* src = node->src[0];
    const int64_t rows = src->ne[1] * src->ne[2] * src->ne[3];
    if (rows == 0) return true;
    set_rows_kernel<<<unsigned(rows), 128, 0, stream>>>(static_cast<const char*>(src->data), shape_of(src),
                                                        static_cast<const char*>(node->src[1]->data), shape_of(node->src[1]),
                                                        static_cast<char*>(node->data), shape_of(node));
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool copy(const ggml_tensor* node, cudaStream_t stream) {
    const ggml_tensor* src = node->src[0];
    const int64_t n = src->ne[0] * src->ne[1] * src->ne[2] * src->ne[3];
    if (n == 0) return true;
    const unsigned blocks = unsigned(std::min<int64_t>((n + 255) / 256, 65535));
    copy_kernel<<<blocks, 256, 0, stream>>>(static_cast<const char*>(src->data), shape_of(src), static_cast<char*>(node->data),
                                            shape_of(node), n);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The node as a flash-decoding problem, when the fast kernels take it.
bool as_decode(const ggml_tensor* node, DecodeProblem& p, DenseCache& c) {
    const ggml_tensor *q = node->src[0], *k = node->src[1], *v = node->src[2], *mask = node->src[3];
    float max_bias = 0.0f, softcap = 0.0f;
    std::memcpy(&p.scale, &node->op_params[0], sizeof(float));
    std::memcpy(&max_bias, &node->op_params[1], sizeof(float));
    std::memcpy(&softcap, &node->op_params[2], sizeof(float));
    if (max_bias != 0.0f || softcap != 0.0f) return false;
    if (q->type != GGML_TYPE_F32 || k->type != GGML_TYPE_F16 || v->type != GGML_TYPE_F16 || node->type != GGML_TYPE_F32) return false;
    const int64_t D = q->ne[0];
    if (k->ne[0] != D || v->ne[0] != D || k->nb[0] != 2 || v->nb[0] != 2 || q->nb[0] != 4 || node->nb[0] != 4) return false;
    if (!decode_supported(int(D), int(q->ne[2]), int(k->ne[2])) || v->ne[2] != k->ne[2] || v->ne[1] != k->ne[1]) return false;
    if ((k->ne[3] != 1 && k->ne[3] != q->ne[3]) || v->ne[3] != k->ne[3]) return false;
    for (const ggml_tensor* t : {k, v}) {
        if (!aligned16(t->data) || t->nb[1] % 16 != 0 || t->nb[2] % 16 != 0 || t->nb[3] % 16 != 0) return false;
    }
    if (mask != nullptr && (mask->type != GGML_TYPE_F16 || mask->ne[2] != 1 || mask->nb[0] != 2 || mask->ne[0] < k->ne[1] || mask->ne[1] < q->ne[1] ||
                            (mask->ne[3] != 1 && mask->ne[3] != q->ne[3])))
        return false;
    p.head_dim = int(D);
    p.n_head = int(q->ne[2]);
    p.n_head_kv = int(k->ne[2]);
    p.n_rows = int(q->ne[1]);
    p.n_seq = int(q->ne[3]);
    p.n_kv = k->ne[1];
    p.q = static_cast<const char*>(q->data);
    p.q_nb1 = q->nb[1];
    p.q_nb2 = q->nb[2];
    p.q_nb3 = q->nb[3];
    p.out = static_cast<char*>(node->data);
    p.out_nb1 = node->nb[1];
    p.out_nb2 = node->nb[2];
    p.out_nb3 = node->nb[3];
    if (mask != nullptr) {
        p.mask = static_cast<const char*>(mask->data);
        p.mask_nb1 = mask->nb[1];
        p.mask_nb3 = mask->nb[3];
        p.mask_ne3 = int(mask->ne[3]);
    }
    c.k = static_cast<const char*>(k->data);
    c.k_nb1 = k->nb[1];
    c.k_nb2 = k->nb[2];
    c.k_nb3 = k->ne[3] == 1 ? 0 : k->nb[3];
    c.v = static_cast<const char*>(v->data);
    c.v_nb1 = v->nb[1];
    c.v_nb2 = v->nb[2];
    c.v_nb3 = v->ne[3] == 1 ? 0 : v->nb[3];
    return true;
}

}  // namespace

bool flash_attn_ext(const ggml_tensor* node, cudaStream_t stream, DecodeWorkspace& ws, int sm_count) {
    DecodeProblem dp;
    DenseCache dc;
    if (as_decode(node, dp, dc)) return decode_attention_dense(dp, dc, ws, sm_count, stream);

    AttnParams p{};
    p.q = shape_of(node->src[0]);
    p.k = shape_of(node->src[1]);
    p.v = shape_of(node->src[2]);
    p.has_mask = node->src[3] != nullptr;
    if (p.has_mask) p.mask = shape_of(node->src[3]);
    p.dst = shape_of(node);
    std::memcpy(&p.scale, &node->op_params[0], sizeof(float));
    std::memcpy(&p.max_bias, &node->op_params[1], sizeof(float));
    std::memcpy(&p.softcap, &node->op_params[2], sizeof(float));
    if (p.softcap != 0.0f) p.scale /= p.softcap;
    p.n_head_log2 = 1u << unsigned(floor(log2(double(p.q.ne[2]))));
    p.m0 = powf(2.0f, -p.max_bias / p.n_head_log2);
    p.m1 = powf(2.0f, -(p.max_bias / 2.0f) / p.n_head_log2);
    if (p.q.ne[1] == 0 || p.q.ne[2] == 0 || p.q.ne[3] == 0) return true;
    const dim3 grid(unsigned(p.q.ne[1]), unsigned(p.q.ne[2]), unsigned(p.q.ne[3]));
    flash_attn_kernel<<<grid, kThreads, 0, stream>>>(
        static_cast<const char*>(node->src[0]->data), static_cast<const char*>(node->src[1]->data),
        static_cast<const char*>(node->src[2]->data), p.has_mask ? static_cast<const char*>(node->src[3]->data) : nullptr,
        static_cast<char*>(node->data), p);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

}  // namespace mustafar::cuda
