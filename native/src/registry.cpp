#include "registry.h"

#include <algorithm>
#include <cstring>

#include "abi_check.h"
#include "backend.h"
#include "buffer.h"
#include "device.h"

namespace mustafar {
namespace {

const char* reg_get_name(ggml_backend_reg_t) { return kDeviceName; }
size_t reg_get_device_count(ggml_backend_reg_t) { return 1; }
ggml_backend_dev_t reg_get_device(ggml_backend_reg_t, size_t index) {
    return index == 0 ? &registry().device : nullptr;
}

void* reg_get_proc_address(ggml_backend_reg_t, const char* name) {
    if (std::strcmp(name, "ggml_backend_set_n_threads") == 0) return reinterpret_cast<void*>(&set_n_threads);
    if (std::strcmp(name, "mustafar_get_kv_stats") == 0) return reinterpret_cast<void*>(&mustafar_get_kv_stats);
    return nullptr;
}

}  // namespace

Registry& registry() {
    static Registry* instance = [] {
        auto* r = new Registry();  // lives as long as the process: ggml keeps pointers into it
        r->reg.api_version = kGgmlBackendApiVersion;
        r->reg.iface = {reg_get_name, reg_get_device_count, reg_get_device, reg_get_proc_address};
        r->reg.context = nullptr;
        init_device(r->device, &r->reg);
        init_buffer_type(r->buffer_type, &r->device);
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

mustafar_kv_stats Registry::kv_stats() {
    mustafar_kv_stats s{};
    std::lock_guard<std::mutex> lock(buffers_mutex);
    for (const Buffer* b : buffers) b->add_kv_stats(s.kv_bytes, s.kv_dense_bytes, s.kv_tensors, s.kv_elements);
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

MUSTAFAR_API const char* mustafar_flavour(void) { return "cpu"; }

MUSTAFAR_API const char* mustafar_abi_error(void) { return mustafar::abi_mismatch().c_str(); }

MUSTAFAR_API void mustafar_get_kv_stats(mustafar_kv_stats* out) {
    if (out != nullptr) *out = mustafar::registry().kv_stats();
}

}  // extern "C"
