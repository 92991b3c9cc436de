// The CUDA flavour: device memory, one CUDA stream per backend, the KV-path kernels on the GPU.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../flavour.h"
#include "../fp16.h"
#include "../kv/view.h"
#include "../registry.h"
#include "compute_cuda.h"
#include "fusion_cuda.h"
#include "gemv_cuda.h"
#include "launch_cuda.h"
#include "profile_cuda.h"
#include "replay_cuda.h"
#include "cuda_check.h"
#include "flavour_cuda.h"

namespace mustafar::flavour {
namespace {

class CudaExecutor final : public Executor {
public:
    CudaExecutor() {
        // A blocking stream: its kernels wait for the copies that get/set_tensor issue on the legacy
        // default stream (a pageable host-to-device cudaMemcpy may return before its DMA lands).
        int device = 0;
        ok_ = MUSTAFAR_CUDA_OK(cudaStreamCreate(&stream_)) && MUSTAFAR_CUDA_OK(cudaGetDevice(&device)) &&
              MUSTAFAR_CUDA_OK(cudaDeviceGetAttribute(&kv_.sm_count, cudaDevAttrMultiProcessorCount, device));
        kv_.stream = stream_;
        kv_.ws.reuse_ranges(true);  // forgotten in finish(), before the next graph's mask is uploaded
        if (ok_) ops_ = std::make_unique<cuda::ComputeOps>(stream_);
    }
    ~CudaExecutor() override {
        if (ok_) MUSTAFAR_CUDA_OK(cudaStreamSynchronize(stream_));  // graph_compute may have returned before its work ran
        replay_.reset();
        profile_.reset();
        ops_.reset();
        if (ok_) MUSTAFAR_CUDA_OK(cudaStreamDestroy(stream_));
    }

    ggml_status run(ggml_cgraph* graph, int index) override {
        if (!ok_ || queued_work_failed_) return GGML_STATUS_FAILED;
        const int n = ggml_graph_n_nodes(graph);
        if (done_.size() != size_t(n)) {  // the graph's first node (finish() clears done_)
            done_.assign(size_t(n), 0);
            graph_ = graph;
            if (profile_->enabled()) profile_->graph_begin(graph);
            if (dumps_left_ > 0) {
                --dumps_left_;
                dump(graph);
            }
            mode_ = replay_ != nullptr ? replay_->begin(graph, stream_) : Mode::run;
            if (mode_ == Mode::replay) {
                replayed(graph);
                return GGML_STATUS_SUCCESS;
            }
        }
        if (done_[index]) return GGML_STATUS_SUCCESS;  // ran with an earlier node, or replayed
        const ggml_status status = run_node(graph, index);
        if (status != GGML_STATUS_SUCCESS && mode_ == Mode::capture) {
            replay_->abandon(stream_);
            mode_ = Mode::run;
            return rerun(graph, index);
        }
        return status;
    }

    // graph_compute returns once the graph is queued (ggml's asynchronous contract, as ggml's own GPU
    // backends keep it): llama.cpp then prepares the next micro-batch's inputs (a long prompt's mask:
    // milliseconds of host work) while the GPU runs this one, and synchronize() waits. get/set_tensor
    // copy on the legacy default stream, which waits for this blocking stream, so they never see a
    // graph half done. MUSTAFAR_ASYNC_GRAPHS=0, or a profile per node, waits here.
    bool finish() override {
        bool ok = cuda::flush_deferred(kv_);
        if (mode_ == Mode::capture) {
            mode_ = Mode::run;
            if (!replay_->end_capture(stream_)) ok = rerun(graph_, int(done_.size()) - 1) == GGML_STATUS_SUCCESS;
        }
        mode_ = Mode::run;
        if (profile_->enabled()) profile_->before_finish();
        if (wait_in_finish_) ok = MUSTAFAR_CUDA_OK(cudaStreamSynchronize(stream_)) && ok;
        ok = kv_.arena.retire(stream_) && ok;
        kv_.ws.forget_ranges();
        kv_.readback_at = nullptr;  // the next graph's inputs are uploaded anew
        registry().shadows.drop_borrowed();  // llama.cpp may write its host buffers from now on
        kv_.retired.clear();
        done_.clear();
        graph_ = nullptr;
        if (profile_->enabled()) profile_->after_finish();
        return ok;
    }

    // An error of queued work shows here, after its graph_compute has returned: the next graph fails
    // with it (logged), so that llama_decode reports it.
    void synchronize() override {
        if (!ok_) return;
        if (profile_->enabled()) profile_->wait_begin();
        if (!MUSTAFAR_CUDA_OK(cudaStreamSynchronize(stream_))) queued_work_failed_ = true;
        if (profile_->enabled()) profile_->wait_end();
    }

private:
    using Mode = cuda::GraphReplay::Mode;

