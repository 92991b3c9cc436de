// Attention on the GPU. Decode (few query rows): flash-decoding, the context split across thread
// blocks and the partial softmax states merged afterwards; one block serves all query heads of a GQA
// group, so each KV vector is read once per step. Prompts (32 rows or more, D 64/128, the split count
// left open; dense cache or store): 64 query rows per block share each K/V tile. Two caches:
//  - dense f16, in ggml's layout (llama.cpp's cache tensor views);
//  - the Mustafar store: fixed-stride records (kv/record.h) for compressed cells plus a dense pool
//    of window cells, chosen per cell by a slot array.
// Plain structs, no ggml types: the flavour maps FLASH_ATTN_EXT nodes onto them, the GPU tests and
// the benchmark call them directly.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace mustafar::cuda {

struct DecodeProblem {
    int head_dim = 0;  // D of K, V, Q and the output
    int n_head = 0;    // query heads; a multiple of n_head_kv
    int n_head_kv = 0;
    int n_rows = 0;    // query rows (tokens) per sequence index
    int n_seq = 0;     // independent sequence indices (ggml's dim 3)
    int64_t n_kv = 0;  // cells each row may see: [0, n_kv)
    float scale = 1.0f;
    // q: f32 [D, n_rows, n_head, n_seq]; out: f32 [D, n_head, n_rows, n_seq]; byte strides.
    const char* q = nullptr;
    size_t q_nb1 = 0, q_nb2 = 0, q_nb3 = 0;
    char* out = nullptr;
    size_t out_nb1 = 0, out_nb2 = 0, out_nb3 = 0;
    // Optional f16 mask, one row per query row: -inf hides a cell. Broadcast over heads.
    const char* mask = nullptr;
    size_t mask_nb1 = 0, mask_nb3 = 0;
    int mask_ne3 = 1;
};

// Dense f16 cache: cell c of KV head h for sequence index s at base + c*nb1 + h*nb2 + s*nb3.
struct DenseCache {
    const char* k = nullptr;
    size_t k_nb1 = 0, k_nb2 = 0, k_nb3 = 0;
    const char* v = nullptr;
    size_t v_nb1 = 0, v_nb2 = 0, v_nb3 = 0;
};

// The Mustafar store of one layer. Cell c of sequence index s is row c + s*seq_rows; its K record for
// KV head h is at k_records + h*k_head_bytes + row*k_stride (head-major: a head's records lie row after
// row, so that a decode step's 16 cells are one block of memory). k_slot[row] >= 0: the row's K is dense,
// at k_pool + slot*pool_row_bytes + h*D*2 (f16); k_slot[row] < 0: compressed. Likewise for V (the
// K and V stores keep their own row tables).
struct CompressedCache {
    const uint8_t* k_records = nullptr;
    const uint8_t* v_records = nullptr;
    int k_kept = 0, v_kept = 0;
    size_t k_stride = 0, v_stride = 0;
    size_t k_head_bytes = 0, v_head_bytes = 0;  // from one KV head's records to the next's
    const int32_t* k_slot = nullptr;
    const int32_t* v_slot = nullptr;
    const char* k_pool = nullptr;
    const char* v_pool = nullptr;
    size_t pool_row_bytes = 0;
    int64_t seq_rows = 0;
};

// Device scratch for the partial results and the per-row ranges; grows on demand (RAII).
class DecodeWorkspace {
public:
    DecodeWorkspace() = default;
    ~DecodeWorkspace();
    DecodeWorkspace(const DecodeWorkspace&) = delete;
    DecodeWorkspace& operator=(const DecodeWorkspace&) = delete;
    // Null on allocation failure (logged).
    void* get(size_t bytes);
    // Resident blocks per SM of a decode kernel (asked once per kernel and shared-memory size).
    int blocks_per_sm(const void* kernel, size_t smem);
    // Prompts over the store (32 query rows or more) first expand the cells their rows see into a dense
    // copy of the layer's K and V, of at most kMaxExpandedBytes, which the dense prompt kernel then reads:
    // every block of a micro-batch (8 row blocks x 32 heads of Llama-3-8B) expanded each record itself
    // before. Off: the prompt kernel expands the tiles it reads (also the path for what the copy cannot hold).
    static constexpr size_t kMaxExpandedBytes = size_t(512) << 20;
    void expand_prompts(bool on) { expand_prompts_ = on; }
    bool expands_prompts() const { return expand_prompts_; }
    // The copy's size limit (kMaxExpandedBytes unless set; the tests set small ones).
    void limit_expanded(size_t bytes) { expanded_limit_ = bytes; }
    size_t expanded_limit() const { return expanded_limit_; }
    // Device memory for the expanded copy (grows by half again, up to the limit); null when the device
    // has no room (a warning: the prompt kernel then expands its tiles itself).
    void* expanded(size_t bytes);
    // Raises a kernel's dynamic shared-memory limit to at least smem, once: a step of a small model
    // launches dozens of attentions, and each attribute call costs host time that a short kernel shows.
    bool allow_smem(const void* kernel, size_t smem);
    // At least n arrival counters, all 0 between launches (each launch sets back what it counted);
    // null on allocation failure (logged).
    int* counters(size_t n);
    // For the tests, which check that every launch leaves its counters 0.
    const int* counters_now(size_t& n) const {
        n = counters_n_;
        return counters_;
    }
    // Every layer of a graph reads the same mask: with reuse on, the rows' ranges and tile lists of a
    // mask are computed by the first attention and kept for the next ones until forget_ranges() (the
    // executor calls it when a graph ends, before the mask is uploaded anew). Off by default: a caller
    // that frees a mask and gets its address back for another must not see the old lists.
    void reuse_ranges(bool on) { reuse_ = on; }
    void forget_ranges() { ranges_ = RangesKey{}; }

