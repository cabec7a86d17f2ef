// --layout (tsp-spec §9): `axis=size` pairs, order-insensitive, omitted axes are 1, the product
// must equal the world size; world size > 1 without --layout is an error; tsp and fsdp_sp combine
// only with dp. World rank = (dp_i·Σ + sp_i)·T + tp_i (tsp, fsdp_sp: dp_i·D + i): model axes
// innermost. Parsing and validation are pure functions of (string, world size, config), so every
// rank reaches the same verdict before its first collective.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/model.h"
#include "runtime/runtime.h"

namespace origami {

struct LayoutSpec;

// A parsed --layout: the data-parallel degree and the model axes of one registered layout.
struct Layout {
  const LayoutSpec* spec = nullptr;  // parse() sets it: the layout the model axes belong to
  int dp = 1;
  std::vector<std::pair<std::string, int>> axes;  // the model axes given, in the spec's order
  std::string text;                               // canonical form, e.g. "dp=2,tsp=4"
  // "" or "single": one process. world_size < 0: any (the layout's own product; plan, bench).
  static Layout parse(const std::string& s, int world_size);
  int world() const { return dp * model_degree(); }
  int model_degree() const;
  // The size of a model axis (1 when not given) and whether it was given.
  int size(const std::string& axis) const;
  bool has(const std::string& axis) const;
  // Whether the spec's tp axis (the mesh's TP groups of consecutive ranks, comm/mesh.h) was
  // given, and its size (else 1): the axis --tp-sequence-parallel applies to.
  bool has_tp_axis() const;
  int tp_degree() const;
};

// How TSP's MLP weight shards and gradient accumulators travel (--mlp-transport): the
// one-neighbour ring (tsp-spec §5), a bidirectional ring (each shard in two halves, one per
// direction: both neighbour links busy), or owner broadcast (every shard gathered by all at once,
// the partial gradients reduce-scattered home: every link of a full mesh busy, D shards alive).
enum class MlpTransport { ring, biring, broadcast };
MlpTransport parse_mlp_transport(const std::string& s);
const char* mlp_transport_name(MlpTransport t);
// How a row of plan or bench names a transport after its layout: "" (ring), " (biring)".
std::string mlp_transport_suffix(MlpTransport t);

// How the sp axis's attention sees every token (--sp-comm): all-gather K/V (Megatron's
// all_gather context parallelism, the default), pass K/V around a ring (p2p: ring attention), or
// all-to-all q, k, v into head shards and o back (a2a: DeepSpeed Ulysses).
enum class SpComm { allgather, p2p, a2a };
SpComm parse_sp_comm(const std::string& s);
const char* sp_comm_name(SpComm c);
// How a row of plan or bench names it after its layout: "" (allgather), " (a2a)".
std::string sp_comm_suffix(SpComm c);
// How the sequence axis's 2D chunks of a batch are dealt to its ranks (--balance): zigzag (rank r
// takes chunks r and 2D-1-r: equal causal work for one document a sequence), or documents (the
// chunks' attention work under the batch's document masks, summed over its sequences, sorted;
// rank i takes the i-th lightest and the i-th heaviest: zigzag again without packing).
enum class Balance { zigzag, documents };
Balance parse_balance(const std::string& s);

// The methods a layout takes (allgather alone where it has no choice; p2p on the sp axis only):
// what plan and bench run for --sp-comm all.
std::vector<SpComm> sp_comms_of(const Layout& L);

// The command-line options that choose and tune a parallel layout (train and grad share them);
// where it runs (device, communicators, link, progress thread) is runtime/runtime.h's part.
struct ParallelOptions : RuntimeOptions {
  std::string layout;  // empty: one process, the single-device model
  int attn_buckets = 1;
  bool keep_attn_weights = false;
  bool fused_mlp_recompute = false;  // tsp, fsdp_sp with --recompute full
  bool tp_seq_parallel = true;       // --tp-sequence-parallel on|off (Megatron SP inside TP)
  bool tp_seq_parallel_given = false;
  MlpTransport mlp_transport = MlpTransport::ring;  // tsp
  SpComm sp_comm = SpComm::allgather;               // sp
  Balance balance = Balance::zigzag;                // layouts with a sequence axis
};
// What the TSP schedule needs (tsp-spec §3): n_kv mod D, I mod D, S mod 2D, head buckets.
void validate_tsp(const ModelConfig& c, int D, int64_t seq, int attn_buckets);
// What TP(T)+SP(Σ) needs: n_kv mod T, I mod T, S mod 2Σ (Σ > 1), with Megatron sequence
// parallelism the B·S/Σ tokens of an SP rank split evenly over T, head buckets.
void validate_tpsp(const ModelConfig& c, int T, int Sigma, int64_t micro_batch, int64_t seq,
                   int attn_buckets, bool seq_parallel, SpComm sp_comm = SpComm::allgather);
// What --sp-comm p2p | a2a need of Σ ranks' heads and options (train, grad, plan, and generate's
// SP prefill share the messages): no head buckets, a2a n_h mod Σ and n_kv | Σ or Σ | n_kv.
void validate_sp_comm(const ModelConfig& c, int Sigma, SpComm sp_comm, int attn_buckets = 1);
// Options that only some layouts or only --recompute full take, refused before any work (train,
// grad and plan share this, so all three give the same message).
void validate_options(const Layout& L, const ParallelOptions& p, Recompute rc);

// ---- the registry: a layout is its schedule files plus one spec (layouts.cpp) -----------------
class Engine;
struct Mesh;
// What `origami generate` runs under a layout (infer/decoder.h's decoders).
enum class InferKind { none, tsp, tp, sp };
struct LayoutSpec {
  const char* name;               // e.g. "tsp"
  const char* title;              // in messages, e.g. "TSP"
  std::vector<std::string> axes;  // its model axes (a --layout naming any of them is this layout)
  const char* tp_axis;            // the axis of the mesh's TP groups (consecutive ranks), or ""
  const char* help;               // one line of --help
  // The options it takes (validate_options refuses the others with the messages users see).
  bool attn_buckets, keep_attn_weights, fused_mlp_recompute, mlp_transport, sp_comm;
  // What the schedule needs of the config, batch and options (the same error on every rank).
  void (*validate)(const Layout& L, const ModelConfig& c, const ParallelOptions& p,
                   int64_t micro_batch, int64_t seq);
  // The engine on the mesh of one replica (make_engine_on), validated already.
  std::unique_ptr<Engine> (*make_engine)(const Layout& L, const ModelConfig& c,
                                         const ParallelOptions& p, Recompute rc, Mesh mesh);
  InferKind (*infer)(const Layout& L);  // what generate runs (none: refused)
};
// Every registered layout, "single" (no model axis) first.
const std::vector<const LayoutSpec*>& layout_specs();
// Every axis --layout takes (dp, then each spec's), for messages and --help.
std::string layout_axes();

}  // namespace origami