    // Every node with its memory and sources, to see why nodes were or were not fused (the allocator's
    // reuse of memory decides much of it).
    static void dump(ggml_cgraph* graph) {
        const int n = ggml_graph_n_nodes(graph);
        ggml_log_internal(GGML_LOG_LEVEL_WARN, "%s graph of %d nodes\n", kDeviceName, n);
        for (int i = 0; i < n; ++i) {
            const ggml_tensor* node = ggml_graph_node(graph, i);
            std::string srcs;
            for (const ggml_tensor* s : node->src)
                if (s != nullptr) srcs += std::string(" ") + s->name;
            ggml_log_internal(GGML_LOG_LEVEL_WARN, "%s node %d %s %s [%p +%zu] <-%s\n", kDeviceName, i, ggml_op_name(node->op), node->name,
                              node->data, ggml_nbytes(node), srcs.c_str());
        }
    }

    // Nodes 0..last again, without capture (a capture failed: none of its work ran).
    ggml_status rerun(ggml_cgraph* graph, int last) {
        std::fill(done_.begin(), done_.end(), 0);
        for (int i = 0; i <= last; ++i) {
            if (is_view_op(ggml_graph_node(graph, i)->op) || done_[i]) continue;
            if (run_node(graph, i) != GGML_STATUS_SUCCESS) return GGML_STATUS_FAILED;
        }
        return GGML_STATUS_SUCCESS;
    }

    // The host's share of a replayed graph: what each node's run would have noted.
    void replayed(ggml_cgraph* graph) {
        for (int i = 0; i < int(done_.size()); ++i) {
            ggml_tensor* node = ggml_graph_node(graph, i);
            done_[i] = 1;
            if (is_view_op(node->op)) continue;
            overwritten(node);
            if (node->op == GGML_OP_CPY || node->op == GGML_OP_DUP || node->op == GGML_OP_CONT) shadow_copy(node);
        }
    }

    ggml_status run_node(ggml_cgraph* graph, int index) {
        done_[index] = 1;
        ggml_tensor* node = ggml_graph_node(graph, index);
        const cuda::Fusion fusion = fusions_.any() ? cuda::plan_fusion(graph, index, done_, fusions_) : cuda::Fusion{};
        const std::string label = profile_->per_node() ? describe(fusion) : std::string();
        if (profile_->per_node()) profile_->begin(node, stream_, label.empty() ? nullptr : label.c_str());
        const ggml_status status = fusion.kind == cuda::Fusion::Kind::none ? execute(node) : execute(graph, fusion);
        if (profile_->per_node()) profile_->end(stream_);
        return status;
    }

    // The node overwrites its memory: host copies of what was there are stale. Not for writes into a
    // store, whose memory is smaller than the dense tensor llama.cpp sees (and never shadowed).
    void overwritten(const ggml_tensor* node) {
        if (kv::store_of(node) != nullptr) return;
        registry().shadows.invalidate(node->data, ggml_nbytes(node));
        kv_.drop_readback(node->data, ggml_nbytes(node));
    }

    // Node j of a fused group (none where j < 0): run here, so marked as run.
    const ggml_tensor* take_node(ggml_cgraph* graph, int j) {
        if (j < 0) return nullptr;
        const ggml_tensor* node = ggml_graph_node(graph, j);
        overwritten(node);
        done_[j] = 1;
        return node;
    }

