#include "model/optimizer.h"

#include <cmath>

#include "kernels/dispatch.h"

namespace origami {

namespace {
std::vector<Tensor*> tensors(ModelParams& p) {
  std::vector<Tensor*> v;
  p.for_each([&](const std::string&, Tensor& t) { v.push_back(&t); });
  return v;
}
}  // namespace

void clip_to(const std::vector<Tensor*>& grads, double norm, double clip) {
  if (!(clip > 0 && norm > clip)) return;
  const float s = static_cast<float>(clip / (norm + 1e-6));
  for (Tensor* g : grads) k::scale_inplace<float>(g->data<float>(), g->numel(), s);
}

void adamw_tensors(const std::vector<Tensor*>& P, const std::vector<Tensor*>& G,
                   const std::vector<Tensor*>& M, const std::vector<Tensor*>& V,
                   const std::vector<bool>& decay, const cpu::AdamW& h, int64_t step) {
  for (size_t i = 0; i < P.size(); ++i) {
    cpu::AdamW hi = h;
    if (!decay[i]) hi.weight_decay = 0;
    k::adamw_step<float>(P[i]->data<float>(), G[i]->data<float>(), M[i]->data<float>(),
                         V[i]->data<float>(), P[i]->numel(), hi, step);
  }
}

double clip_grad_norm(ModelParams& grads, double clip) {
  const auto G = tensors(grads);
  double sq = 0;
  for (Tensor* g : G) sq += k::sum_squares<float>(g->data<float>(), g->numel());
  const double norm = std::sqrt(sq);
  clip_to(G, norm, clip);
  return norm;
}

void adamw_update(ModelParams& params, ModelParams& grads, ModelParams& exp_avg,
                  ModelParams& exp_avg_sq, const cpu::AdamW& h, int64_t step) {
  const auto P = tensors(params);
  std::vector<bool> decay;
  for (Tensor* p : P) decay.push_back(p->shape().size() == 2);
  adamw_tensors(P, tensors(grads), tensors(exp_avg), tensors(exp_avg_sq), decay, h, step);
}

}  // namespace origami
