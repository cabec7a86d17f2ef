// The training loop: deterministic data by global sample index, gradient accumulation with the
// loss normalised by the global count of targets, global-norm clipping, AdamW, warmup + cosine LR,
// periodic eval, atomic checkpoints and bit-identical resume, and the run report.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "model/model.h"
#include "parallel/layout.h"

namespace origami {

struct TrainOptions {
  std::string config, data = "data/moby_dick.txt", tokenizer = "data/tokenizer.model";
  std::string dataset;  // a prepared dataset directory (origami data prepare), instead of --data
  bool pack_documents = false;  // --pack documents: whole documents, document masks
  std::string init_weights, save_dir, resume, report, trace;
  ParallelOptions par;
  int64_t steps = 100, seq = 256, micro_batch = 4, grad_accum = 1, warmup = -1;
  int64_t eval_every = 50, eval_batches = 4, log_every = 1, save_every = 0;
  int64_t max_skips = 5;  // consecutive steps with a non-finite loss or gradient norm
  int64_t keep_last = 0;  // checkpoints kept in save_dir (0 = all)
  // Before the engine allocates: the entry point's check that the run fits (cli: plan's dry run
  // of this step against --memory-limit, plan/dry_run.h check_fits). Called before select_device
  // with the run's config and layout; the check it returns is called after it. Empty: none.
  std::function<std::function<void()>(const ModelConfig&, const Layout&)> memory_check;
  double lr = 3e-4, min_lr = -1, clip = 1.0, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95;
  uint64_t seed = 1;
  bool synthetic = false, quiet = false;
  bool profile_kernels = false;  // every kernel call timed (kernels/profile.h), in the report
  Recompute recompute = Recompute::none;
};

// The exit status of a run stopped by SIGTERM or SIGINT after writing its checkpoint (EX_TEMPFAIL:
// resumable; schedulers requeue on it).
constexpr int kPreempted = 75;
// Learning rate for step (0-based): linear warmup to lr, then cosine to min_lr at `steps`.
double lr_at(const TrainOptions& o, int64_t step);
int run_train(const TrainOptions& o);

}  // namespace origami
