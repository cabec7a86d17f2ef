// FSDP+Ulysses (fsdp_sp=D --sp-comm a2a; Arctic Long Sequence Training's layout): FSDP+SP's
// whole-layer weight gathers and gradient reduce-scatters (fsdp_sp.h) around DeepSpeed Ulysses'
// attention. TSP's ownership map makes head group j (query heads [j·n_h/D, …), KV heads
// [j·n_kv/D, …)) packet j of the gathered layer, which is exactly the head block Ulysses gives
// rank j — so a rank computes every group's q, k, v for its own tokens straight into the blocks
// of the all-to-all (no shuffling):
//
//   all-gather the layer's D packets (attn_weights, FSDP+SP's)
//   for every group j: q_j, k_j, v_j = y1 · W_{q,k,v,j}ᵀ [T, ·], RoPE ─▶ block j of the sends
//   all-to-all ─▶ Q, K, V [D·T, ·]: head group r over every token (rank-major, zigzag chunks)
//   flash(Q; K, V) ─▶ O [D·T, qw] ─all-to-all─▶ o [D, T, qw]: every group's output, own tokens
//   x += Σ_j o_j · W_o,jᵀ
//
// Backward: dO_j = dy·W_o,j into block j, dW_o,j += dyᵀ·o_j; all-to-all dO; flash backward over
// every token of group r; dQ, dK, dV (fp32) all-to-all'ed home; per group the projections'
// backward (RoPE⁻¹, dW into the layer's partial [D, P], dy1); FSDP+SP's reduce-scatter of the
// partials to the owners, in flight into the next layer (AttnTail). Bytes: FSDP+SP's weights and
// gradients; q, o, dO, dQ as acts and k, v, dK, dV as kv, (D−1)/D of what a rank holds after
// each all-to-all (docs/layouts.md).
#include <cmath>

#include "core/trace.h"
#include "kernels/dispatch.h"
#include "parallel/sp_attention.h"
#include "parallel/tsp_internal.h"

