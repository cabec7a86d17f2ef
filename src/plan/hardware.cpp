#include "plan/hardware.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace origami::plan {

namespace {

double positive(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_number() || !(j[key].get<double>() > 0))
    fail(where, ": '", key, "' must be a positive number");
  return j[key].get<double>();
}
Rates rates(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_object())
    fail(where, ": '", key, "' must be an object {\"fp32\": flop/s, \"bf16\": flop/s}");
  const std::string w = where + ": " + key;
  return {positive(j[key], "fp32", w), positive(j[key], "bf16", w)};
}
sim::Link link(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_object())
    fail(where, ": '", key, "' must be an object {\"latency_s\": s, \"bytes_per_s\": B/s}");
  const auto& l = j[key];
  const std::string w = where + ": " + key;
  if (!l.contains("latency_s") || !l["latency_s"].is_number() || l["latency_s"].get<double>() < 0)
    fail(w, ": 'latency_s' must be a number >= 0");
  sim::Link out{l["latency_s"].get<double>(), positive(l, "bytes_per_s", w), 0};
  out.peer_bytes_per_s =
      l.contains("peer_bytes_per_s") ? positive(l, "peer_bytes_per_s", w) : out.bytes_per_s;
  if (l.contains("sync_skew")) {
    if (!l["sync_skew"].is_number() || !(l["sync_skew"].get<double>() >= 0))
      fail(w, ": 'sync_skew' must be a number >= 0");
    out.sync_skew = l["sync_skew"].get<double>();
  }
  if (l.contains("collectives")) {
    const auto& c = l["collectives"];
    if (!c.is_object()) fail(w, ": 'collectives' must be an object");
    const auto& names = sim::Link::kCollNames;
    for (int k = 0; k < sim::Link::kColls; ++k) {
      if (!c.contains(names[k])) continue;
      const auto& v = c[names[k]];
      if (!v.is_array() || v.size() != 4)
        fail(w, ": collectives.", names[k], " must be [bytes, seconds, bytes, seconds]");
      for (int i = 0; i < 4; ++i) {
        if (!v[i].is_number() || !(v[i].get<double>() > 0))
          fail(w, ": collectives.", names[k], " must hold positive numbers");
        out.coll[static_cast<size_t>(k)][static_cast<size_t>(i)] = v[i].get<double>();
      }
      if (!(out.coll[static_cast<size_t>(k)][2] > out.coll[static_cast<size_t>(k)][0]))
        fail(w, ": collectives.", names[k], ": the second size must be the larger");
    }
  }
  if (l.contains("on_cores")) {
    if (!l["on_cores"].is_boolean()) fail(w, ": 'on_cores' must be true or false");
    out.on_cores = l["on_cores"].get<bool>();
  }
  if (l.contains("background_copy_bytes_per_s"))
    out.background_copy_bytes_per_s = positive(l, "background_copy_bytes_per_s", w);
  return out;
}

