// Device-memory buffers of the CUDA flavour: tensors in ggml's layout in GPU memory; other
// backends reach them only through get/set_tensor (is_host is false).
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

#include "../buffer.h"
#include "cuda_check.h"
#include "flavour_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr size_t kAlignment = 256;

// Device memory plus the common accounting of cache tensors (statistics).
struct DeviceBuffer {
    void* base = nullptr;
    size_t size = 0;
    std::unique_ptr<Buffer> tensors;
    ~DeviceBuffer() {
        if (base != nullptr) MUSTAFAR_CUDA_OK(cudaFree(base));
    }
};

DeviceBuffer* of(ggml_backend_buffer_t b) { return static_cast<DeviceBuffer*>(b->context); }

void free_buffer(ggml_backend_buffer_t b) { delete of(b); }

void* get_base(ggml_backend_buffer_t b) { return of(b)->base; }

ggml_status init_tensor(ggml_backend_buffer_t b, ggml_tensor* t) {
    if (t->view_src == nullptr) {
        of(b)->tensors->init_tensor(t);
        if (t->type == GGML_TYPE_Q8_0) t->extra = const_cast<char*>(&kConvertedToF16);
    }
    return GGML_STATUS_SUCCESS;
}

constexpr size_t kQ8Block = 34;  // f16 scale + 32 int8 values
constexpr int kQ8Values = 32;

__global__ void q8_0_to_f16(const uint8_t* blocks, __half* out, int64_t n_blocks) {
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n_blocks * kQ8Values; k += int64_t(gridDim.x) * blockDim.x) {
        const uint8_t* block = blocks + (k / kQ8Values) * kQ8Block;
        const float d = __half2float(*reinterpret_cast<const __half*>(block));
        out[k] = __float2half_rn(d * float(reinterpret_cast<const int8_t*>(block + 2)[k % kQ8Values]));
    }
}

// Converts whole Q8_0 blocks on upload; llama.cpp writes weights whole (or in block-aligned pieces).
void set_converted(ggml_tensor* t, const void* data, size_t offset, size_t size) {
    if (offset % kQ8Block != 0 || size % kQ8Block != 0) {
        log_error("%s: a write into the Q8_0 weight %s is not block-aligned (offset %zu, size %zu)\n", kDeviceName, t->name, offset, size);
        return;
    }
    void* staging = nullptr;
    if (!MUSTAFAR_CUDA_OK(cudaMalloc(&staging, size))) return;
    const int64_t n_blocks = int64_t(size / kQ8Block);
    if (MUSTAFAR_CUDA_OK(cudaMemcpy(staging, data, size, cudaMemcpyHostToDevice))) {
        auto* out = static_cast<__half*>(t->data) + (offset / kQ8Block) * kQ8Values;
        q8_0_to_f16<<<unsigned(std::min<int64_t>((n_blocks * kQ8Values + 255) / 256, 1 << 20)), 256>>>(static_cast<const uint8_t*>(staging), out, n_blocks);
        MUSTAFAR_CUDA_OK(cudaGetLastError());
        MUSTAFAR_CUDA_OK(cudaDeviceSynchronize());
    }
    MUSTAFAR_CUDA_OK(cudaFree(staging));
}

void memset_tensor(ggml_backend_buffer_t, ggml_tensor* t, uint8_t value, size_t offset, size_t size) {
    if (converted_to_f16(t)) {
        log_error("%s: memset of the converted Q8_0 weight %s is not supported\n", kDeviceName, t->name);
        return;
    }
    MUSTAFAR_CUDA_OK(cudaMemset(static_cast<uint8_t*>(t->data) + offset, value, size));
}

void set_tensor(ggml_backend_buffer_t, ggml_tensor* t, const void* data, size_t offset, size_t size) {
    if (converted_to_f16(t)) {
        set_converted(t, data, offset, size);
        return;
    }
    MUSTAFAR_CUDA_OK(cudaMemcpy(static_cast<uint8_t*>(t->data) + offset, data, size, cudaMemcpyHostToDevice));
}

void get_tensor(ggml_backend_buffer_t, const ggml_tensor* t, void* data, size_t offset, size_t size) {
    if (converted_to_f16(t)) {  // the Q8_0 bytes are gone; nothing in llama.cpp reads weights back
        log_error("%s: reading back the converted Q8_0 weight %s is not supported\n", kDeviceName, t->name);
        std::memset(data, 0, size);
        return;
    }
    MUSTAFAR_CUDA_OK(cudaMemcpy(data, static_cast<const uint8_t*>(t->data) + offset, size, cudaMemcpyDeviceToHost));
}

bool cpy_tensor(ggml_backend_buffer_t, const ggml_tensor* src, ggml_tensor* dst) {
    if (src->buffer == nullptr || !is_our_buffer(src->buffer)) return false;
    return MUSTAFAR_CUDA_OK(cudaMemcpy(dst->data, src->data, ggml_nbytes(src), cudaMemcpyDeviceToDevice));
}

void clear(ggml_backend_buffer_t b, uint8_t value) { MUSTAFAR_CUDA_OK(cudaMemset(of(b)->base, value, of(b)->size)); }

void reset(ggml_backend_buffer_t b) { of(b)->tensors->forget_tensors(); }

const ggml_backend_buffer_i kInterface = {
    free_buffer, get_base, init_tensor, memset_tensor, set_tensor, get_tensor, nullptr, nullptr, cpy_tensor, clear, reset,
};

const char* buft_name(ggml_backend_buffer_type_t) { return kDeviceName; }

ggml_backend_buffer_t alloc_buffer(ggml_backend_buffer_type_t buft, size_t size) {
    auto* b = new (std::nothrow) DeviceBuffer();
    if (b == nullptr) return nullptr;
    b->size = size ? size : 1;
    if (!MUSTAFAR_CUDA_OK(cudaMalloc(&b->base, b->size))) {
        b->base = nullptr;
        delete b;
        return nullptr;
    }
    b->tensors = std::make_unique<Buffer>(b->base, b->size);
    ggml_backend_buffer_t buffer = ggml_backend_buffer_init(buft, kInterface, b, size);
    if (buffer == nullptr) delete b;
    return buffer;
}

size_t alignment(ggml_backend_buffer_type_t) { return kAlignment; }

// Q8_0 weights take their f16 size.
size_t alloc_size(ggml_backend_buffer_type_t, const ggml_tensor* t) {
    if (t->type == GGML_TYPE_Q8_0 && t->view_src == nullptr) return size_t(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]) * 2;
    return ggml_nbytes(t);
}

bool is_host(ggml_backend_buffer_type_t) { return false; }

}  // namespace

const char kConvertedToF16 = 0;

void init_device_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) {
    buft.iface = {buft_name, alloc_buffer, alignment, nullptr, alloc_size, is_host};
    buft.device = device;
    buft.context = nullptr;
}

}  // namespace mustafar::cuda
