#include "train/step.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "core/trace.h"
#include "train/data.h"

namespace origami {

StepResult train_step(Engine& e, const std::vector<Batch>& micro, const cpu::AdamW& hp, double clip,
                      int64_t step) {
  StepResult r;
  e.zero_grads();
  r.targets = e.global_targets(micro);  // before the first backward
  if (r.targets == 0 && e.rank() == 0)
    std::fprintf(stderr,
                 "warning: step %lld has no non-ignored targets; loss and gradients are 0\n",
                 static_cast<long long>(step));
  const double inv_n = r.targets ? 1.0 / static_cast<double>(r.targets) : 0.0;
  double loss_sum = 0;
  for (const auto& b : micro) loss_sum += e.forward_backward(b, inv_n);
  r.loss = e.sum_over_ranks(loss_sum) * inv_n;
  TraceSpan span("gradient sums, clipping, AdamW");
  e.reduce_grads();
  r.grad_norm = e.clip_grads(clip);
  // AdamW squares the (clipped) gradient into fp32 moments: a norm at or above sqrt(FLT_MAX) could
  // overflow one, so it counts as non-finite too.
  const double applied = clip > 0 ? std::min(r.grad_norm, clip) : r.grad_norm;
  r.skipped = !std::isfinite(r.loss) || !std::isfinite(r.grad_norm) ||
              !(applied < std::sqrt(static_cast<double>(std::numeric_limits<float>::max())));
  if (!r.skipped) e.adamw(hp, step + 1);
  return r;
}

Batch synthetic_batch(uint64_t seed, int64_t first_index, int64_t B, int64_t S, int64_t vocab) {
  Batch b;
  b.B = B;
  b.S = S;
  b.inputs.resize(static_cast<size_t>(B * S));
  b.targets.resize(static_cast<size_t>(B * S));
  for (int64_t i = 0; i < B; ++i)
    synthetic_sample(seed, first_index + i, S, vocab, b.inputs.data() + i * S,
                     b.targets.data() + i * S);
  return b;
}

}  // namespace origami
