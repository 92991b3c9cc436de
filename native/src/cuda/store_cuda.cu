#include "store_cuda.h"

#include <algorithm>
#include <new>

#include "../registry.h"
#include "attention_decode.h"
#include "cuda_check.h"
#include "launch_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr size_t kArenaMin = size_t(1) << 20;

// Array 0: rows, 1: their slots.
__global__ void scatter_slots(RowList list, int32_t* table) {
    start_after_previous();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < list.n) table[list.at(0, i)] = list.at(1, i);
}

}  // namespace

bool stage_rows(int n, const int32_t* a, const int32_t* b, const int32_t* c, RowList& rows, cudaStream_t stream, UploadArena& arena) {
    const int32_t* arrays[3] = {a, b, c};
    rows.n = n;
    if (n <= kInlineRows) {
        for (int k = 0; k < 3; ++k)
            if (arrays[k] != nullptr) std::copy_n(arrays[k], n, rows.in[k]);
        return true;
    }
    std::vector<int32_t> packed;
    packed.reserve(size_t(n) * 3);
    for (const int32_t* array : arrays)
        if (array != nullptr) packed.insert(packed.end(), array, array + n);
    const auto* dev = static_cast<const int32_t*>(arena.upload(packed.data(), packed.size() * sizeof(int32_t), stream));
    if (dev == nullptr) return false;
    for (int k = 0, used = 0; k < 3; ++k)
        if (arrays[k] != nullptr) rows.dev[k] = dev + size_t(n) * used++;
    return true;
}

UploadArena::~UploadArena() {
    release();
    if (retired_ != nullptr) MUSTAFAR_CUDA_OK(cudaEventDestroy(retired_));
}

bool UploadArena::retire(cudaStream_t stream) {
    if (used_ == 0) return true;  // nothing staged since the last point: the old one still holds
    used_ = 0;
    if (retired_ == nullptr && !MUSTAFAR_CUDA_OK(cudaEventCreateWithFlags(&retired_, cudaEventDisableTiming))) return false;
    pending_ = MUSTAFAR_CUDA_OK(cudaEventRecord(retired_, stream));
    return pending_;
}

bool UploadArena::wait_retired() {
    if (!pending_) return true;
    pending_ = false;
    return MUSTAFAR_CUDA_OK(cudaEventSynchronize(retired_));
}

void UploadArena::release() {
    wait_retired();  // queued copies may still read the host staging
    if (host_ != nullptr) MUSTAFAR_CUDA_OK(cudaFreeHost(host_));
    if (device_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(device_));
    host_ = device_ = nullptr;
    capacity_ = used_ = 0;
}

void* UploadArena::upload(const void* host, size_t bytes, cudaStream_t stream) {
    const size_t need = (bytes + 15) / 16 * 16;
    // The previous graph's copies from the staging may still be queued behind its kernels.
    if (used_ == 0 && !wait_retired()) return nullptr;
    if (used_ + need > capacity_) {
        // Whatever read the staged arrays has run once the stream is idle.
        if (!MUSTAFAR_CUDA_OK(cudaStreamSynchronize(stream))) return nullptr;
        used_ = 0;
        if (need > capacity_) {
            const size_t grow = std::max({need, 2 * capacity_, kArenaMin});
            release();
            void* h = nullptr;
            if (!MUSTAFAR_CUDA_OK(cudaMallocHost(&h, grow))) return nullptr;
            host_ = static_cast<uint8_t*>(h);
            void* d = nullptr;
            if (!MUSTAFAR_CUDA_OK(cudaMalloc(&d, grow))) {
                release();
                return nullptr;
            }
            device_ = static_cast<uint8_t*>(d);
            capacity_ = grow;
        }
    }
    std::copy_n(static_cast<const uint8_t*>(host), bytes, host_ + used_);
    uint8_t* dst = device_ + used_;
    if (!MUSTAFAR_CUDA_OK(cudaMemcpyAsync(dst, host_ + used_, bytes, cudaMemcpyHostToDevice, stream))) return nullptr;
    used_ += need;
    return dst;
}

std::unique_ptr<DeviceStore> DeviceStore::create(uint8_t* memory, int64_t n_rows, int64_t n_embd, const kv::StoreConfig& cfg) {
    std::unique_ptr<DeviceStore> s;
    try {
        s.reset(new DeviceStore(memory, n_rows, n_embd, cfg));
    } catch (const std::bad_alloc&) {
        log_error("%s: no host memory for the pending slot changes of a store of %lld rows\n", kDeviceName, (long long)n_rows);
        return nullptr;
    }
    void* table = nullptr;
    if (!MUSTAFAR_CUDA_OK(cudaMalloc(&table, size_t(n_rows) * sizeof(int32_t)))) return nullptr;
    s->slots_ = static_cast<int32_t*>(table);
    s->cleared();
    return s;
}

DeviceStore::DeviceStore(uint8_t* memory, int64_t n_rows, int64_t n_embd, const kv::StoreConfig& cfg)
    : records_(memory),
      n_rows_(n_rows),
      n_embd_(n_embd),
      n_heads_(int(n_embd / cfg.head_dim)),
      layout_(kv::make_layout(cfg.head_dim, cfg.sparsity)),
      pending_(size_t(n_rows), kNoChange) {
    pool_ = records_ + size_t(n_rows) * n_heads_ * layout_.stride;
}

