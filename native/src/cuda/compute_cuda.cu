// CUDA kernels for the ops beyond the KV path that llama-family graphs use, so that the weights and
// their work move to the GPU: element-wise arithmetic with broadcasting, RMS_NORM, SCALE, SILU,
// SWIGLU, GET_ROWS, ROPE (normal and NeoX, with YaRN as ggml defines it) and MUL_MAT through cuBLAS
// (f16 weights take the activations in f16, as ggml's CPU backend does; f32 weights stay in f32), or,
// for f16 weights and one column (batch-1 decode), through our matrix-vector kernel (gemv_cuda.h), and with
// 2 to 8 columns (batched decode) through our few-column kernel (few_columns_cuda.h).
// Weights stored converted to f16 (the types of weight_blocks.h; see buffer_cuda.cu) are read as f16.
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "../buffer.h"
#include "compute_cuda.h"
#include "cuda_check.h"
#include "few_columns_cuda.h"
#include "flavour_cuda.h"
#include "gemv_cuda.h"
#include "launch_cuda.h"
#include "rope_cuda.h"

namespace mustafar::cuda {
namespace {

struct T4 {
    int64_t ne[4];
    size_t nb[4];
};

T4 t4(const ggml_tensor* t) {
    T4 r;
    for (int i = 0; i < 4; ++i) {
        r.ne[i] = t->ne[i];
        r.nb[i] = t->nb[i];
    }
    return r;
}

int64_t nelements(const ggml_tensor* t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

unsigned blocks_for(int64_t n, int threads) { return unsigned(std::min<int64_t>((n + threads - 1) / threads, 1 << 20)); }

__device__ void coords(const T4& s, int64_t linear, int64_t i[4]) {
    for (int d = 0; d < 4; ++d) {
        i[d] = linear % s.ne[d];
        linear /= s.ne[d];
    }
}

__device__ size_t at(const T4& s, const int64_t i[4]) { return i[0] * s.nb[0] + i[1] * s.nb[1] + i[2] * s.nb[2] + i[3] * s.nb[3]; }

__device__ __forceinline__ float binary_op(int op, float x, float y) {
    switch (op) {
        case GGML_OP_ADD: return x + y;
        case GGML_OP_SUB: return x - y;
        case GGML_OP_MUL: return x * y;
        default: return x / y;
    }
}

// dst = a (op) b, b broadcast over a (ggml_can_repeat).
__global__ void binary_kernel(int op, const char* a, T4 sa, const char* b, T4 sb, char* dst, T4 sd, int64_t n) {
    start_after_previous();
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
        int64_t i[4], j[4];
        coords(sd, k, i);
        for (int d = 0; d < 4; ++d) j[d] = i[d] % sb.ne[d];
        const float x = *reinterpret_cast<const float*>(a + at(sa, i)), y = *reinterpret_cast<const float*>(b + at(sb, j));
        *reinterpret_cast<float*>(dst + at(sd, i)) = binary_op(op, x, y);
    }
}

// The same over contiguous f32 tensors, four elements a thread (flat4 below): a and dst of one shape, b
// that shape or repeating every nb4 float4s. The general kernel's index arithmetic (twelve 64-bit divisions
// and remainders an element) cost more than the memory traffic of a prompt's residual ADDs.
__global__ void binary_flat_kernel(int op, const float4* a, const float4* b, float4* dst, int64_t n4, int64_t nb4) {
    start_after_previous();
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n4; k += int64_t(gridDim.x) * blockDim.x) {
        const float4 x = a[k], y = b[nb4 == n4 ? k : k % nb4];
        dst[k] = make_float4(binary_op(op, x.x, y.x), binary_op(op, x.y, y.y), binary_op(op, x.z, y.z), binary_op(op, x.w, y.w));
    }
}

// Element-wise unary maps (SCALE, SILU) over any strides.
__global__ void map_kernel(int kind, float p0, float p1, const char* a, T4 sa, char* dst, T4 sd, int64_t n) {
    start_after_previous();
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
        int64_t i[4];
        coords(sd, k, i);
        const float x = *reinterpret_cast<const float*>(a + at(sa, i));
        *reinterpret_cast<float*>(dst + at(sd, i)) = kind == 0 ? x * p0 + p1 : x / (1.0f + expf(-x));
    }
}

__device__ __forceinline__ float swiglu_of(float x, float g) { return x / (1.0f + expf(-x)) * g; }

// SWIGLU of two contiguous f32 tensors of dst's shape, four elements a thread (see binary_flat_kernel).
__global__ void swiglu_flat_kernel(const float4* a, const float4* b, float4* dst, int64_t n4) {
    start_after_previous();
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n4; k += int64_t(gridDim.x) * blockDim.x) {
        const float4 x = a[k], g = b[k];
        dst[k] = make_float4(swiglu_of(x.x, g.x), swiglu_of(x.y, g.y), swiglu_of(x.z, g.z), swiglu_of(x.w, g.w));
    }
}

