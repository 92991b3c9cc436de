// replay_cuda.h: when a graph is the same as the last one, and capturing and replaying it.
#include "replay_cuda.h"

#include <cstring>

#include "../kv/view.h"
#include "../registry.h"
#include "cuda_check.h"

namespace mustafar::cuda {

GraphReplay::~GraphReplay() { drop(); }

void GraphReplay::drop() {
    if (exec_ != nullptr) MUSTAFAR_CUDA_OK(cudaGraphExecDestroy(exec_));
    exec_ = nullptr;
}

// Only graphs whose work is all on the device and decided by their shapes: no Mustafar store (its
// writes and compressions follow host bookkeeping of the step's rows).
bool GraphReplay::eligible(ggml_cgraph* graph) {
    const int n = ggml_graph_n_nodes(graph);
    for (int i = 0; i < n; ++i) {
        const ggml_tensor* node = ggml_graph_node(graph, i);
        if (kv::store_of(node) != nullptr) return false;
        for (const ggml_tensor* src : node->src)
            if (src != nullptr && kv::store_of(src) != nullptr) return false;
    }
    return n > 0;
}

// Everything a node's launches depend on besides the bytes in its buffers.
std::vector<uint64_t> GraphReplay::key_of(ggml_cgraph* graph) {
    std::vector<uint64_t> key;
    const int n = ggml_graph_n_nodes(graph);
    key.reserve(size_t(n) * 48);
    auto tensor = [&](const ggml_tensor* t) {
        key.push_back(reinterpret_cast<uintptr_t>(t->data));
        key.push_back(uint64_t(t->type));
        for (int d = 0; d < 4; ++d) {
            key.push_back(uint64_t(t->ne[d]));
            key.push_back(uint64_t(t->nb[d]));
        }
    };
    for (int i = 0; i < n; ++i) {
        const ggml_tensor* node = ggml_graph_node(graph, i);
        key.push_back(uint64_t(node->op));
        tensor(node);
        uint64_t params[kGgmlMaxOpParams / sizeof(uint64_t)];
        std::memcpy(params, node->op_params, sizeof(params));
        key.insert(key.end(), std::begin(params), std::end(params));
        for (const ggml_tensor* src : node->src) {
            if (src == nullptr) {
                key.push_back(0);
                continue;
            }
            tensor(src);
        }
    }
    return key;
}

GraphReplay::Mode GraphReplay::begin(ggml_cgraph* graph, cudaStream_t stream) {
    if (failed_ || !eligible(graph)) {
        key_.clear();
        drop();
        return Mode::run;
    }
    std::vector<uint64_t> key = key_of(graph);
    if (key != key_) {  // a new graph (the cache view grew, a prompt): run it as it comes
        key_ = std::move(key);
        drop();
        return Mode::run;
    }
    if (exec_ != nullptr) {
        if (MUSTAFAR_CUDA_OK(cudaGraphLaunch(exec_, stream))) {
            ++registry().graphs_replayed;
            return Mode::replay;
        }
        failed_ = true;
        drop();
        return Mode::run;
    }
    if (!MUSTAFAR_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed))) {
        failed_ = true;
        return Mode::run;
    }
    return Mode::capture;
}

void GraphReplay::abandon(cudaStream_t stream) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream, &graph);  // ends the (failed) capture; its error was logged where it arose
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();
    log_error("%s: a node failed while its graph was captured: graphs are replayed no more\n", kDeviceName);
    failed_ = true;
    drop();
}

bool GraphReplay::end_capture(cudaStream_t stream) {
    cudaGraph_t graph = nullptr;
    const bool captured = MUSTAFAR_CUDA_OK(cudaStreamEndCapture(stream, &graph)) && graph != nullptr;
    bool ok = captured && MUSTAFAR_CUDA_OK(cudaGraphInstantiateWithFlags(&exec_, graph, 0));
    if (graph != nullptr) MUSTAFAR_CUDA_OK(cudaGraphDestroy(graph));
    ok = ok && MUSTAFAR_CUDA_OK(cudaGraphLaunch(exec_, stream));
    if (!ok) {
        cudaGetLastError();  // the capture's error is logged; clear it for the run without capture
        log_error("%s: capturing a CUDA graph failed: graphs are replayed no more\n", kDeviceName);
        failed_ = true;
        drop();
    }
    return ok;
}

}  // namespace mustafar::cuda
