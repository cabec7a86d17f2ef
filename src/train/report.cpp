#include "train/report.h"

#include <algorithm>
#include <cstdio>

#include "core/safetensors.h"

namespace origami {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

nlohmann::json peak_json(const MemStats& m) {
  nlohmann::json j;
  for (int c = 0; c < kNumCats; ++c)
    j[cat_name(static_cast<Cat>(c))] = m.peak[static_cast<size_t>(c)];
  j["total"] = m.total_peak;
  return j;
}

nlohmann::json make_report(const RunSummary& s) {
  const double tmed = median(s.step_times);
  return {{"schema_version", 1},
          {"layout", s.layout},
          {"world_size", s.world_size},
          {"config", s.config},
          {"seq", s.seq},
          {"micro_batch", s.micro_batch},
          {"grad_accum", s.grad_accum},
          {"steps", s.steps},
          {"tokens_per_s", tmed > 0 ? static_cast<double>(s.tokens_per_step) / tmed : 0.0},
          {"step_time_median_s", tmed},
          {"final_loss", s.losses.empty() ? 0.0 : s.losses.back()},
          {"losses", s.losses},
          {"grad_norms", s.grad_norms},
          {"eval", s.eval},
          {"ranks", s.ranks}};
}

void write_report(const std::string& path, const RunSummary& s) {
  write_file_atomic(path, make_report(s).dump(2) + "\n");
}

void print_memory(const std::vector<std::string>& ranks) {
  for (const auto& text : ranks) {
    const auto r = nlohmann::json::parse(text);
    std::printf("peak memory rank %d:", r["rank"].get<int>());
    for (int c = 0; c < kNumCats; ++c) {
      const char* n = cat_name(static_cast<Cat>(c));
      std::printf(" %s %s |", n, format_bytes(r["peak_bytes"][n].get<int64_t>()).c_str());
    }
    std::printf(" total %s", format_bytes(r["peak_bytes"]["total"].get<int64_t>()).c_str());
    if (r.contains("rss_bytes") && r["rss_bytes"]["peak"].get<int64_t>() >= 0)
      std::printf(" (process RSS peak %s, %s before the first tensor)",
                  format_bytes(r["rss_bytes"]["peak"].get<int64_t>()).c_str(),
                  format_bytes(r["rss_bytes"]["baseline"].get<int64_t>()).c_str());
    std::printf("\n");
  }
}

}  // namespace origami
