// Shared by the TSP schedule files: what a block saves and small tensor helpers.
#pragma once
#include <vector>

#include "comm/comm.h"
#include "core/tensor.h"
#include "kernels/dispatch.h"
#include "parallel/tsp.h"

namespace origami {

struct TspEngine::Acts {
  Tensor x;                             // block input
  Tensor n1, rstd1, n2, rstd2;          // normalised inputs of both norms and their rstd
  std::vector<Tensor> q, k, v, o, lse;  // per (head group j, bucket b), index j*N + b; k, v local
  std::vector<Tensor> g, u;             // per MLP shard s
};

namespace tsp {
inline Tensor act(std::vector<int64_t> s) {
  return Tensor::empty(std::move(s), DType::f32, Cat::activations);
}
inline Tensor ws(std::vector<int64_t> s) {
  return Tensor::empty(std::move(s), DType::f32, Cat::workspace);
}
inline Tensor ws0(std::vector<int64_t> s) {
  return Tensor::zeros(std::move(s), DType::f32, Cat::workspace);
}
inline float* F(Tensor& t) {
  return t.data<float>();
}
inline const float* F(const Tensor& t) {
  return t.data<float>();
}

// The end of an attention unit's backward (tsp-spec §6), shared by TSP, FSDP+SP and TP+SP: a
// projection's output gradient dp [T, w] (dq, or this rank's dk, dv after their reduce-scatter),
// RoPE undone where it was applied, gives dW += dpᵀ·y1 and dy1 += dp·W; progress between GEMMs.
struct ProjBwd {
  Comm& comm;
  const int64_t* pos;
  const Tensor &cos, &sin;
  const Tensor& y1;
  Tensor& dy1;
  int64_t T, h;
  int d;
  void operator()(float* dp, int64_t w, int heads, bool rope, const float* W, float* G) const {
    if (rope) k::rope_bwd<float>(dp, w, pos, T, heads, d, F(cos), F(sin));
    comm.progress();
    k::linear_bwd_w<float>(G, dp, F(y1), T, w, h);
    comm.progress();
    k::linear_bwd_x<float>(F(dy1), dp, W, T, w, h);
  }
};
}  // namespace tsp

}  // namespace origami
