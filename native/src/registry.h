// The one process-wide object: our ggml registration, its device, and the live buffers whose
// KV cache tensors the statistics API sums.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "../include/mustafar.h"
#include "ggml_abi.h"
#include "shadows.h"

namespace mustafar {

class Buffer;

// Our host buffers (the CUDA flavour's Mustafar_Host). llama.cpp writes them only between our graphs: its
// inputs before a graph, the CPU backend's results in splits of their own. So an upload from one can stand
// as its own host copy while the graph that reads it runs (HostShadows::borrow).
class HostRanges {
public:
    void add(const void* base, size_t size);
    void remove(const void* base);
    bool contains(const void* p, size_t size);

private:
    std::mutex mutex_;
    std::map<uintptr_t, size_t> ranges_;  // base -> size
};

struct Registry {
    ggml_backend_reg reg{};
    ggml_backend_device device{};
    ggml_backend_buffer_type buffer_type{};
    // The device's host buffer type (flavour::init_host_side_buffer_type), when it has one and
    // MUSTAFAR_PINNED_HOST is not 0.
    ggml_backend_buffer_type host_buffer_type{};
    bool has_host_buffer_type = false;

    std::mutex buffers_mutex;
    std::vector<const Buffer*> buffers;

    // The storage that cache tensors allocated from now on get (set before llama.cpp creates a context).
    std::mutex config_mutex;
    std::optional<mustafar_cache_config> cache_config;
    std::string last_error;

    // Host copies of small uploads into device buffers (the CUDA flavour; see shadows.h).
    HostShadows shadows;
    HostRanges host_buffers;
    // Mustafar stores alive in our buffers: only their host bookkeeping reads the copies above, so
    // uploads are copied only while there is one (buffer.h, LiveStore).
    std::atomic<int64_t> live_stores{0};
    // Graphs the CUDA flavour replayed as CUDA graphs (replay_cuda.h); read by the tests through
    // get_proc_address("mustafar_graphs_replayed"); the host copies' bytes by "mustafar_host_copied_bytes".
    std::atomic<uint64_t> graphs_replayed{0};
    // Host-device copies through our buffers' get/set_tensor (the CUDA flavour): count, bytes and host
    // nanoseconds, for the profile's account of the time between graphs (profile_cuda.h).
    struct Copies {
        std::atomic<uint64_t> count{0}, bytes{0}, ns{0};
        void add(uint64_t n_bytes, uint64_t n_ns) {
            count.fetch_add(1, std::memory_order_relaxed);
            bytes.fetch_add(n_bytes, std::memory_order_relaxed);
            ns.fetch_add(n_ns, std::memory_order_relaxed);
        }
    };
    Copies uploads, downloads;

    void add_buffer(const Buffer* b);
    void remove_buffer(const Buffer* b);
    mustafar_kv_stats kv_stats(int64_t owner);
};

Registry& registry();

constexpr const char* kDeviceName = "Mustafar";

template <typename... Args>
void log_error(const char* fmt, Args... args) {
    ggml_log_internal(GGML_LOG_LEVEL_ERROR, fmt, args...);
}

}  // namespace mustafar
