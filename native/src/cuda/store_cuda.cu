#include "store_cuda.h"

#include <algorithm>
#include <new>

#include "../registry.h"
#include "attention_decode.h"
#include "cuda_check.h"

namespace mustafar::cuda {
namespace {

constexpr size_t kArenaMin = size_t(1) << 20;

__global__ void scatter_slots(const int32_t* rows, const int32_t* slots, int n, int32_t* table) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) table[rows[i]] = slots[i];
}

}  // namespace

UploadArena::~UploadArena() { release(); }

void UploadArena::release() {
    if (host_ != nullptr) MUSTAFAR_CUDA_OK(cudaFreeHost(host_));
    if (device_ != nullptr) MUSTAFAR_CUDA_OK(cudaFree(device_));
    host_ = device_ = nullptr;
    capacity_ = used_ = 0;
}

void* UploadArena::upload(const void* host, size_t bytes, cudaStream_t stream) {
    const size_t need = (bytes + 15) / 16 * 16;
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
    std::unique_ptr<DeviceStore> s(new (std::nothrow) DeviceStore(memory, n_rows, n_embd, cfg));
    if (!s) return nullptr;
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
      layout_(kv::make_layout(cfg.head_dim, cfg.sparsity)) {
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
    const size_t bytes = size_t(n_heads_) * layout_.stride;
    if (!MUSTAFAR_CUDA_OK(cudaMemcpy(out, records_ + size_t(row) * bytes, bytes, cudaMemcpyDeviceToHost))) std::fill_n(out, bytes, uint8_t(0));
}

void DeviceStore::compress(int64_t row, int32_t slot) {
    compress_slots_.push_back(slot);
    compress_rows_.push_back(int32_t(row));
}

void DeviceStore::slot_changed(int64_t row, int32_t slot) { slot_changes_[row] = slot; }

void DeviceStore::cleared() {
    compress_slots_.clear();
    compress_rows_.clear();
    slot_changes_.clear();
    MUSTAFAR_CUDA_OK(cudaMemset(slots_, 0xff, size_t(n_rows_) * sizeof(int32_t)));  // every row -1
}

bool DeviceStore::launch(cudaStream_t stream, UploadArena& arena) {
    bool ok = true;
    if (!compress_rows_.empty()) {
        const int n = int(compress_rows_.size());
        const auto* src = static_cast<const int32_t*>(arena.upload(compress_slots_.data(), size_t(n) * 4, stream));
        const auto* dst = static_cast<const int32_t*>(arena.upload(compress_rows_.data(), size_t(n) * 4, stream));
        ok = src != nullptr && dst != nullptr &&
             compress_rows(reinterpret_cast<const char*>(pool_), size_t(n_embd_) * 2, src, dst, n, n_heads_, layout_.head_dim, layout_.kept,
                           layout_.stride, records_, stream);
        compress_slots_.clear();
        compress_rows_.clear();
    }
    if (!slot_changes_.empty()) {
        std::vector<int32_t> rows, slots;
        rows.reserve(slot_changes_.size());
        slots.reserve(slot_changes_.size());
        for (const auto& [row, slot] : slot_changes_) {
            rows.push_back(int32_t(row));
            slots.push_back(slot);
        }
        slot_changes_.clear();
        const int n = int(rows.size());
        const auto* r = static_cast<const int32_t*>(arena.upload(rows.data(), size_t(n) * 4, stream));
        const auto* s = static_cast<const int32_t*>(arena.upload(slots.data(), size_t(n) * 4, stream));
        if (r == nullptr || s == nullptr) return false;
        scatter_slots<<<unsigned((n + 255) / 256), 256, 0, stream>>>(r, s, n, slots_);
        ok = MUSTAFAR_CUDA_OK(cudaGetLastError()) && ok;
    }
    return ok;
}

bool DeviceStore::flush(cudaStream_t stream, UploadArena& arena) { return launch(stream, arena); }

bool DeviceStore::flush_now() {
    if (compress_rows_.empty() && slot_changes_.empty()) return true;
    if (!own_arena_) own_arena_ = std::make_unique<UploadArena>();
    // The legacy default stream: ordered after the executors' (blocking) streams.
    const bool ok = launch(nullptr, *own_arena_) && MUSTAFAR_CUDA_OK(cudaStreamSynchronize(nullptr));
    own_arena_->reset();
    return ok;
}

}  // namespace mustafar::cuda
