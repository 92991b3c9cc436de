// Kernel launches with programmatic dependent launch (compute capability 9.0 on): a kernel in the
// stream may be launched while the one before it still runs, so that its start (launch, block
// scheduling, address set-up, prefetches of memory no kernel writes) overlaps the other's end. A decode
// step at batch 1 is hundreds of launches of a few microseconds each, where these starts add up.
// The contract, kept by every kernel launched here:
//   - it calls wait_for_previous() before it reads anything an earlier kernel writes and before it
//     writes anything: that returns once the previous kernel has finished and its writes are visible
//     (and so, by the same contract, every kernel before it);
//   - it calls let_next_start() after that wait, which allows the next kernel's launch. Called before
//     the wait, it lets a chain of later kernels launch, each with blocks waiting on SMs the running one
//     needs (our reading of this): a batch-1, 4K decode step on the H200 took 6.31 ms, against 5.86 ms
//     without the overlap (77373cd); called after it, 5.86-5.94 against 6.12 ms (3984c42).
// CUDA graphs captured from the stream keep these dependencies. MUSTAFAR_PDL=0 in the environment
// launches plainly (for comparisons); below compute capability 9.0 the two calls compile to nothing.
#pragma once
#include <cuda_runtime.h>

#include <utility>

namespace mustafar::cuda {

__device__ __forceinline__ void let_next_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ __forceinline__ void wait_for_previous() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The start of a kernel that prefetches nothing: both calls.
__device__ __forceinline__ void start_after_previous() {
    wait_for_previous();
    let_next_start();
}

// Whether the current device at the first call has compute capability 9.0 or more (programmatic
// dependent launch, bulk copies).
bool hopper_or_newer();

// Whether launches ask for the overlap: hopper_or_newer(), and MUSTAFAR_PDL is not 0.
bool early_launch();

// kernel<<<grid, block, smem, stream>>>(args...), with the overlap when early_launch(). As with <<<>>>,
// a launch error is left for cudaGetLastError().
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = early_launch() ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace mustafar::cuda
