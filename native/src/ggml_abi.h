// Our own declarations of the parts of the ggml ABI that this backend uses.
// They match ggml 0.18.0 (llama.cpp 815a2a59, as shipped by LLamaSharp.Backend.Cpu 0.30.0;
// the same headers are in ggml-org/ggml at commit 06ca9761). Every number here is checked at
// load time by abi_check.cpp against the running libggml-base (version string, op and type names,
// struct size probes), so a mismatched library is refused with a clear message instead of
// corrupting memory.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

// ---- ggml.h ---------------------------------------------------------------------------------
constexpr int kGgmlMaxDims = 4;
constexpr int kGgmlMaxSrc = 10;
constexpr int kGgmlMaxOpParams = 64;
constexpr int kGgmlMaxName = 64;

constexpr const char* kGgmlExpectedVersion = "0.18.0";
constexpr int kGgmlBackendApiVersion = 2;

enum ggml_type : int {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_IQ4_XS = 23,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_BF16 = 30,
};

// Only the ops this backend looks at; the values are verified by name at load.
enum ggml_op : int {
    GGML_OP_NONE = 0,
    GGML_OP_DUP = 1,
    GGML_OP_ADD = 2,
    GGML_OP_SUB = 6,
    GGML_OP_MUL = 7,
    GGML_OP_DIV = 8,
    GGML_OP_RMS_NORM = 25,
    GGML_OP_MUL_MAT = 29,
    GGML_OP_SCALE = 32,
    GGML_OP_CPY = 34,
    GGML_OP_CONT = 35,
    GGML_OP_RESHAPE = 36,
    GGML_OP_VIEW = 37,
    GGML_OP_PERMUTE = 38,
    GGML_OP_TRANSPOSE = 39,
    GGML_OP_GET_ROWS = 40,
    GGML_OP_SET_ROWS = 42,
    GGML_OP_ROPE = 48,
    GGML_OP_FLASH_ATTN_EXT = 74,
    GGML_OP_UNARY = 91,
    GGML_OP_GLU = 100,
};

// op_params[0] of UNARY and GLU nodes; verified by name at load.
constexpr int32_t kGgmlUnaryOpSilu = 10;
constexpr int32_t kGgmlGluOpSwiglu = 2;
constexpr int kGgmlRopeTypeNeox = 2;
// ggml_tensor::flags: the graph's caller reads the tensor after the computation.
constexpr int32_t kGgmlTensorFlagOutput = 2;

enum ggml_status : int {
    GGML_STATUS_ALLOC_FAILED = -2,
    GGML_STATUS_FAILED = -1,
    GGML_STATUS_SUCCESS = 0,
    GGML_STATUS_ABORTED = 1,
};

struct ggml_backend_buffer;
struct ggml_context;
struct ggml_cgraph;

struct ggml_tensor {
    ggml_type type;
    ggml_backend_buffer* buffer;
    int64_t ne[kGgmlMaxDims];
    size_t nb[kGgmlMaxDims];
    ggml_op op;
    int32_t op_params[kGgmlMaxOpParams / sizeof(int32_t)];
    int32_t flags;
    ggml_tensor* src[kGgmlMaxSrc];
    ggml_tensor* view_src;
    size_t view_offs;
    void* data;
    char name[kGgmlMaxName];
    void* extra;
    char padding[8];
};
// ggml.h exports GGML_TENSOR_SIZE; 0.18.0 on x86-64 has 336 bytes.
constexpr size_t kGgmlTensorSize = 336;
static_assert(sizeof(ggml_tensor) == kGgmlTensorSize, "ggml_tensor layout differs from ggml 0.18.0");

enum ggml_log_level : int {
    GGML_LOG_LEVEL_NONE = 0,
    GGML_LOG_LEVEL_DEBUG = 1,
    GGML_LOG_LEVEL_INFO = 2,
    GGML_LOG_LEVEL_WARN = 3,
    GGML_LOG_LEVEL_ERROR = 4,
};

typedef uint8_t ggml_guid[16];
typedef ggml_guid* ggml_guid_t;

const char* ggml_version(void);
const char* ggml_commit(void);
const char* ggml_op_name(ggml_op op);
const char* ggml_type_name(ggml_type type);
size_t ggml_nbytes(const ggml_tensor* tensor);
size_t ggml_tensor_overhead(void);
const char* ggml_unary_op_name(int32_t op);
const char* ggml_glu_op_name(int32_t op);
void ggml_rope_yarn_corr_dims(int n_dims, int n_ctx_orig, float freq_base, float beta_fast, float beta_slow, float dims[2]);
void ggml_log_internal(ggml_log_level level, const char* format, ...);
size_t ggml_type_size(ggml_type type);
bool ggml_is_contiguous(const ggml_tensor* tensor);
bool ggml_are_same_shape(const ggml_tensor* t0, const ggml_tensor* t1);
int ggml_graph_n_nodes(ggml_cgraph* cgraph);
ggml_tensor* ggml_graph_node(ggml_cgraph* cgraph, int i);

