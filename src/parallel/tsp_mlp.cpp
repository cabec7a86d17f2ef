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
//
// --mlp-transport (layout.h): ring as above; biring: two rings in opposite directions
// (ring.h biring_backward), each over one half of every shard, the units [0, I/2D) and
// [I/2D, I/D) of the shard packed alike ([gate rows | up rows | down columns] of I/2D units), so
// a rank computes 2D half-shard pieces (piece p = 2·s + half); broadcast: the shards gathered by
// all (ring.h gathered_backward, FSDP+SP's transport). Each transport equals the single device.
#include <array>
#include <memory>
#include <vector>

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

namespace {
// Piece `half` of a packed shard of Ir units ([gate Ir×h | up Ir×h | down h×Ir]) into a packed
// piece of Ir/2 units, and the piece's fp32 gradient added back into the shard's. The down
// projection's columns are rows 2i + half of the shard's down block seen as 2h × Ir/2.
std::vector<int64_t> down_rows(int64_t h, int half) {
  std::vector<int64_t> r(static_cast<size_t>(h));
  for (int64_t i = 0; i < h; ++i) r[static_cast<size_t>(i)] = 2 * i + half;
  return r;
}
void pack_piece(k::Ptr piece, k::CPtr shard, int64_t Ir, int64_t h, int half) {
  const int64_t Ip = Ir / 2;
  k::index_copy_rows(piece, shard + half * Ip * h, nullptr, nullptr, Ip, h);
  k::index_copy_rows(piece + Ip * h, shard + Ir * h + half * Ip * h, nullptr, nullptr, Ip, h);
  const auto rows = down_rows(h, half);
  k::index_copy_rows(piece + 2 * Ip * h, shard + 2 * Ir * h, nullptr, rows.data(), h, Ip);
}
void unpack_add_piece(float* shard, const float* piece, int64_t Ir, int64_t h, int half) {
  const int64_t Ip = Ir / 2;
  k::index_add_rows<float>(shard + half * Ip * h, piece, nullptr, nullptr, Ip, h);
  k::index_add_rows<float>(shard + Ir * h + half * Ip * h, piece + Ip * h, nullptr, nullptr, Ip, h);
  const auto rows = down_rows(h, half);
  k::index_add_rows<float>(shard + 2 * Ir * h, piece + 2 * Ip * h, rows.data(), nullptr, h, Ip);
}
}  // namespace

bool TspEngine::biring() const {
  return o_.mlp_transport == MlpTransport::biring;
}
int64_t TspEngine::mlp_unit_width() const {
  return biring() ? t_.Ir / 2 : t_.Ir;
}
int TspEngine::mlp_units() const {
  return biring() ? 2 * D_ : D_;
}
int TspEngine::mlp_last_step_call() const {
  return mlp_units() - (biring() ? 2 : 1);
}

