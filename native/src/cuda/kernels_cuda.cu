// CUDA kernels of the KV path: SET_ROWS, element-wise copies, and FLASH_ATTN_EXT. Attention goes to
// the flash-decoding kernels (attention_decode.cu) for the shapes they take (f16 cache, D 64/128/256,
// GQA 1/2/4/8, no ALiBi or soft-cap); a plain kernel, one block per query row and head with one
// online softmax in f32, serves every other shape. Over a Mustafar store (store_cuda.h) the cache
// writes go into pool slots the host row table picks, and after attention the host retires the
// rows that left their window (kv/window.h), reading the mask and indices from their host copies.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../kv/view.h"
#include "../kv/window.h"
#include "../registry.h"
#include "attention_decode.h"
#include "cuda_check.h"
#include "flavour_cuda.h"
#include "launch_cuda.h"
#include "store_cuda.h"

namespace mustafar::cuda {
namespace {

struct Shape {
    int64_t ne[4];
    size_t nb[4];
    int type;
};

Shape shape_of(const ggml_tensor* t) {
    Shape s;
    for (int i = 0; i < 4; ++i) {
        s.ne[i] = t->ne[i];
        s.nb[i] = t->nb[i];
    }
    s.type = t->type;
    return s;
}

__device__ float load(int type, const char* p) {
    switch (type) {
        case GGML_TYPE_F16: return __half2float(*reinterpret_cast<const __half*>(p));
        case GGML_TYPE_BF16: return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
        default: return *reinterpret_cast<const float*>(p);
    }
}

__device__ void store(int type, char* p, float v) {
    switch (type) {
        case GGML_TYPE_F16: *reinterpret_cast<__half*>(p) = __float2half_rn(v); break;
        case GGML_TYPE_BF16: *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v); break;
        default: *reinterpret_cast<float*>(p) = v; break;
    }
}

__device__ int elem_size(int type) { return type == GGML_TYPE_F32 ? 4 : 2; }

// A block's row of n values through `put(c, value)`, each thread's loads issued before its stores: as
// far as the compiler knows a store may alias a later load, and a plain loop made each value wait for
// the one before (a decode step's one-row SET_ROWS took 5.8 us on the H200).
constexpr int kRowPer = 8;

template <typename Put>
__device__ void copy_row(int src_type, const char* sp, size_t src_nb0, int64_t n, Put&& put) {
    for (int64_t c0 = 0; c0 < n; c0 += int64_t(kRowPer) * blockDim.x) {
        float v[kRowPer];
#pragma unroll
        for (int j = 0; j < kRowPer; ++j) {
            const int64_t c = c0 + threadIdx.x + int64_t(j) * blockDim.x;
            v[j] = c < n ? load(src_type, sp + c * src_nb0) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < kRowPer; ++j) {
            const int64_t c = c0 + threadIdx.x + int64_t(j) * blockDim.x;
            if (c < n) put(c, v[j]);
        }
    }
}

__global__ void set_rows_kernel(const char* src, Shape s, const char* idx, Shape si, char* dst, Shape sd) {
    start_after_previous();
    const int64_t r = blockIdx.x;  // over rows x ne02 x ne03
    const int64_t i = r % s.ne[1], i02 = (r / s.ne[1]) % s.ne[2], i03 = r / (s.ne[1] * s.ne[2]);
    const char* ip = idx + i * si.nb[0] + (i02 % si.ne[1]) * si.nb[1] + (i03 % si.ne[2]) * si.nb[2];
    // The index is checked when the values are stored, so that its load and theirs are in flight together.
    const int64_t row = si.type == GGML_TYPE_I64 ? *reinterpret_cast<const int64_t*>(ip) : *reinterpret_cast<const int32_t*>(ip);
    const char* sp = src + i * s.nb[1] + i02 * s.nb[2] + i03 * s.nb[3];
    char* dp = dst + row * sd.nb[1] + i02 * sd.nb[2] + i03 * sd.nb[3];
    const bool inside = row >= 0 && row < sd.ne[1];
    copy_row(s.type, sp, s.nb[0], s.ne[0], [&](int64_t c, float v) {
        if (inside) store(sd.type, dp + c * elem_size(sd.type), v);
    });
}

// Entry i of the list (array 0: byte offset of the source row, 1: pool slot, 2: cache row) as f16
// into its pool slot; the slot table learns the row's slot.
__global__ void store_rows_kernel(const char* src, int src_type, size_t src_nb0, RowList list, __half* pool, int64_t row_elems,
                                  int32_t* slot_table) {
    start_after_previous();
    const int i = blockIdx.x;
    const char* sp = src + list.at(0, i);
    const int32_t slot = list.at(1, i);
    __half* dp = pool + size_t(slot) * row_elems;
    copy_row(src_type, sp, src_nb0, row_elems, [&](int64_t c, float v) { dp[c] = __float2half_rn(v); });
    if (threadIdx.x == 0) slot_table[list.at(2, i)] = slot;
}

__device__ size_t offset_of(const Shape& s, int64_t linear) {
    size_t off = 0;
    for (int d = 0; d < 4; ++d) {
        off += size_t(linear % s.ne[d]) * s.nb[d];
        linear /= s.ne[d];
    }
    return off;
}

__global__ void copy_kernel(const char* src, Shape s, char* dst, Shape sd, int64_t n) {
    start_after_previous();
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x)
        store(sd.type, dst + offset_of(sd, k), load(s.type, src + offset_of(s, k)));
}