__global__ void swiglu_kernel(const char* a, T4 sa, size_t a_off, const char* b, T4 sb, size_t b_off, char* dst, T4 sd, int64_t n) {
    start_after_previous();
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
        int64_t i[4];
        coords(sd, k, i);
        const float x = *reinterpret_cast<const float*>(a + a_off + at(sa, i));
        const float g = *reinterpret_cast<const float*>(b + b_off + at(sb, i));
        *reinterpret_cast<float*>(dst + at(sd, i)) = swiglu_of(x, g);
    }
}

// One block per row: x / sqrt(mean(x^2) + eps), and with kMul the MUL by a weight row that follows it
// (fusion_cuda.h) in the same pass, both outputs written. Rows of up to kNormPer values a thread keep
// their values in registers: the loads are issued together, so a decode step's single-row norm waits
// for memory once, not once per value. Each element is read before its own writes (in-place outputs).
// The MUL's weights are loaded before any write as well: a load after a store that may alias it waits
// for that store, one round trip to memory per value (the SASS of this kernel had STG, LDG, STG per
// value). With w_early (the weights are in a weights buffer, which no kernel writes) they load before the
// wait for the kernel before, so that their trip to memory overlaps its end (launch_cuda.h).
constexpr int kNormPer = 8;

unsigned norm_threads(int64_t n) { return unsigned(std::min<int64_t>(1024, std::max<int64_t>(32, ((n + 3) / 4 + 31) / 32 * 32))); }

template <bool kMul>
__global__ void __launch_bounds__(1024) rms_norm_kernel(const char* a, T4 sa, char* norm, T4 sn, const float* w, char* dst, T4 sd, float eps, bool w_early) {
    __shared__ float partial[32];
    const int64_t r = blockIdx.x, n = sa.ne[0];
    const bool held = n <= int64_t(blockDim.x) * kNormPer;
    float wv[kNormPer];
    auto load_weights = [&] {
#pragma unroll
        for (int j = 0; j < kNormPer; ++j) {
            const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
            wv[j] = c < n ? w[c] : 0.0f;
        }
    };
    if (kMul && held && w_early) load_weights();
    start_after_previous();
    const int64_t i1 = r % sa.ne[1], i2 = (r / sa.ne[1]) % sa.ne[2], i3 = r / (sa.ne[1] * sa.ne[2]);
    const char* row = a + i1 * sa.nb[1] + i2 * sa.nb[2] + i3 * sa.nb[3];
    char* nrow = norm + i1 * sn.nb[1] + i2 * sn.nb[2] + i3 * sn.nb[3];
    char* out = kMul ? dst + i1 * sd.nb[1] + i2 * sd.nb[2] + i3 * sd.nb[3] : nullptr;
    float x[kNormPer];
    float sum = 0.0f;
    if (held) {
        if (kMul && !w_early) load_weights();
#pragma unroll
        for (int j = 0; j < kNormPer; ++j) {
            const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
            x[j] = c < n ? *reinterpret_cast<const float*>(row + c * sa.nb[0]) : 0.0f;
            sum += x[j] * x[j];
        }
    } else {
        for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
            const float v = *reinterpret_cast<const float*>(row + c * sa.nb[0]);
            sum += v * v;
        }
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < int(blockDim.x / 32); ++i) total += partial[i];
    const float scale = rsqrtf(total / float(n) + eps);
    auto put = [&](int64_t c, float v, float wc) {
        const float y = v * scale;
        *reinterpret_cast<float*>(nrow + c * sn.nb[0]) = y;
        if constexpr (kMul) *reinterpret_cast<float*>(out + c * sd.nb[0]) = y * wc;
    };
    if (held) {
#pragma unroll
        for (int j = 0; j < kNormPer; ++j) {
            const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
            if (c < n) put(c, x[j], kMul ? wv[j] : 0.0f);
        }
    } else {
        for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
            const float v = *reinterpret_cast<const float*>(row + c * sa.nb[0]), wc = kMul ? w[c] : 0.0f;
            put(c, v, wc);
        }
    }
}

__global__ void get_rows_kernel(const char* w, T4 sw, int wtype, const char* idx, T4 si, char* dst, T4 sd) {
    start_after_previous();
    const int64_t r = blockIdx.x;  // over ne10 x ne11 x ne12 of the indices
    const int64_t i10 = r % si.ne[0], i11 = (r / si.ne[0]) % si.ne[1], i12 = r / (si.ne[0] * si.ne[1]);
    const int64_t row = *reinterpret_cast<const int32_t*>(idx + i10 * si.nb[0] + i11 * si.nb[1] + i12 * si.nb[2]);
    const char* src = w + row * sw.nb[1] + i11 * sw.nb[2] + i12 * sw.nb[3];
    char* out = dst + i10 * sd.nb[1] + i11 * sd.nb[2] + i12 * sd.nb[3];
    for (int64_t c = threadIdx.x; c < sw.ne[0]; c += blockDim.x)
        *reinterpret_cast<float*>(out + c * 4) = wtype == GGML_TYPE_F16 ? __half2float(reinterpret_cast<const __half*>(src)[c])
                                                                       : reinterpret_cast<const float*>(src)[c];
}

