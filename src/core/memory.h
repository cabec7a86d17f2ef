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
  // The process's tracker, or the calling thread's while a ThreadTracker names one (the dry run
  // of plan/dry_run.h runs every rank of a layout as a thread, each with its own tracker).
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

// While alive, MemTracker::get() on this thread is `t` (tensors must be freed on the thread that
// made them, as they are in an engine).
class ThreadTracker {
 public:
  explicit ThreadTracker(MemTracker& t);
  ~ThreadTracker();
  ThreadTracker(const ThreadTracker&) = delete;
  ThreadTracker& operator=(const ThreadTracker&) = delete;

 private:
  MemTracker* prev_;
};

std::string format_bytes(int64_t b);
// A "Field:   N kB" line of a /proc file (/proc/self/status, /proc/meminfo) in bytes; -1 if absent.
int64_t proc_kb_field(const char* path, const char* field);
// A field of /proc/self/status in bytes (e.g. "VmRSS", "VmHWM"); -1 where unavailable.
int64_t proc_status_bytes(const char* field);

}  // namespace origami
