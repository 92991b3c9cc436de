#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "../ggml_abi.h"

namespace mustafar::cuda {

// Where a decode step's row goes in a Mustafar store's pool (place_store_row in flavour_cuda.h): the
// slot's dense row, and the row's slot-table entry to set.
struct StoreRow {
    void* dst = nullptr;
    int32_t* slot_entry = nullptr;
    int32_t slot = -1;
};

// MUL_MATs that take the matrix-vector kernel and share their activation, with the nodes computed in the
// same launch (fusion_cuda.h).
struct GemvNodes {
    static constexpr int kMax = 4;
    const ggml_tensor* mats[kMax] = {};
    int n = 0;
    const ggml_tensor* add = nullptr;       // an ADD of the last product and a residual
    const ggml_tensor* glu = nullptr;       // the SWIGLU of two products of the same rows, mats[0] its silu operand
    const ggml_tensor* ropes[kMax] = {};    // per product, a ROPE (normal mode) of its output, or null
    bool rope_only[kMax] = {};              // per product: only its ROPE's output is written (nothing reads its own)
    const ggml_tensor* cache_rows[kMax] = {};  // per product, a SET_ROWS of its final output into an f16 cache, or null
    StoreRow store_rows[kMax];  // per product whose SET_ROWS writes into a store: its placed row (else dst null)
};

// The non-KV ops of one stream (compute_cuda.cu); owns the stream's cuBLAS handle and scratch memory.
class ComputeOps {
public:
    explicit ComputeOps(cudaStream_t stream);
    ~ComputeOps();
    ComputeOps(const ComputeOps&) = delete;
    ComputeOps& operator=(const ComputeOps&) = delete;

    bool binary(const ggml_tensor* node);
    bool scale(const ggml_tensor* node);
    bool silu(const ggml_tensor* node);
    bool swiglu(const ggml_tensor* node);
    bool rms_norm(const ggml_tensor* node);
    // RMS_NORM and the MUL by a weight row that reads it (fusion_cuda.h), one launch.
    bool rms_norm_mul(const ggml_tensor* norm, const ggml_tensor* mul);
    bool get_rows(const ggml_tensor* node);
    bool rope(const ggml_tensor* node);
    bool mul_mat(const ggml_tensor* node);
    // A group of MUL_MATs on the matrix-vector kernel and what joins them (GemvNodes), one launch.
    bool mul_mat_vec(const GemvNodes& g);
    // The same on the few-column kernel (2 to 8 columns): products of one activation with the ROPEs of their
    // outputs, a residual ADD after one product, or gate and up with their SWIGLU; no cache rows.
    bool mul_mat_few(const GemvNodes& g);

private:
    void* scratch(size_t bytes);

    cudaStream_t stream_;
    cublasHandle_t cublas_ = nullptr;
    bool ok_ = false;
    void* scratch_ = nullptr;
    size_t scratch_bytes_ = 0;
};

// A ROPE of a product's output that the product's kernel (matrix-vector or few-column) can compute with it:
// normal mode, each of the product's columns (tokens) read as heads of an even number of channels.
bool rope_fits_product(const ggml_tensor* product, const ggml_tensor* rope);

bool supports_compute(const ggml_tensor* op);
// A MUL_MAT the matrix-vector kernel takes: f16 (or converted) weights, one activation column.
bool takes_gemv(const ggml_tensor* node);
// A MUL_MAT the few-column kernel takes: f16 (or converted) weights, 2 to 8 activation columns, no batch
// dimensions (and MUSTAFAR_FEW_COLUMNS is not 0).
bool takes_few_columns(const ggml_tensor* node);

}  // namespace mustafar::cuda
