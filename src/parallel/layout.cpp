#include "parallel/layout.h"

#include <cstdlib>
#include <sstream>
#include <utility>

#include "comm/staged_comm.h"
#include "core/error.h"
#include "kernels/emu.h"

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

void parse_emulated_link(const std::string& v, ParallelOptions& p) {
  char* end = nullptr;
  p.link_gbps = std::strtod(v.c_str(), &end);
  p.link_latency_us = 0;
  if (end != v.c_str() && *end == ',') p.link_latency_us = std::strtod(end + 1, &end);
  if (end == v.c_str() || *end || !(p.link_gbps > 0) || p.link_latency_us < 0)
    fail("--emulate-link=", v, " is not GBPS[,LATENCY_US] with GBPS > 0 and LATENCY_US >= 0");
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

std::string comm_kind(const ParallelOptions& p) {
  if (p.comm != "auto") return p.comm;
  return p.device == "cpu" ? "mpi" : "mpi_staged";
}

void select_device(const ParallelOptions& p) {
  const std::string c = comm_kind(p);
  if (c != "mpi" && c != "mpi_staged" && c != "nccl")
    fail("--comm=", p.comm, " is not one of: auto, mpi, mpi_staged, nccl");
  if (c == "nccl" && p.device != "cuda") fail("--comm nccl needs --device cuda");
  if (p.device == "cpu" && c != "mpi")
    fail("--comm ", c, " stages device buffers: it needs --device cuda or emu");
  if (p.device != "cpu" && c == "mpi")
    fail("--comm mpi hands tensors to MPI directly, which cannot read --device ", p.device,
         " memory (Debian's Open MPI is not CUDA-aware): use --comm mpi_staged or nccl");
  if (c == "nccl" && !p.make_nccl)
    fail(
        "--comm nccl: this binary was built without NCCL (the CUDA build finds it next to the "
        "toolkit); use --comm mpi_staged");
  if (p.device == "cpu") return;
  if (p.device == "emu") return emu::use_emulated_device();
  if (p.device != "cuda") fail("--device=", p.device, " is not one of: cpu, cuda, emu");
  if (!p.use_cuda)
    fail(
        "--device cuda: this binary has no CUDA backend; run origami-cuda (built next to it when "
        "the CUDA toolkit is found, -DORIGAMI_CUDA=ON)");
  p.use_cuda();
}

// The layout's communicators of the --comm kind: MPI's; MPI's wrapped into the staged one, which
// takes device buffers (several ranks may share a GPU); or NCCL's.
Mesh make_layout_mesh(const ParallelOptions& p, int M, int T) {
  const std::string kind = comm_kind(p);
  if (kind == "nccl") return make_mesh(M, T, p.make_nccl);
  Mesh m = make_mesh(M, T);
  if (kind == "mpi_staged")
    for (auto* c : {&m.model, &m.dp, &m.tp, &m.sp})
      if (*c) *c = make_staged_comm(std::move(*c));
  return m;
}

}  // namespace origami
