// The recompute-aware layer loop of one micro-batch, written once for every training engine (the
// single device, TSP and FSDP+SP, TP/SP/TP+SP): the engine supplies its steps, the loop their
// order, what a layer keeps, and the accounting context of each phase.
//
//   embed ──▶ layer 0 fwd ─▶ … ─▶ layer L−1 fwd ──▶ head: loss, dx          (each layer keeps its
//                                                     │                        input x_l, and its
//   embed bwd ◀── layer 0 [recompute] bwd ◀─ … ◀──────┘                        Acts unless
//                                                                              --recompute full)
//
// Under --recompute full a layer keeps only its input; its backward is preceded by a recompute of
// its forward from a copy of that input, communication included (tsp-spec §6), and the recomputed
// Acts replace the kept input before the backward runs. The phases' accounting: the embedding
// (kWhereEmbed, fwd / bwd), layer l (l, fwd / recompute / bwd), the head (kWhereHead, fwd: a head
// that communicates in its backward opens a nested CommScope).
#pragma once
#include <functional>
#include <vector>

#include "comm/comm.h"
#include "core/tensor.h"
#include "core/trace.h"
#include "model/model.h"

namespace origami {

// Acts: what a layer saves for its backward; it has a member `x` (the layer's input).
template <class Acts>
struct LayerSteps {
  std::function<Tensor()> embed;                                   // x [rows, h] (activations)
  std::function<void(size_t l, Tensor& x, Acts* save)> forward;    // x: input → output
  std::function<double(const Tensor& x, Tensor& dx)> head;         // loss; dx = d loss / d x
  std::function<void(size_t l, Tensor& x, Acts& save)> recompute;  // forward again, saving
  std::function<void(size_t l, Acts& a, Tensor& dx)> backward;     // dx: output → input grad
  std::function<void()> finish;  // after the last backward (optional)
  std::function<void(const Tensor& dx)> embed_backward;
};

template <class Acts>
double forward_backward_layers(const LayerSteps<Acts>& s, size_t L, Recompute rc,
                               const std::vector<Comm*>& comms) {
  const bool full = rc == Recompute::full;
  Tensor x;
  {
    CommScope c(comms, kWhereEmbed, Phase::fwd);
    x = s.embed();
  }
  std::vector<Acts> saved(L);
  for (size_t l = 0; l < L; ++l) {
    CommScope c(comms, static_cast<int>(l), Phase::fwd);
    TraceSpan span(layer_span(l, "fwd"));
    saved[l].x = x.clone(Cat::activations);  // under full recompute, all a layer keeps
    s.forward(l, x, full ? nullptr : &saved[l]);
  }
  Tensor dx = Tensor::zeros(x.shape(), x.dtype(), Cat::activations);
  double loss;
  {
    CommScope c(comms, kWhereHead, Phase::fwd);
    TraceSpan span("LM head fwd+bwd");
    loss = s.head(x, dx);
  }
  x = Tensor();
  for (size_t l = L; l-- > 0;) {
    if (full) {
      CommScope c(comms, static_cast<int>(l), Phase::recompute);
      TraceSpan span(layer_span(l, "recompute"));
      Tensor xin = saved[l].x.clone(Cat::workspace);
      Acts a;
      s.recompute(l, xin, a);
      saved[l] = std::move(a);
    }
    CommScope c(comms, static_cast<int>(l), Phase::bwd);
    TraceSpan span(layer_span(l, "bwd"));
    s.backward(l, saved[l], dx);
    saved[l] = Acts();
  }
  if (s.finish) s.finish();
  CommScope c(comms, kWhereEmbed, Phase::bwd);
  s.embed_backward(dx);
  return loss;
}

}  // namespace origami
