// Per-op timing of the CUDA executor, on when MUSTAFAR_PROFILE is set in the environment: GPU time
// from events around each node, host time of each run() (launches plus the store's bookkeeping),
// and per graph the host time to issue it, the wait in finish() and the time since the previous graph
// ended (llama.cpp's own work, other backends, uploads), apart for decode graphs (fewer
// than 32 query rows per attention) and prompt graphs. Logged (cumulative) after every 64 graphs of
// a kind; costs nothing when off.
#pragma once
#include <cuda_runtime.h>

#include <chrono>
#include <unordered_map>
#include <string>
#include <vector>

#include "../ggml_abi.h"

namespace mustafar::cuda {

class OpProfile {
public:
    explicit OpProfile(bool enabled) : enabled_(enabled) {}
    ~OpProfile();
    OpProfile(const OpProfile&) = delete;
    OpProfile& operator=(const OpProfile&) = delete;

    bool enabled() const { return enabled_; }
    // `fused`: the label of several nodes run as one (fusion_cuda.h), or null.
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
    cudaEvent_t event();
    void log(const std::string& kind);

    bool enabled_;
    std::vector<cudaEvent_t> free_events_;
    std::vector<Pending> pending_;
    Clock::time_point node_start_, graph_start_, finish_start_, graph_end_;
    bool in_graph_ = false, ended_one_ = false;
    double gap_ms_ = 0;  // from the end of the previous graph to the start of this one
    std::unordered_map<std::string, Total> totals_;
    struct Graphs {
        long count = 0;
        double issue_ms = 0, wait_ms = 0, gap_ms = 0;
    };
    int64_t graph_rows_ = 0;  // most query rows of an attention node in the current graph
    std::unordered_map<std::string, Graphs> graphs_;  // "decode" / "prompt"
};

}  // namespace mustafar::cuda