// One thread per rotated pair (rope_cuda.h).
__global__ void rope_kernel(const char* a, T4 sa, const int32_t* pos, const float* freq_factors, char* dst, T4 sd, RopeParams p) {
    start_after_previous();
    const int64_t rows = sa.ne[1] * sa.ne[2] * sa.ne[3];
    const int64_t half = sa.ne[0] / 2;
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < rows * half; k += int64_t(gridDim.x) * blockDim.x) {
        const int64_t pair = k % half, r = k / half;
        const int64_t i1 = r % sa.ne[1], i2 = (r / sa.ne[1]) % sa.ne[2], i3 = r / (sa.ne[1] * sa.ne[2]);
        const char* src = a + i1 * sa.nb[1] + i2 * sa.nb[2] + i3 * sa.nb[3];
        char* out = dst + i1 * sd.nb[1] + i2 * sd.nb[2] + i3 * sd.nb[3];
        const int64_t i0 = 2 * pair;
        if (i0 >= p.n_dims) {  // channels past n_dims pass through
            *reinterpret_cast<float*>(out + i0 * sd.nb[0]) = *reinterpret_cast<const float*>(src + i0 * sa.nb[0]);
            *reinterpret_cast<float*>(out + (i0 + 1) * sd.nb[0]) = *reinterpret_cast<const float*>(src + (i0 + 1) * sa.nb[0]);
            continue;
        }
        const int64_t a0 = p.neox ? pair : i0, a1 = p.neox ? pair + p.n_dims / 2 : i0 + 1;
        const float x0 = *reinterpret_cast<const float*>(src + a0 * sa.nb[0]);
        const float x1 = *reinterpret_cast<const float*>(src + a1 * sa.nb[0]);
        float y0, y1;
        rope_rotate(p, pos[i2], pair, freq_factors, x0, x1, y0, y1);
        *reinterpret_cast<float*>(out + a0 * sd.nb[0]) = y0;
        *reinterpret_cast<float*>(out + a1 * sd.nb[0]) = y1;
    }
}

// MUSTAFAR_FEW_COLUMNS=0: products of 2 to 8 columns go to cuBLAS (an A/B switch).
bool few_columns_on() {
    static const bool on = [] {
        const char* env = std::getenv("MUSTAFAR_FEW_COLUMNS");
        return env == nullptr || std::strcmp(env, "0") != 0;
    }();
    return on;
}

__global__ void to_half_kernel(const float* src, __half* dst, int64_t n) {
    start_after_previous();
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x)
        dst[k] = __float2half_rn(src[k]);
}

}  // namespace

namespace {
// Contiguous f32 values, a multiple of four at a 16-byte aligned address: an operand of the flat kernels.
bool flat4(const ggml_tensor* t) {
    return t->type == GGML_TYPE_F32 && ggml_is_contiguous(t) && nelements(t) % 4 == 0 && reinterpret_cast<uintptr_t>(t->data) % 16 == 0;
}

// b's values repeat in dst's element order: b matches dst in its first dimensions and is 1 in the rest.
bool repeats_in_order(const ggml_tensor* b, const ggml_tensor* dst) {
    int d = 0;
    while (d < 4 && b->ne[d] == dst->ne[d]) ++d;
    while (d < 4 && b->ne[d] == 1) ++d;
    return d == 4;
}
}  // namespace

