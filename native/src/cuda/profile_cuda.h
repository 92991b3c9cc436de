// Timing of the CUDA executor, on when MUSTAFAR_PROFILE is set in the environment. Per graph (decode
// graphs, with fewer than 32 query rows per attention, apart from prompt graphs): the host time to
// issue it, the wait in finish() (none where graph_compute returns before the graph has run), and the
// time since the previous graph returned (llama.cpp's own work, the caller's sampling, other backends)
// with the share of it spent in our buffers' host-device copies (get/set_tensor) and in synchronize()
// (waiting for the GPU), and how long after the return the first such wait came.
// MUSTAFAR_PROFILE=graphs stops there and leaves launches, CUDA graphs and the asynchronous return as
// they are; any other value also times each node with events around it (GPU time, and the host time
// of its launch), which turns graph replay off and waits in finish(). Logged (cumulative) after every
// 64 graphs of a kind; costs nothing when off.
#pragma once
#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "../ggml_abi.h"

namespace mustafar::cuda {

class OpProfile {
public:
    enum class Level { off, graphs, nodes };
    static Level from_env();  // MUSTAFAR_PROFILE: unset, empty or 0 off, "graphs" graphs, else nodes

    explicit OpProfile(Level level) : level_(level) {}
    ~OpProfile();
    OpProfile(const OpProfile&) = delete;
    OpProfile& operator=(const OpProfile&) = delete;

    bool enabled() const { return level_ != Level::off; }
    bool per_node() const { return level_ == Level::nodes; }
    void graph_begin(const ggml_cgraph* graph);  // at its first node, before anything of it runs
    // `fused`: the label of several nodes run as one (fusion_cuda.h), or null. Per node only.
    void begin(const ggml_tensor* node, cudaStream_t stream, const char* fused = nullptr);
    void end(cudaStream_t stream);
    void before_finish();
    void after_finish();  // graph_compute returns (per node: the stream is idle, the events can be read)
    // Around synchronize() (ggml's call that waits for the queued graphs), between graphs.
    void wait_begin();
    void wait_end();

private:
    using Clock = std::chrono::steady_clock;
    struct Pending {
        std::string key;
        cudaEvent_t start, stop;
        double host_us;
    };
    struct Total {
        long count = 0;
        double gpu_ms = 0, host_ms = 0;
    };
    // Copy totals (registry) at one moment.
    struct CopyMark {
        uint64_t up_n = 0, up_bytes = 0, up_ns = 0, down_n = 0, down_bytes = 0, down_ns = 0;
        static CopyMark now();
        // Adds the copies made between `from` and `to`.
        void add_between(const CopyMark& from, const CopyMark& to);
    };
    struct Graphs {
        long count = 0, gaps = 0;
        double issue_ms = 0, wait_ms = 0, gap_ms = 0;
        CopyMark gap_copies;  // summed over the gaps
        long gap_waits = 0, gaps_waited = 0;  // synchronize() calls in the gaps; gaps with one
        double gap_wait_ms = 0, before_wait_ms = 0;  // their time; from a graph's return to its gap's first one
    };
    cudaEvent_t event();
    void log(const std::string& kind);

    Level level_;
    std::vector<cudaEvent_t> free_events_;
    std::vector<Pending> pending_;
    Clock::time_point node_start_, graph_start_, finish_start_, graph_end_;
    CopyMark end_mark_;  // at the previous graph's end
    bool in_graph_ = false, ended_one_ = false;
    // The current gap's waits (synchronize()), added to its graph kind at the next graph_begin.
    long gap_waits_ = 0;
    double gap_wait_ms_ = 0, before_wait_ms_ = -1;
    Clock::time_point wait_start_;
    std::string kind_;  // of the current graph: "decode", "prompt" or "other" (no attention)
    std::unordered_map<std::string, Total> totals_;
    std::unordered_map<std::string, Graphs> graphs_;
};

}  // namespace mustafar::cuda
