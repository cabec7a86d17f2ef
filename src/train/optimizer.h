// The optimizer step over a whole parameter set: global-norm clipping and AdamW (decay on 2-D
// weights only). Parameters, gradients and both moments are walked in the same (HF) order.
#pragma once
#include "kernels/kernels.h"
#include "model/params.h"

namespace origami {

// Returns the global gradient norm before clipping; scales the gradients by clip/(norm + 1e-6)
// when clip > 0 and the norm exceeds it (as torch.nn.utils.clip_grad_norm_).
double clip_grad_norm(ModelParams& grads, double clip);
void adamw_update(ModelParams& params, ModelParams& grads, ModelParams& exp_avg,
                  ModelParams& exp_avg_sq, const cpu::AdamW& h, int64_t step);

}  // namespace origami
