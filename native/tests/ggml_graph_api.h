// Test-only declarations of ggml's graph-building API (ggml 0.18.0), used to build the same graph for
// ggml's CPU backend and for ours. Written here from the public headers' signatures.
#pragma once
#include "ggml_abi.h"

extern "C" {
struct ggml_init_params {
    size_t mem_size;
    void* mem_buffer;
    bool no_alloc;
};
ggml_context* ggml_init(ggml_init_params params);
void ggml_free(ggml_context* ctx);
ggml_tensor* ggml_new_tensor_4d(ggml_context* ctx, ggml_type type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
ggml_tensor* ggml_set_name(ggml_tensor* tensor, const char* name);
ggml_tensor* ggml_view_4d(ggml_context* ctx, ggml_tensor* a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, size_t nb1,
                          size_t nb2, size_t nb3, size_t offset);
ggml_tensor* ggml_permute(ggml_context* ctx, ggml_tensor* a, int axis0, int axis1, int axis2, int axis3);
ggml_tensor* ggml_transpose(ggml_context* ctx, ggml_tensor* a);
ggml_tensor* ggml_cpy(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b);
ggml_tensor* ggml_cont(ggml_context* ctx, ggml_tensor* a);
ggml_tensor* ggml_set_rows(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b, ggml_tensor* c);
ggml_tensor* ggml_flash_attn_ext(ggml_context* ctx, ggml_tensor* q, ggml_tensor* k, ggml_tensor* v, ggml_tensor* mask,
                                 float scale, float max_bias, float logit_softcap);
ggml_tensor* ggml_mul_mat(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b);
ggml_tensor* ggml_add(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b);
ggml_tensor* ggml_mul(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b);
ggml_tensor* ggml_sub(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b);
ggml_tensor* ggml_div(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b);
ggml_tensor* ggml_rms_norm(ggml_context* ctx, ggml_tensor* a, float eps);
ggml_tensor* ggml_scale(ggml_context* ctx, ggml_tensor* a, float s);
ggml_tensor* ggml_silu(ggml_context* ctx, ggml_tensor* a);
ggml_tensor* ggml_swiglu(ggml_context* ctx, ggml_tensor* a);
ggml_tensor* ggml_swiglu_split(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b);
ggml_tensor* ggml_get_rows(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b);
ggml_tensor* ggml_rope_ext(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b, ggml_tensor* c, int n_dims, int mode, int n_ctx_orig,
                           float freq_base, float freq_scale, float ext_factor, float attn_factor, float beta_fast, float beta_slow);
// Quantizes nrows rows of n_per_row floats from src (starting at element `start`) into dst in `type`'s
// blocks; imatrix may be null for the types the tests use. Returns the bytes written.
size_t ggml_quantize_chunk(ggml_type type, const float* src, void* dst, int64_t start, int64_t nrows, int64_t n_per_row,
                           const float* imatrix);
// ggml's own conversions of a type (ggml.h's struct ggml_type_traits, unchanged in 0.18.0): to_float
// decodes k values of whole blocks.
typedef void (*ggml_to_float_t)(const void* x, float* y, int64_t k);
typedef void (*ggml_from_float_t)(const float* x, void* y, int64_t k);
struct ggml_type_traits {
    const char* type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    ggml_to_float_t to_float;
    ggml_from_float_t from_float_ref;
};
const ggml_type_traits* ggml_get_type_traits(ggml_type type);
ggml_cgraph* ggml_new_graph(ggml_context* ctx);
void ggml_build_forward_expand(ggml_cgraph* cgraph, ggml_tensor* tensor);

ggml_backend_buffer_t ggml_backend_alloc_ctx_tensors_from_buft(ggml_context* ctx, ggml_backend_buffer_type_t buft);
ggml_backend_buffer_t ggml_backend_buft_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size);
void ggml_backend_buffer_free(ggml_backend_buffer_t buffer);
void ggml_backend_buffer_set_usage(ggml_backend_buffer_t buffer, ggml_backend_buffer_usage usage);
void* ggml_backend_buffer_get_base(ggml_backend_buffer_t buffer);
ggml_status ggml_backend_tensor_alloc(ggml_backend_buffer_t buffer, ggml_tensor* tensor, void* addr);
size_t ggml_backend_buffer_get_size(ggml_backend_buffer_t buffer);
void ggml_backend_tensor_set(ggml_tensor* tensor, const void* data, size_t offset, size_t size);
void ggml_backend_tensor_get(const ggml_tensor* tensor, void* data, size_t offset, size_t size);
void ggml_backend_tensor_memset(ggml_tensor* tensor, uint8_t value, size_t offset, size_t size);
ggml_status ggml_backend_graph_compute(ggml_backend_t backend, ggml_cgraph* cgraph);
ggml_status ggml_backend_graph_compute_async(ggml_backend_t backend, ggml_cgraph* cgraph);
void ggml_backend_synchronize(ggml_backend_t backend);
void ggml_backend_free(ggml_backend_t backend);
ggml_backend_buffer_type_t ggml_backend_cpu_buffer_type(void);
ggml_backend_t ggml_backend_dev_init(ggml_backend_dev_t device, const char* params);
ggml_backend_buffer_type_t ggml_backend_dev_buffer_type(ggml_backend_dev_t device);
ggml_backend_buffer_type_t ggml_backend_dev_host_buffer_type(ggml_backend_dev_t device);
void ggml_backend_tensor_copy(ggml_tensor* src, ggml_tensor* dst);
bool ggml_backend_dev_supports_op(ggml_backend_dev_t device, const ggml_tensor* op);
ggml_backend_t ggml_backend_cpu_init(void);  // libggml-cpu
void ggml_backend_cpu_set_n_threads(ggml_backend_t backend, int n_threads);
ggml_backend_reg_t ggml_backend_init(void);  // ours
}
