#pragma once
#include "cuda_runtime.h"
__device__ void __pipeline_commit();
__device__ void __pipeline_wait_prior(size_t);
__device__ void __pipeline_memcpy_async(void*, const void*, size_t, size_t = 0);
