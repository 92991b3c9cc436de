#include <unistd.h>

#include <algorithm>
#include <thread>

#include "../buffer.h"
#include "../flavour.h"
#include "../kv/window.h"
#include "../registry.h"
#include "../thread_pool.h"
#include "kernels.h"

namespace mustafar::flavour {
namespace {

class CpuExecutor final : public Executor {
public:
    explicit CpuExecutor(int n_threads) : pool_(n_threads) {}

    ggml_status run(ggml_cgraph* graph, int index) override {
        ggml_tensor* node = ggml_graph_node(graph, index);
        switch (node->op) {
            case GGML_OP_SET_ROWS: cpu::set_rows(node, pool_); break;
            case GGML_OP_CPY:
            case GGML_OP_DUP:
            case GGML_OP_CONT: cpu::copy(node, pool_); break;
            case GGML_OP_FLASH_ATTN_EXT:
                cpu::flash_attn_ext(node, pool_);
                kv::retire_out_of_window(node, node->src[3] ? static_cast<const char*>(node->src[3]->data) : nullptr, retired_);
                break;
            default: return GGML_STATUS_FAILED;
        }
        return GGML_STATUS_SUCCESS;
    }

    void set_threads(int n_threads) override { pool_.resize(n_threads); }
    bool finish() override {
        retired_.clear();
        return true;
    }

private:
    ThreadPool pool_;
    kv::RetireCache retired_;
};

}  // namespace

const char* name() { return "cpu"; }

const char* description() { return "Mustafar KV cache backend (CPU flavour)"; }

void memory(size_t* free, size_t* total) {
    // The CPU flavour allocates from host memory.
    const long page = sysconf(_SC_PAGESIZE);
    *total = size_t(sysconf(_SC_PHYS_PAGES)) * size_t(page);
    *free = size_t(sysconf(_SC_AVPHYS_PAGES)) * size_t(page);
}

void init_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) { init_host_buffer_type(buft, device); }

bool init_host_side_buffer_type(ggml_backend_buffer_type&, ggml_backend_dev_t) { return false; }

bool supports_kv_type(ggml_type type) { return is_float_type(type); }

bool make_store_memory(uint8_t*, int64_t, int64_t, const kv::StoreConfig&, std::unique_ptr<kv::StoreMemory>& out) {
    out.reset();
    return true;
}

bool supports_compute_op(const ggml_tensor*) { return false; }

Executor* create_executor(int n_threads) {
    if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
    return new CpuExecutor(n_threads);
}

}  // namespace mustafar::flavour
