// Shared by the TSP schedule files: what a block saves and small tensor helpers.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "model/block.h"
#include "parallel/tsp.h"

namespace origami {

struct TspEngine::Acts {
  Tensor x;                             // block input
  Tensor n1, rstd1, n2, rstd2;          // normalised inputs of both norms and their rstd
  std::vector<Tensor> q, k, v, o, lse;  // per (head group j, bucket b), index j*N + b; k, v local
  // (--sp-comm a2a: q, k, v, lse of head group r over every token; o [D, T, ·] every group's
  // output for this rank's tokens; O head group r's output over every token)
  Tensor O;
  std::vector<Tensor> g, u;  // per MLP shard s
};

namespace tsp {
using block::act;
using block::act32;
using block::bytes;
using block::F;
using block::F32;
using block::ws;
using block::ws0;
using block::ws32;
using block::ws32_0;
}  // namespace tsp

}  // namespace origami
