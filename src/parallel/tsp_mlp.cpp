// TSP gated MLP (tsp-spec §5, §6): rank r owns intermediate units [r·I/D, (r+1)·I/D) packed as
// [W_gate rows | W_up rows | W_down columns]. The shards travel around the ring (ring.h) while
// every rank multiplies its local tokens with the shard it holds:
//
//   step t, shard s = (r - t) mod D:  g = y2·W_gate,sᵀ  u = y2·W_up,sᵀ  a = silu(g)⊙u
//                                     x += a·W_down,sᵀ        (no all-reduce: the sum over s
//                                                              completes the output locally)
// Backward: the same ring; per shard da = dy·W_down,s, dg/du from swiglu, dy2 += dg·W_gate,s +
// du·W_up,s, and the partial dW_s (dyᵀa, dgᵀy2, duᵀy2 from the local tokens) rides the
// accumulator home to the owner. With --fused-mlp-recompute (under full recompute) the recompute
// skips the MLP and each backward step first recomputes g = y2·W_gate,sᵀ, u = y2·W_up,sᵀ from
// the shard that just arrived: one ring per layer less, and one shard's g, u alive instead of D.
#include "core/trace.h"
#include "kernels/dispatch.h"
#include "parallel/ring.h"
#include "parallel/tsp_internal.h"

namespace origami {

using k::AttnShape;
using k::KvSeg;
using k::QSeg;
using k::Trans;
using namespace tsp;

void TspEngine::mlp_fwd(const TspLayer& W, const Tensor& y2, Tensor& x, Acts* a, RingStart* start,
                        const std::function<void()>& before_last) {
  const int64_t T = z_.local_tokens(), h = t_.h, Ir = t_.Ir;
  if (a) {
    a->g.assign(D_, Tensor());
    a->u.assign(D_, Tensor());
  }
  Tensor s = ws({T, Ir});
  mlp_weights_fwd(
      W,
      [&](int sh, k::CPtr Wp) {
        if ((r_ - sh + D_) % D_ == D_ - 1 && before_last) before_last();  // the ring's last step
        Tensor g = a ? act({T, Ir}) : ws({T, Ir}), u = a ? act({T, Ir}) : ws({T, Ir});
        const block::MlpShard Ws{Wp, Wp + Ir * h, Wp + 2 * Ir * h, Ir};
        block::mlp_up(F(g), F(u), F(y2), Ws, T, h, [&] { comm_.progress(); });
        block::mlp_down(F(x), 1.0f, F(s), F(g), F(u), Ws, T, h);
        if (a) {
          a->g[sh] = std::move(g);
          a->u[sh] = std::move(u);
        }
      },
      start);
}

void TspEngine::mlp_bwd(const TspLayer& W, TspLayer& G, const Acts& a, const Tensor& y2,
                        const Tensor& dy, Tensor& dy2, const std::function<void()>& before_last) {
  const int64_t T = z_.local_tokens(), h = t_.h, Ir = t_.Ir;
  Tensor s = ws({T, Ir}), da = ws({T, Ir}), dg = ws({T, Ir}), du = ws({T, Ir});
  const Tensor dy_e = block::in_elem(dy);  // the fp32 residual gradient, for the GEMMs
  const bool fused = a.g.empty();          // --fused-mlp-recompute: g, u from the arriving shard
  auto compute = [&](int sh, k::CPtr Wp, float* Gp) {
    if ((r_ - sh + D_) % D_ == D_ - 1 && before_last) before_last();  // the ring's last step
    Tensor gt, ut;
    if (fused) {
      gt = ws({T, Ir});
      ut = ws({T, Ir});
      block::mlp_up(F(gt), F(ut), F(y2), {Wp, Wp + Ir * h, Wp + 2 * Ir * h, Ir}, T, h);
    }
    const Tensor& g = fused ? gt : a.g[sh];
    const Tensor& u = fused ? ut : a.u[sh];
    const block::MlpShard Ws{Wp, Wp + Ir * h, Wp + 2 * Ir * h, Ir};
    const auto progress = [&] { comm_.progress(); };
    block::mlp_down_bwd(Gp + 2 * Ir * h, F(dg), F(du), F(s), F(da), F(dy_e), F(g), F(u), Ws, T, h,
                        progress);
    block::mlp_up_bwd(Gp, Gp + Ir * h, F(dy2), F(dg), F(du), F(y2), Ws, T, h, progress);
  };
  mlp_weights_bwd(W, G, compute);
}

RingStart TspEngine::mlp_prefetch(const TspLayer& W) {
  return ring_prefetch(comm_, mlp_spec(W));
}

void TspEngine::mlp_weights_fwd(const TspLayer& W, const RingFwd& f, RingStart* start) {
  ring_forward(comm_, mlp_spec(W), f, start);
}

void TspEngine::mlp_weights_bwd(const TspLayer& W, TspLayer& G, const RingBwd& f) {
  ring_backward(comm_, mlp_spec(W), F32(G.mlp), f, &tail_);
}

}  // namespace origami