namespace origami {

using k::Trans;
using namespace tsp;

void TspEngine::attn_fwd_a2a(const TspLayer& W, const Tensor& y1, Tensor& x, Acts* a,
                             const std::function<void()>& before_last, AttnStart* start) {
  const int64_t T = z_.local_tokens(), h = t_.h, d = t_.d, n = D_ * T;
  const int64_t nq = t_.nq_loc, nkv = t_.nkv_loc, qw = nq * d, kw = nkv * d;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const k::AttnShape sh{static_cast<int>(nq), static_cast<int>(nkv), static_cast<int>(d)};
  AttnStart st = start && start->posted() ? std::move(*start) : attn_start(W, nullptr, false);
  st.layer_req.wait();
  TraceSpan span("attention (all-to-all)");
  const Cat keep = a ? Cat::activations : Cat::workspace;
  Tensor sq = Tensor::empty({D_, T, qw}, block::elem(), Cat::comm);
  Tensor skv = Tensor::empty({2, D_, T, kw}, block::elem(), Cat::comm);  // k blocks, v blocks
  Tensor Q = Tensor::empty({n, qw}, block::elem(), keep);
  Tensor KV = Tensor::empty({2, n, kw}, block::elem(), keep);
  const k::Ptr K = F(KV), V = F(KV) + n * kw;
  Request rk, rv;
  for (int j = 0; j < D_; ++j) {  // K, V first: they travel while the queries are projected
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(packet(st, W, j, nullptr), 0, 1);
    block::project_rope(F(skv) + j * T * kw, F(y1), Wk, T, kw, h, static_cast<int>(nkv),
                        static_cast<int>(d), pos_.data(), cos_, sin_);
    k::linear_fwd(F(skv) + (D_ + j) * T * kw, F(y1), Wv, T, kw, h);
  }
  rk = alltoall_blocks(comm_, skv.raw(), K.p, bytes(T * kw), Traffic::kv);
  rv = alltoall_blocks(comm_, (F(skv) + D_ * T * kw).p, V.p, bytes(T * kw), Traffic::kv);
  for (int j = 0; j < D_; ++j) {
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(packet(st, W, j, nullptr), 0, 1);
    block::project_rope(F(sq) + j * T * qw, F(y1), Wq, T, qw, h, static_cast<int>(nq),
                        static_cast<int>(d), pos_.data(), cos_, sin_);
    comm_.progress();
  }
  Request rq = alltoall_blocks(comm_, sq.raw(), Q.raw(), bytes(T * qw), Traffic::acts);
  rk.wait();
  rv.wait();
  rq.wait();
  sq = skv = Tensor();
  if (before_last) before_last();
  Tensor O = a ? act({n, qw}) : ws({n, qw});
  Tensor lse = a ? act32({nq, n}) : ws32({nq, n});
  for (int64_t bb = 0; bb < z_.B; ++bb) {
    const auto qs = spattn::all_qsegs(z_, bb);
    const auto ks = spattn::all_kvsegs(z_, bb, K, V, nullptr, nullptr, kw);
    k::flash_attn_fwd(F(O), F32(lse), n, F(Q), qw, qs.data(), static_cast<int>(qs.size()),
                      ks.data(), static_cast<int>(ks.size()), sh, scale);
  }
  Tensor o = a ? act({D_, T, qw}) : ws({D_, T, qw});
  alltoall_blocks(comm_, O.raw(), o.raw(), bytes(T * qw), Traffic::acts).wait();
  for (int j = 0; j < D_; ++j) {
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(packet(st, W, j, nullptr), 0, 1);
    k::gemm(Trans::N, Trans::T, T, h, qw, 1.0f, F(o) + j * T * qw, qw, Wo, t_.q_rows, 1.0f, F(x),
            h);
  }
  if (a) {
    a->q = {std::move(Q)};
    a->k = {std::move(KV)};
    a->v = {Tensor()};
    a->o = {std::move(o)};
    a->O = std::move(O);
    a->lse = {std::move(lse)};
  }
}

void TspEngine::attn_bwd_a2a(const TspLayer& W, TspLayer& G, const Acts& a, const Tensor& y1,
                             const Tensor& dy, Tensor& dy1, AttnStart st) {
  const int64_t T = z_.local_tokens(), h = t_.h, d = t_.d, n = D_ * T;
  const int64_t nq = t_.nq_loc, nkv = t_.nkv_loc, qw = nq * d, kw = nkv * d;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const k::AttnShape sh{static_cast<int>(nq), static_cast<int>(nkv), static_cast<int>(d)};
  attn_tail_.finish();  // the previous layer's reduce-scatter, hidden behind this layer's MLP
  st.layer_req.wait();
  TraceSpan span("attention bwd (all-to-all)");
  const Tensor dy_e = block::in_elem(dy);
  GradReturn gr;
  grads_alloc(gr);
  gr.sum = Tensor::empty({t_.attn_size()}, DType::f32, Cat::comm);
  const ProjBwd proj{comm_, pos_.data(), cos_, sin_, y1, dy1, T, h, static_cast<int>(d)};
  Tensor dOh = ws({n, qw});
  Request rd;
  {
    Tensor dO = Tensor::empty({D_, T, qw}, block::elem(), Cat::comm);
    for (int j = 0; j < D_; ++j) {
      const auto [Wq, Wk, Wv, Wo] = t_.bucket(packet(st, W, j, nullptr), 0, 1);
      k::gemm(Trans::N, Trans::N, T, qw, h, 1.0f, F(dy_e), h, Wo, t_.q_rows, 0.0f,
              F(dO) + j * T * qw, qw);
    }
    rd = alltoall_blocks(comm_, dO.raw(), dOh.raw(), bytes(T * qw), Traffic::acts);
    for (int j = 0; j < D_; ++j) {  // dW_o while dO travels
      const auto [Gq, Gk, Gv, Go] = t_.bucket(grad_of(gr, j), 0, 1);
      k::gemm(Trans::T, Trans::N, h, qw, T, 1.0f, F(dy_e), h, F(a.o[0]) + j * T * qw, qw, 1.0f, Go,
              t_.q_rows);
      comm_.progress();
    }
    rd.wait();
  }
  const k::CPtr K = F(a.k[0]), V = F(a.k[0]) + n * kw;
  Tensor dQ = ws32_0({n, qw}), dKV = ws32_0({2, n, kw});
  for (int64_t bb = 0; bb < z_.B; ++bb) {
    const auto qs = spattn::all_qsegs(z_, bb);
    const auto ks = spattn::all_kvsegs(z_, bb, K, V, F32(dKV), F32(dKV) + n * kw, kw);
    k::flash_attn_bwd(F32(dQ), F(dOh), F(a.q[0]), F(a.O), qw, F32(a.lse[0]), n, qs.data(),
                      static_cast<int>(qs.size()), ks.data(), static_cast<int>(ks.size()), sh,
                      scale);
  }
  dOh = Tensor();
  Tensor dq = ws32({D_, T, qw}), dkv = ws32({2, D_, T, kw});
  Request bq = alltoall_blocks(comm_, dQ.raw(), dq.raw(), 4 * T * qw, Traffic::acts);
  Request bk = alltoall_blocks(comm_, dKV.raw(), dkv.raw(), 4 * T * kw, Traffic::kv);
  Request bv =
      alltoall_blocks(comm_, F32(dKV) + n * kw, F32(dkv) + D_ * T * kw, 4 * T * kw, Traffic::kv);
  bq.wait();
  for (int j = 0; j < D_; ++j) {  // the queries' backward while dK, dV travel
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(packet(st, W, j, nullptr), 0, 1);
    const auto [Gq, Gk, Gv, Go] = t_.bucket(grad_of(gr, j), 0, 1);
    proj(F32(dq) + j * T * qw, qw, static_cast<int>(nq), true, Wq, Gq);
  }
  bk.wait();
  bv.wait();
  for (int j = 0; j < D_; ++j) {
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(packet(st, W, j, nullptr), 0, 1);
    const auto [Gq, Gk, Gv, Go] = t_.bucket(grad_of(gr, j), 0, 1);
    proj(F32(dkv) + j * T * kw, kw, static_cast<int>(nkv), true, Wk, Gk);
    proj(F32(dkv) + (D_ + j) * T * kw, kw, static_cast<int>(nkv), false, Wv, Gv);
  }
  layer_done(gr);
  attn_tail_ = {std::move(gr), F32(G.attn)};
}

}  // namespace origami
