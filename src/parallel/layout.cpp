#include "parallel/layout.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <utility>

#include "core/error.h"

namespace origami {

int Layout::model_degree() const {
  int n = 1;
  for (const auto& [axis, size] : axes) n *= size;
  return n;
}
int Layout::size(const std::string& axis) const {
  for (const auto& [a, n] : axes)
    if (a == axis) return n;
  return 1;
}
bool Layout::has(const std::string& axis) const {
  for (const auto& [a, n] : axes)
    if (a == axis) return true;
  return false;
}
bool Layout::has_tp_axis() const {
  return spec && *spec->tp_axis && has(spec->tp_axis);
}
int Layout::tp_degree() const {
  return has_tp_axis() ? size(spec->tp_axis) : 1;
}

std::string layout_axes() {
  std::string s = "dp";
  for (const LayoutSpec* sp : layout_specs())
    for (const auto& a : sp->axes) s += ", " + a;
  return s;
}

namespace {
// "a, b and c" / "a, b or c"
std::string join(const std::vector<std::string>& v, const char* last) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i)
    s += (i == 0 ? "" : i + 1 == v.size() ? std::string(" ") + last + " " : ", ") + v[i];
  return s;
}
const LayoutSpec* spec_of_axis(const std::string& axis) {
  for (const LayoutSpec* sp : layout_specs())
    for (const auto& a : sp->axes)
      if (a == axis) return sp;
  return nullptr;
}
}  // namespace

Layout Layout::parse(const std::string& s, int world) {
  Layout L;
  L.spec = layout_specs().front();  // single: no model axis
  if (s.empty() || s == "single") {
    if (world > 1)
      fail("world size ", world, " > 1 needs --layout (e.g. --layout tsp=", world, ")");
    L.text = "single";
    return L;
  }
  std::stringstream ss(s);
  std::string item;
  std::vector<std::string> seen;
  std::vector<std::pair<std::string, int>> given;
  const LayoutSpec* spec = nullptr;
  bool mixed = false;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) fail("--layout '", s, "': '", item, "' is not axis=size");
    const std::string axis = item.substr(0, eq), val = item.substr(eq + 1);
    char* end = nullptr;
    const long n = std::strtol(val.c_str(), &end, 10);
    if (val.empty() || *end || n < 1)
      fail("--layout '", s, "': ", axis, "=", val, " must be a positive integer");
    const LayoutSpec* owner = spec_of_axis(axis);
    if (axis != "dp" && !owner)
      fail("--layout '", s, "': unknown axis '", axis, "' (axes: ", layout_axes(), ")");
    if (std::find(seen.begin(), seen.end(), axis) != seen.end())
      fail("--layout '", s, "': axis '", axis, "' given twice");
    seen.push_back(axis);
    if (axis == "dp") {
      L.dp = static_cast<int>(n);
      continue;
    }
    given.emplace_back(axis, static_cast<int>(n));
    mixed |= spec && spec != owner;
    spec = owner;
  }
  if (spec) L.spec = spec;
  for (const auto& a : L.spec->axes)  // the spec's order
    for (const auto& g : given)
      if (g.first == a) L.axes.push_back(g);
  int ranks = L.dp;  // every axis given, before the layout is known to be one
  for (const auto& g : given) ranks *= g.second;
  if (world >= 0 && ranks != world)
    fail("--layout '", s, "' needs ", ranks, " ranks but the world size is ", world);
  if (mixed) {  // e.g. "tsp and fsdp_sp combine only with dp (not with each other, tp or sp)"
    std::vector<std::string> single, multi;
    for (const LayoutSpec* sp : layout_specs()) {
      if (sp->axes.size() == 1) single.push_back(sp->name);
      if (sp->axes.size() > 1) multi.insert(multi.end(), sp->axes.begin(), sp->axes.end());
    }
    if (single.size() > 1) multi.insert(multi.begin(), "each other");
    fail("--layout '", s, "': ", join(single, "and"), " combine only with dp (not with ",
         join(multi, "or"), ")");
  }
  std::ostringstream text;  // canonical: dp first, then the model axes in the spec's order
  if (L.dp > 1) text << "dp=" << L.dp;
  for (const auto& [axis, n] : L.axes) text << (text.str().empty() ? "" : ",") << axis << "=" << n;
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

void validate_sp_comm(const ModelConfig& c, int Sigma, SpComm sp_comm, int buckets) {
  if (sp_comm != SpComm::allgather && buckets != 1)
    fail("--sp-comm ", sp_comm_name(sp_comm), " takes no --attn-buckets (got ", buckets,
         "): it processes a rank's heads at once");
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads;
  if (sp_comm == SpComm::a2a && nh % Sigma)
    fail("num_attention_heads=", nh, " is not divisible by sp=", Sigma,
         " (--sp-comm a2a gives each rank num_attention_heads/sp query heads)");
  if (sp_comm == SpComm::a2a && nkv % Sigma && Sigma % nkv)
    fail("num_key_value_heads=", nkv, " and sp=", Sigma,
         ": --sp-comm a2a needs one to divide the other (KV heads split over the ranks, or each "
         "replicated on sp/num_key_value_heads ranks)");
}

