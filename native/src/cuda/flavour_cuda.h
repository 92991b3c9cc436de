#pragma once
#include <cuda_runtime.h>

#include "../ggml_abi.h"

namespace mustafar::cuda {
void init_device_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device);
// Kernels (kernels_cuda.cu); each launches on `stream` and returns false on a launch error.
bool set_rows(const ggml_tensor* node, cudaStream_t stream);
bool copy(const ggml_tensor* node, cudaStream_t stream);
bool flash_attn_ext(const ggml_tensor* node, cudaStream_t stream);
}  // namespace mustafar::cuda
