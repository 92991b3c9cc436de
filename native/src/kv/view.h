// Maps llama.cpp's views of a cache tensor (dense offsets, strides nb) to store rows and heads.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../ggml_abi.h"
#include "store.h"

namespace mustafar::kv {

// The store behind a tensor or a view of it, or null for ordinary tensors.
inline KvStore* store_of(const ggml_tensor* t) {
    const ggml_tensor* root = root_of(t);
    return static_cast<KvStore*>(root->extra);
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

}  // namespace mustafar::kv