constexpr int kThreads = 128;
constexpr int kMaxPerThread = 2;  // head sizes up to 256

__device__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
    return total;
}

struct AttnParams {
    Shape q, k, v, mask, dst;
    float scale, max_bias, softcap, m0, m1;
    unsigned n_head_log2;
    int has_mask;
};

// K or V in ggml's layout.
struct DenseOperand {
    const char* base;
    Shape s;
    __device__ float at(int64_t ic, int64_t h, int64_t seq, int64_t d) const {
        return load(s.type, base + d * s.nb[0] + ic * s.nb[1] + h * s.nb[2] + seq * s.nb[3]);
    }
};

// K or V in a Mustafar store (records and slots start at the view's first row): element d of a
// compressed vector is its bitmap bit and, when set, the packed value after the set bits below it.
struct StoreOperand {
    const uint8_t* records;  // row 0 of head 0 (head-major: DeviceStore::head_bytes)
    const int32_t* slot;
    const __half* pool;
    size_t stride, head_bytes;
    int64_t seq_rows, pool_row_elems;
    int D;
    __device__ float at(int64_t ic, int64_t h, int64_t seq, int64_t d) const {
        const int64_t row = ic + seq * seq_rows;
        const int32_t s = slot[row];
        if (s >= 0) return __half2float(pool[size_t(s) * pool_row_elems + h * D + d]);
        const uint8_t* rec = records + size_t(h) * head_bytes + size_t(row) * stride;
        const int byte = int(d >> 3), bit = int(d & 7);
        if (((rec[byte] >> bit) & 1) == 0) return 0.0f;
        int below = __popc(rec[byte] & ((1u << bit) - 1u));
        for (int b = 0; b < byte; ++b) below += __popc(rec[b]);
        const uint8_t* v = rec + D / 8 + 2 * below;  // 2-byte values after a D/8-byte bitmap: byte loads
        return __half2float(__ushort_as_half(uint16_t(v[0] | (v[1] << 8))));
    }
};

