#include "device.h"

#include "backend.h"
#include "buffer.h"
#include "flavour.h"
#include "registry.h"

namespace mustafar {
namespace {

const char* get_name(ggml_backend_dev_t) { return kDeviceName; }

const char* get_description(ggml_backend_dev_t) { return flavour::description(); }

void get_memory(ggml_backend_dev_t, size_t* free, size_t* total) { flavour::memory(free, total); }

// GPU, so that llama.cpp offloads layers (and their KV cache) to us as to any accelerator.
ggml_backend_dev_type get_type(ggml_backend_dev_t) { return GGML_BACKEND_DEVICE_TYPE_GPU; }

void get_props(ggml_backend_dev_t dev, ggml_backend_dev_props* props) {
    props->name = get_name(dev);
    props->description = get_description(dev);
    get_memory(dev, &props->memory_free, &props->memory_total);
    props->type = get_type(dev);
    props->device_id = nullptr;
    props->caps = {false, false, false, false};
}

ggml_backend_t init_backend(ggml_backend_dev_t dev, const char*) { return create_backend(dev, 0); }

ggml_backend_buffer_type_t get_buffer_type(ggml_backend_dev_t) { return &registry().buffer_type; }

// Page-locked memory where the flavour has it: llama.cpp then keeps its graph inputs and outputs there.
ggml_backend_buffer_type_t get_host_buffer_type(ggml_backend_dev_t) {
    Registry& r = registry();
    return r.has_host_buffer_type ? &r.host_buffer_type : nullptr;
}

bool dev_supports_op(ggml_backend_dev_t, const ggml_tensor* op) { return supports_op(op); }

bool supports_buft(ggml_backend_dev_t, ggml_backend_buffer_type_t buft) { return buft == &registry().buffer_type; }

}  // namespace

void init_device(ggml_backend_device& device, ggml_backend_reg_t reg) {
    device.iface = {
        /* get_name             */ get_name,
        /* get_description      */ get_description,
        /* get_memory           */ get_memory,
        /* get_type             */ get_type,
        /* get_props            */ get_props,
        /* init_backend         */ init_backend,
        /* get_buffer_type      */ get_buffer_type,
        /* get_host_buffer_type */ get_host_buffer_type,
        /* buffer_from_host_ptr */ nullptr,
        /* supports_op          */ dev_supports_op,
        /* supports_buft        */ supports_buft,
        /* offload_op           */ nullptr,
        /* event_new            */ nullptr,
        /* event_free           */ nullptr,
        /* event_synchronize    */ nullptr,
    };
    device.reg = reg;
    device.context = nullptr;
}

}  // namespace mustafar
