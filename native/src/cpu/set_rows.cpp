#include <cstring>

#include "convert.h"
#include "kernels.h"

namespace mustafar::cpu {

void set_rows(const ggml_tensor* node, ThreadPool& pool) {
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
            const char* ip = static_cast<const char*>(idx->data) + i * idx->nb[0] + (i02 % idx->ne[1]) * idx->nb[1] +
                             (i03 % idx->ne[2]) * idx->nb[2];
            const int64_t row = idx->type == GGML_TYPE_I64 ? *reinterpret_cast<const int64_t*>(ip)
                                                           : *reinterpret_cast<const int32_t*>(ip);
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