DeviceStore::~DeviceStore() {
    if (slots_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(slots_));
}

void DeviceStore::write_slot(int32_t slot, const uint16_t* values) {
    flush_now();  // a queued compression may still read this slot
    MUSTAFAR_CUDA_OK(cudaMemcpy(pool_ + size_t(slot) * n_embd_ * 2, values, size_t(n_embd_) * 2, cudaMemcpyHostToDevice));
}

void DeviceStore::read_slot(int32_t slot, uint16_t* out) {
    if (!MUSTAFAR_CUDA_OK(cudaMemcpy(out, pool_ + size_t(slot) * n_embd_ * 2, size_t(n_embd_) * 2, cudaMemcpyDeviceToHost)))
        std::fill_n(out, n_embd_, uint16_t(0));
}

void DeviceStore::read_records(int64_t row, uint8_t* out) {
    flush_now();  // the row's compression may be queued
    // The row's record of each head, side by side (the host's layout), from the head-major device layout.
    const size_t stride = layout_.stride, bytes = size_t(n_heads_) * stride;
    if (!MUSTAFAR_CUDA_OK(cudaMemcpy2D(out, stride, records_ + size_t(row) * stride, head_bytes(), stride, size_t(n_heads_), cudaMemcpyDeviceToHost)))
        std::fill_n(out, bytes, uint8_t(0));
}

void DeviceStore::compress(int64_t row, int32_t slot) {
    compress_slots_.push_back(slot);
    compress_rows_.push_back(int32_t(row));
}

void DeviceStore::slot_changed(int64_t row, int32_t slot) {
    int32_t& pending = pending_[size_t(row)];
    if (pending == kNoChange) changed_rows_.push_back(int32_t(row));
    pending = slot;
}

void DeviceStore::cleared() {
    compress_slots_.clear();
    compress_rows_.clear();
    for (int32_t row : changed_rows_) pending_[size_t(row)] = kNoChange;
    changed_rows_.clear();
    MUSTAFAR_CUDA_OK(cudaMemset(slots_, 0xff, size_t(n_rows_) * sizeof(int32_t)));  // every row -1
}

void DeviceStore::compressions_launched() {
    // The kernel marks its rows not dense; a row placed again since keeps its pending slot.
    for (int32_t row : compress_rows_)
        if (pending_[size_t(row)] == -1) pending_[size_t(row)] = kNoChange;
    compress_slots_.clear();
    compress_rows_.clear();
}

bool DeviceStore::take_compressions(CompressJob& job) {
    const size_t n = compress_rows_.size();
    if (n == 0 || n > size_t(kJobRows)) return false;
    job = CompressJob{};
    job.src = reinterpret_cast<const char*>(pool_);
    job.src_row_bytes = size_t(n_embd_) * 2;
    job.records = records_;
    job.head_bytes = head_bytes();
    job.stride = layout_.stride;
    job.slot_table = slots_;
    job.n_head_kv = n_heads_;
    job.head_dim = layout_.head_dim;
    job.kept = layout_.kept;
    job.n = int(n);
    std::copy(compress_slots_.begin(), compress_slots_.end(), job.src_rows);
    std::copy(compress_rows_.begin(), compress_rows_.end(), job.dst_rows);
    compressions_launched();
    return true;
}

bool DeviceStore::launch(cudaStream_t stream, UploadArena& arena) {
    bool ok = true;
    if (!compress_rows_.empty()) {
        const int n = int(compress_rows_.size());
        RowList rows;
        ok = stage_rows(n, compress_slots_.data(), compress_rows_.data(), nullptr, rows, stream, arena) &&
             compress_rows(reinterpret_cast<const char*>(pool_), size_t(n_embd_) * 2, rows, n_heads_, layout_.head_dim, layout_.kept,
                           layout_.stride, head_bytes(), records_, slots_, stream);
        compressions_launched();
    }
    if (!changed_rows_.empty()) {
        std::vector<int32_t> rows, slots;
        rows.reserve(changed_rows_.size());
        slots.reserve(changed_rows_.size());
        for (int32_t row : changed_rows_) {
            int32_t& pending = pending_[size_t(row)];
            if (pending == kNoChange) continue;  // forgotten, or listed again and already taken
            rows.push_back(row);
            slots.push_back(pending);
            pending = kNoChange;
        }
        changed_rows_.clear();
        const int n = int(rows.size());
        if (n == 0) return ok;
        RowList list;
        if (!stage_rows(n, rows.data(), slots.data(), nullptr, list, stream, arena)) return false;
        launch_kernel(scatter_slots, unsigned((n + 255) / 256), 256, 0, stream, list, slots_);
        ok = MUSTAFAR_CUDA_OK(cudaGetLastError()) && ok;
    }
    return ok;
}

bool DeviceStore::flush(cudaStream_t stream, UploadArena& arena) { return launch(stream, arena); }

bool DeviceStore::flush_now() {
    if (compress_rows_.empty() && changed_rows_.empty()) return true;
    if (!own_arena_) own_arena_ = std::make_unique<UploadArena>();
    // The legacy default stream: ordered after the executors' (blocking) streams.
    const bool ok = launch(nullptr, *own_arena_) && MUSTAFAR_CUDA_OK(cudaStreamSynchronize(nullptr));
    return own_arena_->retire(nullptr) && ok;
}

}  // namespace mustafar::cuda
