#include "core/trace.h"

#include <cstdio>

namespace origami {

Trace& Trace::get() {
  static Trace t;
  return t;
}

void Trace::span(std::string_view name, int tid, double t0, double t1, int64_t bytes) {
  std::lock_guard lk(mu_);
  auto it = index_.find(name);
  if (it == index_.end()) {
    it = index_.emplace(std::string(name), static_cast<uint32_t>(names_.size())).first;
    names_.emplace_back(name);
  }
  if (blocks_.empty() || blocks_.back().size() == kBlock) {
    blocks_.emplace_back();
    blocks_.back().reserve(kBlock);
  }
  blocks_.back().push_back({it->second, tid, t0, t1, bytes});
}

size_t Trace::events() const {
  std::lock_guard lk(mu_);
  return blocks_.empty() ? 0 : (blocks_.size() - 1) * kBlock + blocks_.back().size();
}

std::string Trace::events_json(int rank) const {
  std::lock_guard lk(mu_);
  std::vector<TraceEvent> ev;
  for (const auto& b : blocks_)
    for (const Ev& e : b) ev.push_back({names_[e.name], e.tid, e.t0, e.t1, e.bytes});
  return trace_events_json(rank, ev);
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
