#include "cuda/runtime.h"

#include <cstdio>

namespace origami::cuda {

void fail_cuda(cudaError_t e, const char* what, const char* file, int line) {
  fail("CUDA error ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") in ", what, " at ", file,
       ":", line);
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string device_summary() {
  int dev = 0;
  ORIGAMI_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  ORIGAMI_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  int drv = 0, rt = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  char gib[32];
  std::snprintf(gib, sizeof gib, "%.1f", static_cast<double>(p.totalGlobalMem) / (1 << 30));
  return cat(p.name, ", sm_", p.major, p.minor, ", ", p.multiProcessorCount, " SMs, ", gib,
             " GiB, driver ", drv / 1000, ".", drv % 1000 / 10, ", runtime ", rt / 1000, ".",
             rt % 1000 / 10);
}

cudaStream_t current_stream() {
  thread_local cudaStream_t t_stream = nullptr;
  if (!t_stream) {
    ORIGAMI_CUDA_CHECK(cudaStreamCreateWithFlags(&t_stream, cudaStreamNonBlocking));
    // Keep freed pool memory instead of returning it at every synchronisation.
    int dev = 0;
    ORIGAMI_CUDA_CHECK(cudaGetDevice(&dev));
    cudaMemPool_t pool;
    ORIGAMI_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
    uint64_t keep = UINT64_MAX;
    ORIGAMI_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  }
  return t_stream;
}

void* dalloc(size_t bytes, Cat c) {
  void* p = nullptr;
  if (bytes == 0) bytes = 256;
  cudaError_t e = cudaMallocAsync(&p, bytes, current_stream());
  if (e != cudaSuccess) {
    cudaGetLastError();
    auto s = MemTracker::device().stats();
    fail("device allocation of ", format_bytes(static_cast<int64_t>(bytes)), " (", cat_name(c),
         ") failed: ", cudaGetErrorString(e), "; ", format_bytes(s.total_live),
         " already live on the device");
  }
  MemTracker::device().note_alloc(bytes, c);
  return p;
}

void dfree(void* p, size_t bytes, Cat c) {
  if (!p) return;
  if (bytes == 0) bytes = 256;
  cudaFreeAsync(p, current_stream());
  MemTracker::device().note_free(bytes, c);
}

Event::Event() {
  ORIGAMI_CUDA_CHECK(cudaEventCreate(&e_));
}
Event::~Event() {
  cudaEventDestroy(e_);
}
void Event::record(cudaStream_t s) {
  ORIGAMI_CUDA_CHECK(cudaEventRecord(e_, s));
}
void Event::wait_on(cudaStream_t s) const {
  ORIGAMI_CUDA_CHECK(cudaStreamWaitEvent(s, e_, 0));
}
float Event::ms_since(const Event& start) const {
  ORIGAMI_CUDA_CHECK(cudaEventSynchronize(e_));
  float ms = 0;
  ORIGAMI_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
  return ms;
}

void sync() {
  ORIGAMI_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
}

void to_device(void* dst, const void* src, size_t bytes) {
  ORIGAMI_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, current_stream()));
  sync();
}
void to_host(void* dst, const void* src, size_t bytes) {
  ORIGAMI_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, current_stream()));
  sync();
}

}  // namespace origami::cuda
