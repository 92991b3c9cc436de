#include "backend.h"

#include <memory>
#include <new>

#include "buffer.h"
#include "flavour.h"
#include "kv/view.h"
#include "registry.h"

namespace mustafar {
namespace {

using BackendContext = flavour::Executor;

ggml_guid kGuid = {0x6d, 0x75, 0x73, 0x74, 0x61, 0x66, 0x61, 0x72, 0x2d, 0x6b, 0x76, 0x2d, 0x63, 0x70, 0x75, 0x01};

BackendContext* context_of(ggml_backend_t backend) { return static_cast<BackendContext*>(backend->context); }

const char* get_name(ggml_backend_t) { return kDeviceName; }

void free_backend(ggml_backend_t backend) {
    delete context_of(backend);
    delete backend;
}

bool touches_our_buffer(const ggml_tensor* t) {
    const ggml_tensor* root = root_of(t);
    return is_our_buffer(root->buffer) || is_our_buffer(t->buffer);
}

bool supports_flash_attn(const ggml_tensor* op) {
    const ggml_tensor *q = op->src[0], *k = op->src[1], *v = op->src[2], *mask = op->src[3];
    if (op->src[4] != nullptr) return false;  // attention sinks: not used by llama-family models
    if (q->type != GGML_TYPE_F32 || op->type != GGML_TYPE_F32) return false;
    if (!flavour::supports_kv_type(k->type) || !flavour::supports_kv_type(v->type)) return false;
    if (mask != nullptr && mask->type != GGML_TYPE_F16) return false;
    if (q->nb[0] != ggml_type_size(q->type) || k->nb[0] != ggml_type_size(k->type) ||
        v->nb[0] != ggml_type_size(v->type) || op->nb[0] != sizeof(float))
        return false;
    if (k->ne[2] == 0 || q->ne[2] % k->ne[2] != 0 || k->ne[2] != v->ne[2] || k->ne[3] != v->ne[3]) return false;
    if (k->ne[1] != v->ne[1] || q->ne[0] != k->ne[0] || q->ne[3] % k->ne[3] != 0) return false;
    return true;
}

bool supports_set_rows(const ggml_tensor* op) {
    const ggml_tensor *src = op->src[0], *idx = op->src[1];
    return is_float_type(src->type) && is_float_type(op->type) &&
           (idx->type == GGML_TYPE_I32 || idx->type == GGML_TYPE_I64) && src->nb[0] == ggml_type_size(src->type) &&
           op->nb[0] == ggml_type_size(op->type);
}

ggml_status graph_compute(ggml_backend_t backend, ggml_cgraph* graph) {
    BackendContext* executor = context_of(backend);
    const int n = ggml_graph_n_nodes(graph);
    for (int i = 0; i < n; ++i) {
        ggml_tensor* node = ggml_graph_node(graph, i);
        if (is_view_op(node->op)) continue;
        if (executor->run(graph, i) != GGML_STATUS_SUCCESS) {
            log_error("%s: op %s (node %s) failed on this backend\n", kDeviceName, ggml_op_name(node->op), node->name);
            executor->finish();  // the executor's per-graph state ends here too
            return GGML_STATUS_FAILED;
        }
    }
    return executor->finish() ? GGML_STATUS_SUCCESS : GGML_STATUS_FAILED;
}

void synchronize(ggml_backend_t backend) { context_of(backend)->synchronize(); }

const ggml_backend_i kBackendInterface = {
    /* get_name            */ get_name,
    /* free                */ free_backend,
    /* set_tensor_async    */ nullptr,
    /* get_tensor_async    */ nullptr,
    /* set_tensor_2d_async */ nullptr,
    /* get_tensor_2d_async */ nullptr,
    /* cpy_tensor_async    */ nullptr,
    /* synchronize         */ synchronize,
    /* graph_plan_create   */ nullptr,
    /* graph_plan_free     */ nullptr,
    /* graph_plan_update   */ nullptr,
    /* graph_plan_compute  */ nullptr,
    /* graph_compute       */ graph_compute,
    /* event_record        */ nullptr,
    /* event_wait          */ nullptr,
    /* graph_optimize      */ nullptr,
};

}  // namespace

bool supports_op(const ggml_tensor* op) {
    switch (op->op) {
        case GGML_OP_NONE:
        case GGML_OP_RESHAPE:
        case GGML_OP_VIEW:
        case GGML_OP_PERMUTE:
        case GGML_OP_TRANSPOSE:
            // Views cost nothing anywhere; the CPU flavour claims only those over our memory so that
            // the scheduler keeps the rest of the graph on the CPU backend.
            return touches_our_buffer(op) || flavour::supports_compute_op(op);
        case GGML_OP_CPY:
        case GGML_OP_DUP:
        case GGML_OP_CONT:
            // A store's bytes are not in ggml's layout; only attention and cache writes read them.
            if (kv::store_of(op) || kv::store_of(op->src[0])) return false;
            return is_float_type(op->src[0]->type) && is_float_type(op->type) &&
                   (touches_our_buffer(op) || touches_our_buffer(op->src[0]) || flavour::supports_compute_op(op));
        case GGML_OP_SET_ROWS: return supports_set_rows(op);
        case GGML_OP_FLASH_ATTN_EXT: return supports_flash_attn(op);
        default:
            // Only cache writes and attention read or write a store's bytes.
            if (kv::store_of(op)) return false;
            for (const ggml_tensor* src : op->src)
                if (src != nullptr && kv::store_of(src)) return false;
            return flavour::supports_compute_op(op);
    }
}

ggml_backend_t create_backend(ggml_backend_dev_t device, int n_threads) {
    std::unique_ptr<BackendContext> ctx(flavour::create_executor(n_threads));
    if (!ctx) return nullptr;
    ggml_backend_t backend = new (std::nothrow) ggml_backend{&kGuid, kBackendInterface, device, ctx.get()};
    if (backend == nullptr) return nullptr;
    ctx.release();
    return backend;
}

void set_n_threads(ggml_backend_t backend, int n_threads) {
    if (backend == nullptr || backend->iface.get_name != get_name) return;
    context_of(backend)->set_threads(n_threads);
}

}  // namespace mustafar
