#include "buffer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "flavour.h"
#include "kv/view.h"
#include "registry.h"

namespace mustafar {
namespace {

constexpr size_t kAlignment = 128;

Buffer* buffer_of(ggml_backend_buffer_t buffer) { return static_cast<Buffer*>(buffer->context); }

void free_buffer(ggml_backend_buffer_t buffer) {
    Buffer* b = buffer_of(buffer);
    std::free(b->base());
    delete b;
}

void* get_base(ggml_backend_buffer_t buffer) { return buffer_of(buffer)->base(); }

ggml_status init_tensor(ggml_backend_buffer_t buffer, ggml_tensor* tensor) {
    if (tensor->view_src == nullptr && !buffer_of(buffer)->init_tensor(tensor)) return GGML_STATUS_FAILED;
    return GGML_STATUS_SUCCESS;
}

void memset_tensor(ggml_backend_buffer_t, ggml_tensor* tensor, uint8_t value, size_t offset, size_t size) {
    if (kv::KvStore* store = kv::store_of(tensor)) store_memset(*store, tensor, value, offset, size);
    else std::memset(static_cast<uint8_t*>(tensor->data) + offset, value, size);
}

void set_tensor(ggml_backend_buffer_t, ggml_tensor* tensor, const void* data, size_t offset, size_t size) {
    if (kv::KvStore* store = kv::store_of(tensor)) store_set(*store, tensor, data, offset, size);
    else std::memcpy(static_cast<uint8_t*>(tensor->data) + offset, data, size);
}

void get_tensor(ggml_backend_buffer_t, const ggml_tensor* tensor, void* data, size_t offset, size_t size) {
    if (const kv::KvStore* store = kv::store_of(tensor)) store_get(*store, tensor, data, offset, size);
    else std::memcpy(data, static_cast<const uint8_t*>(tensor->data) + offset, size);
}

bool cpy_tensor(ggml_backend_buffer_t, const ggml_tensor* src, ggml_tensor* dst) {
    // Only between our own dense tensors: other backends' memory is not ours to read directly,
    // and a store's bytes are not in ggml's layout.
    if (src->buffer == nullptr || !is_our_buffer(src->buffer) || kv::store_of(src) || kv::store_of(dst)) return false;
    std::memcpy(dst->data, src->data, ggml_nbytes(src));
    return true;
}

void clear(ggml_backend_buffer_t buffer, uint8_t value) {
    std::memset(buffer_of(buffer)->base(), value, buffer_of(buffer)->size());
    buffer_of(buffer)->clear_stores();
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
        std::free(base);
        delete b;
    }
    return buffer;
}

size_t buft_get_alignment(ggml_backend_buffer_type_t) { return kAlignment; }

size_t buft_get_alloc_size(ggml_backend_buffer_type_t, const ggml_tensor* tensor) { return tensor_alloc_size(tensor); }

bool buft_is_host(ggml_backend_buffer_type_t) { return false; }

}  // namespace

// Store-backed tensors are read and written through their dense layout, row by row: whole rows
// go straight to the store, partial rows through a decompressed copy.
namespace {
template <typename RowFn>
void for_each_row(const ggml_tensor* tensor, const kv::KvStore& store, size_t offset, size_t size, RowFn fn) {
    const size_t row_bytes = store.dense_row_bytes();
    size_t pos = (tensor->view_src ? tensor->view_offs : 0) + offset;
    const size_t end = pos + size;
    size_t done = 0;
    while (pos < end) {
        const int64_t row = int64_t(pos / row_bytes);
        const size_t in_row = pos % row_bytes;
        const size_t n = std::min(row_bytes - in_row, end - pos);
        fn(row, in_row, n, done);
        pos += n;
        done += n;
    }
}
}  // namespace

void store_memset(kv::KvStore& store, const ggml_tensor* tensor, uint8_t value, size_t offset, size_t size) {
    std::vector<uint16_t> row(store.dense_row_bytes() / 2);
    for_each_row(tensor, store, offset, size, [&](int64_t r, size_t in_row, size_t n, size_t) {
        if (value == 0 && n == store.dense_row_bytes()) {
            store.erase_row(r);
            return;
        }
        store.read_row_f16(r, row.data());
        std::memset(reinterpret_cast<uint8_t*>(row.data()) + in_row, value, n);
        store.write_row(r, row.data());
    });
}

void store_set(kv::KvStore& store, const ggml_tensor* tensor, const void* data, size_t offset, size_t size) {
    std::vector<uint16_t> row(store.dense_row_bytes() / 2);
    for_each_row(tensor, store, offset, size, [&](int64_t r, size_t in_row, size_t n, size_t done) {
        const uint8_t* src = static_cast<const uint8_t*>(data) + done;
        if (n == store.dense_row_bytes()) {
            store.restore_row(r, reinterpret_cast<const uint16_t*>(src));
            return;
        }
        store.read_row_f16(r, row.data());
        std::memcpy(reinterpret_cast<uint8_t*>(row.data()) + in_row, src, n);
        store.restore_row(r, row.data());
    });
}

