// Prune + compress on the GPU, the twin of kv::compress (kv/record.cpp): one warp per (row, KV head)
// vector. Element i lives in lane i % 32 and carries the key (|x| bits << 16) | (0xffff - i), unique
// per element and ordered like magnitude with ties to the lower index; a 31-step bitwise search over
// warp-wide counts finds the kept-th largest key, and keys at or above it are kept. Bitmap word j is
// then one ballot, and a kept value's place is the popcount of the kept bits below it.
#include <cuda_fp16.h>

#include <algorithm>

#include "attention_decode.h"
#include "cuda_check.h"
#include "launch_cuda.h"

namespace mustafar::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxPerLane = 8;        // D <= 256
constexpr int kMaxRecord = 32 + 512;  // bitmap + values at D = 256, a multiple of 16

// One vector x of D values into the record at dst (stride bytes), through this warp's staging.
__device__ void compress_vector(const uint16_t* x, int D, int kept, size_t stride, uint8_t* rec, uint8_t* dst) {
    const int lane = threadIdx.x % 32;
    const int per = (D + 31) / 32;
    uint32_t key[kMaxPerLane];
    uint16_t val[kMaxPerLane];
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j) {
        const int e = lane + 32 * j;
        const bool real = j < per && e < D;
        val[j] = real ? x[e] : 0;
        key[j] = real ? (uint32_t(val[j] & 0x7fffu) << 16) | uint32_t(0xffff - e) : 0u;  // 0: below every real key
    }
    // The largest threshold with at least `kept` keys at or above it is the kept-th largest key.
    uint32_t threshold = 0xffffffffu;
    if (kept > 0) {
        threshold = 0;
        for (int bit = 30; bit >= 0; --bit) {
            const uint32_t candidate = threshold | (1u << bit);
            int count = 0;
#pragma unroll
            for (int j = 0; j < kMaxPerLane; ++j) count += key[j] >= candidate;
            if (int(__reduce_add_sync(0xffffffffu, unsigned(count))) >= kept) threshold = candidate;
        }
    }
    for (int o = lane * 16; o < int(stride); o += 32 * 16) *reinterpret_cast<uint4*>(rec + o) = make_uint4(0, 0, 0, 0);
    __syncwarp();
    const int bitmap_bytes = D / 8;
    int below = 0;  // kept elements in earlier words
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j) {
        if (j >= per) break;
        const bool keep = key[j] != 0u && key[j] >= threshold;
        const uint32_t word = __ballot_sync(0xffffffffu, keep);
        if (lane < 4 && 4 * j + lane < bitmap_bytes) rec[4 * j + lane] = uint8_t(word >> (8 * lane));
        if (keep) {
            const int pos = below + __popc(word & ((1u << lane) - 1u));
            rec[bitmap_bytes + 2 * pos] = uint8_t(val[j] & 0xffu);  // byte stores: values are only 2-byte aligned for D >= 16
            rec[bitmap_bytes + 2 * pos + 1] = uint8_t(val[j] >> 8);
        }
        below += __popc(word);
    }
    __syncwarp();
    for (int o = lane * 16; o < int(stride); o += 32 * 16) *reinterpret_cast<uint4*>(dst + o) = *reinterpret_cast<const uint4*>(rec + o);
}

__global__ void __launch_bounds__(kWarps * 32) compress_kernel(const char* src, size_t src_row_bytes, RowList rows, int n_head_kv, int D, int kept,
                                                               size_t stride, size_t head_bytes, uint8_t* records, int32_t* slot_table) {
    start_after_previous();
    __shared__ __align__(16) uint8_t staging[kWarps][kMaxRecord];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t vec = int64_t(blockIdx.x) * kWarps + warp;
    if (vec >= int64_t(rows.n) * n_head_kv) return;  // whole warps only
    const int i = int(vec / n_head_kv), h = int(vec % n_head_kv);
    const int32_t src_row = rows.at(0, i), dst_row = rows.at(1, i);
    if (slot_table != nullptr && h == 0 && lane == 0) slot_table[dst_row] = -1;
    const uint16_t* x = reinterpret_cast<const uint16_t*>(src + size_t(src_row) * src_row_bytes) + size_t(h) * D;
    compress_vector(x, D, kept, stride, staging[warp], records + size_t(h) * head_bytes + size_t(dst_row) * stride);
}

