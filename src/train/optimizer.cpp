#include "train/optimizer.h"

#include <cmath>
#include <vector>

namespace origami {

namespace {
std::vector<Tensor*> tensors(ModelParams& p) {
  std::vector<Tensor*> v;
  p.for_each([&](const std::string&, Tensor& t) { v.push_back(&t); });
  return v;
}
}  // namespace

double clip_grad_norm(ModelParams& grads, double clip) {
  double sq = 0;
  for (Tensor* g : tensors(grads)) sq += cpu::sum_squares(g->data<float>(), g->numel());
  const double norm = std::sqrt(sq);
  if (clip > 0 && norm > clip) {
    const float s = static_cast<float>(clip / (norm + 1e-6));
    for (Tensor* g : tensors(grads)) cpu::scale_inplace(g->data<float>(), g->numel(), s);
  }
  return norm;
}

void adamw_update(ModelParams& params, ModelParams& grads, ModelParams& exp_avg,
                  ModelParams& exp_avg_sq, const cpu::AdamW& h, int64_t step) {
  const auto P = tensors(params), G = tensors(grads), M = tensors(exp_avg), V = tensors(exp_avg_sq);
  for (size_t i = 0; i < P.size(); ++i) {
    cpu::AdamW hi = h;
    if (P[i]->shape().size() != 2) hi.weight_decay = 0;
    cpu::adamw_step(P[i]->data<float>(), G[i]->data<float>(), M[i]->data<float>(),
                    V[i]->data<float>(), P[i]->numel(), hi, step);
  }
}

}  // namespace origami
