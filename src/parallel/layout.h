// --layout (tsp-spec §9): `axis=size` pairs, order-insensitive, omitted axes are 1, the product
// must equal the world size; world size > 1 without --layout is an error; tsp and fsdp_sp combine
// only with dp. World rank = (dp_i·Σ + sp_i)·T + tp_i (tsp, fsdp_sp: dp_i·D + i): model axes
// innermost. Parsing and validation are pure functions of (string, world size, config), so every
// rank reaches the same verdict before its first collective.
#pragma once
#include <string>

#include "model/config.h"
#include "model/model.h"
#include "runtime/runtime.h"

namespace origami {

struct Layout {
  int dp = 1, tsp = 1, tp = 1, sp = 1, fsdp_sp = 1;
  std::string text;  // canonical form, e.g. "tsp=4"
  // "" or "single": one process. world_size < 0: any (the layout's own product; plan, bench).
  static Layout parse(const std::string& s, int world_size);
  int world() const { return dp * model_degree(); }
  int model_degree() const { return tsp * tp * sp * fsdp_sp; }
  // tsp and fsdp_sp share TSP's ownership map and engine; fsdp_sp gathers whole layers instead
  // of streaming shards.
  bool uses_tsp() const { return tsp_axis || fsdp_axis; }
  int folded_degree() const { return tsp * fsdp_sp; }
  // Megatron TP and/or context-parallel SP on a T×Σ mesh (TP innermost).
  bool uses_tpsp() const { return tp_axis || sp_axis; }
  bool tsp_axis = false, fsdp_axis = false, tp_axis = false, sp_axis = false;
};

// The command-line options that choose and tune a parallel layout (train and grad share them);
// where it runs (device, communicators, link, progress thread) is runtime/runtime.h's part.
struct ParallelOptions : RuntimeOptions {
  std::string layout;  // empty: one process, the single-device model
  int attn_buckets = 1;
  bool keep_attn_weights = false;
  bool fused_mlp_recompute = false;  // tsp, fsdp_sp with --recompute full
  bool tp_seq_parallel = true;       // --tp-sequence-parallel on|off (Megatron SP inside TP)
  bool tp_seq_parallel_given = false;
};
// What the TSP schedule needs (tsp-spec §3): n_kv mod D, I mod D, S mod 2D, head buckets.
void validate_tsp(const ModelConfig& c, int D, int64_t seq, int attn_buckets);
// What TP(T)+SP(Σ) needs: n_kv mod T, I mod T, S mod 2Σ (Σ > 1), with Megatron sequence
// parallelism the B·S/Σ tokens of an SP rank split evenly over T, head buckets.
void validate_tpsp(const ModelConfig& c, int T, int Sigma, int64_t micro_batch, int64_t seq,
                   int attn_buckets, bool seq_parallel);
// Options that only some layouts or only --recompute full take, refused before any work (train,
// grad and plan share this, so all three give the same message).
void validate_options(const Layout& L, const ParallelOptions& p, Recompute rc);

}  // namespace origami