// Vectors of the jobs one after the other (first_vector), one warp each.
__global__ void __launch_bounds__(kWarps * 32) compress_jobs_kernel(CompressJobs jobs, int vectors) {
    start_after_previous();
    __shared__ __align__(16) uint8_t staging[kWarps][kMaxRecord];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int vec = int(blockIdx.x) * kWarps + warp;
    if (vec >= vectors) return;  // whole warps only
    int j = 0;
    while (j + 1 < jobs.n && jobs.job[j + 1].first_vector <= vec) ++j;
    const CompressJob& job = jobs.job[j];
    const int local = vec - job.first_vector, i = local / job.n_head_kv, h = local % job.n_head_kv;
    const int32_t src_row = job.src_rows[i], dst_row = job.dst_rows[i];
    if (h == 0 && lane == 0) job.slot_table[dst_row] = -1;
    const uint16_t* x = reinterpret_cast<const uint16_t*>(job.src + size_t(src_row) * job.src_row_bytes) + size_t(h) * job.head_dim;
    compress_vector(x, job.head_dim, job.kept, job.stride, staging[warp], job.records + size_t(h) * job.head_bytes + size_t(dst_row) * job.stride);
}

// Records the kernels can write: D <= 256 in whole bitmap bytes, 16-byte strides that fit the staging.
bool record_shape_ok(int head_dim, int kept, size_t stride) {
    return head_dim > 0 && head_dim <= 256 && head_dim % 8 == 0 && stride % 16 == 0 && stride <= size_t(kMaxRecord) && kept >= 0 && kept <= head_dim;
}

}  // namespace

bool compress_rows(const char* src, size_t src_row_bytes, const RowList& rows, int n_head_kv, int head_dim, int kept, size_t stride,
                   size_t head_bytes, uint8_t* records, int32_t* slot_table, cudaStream_t stream) {
    if (!record_shape_ok(head_dim, kept, stride)) return false;
    if (rows.n == 0) return true;
    const int64_t vectors = int64_t(rows.n) * n_head_kv;
    const unsigned blocks = unsigned((vectors + kWarps - 1) / kWarps);
    launch_kernel(compress_kernel, blocks, kWarps * 32, 0, stream, src, src_row_bytes, rows, n_head_kv, head_dim, kept, stride, head_bytes, records, slot_table);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool compress_jobs(CompressJobs& jobs, cudaStream_t stream) {
    int vectors = 0;
    for (int j = 0; j < jobs.n; ++j) {
        CompressJob& job = jobs.job[j];
        if (!record_shape_ok(job.head_dim, job.kept, job.stride) || job.n < 0 || job.n > kJobRows || job.slot_table == nullptr) return false;
        job.first_vector = vectors;
        vectors += job.n * job.n_head_kv;
    }
    if (vectors == 0) return true;
    launch_kernel(compress_jobs_kernel, unsigned((vectors + kWarps - 1) / kWarps), kWarps * 32, 0, stream, jobs, vectors);
    return MUSTAFAR_CUDA_OK(cudaGetLastError());
}

bool compress_rows(const char* src, size_t src_row_bytes, const int32_t* src_rows, const int32_t* dst_rows, int n, int n_head_kv, int head_dim,
                   int kept, size_t stride, size_t head_bytes, uint8_t* records, cudaStream_t stream) {
    RowList rows;
    rows.n = n;
    rows.dev[0] = src_rows;
    rows.dev[1] = dst_rows;
    return compress_rows(src, src_row_bytes, rows, n_head_kv, head_dim, kept, stride, head_bytes, records, nullptr, stream);
}

}  // namespace mustafar::cuda
