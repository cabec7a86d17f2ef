// The registered layouts (parallel/layout.h's LayoutSpec): each one's axes, the options it takes,
// what it needs of the config and batch, its engine and what `generate` runs under it. The parser,
// validate_options, --help, `bench` and `plan` read this list; a new layout is its schedule files
// plus one spec here.
#include <memory>

#include "comm/mesh.h"
#include "parallel/engine.h"
#include "parallel/fsdp_sp.h"
#include "parallel/layout.h"
#include "parallel/tpsp.h"
#include "parallel/tsp.h"

namespace origami {

namespace {

// ---- single: the whole model on every rank (with dp: data parallelism) ------------------------
void validate_single(const Layout&, const ModelConfig&, const ParallelOptions&, int64_t, int64_t) {}
std::unique_ptr<Engine> single_engine(const Layout&, const ModelConfig& c, const ParallelOptions&,
                                      Recompute rc, Mesh mesh) {
  return make_single_engine(c, rc, std::move(mesh.dp));
}
InferKind infer_single(const Layout&) {
  return InferKind::tsp;
}  // TSP's decoder at D = 1

// ---- tsp and fsdp_sp: TSP's ownership map, shards streamed (tsp) or layers gathered (fsdp_sp) --
void validate_folded(const Layout& L, const ModelConfig& c, const ParallelOptions& p, int64_t,
                     int64_t S) {
  validate_tsp(c, L.model_degree(), S, p.attn_buckets);
  const int D = L.model_degree();
  if (p.sp_comm == SpComm::p2p && D > 1)
    fail("--sp-comm p2p is built for the sp axis only (--layout sp=", D,
         "); fsdp_sp takes allgather or a2a");
  if (D > 1) validate_sp_comm(c, D, p.sp_comm, p.attn_buckets);
  if (p.mlp_transport == MlpTransport::biring && D > 1 && c.intermediate_size / D % 2 != 0)
    fail("--mlp-transport biring splits each MLP shard in two: intermediate_size/", D, " = ",
         c.intermediate_size / D, " must be even");
}
// Sched: TspEngine, or FsdpSpEngine (TSP's pieces, whole layers gathered: fsdp_sp.h).
template <class Sched>
std::unique_ptr<Engine> folded_engine(const Layout& L, const ModelConfig& c,
                                      const ParallelOptions& p, Recompute rc, Mesh mesh) {
  const TspOptions o{.attn_buckets = p.attn_buckets,
                     .keep_attn_weights = p.keep_attn_weights,
                     .recompute = rc,
                     .fused_mlp = p.fused_mlp_recompute,
                     .mlp_transport = p.mlp_transport,
                     .sp_comm = p.sp_comm,
                     .balance = p.balance};
  return make_sharded_engine(c, std::move(mesh), L.text + sp_comm_suffix(p.sp_comm),
                             [&](Mesh& m) { return std::make_unique<Sched>(c, *m.model, o); });
}
InferKind infer_tsp(const Layout&) {
  return InferKind::tsp;
}
InferKind infer_none(const Layout&) {
  return InferKind::none;
}

// ---- tp, sp, tp+sp: Megatron TP (± sequence parallelism) on a T×Σ mesh, context-parallel SP ----
void validate_tp_sp(const Layout& L, const ModelConfig& c, const ParallelOptions& p, int64_t B,
                    int64_t S) {
  validate_tpsp(c, L.size("tp"), L.size("sp"), B, S, p.attn_buckets, p.tp_seq_parallel, p.sp_comm);
}
std::unique_ptr<Engine> tp_sp_engine(const Layout& L, const ModelConfig& c,
                                     const ParallelOptions& p, Recompute rc, Mesh mesh) {
  const TpSpOptions o{.seq_parallel = p.tp_seq_parallel,
                      .attn_buckets = p.attn_buckets,
                      .recompute = rc,
                      .sp_comm = p.sp_comm,
                      .balance = p.balance};
  std::string name = L.text + sp_comm_suffix(p.sp_comm);
  if (L.size("tp") > 1 && !p.tp_seq_parallel) name += " (no sequence parallelism)";
  return make_sharded_engine(c, std::move(mesh), name, [&](Mesh& m) {
    return std::make_unique<TpSpEngine>(c, *m.tp, *m.sp, o);
  });
}
InferKind infer_tp_sp(const Layout& L) {
  const int T = L.size("tp"), Sg = L.size("sp");
  if (T > 1 && Sg > 1) return InferKind::none;
  return T > 1 ? InferKind::tp : Sg > 1 ? InferKind::sp : InferKind::tsp;
}

const LayoutSpec kSingle{.name = "single",
                         .title = "single-device",
                         .axes = {},
                         .tp_axis = "",
                         .help = "the whole model on every rank (with dp=N: data parallelism)",
                         .attn_buckets = false,
                         .keep_attn_weights = false,
                         .fused_mlp_recompute = false,
                         .mlp_transport = false,
                         .sp_comm = false,
                         .validate = validate_single,
                         .make_engine = single_engine,
                         .infer = infer_single};
const LayoutSpec kTsp{
    .name = "tsp",
    .title = "TSP",
    .axes = {"tsp"},
    .tp_axis = "",
    .help = "tsp=D: every weight and the tokens 1/D on the same D ranks (tsp-spec)",
    .attn_buckets = true,
    .keep_attn_weights = true,
    .fused_mlp_recompute = true,
    .mlp_transport = true,
    .sp_comm = false,
    .validate = validate_folded,
    .make_engine = folded_engine<TspEngine>,
    .infer = infer_tsp};
// FSDP+SP: TSP's pieces (ownership map, token shards, K/V schedule, optimizer state, checkpoints)
// with each layer's weights gathered whole (FsdpSpEngine, fsdp_sp.h): the same volume, whole-layer
// transients.
const LayoutSpec kFsdpSp{
    .name = "fsdp_sp",
    .title = "FSDP+SP",
    .axes = {"fsdp_sp"},
    .tp_axis = "",
    .help =
        "fsdp_sp=D: TSP's shards and tokens, each layer's weights gathered whole before use "
        "(with --sp-comm a2a: FSDP+Ulysses)",
    .attn_buckets = true,
    .keep_attn_weights = false,
    .fused_mlp_recompute = true,
    .mlp_transport = false,
    .sp_comm = true,
    .validate = validate_folded,
    .make_engine = folded_engine<FsdpSpEngine>,
    .infer = infer_none};
const LayoutSpec kTpSp{
    .name = "tp+sp",
    .title = "TP+SP",
    .axes = {"tp", "sp"},
    .tp_axis = "tp",
    .help =
        "tp=T, sp=S or both: Megatron TP (with or without sequence parallelism) inside "
        "context parallelism (K/V all-gathered, or --sp-comm p2p | a2a with tp=1), TP innermost",
    .attn_buckets = true,
    .keep_attn_weights = false,
    .fused_mlp_recompute = false,
    .mlp_transport = false,
    .sp_comm = true,
    .validate = validate_tp_sp,
    .make_engine = tp_sp_engine,
    .infer = infer_tp_sp};

}  // namespace

const std::vector<const LayoutSpec*>& layout_specs() {
  static const std::vector<const LayoutSpec*> specs{&kSingle, &kTsp, &kFsdpSp, &kTpSp};
  return specs;
}

}  // namespace origami
