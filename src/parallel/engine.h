// What the training loop needs from a layout: the single-device model or a parallel schedule.
// The loop (trainer.cpp) is the same for every layout; an Engine owns the parameters, gradients
// and AdamW moments it holds (all of them, or this rank's shards).
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "comm/comm.h"
#include "io/checkpoint.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/params.h"

namespace origami {

struct FullState {
  ModelParams params, exp_avg, exp_avg_sq;  // HF names, full tensors
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual int rank() const = 0;  // world rank
  virtual int world() const = 0;
  virtual int dp_rank() const = 0;  // replica index (tsp-spec §9: rank = dp_i·D + i)
  virtual int dp_size() const = 0;
  virtual std::string layout() const = 0;
  // Take (this rank's part of) full parameters and, when resuming, AdamW moments.
  virtual void load_state(const FullState& s, bool with_moments) = 0;
  // A fresh training run's AdamW state (zeros), made before the first step: made lazily at the
  // first optimizer step it would take the heap space step 1's activations freed, and step 2
  // would fault fresh pages in for its last layers (14 µs a page on these VMs).
  virtual void init_moments() = 0;
  // Writes checkpoint step_N under dir (tsp-spec §10): every rank writes its own slices.
  virtual void save_checkpoint(const std::string& dir, const TrainerState& st) = 0;
  // Number of non-ignored targets over all micro-batches of the step, over all ranks.
  virtual int64_t global_targets(const std::vector<Batch>& micro) = 0;
  virtual void zero_grads() = 0;
  // One micro-batch of the global batch: grads += d(inv_n * CE)/dθ; returns this rank's CE sum.
  virtual double forward_backward(const Batch& global, double inv_n) = 0;
  // Completes the step's gradients: the once-per-step sums (replicated norms over the model
  // axis, everything over dp). Call once, after the last micro-batch.
  virtual void reduce_grads() = 0;
  // Clips the completed gradients (clip > 0) and returns the global norm.
  virtual double clip_grads(double clip) = 0;
  // The completed gradients as full HF-named tensors on every rank (for `origami grad`).
  virtual void full_grads(ModelParams& out) = 0;
  virtual void adamw(const cpu::AdamW& h, int64_t step) = 0;
  virtual double sum_over_ranks(double x) = 0;
  // Sum of the CE over every rank's batch (each replica passes its own share), no gradients.
  virtual double eval_sum(const Batch& global) = 0;
  // Per-rank extras for the report (communication bytes); gathered to rank 0 by the caller.
  virtual nlohmann::json rank_report() = 0;
  // Every rank of the run (timing: the skew at the end of a step; aligning trace clocks).
  virtual void barrier() = 0;
};

// dp: the data-parallel axis (a one-rank communicator for no DP).
std::unique_ptr<Engine> make_single_engine(const ModelConfig& c, Recompute rc,
                                           std::unique_ptr<Comm> dp);

// The engine of a layout (sharded_train.cpp): single/dp, tsp, fsdp_sp, tp/sp (all with dp).
// `seq` and `micro_batch` are validated against the layout first, identically on every rank.
struct Layout;
struct ParallelOptions;
std::unique_ptr<Engine> make_engine(const Layout& L, const ModelConfig& c, const ParallelOptions& p,
                                    Recompute rc, int64_t micro_batch, int64_t seq);
// What make_engine refuses (the same message on every rank, before any collective).
void validate_engine(const Layout& L, const ModelConfig& c, const ParallelOptions& p, Recompute rc,
                     int64_t micro_batch, int64_t seq);
// The engine on communicators made elsewhere (the dry run's, plan/dry_run.h), validated already:
// the layout spec's factory (parallel/layouts.cpp).
struct Mesh;
std::unique_ptr<Engine> make_engine_on(const Layout& L, const ModelConfig& c,
                                       const ParallelOptions& p, Recompute rc, Mesh mesh);

// The training engine of a sharded schedule (TSP, FSDP+SP, TP+SP): the schedule, made by `make`
// on the mesh the engine keeps, holds its shards; the engine the optimizer state, the loss rules
// and the checkpoints (sharded_train.cpp). `name` is the layout the reports show.
class ShardedSchedule;
using ScheduleMaker = std::function<std::unique_ptr<ShardedSchedule>(Mesh&)>;
std::unique_ptr<Engine> make_sharded_engine(const ModelConfig& c, Mesh mesh, std::string name,
                                            const ScheduleMaker& make);

// DP helpers shared by the engines: the gradient sum over replicas (fixed order, in place;
// category grads, once per step) and a sum of scalars.
void dp_sum_grads(Comm& dp, const std::vector<Tensor*>& grads);

}  // namespace origami
