// --sp-comm p2p on the sp axis (tp = 1): ring attention (Megatron's p2p context parallelism,
// ring-flash-attention's zigzag). Each of the Σ ranks holds its zigzag share of the tokens
// (Ts = B·S/Σ rows, two chunks per sequence) and its K, V [Ts, kw]; instead of all-gathering
// them, the blocks travel one neighbour a step:
//
//   forward, step j = 0 … Σ−1 (rank r holds the block of rank r−j):
//     post: send the block to r+1, receive r−j−1's from r−1 (j < Σ−1)
//     flash(q; the block's keys) ─▶ partial (o_j, lse_j), fp32 ─merge─▶ (o, lse)
//   o ─o·W_oᵀ─▶ x[Ts] +=
//
//   backward, the same ring (the final o and lse make each block's share exact):
//     step j: flash backward of q against the block of r−j: dq +=, the block's dK, dV partial;
//             j = 0 into this rank's own dk, dv; j ≥ 1 added to the accumulator that arrives
//             from r−1 (started at j = 1) and sent on to r+1 — after step Σ−1 it reaches home
//             (the block's owner), which adds it to its own.
//
// Two K/V blocks are resident at a time (the one computed on and the one arriving), never all
// Σ. Zigzag chunking gives every rank the same unmasked work at each step; whole masked tiles
// are skipped by the kernel. Bytes are the all-gather schedule's (docs/layouts.md): Σ−1 blocks of
// K, V in each direction's pass and Σ−1 fp32 accumulators.
#include <cmath>

#include "kernels/dispatch.h"
#include "parallel/sp_attention.h"
#include "parallel/tpsp.h"
#include "parallel/tsp_internal.h"

namespace origami {

using k::Trans;
using namespace tsp;
using spattn::kTagAcc;

void TpSpEngine::attn_fwd_p2p(const TspLayer& W, const Tensor& Y1, Tensor& x, Acts* a) {
  const int64_t Ts = Ts_, h = t_.h, d = t_.d, qw = t_.q_rows, kw = t_.kv_rows;
  const int nq = static_cast<int>(t_.nq_loc), nkv = static_cast<int>(t_.nkv_loc);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const auto [Wq, Wk, Wv, Wo] = t_.bucket(F(W.attn), 0, 1);
  Tensor own = a ? act({2 * Ts, kw}) : ws({2 * Ts, kw});
  block::project_rope(F(own), F(Y1), Wk, Ts, kw, h, nkv, static_cast<int>(d), pos_.data(), cos_,
                      sin_);
  k::linear_fwd(F(own) + Ts * kw, F(Y1), Wv, Ts, kw, h);
  Tensor q = a ? act({Ts, qw}) : ws({Ts, qw});
  auto make_q = [&] {  // while the first block travels
    k::linear_fwd(F(q), F(Y1), Wq, Ts, qw, h);
    sp_.progress();
    k::rope_fwd(F(q), qw, pos_.data(), Ts, nq, static_cast<int>(d), F32(cos_), F32(sin_));
    return q;
  };
  Tensor o = a ? act({Ts, qw}) : ws({Ts, qw}), lse = a ? act32({nq, Ts}) : ws32({nq, Ts});
  spattn::ring_fwd(sp_, zigzag(), own, kw, make_q, qw, {nq, nkv, static_cast<int>(d)}, scale, o,
                   lse);
  Tensor P = ws32({Ts, h});
  k::gemm(Trans::N, Trans::T, Ts, h, qw, 1.0f, F(o), qw, Wo, t_.q_rows, 0.0f, F(P), h);
  if (a) {
    a->q = {std::move(q)};
    a->k = {std::move(own)};
    a->o = {std::move(o)};
    a->lse = {std::move(lse)};
  }
  exit_fwd(P, x, Traffic::acts);
}

void TpSpEngine::attn_bwd_p2p(const TspLayer& W, float* G, const Acts& a, const Tensor& Y1,
                              const Tensor& dX, Tensor& dY1) {
  const int64_t Ts = Ts_, h = t_.h, d = t_.d, qw = t_.q_rows, kw = t_.kv_rows;
  const int nq = static_cast<int>(t_.nq_loc), nkv = static_cast<int>(t_.nkv_loc), S = Sg_;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const k::AttnShape sh{nq, nkv, static_cast<int>(d)};
  const auto [Wq, Wk, Wv, Wo] = t_.bucket(F(W.attn), 0, 1);
  const auto [Gq, Gk, Gv, Go] = t_.bucket(G, 0, 1);
  const ProjBwd proj{sp_, pos_.data(), cos_, sin_, Y1, dY1, Ts, h, static_cast<int>(d)};
  const Zigzag z = zigzag();
  const int next = (sr_ + 1) % S, prev = (sr_ + S - 1) % S;
  const int64_t acc_bytes = 4 * 2 * Ts * kw;
  spattn::KvRing ring(sp_, a.k[0], Ts, kw);
  Tensor dO = ws({Ts, qw});
  k::gemm(Trans::N, Trans::N, Ts, qw, h, 1.0f, F(dX), h, Wo, t_.q_rows, 0.0f, F(dO), qw);
  sp_.progress();
  k::gemm(Trans::T, Trans::N, h, qw, Ts, 1.0f, F(dX), h, F(a.o[0]), qw, 1.0f, Go, t_.q_rows);
  // fp32 gradients: dq, this rank's own dk, dv, and the accumulators in flight
  Tensor dq = ws32_0({Ts, qw}), mine = ws32_0({2 * Ts, kw});
  Tensor acc_in, acc_out, part;
  Request as, ar;
  for (int j = 0; j < S; ++j) {
    const int src = (sr_ - j + S) % S;
    if (j) part = ws32_0({2 * Ts, kw});
    float* dkv = F32(j ? part : mine);
    for (int64_t bb = 0; bb < B_; ++bb) {
      const auto qs = spattn::own_qsegs(z, bb);
      const auto ks = spattn::block_kvsegs(z, bb, src, F(ring.cur()), dkv, kw);
      k::flash_attn_bwd(F32(dq), F(dO), F(a.q[0]), F(a.o[0]), qw, F32(a.lse[0]), Ts, qs.data(),
                        static_cast<int>(qs.size()), ks.data(), static_cast<int>(ks.size()), sh,
                        scale);
      sp_.progress();
    }
    if (j) {
      // The block's accumulator: this step's partial after what the ranks before added (j ≥ 2),
      // on to r+1 (its owner after step Σ−1); the next step's (or, last, this rank's own
      // block's, home) in from r−1.
      as.wait();  // the previous accumulator sent
      if (j >= 2) {
        ar.wait();
        k::add_inplace<float>(F32(acc_in), F32(part), 2 * Ts * kw);
        acc_out = std::move(acc_in);
      } else {
        acc_out = std::move(part);
      }
      acc_in = ws32({2 * Ts, kw});
      sp_.begin_group();
      ar = sp_.irecv(F32(acc_in), acc_bytes, prev, kTagAcc, Traffic::kv);
      as = sp_.isend(F32(acc_out), acc_bytes, next, kTagAcc, Traffic::kv);
      sp_.end_group();
    }
    if (j + 1 < S) ring.advance();
  }
  ring.release();
  proj(F32(dq), qw, nq, true, Wq, Gq);  // while this rank's accumulator comes home
  as.wait();
  ar.wait();
  k::add_inplace<float>(F32(mine), F32(acc_in), 2 * Ts * kw);
  proj(F32(mine), kw, nkv, true, Wk, Gk);
  proj(F32(mine) + Ts * kw, kw, nkv, false, Wv, Gv);
}

}  // namespace origami