// ---- ggml-backend.h / ggml-backend-impl.h ---------------------------------------------------
typedef struct ggml_backend_buffer_type* ggml_backend_buffer_type_t;
typedef struct ggml_backend_buffer* ggml_backend_buffer_t;
typedef struct ggml_backend_event* ggml_backend_event_t;
typedef struct ggml_backend* ggml_backend_t;
typedef void* ggml_backend_graph_plan_t;
typedef struct ggml_backend_reg* ggml_backend_reg_t;
typedef struct ggml_backend_device* ggml_backend_dev_t;

enum ggml_backend_buffer_usage : int {
    GGML_BACKEND_BUFFER_USAGE_ANY = 0,
    GGML_BACKEND_BUFFER_USAGE_WEIGHTS = 1,
    GGML_BACKEND_BUFFER_USAGE_COMPUTE = 2,
};

enum ggml_backend_dev_type : int {
    GGML_BACKEND_DEVICE_TYPE_CPU,
    GGML_BACKEND_DEVICE_TYPE_GPU,
    GGML_BACKEND_DEVICE_TYPE_IGPU,
    GGML_BACKEND_DEVICE_TYPE_ACCEL,
    GGML_BACKEND_DEVICE_TYPE_META,
};

struct ggml_backend_dev_caps {
    bool async;
    bool host_buffer;
    bool buffer_from_host_ptr;
    bool events;
};

struct ggml_backend_dev_props {
    const char* name;
    const char* description;
    size_t memory_free;
    size_t memory_total;
    ggml_backend_dev_type type;
    const char* device_id;
    ggml_backend_dev_caps caps;
};

struct ggml_backend_buffer_type_i {
    const char* (*get_name)(ggml_backend_buffer_type_t buft);
    ggml_backend_buffer_t (*alloc_buffer)(ggml_backend_buffer_type_t buft, size_t size);
    size_t (*get_alignment)(ggml_backend_buffer_type_t buft);
    size_t (*get_max_size)(ggml_backend_buffer_type_t buft);
    size_t (*get_alloc_size)(ggml_backend_buffer_type_t buft, const ggml_tensor* tensor);
    bool (*is_host)(ggml_backend_buffer_type_t buft);
};

struct ggml_backend_buffer_type {
    ggml_backend_buffer_type_i iface;
    ggml_backend_dev_t device;
    void* context;
};

struct ggml_backend_buffer_i {
    void (*free_buffer)(ggml_backend_buffer_t buffer);
    void* (*get_base)(ggml_backend_buffer_t buffer);
    ggml_status (*init_tensor)(ggml_backend_buffer_t buffer, ggml_tensor* tensor);
    void (*memset_tensor)(ggml_backend_buffer_t buffer, ggml_tensor* tensor, uint8_t value, size_t offset, size_t size);
    void (*set_tensor)(ggml_backend_buffer_t buffer, ggml_tensor* tensor, const void* data, size_t offset, size_t size);
    void (*get_tensor)(ggml_backend_buffer_t buffer, const ggml_tensor* tensor, void* data, size_t offset, size_t size);
    void (*set_tensor_2d)(ggml_backend_buffer_t buffer, ggml_tensor* tensor, const void* data, size_t offset, size_t size,
                          size_t n_copies, size_t stride_tensor, size_t stride_data);
    void (*get_tensor_2d)(ggml_backend_buffer_t buffer, const ggml_tensor* tensor, void* data, size_t offset, size_t size,
                          size_t n_copies, size_t stride_tensor, size_t stride_data);
    bool (*cpy_tensor)(ggml_backend_buffer_t buffer, const ggml_tensor* src, ggml_tensor* dst);
    void (*clear)(ggml_backend_buffer_t buffer, uint8_t value);
    void (*reset)(ggml_backend_buffer_t buffer);
};

struct ggml_backend_buffer {
    ggml_backend_buffer_i iface;
    ggml_backend_buffer_type_t buft;
    void* context;
    size_t size;
    ggml_backend_buffer_usage usage;
};

ggml_backend_buffer_t ggml_backend_buffer_init(ggml_backend_buffer_type_t buft, ggml_backend_buffer_i iface, void* context,
                                               size_t size);

