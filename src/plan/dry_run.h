// `origami plan` as a dry run of the real engines: every rank of one replica runs as a thread on
// the meta device (kernels/meta.h: tracked allocations without memory, kernels and copies that do
// nothing) with the dry run's communicators (comm/sim_comm.h: complete when every rank has posted,
// the bytes and the scratch of MpiComm); the DP axis is one rank standing for its identical
// replicas. Each thread makes the layout's engine, its AdamW state, and runs one training step
// exactly as `origami train` does (train/step.h) on the synthetic batch `train --synthetic --seed 1`
// reads first (so the embedding's data-dependent exchange moves the rows that run would). The
// predicted peaks are the engines' own allocations, per category, the worst rank's; the bytes per
// layer are what the engines' communicators record. Nothing is computed and no memory beyond the
// host-side bookkeeping is used: the paper's 7B at 128K tokens plans in milliseconds.
//
// A clock comes next (a later issue): kernels and transfers are the places a duration goes — the
// meta kernel table and SimComm's completion.
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/memory.h"
#include "model/config.h"
#include "model/model.h"
#include "parallel/layout.h"
#include "plan/hardware.h"

namespace origami::plan {

struct Input {
  ModelConfig cfg;
  Layout layout;
  ParallelOptions par;
  Recompute recompute = Recompute::none;
  int64_t micro_batch = 1;  // sequences per replica per micro-step
  int64_t seq = 0;
  DType dtype = DType::f32;  // the engines' compute type (--dtype), set for the run
  int threads = 1;  // OpenMP threads per rank (the attention kernels keep tiles per thread)
  // With a hardware profile the dry run keeps time (core/sim_clock.h): every kernel takes the
  // profile's time for its work, every transfer its link's (plan/hardware.h).
  const Hardware* hw = nullptr;
  bool trace = false;  // with hw: keep every rank's simulated timeline (Timing::trace)
  // With hw, counterfactual attention charges (sim::AttnCharge): a dense masked kernel, or the
  // sequence split into contiguous chunks instead of zigzag (the engines still run zigzag).
  bool dense_attention = false, contiguous = false;
};

// The simulated times of one training step and of one forward pass (eval_sum, the paper's
// large-scale figure), seconds.
struct Timing {
  double step_s = 0;            // training step: the last rank's end
  double step_compute_s = 0;    // the busiest rank's kernels
  double step_exposed_s = 0;    // the worst rank's time waiting for transfers
  double step_link_busy_s = 0;  // the busiest rank's wire time (received bytes / bandwidth)
  double fwd_s = 0, fwd_exposed_s = 0;
  std::vector<std::vector<TraceEvent>> trace;  // per rank (rank 0 first), when asked
};

struct Result {
  std::array<int64_t, kNumCats> peak{};  // per category, worst rank
  int64_t total = 0;                     // maximum over time of the sum, worst rank
  // Bytes one rank receives per layer and micro-step, by category and phase (layer 0 of rank 0;
  // tsp-spec §7: every layer and every rank alike).
  nlohmann::json comm_per_layer;
  Timing time;  // with Input::hw
  nlohmann::json to_json() const;
};

// Validates the layout like `train` does (same errors) and runs one training step in steady state
// (AdamW state allocated) of every rank of a replica.
Result dry_run(const Input& in);

}  // namespace origami::plan

namespace origami::plan {

// The memory this rank may use, after select_device: on a device with its own memory (cuda) this
// rank's share of the device's free memory; on the host (cpu, emu) MemAvailable of
// /proc/meminfo, lowered to the cgroup's remaining limit where one is set, shared evenly among
// this host's ranks (the ranks of MPI_COMM_WORLD that share memory with this one).
struct Capacity {
  int64_t bytes = -1;  // -1: unknown (no check)
  std::string what;    // where the number comes from, for the message
};
Capacity rank_capacity();

// Refuses a run whose predicted per-rank peak r.total, plus what the process already holds
// (its resident set when tensors live on the host), exceeds what a rank can use: `limit_gib`
// GiB when >= 0, else rank_capacity(). Under MPI every rank takes the world's smallest capacity
// and largest baseline, so all reach the same verdict. The message names the fields that size
// the run. Called by `train` after select_device, before the engine allocates anything.
void check_fits(const Input& in, const Result& r, double limit_gib, const std::string& config_path);

}  // namespace origami::plan