template <typename Operand>
__global__ void flash_attn_kernel(const char* q, Operand k, Operand v, const char* mask, char* dst, AttnParams p) {
    start_after_previous();
    __shared__ float scratch[kThreads / 32];
    const int64_t iq1 = blockIdx.x, h = blockIdx.y, iq3 = blockIdx.z;
    const int64_t DK = p.k.ne[0], DV = p.v.ne[0];
    const int64_t hk = h / (p.q.ne[2] / p.k.ne[2]);
    const int64_t ik3 = iq3 / (p.q.ne[3] / p.k.ne[3]);
    const float slope = p.max_bias <= 0.0f ? 1.0f
                        : h < int64_t(p.n_head_log2) ? powf(p.m0, float(h + 1))
                                                     : powf(p.m1, float(2 * (h - p.n_head_log2) + 1));
    float qv[kMaxPerThread], acc[kMaxPerThread];
    for (int j = 0; j < kMaxPerThread; ++j) {
        const int64_t d = threadIdx.x + j * kThreads;
        qv[j] = d < DK ? load(p.q.type, q + d * p.q.nb[0] + iq1 * p.q.nb[1] + h * p.q.nb[2] + iq3 * p.q.nb[3]) : 0.0f;
        acc[j] = 0.0f;
    }
    const char* mrow = p.has_mask ? mask + iq1 * p.mask.nb[1] + (h % p.mask.ne[2]) * p.mask.nb[2] + (iq3 % p.mask.ne[3]) * p.mask.nb[3] : nullptr;
    float m = -INFINITY, sum = 0.0f;
    for (int64_t ic = 0; ic < p.k.ne[1]; ++ic) {
        const float mv = mrow ? slope * __half2float(reinterpret_cast<const __half*>(mrow)[ic]) : 0.0f;
        if (mv == -INFINITY) continue;
        float part = 0.0f;
        for (int j = 0; j < kMaxPerThread; ++j) {
            const int64_t d = threadIdx.x + j * kThreads;
            if (d < DK) part += qv[j] * k.at(ic, hk, ik3, d);
        }
        float s = block_sum(part, scratch) * p.scale;
        if (p.softcap != 0.0f) s = p.softcap * tanhf(s);
        s += mv;
        const float m_new = fmaxf(m, s);
        const float ms = expf(m - m_new), vs = expf(s - m_new);
        m = m_new;
        sum = sum * ms + vs;
        for (int j = 0; j < kMaxPerThread; ++j) {
            const int64_t d = threadIdx.x + j * kThreads;
            if (d < DV) acc[j] = acc[j] * ms + vs * v.at(ic, hk, ik3, d);
        }
    }
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
    for (int j = 0; j < kMaxPerThread; ++j) {
        const int64_t d = threadIdx.x + j * kThreads;
        if (d < DV)
            *reinterpret_cast<float*>(dst + d * 4 + h * p.dst.nb[1] + iq1 * p.dst.nb[2] + iq3 * p.dst.nb[3]) = acc[j] * inv;
    }
}

// Runs fn(bytes) with the bytes of view t on the host: its host copy (shadows.h) or, when there is
// none, a copy read back from the device, which waits for the GPU (warned once per executor).
template <typename Fn>
bool with_host_bytes(const ggml_tensor* t, KvPathContext& ctx, Fn fn) {
    const size_t bytes = ggml_nbytes(t);
    if (registry().shadows.with(t->data, bytes, [&](const uint8_t* h) { fn(reinterpret_cast<const char*>(h)); })) return true;
    if (ctx.readback_at != t->data || ctx.readback.size() != bytes) {
        if (!ctx.warned_readback) {
            ggml_log_internal(GGML_LOG_LEVEL_WARN, "%s: no host copy of %s (%zu bytes): reading it back from the GPU (a synchronisation)\n",
                              kDeviceName, t->name, bytes);
            ctx.warned_readback = true;
        }
        ctx.readback_at = nullptr;
        ctx.readback.resize(bytes);
        if (!MUSTAFAR_CUDA_OK(cudaMemcpy(ctx.readback.data(), t->data, bytes, cudaMemcpyDeviceToHost))) return false;
        ctx.readback_at = t->data;
    }
    fn(ctx.readback.data());
    return true;
}

DeviceStore& device_of(const kv::KvStore& store) { return *static_cast<DeviceStore*>(store.device()); }

// SET_ROWS into a store: the host row table places each row (the window order is the micro-batch's
// token order), then one kernel writes the rows into their pool slots.
class StoreWriter {
public:
    StoreWriter(const ggml_tensor* node, kv::KvStore& store, KvPathContext& ctx) : node_(node), store_(store), ctx_(ctx) {}

    void add(size_t offset, int64_t row) {
        // A full pool compresses its oldest dense row to make room, which may be a row of this
        // micro-batch: write the rows placed so far before that compression is queued.
        if (!store_.has_free_slot() && !offsets_.empty()) ok_ = launch() && ok_;
        if (offset > size_t(INT32_MAX)) {
            log_error("%s: %s: a source row beyond 2 GB is not supported\n", kDeviceName, node_->name);
            ok_ = false;
            return;
        }
        offsets_.push_back(int32_t(offset));
        slots_.push_back(store_.place_row(row));
        rows_.push_back(int32_t(row));
        device_of(store_).forget_slot_change(row);  // the write kernel sets it
    }

