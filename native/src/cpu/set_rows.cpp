#include <cstring>

#include <vector>

#include "../kv/view.h"
#include "convert.h"
#include "kernels.h"

namespace mustafar::cpu {

namespace {

// Writes into a Mustafar store: each written row becomes dense and the newest of the store, so serially.
void set_rows_into_store(const ggml_tensor* node, kv::KvStore& store) {
    const ggml_tensor* src = node->src[0];
    const int64_t n_cols = src->ne[0];
    const int D = store.head_dim();
    std::vector<uint16_t> values(n_cols);
    kv::for_each_store_write(node, store, static_cast<const char*>(node->src[1]->data), [&](size_t offset, kv::RowHead at) {
        const char* s = static_cast<const char*>(src->data) + offset;
        for (int64_t c = 0; c < n_cols; ++c) values[c] = fp32_to_fp16(load_float(src->type, s + c * ggml_type_size(src->type)));
        if (at.head == 0 && n_cols == int64_t(store.dense_row_bytes() / 2)) store.write_row(at.row, values.data());
        else store.write_heads(at.row, at.head, int(n_cols / D), values.data());
    });
}

}  // namespace

void set_rows(const ggml_tensor* node, ThreadPool& pool) {
    if (kv::KvStore* store = kv::store_of(node)) {
        set_rows_into_store(node, *store);
        return;
    }
    const ggml_tensor* src = node->src[0];
    const ggml_tensor* idx = node->src[1];
    const int64_t n_cols = src->ne[0];
    const int64_t n_rows = src->ne[1];
    const int64_t total = n_rows * src->ne[2] * src->ne[3];

    pool.parallel_for(total, [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) {
            const int64_t i = r % n_rows;
            const int64_t i02 = (r / n_rows) % src->ne[2];
            const int64_t i03 = r / (n_rows * src->ne[2]);
            const int64_t row = kv::write_index(idx, static_cast<const char*>(idx->data), i, i02, i03);
            if (row < 0 || row >= node->ne[1]) continue;  // supports_op cannot see indices; never write outside
            const char* s = static_cast<const char*>(src->data) + i * src->nb[1] + i02 * src->nb[2] + i03 * src->nb[3];
            char* d = static_cast<char*>(node->data) + row * node->nb[1] + i02 * node->nb[2] + i03 * node->nb[3];
            if (src->type == node->type) {
                std::memcpy(d, s, n_cols * ggml_type_size(src->type));
                continue;
            }
            const size_t ss = ggml_type_size(src->type), ds = ggml_type_size(node->type);
            for (int64_t c = 0; c < n_cols; ++c) store_float(node->type, d + c * ds, load_float(src->type, s + c * ss));
        }
    });
}

}  // namespace mustafar::cpu
