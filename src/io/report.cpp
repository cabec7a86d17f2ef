#include "io/report.h"

#include <algorithm>
#include <array>
#include <cstdio>

#include "core/safetensors.h"

namespace origami {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double step_median(const std::vector<double>& v) {
  return median(v.size() > 1 ? std::vector<double>(v.begin() + 1, v.end()) : v);
}

nlohmann::json peak_json(const MemStats& m) {
  nlohmann::json j;
  for (int c = 0; c < kNumCats; ++c)
    j[cat_name(static_cast<Cat>(c))] = m.peak[static_cast<size_t>(c)];
  j["total"] = m.total_peak;
  return j;
}

nlohmann::json make_report(const RunSummary& s) {
  const double tmed = step_median(s.step_times);
  nlohmann::json j = {
      {"schema_version", 1},
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
  if (!s.skipped_steps.empty()) j["skipped_steps"] = s.skipped_steps;  // only when there are
  return j;
}

void write_report(const std::string& path, const RunSummary& s) {
  write_file_atomic(path, make_report(s).dump(2) + "\n");
}

void print_memory(const std::vector<std::string>& ranks) {
  for (const auto& text : ranks) {
    const auto r = nlohmann::json::parse(text);
    auto cats = [&](const nlohmann::json& peak) {
      for (int c = 0; c < kNumCats; ++c) {
        const char* n = cat_name(static_cast<Cat>(c));
        std::printf(" %s %s |", n, format_bytes(peak[n].get<int64_t>()).c_str());
      }
      std::printf(" total %s", format_bytes(peak["total"].get<int64_t>()).c_str());
    };
    std::printf("peak memory rank %d:", r["rank"].get<int>());
    cats(r["peak_bytes"]);
    if (r.contains("rss_bytes") && r["rss_bytes"]["peak"].get<int64_t>() >= 0)
      std::printf(" (process RSS peak %s, %s before the first tensor)",
                  format_bytes(r["rss_bytes"]["peak"].get<int64_t>()).c_str(),
                  format_bytes(r["rss_bytes"]["baseline"].get<int64_t>()).c_str());
    std::printf("\n");
    if (r.contains("device_peak_bytes")) {
      std::printf("peak device memory rank %d:", r["rank"].get<int>());
      cats(r["device_peak_bytes"]);
      std::printf("\n");
    }
    if (!r.contains("comm_bytes_per_layer") || r["comm_bytes_per_layer"].empty()) continue;
    // Bytes received per layer by phase (layer 0; every layer moves the same), over the run.
    int64_t ph[3] = {0, 0, 0};
    for (const auto& [cat, v] : r["comm_bytes_per_layer"][0].items())
      for (int i = 0; i < 3; ++i)
        ph[i] += v[std::array<const char*, 3>{"fwd", "recompute", "bwd"}[i]].get<int64_t>();
    if (ph[0] + ph[1] + ph[2] > 0)
      std::printf("  communication rank %d, layer 0, whole run: fwd %s | recompute %s | bwd %s\n",
                  r["rank"].get<int>(), format_bytes(ph[0]).c_str(), format_bytes(ph[1]).c_str(),
                  format_bytes(ph[2]).c_str());
  }
}

}  // namespace origami
