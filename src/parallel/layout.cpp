#include "parallel/layout.h"

#include <cstdlib>
#include <sstream>
#include <utility>

#include "core/error.h"

namespace origami {

Layout Layout::parse(const std::string& s, int world) {
  Layout L;
  if (s.empty() || s == "single") {
    if (world > 1)
      fail("world size ", world, " > 1 needs --layout (e.g. --layout tsp=", world, ")");
    L.text = "single";
    return L;
  }
  std::stringstream ss(s);
  std::string item;
  bool seen[5] = {};
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) fail("--layout '", s, "': '", item, "' is not axis=size");
    const std::string axis = item.substr(0, eq), val = item.substr(eq + 1);
    char* end = nullptr;
    const long n = std::strtol(val.c_str(), &end, 10);
    if (val.empty() || *end || n < 1)
      fail("--layout '", s, "': ", axis, "=", val, " must be a positive integer");
    static const char* axes[] = {"dp", "tsp", "tp", "sp", "fsdp_sp"};
    int* slot[] = {&L.dp, &L.tsp, &L.tp, &L.sp, &L.fsdp_sp};
    int k = 0;
    while (k < 5 && axis != axes[k]) ++k;
    if (k == 5)
      fail("--layout '", s, "': unknown axis '", axis, "' (axes: dp, tsp, tp, sp, fsdp_sp)");
    if (seen[k]) fail("--layout '", s, "': axis '", axis, "' given twice");
    seen[k] = true;
    *slot[k] = static_cast<int>(n);
  }
  if (world >= 0 && L.dp * L.model_degree() != world)
    fail("--layout '", s, "' needs ", L.dp * L.model_degree(), " ranks but the world size is ",
         world);
  std::ostringstream text;  // canonical: dp first, then the model axis
  L.tsp_axis = seen[1];
  L.tp_axis = seen[2];
  L.sp_axis = seen[3];
  L.fsdp_axis = seen[4];
  if (L.tsp_axis + L.fsdp_axis + L.uses_tpsp() > 1)
    fail("--layout '", s,
         "': tsp and fsdp_sp combine only with dp (not with each other, tp or sp)");
  auto add = [&](const char* axis, int v) {
    if (!text.str().empty()) text << ",";
    text << axis << "=" << v;
  };
  if (L.dp > 1) add("dp", L.dp);
  if (L.tsp_axis) add("tsp", L.tsp);
  if (L.fsdp_axis) add("fsdp_sp", L.fsdp_sp);
  if (L.tp_axis) add("tp", L.tp);
  if (L.sp_axis) add("sp", L.sp);
  L.text = text.str().empty() ? "single" : text.str();
  return L;
}

void validate_tsp(const ModelConfig& c, int D, int64_t seq, int buckets) {
  if (c.num_key_value_heads % D)
    fail("num_key_value_heads=", c.num_key_value_heads, " is not divisible by tsp=", D,
         " (each rank owns whole KV-head groups)");
  if (c.intermediate_size % D)
    fail("intermediate_size=", c.intermediate_size, " is not divisible by tsp=", D);
  if (seq % (2 * D))
    fail("sequence length ", seq, " is not divisible by 2*tsp=", 2 * D, " (zigzag chunks)");
  if (buckets < 1 || (c.num_key_value_heads / D) % buckets)
    fail("--attn-buckets=", buckets, " does not divide the ", c.num_key_value_heads / D,
         " KV heads per rank (num_key_value_heads/tsp)");
}

void validate_tpsp(const ModelConfig& c, int T, int Sigma, int64_t B, int64_t seq, int buckets,
                   bool seq_parallel) {
  if (c.num_key_value_heads % T)
    fail("num_key_value_heads=", c.num_key_value_heads, " is not divisible by tp=", T,
         " (each rank owns whole KV heads)");
  if (c.intermediate_size % T)
    fail("intermediate_size=", c.intermediate_size, " is not divisible by tp=", T);
  if (Sigma > 1 && seq % (2 * Sigma))
    fail("sequence length ", seq, " is not divisible by 2*sp=", 2 * Sigma, " (zigzag chunks)");
  if (seq_parallel && T > 1 && (B * seq / Sigma) % T)
    fail("micro-batch x sequence length / sp = ", B * seq / Sigma,
         " tokens are not divisible by tp=", T,
         " (Megatron sequence parallelism splits them over the TP ranks; or use "
         "--tp-sequence-parallel off)");
  if (buckets < 1 || (c.num_key_value_heads / T) % buckets)
    fail("--attn-buckets=", buckets, " does not divide the ", c.num_key_value_heads / T,
         " KV heads per rank (num_key_value_heads/tp)");
}

void validate_options(const Layout& L, const ParallelOptions& p, Recompute rc) {
  if (p.keep_attn_weights && !L.tsp_axis)
    fail("--keep-attn-weights needs a TSP layout (--layout tsp=D)");
  if (p.fused_mlp_recompute && !L.uses_tsp())
    fail("--fused-mlp-recompute needs a tsp or fsdp_sp layout (it fuses their MLP weight ring)");
  if (p.fused_mlp_recompute && rc != Recompute::full)
    fail(
        "--fused-mlp-recompute needs --recompute full (it fuses the recompute of the MLP into its "
        "backward ring)");
  if (p.keep_attn_weights && rc != Recompute::full)
    fail(
        "--keep-attn-weights needs --recompute full (it keeps a layer's packets from its recompute "
        "to its backward)");
  if (p.tp_seq_parallel_given && !L.tp_axis)
    fail("--tp-sequence-parallel needs a tp axis in --layout (e.g. --layout tp=2)");
  if (p.attn_buckets != 1 && !L.uses_tsp() && !L.uses_tpsp())
    fail("--attn-buckets needs a layout with sharded attention (tsp, fsdp_sp, tp or sp)");
}

}  // namespace origami
