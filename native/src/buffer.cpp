#include "buffer.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "registry.h"

namespace mustafar {
namespace {

constexpr size_t kAlignment = 128;

Buffer* buffer_of(ggml_backend_buffer_t buffer) { return static_cast<Buffer*>(buffer->context); }

void free_buffer(ggml_backend_buffer_t buffer) {
    Buffer* b = buffer_of(buffer);
    registry().remove_buffer(b);
    delete b;
}

void* get_base(ggml_backend_buffer_t buffer) { return buffer_of(buffer)->base(); }

ggml_status init_tensor(ggml_backend_buffer_t buffer, ggml_tensor* tensor) {
    if (tensor->view_src == nullptr) buffer_of(buffer)->note_tensor(tensor);
    return GGML_STATUS_SUCCESS;
}

void memset_tensor(ggml_backend_buffer_t, ggml_tensor* tensor, uint8_t value, size_t offset, size_t size) {
    std::memset(static_cast<uint8_t*>(tensor->data) + offset, value, size);
}

void set_tensor(ggml_backend_buffer_t, ggml_tensor* tensor, const void* data, size_t offset, size_t size) {
    std::memcpy(static_cast<uint8_t*>(tensor->data) + offset, data, size);
}

void get_tensor(ggml_backend_buffer_t, const ggml_tensor* tensor, void* data, size_t offset, size_t size) {
    std::memcpy(data, static_cast<const uint8_t*>(tensor->data) + offset, size);
}

bool cpy_tensor(ggml_backend_buffer_t, const ggml_tensor* src, ggml_tensor* dst) {
    // Only between our own buffers: other backends' memory is not ours to read directly.
    if (src->buffer == nullptr || !is_our_buffer(src->buffer)) return false;
    std::memcpy(dst->data, src->data, ggml_nbytes(src));
    return true;
}

void clear(ggml_backend_buffer_t buffer, uint8_t value) {
    std::memset(buffer_of(buffer)->base(), value, buffer_of(buffer)->size());
}

void reset(ggml_backend_buffer_t buffer) { buffer_of(buffer)->forget_tensors(); }

const ggml_backend_buffer_i kBufferInterface = {
    /* free_buffer   */ free_buffer,
    /* get_base      */ get_base,
    /* init_tensor   */ init_tensor,
    /* memset_tensor */ memset_tensor,
    /* set_tensor    */ set_tensor,
    /* get_tensor    */ get_tensor,
    /* set_tensor_2d */ nullptr,
    /* get_tensor_2d */ nullptr,
    /* cpy_tensor    */ cpy_tensor,
    /* clear         */ clear,
    /* reset         */ reset,
};

const char* buft_get_name(ggml_backend_buffer_type_t) { return kDeviceName; }

ggml_backend_buffer_t buft_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size) {
    const size_t bytes = ((size ? size : 1) + kAlignment - 1) / kAlignment * kAlignment;
    void* base = std::aligned_alloc(kAlignment, bytes);
    if (base == nullptr) {
        log_error("%s: failed to allocate %zu bytes\n", kDeviceName, bytes);
        return nullptr;
    }
    Buffer* b = new (std::nothrow) Buffer(base, size);
    if (b == nullptr) {
        std::free(base);
        return nullptr;
    }
    ggml_backend_buffer_t buffer = ggml_backend_buffer_init(buft, kBufferInterface, b, size);
    if (buffer == nullptr) {
        delete b;
        return nullptr;
    }
    registry().add_buffer(b);
    return buffer;
}

size_t buft_get_alignment(ggml_backend_buffer_type_t) { return kAlignment; }

bool buft_is_host(ggml_backend_buffer_type_t) { return false; }

}  // namespace

Buffer::~Buffer() { std::free(base_); }

void Buffer::note_tensor(const ggml_tensor* t) {
    if (!is_kv_cache_tensor(t)) return;
    std::lock_guard<std::mutex> lock(mutex_);
    kv_tensors_[t] = ggml_nbytes(t);
}

void Buffer::forget_tensors() {
    std::lock_guard<std::mutex> lock(mutex_);
    kv_tensors_.clear();
}

void Buffer::add_kv_stats(uint64_t& bytes, uint64_t& dense_bytes, uint64_t& tensors, uint64_t& elements) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [t, allocated] : kv_tensors_) {
        const uint64_t n = uint64_t(t->ne[0]) * t->ne[1] * t->ne[2] * t->ne[3];
        bytes += allocated;
        dense_bytes += n * 2;  // an f16 cache of the same cells
        elements += n;
        ++tensors;
    }
}

bool is_kv_cache_tensor(const ggml_tensor* t) {
    return std::strncmp(t->name, "cache_k_l", 9) == 0 || std::strncmp(t->name, "cache_v_l", 9) == 0;
}

void init_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) {
    buft.iface = {
        /* get_name       */ buft_get_name,
        /* alloc_buffer   */ buft_alloc_buffer,
        /* get_alignment  */ buft_get_alignment,
        /* get_max_size   */ nullptr,
        /* get_alloc_size */ nullptr,
        /* is_host        */ buft_is_host,
    };
    buft.device = device;
    buft.context = nullptr;
}

bool is_our_buffer(const ggml_backend_buffer* buffer) {
    return buffer != nullptr && buffer->buft == &registry().buffer_type;
}

}  // namespace mustafar
