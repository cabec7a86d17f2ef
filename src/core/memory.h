// Allocator with live and peak bytes per category. Every tensor's memory comes from here, so the
// per-rank peaks a run reports are measured, not estimated. A category's peak is its own maximum
// over time; `total` is the maximum over time of the sum of all categories (not the sum of peaks).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace origami {

enum class Cat { weights, grads, optimizer, activations, workspace, comm };
constexpr int kNumCats = 6;
const char* cat_name(Cat c);

struct MemStats {
  std::array<int64_t, kNumCats> live{}, peak{};
  int64_t total_live = 0, total_peak = 0;
};

class MemTracker {
 public:
  static MemTracker& get();
  // Accelerator memory (the CUDA backend's allocations), counted apart from host memory.
  static MemTracker& device();
  MemTracker();
  void* alloc(size_t bytes, Cat c);
  void free(void* p, size_t bytes, Cat c);
  // Bookkeeping only, for memory another allocator handed out (device memory).
  void note_alloc(size_t bytes, Cat c);
  void note_free(size_t bytes, Cat c);
  MemStats stats();
  void reset_peaks();  // peaks restart from the current live bytes

 private:
  std::mutex mu_;
  MemStats s_;
};

std::string format_bytes(int64_t b);
// A field of /proc/self/status in bytes (e.g. "VmRSS", "VmHWM"); -1 where unavailable.
int64_t proc_status_bytes(const char* field);

}  // namespace origami
