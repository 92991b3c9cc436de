// Device-memory buffers of the CUDA flavour: tensors in ggml's layout in GPU memory, and KV cache
// tensors as Mustafar stores (store_cuda.h) when one is configured; other backends reach them only
// through get/set_tensor (is_host is false). Small uploads keep a host copy (shadows.h).
#include <cuda_fp16.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <system_error>
#include <thread>
#include <utility>

#include "../buffer.h"
#include "../kv/view.h"
#include "../registry.h"
#include "cuda_check.h"
#include "flavour_cuda.h"
#include "store_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr size_t kAlignment = 256;

// Device memory plus the common accounting of cache tensors (statistics).
struct DeviceBuffer {
    void* base = nullptr;
    size_t size = 0;
    std::unique_ptr<Buffer> tensors;
    ~DeviceBuffer() {
        registry().shadows.invalidate(base, size);
        if (base != nullptr) MUSTAFAR_CUDA_OK(cudaFree(base));
    }
};

// Counts a get/set_tensor call into the registry's copy totals when it returns.
class Timed {
public:
    Timed(Registry::Copies& into, size_t bytes) : into_(into), bytes_(bytes), start_(std::chrono::steady_clock::now()) {}
    ~Timed() {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count();
        into_.add(bytes_, uint64_t(ns));
    }
    Timed(const Timed&) = delete;
    Timed& operator=(const Timed&) = delete;

private:
    Registry::Copies& into_;
    size_t bytes_;
    std::chrono::steady_clock::time_point start_;
};

DeviceBuffer* of(ggml_backend_buffer_t b) { return static_cast<DeviceBuffer*>(b->context); }

void free_buffer(ggml_backend_buffer_t b) { delete of(b); }

void* get_base(ggml_backend_buffer_t b) { return of(b)->base; }

ggml_status init_tensor(ggml_backend_buffer_t b, ggml_tensor* t) {
    if (t->view_src == nullptr) {
        if (!of(b)->tensors->init_tensor(t)) return GGML_STATUS_FAILED;
        if (stored_as_f16(t)) t->extra = const_cast<char*>(&kConvertedToF16);
    }
    return GGML_STATUS_SUCCESS;
}

// A converted weight or a view of one: its bytes in our memory are f16, not those of its type.
bool in_converted(const ggml_tensor* t) { return converted_to_f16(root_of(t)); }

// Converts whole blocks on upload; llama.cpp writes weights whole (or in block-aligned pieces).
void set_converted(ggml_tensor* t, const void* data, size_t offset, size_t size) {
    const size_t bytes = block_bytes(t->type);
    const int values = block_values(t->type);
    if (bytes == 0 || offset % bytes != 0 || size % bytes != 0) {
        log_error("%s: a write into the %s weight %s is not block-aligned (offset %zu, size %zu)\n", kDeviceName,
                  ggml_type_name(t->type), t->name, offset, size);
        return;
    }
    if (size == 0) return;
    void* staging = nullptr;
    if (!MUSTAFAR_CUDA_OK(cudaMalloc(&staging, size))) return;
    if (MUSTAFAR_CUDA_OK(cudaMemcpy(staging, data, size, cudaMemcpyHostToDevice))) {
        auto* out = static_cast<__half*>(t->data) + int64_t(offset / bytes) * values;
        if (dequantize_to_f16(t->type, staging, out, int64_t(size / bytes), nullptr)) MUSTAFAR_CUDA_OK(cudaDeviceSynchronize());
    }
    MUSTAFAR_CUDA_OK(cudaFree(staging));
}

// Store operations from the host run their deferred GPU work before returning.
DeviceStore& device_of(kv::KvStore& store) { return *static_cast<DeviceStore*>(store.device()); }

void memset_tensor(ggml_backend_buffer_t, ggml_tensor* t, uint8_t value, size_t offset, size_t size) {
    if (kv::KvStore* store = kv::store_of(t)) {
        store_memset(*store, t, value, offset, size);
        device_of(*store).flush_now();
        return;
    }
    registry().shadows.invalidate(static_cast<uint8_t*>(t->data) + offset, size);
    if (in_converted(t)) {
        log_error("%s: memset of the converted %s weight %s is not supported\n", kDeviceName, ggml_type_name(t->type), t->name);
        return;
    }
    MUSTAFAR_CUDA_OK(cudaMemset(static_cast<uint8_t*>(t->data) + offset, value, size));
}

// From this size on, an upload's host copy is made beside it (set_tensor).
constexpr size_t kCopyBesideUpload = size_t(4) << 20;

// MUSTAFAR_BORROW_INPUTS=0: uploads from llama.cpp's host buffers are copied like any other (an A/B switch).
bool borrow_inputs() {
    static const bool on = [] {
        const char* env = std::getenv("MUSTAFAR_BORROW_INPUTS");
        return env == nullptr || std::strcmp(env, "0") != 0;
    }();
    return on;
}