    // Several nodes in one launch (fusion_cuda.h); the others are marked as run.
    ggml_status execute(ggml_cgraph* graph, const cuda::Fusion& f) {
        bool launched = false;
        switch (f.kind) {
            case cuda::Fusion::Kind::norm_mul: {
                const ggml_tensor* mul = ggml_graph_node(graph, f.mul);
                const ggml_tensor* norm = mul->src[0];
                overwritten(norm);
                overwritten(mul);
                done_[f.mul] = 1;
                launched = ops_->rms_norm_mul(norm, mul);
                break;
            }
            case cuda::Fusion::Kind::gemv: {
                cuda::GemvNodes g;
                g.n = int(f.mats.size());
                auto take = [&](int j) { return take_node(graph, j); };
                std::vector<const ggml_tensor*> alone;  // store writes the kernel cannot take: run after it
                bool placed = true;
                for (size_t m = 0; m < f.mats.size(); ++m) {
                    g.mats[m] = take(f.mats[m]);
                    g.ropes[m] = take(f.ropes.size() > m ? f.ropes[m] : -1);
                    g.rope_only[m] = f.rope_only.size() > m && f.rope_only[m] != 0;
                    g.cache_rows[m] = take(f.cache_rows.size() > m ? f.cache_rows[m] : -1);
                    if (g.cache_rows[m] == nullptr || kv::store_of(g.cache_rows[m]) == nullptr) continue;
                    switch (cuda::place_store_row(g.cache_rows[m], kv_, g.store_rows[m])) {
                        case cuda::Placement::yes: break;
                        case cuda::Placement::no:
                            alone.push_back(g.cache_rows[m]);
                            g.cache_rows[m] = nullptr;
                            break;
                        case cuda::Placement::failed: placed = false; break;
                    }
                }
                g.add = take(f.add);
                g.glu = take(f.glu);
                launched = placed && ops_->mul_mat_vec(g);
                for (const ggml_tensor* set : alone) launched = launched && cuda::set_rows(set, kv_);
                break;
            }
            case cuda::Fusion::Kind::few: {
                cuda::GemvNodes g;
                g.n = int(f.mats.size());
                auto take = [&](int j) { return take_node(graph, j); };
                for (size_t m = 0; m < f.mats.size(); ++m) {
                    g.mats[m] = take(f.mats[m]);
                    g.ropes[m] = take(f.ropes.size() > m ? f.ropes[m] : -1);
                    g.rope_only[m] = f.rope_only.size() > m && f.rope_only[m] != 0;
                }
                g.add = take(f.add);
                g.glu = take(f.glu);
                launched = ops_->mul_mat_few(g);
                break;
            }
            case cuda::Fusion::Kind::none: break;
        }
        return launched ? GGML_STATUS_SUCCESS : GGML_STATUS_FAILED;
    }

    static std::string describe(const cuda::Fusion& f) {
        switch (f.kind) {
            case cuda::Fusion::Kind::norm_mul: return "RMS_NORM + MUL";
            case cuda::Fusion::Kind::few:
            case cuda::Fusion::Kind::gemv: {
                int ropes = 0;
                for (int r : f.ropes) ropes += r >= 0;
                int sets = 0;
                for (int r : f.cache_rows) sets += r >= 0;
                if (f.glu >= 0) return "MUL_MAT x2 + GLU";
                if (f.add >= 0) return "MUL_MAT + ADD";
                if (f.mats.size() == 1 && ropes == 0 && sets == 0) return "";
                return "MUL_MAT x" + std::to_string(f.mats.size()) + (ropes > 0 ? " + ROPE x" + std::to_string(ropes) : "") +
                       (sets > 0 ? " + SET_ROWS x" + std::to_string(sets) : "");
            }
            case cuda::Fusion::Kind::none: break;
        }
        return "";
    }

    ggml_status execute(ggml_tensor* node) {
        overwritten(node);
        bool launched = false;
        switch (node->op) {
            case GGML_OP_SET_ROWS: launched = cuda::set_rows(node, kv_); break;
            case GGML_OP_CPY:
            case GGML_OP_DUP:
            case GGML_OP_CONT:
                launched = cuda::copy(node, stream_);
                if (launched) shadow_copy(node);
                break;
            case GGML_OP_FLASH_ATTN_EXT: launched = cuda::flash_attn_ext(node, kv_); break;
            case GGML_OP_ADD:
            case GGML_OP_SUB:
            case GGML_OP_MUL:
            case GGML_OP_DIV: launched = ops_->binary(node); break;
            case GGML_OP_SCALE: launched = ops_->scale(node); break;
            case GGML_OP_UNARY: launched = ops_->silu(node); break;
            case GGML_OP_GLU: launched = ops_->swiglu(node); break;
            case GGML_OP_RMS_NORM: launched = ops_->rms_norm(node); break;
            case GGML_OP_GET_ROWS: launched = ops_->get_rows(node); break;
            case GGML_OP_ROPE: launched = ops_->rope(node); break;
            case GGML_OP_MUL_MAT: launched = ops_->mul_mat(node); break;
            default: return GGML_STATUS_FAILED;
        }
        return launched ? GGML_STATUS_SUCCESS : GGML_STATUS_FAILED;
    }

