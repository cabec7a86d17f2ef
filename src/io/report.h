// The run report of tsp-spec §10 (one rank for now) and the per-category memory printout.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/memory.h"

namespace origami {

struct RunSummary {
  std::string layout;
  nlohmann::json config;
  int64_t seq = 0, micro_batch = 0, grad_accum = 0, steps = 0, tokens_per_step = 0;
  std::vector<double> losses, step_times, grad_norms;
  std::vector<int64_t> skipped_steps;  // non-finite loss or gradient norm: no update
  nlohmann::json eval = nlohmann::json::array();
  int world_size = 1;
  std::vector<nlohmann::json> ranks;  // per rank: rank, peak_bytes, comm_bytes..., time_s
};

double median(std::vector<double> v);
// The median of a run's per-step times without its first step when there are more (a warm-up:
// the first step faults in the memory every later step reuses, 14 µs a page on these VMs).
double step_median(const std::vector<double>& per_step);
nlohmann::json peak_json(const MemStats& m);
nlohmann::json make_report(const RunSummary& s);
void write_report(const std::string& path, const RunSummary& s);
// One line per rank (from the gathered per-rank reports): peak bytes by category and total, and
// the process's resident-set peak next to them.
void print_memory(const std::vector<std::string>& ranks);

}  // namespace origami
