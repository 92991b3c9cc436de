// The CUDA flavour: device memory, one CUDA stream per backend, the KV-path kernels on the GPU.
#include <cstdio>
#include <string>

#include <memory>

#include "../flavour.h"
#include "compute_cuda.h"
#include "cuda_check.h"
#include "flavour_cuda.h"

namespace mustafar::flavour {
namespace {

class CudaExecutor final : public Executor {
public:
    CudaExecutor() {
        // A blocking stream: its kernels wait for the copies that get/set_tensor issue on the legacy
        // default stream (a pageable host-to-device cudaMemcpy may return before its DMA lands).
        int device = 0;
        ok_ = MUSTAFAR_CUDA_OK(cudaStreamCreate(&stream_)) && MUSTAFAR_CUDA_OK(cudaGetDevice(&device)) &&
              MUSTAFAR_CUDA_OK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device));
        if (ok_) ops_ = std::make_unique<cuda::ComputeOps>(stream_);
    }
    ~CudaExecutor() override {
        ops_.reset();
        if (ok_) MUSTAFAR_CUDA_OK(cudaStreamDestroy(stream_));
    }

    ggml_status run(ggml_tensor* node) override {
        if (!ok_) return GGML_STATUS_FAILED;
        bool launched = false;
        switch (node->op) {
            case GGML_OP_SET_ROWS: launched = cuda::set_rows(node, stream_); break;
            case GGML_OP_CPY:
            case GGML_OP_DUP:
            case GGML_OP_CONT: launched = cuda::copy(node, stream_); break;
            case GGML_OP_FLASH_ATTN_EXT: launched = cuda::flash_attn_ext(node, stream_, attn_ws_, sm_count_); break;
            case GGML_OP_ADD:
            case GGML_OP_SUB:
            case GGML_OP_MUL:
            case GGML_OP_DIV: launched = ops_->binary(node); break;
            case GGML_OP_SCALE: launched = ops_->scale(node); break;
            case GGML_OP_UNARY: launched = ops_->silu(node); break;
            case GGML_OP_GLU: launched = ops_->swiglu(node); break;
            case GGML_OP_RMS_NORM: launched = ops_->rms_norm(node); break;
            case GGML_OP_GET_ROWS: launched = ops_->get_rows(node); break;
            case GGML_OP_ROPE: launched = ops_->rope(node); break;
            case GGML_OP_MUL_MAT: launched = ops_->mul_mat(node); break;
            default: return GGML_STATUS_FAILED;
        }
        return launched ? GGML_STATUS_SUCCESS : GGML_STATUS_FAILED;
    }

    // graph_compute returns with the results in device memory, as ggml's synchronous backends do.
    void finish() override { MUSTAFAR_CUDA_OK(cudaStreamSynchronize(stream_)); }

private:
    cudaStream_t stream_ = nullptr;
    bool ok_ = false;
    std::unique_ptr<cuda::ComputeOps> ops_;
    cuda::DecodeWorkspace attn_ws_;
    int sm_count_ = 0;
};

std::string device_description() {
    cudaDeviceProp prop{};
    if (!MUSTAFAR_CUDA_OK(cudaGetDeviceProperties(&prop, 0))) return "Mustafar KV cache backend (CUDA flavour, no device)";
    return std::string("Mustafar KV cache backend (CUDA flavour, ") + prop.name + ")";
}

}  // namespace

const char* name() { return "cuda"; }

const char* description() {
    static const std::string text = device_description();
    return text.c_str();
}

void memory(size_t* free, size_t* total) {
    if (!MUSTAFAR_CUDA_OK(cudaMemGetInfo(free, total))) *free = *total = 0;
}

void init_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) { cuda::init_device_buffer_type(buft, device); }

bool supports_kv_type(ggml_type type) { return is_float_type(type); }

bool has_compressed_store() { return false; }

bool supports_compute_op(const ggml_tensor* op) { return cuda::supports_compute(op); }

Executor* create_executor(int) { return new CudaExecutor(); }

}  // namespace mustafar::flavour
