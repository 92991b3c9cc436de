// The Mustafar record format (../shared/docs/mustafar-method.md §3): per cache cell and KV head,
//   [ D-bit bitmap | k kept values (f16, in element order) | zero pad to 16 bytes ]
// with k = D - floor(s * D) the elements of largest magnitude, ties to the lower index.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace mustafar::kv {

constexpr int kMaxHeadDim = 256;
constexpr size_t kRecordAlign = 16;

struct RecordLayout {
    int head_dim = 0;
    int kept = 0;          // values stored per vector
    size_t stride = 0;     // bytes per record, a multiple of 16

    size_t bitmap_bytes() const { return size_t(head_dim) / 8; }
    bool dense() const { return kept == head_dim; }
};

// n_drop = floor(s * D); the small epsilon keeps e.g. 0.7 * 40 = 27.999... from dropping one too few.
inline int kept_count(int head_dim, double sparsity) {
    const int n_drop = int(std::floor(sparsity * head_dim + 1e-9));
    return head_dim - n_drop;
}

inline RecordLayout make_layout(int head_dim, double sparsity) {
    RecordLayout l;
    l.head_dim = head_dim;
    l.kept = kept_count(head_dim, sparsity);
    const size_t raw = size_t(head_dim) / 8 + 2 * size_t(l.kept);
    l.stride = (raw + kRecordAlign - 1) / kRecordAlign * kRecordAlign;
    return l;
}

// Prunes one f16 vector and writes its record (stride bytes, padding zeroed).
void compress(const uint16_t* x, const RecordLayout& layout, uint8_t* record);
// Writes the D f16 values of a record back, pruned ones as +0.
void decompress(const uint8_t* record, const RecordLayout& layout, uint16_t* out);
// Same, to f32 (what attention consumes). tail_readable: the 16 bytes after the record may be read (a store's
// records are followed by its pool), so the expansion loads the values in place instead of copying them first.
void decompress_f32(const uint8_t* record, const RecordLayout& layout, float* out, bool tail_readable = false);

}  // namespace mustafar::kv
