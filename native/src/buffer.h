// Our buffer type and buffers. In the CPU flavour a buffer is host memory holding tensors in
// ggml's layout; is_host is false all the same, because the KV cache tensors will not keep that
// layout, so other backends must go through get/set_tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "../include/mustafar.h"
#include "ggml_abi.h"
#include "kv/store.h"

namespace mustafar {

// llama.cpp names its cache tensors cache_k_l<N> / cache_v_l<N>.
bool is_kv_cache_tensor(const ggml_tensor* t);

// One of our buffers: its memory (owned by the flavour's buffer code) and the cache tensors in it,
// which the statistics API sums. Registered with the registry while alive.
class Buffer {
public:
    Buffer(void* base, size_t size);
    ~Buffer();
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    uint8_t* base() const { return static_cast<uint8_t*>(base_); }
    size_t size() const { return size_; }

    // Called for each tensor allocated here: cache tensors get a Mustafar store when one is configured.
    // False when the store's device side cannot be created (logged).
    bool init_tensor(ggml_tensor* t);
    void forget_tensors();
    void clear_stores();
    // Adds this buffer's cache tensors into the totals.
    void add_kv_stats(int64_t owner, mustafar_kv_stats& s) const;

private:
    // A store counted in the registry's live_stores while it lives.
    struct CountedDelete {
        void operator()(kv::KvStore* s) const;
    };
    using LiveStore = std::unique_ptr<kv::KvStore, CountedDelete>;
    struct CacheTensor {
        size_t bytes;  // allocated in this buffer
        LiveStore store;  // null: stored dense
        int64_t owner;
    };
    void* base_;
    size_t size_;
    mutable std::mutex mutex_;
    std::unordered_map<const ggml_tensor*, CacheTensor> kv_tensors_;
};

// Reading and writing a store-backed tensor (or view) through its dense f16 layout: get/set/memset_tensor.
void store_memset(kv::KvStore& store, const ggml_tensor* tensor, uint8_t value, size_t offset, size_t size);
void store_set(kv::KvStore& store, const ggml_tensor* tensor, const void* data, size_t offset, size_t size);
void store_get(const kv::KvStore& store, const ggml_tensor* tensor, void* data, size_t offset, size_t size);
// Bytes a tensor takes in our buffers: a store's records and pool for cache tensors that get one.
size_t tensor_alloc_size(const ggml_tensor* tensor);

// The store configuration for a cache tensor under the current config, if it gets one.
bool store_config_for(const ggml_tensor* t, kv::StoreConfig& out, int64_t* owner = nullptr);

// Host-memory buffers (the CPU flavour), with Mustafar stores for cache tensors.
void init_host_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device);
bool is_our_buffer(const ggml_backend_buffer* buffer);

}  // namespace mustafar
