// --sp-comm a2a on the sp axis (tp = 1): DeepSpeed Ulysses. Each of the Σ ranks holds its zigzag
// share of the tokens (Ts = B·S/Σ rows) and, for attention, trades them for heads:
//
//   y[Ts] ─k, v (every KV head), RoPE─▶ k, v [Ts, n_kv·d] ─all-to-all─▶ K, V [Σ·Ts, kh·d]
//         ─q (every head), RoPE────────▶ q [Ts, n_h·d]    ─all-to-all─▶ Q    [Σ·Ts, qh·d]
//   flash(Q; K, V) over every token of this rank's qh = n_h/Σ heads ─▶ O [Σ·Ts, qh·d]
//   O ─all-to-all─▶ o [Ts, n_h·d] ─o·W_oᵀ─▶ x[Ts] +=
//
// Rank r takes query heads [r·qh, (r+1)·qh) and the KV heads they read: kh = n_kv/Σ of them when
// Σ divides n_kv, else (Σ a multiple of n_kv) the one KV head r·n_kv/Σ, replicated on Σ/n_kv
// ranks — each token's owner sends that head's block to every rank reading it, and sums their
// partial dK, dV blocks in rank order on the way back. The backward mirrors the forward: dO
// all-to-all'ed to head shards (during the dW_o GEMM), the flash backward over every token of
// the rank's heads, dQ, dK, dV (fp32) all-to-all'ed home, then the projections' backward as the
// all-gather schedule's. Weights and their gradient all-reduce over sp are the all-gather
// schedule's (tpsp.cpp). Bytes per layer (docs/layouts.md): each all-to-all receives (Σ−1)/Σ of
// what a rank holds after it; q, o, dO, dQ count as acts, k, v, dK, dV as kv.
#include <cmath>

#include "kernels/dispatch.h"
#include "parallel/sp_attention.h"
#include "parallel/tpsp.h"
#include "parallel/tsp_internal.h"

