#include "record.h"

#include <algorithm>
#include <cstring>

#include "../fp16.h"
#include "../simd.h"

namespace mustafar::kv {
namespace {
// Values start right after the bitmap, which is 1 byte for D = 8: not 2-byte aligned in general.
inline uint16_t load_u16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
inline void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
}  // namespace

void compress(const uint16_t* x, const RecordLayout& layout, uint8_t* record) {
    const int D = layout.head_dim;
    uint8_t* bitmap = record;
    uint8_t* values = record + layout.bitmap_bytes();
    std::memset(record, 0, layout.stride);
    if (layout.kept == D) {
        std::memset(bitmap, 0xff, layout.bitmap_bytes());
        std::memcpy(values, x, size_t(D) * 2);
        return;
    }
    // Key = |x| (f16 magnitude bits order like the values) above the inverted index, so that the
    // largest key is the largest magnitude and, among equals, the lowest index.
    uint32_t keys[kMaxHeadDim];
    for (int i = 0; i < D; ++i) keys[i] = (uint32_t(x[i] & 0x7fff) << 16) | uint32_t(0xffff - i);
    if (layout.kept > 0) {
        std::nth_element(keys, keys + (layout.kept - 1), keys + D, [](uint32_t a, uint32_t b) { return a > b; });
        for (int j = 0; j < layout.kept; ++j) {
            const int i = 0xffff - int(keys[j] & 0xffff);
            bitmap[i >> 3] |= uint8_t(1u << (i & 7));
        }
    }
    int n = 0;
    for (int i = 0; i < D; ++i)
        if (bitmap[i >> 3] & (1u << (i & 7))) store_u16(values + 2 * n++, x[i]);
}

void decompress(const uint8_t* record, const RecordLayout& layout, uint16_t* out) {
    const uint8_t* values = record + layout.bitmap_bytes();
    int n = 0;
    for (int i = 0; i < layout.head_dim; ++i) out[i] = (record[i >> 3] & (1u << (i & 7))) ? load_u16(values + 2 * n++) : 0;
}

#ifdef MUSTAFAR_AVX2
namespace {
// For each bitmap byte, the pshufb control that moves the next popcount(byte) packed f16 values
// to the lanes of their set bits and zeroes the others.
struct ExpandTable {
    alignas(16) uint8_t control[256][16];
    ExpandTable() {
        for (int b = 0; b < 256; ++b) {
            int j = 0;
            for (int i = 0; i < 8; ++i) {
                const bool set = (b >> i) & 1;
                control[b][2 * i] = set ? uint8_t(2 * j) : 0x80;
                control[b][2 * i + 1] = set ? uint8_t(2 * j + 1) : 0x80;
                j += set;
            }
        }
    }
};
const ExpandTable& expand_table() {
    static const ExpandTable table;
    return table;
}
}  // namespace
#endif

void decompress_f32(const uint8_t* record, const RecordLayout& layout, float* out, bool tail_readable) {
    const uint8_t* values = record + layout.bitmap_bytes();
#ifdef MUSTAFAR_AVX2
    // Eight elements per bitmap byte: load 16 bytes of packed values, expand, convert. A load may reach
    // up to 16 bytes past the record (bytes it never selects); without readable bytes there, a copy (a libc
    // call per record) gives it room.
    alignas(32) uint8_t copy[2 * kMaxHeadDim + 16];
    const uint8_t* packed = values;
    if (!tail_readable) {
        std::memcpy(copy, values, 2 * size_t(layout.kept));
        packed = copy;
    }
    const ExpandTable& t = expand_table();
    int pos = 0;
    const int groups = layout.head_dim / 8;  // read once: the stores below might alias layout for the compiler
    for (int g = 0; g < groups; ++g) {
        const uint8_t b = record[g];
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + 2 * pos));
        const __m128i e = _mm_shuffle_epi8(v, _mm_load_si128(reinterpret_cast<const __m128i*>(t.control[b])));
        _mm256_storeu_ps(out + 8 * g, _mm256_cvtph_ps(e));
        pos += __builtin_popcount(b);
    }
#else
    const float* table = fp16_table().values;
    int n = 0;
    for (int i = 0; i < layout.head_dim; ++i)
        out[i] = (record[i >> 3] & (1u << (i & 7))) ? table[load_u16(values + 2 * n++)] : 0.0f;
#endif
}

}  // namespace mustafar::kv
