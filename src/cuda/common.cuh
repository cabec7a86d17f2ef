// Device helpers shared by the .cu files: loads/stores in fp32 whatever the storage type, and a
// block reduction whose order depends only on blockDim (deterministic, no atomics).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/runtime.h"

namespace origami::cuda {

__device__ __forceinline__ float ld(const float* p) {
  return *p;
}
__device__ __forceinline__ float ld(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}
__device__ __forceinline__ void st(float* p, float v) {
  *p = v;
}
__device__ __forceinline__ void st(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16(v);
}

constexpr int kThreads = 256;

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
template <class A>
__device__ A block_sum(A v) {
  __shared__ A part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  A s = 0;
  for (int i = 0; i < nw; ++i) s += part[i];
  return s;
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float m = part[0];
  for (int i = 1; i < nw; ++i) m = fmaxf(m, part[i]);
  return m;
}

inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t g = (n + threads - 1) / threads;
  return static_cast<unsigned>(g < 1 ? 1 : (g > 1048576 ? 1048576 : g));
}

inline void check_launch(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail_cuda(e, what, __FILE__, __LINE__);
}

}  // namespace origami::cuda