bool ComputeOps::binary(const ggml_tensor* node) {
    const int64_t n = nelements(node);
    if (n == 0) return true;
    const ggml_tensor *a = node->src[0], *b = node->src[1];
    if (flat4(node) && flat4(a) && flat4(b) && ggml_are_same_shape(a, node) && repeats_in_order(b, node)) {
        launch_kernel(binary_flat_kernel, blocks_for(n / 4, 256), 256, 0, stream_, node->op, static_cast<const float4*>(a->data),
                      static_cast<const float4*>(b->data), static_cast<float4*>(node->data), n / 4, nelements(b) / 4);
        return MUSTAFAR_CUDA_OK(cudaGetLastError());
    }
    launch_kernel(binary_kernel, blocks_for(n, 256), 256, 0, stream_, node->op, static_cast<const char*>(node->src[0]->data), t4(node->src[0]),
                  static_cast<const char*>(node->src[1]->data), t4(node->src[1]),
                  static_cast<char*>(node->data), t4(node), n);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool ComputeOps::scale(const ggml_tensor* node) {
    float s, b;
    std::memcpy(&s, &node->op_params[0], 4);
    std::memcpy(&b, &node->op_params[1], 4);
    const int64_t n = nelements(node);
    if (n == 0) return true;
    launch_kernel(map_kernel, blocks_for(n, 256), 256, 0, stream_, 0, s, b, static_cast<const char*>(node->src[0]->data), t4(node->src[0]),
                  static_cast<char*>(node->data), t4(node), n);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool ComputeOps::silu(const ggml_tensor* node) {
    const int64_t n = nelements(node);
    if (n == 0) return true;
    launch_kernel(map_kernel, blocks_for(n, 256), 256, 0, stream_, 1, 0, 0, static_cast<const char*>(node->src[0]->data), t4(node->src[0]),
                  static_cast<char*>(node->data), t4(node), n);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool ComputeOps::swiglu(const ggml_tensor* node) {
    const ggml_tensor* a = node->src[0];
    const ggml_tensor* b = node->src[1];
    const bool swapped = node->op_params[1] != 0;
    size_t a_off = 0, b_off = 0;
    if (b == nullptr) {  // one tensor: the first half of each row gates the second (or the reverse)
        b = a;
        (swapped ? a_off : b_off) = size_t(node->ne[0]) * a->nb[0];
    } else if (swapped) {
        std::swap(a, b);
    }
    const int64_t n = nelements(node);
    if (n == 0) return true;
    if (a_off == 0 && b_off == 0 && flat4(node) && flat4(a) && flat4(b) && ggml_are_same_shape(a, node) && ggml_are_same_shape(b, node)) {
        launch_kernel(swiglu_flat_kernel, blocks_for(n / 4, 256), 256, 0, stream_, static_cast<const float4*>(a->data), static_cast<const float4*>(b->data),
                      static_cast<float4*>(node->data), n / 4);
        return MUSTAFAR_CUDA_OK(cudaGetLastError());
    }
    launch_kernel(swiglu_kernel, blocks_for(n, 256), 256, 0, stream_, static_cast<const char*>(a->data), t4(a), a_off,
                  static_cast<const char*>(b->data), t4(b), b_off,
                  static_cast<char*>(node->data), t4(node), n);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool ComputeOps::rms_norm(const ggml_tensor* node) {
    float eps;
    std::memcpy(&eps, &node->op_params[0], 4);
    const int64_t rows = node->ne[1] * node->ne[2] * node->ne[3];
    if (rows == 0) return true;
    launch_kernel(rms_norm_kernel<false>, unsigned(rows), norm_threads(node->ne[0]), 0, stream_,
                  static_cast<const char*>(node->src[0]->data), t4(node->src[0]), static_cast<char*>(node->data), t4(node), nullptr, nullptr, t4(node), eps, false);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool ComputeOps::rms_norm_mul(const ggml_tensor* norm, const ggml_tensor* mul) {
    float eps;
    std::memcpy(&eps, &norm->op_params[0], 4);
    const int64_t rows = norm->ne[1] * norm->ne[2] * norm->ne[3];
    if (rows == 0) return true;
    const ggml_tensor* w = mul->src[0] == norm ? mul->src[1] : mul->src[0];
    const bool w_early = w->buffer != nullptr && w->buffer->usage == GGML_BACKEND_BUFFER_USAGE_WEIGHTS;
    launch_kernel(rms_norm_kernel<true>, unsigned(rows), norm_threads(norm->ne[0]), 0, stream_,
                  static_cast<const char*>(norm->src[0]->data), t4(norm->src[0]), static_cast<char*>(norm->data), t4(norm), static_cast<const float*>(w->data),
                  static_cast<char*>(mul->data), t4(mul), eps, w_early);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool ComputeOps::get_rows(const ggml_tensor* node) {
    const ggml_tensor* idx = node->src[1];
    const int64_t rows = idx->ne[0] * idx->ne[1] * idx->ne[2];
    if (rows == 0) return true;  // e.g. a micro-batch with no outputs selects no rows
    T4 w = t4(node->src[0]);
    int wtype = node->src[0]->type;
    if (converted_to_f16(node->src[0])) {  // stored as f16 rows of ne0
        wtype = GGML_TYPE_F16;
        w.nb[0] = 2;
        for (int d = 1; d < 4; ++d) w.nb[d] = w.nb[d - 1] * size_t(w.ne[d - 1]);
    } else if (wtype != GGML_TYPE_F32 && wtype != GGML_TYPE_F16) {
        log_error("%s: GET_ROWS reads %s weights only once converted to f16 (%s)\n", kDeviceName, ggml_type_name(ggml_type(wtype)),
                  node->src[0]->name);
        return false;
    }
    launch_kernel(get_rows_kernel, unsigned(rows), 256, 0, stream_, static_cast<const char*>(node->src[0]->data), w, wtype,
                  static_cast<const char*>(idx->data), t4(idx), static_cast<char*>(node->data), t4(node));
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

namespace {
RopeParams rope_params(const ggml_tensor* node) {
    const int32_t* op = node->op_params;
    RopeParams p{};
    p.n_dims = op[1];
    p.neox = (op[2] & kGgmlRopeTypeNeox) != 0;
    float freq_base, beta_fast, beta_slow;
    std::memcpy(&freq_base, &op[5], 4);
    std::memcpy(&p.freq_scale, &op[6], 4);
    std::memcpy(&p.ext_factor, &op[7], 4);
    std::memcpy(&p.attn_factor, &op[8], 4);
    std::memcpy(&beta_fast, &op[9], 4);
    std::memcpy(&beta_slow, &op[10], 4);
    p.theta_scale = powf(freq_base, -2.0f / p.n_dims);
    float corr[2];
    ggml_rope_yarn_corr_dims(p.n_dims, op[4], freq_base, beta_fast, beta_slow, corr);
    p.corr0 = corr[0];
    p.corr1 = corr[1];
    return p;
}
}  // namespace

bool ComputeOps::rope(const ggml_tensor* node) {
    const RopeParams p = rope_params(node);
    const int64_t n = nelements(node) / 2;
    if (n == 0) return true;
    launch_kernel(rope_kernel, blocks_for(n, 256), 256, 0, stream_,
                  static_cast<const char*>(node->src[0]->data), t4(node->src[0]), static_cast<const int32_t*>(node->src[1]->data),
                  node->src[2] ? static_cast<const float*>(node->src[2]->data) : nullptr, static_cast<char*>(node->data), t4(node), p);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

ComputeOps::ComputeOps(cudaStream_t stream) : stream_(stream) {
    ok_ = cublasCreate(&cublas_) == CUBLAS_STATUS_SUCCESS && cublasSetStream(cublas_, stream) == CUBLAS_STATUS_SUCCESS;
    if (!ok_) log_error("%s: cuBLAS could not be initialised\n", kDeviceName);
}

ComputeOps::~ComputeOps() {
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (scratch_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(scratch_));
}

void* ComputeOps::scratch(size_t bytes) {
    if (bytes > scratch_bytes_) {
        if (scratch_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(scratch_));
        scratch_ = nullptr;
        scratch_bytes_ = 0;
        if (!MUSTAFAR_CUDA_OK(cudaMalloc(&scratch_, bytes))) return nullptr;
        scratch_bytes_ = bytes;
    }
    return scratch_;
}

namespace {
// Rows of f16 (or converted) weights, as the kernels read them.
size_t weight_row_bytes(const ggml_tensor* a) { return converted_to_f16(a) ? size_t(a->ne[0]) * 2 : a->nb[1]; }
}  // namespace

bool takes_gemv(const ggml_tensor* node) {
    if (node->op != GGML_OP_MUL_MAT) return false;
    const ggml_tensor *a = node->src[0], *b = node->src[1];
    const bool half = a->type == GGML_TYPE_F16 || converted_to_f16(a);
    const bool plain_2d = a->ne[2] == 1 && a->ne[3] == 1 && b->ne[2] == 1 && b->ne[3] == 1;
    return half && plain_2d && b->ne[1] == 1 && a->ne[1] > 0 && node->nb[0] == 4 &&
           gemv_shape_ok(a->data, weight_row_bytes(a) / 2, a->ne[0], static_cast<const float*>(b->data));
}

bool rope_fits_product(const ggml_tensor* product, const ggml_tensor* rope) {
    const ggml_tensor* in = rope->src[0];
    const int32_t* op = rope->op_params;
    const int64_t D = in->ne[0], tokens = product->ne[1];
    return rope->op == GGML_OP_ROPE && op[2] == 0 && in->data == product->data && in->type == GGML_TYPE_F32 && rope->type == GGML_TYPE_F32 &&
           D > 0 && D % 2 == 0 && in->nb[0] == 4 && in->nb[1] == size_t(D) * 4 && in->ne[1] * D == product->ne[0] && in->ne[2] == tokens &&
           (tokens == 1 || in->nb[2] == product->nb[1]) && in->ne[3] == 1 && rope->ne[0] == D && rope->ne[1] == in->ne[1] &&
           rope->ne[2] == tokens && rope->ne[3] == 1 && rope->nb[0] == 4 && rope->nb[1] % 4 == 0 && rope->nb[2] % 4 == 0 && op[1] > 0 &&
           op[1] <= D && op[1] % 2 == 0 && rope->src[1]->type == GGML_TYPE_I32 && rope->src[1]->ne[0] >= tokens &&
           (rope->src[2] == nullptr || rope->src[2]->type == GGML_TYPE_F32);
}

bool takes_few_columns(const ggml_tensor* node) {
    if (node->op != GGML_OP_MUL_MAT || !few_columns_on()) return false;
    const ggml_tensor *a = node->src[0], *b = node->src[1];
    const bool converted = converted_to_f16(a);
    const bool half = (a->type == GGML_TYPE_F16 && a->nb[0] == 2) || converted;
    const bool plain_2d = a->ne[2] == 1 && a->ne[3] == 1 && b->ne[2] == 1 && b->ne[3] == 1;
    if (!half || !plain_2d || b->type != GGML_TYPE_F32 || b->nb[0] != 4 || b->nb[1] % 4 != 0 || node->nb[0] != 4 || node->nb[1] % 4 != 0)
        return false;
    FewColumns f;
    f.w = static_cast<const __half*>(a->data);
    f.ldw = weight_row_bytes(a) / 2;
    f.x = static_cast<const float*>(b->data);
    f.ldx = b->nb[1] / 4;
    f.y = static_cast<float*>(node->data);
    f.ldy = node->nb[1] / 4;
    f.M = a->ne[1];
    f.N = b->ne[1];
    f.K = a->ne[0];
    return few_columns_shape_ok(f);
}

static_assert(GemvNodes::kMax == GemvGroup::kMaxParts && GemvNodes::kMax == FewGroup::kMaxParts);

bool ComputeOps::mul_mat_few(const GemvNodes& nodes) {
    const int n = nodes.n;
    if (n < 1 || n > FewGroup::kMaxParts || (nodes.add != nullptr && n != 1) || (nodes.glu != nullptr && n != 2)) return false;
    const ggml_tensor* lead = nodes.mats[0];
    FewGroup g;
    g.n = n;
    g.N = lead->src[1]->ne[1];
    g.K = lead->src[0]->ne[0];
    g.x = static_cast<const float*>(lead->src[1]->data);
    g.ldx = lead->src[1]->nb[1] / 4;
    for (int i = 0; i < n; ++i) {
        const ggml_tensor* node = nodes.mats[i];
        // One token's cache row is the matrix-vector kernel's alone.
        if (node->src[1] != lead->src[1] || nodes.cache_rows[i] != nullptr) return false;
        const ggml_tensor* a = node->src[0];
        FewPart& p = g.part[i];
        p.w = static_cast<const __half*>(a->data);
        p.ldw = weight_row_bytes(a) / 2;
        p.M = a->ne[1];
        p.y = static_cast<float*>(node->data);
        p.ldy = node->nb[1] / 4;
        const ggml_tensor* rope = nodes.ropes[i];
        if (rope == nullptr) {
            if (nodes.rope_only[i]) return false;
            continue;
        }
        if (!rope_fits_product(node, rope) || nodes.glu != nullptr || nodes.add != nullptr) return false;
        FewRope& r = p.rope;
        r.out = static_cast<float*>(rope->data);
        r.head_dim = rope->ne[0];
        r.head_stride = rope->nb[1] / 4;
        r.col_stride = rope->nb[2] / 4;
        r.pos = static_cast<const int32_t*>(rope->src[1]->data);
        r.freq_factors = rope->src[2] != nullptr ? static_cast<const float*>(rope->src[2]->data) : nullptr;
        r.p = rope_params(rope);
        if (nodes.rope_only[i]) p.y = nullptr;
    }
    if (const ggml_tensor* add = nodes.add) {  // the residual ADD that follows the product
        const ggml_tensor* r = add->src[0] == lead ? add->src[1] : add->src[0];
        g.part[0].add = static_cast<const float*>(r->data);
        g.part[0].ld_add = r->nb[1] / 4;
        g.part[0].sum = static_cast<float*>(add->data);
        g.part[0].ld_sum = add->nb[1] / 4;
    }
    if (const ggml_tensor* glu = nodes.glu) {  // gate (mats[0], through silu) and up, then their SWIGLU
        g.paired = true;
        g.glu = static_cast<float*>(glu->data);
        g.ld_glu = glu->nb[1] / 4;
    }
    return few_columns_group(g, stream_);
}

bool ComputeOps::mul_mat_vec(const GemvNodes& nodes) {
    const int n = nodes.n;
    if (n < 1 || n > GemvGroup::kMaxParts) return false;
    GemvGroup g;
    g.n = n;
    g.K = nodes.mats[0]->src[0]->ne[0];
    g.x = static_cast<const float*>(nodes.mats[0]->src[1]->data);
    for (int i = 0; i < n; ++i) {
        const ggml_tensor* a = nodes.mats[i]->src[0];
        g.part[i].w = static_cast<const __half*>(a->data);
        g.part[i].ldw = weight_row_bytes(a) / 2;
        g.part[i].M = a->ne[1];
        g.part[i].y = static_cast<float*>(nodes.mats[i]->data);
        const ggml_tensor* rope = nodes.ropes[i];
        if (rope != nullptr) {
            if (!rope_fits_product(nodes.mats[i], rope) || nodes.glu != nullptr) return false;
            GemvRope& r = g.part[i].rope;
            r.out = static_cast<float*>(rope->data);
            r.head_dim = rope->ne[0];
            r.head_stride = int64_t(rope->nb[1] / 4);
            r.pos = static_cast<const int32_t*>(rope->src[1]->data);
            r.freq_factors = rope->src[2] != nullptr ? static_cast<const float*>(rope->src[2]->data) : nullptr;
            r.p = rope_params(rope);
            if (nodes.rope_only[i]) g.part[i].y = nullptr;
        } else if (nodes.rope_only[i]) {
            return false;
        }
        if (const ggml_tensor* set = nodes.cache_rows[i]) {
            if (set->type != GGML_TYPE_F16 || nodes.glu != nullptr || (rope != nullptr && g.part[i].rope.head_stride != g.part[i].rope.head_dim))
                return false;
            GemvCacheRow& c = g.part[i].cache;
            if (const StoreRow& placed = nodes.store_rows[i]; placed.dst != nullptr) {  // the row's pool slot
                c.dst = static_cast<__half*>(placed.dst);
                c.rows = 1;
                c.slot_entry = placed.slot_entry;
                c.slot = placed.slot;
            } else {
                c.dst = static_cast<__half*>(set->data);
                c.row_stride = set->nb[1] / 2;
                c.rows = set->ne[1];
                c.idx = set->src[1]->data;
                c.idx64 = set->src[1]->type == GGML_TYPE_I64;
            }
        }
    }
    if (nodes.add != nullptr) {  // the residual ADD that follows the last product
        const ggml_tensor* y = nodes.mats[n - 1];
        if (nodes.cache_rows[n - 1] != nullptr) return false;
        g.part[n - 1].add = static_cast<const float*>((nodes.add->src[0] == y ? nodes.add->src[1] : nodes.add->src[0])->data);
        g.part[n - 1].sum = static_cast<float*>(nodes.add->data);
    }
    if (nodes.glu != nullptr) {
        if (n != 2) return false;
        g.paired = true;
        g.glu = static_cast<float*>(nodes.glu->data);
    }
    return gemv_f16(g, stream_);
}

// dst[m, n] = sum_k src0[k, m] * src1[k, n] per (i2, i3), src0 broadcast over the batch dims:
// in column-major terms C = A^T B with A = src0 (K x M), B = src1 (K x N), C = dst (M x N).
bool ComputeOps::mul_mat(const ggml_tensor* node) {
    if (!ok_) return false;
    const ggml_tensor* a = node->src[0];
    const ggml_tensor* b = node->src[1];
    const int64_t K = a->ne[0], M = a->ne[1], N = b->ne[1];
    if (M == 0 || N == 0 || nelements(b) == 0) return true;
    const bool converted = converted_to_f16(a);  // stored as f16 rows of K, whatever its type
    if (!converted && a->type != GGML_TYPE_F32 && a->type != GGML_TYPE_F16) {
        log_error("%s: MUL_MAT reads %s weights only once converted to f16 (%s)\n", kDeviceName, ggml_type_name(a->type), a->name);
        return false;
    }
    const bool half = a->type == GGML_TYPE_F16 || converted;
    const size_t a_nb1 = weight_row_bytes(a);
    const size_t a_nb2 = converted ? a_nb1 * size_t(M) : a->nb[2];
    const size_t a_nb3 = converted ? a_nb2 * size_t(a->ne[2]) : a->nb[3];
    // Batch-1 decode steps (one column, no batch dimensions): one kernel that reads the weights once.
    if (takes_gemv(node)) {
        GemvNodes one;
        one.mats[0] = node;
        one.n = 1;
        return mul_mat_vec(one);
    }
    // Batched decode steps (2 to 8 columns, no batch dimensions): one launch that reads the weights once.
    if (takes_few_columns(node)) {
        GemvNodes one;
        one.mats[0] = node;
        one.n = 1;
        return mul_mat_few(one);
    }
    const char* bdata = static_cast<const char*>(b->data);
    size_t b_nb1 = b->nb[1], b_nb2 = b->nb[2], b_nb3 = b->nb[3];
    if (half) {  // the activations in f16, contiguous
        const int64_t n = nelements(b);
        auto* h = static_cast<__half*>(scratch(size_t(n) * 2));
        if (h == nullptr || !ggml_is_contiguous(b)) return false;
        launch_kernel(to_half_kernel, blocks_for(n, 256), 256, 0, stream_, static_cast<const float*>(b->data), h, n);
        if (!MUSTAFAR_CUDA_OK(cudaGetLastError())) return false;
        bdata = reinterpret_cast<const char*>(h);
        b_nb1 = size_t(K) * 2;
        b_nb2 = b_nb1 * N;
        b_nb3 = b_nb2 * b->ne[2];
    }
    const float alpha = 1.0f, beta = 0.0f;
    const size_t ea = half ? 2 : 4, eb = half ? 2 : 4;
    for (int64_t i3 = 0; i3 < b->ne[3]; ++i3) {
        for (int64_t i2 = 0; i2 < b->ne[2]; ++i2) {
            const char* A = static_cast<const char*>(a->data) + (i2 / (b->ne[2] / a->ne[2])) * a_nb2 + (i3 / (b->ne[3] / a->ne[3])) * a_nb3;
            const char* B = bdata + i2 * b_nb2 + i3 * b_nb3;
            char* C = static_cast<char*>(node->data) + i2 * node->nb[2] + i3 * node->nb[3];
            const cublasStatus_t st = cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, int(M), int(N), int(K), &alpha, A,
                                                   half ? CUDA_R_16F : CUDA_R_32F, int(a_nb1 / ea), B, half ? CUDA_R_16F : CUDA_R_32F,
                                                   int(b_nb1 / eb), &beta, C, CUDA_R_32F, int(node->nb[1] / 4), CUBLAS_COMPUTE_32F,
                                                   CUBLAS_GEMM_DEFAULT);
            if (st != CUBLAS_STATUS_SUCCESS) {
                log_error("%s: cublasGemmEx failed (%d) for %s\n", kDeviceName, int(st), node->name);
                return false;
            }
        }
    }
    return true;
}

namespace {
bool plain_weight(const ggml_tensor* w) {
    return (w->type == GGML_TYPE_F32 || w->type == GGML_TYPE_F16) && w->nb[0] == ggml_type_size(w->type);
}

// A weight of a type with an f16 conversion (not a view) in our buffers, where it is stored converted.
// Decided by the tensor, not by the tag: llama.cpp asks before it allocates the weights, with a dummy
// buffer of our type in w->buffer.
bool converted_weight(const ggml_tensor* w) { return stored_as_f16(w) && w->buffer != nullptr && is_our_buffer(w->buffer); }
}  // namespace

bool supports_compute(const ggml_tensor* op) {
    auto f32 = [](const ggml_tensor* t) { return t != nullptr && t->type == GGML_TYPE_F32; };
    // Views and copies anywhere (the common checks in backend.cpp still apply to copies).
    if (is_view_op(op->op) || op->op == GGML_OP_CPY || op->op == GGML_OP_DUP || op->op == GGML_OP_CONT) return true;
    switch (op->op) {
        case GGML_OP_ADD:
        case GGML_OP_SUB:
        case GGML_OP_MUL:
        case GGML_OP_DIV: {
            const ggml_tensor *a = op->src[0], *b = op->src[1];
            if (!f32(a) || !f32(b) || !f32(op)) return false;
            for (int d = 0; d < 4; ++d)
                if (a->ne[d] != op->ne[d]) return false;
            // Empty operands (ggml repeats one only into an empty result): the last layer of a micro-batch
            // without outputs adds rows of none. Left to the CPU backend, such an ADD split the graph, and
            // the scheduler then waited for the GPU before the micro-batch's end.
            if (nelements(b) == 0) return nelements(op) == 0;
            for (int d = 0; d < 4; ++d)
                if (a->ne[d] % b->ne[d] != 0) return false;
            return true;
        }
        case GGML_OP_SCALE:
        case GGML_OP_RMS_NORM: return f32(op->src[0]) && f32(op);
        case GGML_OP_UNARY: return op->op_params[0] == kGgmlUnaryOpSilu && f32(op->src[0]) && f32(op);
        case GGML_OP_GLU:
            return op->op_params[0] == kGgmlGluOpSwiglu && f32(op->src[0]) && f32(op) && (op->src[1] == nullptr || f32(op->src[1]));
        case GGML_OP_GET_ROWS:
            return (plain_weight(op->src[0]) || converted_weight(op->src[0])) && op->src[1]->type == GGML_TYPE_I32 && f32(op);
        case GGML_OP_ROPE:
            return f32(op->src[0]) && f32(op) && (op->op_params[2] == 0 || op->op_params[2] == kGgmlRopeTypeNeox) &&
                   op->src[1]->type == GGML_TYPE_I32 && (op->src[2] == nullptr || f32(op->src[2]));
        case GGML_OP_MUL_MAT: {
            const ggml_tensor *a = op->src[0], *b = op->src[1];
            return (plain_weight(a) || converted_weight(a)) && f32(b) && f32(op) && b->nb[0] == 4 && op->nb[0] == 4 && b->ne[2] % a->ne[2] == 0 &&
                   b->ne[3] % a->ne[3] == 0 && (a->type == GGML_TYPE_F32 || ggml_is_contiguous(b));
        }
        default: return false;
    }
}

}  // namespace mustafar::cuda