void TspEngine::mlp_fwd(const TspLayer& W, const Tensor& y2, Tensor& x, Acts* a, RingStart* start,
                        const std::function<void()>& before_last) {
  // Ir: the units of one piece of work (a shard, or biring's half shard).
  const int64_t T = z_.local_tokens(), h = t_.h, Ir = mlp_unit_width();
  const int units = mlp_units(), last = mlp_last_step_call();
  if (a) {
    a->g.assign(units, Tensor());
    a->u.assign(units, Tensor());
  }
  Tensor s = ws({T, Ir});
  int calls = 0;
  mlp_weights_fwd(
      W,
      [&](int sh, k::CPtr Wp) {
        if (calls++ == last && before_last) before_last();  // the ring's last step
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
  const int64_t T = z_.local_tokens(), h = t_.h, Ir = mlp_unit_width();
  const int last = mlp_last_step_call();
  Tensor s = ws({T, Ir}), da = ws({T, Ir}), dg = ws({T, Ir}), du = ws({T, Ir});
  const Tensor dy_e = block::in_elem(dy);  // the fp32 residual gradient, for the GEMMs
  const bool fused = a.g.empty();          // --fused-mlp-recompute: g, u from the arriving shard
  int calls = 0;
  auto compute = [&](int sh, k::CPtr Wp, float* Gp) {
    if (calls++ == last && before_last) before_last();  // the ring's last step
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

// biring: this rank's shard packed into its two pieces (RingStart::own keeps them alive until the
// ring has sent them).
RingStart TspEngine::mlp_prefetch(const TspLayer& W) {
  switch (o_.mlp_transport) {
    case MlpTransport::broadcast:
      return gathered_prefetch(comm_, mlp_spec(W));
    case MlpTransport::biring: {
      const int64_t n = t_.mlp_size() / 2;
      Tensor own[2];
      RingSpec pieces[2];
      for (int half = 0; half < 2; ++half) {
        own[half] = Tensor::empty({n}, W.mlp.dtype(), Cat::comm);
        pack_piece({own[half].raw(), own[half].dtype()}, {W.mlp.raw(), W.mlp.dtype()}, t_.Ir, t_.h,
                   half);
        pieces[half] = {
            n, {own[half].raw(), own[half].dtype()}, Traffic::mlp_weights, Traffic::grads};
      }
      RingStart st = biring_prefetch(comm_, pieces);
      st.own = std::move(own[0]);
      st.lane1->own = std::move(own[1]);
      return st;
    }
    case MlpTransport::ring:
      break;
  }
  return ring_prefetch(comm_, mlp_spec(W));
}

namespace {
// The pieces a biring RingStart carries (its packed own halves).
void piece_specs(const RingStart& st, RingSpec (&pieces)[2]) {
  const Tensor* own[2] = {&st.own, &st.lane1->own};
  for (int half = 0; half < 2; ++half)
    pieces[half] = {own[half]->numel(),
                    {own[half]->raw(), own[half]->dtype()},
                    Traffic::mlp_weights,
                    Traffic::grads};
}
}  // namespace

void TspEngine::mlp_weights_fwd(const TspLayer& W, const RingFwd& f, RingStart* start) {
  switch (o_.mlp_transport) {
    case MlpTransport::broadcast:
      return gathered_forward(comm_, mlp_spec(W), f, start);
    case MlpTransport::biring: {
      RingStart st = start && start->posted ? std::move(*start) : mlp_prefetch(W);
      RingSpec pieces[2];
      piece_specs(st, pieces);
      float* const none[2] = {nullptr, nullptr};
      return biring_backward(
          comm_, pieces, none, [&](int p, k::CPtr Wp, float*) { f(p, Wp); }, nullptr, nullptr, &st);
    }
    case MlpTransport::ring:
      break;
  }
  ring_forward(comm_, mlp_spec(W), f, start);
}

void TspEngine::mlp_weights_bwd(const TspLayer& W, TspLayer& G, const RingBwd& f) {
  switch (o_.mlp_transport) {
    case MlpTransport::broadcast:
      return gathered_backward(comm_, mlp_spec(W), F32(G.mlp), f);
    case MlpTransport::biring: {
      RingStart st = mlp_prefetch(W);
      RingSpec pieces[2];
      piece_specs(st, pieces);
      // The pieces' gradients (own partial, then the accumulator home), added into the shard's
      // when the tail finishes.
      auto grads = std::make_shared<std::array<Tensor, 2>>();
      for (Tensor& g : *grads) g = Tensor::zeros({pieces[0].n}, DType::f32, Cat::comm);
      float* const own[2] = {(*grads)[0].data<float>(), (*grads)[1].data<float>()};
      float* dst = F32(G.mlp);
      const int64_t Ir = t_.Ir, h = t_.h;
      return biring_backward(
          comm_, pieces, own, f,
          [grads, dst, Ir, h] {
            for (int half = 0; half < 2; ++half)
              unpack_add_piece(dst, (*grads)[static_cast<size_t>(half)].data<float>(), Ir, h, half);
          },
          &tail_, &st);
    }
    case MlpTransport::ring:
      break;
  }
  ring_backward(comm_, mlp_spec(W), F32(G.mlp), f, &tail_);
}

}  // namespace origami
