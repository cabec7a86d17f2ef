// --layout (tsp-spec §9): `axis=size` pairs, order-insensitive, omitted axes are 1, the product
// must equal the world size; world size > 1 without --layout is an error; tsp and fsdp_sp combine
// only with dp. World rank = (dp_i·Σ + sp_i)·T + tp_i (tsp, fsdp_sp: dp_i·D + i): model axes
// innermost. Parsing and validation are pure functions of (string, world size, config), so every
// rank reaches the same verdict before its first collective.
#pragma once
#include <string>

#include "comm/comm.h"
#include "model/config.h"
#include "model/model.h"

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

// The command-line options that choose and tune a parallel layout (train and grad share them).
struct ParallelOptions {
  std::string layout;  // empty: one process, the single-device model
  int attn_buckets = 1;
  bool keep_attn_weights = false, overlap = true;
  bool fused_mlp_recompute = false;  // tsp, fsdp_sp with --recompute full
  bool tp_seq_parallel = true;       // --tp-sequence-parallel on|off (Megatron SP inside TP)
  bool tp_seq_parallel_given = false;
  double link_gbps = 0, link_latency_us = 0;  // --emulate-link (0: off)
  double progress_us = 100;                   // --progress-thread (0: off)
  std::string device = "cpu";                 // --device cpu|cuda|emu
  std::string comm = "auto";                  // --comm auto|mpi|mpi_staged|nccl
  void (*use_cuda)() = nullptr;   // set by the entry point when the CUDA backend is built in
  CommMaker make_nccl = nullptr;  // likewise when it is built with NCCL
};
// Selects p.device for the rest of the process: from here on tensors are allocated there and the
// kernels are its own (cuda: needs use_cuda and a visible device; emu: kernels/emu.h). Refuses a
// --comm the device cannot use first. Call after the host-side inputs are loaded and before the
// engine is made.
void select_device(const ParallelOptions& p);
// --comm resolved: auto is mpi on the CPU and mpi_staged on a device.
std::string comm_kind(const ParallelOptions& p);
// make_mesh(M, T) with communicators of the --comm kind: MPI's; MPI's wrapped into the staged
// one, which takes device buffers (several ranks may share a GPU); or NCCL's.
Mesh make_layout_mesh(const ParallelOptions& p, int M, int T = 1);

// What the TSP schedule needs (tsp-spec §3): n_kv mod D, I mod D, S mod 2D, head buckets.
void validate_tsp(const ModelConfig& c, int D, int64_t seq, int attn_buckets);
// What TP(T)+SP(Σ) needs: n_kv mod T, I mod T, S mod 2Σ (Σ > 1), with Megatron sequence
// parallelism the B·S/Σ tokens of an SP rank split evenly over T, head buckets.
void validate_tpsp(const ModelConfig& c, int T, int Sigma, int64_t micro_batch, int64_t seq,
                   int attn_buckets, bool seq_parallel);
// --emulate-link GBPS[,LATENCY_US] into p.link_gbps, p.link_latency_us (train, grad and bench).
void parse_emulated_link(const std::string& v, ParallelOptions& p);
// Options that only some layouts or only --recompute full take, refused before any work (train,
// grad and plan share this, so all three give the same message).
void validate_options(const Layout& L, const ParallelOptions& p, Recompute rc);

}  // namespace origami
