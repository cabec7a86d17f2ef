// Shared by the TSP schedule files: what a block saves and small tensor helpers.
#pragma once
#include <vector>

#include "core/tensor.h"
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

}  // namespace tsp

}  // namespace origami
