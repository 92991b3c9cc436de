// The CUDA flavour: device memory, one CUDA stream per backend, the KV-path kernels on the GPU.
#include <cstdio>
#include <string>

#include "../flavour.h"
#include "cuda_check.h"
#include "flavour_cuda.h"

namespace mustafar::flavour {
namespace {

class CudaExecutor final : public Executor {
public:
    CudaExecutor() { ok_ = MUSTAFAR_CUDA_OK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
    ~CudaExecutor() override {
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
            case GGML_OP_FLASH_ATTN_EXT: launched = cuda::flash_attn_ext(node, stream_); break;
            default: return GGML_STATUS_FAILED;
        }
        return launched ? GGML_STATUS_SUCCESS : GGML_STATUS_FAILED;
    }

    // graph_compute returns with the results in device memory, as ggml's synchronous backends do.
    void finish() override { MUSTAFAR_CUDA_OK(cudaStreamSynchronize(stream_)); }

private:
    cudaStream_t stream_ = nullptr;
    bool ok_ = false;
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

bool supports_kv_type(ggml_type type) { return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16; }

bool has_compressed_store() { return false; }

Executor* create_executor(int) { return new CudaExecutor(); }

}  // namespace mustafar::flavour
