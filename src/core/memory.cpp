#include "core/memory.h"

#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <new>

namespace origami {

const char* cat_name(Cat c) {
  static const char* n[] = {"weights", "grads", "optimizer", "activations", "workspace", "comm"};
  return n[static_cast<int>(c)];
}

MemTracker::MemTracker() {
  // Tensors are large and short-lived (per layer, per ring step): served by mmap and given back
  // on free, every step would fault its pages in again (6% of a step at S = 4096). Keep them on
  // the heap and never trim it, so freed blocks are reused; RSS then stays at its high-water mark.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
}

namespace {
thread_local MemTracker* t_thread_tracker = nullptr;
}

MemTracker& MemTracker::get() {
  static MemTracker t;
  return t_thread_tracker ? *t_thread_tracker : t;
}

ThreadTracker::ThreadTracker(MemTracker& t) : prev_(t_thread_tracker) {
  t_thread_tracker = &t;
}
ThreadTracker::~ThreadTracker() {
  t_thread_tracker = prev_;
}

MemTracker& MemTracker::device() {
  static MemTracker t;
  return t;
}

void* MemTracker::alloc(size_t bytes, Cat c) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!p) throw std::bad_alloc();
  note_alloc(bytes, c);
  return p;
}

void MemTracker::note_alloc(size_t bytes, Cat c) {
  std::lock_guard<std::mutex> g(mu_);
  int i = static_cast<int>(c);
  s_.live[i] += static_cast<int64_t>(bytes);
  s_.total_live += static_cast<int64_t>(bytes);
  if (s_.live[i] > s_.peak[i]) s_.peak[i] = s_.live[i];
  if (s_.total_live > s_.total_peak) s_.total_peak = s_.total_live;
}

void MemTracker::free(void* p, size_t bytes, Cat c) {
  std::free(p);
  note_free(bytes, c);
}

void MemTracker::note_free(size_t bytes, Cat c) {
  std::lock_guard<std::mutex> g(mu_);
  s_.live[static_cast<int>(c)] -= static_cast<int64_t>(bytes);
  s_.total_live -= static_cast<int64_t>(bytes);
}

MemStats MemTracker::stats() {
  std::lock_guard<std::mutex> g(mu_);
  return s_;
}

void MemTracker::reset_peaks() {
  std::lock_guard<std::mutex> g(mu_);
  s_.peak = s_.live;
  s_.total_peak = s_.total_live;
}

std::string format_bytes(int64_t b) {
  char buf[32];
  double x = static_cast<double>(b);
  if (x >= 1 << 30)
    std::snprintf(buf, sizeof buf, "%.2f GiB", x / (1 << 30));
  else if (x >= 1 << 20)
    std::snprintf(buf, sizeof buf, "%.1f MiB", x / (1 << 20));
  else if (x >= 1 << 10)
    std::snprintf(buf, sizeof buf, "%.1f KiB", x / (1 << 10));
  else
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(b));
  return buf;
}

int64_t proc_kb_field(const char* path, const char* field) {
  std::ifstream f(path);
  std::string line, key = std::string(field) + ":";
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size())) * 1024;  // kB
  return -1;
}

int64_t proc_status_bytes(const char* field) {
  return proc_kb_field("/proc/self/status", field);
}

}  // namespace origami
