// CUDA graphs for the CUDA executor: a decode step issues hundreds of small launches, and llama.cpp
// sends the same ggml graph (the same nodes, shapes and addresses; new inputs uploaded into the same
// buffers) step after step until the cache view grows. The second of two identical graphs is
// captured while it runs; from the third on, one cudaGraphLaunch replaces the launches.
// Graphs that read or write a Mustafar store are never captured: the host decides per step which
// rows to write and compress. By default replay is on only where launches do not overlap (below
// compute capability 9.0, or MUSTAFAR_PDL=0); MUSTAFAR_CUDA_GRAPHS=1 or 0 in the environment decides.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "../ggml_abi.h"

namespace mustafar::cuda {

class GraphReplay {
public:
    enum class Mode { run, capture, replay };

    GraphReplay() = default;
    ~GraphReplay();
    GraphReplay(const GraphReplay&) = delete;
    GraphReplay& operator=(const GraphReplay&) = delete;

    // At the start of a graph: replay launches the recorded graph (done: nothing else to launch);
    // capture has begun capturing `stream`; run leaves it alone.
    Mode begin(ggml_cgraph* graph, cudaStream_t stream);
    // At the end of a captured graph: instantiates and launches it. False when the capture failed, so
    // that none of its work ran: the caller runs the graph again without capture (replay stays off).
    bool end_capture(cudaStream_t stream);
    // A node failed during capture: ends it, nothing of it ran (replay stays off).
    void abandon(cudaStream_t stream);

private:
    static bool eligible(ggml_cgraph* graph);
    static std::vector<uint64_t> key_of(ggml_cgraph* graph);
    void drop();

    std::vector<uint64_t> key_;  // the last graph's nodes
    cudaGraphExec_t exec_ = nullptr;
    bool failed_ = false;
};

}  // namespace mustafar::cuda
