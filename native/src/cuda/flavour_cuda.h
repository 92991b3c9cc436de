#pragma once
#include <cuda_runtime.h>

#include "../ggml_abi.h"
#include "attention_decode.h"

namespace mustafar::cuda {
void init_device_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device);

// Q8_0 weights in our buffers are stored converted to f16 (one element per value, rows of ne0), marked
// by this tag in tensor->extra; MUL_MAT and GET_ROWS read them as f16.
extern const char kConvertedToF16;
inline bool converted_to_f16(const ggml_tensor* t) { return t->view_src == nullptr && t->extra == &kConvertedToF16; }
// Kernels (kernels_cuda.cu); each launches on `stream` and returns false on a launch error.
bool set_rows(const ggml_tensor* node, cudaStream_t stream);
bool copy(const ggml_tensor* node, cudaStream_t stream);
bool flash_attn_ext(const ggml_tensor* node, cudaStream_t stream, DecodeWorkspace& ws, int sm_count);
}  // namespace mustafar::cuda
