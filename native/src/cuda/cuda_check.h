// Every CUDA call is checked: a failure is logged through ggml's log with the call and the error
// string, and the calling operation reports failure instead of crashing the process. The failure is
// then taken off the runtime's last error: a refused cudaMalloc (a cache too large for the GPU) would
// otherwise fail the next launch's cudaGetLastError check, in a later model of the same process.
#pragma once
#include <cuda_runtime.h>

#include "../registry.h"

#define MUSTAFAR_CUDA_OK(call)                                                                                   \
    ([&]() -> bool {                                                                                             \
        const cudaError_t mustafar_err_ = (call);                                                                \
        if (mustafar_err_ == cudaSuccess) return true;                                                           \
        ::mustafar::log_error("%s: %s failed: %s (%s:%d)\n", ::mustafar::kDeviceName, #call,                     \
                              cudaGetErrorString(mustafar_err_), __FILE__, __LINE__);                            \
        cudaGetLastError();                                                                                      \
        return false;                                                                                            \
    }())
