#include "plan/hardware.h"

#include <algorithm>
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
  if (l.contains("on_cores")) {
    if (!l["on_cores"].is_boolean()) fail(w, ": 'on_cores' must be true or false");
    out.on_cores = l["on_cores"].get<bool>();
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
  if (j.contains("device_memory_bytes"))
    h.device_memory_bytes = positive(j, "device_memory_bytes", path);
  return h;
}

double Hardware::kernel_time(const sim::Work& w) const {
  const double mem = w.bytes / memory_bytes_per_s;
  switch (w.kind) {
    case sim::Work::gemm:
      return kernel_launch_s + std::max(w.flops / gemm.of(w.bf16), mem);
    case sim::Work::attn_fwd:
      return kernel_launch_s + std::max(w.flops / attn_fwd.of(w.bf16), mem);
    case sim::Work::attn_bwd:
      return kernel_launch_s + std::max(w.flops / attn_bwd.of(w.bf16), mem);
    case sim::Work::memory:
      break;
  }
  return kernel_launch_s + std::max(mem, exp_per_s > 0 ? w.exps / exp_per_s : 0.0);
}

}  // namespace origami::plan
