#pragma once
#include "cuda_runtime.h"
struct __half_raw { unsigned short x; };
struct __half { unsigned short x; __host__ __device__ __half() = default; __host__ __device__ __half(__half_raw r) : x(r.x) {} };
struct __half2 { __half x, y; };
__host__ __device__ float __half2float(__half);
__host__ __device__ __half __float2half_rn(float);
__host__ __device__ __half __float2half(float);
__device__ unsigned short __half_as_ushort(__half);
__device__ __half __ushort_as_half(unsigned short);
__device__ float2 __half22float2(__half2);
__device__ __half2 __floats2half2_rn(float, float);
__device__ float __low2float(__half2);
__device__ float __high2float(__half2);
__device__ __half2 __halves2half2(__half, __half);
