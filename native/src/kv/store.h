// The Mustafar KV store behind one llama.cpp cache tensor (cache_k_l<N> or cache_v_l<N>).
// llama.cpp sees an f16 tensor [n_embd_gqa, cells, streams]; we keep, per row (cell of a stream):
//  - a fixed-stride record per KV head (record.h), valid once the row is compressed;
//  - or, while the row is in its sequence's local window, a slot in a dense f16 pool.
// Memory, all inside the ggml buffer: rows x heads x stride bytes of records, then pool_rows x
// n_embd_gqa f16 values. The pool holds every sequence's window plus one micro-batch of new rows.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "record.h"

namespace mustafar::kv {

struct StoreConfig {
    double sparsity = 0.0;  // fraction of each vector pruned
    int window = 0;         // most recent rows per sequence that stay dense
    int head_dim = 0;
    int pool_rows = 0;      // dense rows: n_seq_max * window + n_ubatch
};

enum class RowState : uint8_t { Empty, Dense, Compressed };

// Where a store's bytes live when the host cannot touch them (the CUDA flavour's device memory):
// KvStore keeps the row table on the host and hands every movement of bytes to this interface.
// Compressions may be deferred (batched on the GPU); the implementation must run them before any
// later write into the pool slot they read.
class StoreMemory {
public:
    virtual ~StoreMemory() = default;
    virtual void write_slot(int32_t slot, const uint16_t* values) = 0;  // a dense row from the host
    virtual void read_slot(int32_t slot, uint16_t* out) = 0;
    virtual void read_records(int64_t row, uint8_t* out) = 0;  // every head's record of a row
    virtual void compress(int64_t row, int32_t slot) = 0;      // prune pool slot `slot` into row's records
    virtual void slot_changed(int64_t row, int32_t slot) = 0;  // -1: the row is no longer dense
    virtual void cleared() = 0;                                // every row is empty
};

class KvStore {
public:
    // Bytes the store needs inside the buffer for a cache tensor of n_rows rows of n_embd f16 values.
    static size_t bytes_needed(int64_t n_rows, int64_t n_embd, const StoreConfig& cfg);

    // `memory` is host memory, or device memory with `device` doing the moves (owned by the store).
    KvStore(uint8_t* memory, int64_t n_rows, int64_t n_embd, const StoreConfig& cfg, std::unique_ptr<StoreMemory> device = nullptr);

    int64_t rows() const { return n_rows_; }
    int heads() const { return n_heads_; }
    int head_dim() const { return layout_.head_dim; }
    size_t dense_row_bytes() const { return size_t(n_embd_) * 2; }
    const RecordLayout& layout() const { return layout_; }
    int window() const { return window_; }
    RowState state(int64_t row) const { return state_[row]; }
    uint64_t stamp(int64_t row) const { return stamp_[row]; }
    // A digest of every change to the row table since the last clear: stores with the same digest
    // (the layers of a model, written alike) are in the same state.
    uint64_t history() const { return history_; }

    // A new write: the row becomes dense (the newest), taking a pool slot.
    void write_row(int64_t row, const uint16_t* values);
    // The bookkeeping of write_row without the bytes, which the caller writes into the returned
    // pool slot (a GPU kernel); deferred compressions that free slots run first (StoreMemory).
    int32_t place_row(int64_t row);
    // Writes heads [head, head + n) of a row (set_tensor of a partial row): keeps the others.
    void write_heads(int64_t row, int head, int n, const uint16_t* values);
    // Restores a saved row (set_tensor): stays compressed if every head is already pruned to the
    // format's kept count (re-pruning it is exact), else dense; stamps follow restore order.
    void restore_row(int64_t row, const uint16_t* values);
    // One head of a row as f32 (zeros for an empty row); decompresses compressed rows.
    void read_head_f32(int64_t row, int head, float* out) const;
    // Asks the CPU's caches for the bytes read_head_f32(row, head) will read (host stores; a walk over cells
    // strides by a whole row, which the hardware prefetchers do not follow across pages).
    void prefetch_head(int64_t row, int head) const;
    // The whole row as f16 (get_tensor).
    void read_row_f16(int64_t row, uint16_t* out) const;
    // Prunes and packs a dense row, freeing its pool slot.
    void compress(int64_t row);
    // Forgets a row (memset of the tensor): it reads as zeros until written again.
    void erase_row(int64_t row);
    void clear();

    int64_t dense_rows() const { return dense_count_; }
    int64_t compressed_rows() const { return compressed_count_; }

    // Where the bytes are: records of row r, head h at records() + (r * heads() + h) * stride (the
    // CUDA flavour lays them out head-major: cuda::DeviceStore::head_bytes); dense rows at
    // pool() + slot * dense_row_bytes().
    uint8_t* records() const { return records_; }
    uint8_t* pool() const { return reinterpret_cast<uint8_t*>(pool_); }
    int32_t slot_of(int64_t row) const { return slot_of_[row]; }
    // Whether placing a new dense row needs no compression to free a pool slot.
    bool has_free_slot() const { return !free_.empty(); }
    StoreMemory* device() const { return device_.get(); }

    // The dense rows, ascending.
    void dense_row_list(std::vector<int64_t>& out) const;

private:
    uint8_t* record(int64_t row, int head) const { return records_ + (size_t(row) * n_heads_ + head) * layout_.stride; }
    uint16_t* slot(int32_t s) const { return pool_ + size_t(s) * n_embd_; }
    int32_t take_slot();
    void set_slot(int64_t row, int32_t slot);
    // A row's bytes on the host: a dense slot's values or every head's record (device stores copy them).
    const uint16_t* host_slot(int32_t slot, std::vector<uint16_t>& scratch) const;
    const uint8_t* host_records(int64_t row, std::vector<uint8_t>& scratch) const;

    uint8_t* records_;
    uint16_t* pool_;
    int64_t n_rows_, n_embd_;
    int n_heads_;
    RecordLayout layout_;
    int window_;
    int pool_rows_;
    std::vector<RowState> state_;
    std::vector<int32_t> slot_of_;
    std::vector<uint64_t> stamp_;
    std::vector<int64_t> row_of_slot_;               // -1: free
    std::vector<int32_t> free_;
    void note_change(uint64_t op, int64_t row);

    uint64_t clock_ = 0;
    uint64_t history_ = 0;
    int64_t dense_count_ = 0, compressed_count_ = 0;
    std::unique_ptr<StoreMemory> device_;
};

}  // namespace mustafar::kv
