// For the GPU test and benchmark programs: a failed CUDA call ends the program with its error.
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CK(call)                                                                                                  \
    do {                                                                                                          \
        const cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) {                                                                                  \
            std::printf("CUDA error: %s at %s:%d (%s)\n", cudaGetErrorString(e_), __FILE__, __LINE__, #call);     \
            std::exit(2);                                                                                         \
        }                                                                                                         \
    } while (0)