    bool finish() { return launch() && ok_; }

private:
    bool launch() {
        // A cell written twice in one micro-batch keeps its last value, as on the CPU. (Slots index the pool: a
        // flag per slot, where a hash set's allocation per row was a cost on the host.)
        std::vector<uint8_t> seen(slots_.empty() ? 0 : size_t(*std::max_element(slots_.begin(), slots_.end())) + 1);
        std::vector<uint8_t> last(slots_.size());
        for (size_t i = slots_.size(); i-- > 0;) {
            last[i] = !seen[size_t(slots_[i])];
            seen[size_t(slots_[i])] = 1;
        }
        size_t n = 0;
        for (size_t i = 0; i < slots_.size(); ++i) {
            if (!last[i]) continue;
            offsets_[n] = offsets_[i];
            slots_[n] = slots_[i];
            rows_[n] = rows_[i];
            ++n;
        }
        // Compressions that freed the slots (and other slot changes) run before the writes.
        DeviceStore& device = device_of(store_);
        bool ok = device.flush(ctx_.stream, ctx_.arena);
        RowList list;
        if (ok && n > 0 && (ok = stage_rows(int(n), offsets_.data(), slots_.data(), rows_.data(), list, ctx_.stream, ctx_.arena))) {
            const ggml_tensor* src = node_->src[0];
            launch_kernel(store_rows_kernel, unsigned(n), 128, 0, ctx_.stream, static_cast<const char*>(src->data), src->type, src->nb[0], list,
                          reinterpret_cast<__half*>(store_.pool()), int64_t(store_.dense_row_bytes() / 2),
                          device.slot_table());
            ok = MUSTAFAR_CUDA_OK(cudaGetLastError());
        }
        offsets_.clear();
        slots_.clear();
        rows_.clear();
        return ok;
    }

    const ggml_tensor* node_;
    kv::KvStore& store_;
    KvPathContext& ctx_;
    std::vector<int32_t> offsets_, slots_, rows_;  // source row byte offsets (an activation: below 2 GB)
    bool ok_ = true;
};

bool set_rows_into_store(const ggml_tensor* node, kv::KvStore& store, KvPathContext& ctx) {
    const int64_t row_elems = int64_t(store.dense_row_bytes() / 2);
    if (node->src[0]->ne[0] != row_elems) {
        log_error("%s: %s writes %lld values per cache row; the CUDA store takes whole rows of %lld\n", kDeviceName, node->name,
                  (long long)node->src[0]->ne[0], (long long)row_elems);
        return false;
    }
    StoreWriter writer(node, store, ctx);
    bool whole_rows = true;
    const bool read = with_host_bytes(node->src[1], ctx, [&](const char* idx) {
        kv::for_each_store_write(node, store, idx, [&](size_t offset, kv::RowHead at) {
            if (at.head == 0) writer.add(offset, at.row);
            else whole_rows = false;
        });
    });
    if (!whole_rows) log_error("%s: %s writes cache rows at an offset the CUDA store does not take\n", kDeviceName, node->name);
    return writer.finish() && read && whole_rows;
}

}  // namespace

Placement place_store_row(const ggml_tensor* node, KvPathContext& ctx, StoreRow& out) {
    kv::KvStore* store = kv::store_of(node);
    if (store == nullptr || node->src[0]->ne[0] != int64_t(store->dense_row_bytes() / 2)) return Placement::no;
    int writes = 0;
    int64_t row = -1;
    bool whole = true;
    const bool read = with_host_bytes(node->src[1], ctx, [&](const char* idx) {
        kv::for_each_store_write(node, *store, idx, [&](size_t, kv::RowHead at) {
            ++writes;
            row = at.row;
            whole = whole && at.head == 0;
        });
    });
    if (!read) return Placement::failed;
    if (writes != 1 || !whole) return Placement::no;
    // As StoreWriter with one row: place it, then the queued compressions (one may free the slot it takes).
    DeviceStore& device = device_of(*store);
    const int32_t slot = store->place_row(row);
    device.forget_slot_change(row);  // the computing kernel sets it
    if (!device.flush(ctx.stream, ctx.arena)) return Placement::failed;
    out.dst = store->pool() + size_t(slot) * store->dense_row_bytes();
    out.slot_entry = device.slot_table() + row;
    out.slot = slot;
    return Placement::yes;
}

