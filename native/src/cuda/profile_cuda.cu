#include "profile_cuda.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
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

// A graph's first attention decides: fewer than 32 query rows is a decode step.
std::string kind_of(const ggml_cgraph* graph) {
    const int n = ggml_graph_n_nodes(const_cast<ggml_cgraph*>(graph));
    for (int i = 0; i < n; ++i) {
        const ggml_tensor* node = ggml_graph_node(const_cast<ggml_cgraph*>(graph), i);
        if (node->op == GGML_OP_FLASH_ATTN_EXT) return node->src[0]->ne[1] >= 32 ? "prompt" : "decode";
    }
    return "other";
}

}  // namespace

OpProfile::Level OpProfile::from_env() {
    const char* env = std::getenv("MUSTAFAR_PROFILE");
    if (env == nullptr || *env == '\0' || std::strcmp(env, "0") == 0) return Level::off;
    return std::strcmp(env, "graphs") == 0 ? Level::graphs : Level::nodes;
}

OpProfile::CopyMark OpProfile::CopyMark::now() {
    const Registry& r = registry();
    return {r.uploads.count.load(), r.uploads.bytes.load(), r.uploads.ns.load(),
            r.downloads.count.load(), r.downloads.bytes.load(), r.downloads.ns.load()};
}

void OpProfile::CopyMark::add_between(const CopyMark& from, const CopyMark& to) {
    up_n += to.up_n - from.up_n;
    up_bytes += to.up_bytes - from.up_bytes;
    up_ns += to.up_ns - from.up_ns;
    down_n += to.down_n - from.down_n;
    down_bytes += to.down_bytes - from.down_bytes;
    down_ns += to.down_ns - from.down_ns;
}

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

void OpProfile::graph_begin(const ggml_cgraph* graph) {
    graph_start_ = Clock::now();
    in_graph_ = true;
    kind_ = kind_of(graph);
    if (!ended_one_) return;
    Graphs& g = graphs_[kind_];
    ++g.gaps;
    g.gap_ms += ms_between(graph_end_, graph_start_);
    g.gap_copies.add_between(end_mark_, CopyMark::now());
    g.gap_waits += gap_waits_;
    g.gap_wait_ms += gap_wait_ms_;
    if (before_wait_ms_ >= 0) {
        ++g.gaps_waited;
        g.before_wait_ms += before_wait_ms_;
    }
}

void OpProfile::wait_begin() { wait_start_ = Clock::now(); }

void OpProfile::wait_end() {
    if (in_graph_ || !ended_one_) return;  // only the waits between graphs
    ++gap_waits_;
    gap_wait_ms_ += ms_between(wait_start_, Clock::now());
    if (before_wait_ms_ < 0) before_wait_ms_ = ms_between(graph_end_, wait_start_);
}

void OpProfile::begin(const ggml_tensor* node, cudaStream_t stream, const char* fused) {
    node_start_ = Clock::now();
    pending_.push_back({fused != nullptr ? std::string(fused) : key_of(node), event(), event(), 0.0});
    MUSTAFAR_CUDA_OK(cudaEventRecord(pending_.back().start, stream));
}

void OpProfile::end(cudaStream_t stream) {
    MUSTAFAR_CUDA_OK(cudaEventRecord(pending_.back().stop, stream));
    pending_.back().host_us = ms_between(node_start_, Clock::now()) * 1e3;
}

void OpProfile::before_finish() { finish_start_ = Clock::now(); }

void OpProfile::after_finish() {
    if (in_graph_) {
        Graphs& g = graphs_[kind_];
        ++g.count;
        g.issue_ms += ms_between(graph_start_, finish_start_);
        g.wait_ms += ms_between(finish_start_, Clock::now());
    }
    for (const Pending& p : pending_) {
        float ms = 0;
        MUSTAFAR_CUDA_OK(cudaEventElapsedTime(&ms, p.start, p.stop));
        Total& t = totals_[kind_ + ": " + p.key];
        ++t.count;
        t.gpu_ms += ms;
        t.host_ms += p.host_us * 1e-3;
        free_events_.push_back(p.start);
        free_events_.push_back(p.stop);
    }
    pending_.clear();
    graph_end_ = Clock::now();
    end_mark_ = CopyMark::now();
    ended_one_ = true;
    gap_waits_ = 0;
    gap_wait_ms_ = 0;
    before_wait_ms_ = -1;
    // Prompt graphs are few and long: logged more often so that a short prompt still gets its account.
    if (in_graph_ && graphs_[kind_].count % (kind_ == "prompt" ? 8 : 64) == 0) log(kind_);
    in_graph_ = false;
}

// Process exit may come before the executor is freed, so the tables are logged as graphs complete.
void OpProfile::log(const std::string& kind) {
    const Graphs& g = graphs_[kind];
    if (g.count == 0) return;
    const double gaps = double(std::max(g.gaps, 1L));
    const CopyMark& c = g.gap_copies;
    ggml_log_internal(GGML_LOG_LEVEL_WARN,
                      "%s profile: %ld %s graphs, per graph: host issue %.3f ms, finish wait %.3f ms; since the previous graph %.3f ms, "
                      "of which uploads %.1f (%.1f KB) %.3f ms, downloads %.1f (%.1f KB) %.3f ms, waits for the GPU %.1f %.3f ms "
                      "(the first %.3f ms after the return)\n",
                      kDeviceName, g.count, kind.c_str(), g.issue_ms / g.count, g.wait_ms / g.count, g.gap_ms / gaps, c.up_n / gaps,
                      c.up_bytes / gaps / 1024.0, c.up_ns / gaps * 1e-6, c.down_n / gaps, c.down_bytes / gaps / 1024.0, c.down_ns / gaps * 1e-6,
                      g.gap_waits / gaps, g.gap_wait_ms / gaps, g.before_wait_ms / double(std::max(g.gaps_waited, 1L)));
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