void store_get(const kv::KvStore& store, const ggml_tensor* tensor, void* data, size_t offset, size_t size) {
    std::vector<uint16_t> row(store.dense_row_bytes() / 2);
    for_each_row(tensor, store, offset, size, [&](int64_t r, size_t in_row, size_t n, size_t done) {
        store.read_row_f16(r, row.data());
        std::memcpy(static_cast<uint8_t*>(data) + done, reinterpret_cast<const uint8_t*>(row.data()) + in_row, n);
    });
}

size_t tensor_alloc_size(const ggml_tensor* tensor) {
    kv::StoreConfig cfg;
    if (tensor->view_src == nullptr && store_config_for(tensor, cfg))
        return kv::KvStore::bytes_needed(tensor->ne[1] * tensor->ne[2] * tensor->ne[3], tensor->ne[0], cfg);
    return ggml_nbytes(tensor);
}

Buffer::Buffer(void* base, size_t size) : base_(base), size_(size) { registry().add_buffer(this); }

Buffer::~Buffer() { registry().remove_buffer(this); }

bool Buffer::init_tensor(ggml_tensor* t) {
    if (!is_kv_cache_tensor(t)) return true;
    CacheTensor entry{ggml_nbytes(t), nullptr, 0};
    kv::StoreConfig cfg;
    if (store_config_for(t, cfg, &entry.owner)) {
        const int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        auto* memory = static_cast<uint8_t*>(t->data);
        std::unique_ptr<kv::StoreMemory> device;
        if (!flavour::make_store_memory(memory, rows, t->ne[0], cfg, device)) return false;
        entry.bytes = kv::KvStore::bytes_needed(rows, t->ne[0], cfg);
        entry.store = LiveStore(new kv::KvStore(memory, rows, t->ne[0], cfg, std::move(device)));
        registry().live_stores.fetch_add(1);
        t->extra = entry.store.get();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    kv_tensors_[t] = std::move(entry);
    return true;
}

void Buffer::CountedDelete::operator()(kv::KvStore* s) const {
    delete s;
    registry().live_stores.fetch_sub(1);
}

void Buffer::forget_tensors() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [t, entry] : kv_tensors_)
        if (entry.store) const_cast<ggml_tensor*>(t)->extra = nullptr;
    kv_tensors_.clear();
}

void Buffer::clear_stores() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [t, entry] : kv_tensors_)
        if (entry.store) entry.store->clear();
}

void Buffer::add_kv_stats(int64_t owner, mustafar_kv_stats& s) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [t, entry] : kv_tensors_) {
        if (owner != 0 && entry.owner != owner) continue;
        const uint64_t n = uint64_t(t->ne[0]) * t->ne[1] * t->ne[2] * t->ne[3];
        s.kv_bytes += entry.bytes;
        s.kv_dense_bytes += n * 2;  // an f16 cache of the same cells
        s.kv_elements += n;
        s.kv_tensors += 1;
        if (entry.store) {
            s.rows_dense += uint64_t(entry.store->dense_rows());
            s.rows_compressed += uint64_t(entry.store->compressed_rows());
        } else {
            s.rows_dense += uint64_t(t->ne[1] * t->ne[2] * t->ne[3]);
        }
    }
}

bool store_config_for(const ggml_tensor* t, kv::StoreConfig& out, int64_t* owner) {
    if (!is_kv_cache_tensor(t) || t->type != GGML_TYPE_F16) return false;
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.config_mutex);
    if (!r.cache_config) return false;
    const mustafar_cache_config& c = *r.cache_config;
    if (owner != nullptr) *owner = c.owner;
    if (c.k_sparsity < 0) return false;
    const bool is_k = t->name[6] == 'k';  // cache_k_l / cache_v_l
    out.head_dim = is_k ? c.head_dim_k : c.head_dim_v;
    out.sparsity = is_k ? c.k_sparsity : c.v_sparsity;
    out.window = c.local_window;
    // Every sequence's window plus one micro-batch of new rows; never more than the rows themselves.
    out.pool_rows = int(std::min<int64_t>(int64_t(c.n_seq_max) * c.local_window + c.n_ubatch, t->ne[1] * t->ne[2] * t->ne[3]));
    return t->ne[0] % out.head_dim == 0;
}

bool is_kv_cache_tensor(const ggml_tensor* t) {
    return std::strncmp(t->name, "cache_k_l", 9) == 0 || std::strncmp(t->name, "cache_v_l", 9) == 0;
}

void init_host_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) {
    buft.iface = {
        /* get_name       */ buft_get_name,
        /* alloc_buffer   */ buft_alloc_buffer,
        /* get_alignment  */ buft_get_alignment,
        /* get_max_size   */ nullptr,
        /* get_alloc_size */ buft_get_alloc_size,
        /* is_host        */ buft_is_host,
    };
    buft.device = device;
    buft.context = nullptr;
}

bool is_our_buffer(const ggml_backend_buffer* buffer) {
    return buffer != nullptr && buffer->buft == &registry().buffer_type;
}

}  // namespace mustafar
