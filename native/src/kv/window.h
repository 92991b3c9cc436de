#pragma once
#include "../ggml_abi.h"

namespace mustafar::kv {

// After an attention node ran: every cache row that some query of this micro-batch sees but that
// is not among the `window` most recently written rows it sees (its sequence's local window), and
// is not inside the window of another query of the batch, is pruned and compressed, in K and V.
// The rows a query sees come from the mask, so windows are per sequence with no knowledge of
// sequence ids; a row shared by several sequences is kept while any decoding sequence needs it dense.
void retire_out_of_window(const ggml_tensor* attention);

}  // namespace mustafar::kv
