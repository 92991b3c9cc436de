// Timing of the CUDA executor, on when MUSTAFAR_PROFILE is set in the environment. Per graph (decode
// graphs, with fewer than 32 query rows per attention, apart from prompt graphs): the host time to
// issue it, the wait in finish(), and the time since the previous graph ended (llama.cpp's own work,
// the caller's sampling, other backends) with the share of it spent in our buffers' host-device
// copies (get/set_tensor). MUSTAFAR_PROFILE=graphs stops there and leaves launches and CUDA graphs as
// they are; any other value also times each node with events around it (GPU time, and the host time
// of its launch), which turns graph replay off. Logged (cumulative) after every 64 graphs of a kind;
// costs nothing when off.
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
    void after_finish();  // the stream is idle: the events can be read

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
    };
    cudaEvent_t event();
    void log(const std::string& kind);

    Level level_;
    std::vector<cudaEvent_t> free_events_;
    std::vector<Pending> pending_;
    Clock::time_point node_start_, graph_start_, finish_start_, graph_end_;
    CopyMark end_mark_;  // at the previous graph's end
    bool in_graph_ = false, ended_one_ = false;
    std::string kind_;  // of the current graph: "decode", "prompt" or "other" (no attention)
    std::unordered_map<std::string, Total> totals_;
    std::unordered_map<std::string, Graphs> graphs_;
};

}  // namespace mustafar::cuda
