// Device-memory buffers of the CUDA flavour: tensors in ggml's layout in GPU memory; other
// backends reach them only through get/set_tensor (is_host is false).
#include <cstdint>
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
    if (t->view_src == nullptr) of(b)->tensors->init_tensor(t);
    return GGML_STATUS_SUCCESS;
}

void memset_tensor(ggml_backend_buffer_t, ggml_tensor* t, uint8_t value, size_t offset, size_t size) {
    MUSTAFAR_CUDA_OK(cudaMemset(static_cast<uint8_t*>(t->data) + offset, value, size));
}

void set_tensor(ggml_backend_buffer_t, ggml_tensor* t, const void* data, size_t offset, size_t size) {
    MUSTAFAR_CUDA_OK(cudaMemcpy(static_cast<uint8_t*>(t->data) + offset, data, size, cudaMemcpyHostToDevice));
}

void get_tensor(ggml_backend_buffer_t, const ggml_tensor* t, void* data, size_t offset, size_t size) {
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

bool is_host(ggml_backend_buffer_type_t) { return false; }

}  // namespace

void init_device_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) {
    buft.iface = {buft_name, alloc_buffer, alignment, nullptr, nullptr, is_host};
    buft.device = device;
    buft.context = nullptr;
}

}  // namespace mustafar::cuda