// "gemm_shapes" and "attn_sizes" (optional): per element type, rows of positive numbers.
std::vector<std::vector<double>> rows_of(const nlohmann::json& j, const char* key, const char* dt,
                                         size_t width, const std::string& where) {
  std::vector<std::vector<double>> out;
  if (!j.contains(key)) return out;
  const std::string w = where + ": " + key;
  if (!j[key].is_object()) fail(w, " must be an object {\"fp32\": [...], \"bf16\": [...]}");
  if (!j[key].contains(dt)) return out;
  if (!j[key][dt].is_array()) fail(w, ".", dt, " must be an array of rows");
  for (const auto& r : j[key][dt]) {
    if (!r.is_array() || r.size() != width)
      fail(w, ".", dt, ": every row has ", width, " numbers (", r.dump(), ")");
    std::vector<double> row;
    for (const auto& x : r) {
      if (!x.is_number() || !(x.get<double>() >= 0))
        fail(w, ".", dt, ": ", r.dump(), " is not >= 0");
      row.push_back(x.get<double>());
    }
    if (!(row.back() > 0)) fail(w, ".", dt, ": ", r.dump(), ": the rate must be positive");
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace

Hardware Hardware::load(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail("cannot open the hardware profile ", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(path, ": a hardware profile is a JSON object");
  Hardware h;
  h.path = path;
  h.name = j.value("name", path);
  h.gemm = rates(j, "gemm_flops", path);
  h.attn_fwd = rates(j, "attn_fwd_flops", path);
  h.attn_bwd = rates(j, "attn_bwd_flops", path);
  h.memory_bytes_per_s = positive(j, "memory_bytes_per_s", path);
  if (!j.contains("kernel_launch_s") || !j["kernel_launch_s"].is_number() ||
      j["kernel_launch_s"].get<double>() < 0)
    fail(path, ": 'kernel_launch_s' must be a number >= 0");
  h.kernel_launch_s = j["kernel_launch_s"].get<double>();
  const double rpn = positive(j, "ranks_per_node", path);
  if (rpn != static_cast<int>(rpn)) fail(path, ": 'ranks_per_node' must be an integer");
  h.ranks_per_node = static_cast<int>(rpn);
  h.intra = link(j, "intra_node", path);
  h.inter = link(j, "inter_node", path);
  if (j.contains("exp_per_s")) h.exp_per_s = positive(j, "exp_per_s", path);
  if (j.contains("update_per_s")) h.update_per_s = positive(j, "update_per_s", path);
  if (j.contains("chain_per_s")) h.chain_per_s = positive(j, "chain_per_s", path);
  if (j.contains("rank_slowdown")) {
    if (!j["rank_slowdown"].is_array() || j["rank_slowdown"].empty())
      fail(path, ": 'rank_slowdown' must be a non-empty array of positive numbers");
    for (const auto& x : j["rank_slowdown"]) {
      if (!x.is_number() || !(x.get<double>() > 0))
        fail(path, ": 'rank_slowdown' must be a non-empty array of positive numbers (", x.dump(),
             ")");
      h.rank_slowdown.push_back(x.get<double>());
    }
  }
  if (j.contains("device_memory_bytes"))
    h.device_memory_bytes = positive(j, "device_memory_bytes", path);
  for (const int bf : {0, 1}) {
    const char* dt = bf ? "bf16" : "fp32";
    for (const auto& r : rows_of(j, "gemm_shapes", dt, 6, path))
      h.gemm_shapes[bf].push_back({r[0] != 0, r[1] != 0, r[2], r[3], r[4], r[5]});
    for (const auto& r : rows_of(j, "attn_sizes", dt, 3, path)) {
      if (!(r[0] > 0 && r[1] > 0)) fail(path, ": attn_sizes.", dt, ": rates must be positive");
      h.attn_sizes[bf].push_back({r[0], r[1], r[2]});
    }
    std::sort(h.attn_sizes[bf].begin(), h.attn_sizes[bf].end(),
              [](const AttnSize& a, const AttnSize& b) { return a.pairs < b.pairs; });
  }
  return h;
}

double Hardware::gemm_rate(const sim::Work& w) const {
  const auto& table = gemm_shapes[w.bf16];
  if (table.empty() || !(w.m > 0 && w.n > 0 && w.k > 0)) return gemm.of(w.bf16);
  const auto dist = [&](const GemmShape& s) {
    const double a = std::log(w.m / std::max(s.m, 1.0)), b = std::log(w.n / std::max(s.n, 1.0)),
                 c = std::log(w.k / std::max(s.k, 1.0));
    return a * a + b * b + c * c + (s.ta != w.ta || s.tb != w.tb ? 1e6 : 0);
  };
  const GemmShape* best = &table[0];
  double bd = dist(*best);
  for (const auto& s : table) {
    const double d = dist(s);
    if (d < bd) bd = d, best = &s;
  }
  return best->flops;
}

double Hardware::attn_rate(const sim::Work& w) const {
  const bool bwd = w.kind == sim::Work::attn_bwd;
  const auto& t = attn_sizes[w.bf16];
  if (t.empty() || !(w.m > 0)) return (bwd ? attn_bwd : attn_fwd).of(w.bf16);
  const auto rate = [&](const AttnSize& a) { return bwd ? a.bwd : a.fwd; };
  if (w.m <= t.front().pairs) return rate(t.front());
  if (w.m >= t.back().pairs) return rate(t.back());
  size_t i = 1;
  while (t[i].pairs < w.m) ++i;
  const double f = std::log(w.m / t[i - 1].pairs) / std::log(t[i].pairs / t[i - 1].pairs);
  return rate(t[i - 1]) + f * (rate(t[i]) - rate(t[i - 1]));
}

double Hardware::kernel_time(const sim::Work& w) const {
  if (observe) observe(w);
  const double mem = w.bytes / memory_bytes_per_s;
  switch (w.kind) {
    case sim::Work::gemm:
      return kernel_launch_s + std::max(w.flops / gemm_rate(w), mem);
    case sim::Work::attn_fwd:
    case sim::Work::attn_bwd:
      return kernel_launch_s + std::max(w.flops / attn_rate(w), mem);
    case sim::Work::memory:
      break;
  }
  return kernel_launch_s + std::max({mem, exp_per_s > 0 ? w.exps / exp_per_s : 0.0,
                                     update_per_s > 0 ? w.updates / update_per_s : 0.0,
                                     chain_per_s > 0 ? w.chain / chain_per_s : 0.0});
}

}  // namespace origami::plan
