// Page-locked host memory for llama.cpp's host-side buffers (the device's host buffer type): the CPU
// backend's compute buffer, which holds the graph inputs (the attention mask, positions, cache indices),
// the output buffer and the weights that stay on the CPU. Uploads from it run by DMA at the link's speed;
// from pageable memory a batch-8, 32K prompt's 209 MB mask took 29.5 ms a micro-batch (about 7 GB/s,
// gpu-e2e-2026-12-02.md, twenty-ninth session).
#include <cstdlib>
#include <cstring>
#include <new>

#include "../registry.h"
#include "cuda_check.h"
#include "flavour_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr size_t kHostAlignment = 64;

struct HostBuffer {
    void* base = nullptr;
    bool pinned = false;  // false: plain memory, where the system refused to pin that much
    ~HostBuffer() {
        if (base == nullptr) return;
        registry().host_buffers.remove(base);
        registry().shadows.drop_borrowed();  // none may point into memory that is going away
        if (pinned) MUSTAFAR_CUDA_OK(cudaFreeHost(base));
        else std::free(base);
    }
};

HostBuffer* of(ggml_backend_buffer_t b) { return static_cast<HostBuffer*>(b->context); }

void free_buffer(ggml_backend_buffer_t b) { delete of(b); }

void* get_base(ggml_backend_buffer_t b) { return of(b)->base; }

void memset_tensor(ggml_backend_buffer_t, ggml_tensor* t, uint8_t value, size_t offset, size_t size) {
    std::memset(static_cast<uint8_t*>(t->data) + offset, value, size);
}

void set_tensor(ggml_backend_buffer_t, ggml_tensor* t, const void* data, size_t offset, size_t size) {
    std::memcpy(static_cast<uint8_t*>(t->data) + offset, data, size);
}

void get_tensor(ggml_backend_buffer_t, const ggml_tensor* t, void* data, size_t offset, size_t size) {
    std::memcpy(data, static_cast<const uint8_t*>(t->data) + offset, size);
}

void clear(ggml_backend_buffer_t b, uint8_t value) { std::memset(of(b)->base, value, b->size); }

// Copies between buffers go through get/set_tensor (ggml's fallback when cpy_tensor is absent).
const ggml_backend_buffer_i kInterface = {
    free_buffer, get_base, nullptr, memset_tensor, set_tensor, get_tensor, nullptr, nullptr, nullptr, clear, nullptr,
};

const char* buft_name(ggml_backend_buffer_type_t) { return "Mustafar_Host"; }

ggml_backend_buffer_t alloc_buffer(ggml_backend_buffer_type_t buft, size_t size) {
    auto* h = new (std::nothrow) HostBuffer();
    if (h == nullptr) return nullptr;
    const size_t bytes = (size ? size : 1) + kHostAlignment - 1;
    if (cudaMallocHost(&h->base, bytes) == cudaSuccess) {
        h->pinned = true;
    } else {
        cudaGetLastError();  // the refusal is answered below, not left for the next launch's check
        h->base = std::aligned_alloc(kHostAlignment, bytes / kHostAlignment * kHostAlignment);
        if (h->base != nullptr)
            ggml_log_internal(GGML_LOG_LEVEL_WARN, "%s: could not pin %zu bytes of host memory; using pageable memory\n", kDeviceName, bytes);
    }
    if (h->base == nullptr) {
        log_error("%s: failed to allocate %zu bytes of host memory\n", kDeviceName, bytes);
        delete h;
        return nullptr;
    }
    ggml_backend_buffer_t buffer = ggml_backend_buffer_init(buft, kInterface, h, size);
    if (buffer == nullptr) {
        delete h;
        return nullptr;
    }
    registry().host_buffers.add(h->base, size);
    return buffer;
}

size_t alignment(ggml_backend_buffer_type_t) { return kHostAlignment; }

bool is_host(ggml_backend_buffer_type_t) { return true; }

}  // namespace

void init_pinned_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) {
    buft.iface = {buft_name, alloc_buffer, alignment, nullptr, nullptr, is_host};
    buft.device = device;
    buft.context = nullptr;
}

}  // namespace mustafar::cuda
