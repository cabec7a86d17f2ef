// FSDP+SP: what differs from TSP (the diagram: fsdp_sp.h). Everything else is TspEngine's.
#include "parallel/fsdp_sp.h"

#include "parallel/tsp_internal.h"

namespace origami {

using namespace tsp;

// The whole layer's packets by one all-gather (the bytes of TSP's D broadcasts).
TspEngine::AttnStart FsdpSpEngine::attn_start(const TspLayer& W, std::vector<Tensor>*, bool) {
  AttnStart st;
  st.preq.resize(static_cast<size_t>(D_));
  st.layer = Tensor::empty({D_, t_.attn_size()}, W.attn.dtype(), Cat::comm);
  st.layer_req =
      comm_.iallgather(W.attn.raw(), st.layer.raw(), bytes(t_.attn_size()), Traffic::attn_weights);
  return st;
}

k::CPtr FsdpSpEngine::packet(const AttnStart& st, const TspLayer&, int j,
                             const std::vector<Tensor>*) const {
  return F(st.layer) + j * t_.attn_size();
}

// Every group's partial gradient kept [D, P], reduce-scattered to the owners after the layer.
void FsdpSpEngine::grads_alloc(GradReturn& g) {
  g.part[0] = Tensor::zeros({D_, t_.attn_size()}, DType::f32, Cat::comm);
}

float* FsdpSpEngine::grad_of(GradReturn& g, int j) {
  return F32(g.part[0]) + j * t_.attn_size();
}

void FsdpSpEngine::layer_done(GradReturn& g) {
  g.red = comm_.ireduce_scatter(F32(g.part[0]), F32(g.sum), t_.attn_size(), Traffic::grads);
  g.owner_pending = true;
}

RingStart FsdpSpEngine::mlp_prefetch(const TspLayer& W) {
  return gathered_prefetch(comm_, mlp_spec(W));
}

void FsdpSpEngine::mlp_weights_fwd(const TspLayer& W, const RingFwd& f, RingStart* start) {
  gathered_forward(comm_, mlp_spec(W), f, start);
}

void FsdpSpEngine::mlp_weights_bwd(const TspLayer& W, TspLayer& G, const RingBwd& f) {
  gathered_backward(comm_, mlp_spec(W), F32(G.mlp), f);
}

}  // namespace origami
