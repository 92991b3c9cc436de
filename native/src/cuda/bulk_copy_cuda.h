// Bulk copies from global to shared memory by the copy engine (compute capability 9.0 on, PTX
// cp.async.bulk), completed through a shared-memory barrier (mbarrier) that counts the bytes.
// One lane's instruction moves a whole row or block, where 16-byte asynchronous copies cost an
// instruction, an address computation and shared-memory wavefronts per chunk.
// Use per buffer: one thread arrives with the bytes to expect (expect_bytes), copies name the barrier,
// and the readers wait for the buffer's current phase (wait_phase), flipping their parity bit after.
// Below compute capability 9.0 the functions compile to a trap; callers take another path there.
#pragma once
#include <cstdint>

namespace mustafar::cuda {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
constexpr bool kBulkCopies = true;
#else
constexpr bool kBulkCopies = false;
#endif

// A barrier at shared address `bar` (8 bytes, 8-aligned) that completes a phase on one arrival once
// the expected bytes have landed; visible to the copy engine before the first copy names it.
__device__ __forceinline__ void barrier_init(unsigned bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n fence.mbarrier_init.release.cluster;\n fence.proxy.async.shared::cta;\n" ::"r"(bar)
                 : "memory");
#else
    __trap();
#endif
}

// The arrival of this phase, with the bytes its copies will bring (0: the phase completes now).
__device__ __forceinline__ void expect_bytes(unsigned bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#else
    __trap();
#endif
}

// `bytes` (a multiple of 16; both addresses 16-byte aligned) from global `src` to shared `dst`.
__device__ __forceinline__ void bulk_copy(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst), "l"(src), "r"(bytes),
                 "r"(bar)
                 : "memory");
#else
    __trap();
#endif
}

// Returns once the phase of parity `parity` has completed (its copies' bytes are visible).
__device__ __forceinline__ void wait_phase(unsigned bar, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t done = 0;
    do {
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (done == 0);
#else
    __trap();
#endif
}

}  // namespace mustafar::cuda