// A thread for work beside the caller's, joined when the scope ends.
class ThreadBeside {
public:
    ThreadBeside() = default;
    ThreadBeside(const ThreadBeside&) = delete;
    ThreadBeside& operator=(const ThreadBeside&) = delete;
    ~ThreadBeside() {
        if (thread_.joinable()) thread_.join();
    }
    // False where no thread could be started (the caller then does the work itself).
    template <typename Fn>
    bool start(Fn&& fn) {
        try {
            thread_ = std::thread(std::forward<Fn>(fn));
            return true;
        } catch (const std::system_error&) {
            return false;
        }
    }

private:
    std::thread thread_;
};

void set_tensor(ggml_backend_buffer_t b, ggml_tensor* t, const void* data, size_t offset, size_t size) {
    const Timed timed(registry().uploads, size);
    if (kv::KvStore* store = kv::store_of(t)) {
        store_set(*store, t, data, offset, size);
        device_of(*store).flush_now();
        return;
    }
    uint8_t* dst = static_cast<uint8_t*>(t->data) + offset;
    // Graph inputs (masks, cache indices) get a host copy while a Mustafar store lives (only its host
    // bookkeeping reads them: a dense cache's prompt copied a 16 MB mask each micro-batch for nothing);
    // weights never do. From llama.cpp's host buffers (the scheduler's uploads of graph inputs) the source
    // itself stands as the copy until the graph ends (HostRanges in registry.h): a batch-8 prompt's 110 MB
    // mask over the store cost 8-23 ms a micro-batch to copy (gpu-e2e-2026-12-02.md, thirty-first session).
    // Another large one (a prompt's mask: 256 MB for a micro-batch over 8 sequences of 32K cells) is copied
    // by a second thread while this one uploads the same bytes.
    ThreadBeside beside;
    if (registry().live_stores.load(std::memory_order_relaxed) > 0 && b->usage != GGML_BACKEND_BUFFER_USAGE_WEIGHTS && !converted_to_f16(t) &&
        !is_kv_cache_tensor(root_of(t))) {
        if (borrow_inputs() && registry().host_buffers.contains(data, size)) registry().shadows.borrow(dst, data, size);
        else if (size < kCopyBesideUpload || !beside.start([=] { registry().shadows.record(dst, data, size); })) registry().shadows.record(dst, data, size);
    } else {
        registry().shadows.invalidate(dst, size);
    }
    if (converted_to_f16(t)) {
        set_converted(t, data, offset, size);
        return;
    }
    if (in_converted(t)) {  // a view's offsets are in its type's bytes, not in the f16 storage
        log_error("%s: a write through the view %s of the converted weight %s is not supported\n", kDeviceName, t->name,
                  root_of(t)->name);
        return;
    }
    MUSTAFAR_CUDA_OK(cudaMemcpy(dst, data, size, cudaMemcpyHostToDevice));
}

void get_tensor(ggml_backend_buffer_t, const ggml_tensor* t, void* data, size_t offset, size_t size) {
    const Timed timed(registry().downloads, size);
    if (kv::KvStore* store = kv::store_of(t)) {
        store_get(*store, t, data, offset, size);
        return;
    }
    if (in_converted(t)) {  // the original bytes are gone; nothing in llama.cpp reads weights back
        log_error("%s: reading back the converted %s weight %s is not supported\n", kDeviceName, ggml_type_name(t->type), t->name);
        std::memset(data, 0, size);
        return;
    }
    MUSTAFAR_CUDA_OK(cudaMemcpy(data, static_cast<const uint8_t*>(t->data) + offset, size, cudaMemcpyDeviceToHost));
}

bool cpy_tensor(ggml_backend_buffer_t, const ggml_tensor* src, ggml_tensor* dst) {
    if (src->buffer == nullptr || !is_our_buffer(src->buffer)) return false;
    if (in_converted(src) || in_converted(dst)) return false;  // byte copies do not apply to converted weights
    if (kv::store_of(src) || kv::store_of(dst)) return false;  // a store's bytes are not in ggml's layout
    registry().shadows.invalidate(dst->data, ggml_nbytes(dst));
    return MUSTAFAR_CUDA_OK(cudaMemcpy(dst->data, src->data, ggml_nbytes(src), cudaMemcpyDeviceToDevice));
}

void clear(ggml_backend_buffer_t b, uint8_t value) {
    registry().shadows.invalidate(of(b)->base, of(b)->size);
    MUSTAFAR_CUDA_OK(cudaMemset(of(b)->base, value, of(b)->size));
    of(b)->tensors->clear_stores();
}

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

// Converted weights take their f16 size, stores their records and pool.
size_t alloc_size(ggml_backend_buffer_type_t, const ggml_tensor* t) {
    if (stored_as_f16(t)) return size_t(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]) * 2;
    return tensor_alloc_size(t);
}

bool is_host(ggml_backend_buffer_type_t) { return false; }

}  // namespace

const char kConvertedToF16 = 0;

// Weights only: views and op results keep their type, and so do KV cache tensors (a BF16 cache is
// written and read as BF16 by the KV path).
bool stored_as_f16(const ggml_tensor* t) {
    return t->view_src == nullptr && t->op == GGML_OP_NONE && converts_to_f16(t->type) && !is_kv_cache_tensor(t);
}

void init_device_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) {
    buft.iface = {buft_name, alloc_buffer, alignment, nullptr, alloc_size, is_host};
    buft.device = device;
    buft.context = nullptr;
}

}  // namespace mustafar::cuda
