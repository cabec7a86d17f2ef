// The optimizer step over a set of tensors: global-norm clipping and AdamW. The single-device
// model and the sharded engines hand in their own tensor lists (same order for parameters,
// gradients and both moments) and say which tensors take weight decay (2-D weights only).
#pragma once
#include <vector>

#include "kernels/kernels.h"
#include "model/params.h"

namespace origami {

// Scales the gradients by clip/(norm + 1e-6) when clip > 0 and norm exceeds it (as
// torch.nn.utils.clip_grad_norm_); `norm` is the global norm, computed by the caller.
void clip_to(const std::vector<Tensor*>& grads, double norm, double clip);
void adamw_tensors(const std::vector<Tensor*>& P, const std::vector<Tensor*>& G,
                   const std::vector<Tensor*>& M, const std::vector<Tensor*>& V,
                   const std::vector<bool>& decay, const cpu::AdamW& h, int64_t step);

// The single-device forms: the norm over every gradient; decay on tensors with two dimensions.
double clip_grad_norm(ModelParams& grads, double clip);
void adamw_update(ModelParams& params, ModelParams& grads, ModelParams& exp_avg,
                  ModelParams& exp_avg_sq, const cpu::AdamW& h, int64_t step);

}  // namespace origami
