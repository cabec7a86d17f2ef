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
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/dispatch.h"
#include "parallel/tpsp.h"
#include "parallel/tsp_internal.h"
#include "parallel/zigzag.h"

namespace origami {

using k::QSeg;
using k::Trans;
using namespace tsp;

namespace {
// The rows of a token-major [Ts, nblk·w] (as [Ts·nblk, w]: t·nblk + b) against those of a
// block-major [nblk, Ts, w] (b·Ts + t), for every token t and block b.
void block_rows(int64_t Ts, int64_t nblk, std::vector<int64_t>& tok, std::vector<int64_t>& blk) {
  tok.resize(static_cast<size_t>(Ts * nblk));
  blk.resize(tok.size());
  size_t i = 0;
  for (int64_t b = 0; b < nblk; ++b)
    for (int64_t t = 0; t < Ts; ++t, ++i) {
      tok[i] = t * nblk + b;
      blk[i] = b * Ts + t;
    }
}
}  // namespace

TpSpEngine::Heads TpSpEngine::heads() const {
  const int64_t nq = t_.nq_loc, nkv = t_.nkv_loc, d = t_.d, S = Sg_;
  Heads H;
  H.qh = nq / S;
  H.kh = std::max<int64_t>(nkv / S, 1);
  H.qw = H.qh * d;
  H.kw = H.kh * d;
  const int64_t g = nq / nkv;  // query heads per KV head
  for (int r = 0; r < Sg_; ++r) {
    H.q_of.push_back(r);
    H.kv_of.push_back(static_cast<int>(r * H.qh / g / H.kh));
  }
  return H;
}

TpSpEngine::A2a TpSpEngine::to_heads(const Tensor& x, int64_t w, int64_t nblk,
                                     const std::vector<int>& block_of, Traffic t, Cat c) {
  const int64_t Ts = Ts_, es = static_cast<int64_t>(dtype_size(x.dtype()));
  A2a m;
  if (nblk == 1) {
    m.send = x;
  } else {
    m.send = Tensor::empty({nblk * Ts, w}, x.dtype(), Cat::comm);
    std::vector<int64_t> tok, blk;
    block_rows(Ts, nblk, tok, blk);
    k::index_copy_rows(F(m.send), F(x), blk.data(), tok.data(), nblk * Ts, w);
  }
  m.recv = Tensor::empty({Sg_ * Ts, w}, x.dtype(), c);
  m.req = alltoall_blocks(sp_, m.send.raw(), m.recv.raw(), Ts * w * es, t, &block_of);
  return m;
}

TpSpEngine::A2a TpSpEngine::from_heads(const Tensor& X, int64_t w, Traffic t) {
  A2a m{X, Tensor::empty({Sg_ * Ts_, w}, X.dtype(), Cat::workspace), {}};
  m.req = alltoall_blocks(sp_, X.raw(), m.recv.raw(),
                          Ts_ * w * static_cast<int64_t>(dtype_size(X.dtype())), t);
  return m;
}

std::vector<QSeg> TpSpEngine::all_qsegs(int64_t bb) const {
  const Zigzag z{B_, S_, Sg_, sr_};
  const int64_t c = z.chunk();
  std::vector<QSeg> s;
  for (int src = 0; src < Sg_; ++src)
    for (int k = 0; k < 2; ++k)
      s.push_back({src * Ts_ + (bb * 2 + k) * c, z.chunk_pos0_of(src, k), c});
  return s;
}

void TpSpEngine::attn_fwd_a2a(const TspLayer& W, const Tensor& Y1, Tensor& x, Acts* a) {
  const int64_t Ts = Ts_, h = t_.h, d = t_.d, n = Sg_ * Ts;
  const int64_t nq = t_.nq_loc, nkv = t_.nkv_loc, qw = t_.q_rows, kw = t_.kv_rows;
  const Heads H = heads();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const k::AttnShape sh{static_cast<int>(H.qh), static_cast<int>(H.kh), static_cast<int>(d)};
  const auto [Wq, Wk, Wv, Wo] = t_.bucket(F(W.attn), 0, 1);
  const Cat keep = a ? Cat::activations : Cat::workspace;
  A2a K, V, Q;
  {
    Tensor k = ws({Ts, kw}), v = ws({Ts, kw});
    block::project_rope(F(k), F(Y1), Wk, Ts, kw, h, static_cast<int>(nkv), static_cast<int>(d),
                        pos_.data(), cos_, sin_);
    k::linear_fwd(F(v), F(Y1), Wv, Ts, kw, h);
    K = to_heads(k, H.kw, nkv / H.kh, H.kv_of, Traffic::kv, keep);
    V = to_heads(v, H.kw, nkv / H.kh, H.kv_of, Traffic::kv, keep);
  }
  {
    Tensor q = ws({Ts, qw});
    k::linear_fwd(F(q), F(Y1), Wq, Ts, qw, h);  // while K, V travel
    sp_.progress();
    k::rope_fwd(F(q), qw, pos_.data(), Ts, static_cast<int>(nq), static_cast<int>(d), F32(cos_),
                F32(sin_));
    Q = to_heads(q, H.qw, Sg_, H.q_of, Traffic::acts, keep);
  }
  K.req.wait();
  V.req.wait();
  Q.req.wait();
  K.send = V.send = Q.send = Tensor();
  Tensor O = a ? act({n, H.qw}) : ws({n, H.qw});
  Tensor lse = a ? act32({H.qh, n}) : ws32({H.qh, n});
  for (int64_t bb = 0; bb < B_; ++bb) {
    const auto qs = all_qsegs(bb);
    const auto ks = kvsegs(bb, F(K.recv), F(V.recv), nullptr, nullptr, H.kw);
    k::flash_attn_fwd(F(O), F32(lse), n, F(Q.recv), H.qw, qs.data(), static_cast<int>(qs.size()),
                      ks.data(), static_cast<int>(ks.size()), sh, scale);
  }
  A2a Ob = from_heads(O, H.qw, Traffic::acts);
  Ob.req.wait();
  Tensor o = a ? act({Ts, qw}) : ws({Ts, qw});
  {
    std::vector<int64_t> tok, blk;
    block_rows(Ts, Sg_, tok, blk);
    k::index_copy_rows(F(o), F(Ob.recv), tok.data(), blk.data(), n, H.qw);
  }
  Ob = A2a();
  Tensor P = ws32({Ts, h});  // fp32, as the all-gather schedule's
  k::gemm(Trans::N, Trans::T, Ts, h, qw, 1.0f, F(o), qw, Wo, t_.q_rows, 0.0f, F(P), h);
  if (a) {
    a->q = {std::move(Q.recv)};
    a->k = {std::move(K.recv)};
    a->v = {std::move(V.recv)};
    a->o = {std::move(o)};
    a->O = std::move(O);
    a->lse = {std::move(lse)};
  }
  exit_fwd(P, x, Traffic::acts);
}

void TpSpEngine::attn_bwd_a2a(const TspLayer& W, float* G, const Acts& a, const Tensor& Y1,
                              const Tensor& dX, Tensor& dY1) {
  const int64_t Ts = Ts_, h = t_.h, d = t_.d, n = Sg_ * Ts;
  const int64_t nq = t_.nq_loc, nkv = t_.nkv_loc, qw = t_.q_rows, kw = t_.kv_rows;
  const Heads H = heads();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const k::AttnShape sh{static_cast<int>(H.qh), static_cast<int>(H.kh), static_cast<int>(d)};
  const auto [Wq, Wk, Wv, Wo] = t_.bucket(F(W.attn), 0, 1);
  const auto [Gq, Gk, Gv, Go] = t_.bucket(G, 0, 1);
  const ProjBwd proj{sp_, pos_.data(), cos_, sin_, Y1, dY1, Ts, h, static_cast<int>(d)};
  A2a dOh;
  {
    Tensor dO = ws({Ts, qw});
    k::gemm(Trans::N, Trans::N, Ts, qw, h, 1.0f, F(dX), h, Wo, t_.q_rows, 0.0f, F(dO), qw);
    dOh = to_heads(dO, H.qw, Sg_, H.q_of, Traffic::acts, Cat::workspace);
  }
  // dW_o while dO travels
  k::gemm(Trans::T, Trans::N, h, qw, Ts, 1.0f, F(dX), h, F(a.o[0]), qw, 1.0f, Go, t_.q_rows);
  dOh.req.wait();
  dOh.send = Tensor();
  // the attention kernels' gradients: fp32
  Tensor dQ = ws32_0({n, H.qw}), dK = ws32_0({n, H.kw}), dV = ws32_0({n, H.kw});
  for (int64_t bb = 0; bb < B_; ++bb) {
    const auto qs = all_qsegs(bb);
    const auto ks = kvsegs(bb, F(a.k[0]), F(a.v[0]), F32(dK), F32(dV), H.kw);
    k::flash_attn_bwd(F32(dQ), F(dOh.recv), F(a.q[0]), F(a.O), H.qw, F32(a.lse[0]), n, qs.data(),
                      static_cast<int>(qs.size()), ks.data(), static_cast<int>(ks.size()), sh,
                      scale);
  }
  dOh = A2a();
  A2a bq = from_heads(dQ, H.qw, Traffic::acts);
  A2a bk = from_heads(dK, H.kw, Traffic::kv);
  A2a bv = from_heads(dV, H.kw, Traffic::kv);
  std::vector<int64_t> tok, blk;
  bq.req.wait();
  {
    Tensor dq = ws32({Ts, qw});
    block_rows(Ts, Sg_, tok, blk);
    k::index_copy_rows(F32(dq), F32(bq.recv), tok.data(), blk.data(), n, H.qw);
    bq = A2a();
    proj(F32(dq), qw, static_cast<int>(nq), true, Wq, Gq);  // while dK, dV travel
  }
  bk.req.wait();
  bv.req.wait();
  // Rank r's block is KV block kv_of[r] of this rank's tokens; replicated heads' partials are
  // summed in rank order (a copy into zeros otherwise).
  const int64_t nblk = nkv / H.kh;
  tok.clear();
  blk.clear();
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