    // Whether the ranges of this key are in the workspace (reuse on); remembers the key for the next call.
    struct RangesKey {
        const char* mask = nullptr;
        size_t mask_nb1 = 0, mask_nb3 = 0, bytes = 0;
        int mask_ne3 = 0, n_rows = 0, n_seq = 0;
        int64_t n_kv = 0;
        bool tiles = false, order = false, live = false;
        bool operator==(const RangesKey& o) const {
            return mask == o.mask && mask_nb1 == o.mask_nb1 && mask_nb3 == o.mask_nb3 && bytes == o.bytes && mask_ne3 == o.mask_ne3 &&
                   n_rows == o.n_rows && n_seq == o.n_seq && n_kv == o.n_kv && tiles == o.tiles && order == o.order && live == o.live;
        }
    };
    bool has_ranges(const RangesKey& key) {
        const bool hit = reuse_ && key.mask != nullptr && key == ranges_;
        ranges_ = key;
        return hit;
    }

private:
    struct Occupancy {
        const void* kernel;
        size_t smem;
        int blocks;
    };
    void* data_ = nullptr;
    size_t bytes_ = 0;
    void* expanded_ = nullptr;
    size_t expanded_bytes_ = 0;
    size_t expanded_limit_ = kMaxExpandedBytes;
    bool expand_prompts_ = true;
    bool warned_expanded_ = false;
    int* counters_ = nullptr;
    size_t counters_n_ = 0;
    std::vector<Occupancy> occupancy_;
    std::vector<std::pair<const void*, size_t>> smem_limits_;  // per kernel, the limit set so far
    bool reuse_ = false;
    RangesKey ranges_;  // what the start of data_ holds
};

// Whether the fast kernels take this shape: D in {64, 128, 256}, GQA ratio in {1, 2, 4, 8}.
bool decode_supported(int head_dim, int n_head, int n_head_kv);
// Whether the store's records are readable by the kernel (16-byte aligned strides, D/8-byte bitmaps).
bool compressed_supported(const CompressedCache& cache, int head_dim);

// Context splits per (row, KV head): one wave of `resident_blocks` blocks, at least 128 cells each.
int decode_splits(const DecodeProblem& p, int resident_blocks);

bool decode_attention_dense(const DecodeProblem& p, const DenseCache& cache, DecodeWorkspace& ws, int sm_count,
                            cudaStream_t stream, int splits = 0);
bool decode_attention_compressed(const DecodeProblem& p, const CompressedCache& cache, DecodeWorkspace& ws, int sm_count,
                                 cudaStream_t stream, int splits = 0);

// Dense f16 rows of the store's cells [first, first + n) of every sequence index, in ggml's layout (cell c
// of KV head h of sequence index s at ((s * n + c - first) * n_head_kv + h) * D): K's into k_out, V's into
// v_out. What a prompt over the store reads (its expanded copy). D = 64 or 128.
bool expand_cells(const CompressedCache& cache, int head_dim, int n_head_kv, int n_seq, int64_t first, int64_t n, void* k_out, void* v_out,
                  DecodeWorkspace& ws, int sm_count, cudaStream_t stream);

// Up to three parallel index arrays for the store kernels: up to kInlineRows entries travel in the
// launch's parameters (a decode step writes and retires a few rows: nothing to upload), longer
// lists come from device memory.
constexpr int kInlineRows = 32;
struct RowList {
    int n = 0;
    const int32_t* dev[3] = {nullptr, nullptr, nullptr};  // device arrays, when n > kInlineRows
    int32_t in[3][kInlineRows] = {};
    __host__ __device__ int32_t at(int array, int i) const { return dev[array] != nullptr ? dev[array][i] : in[array][i]; }
};

// Prune + compress: for each i < n, every KV head h of dense row src_rows[i] (f16, src_row_bytes per
// row, heads of D values side by side) becomes the record at records + h*head_bytes + dst_rows[i]*stride
// (kv/record.h: the kept largest magnitudes, ties to the lower index). One warp per vector.
bool compress_rows(const char* src, size_t src_row_bytes, const int32_t* src_rows, const int32_t* dst_rows, int n,
                   int n_head_kv, int head_dim, int kept, size_t stride, size_t head_bytes, uint8_t* records, cudaStream_t stream);
// The same with the rows in a RowList (array 0: source rows, 1: destination rows); a non-null
// slot_table gets -1 at each destination row (the row is no longer dense).
bool compress_rows(const char* src, size_t src_row_bytes, const RowList& rows, int n_head_kv, int head_dim, int kept, size_t stride,
                   size_t head_bytes, uint8_t* records, int32_t* slot_table, cudaStream_t stream);

// The queued compressions of several stores in one launch, as compress_rows with a slot table does for
// each: a decode step retires a row or a few per store and layer, and the CUDA executor launches them
// together at the end of its graph instead of one launch per store after each layer's attention.
constexpr int kJobRows = 8, kMaxJobs = 16;
struct CompressJob {
    const char* src = nullptr;  // the store's pool of dense rows
    size_t src_row_bytes = 0;
    uint8_t* records = nullptr;
    size_t head_bytes = 0, stride = 0;
    int32_t* slot_table = nullptr;
    int n_head_kv = 0, head_dim = 0, kept = 0, n = 0;
    int32_t src_rows[kJobRows] = {}, dst_rows[kJobRows] = {};
    int first_vector = 0;  // set by compress_jobs
};
struct CompressJobs {
    CompressJob job[kMaxJobs];
    int n = 0;
};
bool compress_jobs(CompressJobs& jobs, cudaStream_t stream);

}  // namespace mustafar::cuda
