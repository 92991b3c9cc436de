// The device side of a Mustafar store in the CUDA flavour: records and pool stay in the ggml
// buffer's device memory (records head-major, unlike the host flavour's row-major ones: a decode
// step's cells of one head are one block), the row table on the host (kv::KvStore), and a device copy of the slot
// of every row for the attention kernels. Compressions and slot changes that the host decides are
// queued and launched together (flush), so a step needs no synchronisation with the GPU.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "../kv/store.h"
#include "attention_decode.h"

namespace mustafar::cuda {

// Staging for the small arrays a step uploads (rows to write, to compress, slot changes): pinned
// host memory mirrored in device memory, handed out in order and reused once the stream has caught
// up (after a graph: the first write of the next one waits for the point retire() marked; when full:
// a synchronisation).
class UploadArena {
public:
    UploadArena() = default;
    ~UploadArena();
    UploadArena(const UploadArena&) = delete;
    UploadArena& operator=(const UploadArena&) = delete;
    // Copies `bytes` to the device on `stream`; the device address, or null on failure (logged).
    void* upload(const void* host, size_t bytes, cudaStream_t stream);
    // The end of a graph whose work on `stream` may still be queued: the staging is handed out from
    // its start again once the stream has passed this point. False on a CUDA error (logged).
    bool retire(cudaStream_t stream);

private:
    bool wait_retired();
    void release();
    uint8_t* host_ = nullptr;
    uint8_t* device_ = nullptr;
    size_t capacity_ = 0, used_ = 0;
    cudaEvent_t retired_ = nullptr;
    bool pending_ = false;  // retired_ marks copies that may not have run yet
};

// Fills `rows` with n entries of up to three host arrays (null: unused): in the launch parameters
// when they fit, else through one upload. False on an upload failure.
bool stage_rows(int n, const int32_t* a, const int32_t* b, const int32_t* c, RowList& rows, cudaStream_t stream, UploadArena& arena);

class DeviceStore final : public kv::StoreMemory {
public:
    // Null when the slot table (device) or the pending slot changes (host) cannot be allocated (logged).
    static std::unique_ptr<DeviceStore> create(uint8_t* memory, int64_t n_rows, int64_t n_embd, const kv::StoreConfig& cfg);
    ~DeviceStore() override;
    DeviceStore(const DeviceStore&) = delete;
    DeviceStore& operator=(const DeviceStore&) = delete;

    void write_slot(int32_t slot, const uint16_t* values) override;
    void read_slot(int32_t slot, uint16_t* out) override;
    void read_records(int64_t row, uint8_t* out) override;
    void compress(int64_t row, int32_t slot) override;
    void slot_changed(int64_t row, int32_t slot) override;
    void cleared() override;

    // Launches the queued compressions, then the slot changes, on `stream` (a graph's step).
    bool flush(cudaStream_t stream, UploadArena& arena);
    // The same outside a graph (get/set_tensor), synchronously.
    bool flush_now();
    // Moves the queued compressions into `job` (compress_jobs) when there are some and they fit one;
    // the slot changes stay queued for flush(), which must follow the job's launch. False: nothing moved.
    bool take_compressions(CompressJob& job);

    int32_t* slot_table() const { return slots_; }
    // Records are head-major: head h's record of row r at records + h * head_bytes() + r * stride.
    size_t head_bytes() const { return size_t(n_rows_) * layout_.stride; }
    // The caller's kernel writes this row's slot into the table itself (a cache write).
    void forget_slot_change(int64_t row) { pending_[size_t(row)] = kNoChange; }

private:
    DeviceStore(uint8_t* memory, int64_t n_rows, int64_t n_embd, const kv::StoreConfig& cfg);
    bool launch(cudaStream_t stream, UploadArena& arena);
    void compressions_launched();  // the queue emptied into a launch

    uint8_t* records_;
    uint8_t* pool_;
    int64_t n_rows_, n_embd_;
    int n_heads_;
    kv::RecordLayout layout_;
    int32_t* slots_ = nullptr;  // device, one per row; -1: not dense
    std::vector<int32_t> compress_slots_, compress_rows_;
    // Slot changes not yet in the device table: per row the new slot (kNoChange: none), and the rows that got one
    // (a row may be listed more than once; flush takes each row's change once). A prompt micro-batch changes a few
    // thousand rows per store; with a hash map (an allocation per change) the store's SET_ROWS took 7.0 ms of host
    // time per 512-token graph, with this 3.0 (H200 machines, batch 8, 4K, s = 0.7, MUSTAFAR_PROFILE=1).
    static constexpr int32_t kNoChange = INT32_MIN;
    std::vector<int32_t> pending_;
    std::vector<int32_t> changed_rows_;
    std::unique_ptr<UploadArena> own_arena_;  // for flush_now
};

}  // namespace mustafar::cuda