void validate_tpsp(const ModelConfig& c, int T, int Sigma, int64_t B, int64_t seq, int buckets,
                   bool seq_parallel, SpComm sp_comm) {
  if (sp_comm != SpComm::allgather && Sigma > 1) {  // (no sp axis: nothing to change)
    const char* name = sp_comm_name(sp_comm);
    if (T > 1)
      fail("--sp-comm ", name, " needs tp=1 (got tp=", T,
           "): the hierarchical form inside TP groups is not built; use --sp-comm allgather");
    validate_sp_comm(c, Sigma, sp_comm, buckets);
  }
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

MlpTransport parse_mlp_transport(const std::string& s) {
  if (s == "ring") return MlpTransport::ring;
  if (s == "biring") return MlpTransport::biring;
  if (s == "broadcast") return MlpTransport::broadcast;
  fail("--mlp-transport=", s, " is not one of: ring, biring, broadcast");
}
const char* mlp_transport_name(MlpTransport t) {
  switch (t) {
    case MlpTransport::biring:
      return "biring";
    case MlpTransport::broadcast:
      return "broadcast";
    case MlpTransport::ring:
      break;
  }
  return "ring";
}

std::string mlp_transport_suffix(MlpTransport t) {
  return t == MlpTransport::ring ? "" : cat(" (", mlp_transport_name(t), ")");
}

Balance parse_balance(const std::string& s) {
  if (s == "zigzag") return Balance::zigzag;
  if (s == "documents") return Balance::documents;
  fail("--balance=", s, " is not one of: zigzag, documents");
}

SpComm parse_sp_comm(const std::string& s) {
  if (s == "allgather") return SpComm::allgather;
  if (s == "p2p") return SpComm::p2p;
  if (s == "a2a") return SpComm::a2a;
  fail("--sp-comm=", s, " is not one of: allgather, p2p, a2a");
}
const char* sp_comm_name(SpComm c) {
  switch (c) {
    case SpComm::p2p:
      return "p2p";
    case SpComm::a2a:
      return "a2a";
    case SpComm::allgather:
      break;
  }
  return "allgather";
}

std::vector<SpComm> sp_comms_of(const Layout& L) {
  if (!L.spec->sp_comm || L.tp_degree() > 1) return {SpComm::allgather};
  if (!L.has("sp")) return {SpComm::allgather, SpComm::a2a};
  return {SpComm::allgather, SpComm::p2p, SpComm::a2a};
}

std::string sp_comm_suffix(SpComm c) {
  return c == SpComm::allgather ? "" : cat(" (", sp_comm_name(c), ")");
}

void validate_options(const Layout& L, const ParallelOptions& p, Recompute rc) {
  // The specs that take an option, named as the messages name them.
  auto takers = [](bool LayoutSpec::*opt, bool axes) {
    std::vector<std::string> v;
    for (const LayoutSpec* sp : layout_specs())
      if (sp->*opt) {
        if (axes)
          v.insert(v.end(), sp->axes.begin(), sp->axes.end());
        else
          v.push_back(sp->name);
      }
    return v;
  };
  const LayoutSpec& S = *L.spec;
  if (p.keep_attn_weights && !S.keep_attn_weights) {
    std::vector<const LayoutSpec*> t;
    for (const LayoutSpec* sp : layout_specs())
      if (sp->keep_attn_weights) t.push_back(sp);
    if (t.size() == 1)  // "a TSP layout (--layout tsp=D)"
      fail("--keep-attn-weights needs a ", t[0]->title, " layout (--layout ", t[0]->axes[0], "=D)");
    fail("--keep-attn-weights needs a ", join(takers(&LayoutSpec::keep_attn_weights, false), "or"),
         " layout");
  }
  if (p.fused_mlp_recompute && !S.fused_mlp_recompute)
    fail("--fused-mlp-recompute needs a ",
         join(takers(&LayoutSpec::fused_mlp_recompute, false), "or"),
         " layout (it fuses their MLP weight ring)");
  if (p.mlp_transport != MlpTransport::ring && !S.mlp_transport)
    fail("--mlp-transport ", mlp_transport_name(p.mlp_transport), " needs a ",
         join(takers(&LayoutSpec::mlp_transport, false), "or"),
         " layout (it moves their MLP weight shards)");
  if (p.sp_comm != SpComm::allgather && !S.sp_comm) {
    std::vector<std::string> seq_axes;  // of the layouts that take it: sp (not tp), fsdp_sp
    for (const std::string& a : takers(&LayoutSpec::sp_comm, true))
      if (a.size() >= 2 && a.compare(a.size() - 2, 2, "sp") == 0) seq_axes.push_back(a + "=N");
    fail("--sp-comm ", sp_comm_name(p.sp_comm), " needs a sequence-parallel layout (--layout ",
         join(seq_axes, "or"), ")");
  }
  if (p.fused_mlp_recompute && rc != Recompute::full)
    fail(
        "--fused-mlp-recompute needs --recompute full (it fuses the recompute of the MLP into its "
        "backward ring)");
  if (p.keep_attn_weights && rc != Recompute::full)
    fail(
        "--keep-attn-weights needs --recompute full (it keeps a layer's packets from its recompute "
        "to its backward)");
  if (p.tp_seq_parallel_given && !L.has_tp_axis())
    fail("--tp-sequence-parallel needs a tp axis in --layout (e.g. --layout tp=2)");
  if (p.attn_buckets != 1 && !S.attn_buckets)
    fail("--attn-buckets needs a layout with sharded attention (",
         join(takers(&LayoutSpec::attn_buckets, true), "or"), ")");
}

}  // namespace origami
