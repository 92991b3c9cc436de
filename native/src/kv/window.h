#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "../ggml_abi.h"

namespace mustafar::kv {

// After an attention node ran, every cache row that a query of this micro-batch sees is pruned and
// compressed (in K and V) unless it is among the `window` most recently written rows seen by the
// latest token of a sequence in the batch: that sequence's local window. Sequences are known only
// through the mask (what each query sees), so a row shared by several sequences stays dense while
// it is inside the window of any sequence decoding in the batch; idle sequences are not touched.
// The decisions of one graph, reused by its later layers: every layer's store is written alike, so
// a store with the same history (KvStore::history), seen through the same mask and view, retires
// the same rows. Cleared when the graph ends (the mask changes with the next one).
class RetireCache {
public:
    struct Key {
        const void* mask;
        size_t mask_nb1, mask_nb3;
        int64_t first, seq_rows, n_kv, n_q, n_streams, n_rows;
        int window;
        uint64_t history;
        bool operator==(const Key& o) const {
            return mask == o.mask && mask_nb1 == o.mask_nb1 && mask_nb3 == o.mask_nb3 && first == o.first && seq_rows == o.seq_rows &&
                   n_kv == o.n_kv && n_q == o.n_q && n_streams == o.n_streams && n_rows == o.n_rows && window == o.window &&
                   history == o.history;
        }
    };
    const std::vector<int64_t>* find(const Key& key) const;
    void add(const Key& key, std::vector<int64_t> rows);
    void clear() { entries_.clear(); }

private:
    std::vector<std::pair<Key, std::vector<int64_t>>> entries_;
};

// `mask` is the host copy of the attention's mask bytes (its data in the CPU flavour), laid out with
// the mask's strides; null when the node has no mask. Device stores defer the compressions
// (StoreMemory), which the caller then launches.
void retire_out_of_window(const ggml_tensor* attention, const char* mask, RetireCache& cache);

}  // namespace mustafar::kv
