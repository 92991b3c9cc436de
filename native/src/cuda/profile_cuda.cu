#include "profile_cuda.h"

#include <algorithm>
#include <utility>

#include "../kv/view.h"
#include "../registry.h"
#include "cuda_check.h"

namespace mustafar::cuda {
namespace {

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string key_of(const ggml_tensor* node) {
    std::string key = ggml_op_name(node->op);
    if (node->op == GGML_OP_FLASH_ATTN_EXT) key += kv::store_of(node->src[1]) ? " (store)" : " (dense)";
    if (node->op == GGML_OP_SET_ROWS) key += kv::store_of(node) ? " (store)" : " (dense)";
    return key;
}

}  // namespace

cudaEvent_t OpProfile::event() {
    if (!free_events_.empty()) {
        cudaEvent_t e = free_events_.back();
        free_events_.pop_back();
        return e;
    }
    cudaEvent_t e = nullptr;
    MUSTAFAR_CUDA_OK(cudaEventCreate(&e));
    return e;
}

void OpProfile::begin(const ggml_tensor* node, cudaStream_t stream, const char* fused) {
    node_start_ = Clock::now();
    if (!in_graph_) {
        graph_start_ = node_start_;
        gap_ms_ = ended_one_ ? ms_between(graph_end_, graph_start_) : 0.0;
        in_graph_ = true;
        graph_rows_ = 0;
    }
    if (node->op == GGML_OP_FLASH_ATTN_EXT) graph_rows_ = std::max(graph_rows_, node->src[0]->ne[1]);
    pending_.push_back({fused != nullptr ? std::string(fused) : key_of(node), event(), event(), 0.0});
    MUSTAFAR_CUDA_OK(cudaEventRecord(pending_.back().start, stream));
}

void OpProfile::end(cudaStream_t stream) {
    MUSTAFAR_CUDA_OK(cudaEventRecord(pending_.back().stop, stream));
    pending_.back().host_us = ms_between(node_start_, Clock::now()) * 1e3;
}

void OpProfile::before_finish() { finish_start_ = Clock::now(); }

void OpProfile::after_finish() {
    const std::string kind = graph_rows_ >= 32 ? "prompt" : "decode";
    if (in_graph_) {
        Graphs& g = graphs_[kind];
        ++g.count;
        g.issue_ms += ms_between(graph_start_, finish_start_);
        g.wait_ms += ms_between(finish_start_, Clock::now());
        g.gap_ms += gap_ms_;
    }
    for (const Pending& p : pending_) {
        float ms = 0;
        MUSTAFAR_CUDA_OK(cudaEventElapsedTime(&ms, p.start, p.stop));
        Total& t = totals_[kind + ": " + p.key];
        ++t.count;
        t.gpu_ms += ms;
        t.host_ms += p.host_us * 1e-3;
        free_events_.push_back(p.start);
        free_events_.push_back(p.stop);
    }
    pending_.clear();
    in_graph_ = false;
    graph_end_ = Clock::now();
    ended_one_ = true;
    if (graphs_[kind].count % 64 == 0) log(kind);
}

// Process exit may come before the executor is freed, so the tables are logged as graphs complete.
void OpProfile::log(const std::string& kind) {
    const Graphs& g = graphs_[kind];
    if (g.count == 0) return;
    ggml_log_internal(GGML_LOG_LEVEL_WARN, "%s profile: %ld %s graphs, host issue %.3f ms, finish wait %.3f ms, %.3f ms since the previous graph per graph\n",
                      kDeviceName, g.count, kind.c_str(), g.issue_ms / g.count, g.wait_ms / g.count, g.gap_ms / g.count);
    std::vector<std::pair<std::string, Total>> rows;
    for (const auto& row : totals_)
        if (row.first.compare(0, kind.size() + 1, kind + ":") == 0) rows.push_back(row);
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.gpu_ms > b.second.gpu_ms; });
    for (const auto& [key, t] : rows)
        ggml_log_internal(GGML_LOG_LEVEL_WARN, "%s profile: %-32s %9ld nodes  per graph: GPU %8.3f ms  host %8.3f ms\n", kDeviceName,
                          key.c_str(), t.count, t.gpu_ms / g.count, t.host_ms / g.count);
}

OpProfile::~OpProfile() {
    for (cudaEvent_t e : free_events_) MUSTAFAR_CUDA_OK(cudaEventDestroy(e));
}

}  // namespace mustafar::cuda
