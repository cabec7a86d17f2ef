#include "core/trace.h"

#include <cstdio>

namespace origami {

Trace& Trace::get() {
  static Trace t;
  return t;
}

void Trace::span(std::string name, int tid, double t0, double t1, int64_t bytes) {
  std::lock_guard lk(mu_);
  ev_.push_back({std::move(name), tid, t0, t1, bytes});
}

std::string Trace::events_json(int rank) const {
  std::lock_guard lk(mu_);
  return trace_events_json(rank, ev_);
}

std::string trace_events_json(int rank, const std::vector<TraceEvent>& ev, const char* suffix) {
  std::string out;
  char buf[512];
  auto add = [&](const char* s) {
    if (!out.empty()) out += ",\n";
    out += s;
  };
  std::snprintf(buf, sizeof buf,
                "{\"ph\":\"M\",\"pid\":%d,\"name\":\"process_name\",\"args\":{\"name\":\"rank "
                "%d%s\"}}",
                rank, rank, suffix);
  add(buf);
  for (int tid = 0; tid < 2; ++tid) {
    std::snprintf(buf, sizeof buf,
                  "{\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"name\":\"thread_name\",\"args\":{"
                  "\"name\":\"%s\"}}",
                  rank, tid, tid == 0 ? "compute" : "communication");
    add(buf);
  }
  for (const TraceEvent& e : ev) {
    if (e.bytes >= 0)
      std::snprintf(buf, sizeof buf,
                    "{\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"name\":\"%s\","
                    "\"args\":{\"bytes\":%lld}}",
                    rank, e.tid, e.t0, e.t1 - e.t0, e.name.c_str(),
                    static_cast<long long>(e.bytes));
    else
      std::snprintf(buf, sizeof buf,
                    "{\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"name\":\"%s\"}",
                    rank, e.tid, e.t0, e.t1 - e.t0, e.name.c_str());
    add(buf);
  }
  return out;
}

std::string trace_file_json(const std::vector<std::string>& ranks) {
  std::string all = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  for (size_t i = 0; i < ranks.size(); ++i) all.append(i ? ",\n" : "").append(ranks[i]);
  return all.append("\n]}\n");
}

}  // namespace origami
