#pragma once
#include "../ggml_abi.h"

namespace mustafar::kv {

// After an attention node ran, every cache row that a query of this micro-batch sees is pruned and
// compressed (in K and V) unless it is among the `window` most recently written rows seen by the
// latest token of a sequence in the batch: that sequence's local window. Sequences are known only
// through the mask (what each query sees), so a row shared by several sequences stays dense while
// it is inside the window of any sequence decoding in the batch; idle sequences are not touched.
// `mask` is the host copy of the attention's mask bytes (its data in the CPU flavour), laid out with
// the mask's strides; null when the node has no mask. Device stores defer the compressions
// (StoreMemory), which the caller then launches.
void retire_out_of_window(const ggml_tensor* attention, const char* mask);

}  // namespace mustafar::kv