bool set_rows(const ggml_tensor* node, KvPathContext& ctx) {
    if (kv::KvStore* store = kv::store_of(node)) return set_rows_into_store(node, *store, ctx);
    const ggml_tensor* src = node->src[0];
    const int64_t rows = src->ne[1] * src->ne[2] * src->ne[3];
    if (rows == 0) return true;
    launch_kernel(set_rows_kernel, unsigned(rows), 128, 0, ctx.stream, static_cast<const char*>(src->data), shape_of(src),
                  static_cast<const char*>(node->src[1]->data), shape_of(node->src[1]),
                  static_cast<char*>(node->data), shape_of(node));
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool copy(const ggml_tensor* node, cudaStream_t stream) {
    const ggml_tensor* src = node->src[0];
    const int64_t n = src->ne[0] * src->ne[1] * src->ne[2] * src->ne[3];
    if (n == 0) return true;
    const unsigned blocks = unsigned(std::min<int64_t>((n + 255) / 256, 65535));
    launch_kernel(copy_kernel, blocks, 256, 0, stream, static_cast<const char*>(src->data), shape_of(src), static_cast<char*>(node->data),
                  shape_of(node), n);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The query, output and mask of a node as a flash-decoding problem, when the fast kernels take it.
bool as_problem(const ggml_tensor* node, DecodeProblem& p) {
    const ggml_tensor *q = node->src[0], *k = node->src[1], *v = node->src[2], *mask = node->src[3];
    float max_bias = 0.0f, softcap = 0.0f;
    std::memcpy(&p.scale, &node->op_params[0], sizeof(float));
    std::memcpy(&max_bias, &node->op_params[1], sizeof(float));
    std::memcpy(&softcap, &node->op_params[2], sizeof(float));
    if (max_bias != 0.0f || softcap != 0.0f) return false;
    if (q->type != GGML_TYPE_F32 || k->type != GGML_TYPE_F16 || v->type != GGML_TYPE_F16 || node->type != GGML_TYPE_F32) return false;
    const int64_t D = q->ne[0];
    if (k->ne[0] != D || v->ne[0] != D || k->nb[0] != 2 || v->nb[0] != 2 || q->nb[0] != 4 || node->nb[0] != 4) return false;
    if (!decode_supported(int(D), int(q->ne[2]), int(k->ne[2])) || v->ne[2] != k->ne[2] || v->ne[1] != k->ne[1]) return false;
    if ((k->ne[3] != 1 && k->ne[3] != q->ne[3]) || v->ne[3] != k->ne[3]) return false;
    if (mask != nullptr && (mask->type != GGML_TYPE_F16 || mask->ne[2] != 1 || mask->nb[0] != 2 || mask->ne[0] < k->ne[1] || mask->ne[1] < q->ne[1] ||
                            (mask->ne[3] != 1 && mask->ne[3] != q->ne[3])))
        return false;
    p.head_dim = int(D);
    p.n_head = int(q->ne[2]);
    p.n_head_kv = int(k->ne[2]);
    p.n_rows = int(q->ne[1]);
    p.n_seq = int(q->ne[3]);
    p.n_kv = k->ne[1];
    p.q = static_cast<const char*>(q->data);
    p.q_nb1 = q->nb[1];
    p.q_nb2 = q->nb[2];
    p.q_nb3 = q->nb[3];
    p.out = static_cast<char*>(node->data);
    p.out_nb1 = node->nb[1];
    p.out_nb2 = node->nb[2];
    p.out_nb3 = node->nb[3];
    if (mask != nullptr) {
        p.mask = static_cast<const char*>(mask->data);
        p.mask_nb1 = mask->nb[1];
        p.mask_nb3 = mask->nb[3];
        p.mask_ne3 = int(mask->ne[3]);
    }
    return true;
}

// K and V in ggml's layout, when the fast kernels can read them.
bool as_dense(const ggml_tensor* node, DenseCache& c) {
    const ggml_tensor *k = node->src[1], *v = node->src[2];
    for (const ggml_tensor* t : {k, v}) {
        if (!aligned16(t->data) || t->nb[1] % 16 != 0 || t->nb[2] % 16 != 0 || t->nb[3] % 16 != 0) return false;
    }
    c.k = static_cast<const char*>(k->data);
    c.k_nb1 = k->nb[1];
    c.k_nb2 = k->nb[2];
    c.k_nb3 = k->ne[3] == 1 ? 0 : k->nb[3];
    c.v = static_cast<const char*>(v->data);
    c.v_nb1 = v->nb[1];
    c.v_nb2 = v->nb[2];
    c.v_nb3 = v->ne[3] == 1 ? 0 : v->nb[3];
    return true;
}

// Where view t of a store starts and how it steps: cell c of KV head h and stream s is row
// first + c + s*seq_rows, head h. llama.cpp's views of its cache are of this form.
struct StoreView {
    int64_t first = 0, seq_rows = 0;
};

bool store_view(const ggml_tensor* t, const kv::KvStore& store, StoreView& out) {
    const size_t row = store.dense_row_bytes(), head = size_t(store.head_dim()) * 2;
    const size_t offs = t->view_src ? t->view_offs : 0;
    if (t->type != GGML_TYPE_F16 || t->ne[0] != store.head_dim() || t->nb[0] != 2 || t->nb[1] != row || t->nb[2] != head ||
        t->ne[2] != store.heads() || offs % row != 0 || (t->ne[3] > 1 && t->nb[3] % row != 0))
        return false;
    out.first = int64_t(offs / row);
    out.seq_rows = t->ne[3] > 1 ? int64_t(t->nb[3] / row) : 0;
    return out.first + (t->ne[3] - 1) * out.seq_rows + t->ne[1] <= store.rows();
}

StoreOperand store_operand(const kv::KvStore& store, const StoreView& view) {
    StoreOperand o;
    o.records = store.records() + size_t(view.first) * store.layout().stride;
    o.head_bytes = device_of(store).head_bytes();
    o.slot = device_of(store).slot_table() + view.first;
    o.pool = reinterpret_cast<const __half*>(store.pool());
    o.stride = store.layout().stride;
    o.seq_rows = view.seq_rows;
    o.pool_row_elems = int64_t(store.dense_row_bytes() / 2);
    o.D = store.head_dim();
    return o;
}

AttnParams plain_params(const ggml_tensor* node) {
    AttnParams p{};
    p.q = shape_of(node->src[0]);
    p.k = shape_of(node->src[1]);
    p.v = shape_of(node->src[2]);
    p.has_mask = node->src[3] != nullptr;
    if (p.has_mask) p.mask = shape_of(node->src[3]);
    p.dst = shape_of(node);
    std::memcpy(&p.scale, &node->op_params[0], sizeof(float));
    std::memcpy(&p.max_bias, &node->op_params[1], sizeof(float));
    std::memcpy(&p.softcap, &node->op_params[2], sizeof(float));
    if (p.softcap != 0.0f) p.scale /= p.softcap;
    p.n_head_log2 = 1u << unsigned(floor(log2(double(p.q.ne[2]))));
    p.m0 = powf(2.0f, -p.max_bias / p.n_head_log2);
    p.m1 = powf(2.0f, -(p.max_bias / 2.0f) / p.n_head_log2);
    return p;
}

template <typename Operand>
bool launch_plain(const ggml_tensor* node, const Operand& k, const Operand& v, cudaStream_t stream) {
    const AttnParams p = plain_params(node);
    if (p.q.ne[1] == 0 || p.q.ne[2] == 0 || p.q.ne[3] == 0) return true;
    const dim3 grid(unsigned(p.q.ne[1]), unsigned(p.q.ne[2]), unsigned(p.q.ne[3]));
    launch_kernel(flash_attn_kernel<Operand>, grid, kThreads, 0, stream, static_cast<const char*>(node->src[0]->data), k, v,
                  p.has_mask ? static_cast<const char*>(node->src[3]->data) : nullptr,
                  static_cast<char*>(node->data), p);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

// Attention over a Mustafar store, then the window: rows that left it are queued for compression,
// launched at the end of the graph with the other layers' (flush_deferred): nothing in the graph reads
// them before, and any write into the store's pool first launches its queue (StoreWriter, place_store_row).
bool attention_over_store(const ggml_tensor* node, kv::KvStore& ks, kv::KvStore& vs, KvPathContext& ctx) {
    const ggml_tensor *k = node->src[1], *v = node->src[2], *mask = node->src[3];
    StoreView kview, vview;
    if (vs.device() == nullptr || ks.device() == nullptr || !store_view(k, ks, kview) || !store_view(v, vs, vview) ||
        ks.dense_row_bytes() != vs.dense_row_bytes()) {
        log_error("%s: %s reads the cache through a view the CUDA store does not take\n", kDeviceName, node->name);
        return false;
    }
    const StoreOperand ko = store_operand(ks, kview), vo = store_operand(vs, vview);
    DecodeProblem dp;
    CompressedCache cc;
    cc.k_records = ko.records;
    cc.v_records = vo.records;
    cc.k_kept = ks.layout().kept;
    cc.v_kept = vs.layout().kept;
    cc.k_stride = ko.stride;
    cc.v_stride = vo.stride;
    cc.k_head_bytes = ko.head_bytes;
    cc.v_head_bytes = vo.head_bytes;
    cc.k_slot = ko.slot;
    cc.v_slot = vo.slot;
    cc.k_pool = reinterpret_cast<const char*>(ko.pool);
    cc.v_pool = reinterpret_cast<const char*>(vo.pool);
    cc.pool_row_bytes = ks.dense_row_bytes();
    cc.seq_rows = kview.seq_rows;
    const bool fast = kview.seq_rows == vview.seq_rows && as_problem(node, dp) && compressed_supported(cc, dp.head_dim);
    const bool ran = fast ? decode_attention_compressed(dp, cc, ctx.ws, ctx.sm_count, ctx.stream) : launch_plain(node, ko, vo, ctx.stream);
    if (!ran) return false;
    bool retired = true;
    if (mask == nullptr) kv::retire_out_of_window(node, nullptr, ctx.retired);
    else retired = with_host_bytes(mask, ctx, [&](const char* m) { kv::retire_out_of_window(node, m, ctx.retired); });
    for (DeviceStore* d : {&device_of(ks), &device_of(vs)})
        if (std::find(ctx.deferred.begin(), ctx.deferred.end(), d) == ctx.deferred.end()) ctx.deferred.push_back(d);
    return retired;
}

}  // namespace

bool flush_deferred(KvPathContext& ctx) {
    bool ok = true;
    CompressJobs jobs;
    for (DeviceStore* d : ctx.deferred) {
        if (jobs.n == kMaxJobs) {
            ok = compress_jobs(jobs, ctx.stream) && ok;
            jobs.n = 0;
        }
        if (d->take_compressions(jobs.job[jobs.n])) ++jobs.n;
    }
    if (jobs.n > 0) ok = compress_jobs(jobs, ctx.stream) && ok;
    for (DeviceStore* d : ctx.deferred) ok = d->flush(ctx.stream, ctx.arena) && ok;  // longer queues, slot changes
    ctx.deferred.clear();
    return ok;
}

bool flash_attn_ext(const ggml_tensor* node, KvPathContext& ctx) {
    kv::KvStore* ks = kv::store_of(node->src[1]);
    kv::KvStore* vs = kv::store_of(node->src[2]);
    if (ks != nullptr || vs != nullptr) {
        if (ks == nullptr || vs == nullptr) {
            log_error("%s: %s reads a Mustafar store for only one of K and V\n", kDeviceName, node->name);
            return false;
        }
        return attention_over_store(node, *ks, *vs, ctx);
    }
    DecodeProblem dp;
    DenseCache dc;
    if (as_problem(node, dp) && as_dense(node, dc)) return decode_attention_dense(dp, dc, ctx.ws, ctx.sm_count, ctx.stream);
    const DenseOperand k{static_cast<const char*>(node->src[1]->data), shape_of(node->src[1])};
    const DenseOperand v{static_cast<const char*>(node->src[2]->data), shape_of(node->src[2])};
    return launch_plain(node, k, v, ctx.stream);
}

}  // namespace mustafar::cuda
