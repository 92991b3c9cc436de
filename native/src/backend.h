// Our backend (stream): graph dispatch to the kernels, and the op coverage it claims.
#pragma once
#include "ggml_abi.h"

namespace mustafar {

ggml_backend_t create_backend(ggml_backend_dev_t device, int n_threads);
// supports_op of our device: truthful for the ops the kernels implement (see backend.cpp).
bool supports_op(const ggml_tensor* op);
// The ggml_backend_set_n_threads entry point that llama.cpp looks up through get_proc_address.
void set_n_threads(ggml_backend_t backend, int n_threads);

}  // namespace mustafar
