// Maps llama.cpp's views of a cache tensor (dense offsets, strides nb) to store rows and heads.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../buffer.h"
#include "../ggml_abi.h"
#include "store.h"

namespace mustafar::kv {

// The store behind a tensor or a view of it, or null for ordinary tensors (whose extra may hold
// something else: the CUDA flavour tags converted weights there).
inline KvStore* store_of(const ggml_tensor* t) {
    const ggml_tensor* root = root_of(t);
    return root->extra != nullptr && is_kv_cache_tensor(root) ? static_cast<KvStore*>(root->extra) : nullptr;
}

struct RowHead {
    int64_t row;
    int head;
};

// Element (0, i1, i2, i3) of view t, as a store row and head.
inline RowHead locate(const ggml_tensor* t, const KvStore& store, int64_t i1, int64_t i2, int64_t i3) {
    const size_t base = t->view_src ? t->view_offs : 0;
    const size_t off = base + size_t(i1) * t->nb[1] + size_t(i2) * t->nb[2] + size_t(i3) * t->nb[3];
    const size_t row_bytes = store.dense_row_bytes();
    return {int64_t(off / row_bytes), int(off % row_bytes / (size_t(store.head_dim()) * 2))};
}

// Row i of a SET_ROWS index tensor, read from `idx` (its bytes on the host).
inline int64_t write_index(const ggml_tensor* index, const char* idx, int64_t i, int64_t i02, int64_t i03) {
    const char* p = idx + i * index->nb[0] + (i02 % index->ne[1]) * index->nb[1] + (i03 % index->ne[2]) * index->nb[2];
    return index->type == GGML_TYPE_I64 ? *reinterpret_cast<const int64_t*>(p) : *reinterpret_cast<const int32_t*>(p);
}

// The rows a SET_ROWS node writes into a store, in the micro-batch's token order (the window is
// defined by that order): fn(byte offset of the source row in src->data, where it lands).
// `idx` holds the index tensor's bytes on the host; indices outside the tensor are skipped.
template <typename Fn>
void for_each_store_write(const ggml_tensor* node, const KvStore& store, const char* idx, Fn fn) {
    const ggml_tensor* src = node->src[0];
    for (int64_t i03 = 0; i03 < src->ne[3]; ++i03)
        for (int64_t i02 = 0; i02 < src->ne[2]; ++i02)
            for (int64_t i = 0; i < src->ne[1]; ++i) {
                const int64_t dst_row = write_index(node->src[1], idx, i, i02, i03);
                if (dst_row < 0 || dst_row >= node->ne[1]) continue;
                fn(size_t(i * src->nb[1] + i02 * src->nb[2] + i03 * src->nb[3]), locate(node, store, dst_row, i02, i03));
            }
}

}  // namespace mustafar::kv