namespace origami {

using k::Trans;
using namespace tsp;
using spattn::A2a;

void TpSpEngine::attn_fwd_a2a(const TspLayer& W, const Tensor& Y1, Tensor& x, Acts* a) {
  const int64_t Ts = Ts_, h = t_.h, d = t_.d;
  const int64_t nq = t_.nq_loc, nkv = t_.nkv_loc, qw = t_.q_rows, kw = t_.kv_rows;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const auto [Wq, Wk, Wv, Wo] = t_.bucket(F(W.attn), 0, 1);
  Tensor o = a ? act({Ts, qw}) : ws({Ts, qw});
  spattn::UlyssesAct u;
  {
    Tensor k = ws({Ts, kw}), v = ws({Ts, kw});
    block::project_rope(F(k), F(Y1), Wk, Ts, kw, h, static_cast<int>(nkv), static_cast<int>(d),
                        pos_.data(), cos_, sin_);
    k::linear_fwd(F(v), F(Y1), Wv, Ts, kw, h);
    auto make_q = [&] {
      Tensor q = ws({Ts, qw});
      k::linear_fwd(F(q), F(Y1), Wq, Ts, qw, h);
      sp_.progress();
      k::rope_fwd(F(q), qw, pos_.data(), Ts, static_cast<int>(nq), static_cast<int>(d), F32(cos_),
                  F32(sin_));
      return q;
    };
    u = spattn::ulysses_fwd(sp_, zigzag(), k, v, make_q, nq, nkv, static_cast<int>(d), scale, o,
                            a ? Cat::activations : Cat::workspace);
  }
  Tensor P = ws32({Ts, h});  // fp32, as the all-gather schedule's
  k::gemm(Trans::N, Trans::T, Ts, h, qw, 1.0f, F(o), qw, Wo, t_.q_rows, 0.0f, F(P), h);
  if (a) {
    a->q = {std::move(u.Q)};
    a->k = {std::move(u.K)};
    a->v = {std::move(u.V)};
    a->o = {std::move(o)};
    a->O = std::move(u.O);
    a->lse = {std::move(u.lse)};
  }
  exit_fwd(P, x, Traffic::acts);
}

void TpSpEngine::attn_bwd_a2a(const TspLayer& W, float* G, const Acts& a, const Tensor& Y1,
                              const Tensor& dX, Tensor& dY1) {
  const int64_t Ts = Ts_, h = t_.h, d = t_.d, n = Sg_ * Ts;
  const int64_t nq = t_.nq_loc, nkv = t_.nkv_loc, qw = t_.q_rows, kw = t_.kv_rows;
  const spattn::Heads H = spattn::Heads::of(nq, nkv, d, Sg_);
  const Zigzag z = zigzag();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const k::AttnShape sh{static_cast<int>(H.qh), static_cast<int>(H.kh), static_cast<int>(d)};
  const auto [Wq, Wk, Wv, Wo] = t_.bucket(F(W.attn), 0, 1);
  const auto [Gq, Gk, Gv, Go] = t_.bucket(G, 0, 1);
  const ProjBwd proj{sp_, pos_.data(), cos_, sin_, Y1, dY1, Ts, h, static_cast<int>(d)};
  A2a dOh;
  {
    Tensor dO = ws({Ts, qw});
    k::gemm(Trans::N, Trans::N, Ts, qw, h, 1.0f, F(dX), h, Wo, t_.q_rows, 0.0f, F(dO), qw);
    dOh = spattn::to_heads(sp_, dO, H.qw, Sg_, H.q_of, Traffic::acts, Cat::workspace);
  }
  // dW_o while dO travels
  k::gemm(Trans::T, Trans::N, h, qw, Ts, 1.0f, F(dX), h, F(a.o[0]), qw, 1.0f, Go, t_.q_rows);
  dOh.req.wait();
  dOh.send = Tensor();
  // the attention kernels' gradients: fp32
  Tensor dQ = ws32_0({n, H.qw}), dK = ws32_0({n, H.kw}), dV = ws32_0({n, H.kw});
  for (int64_t bb = 0; bb < B_; ++bb) {
    const auto qs = spattn::all_qsegs(z, bb);
    const auto ks = spattn::all_kvsegs(z, bb, F(a.k[0]), F(a.v[0]), F32(dK), F32(dV), H.kw);
    k::flash_attn_bwd(F32(dQ), F(dOh.recv), F(a.q[0]), F(a.O), H.qw, F32(a.lse[0]), n, qs.data(),
                      static_cast<int>(qs.size()), ks.data(), static_cast<int>(ks.size()), sh,
                      scale);
  }
  dOh = A2a();
  A2a bq = spattn::from_heads(sp_, dQ, H.qw, Traffic::acts);
  A2a bk = spattn::from_heads(sp_, dK, H.kw, Traffic::kv);
  A2a bv = spattn::from_heads(sp_, dV, H.kw, Traffic::kv);
  bq.req.wait();
  {
    Tensor dq = ws32({Ts, qw});
    spattn::unblock(dq, bq.recv, Ts, Sg_, H.qw);
    bq = A2a();
    proj(F32(dq), qw, static_cast<int>(nq), true, Wq, Gq);  // while dK, dV travel
  }
  bk.req.wait();
  bv.req.wait();
  // Rank r's block is KV block kv_of[r] of this rank's tokens; replicated heads' partials are
  // summed in rank order (a copy into zeros otherwise).
  const int64_t nblk = nkv / H.kh;
  std::vector<int64_t> tok, blk;
  for (int r = 0; r < Sg_; ++r)
    for (int64_t t = 0; t < Ts; ++t) {
      tok.push_back(t * nblk + H.kv_of[static_cast<size_t>(r)]);
      blk.push_back(r * Ts + t);
    }
  Tensor dk = ws32_0({Ts, kw}), dv = ws32_0({Ts, kw});
  k::index_add_rows(F32(dk), F32(bk.recv), tok.data(), blk.data(), n, H.kw);
  k::index_add_rows(F32(dv), F32(bv.recv), tok.data(), blk.data(), n, H.kw);
  bk = bv = A2a();
  proj(F32(dk), kw, static_cast<int>(nkv), true, Wk, Gk);
  proj(F32(dv), kw, static_cast<int>(nkv), false, Wv, Gv);
}

}  // namespace origami
