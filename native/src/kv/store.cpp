#include "store.h"

#include <algorithm>
#include <cstring>

#include "../fp16.h"

namespace mustafar::kv {

size_t KvStore::bytes_needed(int64_t n_rows, int64_t n_embd, const StoreConfig& cfg) {
    const RecordLayout l = make_layout(cfg.head_dim, cfg.sparsity);
    const int64_t heads = n_embd / cfg.head_dim;
    return size_t(n_rows) * heads * l.stride + size_t(cfg.pool_rows) * n_embd * 2;
}

KvStore::KvStore(uint8_t* memory, int64_t n_rows, int64_t n_embd, const StoreConfig& cfg, std::unique_ptr<StoreMemory> device)
    : records_(memory),
      n_rows_(n_rows),
      n_embd_(n_embd),
      n_heads_(int(n_embd / cfg.head_dim)),
      layout_(make_layout(cfg.head_dim, cfg.sparsity)),
      window_(cfg.window),
      pool_rows_(cfg.pool_rows),
      state_(n_rows, RowState::Empty),
      slot_of_(n_rows, -1),
      stamp_(n_rows, 0),
      row_of_slot_(size_t(std::max(cfg.pool_rows, 0)), -1),
      device_(std::move(device)) {
    pool_ = reinterpret_cast<uint16_t*>(records_ + size_t(n_rows) * n_heads_ * layout_.stride);
    clear();
}

void KvStore::clear() {
    std::fill(state_.begin(), state_.end(), RowState::Empty);
    std::fill(slot_of_.begin(), slot_of_.end(), -1);
    std::fill(stamp_.begin(), stamp_.end(), 0);
    std::fill(row_of_slot_.begin(), row_of_slot_.end(), -1);
    free_.clear();
    for (int32_t s = pool_rows_ - 1; s >= 0; --s) free_.push_back(s);
    clock_ = 0;
    history_ = 0;
    dense_count_ = compressed_count_ = 0;
    if (device_) device_->cleared();
}

void KvStore::note_change(uint64_t op, int64_t row) {
    // splitmix64 of the running digest and the change
    uint64_t z = history_ + 0x9e3779b97f4a7c15ull + (op << 56) + uint64_t(row);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    history_ = z ^ (z >> 31);
}

void KvStore::set_slot(int64_t row, int32_t slot) {
    if (slot_of_[row] >= 0) row_of_slot_[slot_of_[row]] = -1;
    if (slot >= 0) row_of_slot_[slot] = row;
    slot_of_[row] = slot;
    if (device_) device_->slot_changed(row, slot);
}

const uint16_t* KvStore::host_slot(int32_t s, std::vector<uint16_t>& scratch) const {
    if (!device_) return slot(s);
    scratch.resize(size_t(n_embd_));
    device_->read_slot(s, scratch.data());
    return scratch.data();
}

const uint8_t* KvStore::host_records(int64_t row, std::vector<uint8_t>& scratch) const {
    if (!device_) return record(row, 0);
    scratch.resize(size_t(n_heads_) * layout_.stride);
    device_->read_records(row, scratch.data());
    return scratch.data();
}

void KvStore::dense_row_list(std::vector<int64_t>& out) const {
    out.clear();
    for (int64_t row : row_of_slot_)
        if (row >= 0) out.push_back(row);
    std::sort(out.begin(), out.end());
}

int32_t KvStore::take_slot() {
    if (free_.empty()) {
        // More dense rows than windows plus a micro-batch: rows of sequences that were removed
        // without being overwritten. Compress the oldest dense row to make room.
        int64_t oldest = -1;
        for (int64_t r : row_of_slot_)
            if (r >= 0 && (oldest < 0 || stamp_[r] < stamp_[oldest])) oldest = r;
        compress(oldest);
    }
    const int32_t s = free_.back();
    free_.pop_back();
    return s;
}

int32_t KvStore::place_row(int64_t row) {
    if (state_[row] != RowState::Dense) {
        if (state_[row] == RowState::Compressed) --compressed_count_;
        set_slot(row, take_slot());
        state_[row] = RowState::Dense;
        ++dense_count_;
    }
    stamp_[row] = ++clock_;
    note_change(1, row);
    return slot_of_[row];
}

void KvStore::write_row(int64_t row, const uint16_t* values) {
    const int32_t s = place_row(row);
    if (device_) device_->write_slot(s, values);
    else std::memcpy(slot(s), values, dense_row_bytes());
}

void KvStore::write_heads(int64_t row, int head, int n, const uint16_t* values) {
    const int D = layout_.head_dim;
    std::vector<uint16_t> full(n_embd_);
    read_row_f16(row, full.data());
    std::memcpy(full.data() + size_t(head) * D, values, size_t(n) * D * 2);
    const uint64_t stamp = stamp_[row];
    const bool was_empty = state_[row] == RowState::Empty;
    write_row(row, full.data());
    if (!was_empty) {
        stamp_[row] = stamp;  // a patch is not a new token
        note_change(4, row);
    }
}

void KvStore::restore_row(int64_t row, const uint16_t* values) {
    const int D = layout_.head_dim;
    const int n_drop = D - layout_.kept;
    bool pruned = true;
    for (int h = 0; h < n_heads_ && pruned; ++h) {
        int zeros = 0;
        for (int d = 0; d < D; ++d) zeros += (values[h * D + d] & 0x7fff) == 0;
        pruned = zeros >= n_drop;
    }
    write_row(row, values);
    if (pruned) compress(row);
}

void KvStore::compress(int64_t row) {
    if (state_[row] != RowState::Dense) return;
    if (device_) {
        device_->compress(row, slot_of_[row]);
    } else {
        const uint16_t* values = slot(slot_of_[row]);
        for (int h = 0; h < n_heads_; ++h) kv::compress(values + size_t(h) * layout_.head_dim, layout_, record(row, h));
    }
    free_.push_back(slot_of_[row]);
    set_slot(row, -1);
    state_[row] = RowState::Compressed;
    note_change(2, row);
    --dense_count_;
    ++compressed_count_;
}

void KvStore::erase_row(int64_t row) {
    note_change(3, row);
    if (state_[row] == RowState::Dense) {
        free_.push_back(slot_of_[row]);
        set_slot(row, -1);
        --dense_count_;
    } else if (state_[row] == RowState::Compressed) {
        --compressed_count_;
    }
    state_[row] = RowState::Empty;
}

void KvStore::read_head_f32(int64_t row, int head, float* out) const {
    const int D = layout_.head_dim;
    const float* t = fp16_table().values;
    if (device_) {  // not on a hot path: the CUDA flavour's attention reads the store on the GPU
        std::vector<uint16_t> full(static_cast<size_t>(n_embd_));
        read_row_f16(row, full.data());
        for (int d = 0; d < D; ++d) out[d] = t[full[size_t(head) * D + d]];
        return;
    }
    switch (state_[row]) {
        case RowState::Dense: {
            const uint16_t* v = slot(slot_of_[row]) + size_t(head) * D;
            for (int d = 0; d < D; ++d) out[d] = t[v[d]];
            break;
        }
        case RowState::Compressed: decompress_f32(record(row, head), layout_, out, pool_rows_ > 0); break;  // the pool follows
        case RowState::Empty: std::fill(out, out + D, 0.0f); break;
    }
}

void KvStore::prefetch_head(int64_t row, int head) const {
    if (device_) return;
    const uint8_t* p = nullptr;
    size_t bytes = 0;
    switch (state_[row]) {
        case RowState::Dense:
            p = reinterpret_cast<const uint8_t*>(slot(slot_of_[row]) + size_t(head) * layout_.head_dim);
            bytes = size_t(layout_.head_dim) * 2;
            break;
        case RowState::Compressed:
            p = record(row, head);
            bytes = layout_.stride + 16;  // decompress_f32's loads reach up to 16 bytes past the record
            break;
        case RowState::Empty: return;
    }
    for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b);
    __builtin_prefetch(p + bytes - 1);  // the last line, where the bytes do not end on a line
}

void KvStore::read_row_f16(int64_t row, uint16_t* out) const {
    std::vector<uint16_t> values;
    std::vector<uint8_t> records;
    switch (state_[row]) {
        case RowState::Dense: std::memcpy(out, host_slot(slot_of_[row], values), dense_row_bytes()); break;
        case RowState::Compressed: {
            const uint8_t* r = host_records(row, records);
            for (int h = 0; h < n_heads_; ++h) decompress(r + size_t(h) * layout_.stride, layout_, out + size_t(h) * layout_.head_dim);
            break;
        }
        case RowState::Empty: std::memset(out, 0, dense_row_bytes()); break;
    }
}

}  // namespace mustafar::kv
