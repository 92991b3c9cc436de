// What differs between the CPU and the CUDA flavour of the backend; exactly one implementation
// (cpu/flavour_cpu.cpp or cuda/flavour_cuda.cu) is compiled into the library.
#pragma once
#include <cstddef>
#include <memory>

#include "ggml_abi.h"
#include "kv/store.h"

namespace mustafar::flavour {

const char* name();         // "cpu" or "cuda"
const char* description();  // the device description llama.cpp prints
void memory(size_t* free, size_t* total);
void init_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device);
// The device's host buffer type, where llama.cpp keeps its host-side buffers (graph inputs, outputs): the
// CUDA flavour's page-locked memory; false where the flavour has none (the CPU flavour).
bool init_host_side_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device);
// Types of K/V and shapes the flavour's attention handles beyond the common checks in backend.cpp.
bool supports_kv_type(ggml_type type);
// The device side of a store whose bytes are at `memory` (out stays null for host memory, the CPU
// flavour); false when it cannot be created (logged).
bool make_store_memory(uint8_t* memory, int64_t n_rows, int64_t n_embd, const kv::StoreConfig& cfg,
                       std::unique_ptr<kv::StoreMemory>& out);
// Ops beyond the KV path (matrix work, norms, RoPE, activations) the flavour computes; the CPU
// flavour leaves them to ggml's CPU backend, the CUDA flavour takes them so that weights move to the GPU.
bool supports_compute_op(const ggml_tensor* op);

// Runs graph nodes; one per backend (stream).
class Executor {
public:
    virtual ~Executor() = default;
    // Node `index` of `graph` (never a view); the CUDA flavour may run later nodes with it (fusion) and
    // then answers their own calls at once.
    virtual ggml_status run(ggml_cgraph* graph, int index) = 0;
    // The graph's end: its work is queued (the CUDA flavour) or done. False when work had to be redone
    // and failed.
    virtual bool finish() { return true; }
    // Returns when every graph given so far has run (ggml's synchronize).
    virtual void synchronize() {}
    virtual void set_threads(int) {}
};

Executor* create_executor(int n_threads);

}  // namespace mustafar::flavour
