// A Chrome/Perfetto trace of one rank (--trace FILE.json): complete events ("ph":"X") on two
// tracks, compute (tid 0: schedule steps, GEMM groups, waits) and communication (tid 1: each
// transfer from post to completion, with its bytes). Off by default: a span costs one branch.
// Timestamps are microseconds since this rank's origin, which the trainer sets right after a
// barrier so that the ranks' timelines line up (ranks of one machine share the clock).
#pragma once
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace origami {

// One complete event of a track: tid 0 compute, 1 communication; microseconds; bytes < 0: none.
struct TraceEvent {
  std::string name;
  int tid;
  double t0, t1;
  int64_t bytes = -1;
};
// A rank's events as a JSON array body (no brackets), pid = rank, the process named
// "rank R<suffix>" and its two tracks named; trace_file_json joins the ranks' bodies into a
// Chrome/Perfetto trace file. (Measured: Trace below; simulated: `plan --time --trace`.)
std::string trace_events_json(int rank, const std::vector<TraceEvent>& ev, const char* suffix = "");
std::string trace_file_json(const std::vector<std::string>& ranks);

class Trace {
 public:
  static Trace& get();
  bool on() const { return on_; }
  void enable() { on_ = true; }
  // Resets the time origin (call right after a barrier so ranks line up).
  void set_origin() { origin_ = std::chrono::steady_clock::now(); }
  double now_us() const {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - origin_)
        .count();
  }
  void span(std::string_view name, int tid, double t0_us, double t1_us, int64_t bytes = -1);
  // This rank's events as a JSON array body (no brackets), pid = rank.
  std::string events_json(int rank) const;
  size_t events() const;

 private:
  // Recording allocates nothing once the step's span names have been seen: a name is stored once
  // (a step repeats the same few hundred) and events go into blocks of kBlock, each allocated once.
  // Long-lived small allocations between the steps' large, short-lived tensors split the heap's
  // free blocks, so every step extended the heap and faulted fresh pages in: a traced tsp=2 step
  // took 2x an untraced one on the 2-vCPU VMs here (RSS grew 35 MB a step).
  struct Ev {
    uint32_t name;
    int tid;
    double t0, t1;
    int64_t bytes;
  };
  static constexpr size_t kBlock = size_t{1} << 16;
  bool on_ = false;
  mutable std::mutex mu_;  // spans come from the calling thread and the progress thread
  std::chrono::steady_clock::time_point origin_ = std::chrono::steady_clock::now();
  std::vector<std::string> names_;
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view v) const { return std::hash<std::string_view>{}(v); }
  };
  std::unordered_map<std::string, uint32_t, Hash, std::equal_to<>> index_;
  std::vector<std::vector<Ev>> blocks_;
};

// "L3 fwd": the span name of a layer in a phase.
inline std::string layer_span(size_t l, const char* phase) {
  std::string s = "L";
  s.append(std::to_string(l)).append(" ").append(phase);
  return s;
}

// A compute-track span for the lifetime of the object (no-op when tracing is off).
class TraceSpan {
 public:
  explicit TraceSpan(const char* name) : name_(name) {
    if (Trace::get().on()) t0_ = Trace::get().now_us();
  }
  TraceSpan(std::string name) : owned_(std::move(name)), name_(nullptr) {
    if (Trace::get().on()) t0_ = Trace::get().now_us();
  }
  ~TraceSpan() {
    if (Trace::get().on())
      Trace::get().span(name_ ? std::string_view(name_) : std::string_view(owned_), 0, t0_,
                        Trace::get().now_us());
  }
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;

 private:
  std::string owned_;
  const char* name_;
  double t0_ = 0;
};

}  // namespace origami
