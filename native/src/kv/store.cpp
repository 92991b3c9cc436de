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

KvStore::KvStore(uint8_t* memory, int64_t n_rows, int64_t n_embd, const StoreConfig& cfg)
    : records_(memory),
      n_rows_(n_rows),
      n_embd_(n_embd),
      n_heads_(int(n_embd / cfg.head_dim)),
      layout_(make_layout(cfg.head_dim, cfg.sparsity)),
      window_(cfg.window),
      pool_rows_(cfg.pool_rows),
      state_(n_rows, RowState::Empty),
      slot_of_(n_rows, -1),
      stamp_(n_rows, 0) {
    pool_ = reinterpret_cast<uint16_t*>(records_ + size_t(n_rows) * n_heads_ * layout_.stride);
    clear();
}

void KvStore::clear() {
    std::fill(state_.begin(), state_.end(), RowState::Empty);
    std::fill(slot_of_.begin(), slot_of_.end(), -1);
    std::fill(stamp_.begin(), stamp_.end(), 0);
    free_.clear();
    for (int32_t s = pool_rows_ - 1; s >= 0; --s) free_.push_back(s);
    clock_ = 0;
    dense_count_ = compressed_count_ = 0;
}

int32_t KvStore::take_slot() {
    if (free_.empty()) {
        // More dense rows than windows plus a micro-batch: rows of sequences that were removed
        // without being overwritten. Compress the oldest dense row to make room.
        int64_t oldest = -1;
        for (int64_t r = 0; r < n_rows_; ++r)
            if (state_[r] == RowState::Dense && slot_of_[r] >= 0 && (oldest < 0 || stamp_[r] < stamp_[oldest])) oldest = r;
        compress(oldest);
    }
    const int32_t s = free_.back();
    free_.pop_back();
    return s;
}

void KvStore::write_row(int64_t row, const uint16_t* values) {
    if (state_[row] != RowState::Dense) {
        if (state_[row] == RowState::Compressed) --compressed_count_;
        slot_of_[row] = take_slot();
        state_[row] = RowState::Dense;
        ++dense_count_;
    }
    std::memcpy(slot(slot_of_[row]), values, dense_row_bytes());
    stamp_[row] = ++clock_;
}

void KvStore::write_heads(int64_t row, int head, int n, const uint16_t* values) {
    const int D = layout_.head_dim;
    std::vector<uint16_t> full(n_embd_);
    read_row_f16(row, full.data());
    std::memcpy(full.data() + size_t(head) * D, values, size_t(n) * D * 2);
    const uint64_t stamp = stamp_[row];
    const bool was_empty = state_[row] == RowState::Empty;
    write_row(row, full.data());
    if (!was_empty) stamp_[row] = stamp;  // a patch is not a new token
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
    const uint16_t* values = slot(slot_of_[row]);
    for (int h = 0; h < n_heads_; ++h) kv::compress(values + size_t(h) * layout_.head_dim, layout_, record(row, h));
    free_.push_back(slot_of_[row]);
    slot_of_[row] = -1;
    state_[row] = RowState::Compressed;
    --dense_count_;
    ++compressed_count_;
}

void KvStore::erase_row(int64_t row) {
    if (state_[row] == RowState::Dense) {
        free_.push_back(slot_of_[row]);
        slot_of_[row] = -1;
        --dense_count_;
    } else if (state_[row] == RowState::Compressed) {
        --compressed_count_;
    }
    state_[row] = RowState::Empty;
}

void KvStore::read_head_f32(int64_t row, int head, float* out) const {
    const int D = layout_.head_dim;
    switch (state_[row]) {
        case RowState::Dense: {
            const uint16_t* v = slot(slot_of_[row]) + size_t(head) * D;
            const float* t = fp16_table().values;
            for (int d = 0; d < D; ++d) out[d] = t[v[d]];
            break;
        }
        case RowState::Compressed: decompress_f32(record(row, head), layout_, out); break;
        case RowState::Empty: std::fill(out, out + D, 0.0f); break;
    }
}

void KvStore::read_row_f16(int64_t row, uint16_t* out) const {
    switch (state_[row]) {
        case RowState::Dense: std::memcpy(out, slot(slot_of_[row]), dense_row_bytes()); break;
        case RowState::Compressed:
            for (int h = 0; h < n_heads_; ++h) decompress(record(row, h), layout_, out + size_t(h) * layout_.head_dim);
            break;
        case RowState::Empty: std::memset(out, 0, dense_row_bytes()); break;
    }
}

}  // namespace mustafar::kv
