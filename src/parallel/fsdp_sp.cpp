// FSDP+SP: what differs from TSP (the diagram: fsdp_sp.h). Everything else is TspEngine's.
#include "parallel/fsdp_sp.h"

#include "parallel/tsp_internal.h"

namespace origami {

using namespace tsp;

// The whole layer's packets by one all-gather (the bytes of TSP's D broadcasts).
TspEngine::AttnStart FsdpSpEngine::attn_start(const TspLayer& W, std::vector<Tensor>*, bool) {
  AttnStart st;
  st.preq.resize(static_cast<size_t>(D_));
  st.layer = Tensor::empty({D_, t_.attn_size()}, DType::f32, Cat::comm);
  st.layer_req =
      comm_.iallgather(F(W.attn), F(st.layer), bytes(t_.attn_size()), Traffic::attn_weights);
  return st;
}

const float* FsdpSpEngine::packet(const AttnStart& st, const TspLayer&, int j,
                                  const std::vector<Tensor>*) const {
  return F(st.layer) + j * t_.attn_size();
}

// Every group's partial gradient kept [D, P], reduce-scattered to the owners after the layer.
void FsdpSpEngine::grads_alloc(GradReturn& g) {
  g.part[0] = Tensor::zeros({D_, t_.attn_size()}, DType::f32, Cat::comm);
}

float* FsdpSpEngine::grad_of(GradReturn& g, int j) {
  return F(g.part[0]) + j * t_.attn_size();
}

void FsdpSpEngine::layer_done(GradReturn& g) {
  g.red = comm_.ireduce_scatter(F(g.part[0]), F(g.sum), t_.attn_size(), Traffic::grads);
  g.owner_pending = true;
}

RingStart FsdpSpEngine::mlp_prefetch(const TspLayer& W) {
  return gathered_prefetch(comm_, mlp_spec(W));
}

void FsdpSpEngine::mlp_weights_fwd(const TspLayer& W,
                                   const std::function<void(int, const float*)>& f,
                                   RingStart* start) {
  gathered_forward(comm_, mlp_spec(W), f, start);
}

void FsdpSpEngine::mlp_weights_bwd(const TspLayer& W, TspLayer& G,
                                   const std::function<void(int, const float*, float*)>& f) {
  gathered_backward(comm_, mlp_spec(W), F(G.mlp), f);
}

}  // namespace origami
