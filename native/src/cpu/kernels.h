// CPU kernels of the KV path. Each takes the ggml node it computes; shapes and types were
// accepted by supports_op (backend.cpp) before.
#pragma once
#include "../ggml_abi.h"
#include "../thread_pool.h"

namespace mustafar::cpu {

// SET_ROWS: dst rows idx[i] = convert(src rows i), broadcast of the index over dims 2 and 3.
void set_rows(const ggml_tensor* node, ThreadPool& pool);
// CPY, DUP and CONT: element-wise copy in logical order with type conversion, any strides.
void copy(const ggml_tensor* node, ThreadPool& pool);
// FLASH_ATTN_EXT: softmax(scale * q k^T + slope * mask) v with one online softmax per query row
// and head, fp32 accumulation. GQA by head broadcast; ALiBi and logit soft-capping as in ggml.
void flash_attn_ext(const ggml_tensor* node, ThreadPool& pool);

}  // namespace mustafar::cpu
