#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <vector>

#include "../ggml_abi.h"
#include "../kv/window.h"
#include "attention_decode.h"
#include "compute_cuda.h"
#include "store_cuda.h"

namespace mustafar::cuda {
void init_device_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device);
// Page-locked host memory for llama.cpp's host-side buffers (host_buffer_cuda.cu).
void init_pinned_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device);

// Weights of the types that have an f16 conversion (weight_blocks.h: BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q4_K, Q5_K, Q6_K) are stored in our buffers converted to f16 (one element per value, rows of ne0),
// marked by this tag in tensor->extra; MUL_MAT and GET_ROWS read them as f16. stored_as_f16 says whether a
// tensor is (or, once allocated in our buffers, will be) stored so: a weight, i.e. not a view, no op, not a
// KV cache tensor.
extern const char kConvertedToF16;
inline bool converted_to_f16(const ggml_tensor* t) { return t->view_src == nullptr && t->extra == &kConvertedToF16; }
bool stored_as_f16(const ggml_tensor* t);

// The conversions (dequant_cuda.cu). A type without one has 0 bytes and 0 values per block.
bool converts_to_f16(int type);
size_t block_bytes(int type);
int block_values(int type);
// Converts n_blocks whole blocks of `type` at device_src into n_blocks * block_values(type) f16 values
// at device_dst, on `stream`; false for a type without a conversion or on a launch error.
bool dequantize_to_f16(int type, const void* device_src, __half* device_dst, int64_t n_blocks, cudaStream_t stream);

// What the KV-path kernels of one executor share: its stream, attention scratch, and the staging of
// the small arrays the Mustafar store uploads.
struct KvPathContext {
    cudaStream_t stream = nullptr;
    int sm_count = 0;
    DecodeWorkspace ws;
    UploadArena arena;
    // The last tensor read back for want of a host copy (a long prompt's mask is too large to copy
    // on upload): every layer reads the same mask, so it is read once per graph.
    const void* readback_at = nullptr;
    std::vector<char> readback;
    kv::RetireCache retired;  // window decisions of this graph
    bool warned_readback = false;  // warned once per executor
    // Stores whose compressions after a layer's attention wait for the end of the graph (flush_deferred).
    std::vector<DeviceStore*> deferred;
    void drop_readback(const void* data, size_t bytes) {
        const auto* b = static_cast<const char*>(data);
        const auto* r = static_cast<const char*>(readback_at);
        if (r != nullptr && b < r + readback.size() && r < b + bytes) readback_at = nullptr;
    }
};

// Kernels (kernels_cuda.cu); each launches on the stream and returns false on a launch error.
bool set_rows(const ggml_tensor* node, KvPathContext& ctx);
// A SET_ROWS of one whole row into a Mustafar store whose row another kernel computes (fusion_cuda.h):
// places the row in the pool as set_rows would and launches the compressions that make room, leaving
// the row and its slot-table entry to that kernel (`out`, with yes). no: nothing changed, the node is
// not one whole row of a store and runs on its own; failed: a launch error (logged).
enum class Placement { yes, no, failed };
Placement place_store_row(const ggml_tensor* node, KvPathContext& ctx, StoreRow& out);
bool copy(const ggml_tensor* node, cudaStream_t stream);
bool flash_attn_ext(const ggml_tensor* node, KvPathContext& ctx);
// The deferred stores' compressions, several stores a launch (compress_jobs), then what else they queued.
bool flush_deferred(KvPathContext& ctx);
}  // namespace mustafar::cuda
