// CUDA runtime plumbing: error checks, device discovery that never needs the driver library at link
// time, device memory through the same categories as the host (MemTracker::device()), the current
// stream, events, and a stream-ordered scratch allocator. Host code; compiled by the C++ compiler.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/memory.h"

namespace origami::cuda {

[[noreturn]] void fail_cuda(cudaError_t e, const char* what, const char* file, int line);
#define ORIGAMI_CUDA_CHECK(x)                                                                      \
  do {                                                                                             \
    cudaError_t origami_e_ = (x);                                                                  \
    if (origami_e_ != cudaSuccess) ::origami::cuda::fail_cuda(origami_e_, #x, __FILE__, __LINE__); \
  } while (0)

// Number of usable devices; 0 (never an exception) when there is no driver, no device, or the
// runtime refuses (e.g. the stub driver of a build machine).
int device_count();
// "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB, driver 13.0, runtime 13.0"
std::string device_summary();
// Exit code of a GPU test that found no device (CTest SKIP_RETURN_CODE).
constexpr int kSkipNoDevice = 77;

// The stream every kernel and GEMM of this thread is issued on: a per-thread stream made on first
// use, non-blocking with respect to the legacy default stream.
cudaStream_t current_stream();

// Device memory, counted in MemTracker::device() under a category. Stream-ordered (cudaMallocAsync
// on the current stream, a pool that keeps freed memory), so scratch buffers cost no device sync.
void* dalloc(size_t bytes, Cat c);
void dfree(void* p, size_t bytes, Cat c);

// An owning device buffer of n elements of T.
template <class T>
class DBuf {
 public:
  DBuf() = default;
  DBuf(int64_t n, Cat c) : n_(n), c_(c) {
    p_ = static_cast<T*>(dalloc(static_cast<size_t>(n) * sizeof(T), c));
  }
  ~DBuf() { reset(); }
  DBuf(const DBuf&) = delete;
  DBuf& operator=(const DBuf&) = delete;
  DBuf(DBuf&& o) noexcept : p_(o.p_), n_(o.n_), c_(o.c_) { o.p_ = nullptr; }
  DBuf& operator=(DBuf&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_, n_ = o.n_, c_ = o.c_;
      o.p_ = nullptr;
    }
    return *this;
  }
  void reset() {
    if (p_) dfree(p_, static_cast<size_t>(n_) * sizeof(T), c_);
    p_ = nullptr;
  }
  T* get() const { return p_; }
  int64_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  int64_t n_ = 0;
  Cat c_ = Cat::workspace;
};

class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t s);
  void wait_on(cudaStream_t s) const;  // s waits for this event (no host block)
  float ms_since(const Event& start) const;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_{};
};

void sync();  // the current stream

// Copies on the current stream (synchronous with respect to the host for host memory).
void to_device(void* dst, const void* src, size_t bytes);
void to_host(void* dst, const void* src, size_t bytes);

}  // namespace origami::cuda