    // A copy of a tensor that has a host copy gets one too: llama.cpp versions that build the mask
    // in f32 cast it to f16 on the device, and the store's window logic reads the f16 mask.
    static void shadow_copy(const ggml_tensor* node) {
        const ggml_tensor* src = node->src[0];
        const bool f32 = src->type == GGML_TYPE_F32, f16 = src->type == GGML_TYPE_F16;
        if (!(f32 || f16) || (node->type != GGML_TYPE_F32 && node->type != GGML_TYPE_F16) || !ggml_is_contiguous(src) ||
            !ggml_is_contiguous(node))
            return;
        const int64_t n = src->ne[0] * src->ne[1] * src->ne[2] * src->ne[3];
        std::vector<uint8_t> out;
        const bool found = registry().shadows.with(src->data, ggml_nbytes(src), [&](const uint8_t* h) {
            out.resize(ggml_nbytes(node));
            for (int64_t i = 0; i < n; ++i) {
                float x;
                if (f32) std::memcpy(&x, h + 4 * i, 4);
                else x = fp16_to_fp32(reinterpret_cast<const uint16_t*>(h)[i]);
                if (node->type == GGML_TYPE_F32) std::memcpy(out.data() + 4 * i, &x, 4);
                else reinterpret_cast<uint16_t*>(out.data())[i] = fp32_to_fp16(x);
            }
        });
        if (found) registry().shadows.record(node->data, out.data(), out.size());
    }

    cudaStream_t stream_ = nullptr;
    bool ok_ = false;
    std::unique_ptr<cuda::ComputeOps> ops_;
    cuda::KvPathContext kv_;
    std::unique_ptr<cuda::OpProfile> profile_ = std::make_unique<cuda::OpProfile>(cuda::OpProfile::from_env());
    const cuda::FusionSet fusions_ = cuda::FusionSet::from_env();
    // MUSTAFAR_DUMP_GRAPHS=n: the first n graphs' nodes to the log (dump()).
    int dumps_left_ = std::getenv("MUSTAFAR_DUMP_GRAPHS") != nullptr ? std::atoi(std::getenv("MUSTAFAR_DUMP_GRAPHS")) : 0;
    std::vector<uint8_t> done_;  // per node of the current graph: already run
    ggml_cgraph* graph_ = nullptr;
    // MUSTAFAR_CUDA_GRAPHS=0 or 1 decides; by default graphs replay only where launches do not overlap
    // (launch_cuda.h). With the overlap, replay was not faster in nine pairs of dense decodes on three
    // H200 machines: within 1 % in six, 3 % to 11 % slower in three (bench/results/gpu-e2e-2026-11-30.md,
    // runs 15-17); without it, it saved 3 % (run 10).
    static bool replay_wanted() {
        const char* env = std::getenv("MUSTAFAR_CUDA_GRAPHS");
        if (env != nullptr) return std::strcmp(env, "0") != 0;
        return !cuda::early_launch();
    }
    // Replay of repeated graphs (replay_cuda.h); not while profiling each node with events.
    std::unique_ptr<cuda::GraphReplay> replay_ = !profile_->per_node() && replay_wanted() ? std::make_unique<cuda::GraphReplay>() : nullptr;
    Mode mode_ = Mode::run;
    const bool wait_in_finish_ = profile_->per_node() || env_is("MUSTAFAR_ASYNC_GRAPHS", "0");
    bool queued_work_failed_ = false;
    static bool env_is(const char* name, const char* value) {
        const char* env = std::getenv(name);
        return env != nullptr && std::strcmp(env, value) == 0;
    }
};

std::string device_description() {
    cudaDeviceProp prop{};
    if (!MUSTAFAR_CUDA_OK(cudaGetDeviceProperties(&prop, 0))) return "Mustafar KV cache backend (CUDA flavour, no device)";
    return std::string("Mustafar KV cache backend (CUDA flavour, ") + prop.name + ")";
}

}  // namespace

const char* name() { return "cuda"; }

const char* description() {
    static const std::string text = device_description();
    return text.c_str();
}

void memory(size_t* free, size_t* total) {
    if (!MUSTAFAR_CUDA_OK(cudaMemGetInfo(free, total))) *free = *total = 0;
}

void init_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) { cuda::init_device_buffer_type(buft, device); }

bool init_host_side_buffer_type(ggml_backend_buffer_type& buft, ggml_backend_dev_t device) {
    cuda::init_pinned_buffer_type(buft, device);
    return true;
}

bool supports_kv_type(ggml_type type) { return is_float_type(type); }

bool make_store_memory(uint8_t* memory, int64_t n_rows, int64_t n_embd, const kv::StoreConfig& cfg, std::unique_ptr<kv::StoreMemory>& out) {
    out = cuda::DeviceStore::create(memory, n_rows, n_embd, cfg);
    return out != nullptr;
}

bool supports_compute_op(const ggml_tensor* op) { return cuda::supports_compute(op); }

Executor* create_executor(int) { return new CudaExecutor(); }

}  // namespace mustafar::flavour
