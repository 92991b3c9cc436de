#include "window.h"

#include <algorithm>
#include <vector>

#include "../fp16.h"
#include "view.h"

namespace mustafar::kv {

void retire_out_of_window(const ggml_tensor* attention) {
    const ggml_tensor* k = attention->src[1];
    const ggml_tensor* v = attention->src[2];
    const ggml_tensor* q = attention->src[0];
    const ggml_tensor* mask = attention->src[3];
    KvStore* ks = store_of(k);
    KvStore* vs = store_of(v);
    if (ks == nullptr) return;
    const size_t W = size_t(ks->window());
    const int64_t n_kv = k->ne[1], n_q = q->ne[1], n_streams = k->ne[3];
    const float* f16 = fp16_table().values;

    std::vector<uint8_t> keep(ks->rows(), 0), old(ks->rows(), 0);
    std::vector<std::pair<uint64_t, int64_t>> seen;  // (stamp, row), newest first after partial sort
    for (int64_t s = 0; s < n_streams; ++s) {
        for (int64_t r = 0; r < n_q; ++r) {
            const uint16_t* m = mask ? reinterpret_cast<const uint16_t*>(static_cast<const char*>(mask->data) +
                                                                      r * mask->nb[1] + (s % mask->ne[3]) * mask->nb[3])
                                     : nullptr;
            seen.clear();
            for (int64_t ic = 0; ic < n_kv; ++ic) {
                if (m != nullptr && f16[m[ic]] == -INFINITY) continue;
                const int64_t row = locate(k, *ks, ic, 0, s).row;
                if (ks->state(row) == RowState::Empty) continue;
                seen.emplace_back(ks->stamp(row), row);
            }
            const size_t n_keep = std::min(W, seen.size());
            std::nth_element(seen.begin(), seen.begin() + n_keep, seen.end(), std::greater<>());
            for (size_t i = 0; i < seen.size(); ++i) (i < n_keep ? keep : old)[seen[i].second] = 1;
        }
    }
    for (int64_t row = 0; row < ks->rows(); ++row) {
        if (!old[row] || keep[row]) continue;
        ks->compress(row);
        if (vs != nullptr && vs != ks) vs->compress(row);
    }
}

}  // namespace mustafar::kv
