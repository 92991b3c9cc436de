// Our buffer type and buffers. In the CPU flavour a buffer is host memory holding tensors in
// ggml's layout; is_host is false all the same, because the KV cache tensors will not keep that
// layout, so other backends must go through get/set_tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "ggml_abi.h"

namespace mustafar {

// llama.cpp names its cache tensors cache_k_l<N> / cache_v_l<N>.
bool is_kv_cache_tensor(const ggml_tensor* t);

class Buffer {
public:
    Buffer(void* base, size_t size) : base_(base), size_(size) {}
    ~Buffer();
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    uint8_t* base() const { return static_cast<uint8_t*>(base_); }
    size_t size() const { return size_; }

    void note_tensor(const ggml_tensor* t);
    void forget_tensors();
    // Adds this buffer's cache tensors into the totals.
    void add_kv_stats(uint64_t& bytes, uint64_t& dense_bytes, uint64_t& tensors, uint64_t& elements) const;

private:
    void* base_;
    size_t size_;
    mutable std::mutex mutex_;
    std::unordered_map<const ggml_tensor*, size_t> kv_tensors_;  // tensor -> bytes allocated
};

void init_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device);
bool is_our_buffer(const ggml_backend_buffer* buffer);

}  // namespace mustafar
