#include "registry.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "abi_check.h"
#include "backend.h"
#include "buffer.h"
#include "device.h"
#include "flavour.h"
#include "kv/record.h"

namespace mustafar {
namespace {

const char* reg_get_name(ggml_backend_reg_t) { return kDeviceName; }
size_t reg_get_device_count(ggml_backend_reg_t) { return 1; }
ggml_backend_dev_t reg_get_device(ggml_backend_reg_t, size_t index) {
    return index == 0 ? &registry().device : nullptr;
}

uint64_t graphs_replayed() { return registry().graphs_replayed.load(); }
uint64_t host_copied_bytes() { return registry().shadows.recorded_bytes(); }

void* reg_get_proc_address(ggml_backend_reg_t, const char* name) {
    if (std::strcmp(name, "ggml_backend_set_n_threads") == 0) return reinterpret_cast<void*>(&set_n_threads);
    if (std::strcmp(name, "mustafar_get_kv_stats") == 0) return reinterpret_cast<void*>(&mustafar_get_kv_stats);
    if (std::strcmp(name, "mustafar_graphs_replayed") == 0) return reinterpret_cast<void*>(&graphs_replayed);
    if (std::strcmp(name, "mustafar_host_copied_bytes") == 0) return reinterpret_cast<void*>(&host_copied_bytes);
    return nullptr;
}

}  // namespace

void HostRanges::add(const void* base, size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    ranges_[reinterpret_cast<uintptr_t>(base)] = size;
}

void HostRanges::remove(const void* base) {
    std::lock_guard<std::mutex> lock(mutex_);
    ranges_.erase(reinterpret_cast<uintptr_t>(base));
}

bool HostRanges::contains(const void* p, size_t size) {
    const auto begin = reinterpret_cast<uintptr_t>(p);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = ranges_.upper_bound(begin);
    if (it == ranges_.begin()) return false;
    --it;
    return begin + size <= it->first + it->second;
}

Registry& registry() {
    static Registry* instance = [] {
        auto* r = new Registry();  // lives as long as the process: ggml keeps pointers into it
        r->reg.api_version = kGgmlBackendApiVersion;
        r->reg.iface = {reg_get_name, reg_get_device_count, reg_get_device, reg_get_proc_address};
        r->reg.context = nullptr;
        init_device(r->device, &r->reg);
        flavour::init_buffer_type(r->buffer_type, &r->device);
        const char* pinned = std::getenv("MUSTAFAR_PINNED_HOST");
        r->has_host_buffer_type = (pinned == nullptr || std::strcmp(pinned, "0") != 0) &&
                                  flavour::init_host_side_buffer_type(r->host_buffer_type, &r->device);
        return r;
    }();
    return *instance;
}

void Registry::add_buffer(const Buffer* b) {
    std::lock_guard<std::mutex> lock(buffers_mutex);
    buffers.push_back(b);
}

void Registry::remove_buffer(const Buffer* b) {
    std::lock_guard<std::mutex> lock(buffers_mutex);
    buffers.erase(std::remove(buffers.begin(), buffers.end(), b), buffers.end());
}

mustafar_kv_stats Registry::kv_stats(int64_t owner) {
    mustafar_kv_stats s{};
    std::lock_guard<std::mutex> lock(buffers_mutex);
    for (const Buffer* b : buffers) b->add_kv_stats(owner, s);
    return s;
}

}  // namespace mustafar

extern "C" {

// Entry point of a dynamically loaded ggml backend (ggml_backend_load).
MUSTAFAR_API ggml_backend_reg_t ggml_backend_init(void) {
    const std::string& mismatch = mustafar::abi_mismatch();
    if (!mismatch.empty()) {
        mustafar::log_error("%s: refusing to register: %s\n", mustafar::kDeviceName, mismatch.c_str());
        return nullptr;
    }
    return &mustafar::registry().reg;
}

MUSTAFAR_API int mustafar_abi_version(void) { return MUSTAFAR_ABI_VERSION; }

MUSTAFAR_API const char* mustafar_flavour(void) { return mustafar::flavour::name(); }

MUSTAFAR_API const char* mustafar_abi_error(void) { return mustafar::abi_mismatch().c_str(); }

MUSTAFAR_API void mustafar_get_kv_stats(int64_t owner, mustafar_kv_stats* out) {
    if (out != nullptr) *out = mustafar::registry().kv_stats(owner);
}

MUSTAFAR_API int mustafar_set_cache_config(const mustafar_cache_config* config) {
    auto& r = mustafar::registry();
    std::lock_guard<std::mutex> lock(r.config_mutex);
    if (config == nullptr) {
        r.cache_config.reset();
        return 0;
    }
    if (config->k_sparsity < 0) {  // dense storage, still tagged with its owner
        r.cache_config = *config;
        return 0;
    }
    const auto fail = [&](const std::string& why) {
        r.last_error = why;
        return 1;
    };
    for (double s : {config->k_sparsity, config->v_sparsity})
        if (!(s >= 0.0 && s <= 0.9)) return fail("sparsity must be within [0, 0.9]; got " + std::to_string(s));
    for (int d : {config->head_dim_k, config->head_dim_v})
        if (d <= 0 || d % 8 != 0 || d > mustafar::kv::kMaxHeadDim)
            return fail("head size " + std::to_string(d) + " is not supported: the Mustafar cache needs a multiple of 8 up to " +
                        std::to_string(mustafar::kv::kMaxHeadDim));
    if (config->local_window < 0) return fail("local window must be >= 0; got " + std::to_string(config->local_window));
    if (config->n_seq_max < 1 || config->n_ubatch < 1) return fail("n_seq_max and n_ubatch must be >= 1");
    r.cache_config = *config;
    return 0;
}

MUSTAFAR_API const char* mustafar_last_error(void) { return mustafar::registry().last_error.c_str(); }

}  // extern "C"
