// FSDP+SP on one axis (tsp-spec §9, ours): TSP's ownership map, token shards, K/V schedule,
// optimizer state and checkpoints, but each layer's weights are gathered whole before use and
// their gradients reduce-scattered to the owners — the question "is it the folding or the
// gathering?" answered in the same engine. Same bytes as TSP in every phase (tsp-spec §7); the
// transients differ: a whole layer D·P (attention) and D·M (MLP) instead of streamed shards.
//
//   attention  all-gather the layer's D packets (attn_weights) ─▶ the TSP head-group pipeline on
//              them (K/V all-gather per unit, as TSP) ─▶ backward: every group's partial kept,
//              one reduce-scatter of [D, P] to the owners at the end (grads)
//   MLP        all-gather the layer's D shards ─▶ compute with each in ring order ─▶ backward:
//              one reduce-scatter of the partials (ring.h's gathered_forward / gathered_backward)
#pragma once
#include "parallel/tsp.h"

namespace origami {

class FsdpSpEngine : public TspEngine {
 public:
  using TspEngine::TspEngine;

 protected:
  AttnStart attn_start(const TspLayer& W, std::vector<Tensor>* into, bool have) override;
  void attn_post_packet(AttnStart&, const TspLayer&, int, std::vector<Tensor>*) override {}
  k::CPtr packet(const AttnStart& st, const TspLayer& W, int j,
                 const std::vector<Tensor>* kept) const override;
  void grads_alloc(GradReturn& g) override;
  float* grad_of(GradReturn& g, int j) override;
  void group_begin(GradReturn&, AttnStart&, const TspLayer&, TspLayer&, int,
                   const std::vector<Tensor>*) override {}
  void group_done(GradReturn&, TspLayer&, int) override {}
  void layer_done(GradReturn& g) override;
  RingStart mlp_prefetch(const TspLayer& W) override;
  void mlp_weights_fwd(const TspLayer& W, const RingFwd& f, RingStart* start) override;
  void mlp_weights_bwd(const TspLayer& W, TspLayer& G, const RingBwd& f) override;
};

}  // namespace origami
