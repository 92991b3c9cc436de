// The CUDA flavour: device memory, one CUDA stream per backend, the KV-path kernels on the GPU.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../flavour.h"
#include "../fp16.h"
#include "../kv/view.h"
#include "../registry.h"
#include "compute_cuda.h"
#include "profile_cuda.h"
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
              MUSTAFAR_CUDA_OK(cudaDeviceGetAttribute(&kv_.sm_count, cudaDevAttrMultiProcessorCount, device));
        kv_.stream = stream_;
        if (ok_) ops_ = std::make_unique<cuda::ComputeOps>(stream_);
    }
    ~CudaExecutor() override {
        profile_.reset();
        ops_.reset();
        if (ok_) MUSTAFAR_CUDA_OK(cudaStreamDestroy(stream_));
    }

    ggml_status run(ggml_tensor* node) override {
        if (!ok_) return GGML_STATUS_FAILED;
        if (!profile_->enabled()) return execute(node);
        profile_->begin(node, stream_);
        const ggml_status status = execute(node);
        profile_->end(stream_);
        return status;
    }

    // graph_compute returns with the results in device memory, as ggml's synchronous backends do.
    void finish() override {
        if (profile_->enabled()) profile_->before_finish();
        MUSTAFAR_CUDA_OK(cudaStreamSynchronize(stream_));
        kv_.arena.reset();
        kv_.readback_at = nullptr;  // the next graph's inputs are uploaded anew
        kv_.retired.clear();
        if (profile_->enabled()) profile_->after_finish();
    }

private:
    ggml_status execute(ggml_tensor* node) {
        // The node overwrites its memory: host copies of what was there are stale. Not for writes
        // into a store, whose memory is smaller than the dense tensor llama.cpp sees (and never shadowed).
        if (kv::store_of(node) == nullptr) {
            registry().shadows.invalidate(node->data, ggml_nbytes(node));
            kv_.drop_readback(node->data, ggml_nbytes(node));
        }
        bool launched = false;
        switch (node->op) {
            case GGML_OP_SET_ROWS: launched = cuda::set_rows(node, kv_); break;
            case GGML_OP_CPY:
            case GGML_OP_DUP:
            case GGML_OP_CONT:
                launched = cuda::copy(node, stream_);
                if (launched) shadow_copy(node);
                break;
            case GGML_OP_FLASH_ATTN_EXT: launched = cuda::flash_attn_ext(node, kv_); break;
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

    // A copy of a tensor that has a host copy gets one too: llama.cpp versions that build the mask
    // in f32 cast it to f16 on the device, and the store's window logic reads the f16 mask.
    static void shadow_copy(const ggml_tensor* node) {
        const ggml_tensor* src = node->src[0];
        const bool f32 = src->type == GGML_TYPE_F32, f16 = src->type == GGML_TYPE_F16;
        if (!(f32 || f16) || (node->type != GGML_TYPE_F32 && node->type != GGML_TYPE_F16) || !ggml_is_contiguous(src) ||
            !ggml_is_contiguous(node))
            return;
        const int64_t n = src->ne[0] * src->ne[1] * src->ne[2] * src->ne[3];
        std::vector<uint8_t> out;
        const bool found = registry().shadows.with(src->data, ggml_nbytes(src), [&](const uint8_t* h) {
            out.resize(ggml_nbytes(node));
            for (int64_t i = 0; i < n; ++i) {
                float x;
                if (f32) std::memcpy(&x, h + 4 * i, 4);
                else x = fp16_to_fp32(reinterpret_cast<const uint16_t*>(h)[i]);
                if (node->type == GGML_TYPE_F32) std::memcpy(out.data() + 4 * i, &x, 4);
                else reinterpret_cast<uint16_t*>(out.data())[i] = fp32_to_fp16(x);
            }
        });
        if (found) registry().shadows.record(node->data, out.data(), out.size());
    }

    cudaStream_t stream_ = nullptr;
    bool ok_ = false;
    std::unique_ptr<cuda::ComputeOps> ops_;
    cuda::KvPathContext kv_;
    std::unique_ptr<cuda::OpProfile> profile_ = std::make_unique<cuda::OpProfile>(std::getenv("MUSTAFAR_PROFILE") != nullptr);
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

bool make_store_memory(uint8_t* memory, int64_t n_rows, int64_t n_embd, const kv::StoreConfig& cfg, std::unique_ptr<kv::StoreMemory>& out) {
    out = cuda::DeviceStore::create(memory, n_rows, n_embd, cfg);
    return out != nullptr;
}

bool supports_compute_op(const ggml_tensor* op) { return cuda::supports_compute(op); }

Executor* create_executor(int) { return new CudaExecutor(); }

}  // namespace mustafar::flavour