struct ggml_backend_i {
    const char* (*get_name)(ggml_backend_t backend);
    void (*free)(ggml_backend_t backend);
    void (*set_tensor_async)(ggml_backend_t backend, ggml_tensor* tensor, const void* data, size_t offset, size_t size);
    void (*get_tensor_async)(ggml_backend_t backend, const ggml_tensor* tensor, void* data, size_t offset, size_t size);
    void (*set_tensor_2d_async)(ggml_backend_t backend, ggml_tensor* tensor, const void* data, size_t offset, size_t size,
                                size_t n_copies, size_t stride_tensor, size_t stride_data);
    void (*get_tensor_2d_async)(ggml_backend_t backend, const ggml_tensor* tensor, void* data, size_t offset, size_t size,
                                size_t n_copies, size_t stride_tensor, size_t stride_data);
    bool (*cpy_tensor_async)(ggml_backend_t backend_src, ggml_backend_t backend_dst, const ggml_tensor* src, ggml_tensor* dst);
    void (*synchronize)(ggml_backend_t backend);
    ggml_backend_graph_plan_t (*graph_plan_create)(ggml_backend_t backend, const ggml_cgraph* cgraph);
    void (*graph_plan_free)(ggml_backend_t backend, ggml_backend_graph_plan_t plan);
    void (*graph_plan_update)(ggml_backend_t backend, ggml_backend_graph_plan_t plan, const ggml_cgraph* cgraph);
    ggml_status (*graph_plan_compute)(ggml_backend_t backend, ggml_backend_graph_plan_t plan);
    ggml_status (*graph_compute)(ggml_backend_t backend, ggml_cgraph* cgraph);
    void (*event_record)(ggml_backend_t backend, ggml_backend_event_t event);
    void (*event_wait)(ggml_backend_t backend, ggml_backend_event_t event);
    void (*graph_optimize)(ggml_backend_t backend, ggml_cgraph* cgraph);
};

struct ggml_backend {
    ggml_guid_t guid;
    ggml_backend_i iface;
    ggml_backend_dev_t device;
    void* context;
};

struct ggml_backend_device_i {
    const char* (*get_name)(ggml_backend_dev_t dev);
    const char* (*get_description)(ggml_backend_dev_t dev);
    void (*get_memory)(ggml_backend_dev_t dev, size_t* free, size_t* total);
    ggml_backend_dev_type (*get_type)(ggml_backend_dev_t dev);
    void (*get_props)(ggml_backend_dev_t dev, ggml_backend_dev_props* props);
    ggml_backend_t (*init_backend)(ggml_backend_dev_t dev, const char* params);
    ggml_backend_buffer_type_t (*get_buffer_type)(ggml_backend_dev_t dev);
    ggml_backend_buffer_type_t (*get_host_buffer_type)(ggml_backend_dev_t dev);
    ggml_backend_buffer_t (*buffer_from_host_ptr)(ggml_backend_dev_t dev, void* ptr, size_t size, size_t max_tensor_size);
    bool (*supports_op)(ggml_backend_dev_t dev, const ggml_tensor* op);
    bool (*supports_buft)(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft);
    bool (*offload_op)(ggml_backend_dev_t dev, const ggml_tensor* op);
    ggml_backend_event_t (*event_new)(ggml_backend_dev_t dev);
    void (*event_free)(ggml_backend_dev_t dev, ggml_backend_event_t event);
    void (*event_synchronize)(ggml_backend_dev_t dev, ggml_backend_event_t event);
};

struct ggml_backend_device {
    ggml_backend_device_i iface;
    ggml_backend_reg_t reg;
    void* context;
};

struct ggml_backend_reg_i {
    const char* (*get_name)(ggml_backend_reg_t reg);
    size_t (*get_device_count)(ggml_backend_reg_t reg);
    ggml_backend_dev_t (*get_device)(ggml_backend_reg_t reg, size_t index);
    void* (*get_proc_address)(ggml_backend_reg_t reg, const char* name);
};

struct ggml_backend_reg {
    int api_version;
    ggml_backend_reg_i iface;
    void* context;
};

}  // extern "C"

namespace mustafar {
inline ggml_tensor* root_of(const ggml_tensor* t) {
    return t->view_src ? t->view_src : const_cast<ggml_tensor*>(t);
}
// The float types the KV path reads and writes.
inline bool is_float_type(ggml_type t) { return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }
inline bool is_view_op(ggml_op op) {
    return op == GGML_OP_NONE || op == GGML_OP_RESHAPE || op == GGML_OP_VIEW || op == GGML_OP_PERMUTE ||
           op == GGML_OP_TRANSPOSE;
}
}  // namespace mustafar
