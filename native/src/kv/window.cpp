#include "window.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "../registry.h"
#include "view.h"

namespace mustafar::kv {

// Only dense rows can be kept or retired, so each query looks at the dense rows alone (the pool: the
// windows plus a micro-batch), newest first, and never at the compressed rest of the cache:
//  - its W newest visible dense rows are its window, the first of them its newest row;
//  - a query whose newest row a query with a newer newest row sees is an earlier token of the same
//    sequence in this micro-batch (a prompt), superseded: only the latest token keeps a window;
//  - dense rows some query sees, outside every latest query's window, are compressed.
// Rows leave windows oldest first, so the dense rows a query sees are newer than the compressed ones
// it sees, and its W newest visible dense rows are the dense rows among its W newest visible rows.
// (Were a compressed row newer, say after cache edits, the rule would keep more rows dense, never
// fewer.) An earlier version walked a log of every write down to the oldest dense row; after a batch
// of prompts that walk passed the other sequences' whole prompts in each decode step until the decode
// rows filled the windows (CPU flavour, batch 8 at 8K: 1.8 ms a step on average, now 0.3 ms).
const std::vector<int64_t>* RetireCache::find(const Key& key) const {
    for (const auto& [k, rows] : entries_)
        if (k == key) return &rows;
    return nullptr;
}

void RetireCache::add(const Key& key, std::vector<int64_t> rows) {
    if (entries_.size() >= 8) entries_.erase(entries_.begin());  // a graph has one mask per cache view
    entries_.emplace_back(key, std::move(rows));
}

void retire_out_of_window(const ggml_tensor* attention, const char* mask_data, RetireCache& cache) {
    const ggml_tensor* k = attention->src[1];
    const ggml_tensor* v = attention->src[2];
    const ggml_tensor* q = attention->src[0];
    const ggml_tensor* mask = attention->src[3];
    KvStore* ks = store_of(k);
    KvStore* vs = store_of(v);
    if (ks == nullptr || ks->dense_rows() == 0) return;

    // Cell ic of stream s is row first + ic + s * seq_rows in llama.cpp's views of its cache.
    const size_t row_bytes = ks->dense_row_bytes();
    const size_t base = k->view_src ? k->view_offs : 0;
    if (k->nb[1] != row_bytes || base % row_bytes != 0 || (k->ne[3] > 1 && k->nb[3] % row_bytes != 0)) {
        log_error("%s: %s reads the cache through a view without whole rows per cell; its rows stay dense\n", kDeviceName, attention->name);
        return;
    }
    const int64_t first = int64_t(base / row_bytes), seq_rows = k->ne[3] > 1 ? int64_t(k->nb[3] / row_bytes) : 0;
    const int64_t n_kv = k->ne[1], n_q = q->ne[1], n_streams = k->ne[3];
    auto retire = [&](const std::vector<int64_t>& rows) {
        for (int64_t row : rows) {
            ks->compress(row);
            if (vs != nullptr && vs != ks) vs->compress(row);
        }
    };
    const RetireCache::Key key{mask != nullptr && mask_data != nullptr ? mask->data : nullptr,
                               mask != nullptr ? mask->nb[1] : 0,
                               mask != nullptr ? mask->nb[3] : 0,
                               first,
                               seq_rows,
                               n_kv,
                               n_q,
                               n_streams,
                               ks->rows(),
                               ks->window(),
                               ks->history()};
    if (const std::vector<int64_t>* rows = cache.find(key)) {
        retire(*rows);
        return;
    }
    const size_t n_queries = size_t(n_streams * n_q);
    const size_t W = size_t(ks->window());

    std::vector<const uint16_t*> rows_mask(n_queries, nullptr);
    if (mask != nullptr && mask_data != nullptr)
        for (int64_t s = 0; s < n_streams; ++s)
            for (int64_t r = 0; r < n_q; ++r)
                rows_mask[s * n_q + r] = reinterpret_cast<const uint16_t*>(mask_data + r * mask->nb[1] + (s % mask->ne[3]) * mask->nb[3]);
    auto visible = [&](size_t i, int64_t row) {
        const int64_t ic = row - first - int64_t(i / n_q) * seq_rows;
        if (ic < 0 || ic >= n_kv) return false;
        return rows_mask[i] == nullptr || rows_mask[i][ic] != 0xfc00;  // f16 -inf hides the cell
    };

    // Each query's window (its W newest visible dense rows) and newest row.
    std::vector<int64_t> dense;
    ks->dense_row_list(dense);
    std::vector<int64_t> by_age = dense;
    std::sort(by_age.begin(), by_age.end(), [&](int64_t a, int64_t b) { return ks->stamp(a) > ks->stamp(b); });
    const size_t depth = std::max<size_t>(W, 1);
    std::vector<std::vector<int64_t>> window(n_queries);
    std::vector<int64_t> newest(n_queries, -1);
    for (size_t i = 0; i < n_queries; ++i) {
        for (int64_t row : by_age) {
            if (!visible(i, row)) continue;
            window[i].push_back(row);
            if (window[i].size() >= depth) break;
        }
        if (!window[i].empty()) newest[i] = window[i][0];
        if (window[i].size() > W) window[i].resize(W);
    }
    // Superseded queries: a row is the newest of the last query that has it as its newest.
    std::unordered_map<int64_t, size_t> query_of_newest;
    for (size_t i = 0; i < n_queries; ++i)
        if (newest[i] >= 0) query_of_newest[newest[i]] = i;
    std::vector<int64_t> keep;
    for (size_t o = 0; o < n_queries; ++o) {
        if (newest[o] < 0) continue;
        bool superseded = false;
        if (query_of_newest[newest[o]] == o) {
            const uint64_t mine = ks->stamp(newest[o]);
            for (size_t i = 0; i < n_queries && !superseded; ++i)
                superseded = i != o && newest[i] >= 0 && ks->stamp(newest[i]) > mine && visible(i, newest[o]);
        }
        if (!superseded) keep.insert(keep.end(), window[o].begin(), window[o].end());
    }
    std::sort(keep.begin(), keep.end());
    std::vector<int64_t> leaving;
    for (int64_t row : dense) {
        if (std::binary_search(keep.begin(), keep.end(), row)) continue;
        bool seen = false;
        for (size_t i = 0; i < n_queries && !seen; ++i) seen = visible(i, row);
        if (seen) leaving.push_back(row);
    }
    retire(leaving);
    cache.add(key, std::move(leaving));
}

}  // namespace mustafar::kv
