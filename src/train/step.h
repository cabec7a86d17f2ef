// One optimizer step of any engine, as the training loop and the dry run (plan) run it
// (tsp-spec §6): N, the non-ignored targets of every micro-batch over every rank, before the first
// backward; each micro-batch's gradients of Σ CE / N; the once-per-step gradient sums; global-norm
// clipping; AdamW.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "model/model.h"
#include "parallel/engine.h"

namespace origami {

struct StepResult {
  double loss = 0, grad_norm = 0;
  int64_t targets = 0;   // N
  bool skipped = false;  // a non-finite loss or gradient norm: no update was applied
};
// `micro`: this replica's micro-batches; `step`: 0-based (AdamW's bias correction uses step + 1).
// N = 0 gives loss and gradients 0 and a warning on rank 0. A non-finite loss or gradient norm
// (both the same on every rank: summed over them), or an applied gradient norm whose square would
// overflow AdamW's fp32 moments (>= sqrt(FLT_MAX)), skips the update, so the weights and moments
// stay those of the last finite step.
StepResult train_step(Engine& e, const std::vector<Batch>& micro, const cpu::AdamW& hp, double clip,
                      int64_t step);
// A batch of B synthetic sequences, samples first_index, first_index + 1, … (train/data.h).
Batch synthetic_batch(uint64_t seed, int64_t first_index, int64_t B, int64_t S, int64_t vocab);

}  // namespace origami
