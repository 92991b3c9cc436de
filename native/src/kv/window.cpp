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

    // Pass 1: what each query row sees, and its newest row (the cell its own token was written to).
    std::vector<std::vector<int64_t>> seen(size_t(n_streams * n_q));
    std::vector<int64_t> newest(seen.size(), -1);
    for (int64_t s = 0; s < n_streams; ++s) {
        for (int64_t r = 0; r < n_q; ++r) {
            const uint16_t* m = mask ? reinterpret_cast<const uint16_t*>(static_cast<const char*>(mask->data) +
                                                                      r * mask->nb[1] + (s % mask->ne[3]) * mask->nb[3])
                                     : nullptr;
            auto& rows = seen[s * n_q + r];
            for (int64_t ic = 0; ic < n_kv; ++ic) {
                if (m != nullptr && f16[m[ic]] == -INFINITY) continue;
                const int64_t row = locate(k, *ks, ic, 0, s).row;
                if (ks->state(row) == RowState::Empty) continue;
                rows.push_back(row);
                int64_t& n = newest[s * n_q + r];
                if (n < 0 || ks->stamp(row) > ks->stamp(n)) n = row;
            }
        }
    }
    // Pass 2: a query is superseded when another query sees its newest row: a later token of the
    // same sequence in this micro-batch (a prompt). Only the latest token's window stays dense.
    std::vector<int64_t> query_of_newest(ks->rows(), -1);
    for (size_t i = 0; i < seen.size(); ++i)
        if (newest[i] >= 0) query_of_newest[newest[i]] = int64_t(i);
    std::vector<uint8_t> superseded(seen.size(), 0);
    for (size_t i = 0; i < seen.size(); ++i)
        for (int64_t row : seen[i]) {
            const int64_t other = query_of_newest[row];
            if (other >= 0 && size_t(other) != i && ks->stamp(newest[i]) > ks->stamp(row)) superseded[other] = 1;
        }
    // Pass 3: dense = the W newest rows seen by each latest query; everything else seen is retired.
    std::vector<uint8_t> keep(ks->rows(), 0), old(ks->rows(), 0);
    std::vector<std::pair<uint64_t, int64_t>> by_age;
    for (size_t i = 0; i < seen.size(); ++i) {
        for (int64_t row : seen[i]) old[row] = 1;
        if (superseded[i]) continue;
        by_age.clear();
        for (int64_t row : seen[i]) by_age.emplace_back(ks->stamp(row), row);
        const size_t n_keep = std::min(W, by_age.size());
        std::nth_element(by_age.begin(), by_age.begin() + n_keep, by_age.end(), std::greater<>());
        for (size_t j = 0; j < n_keep; ++j) keep[by_age[j].second] = 1;
    }
    for (int64_t row = 0; row < ks->rows(); ++row) {
        if (!old[row] || keep[row]) continue;
        ks->compress(row);
        if (vs != nullptr && vs != ks) vs->compress(row);
    }
}

}  // namespace mustafar::kv
