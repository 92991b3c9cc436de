#include <cstring>

#include "convert.h"
#include "kernels.h"

namespace mustafar::cpu {

namespace {

struct Walker {
    const ggml_tensor* t;
    int64_t i[4] = {0, 0, 0, 0};

    explicit Walker(const ggml_tensor* tensor, int64_t linear) : t(tensor) {
        for (int d = 0; d < 4; ++d) {
            i[d] = linear % t->ne[d];
            linear /= t->ne[d];
        }
    }
    size_t offset() const { return i[0] * t->nb[0] + i[1] * t->nb[1] + i[2] * t->nb[2] + i[3] * t->nb[3]; }
    void next() {
        for (int d = 0; d < 4; ++d) {
            if (++i[d] < t->ne[d]) return;
            i[d] = 0;
        }
    }
};

}  // namespace

void copy(const ggml_tensor* node, ThreadPool& pool) {
    const ggml_tensor* src = node->src[0];
    const ggml_tensor* dst = node;  // for CPY the node is a view of its destination, src[1]
    const int64_t n = src->ne[0] * src->ne[1] * src->ne[2] * src->ne[3];
    const char* s = static_cast<const char*>(src->data);
    char* d = static_cast<char*>(dst->data);

    if (src->type == dst->type && ggml_is_contiguous(src) && ggml_is_contiguous(dst)) {
        std::memcpy(d, s, ggml_nbytes(src));
        return;
    }
    pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
        Walker ws(src, begin), wd(dst, begin);
        for (int64_t k = begin; k < end; ++k, ws.next(), wd.next())
            store_float(dst->type, d + wd.offset(), load_float(src->type, s + ws.offset()));
    });
}

}  // namespace mustafar::cpu
