// The Megatron-style baselines on a T×Σ mesh (tsp-spec §9): TP(T) inside groups of T consecutive
// ranks, context-parallel SP(Σ) across them; TP alone is Σ = 1, SP alone T = 1.
//
// Weights: TP rank t owns exactly what TSP rank t owns at D = T (q/k/v rows and W_o columns of
// head group t, intermediate slice t, vocabulary rows t), so the packed TspParams, the optimizer
// state and the checkpoint slices are shared with TSP; the Σ ranks of an SP group hold the same
// shards. Tokens: each SP rank holds its zigzag share (B·S/Σ rows); with Megatron sequence
// parallelism (the default) the residual stream is split once more over the T ranks (contiguous
// row blocks), otherwise it is replicated over them.
//
// One block, rows Tl = B·S/(Σ·T) with sequence parallelism (Ts = B·S/Σ without):
//
//   x[Tl] ─norm─▶ y[Tl] ─all-gather(tp)─▶ Y[Ts] ─q,k,v (head group t)─▶ k,v ─all-gather(sp)─▶ K,V
//        flash(q; K, V) ─▶ o·W_o,tᵀ = P[Ts] (partial over t) ─reduce-scatter(tp)─▶ x[Tl] +=
//   x[Tl] ─norm─▶ ─all-gather(tp)─▶ gate/up slice t ─▶ down slice t ─reduce-scatter(tp)─▶ x +=
//
// Plain TP (--tp-sequence-parallel off) replaces both all-gathers by nothing and both
// reduce-scatters by all-reduces. Backward mirrors it: all-gather(tp) of the output gradient,
// re-gather K/V (sp), reduce-scatter dK/dV (sp), reduce-scatter (or all-reduce) of the input
// gradient; each layer's weight gradients are all-reduced over sp (fixed order). Embedding:
// vocabulary-parallel lookup + reduce-scatter (all-reduce). LM head: all-gather of the final
// hidden (sequence parallel), logits for the local vocabulary rows in token chunks with online
// log-sum-exp, the (max, sum, target logit) triples all-gathered over tp and merged in rank order.
//
// Everything here is exact (same sums as one device, up to float rounding); reductions run in the
// communicator's fixed order. Under --dtype bf16 the normalised rows and the gathered inputs
// travel in bf16; the partial sums (row-parallel outputs, input gradients) are fp32 and are
// reduced in fp32 into the fp32 residual stream, as every sum of partial products is.
#include "parallel/tpsp.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/trace.h"
#include "kernels/dispatch.h"
#include "model/layer_loop.h"
#include "parallel/layout.h"
#include "parallel/sp_attention.h"
#include "parallel/tsp_internal.h"

namespace origami {

using k::AttnShape;
using k::KvSeg;
using k::QSeg;
using k::Trans;
using namespace tsp;

TpSpEngine::TpSpEngine(const ModelConfig& c, Comm& tp, Comm& sp, TpSpOptions o)
    : cfg_(c),
      tp_(tp),
      sp_(sp),
      o_(o),
      t_(TspDims::of(c, tp.size())),
      T_(tp.size()),
      Sg_(sp.size()),
      tr_(tp.rank()),
      sr_(sp.rank()) {
  seqp_ = o_.seq_parallel && T_ > 1;
  a2a_ = Sg_ > 1 && o_.sp_comm == SpComm::a2a;
  p2p_ = Sg_ > 1 && o_.sp_comm == SpComm::p2p;
  make_rope_tables(c, cos_, sin_);
}

Batch TpSpEngine::shard_batch(const Batch& g) const {
  validate_tpsp(cfg_, T_, Sg_, g.B, g.S, o_.attn_buckets, o_.seq_parallel);
  return Sg_ == 1 ? g : zigzag_batch(g, Sg_, sr_, chunk_owners(g, Sg_, o_.balance));
}

void TpSpEngine::begin(const Batch& b) {
  B_ = b.B;
  S_ = b.S;
  Ts_ = b.B * b.S / Sg_;
  Tl_ = seqp_ ? Ts_ / T_ : Ts_;
  row0_ = seqp_ ? tr_ * Tl_ : 0;
  docs_ = b.doc_start;
  owners_ = Sg_ > 1 ? chunk_owners(b, Sg_, o_.balance) : std::vector<int>();
  if (Sg_ > 1) {
    pos_ = zigzag().positions();
  } else {
    pos_.resize(static_cast<size_t>(Ts_));
    for (int64_t t = 0; t < Ts_; ++t) pos_[static_cast<size_t>(t)] = t % S_;
  }
  rope_positions(b, pos_, Ts_ / B_);
}

std::pair<int64_t, int64_t> TpSpEngine::owned_rows() const {
  if (seqp_) return {row0_, Tl_};
  return {0, tr_ == 0 ? Ts_ : 0};  // replicated rows: TP rank 0 reports them
}

int64_t TpSpEngine::owned_targets(const Batch& local) const {
  const int64_t Ts = local.B * local.S / Sg_, Tl = seqp_ ? Ts / T_ : Ts;
  const int64_t first = seqp_ ? tr_ * Tl : 0, n = seqp_ ? Tl : (tr_ == 0 ? Ts : 0);
  int64_t c = 0;
  for (int64_t i = first; i < first + n; ++i) c += local.targets[static_cast<size_t>(i)] >= 0;
  return c;
}

// Queries of local batch element bb, and the keys of every SP rank's tokens (rank-major after the
// all-gather), as segments of consecutive global positions (sp_attention.h's, Σ > 1).
std::vector<QSeg> TpSpEngine::qsegs(int64_t bb) const {
  if (Sg_ == 1) return {{bb * S_, 0, S_, zigzag().lo(bb, 0)}};
  return spattn::own_qsegs(zigzag(), bb);
}

std::vector<k::Kv> TpSpEngine::kvsegs(int64_t bb, k::CPtr K, k::CPtr V, float* dK, float* dV,
                                      int64_t kw) const {
  if (Sg_ == 1) {
    const int64_t row = bb * S_;
    return {{K + row * kw, V + row * kw, kw, 0, S_, dK ? dK + row * kw : nullptr,
             dV ? dV + row * kw : nullptr}};
  }
  return spattn::all_kvsegs(zigzag(), bb, K, V, dK, dV, kw);
}

Tensor TpSpEngine::gather(const Tensor& x, Traffic t, Cat c) {
  if (!seqp_) return x;
  Tensor y = Tensor::empty({Ts_, t_.h}, x.dtype(), c);
  tp_.iallgather(x.raw(), y.raw(), Tl_ * t_.h * static_cast<int64_t>(dtype_size(x.dtype())), t)
      .wait();
  return y;
}

void TpSpEngine::reduce_into(Tensor& P, Tensor& x, Traffic t) {
  const int64_t h = t_.h;
  if (T_ > 1 && seqp_) {
    Tensor r = ws32({Tl_, h});
    tp_.ireduce_scatter(F32(P), F32(r), Tl_ * h, t).wait();
    k::add_inplace<float>(F32(x), F32(r), Tl_ * h);
    return;
  }
  if (T_ > 1) tp_.iallreduce(F32(P), Ts_ * h, t).wait();
  k::add_inplace<float>(F32(x), F32(P), Ts_ * h);
}

void TpSpEngine::sp_sum_into(Tensor& scratch, Tensor& grad) {
  SpSum sum = sp_sum_post(scratch, grad);
  sum.finish();
}

TpSpEngine::SpSum TpSpEngine::sp_sum_post(const Tensor& scratch, Tensor& grad) {
  SpSum sum{scratch, &grad, {}};
  sum.req = sp_.iallreduce(F32(sum.scratch), scratch.numel(), Traffic::grads);
  return sum;
}

void TpSpEngine::SpSum::finish() {
  if (!grad) return;
  req.wait();
  k::add_inplace<float>(F32(*grad), F32(scratch), grad->numel());
  *this = SpSum();
}

KvGather TpSpEngine::kv_gather(const Acts& a, int64_t b) {
  return KvGather::post(sp_, a.k[b], a.v[b], Ts_, t_.kv_rows / o_.attn_buckets);
}

// ---- attention ------------------------------------------------------------------------------

void TpSpEngine::attn_fwd(const TspLayer& W, const Tensor& Y1, Tensor& x, Acts* a) {
  if (a2a_) return attn_fwd_a2a(W, Y1, x, a);
  if (p2p_) return attn_fwd_p2p(W, Y1, x, a);
  const int64_t Ts = Ts_, h = t_.h, d = t_.d, N = o_.attn_buckets;
  const int64_t qb = t_.nq_loc / N, kvb = t_.nkv_loc / N, qw = qb * d, kw = kvb * d;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const AttnShape sh{static_cast<int>(qb), static_cast<int>(kvb), static_cast<int>(d)};
  const k::CPtr pk = F(W.attn);
  if (a)
    for (auto* v : {&a->q, &a->k, &a->v, &a->o, &a->lse}) v->assign(N, Tensor());
  Tensor P = ws32_0({Ts, h});  // the partial output over t: fp32
  for (int64_t b = 0; b < N; ++b) {
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(pk, b, N);  // W_o: columns of [h, q_rows]
    Tensor Kg = ws({Sg_ * Ts, kw}), Vg = ws({Sg_ * Ts, kw});
    const k::Ptr kown = F(Kg) + sr_ * Ts * kw;
    const k::Ptr vown = F(Vg) + sr_ * Ts * kw;
    block::project_rope(kown, F(Y1), Wk, Ts, kw, h, static_cast<int>(kvb), static_cast<int>(d),
                        pos_.data(), cos_, sin_);
    k::linear_fwd(vown, F(Y1), Wv, Ts, kw, h);
    Request gk = sp_.iallgather(kown.p, Kg.raw(), bytes(Ts * kw), Traffic::kv);
    Request gv = sp_.iallgather(vown.p, Vg.raw(), bytes(Ts * kw), Traffic::kv);
    Tensor q = a ? act({Ts, qw}) : ws({Ts, qw});
    k::linear_fwd(F(q), F(Y1), Wq, Ts, qw, h);  // while K/V travel
    sp_.progress();
    k::rope_fwd(F(q), qw, pos_.data(), Ts, static_cast<int>(qb), static_cast<int>(d), F32(cos_),
                F32(sin_));
    if (a) {
      a->k[b] = act({Ts, kw});
      a->v[b] = act({Ts, kw});
      copy_bytes(a->k[b].raw(), kown.p, bytes(Ts * kw));
      copy_bytes(a->v[b].raw(), vown.p, bytes(Ts * kw));
    }
    gk.wait();
    gv.wait();
    Tensor o = a ? act({Ts, qw}) : ws({Ts, qw});
    Tensor lse = a ? act32({qb, Ts}) : ws32({qb, Ts});
    for (int64_t bb = 0; bb < B_; ++bb) {
      const auto qs = qsegs(bb);
      const auto ks = kvsegs(bb, F(Kg), F(Vg), nullptr, nullptr, kw);
      k::flash_attn_fwd(F(o), F32(lse), Ts, F(q), qw, qs.data(), static_cast<int>(qs.size()),
                        ks.data(), static_cast<int>(ks.size()), sh, scale);
    }
    k::gemm(Trans::N, Trans::T, Ts, h, qw, 1.0f, F(o), qw, Wo, t_.q_rows, 1.0f, F(P), h);
    if (a) {
      a->q[b] = std::move(q);
      a->o[b] = std::move(o);
      a->lse[b] = std::move(lse);
    }
  }
  exit_fwd(P, x, Traffic::acts);
}

// Backward per bucket b, in the order B(b) C(b−1) dq(b) (as TSP's units, tsp_attention.cpp): the
// gather of b+1 travels during the flash backward of b, the dK/dV reduce-scatter of b during that
// of b+1; dY1 accumulates dq(0), dk(0), dv(0), dq(1), ... as without the pipeline.
void TpSpEngine::attn_bwd(const TspLayer& W, float* G, const Acts& a, const Tensor& Y1,
                          const Tensor& dX, Tensor& dY1, KvGather first) {
  if (a2a_) return attn_bwd_a2a(W, G, a, Y1, dX, dY1);
  if (p2p_) return attn_bwd_p2p(W, G, a, Y1, dX, dY1);
  const int64_t Ts = Ts_, h = t_.h, d = t_.d, N = o_.attn_buckets;
  const int64_t qb = t_.nq_loc / N, kvb = t_.nkv_loc / N, qw = qb * d, kw = kvb * d;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const AttnShape sh{static_cast<int>(qb), static_cast<int>(kvb), static_cast<int>(d)};
  const k::CPtr pk = F(W.attn);
  const ProjBwd proj{sp_, pos_.data(), cos_, sin_, Y1, dY1, Ts, h, static_cast<int>(d)};
  PendingKv pend;  // the bucket between its flash backward and C
  auto stage_c = [&] {
    if (pend.unit < 0) return;
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(pk, pend.unit, N);
    const auto [Gq, Gk, Gv, Go] = t_.bucket(G, pend.unit, N);
    pend.finish(proj, kw, static_cast<int>(kvb), Wk, Wv, Gk, Gv);
    pend = PendingKv();
  };
  KvGather cur = first.posted() ? std::move(first) : kv_gather(a, 0);
  for (int64_t b = 0; b < N; ++b) {
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(pk, b, N);  // W_o: columns of [h, q_rows]
    const auto [Gq, Gk, Gv, Go] = t_.bucket(G, b, N);
    Tensor dO = ws({Ts, qw});
    k::gemm(Trans::N, Trans::N, Ts, qw, h, 1.0f, F(dX), h, Wo, t_.q_rows, 0.0f, F(dO), qw);
    sp_.progress();
    k::gemm(Trans::T, Trans::N, h, qw, Ts, 1.0f, F(dX), h, F(a.o[b]), qw, 1.0f, Go, t_.q_rows);
    cur.k.wait();
    cur.v.wait();
    KvGather nxt;
    if (b + 1 < N) nxt = kv_gather(a, b + 1);
    // the attention kernels' gradients: fp32
    Tensor dKg = ws32_0({Sg_ * Ts, kw}), dVg = ws32_0({Sg_ * Ts, kw}), dq = ws32_0({Ts, qw});
    for (int64_t bb = 0; bb < B_; ++bb) {
      const auto qs = qsegs(bb);
      const auto ks = kvsegs(bb, F(cur.K), F(cur.V), F32(dKg), F32(dVg), kw);
      k::flash_attn_bwd(F32(dq), F(dO), F(a.q[b]), F(a.o[b]), qw, F32(a.lse[b]), Ts, qs.data(),
                        static_cast<int>(qs.size()), ks.data(), static_cast<int>(ks.size()), sh,
                        scale);
    }
    cur = std::move(nxt);
    PendingKv posted = PendingKv::post(sp_, b, std::move(dKg), std::move(dVg), Ts, kw);
    stage_c();  // C(b-1)
    proj(F32(dq), qw, static_cast<int>(qb), true, Wq, Gq);
    pend = std::move(posted);
  }
  stage_c();  // C(N-1)
}

// ---- MLP ------------------------------------------------------------------------------------

void TpSpEngine::mlp_fwd(const TspLayer& W, const Tensor& Y2, Tensor& x, Acts* a) {
  const int64_t Ts = Ts_, h = t_.h, Ir = t_.Ir;
  const k::CPtr Wp = F(W.mlp);
  Tensor g = a ? act({Ts, Ir}) : ws({Ts, Ir}), u = a ? act({Ts, Ir}) : ws({Ts, Ir});
  Tensor s = ws({Ts, Ir}), P = ws32({Ts, h});  // the partial output over t: fp32
  const block::MlpShard Ws{Wp, Wp + Ir * h, Wp + 2 * Ir * h, Ir};
  block::mlp_up(F(g), F(u), F(Y2), Ws, Ts, h);
  block::mlp_down(F(P), 0.0f, F(s), F(g), F(u), Ws, Ts, h);
  if (a) {
    a->g = std::move(g);
    a->u = std::move(u);
  }
  exit_fwd(P, x, Traffic::acts);
}

void TpSpEngine::mlp_bwd(const TspLayer& W, float* G, const Acts& a, const Tensor& Y2,
                         const Tensor& dX, Tensor& dY2) {
  const int64_t Ts = Ts_, h = t_.h, Ir = t_.Ir;
  const k::CPtr Wp = F(W.mlp);
  Tensor s = ws({Ts, Ir}), da = ws({Ts, Ir}), dg = ws({Ts, Ir}), du = ws({Ts, Ir});
  const block::MlpShard Ws{Wp, Wp + Ir * h, Wp + 2 * Ir * h, Ir};
  block::mlp_down_bwd(G + 2 * Ir * h, F(dg), F(du), F(s), F(da), F(dX), F(a.g), F(a.u), Ws, Ts, h);
  block::mlp_up_bwd(G, G + Ir * h, F(dY2), F(dg), F(du), F(Y2), Ws, Ts, h);
}

// ---- a block --------------------------------------------------------------------------------

// RMSNorm of this rank's rows of x; the normalised rows n (before the weight) of all Ts tokens
// go to N (all-gathered over tp under sequence parallelism: the only copy a block keeps of its
// normed inputs, the weighted output is recomputed from it); returns the weighted output [Ts, h].
Tensor TpSpEngine::norm_fwd(const Tensor& x, const Tensor& w, Tensor& N, Tensor& rstd, bool keep) {
  const int64_t Tl = Tl_, Ts = Ts_, h = t_.h;
  const Cat c = keep ? Cat::activations : Cat::workspace;
  rstd = Tensor::empty({Tl}, DType::f32, c);
  Tensor y = ws({Tl, h});
  if (!seqp_) {
    N = Tensor::empty({Ts, h}, block::elem(), c);
    k::rmsnorm_fwd(F(y), F(N), F32(rstd), F(x), F(w), Tl, h, cfg_.rms_norm_eps);
    return y;
  }
  Tensor n = ws({Tl, h});
  k::rmsnorm_fwd(F(y), F(n), F32(rstd), F(x), F(w), Tl, h, cfg_.rms_norm_eps);
  N = Tensor::empty({Ts, h}, block::elem(), c);
  // The entry region's all-gather, of the normalised rows (the block keeps them; the weighted
  // input is recomputed from them): its backward is the enter_bwd after the GEMMs' dx.
  tp_.iallgather(n.raw(), N.raw(), bytes(Tl * h), Traffic::acts).wait();
  return reweight(N, w);
}

Tensor TpSpEngine::reweight(const Tensor& N, const Tensor& w) {
  Tensor y = ws({Ts_, t_.h});
  k::rmsnorm_apply(F(y), F(N), F(w), Ts_, t_.h);
  return y;
}

void TpSpEngine::block_fwd(const TspLayer& W, Tensor& x, Acts* a) {
  Acts tmp;
  Acts& A = a ? *a : tmp;
  {
    const Tensor Y1 = norm_fwd(x, W.in_norm, A.n1, A.rstd1, a != nullptr);
    attn_fwd(W, Y1, x, a);
  }
  const Tensor Y2 = norm_fwd(x, W.post_norm, A.n2, A.rstd2, a != nullptr);
  mlp_fwd(W, Y2, x, a);
}

void TpSpEngine::block_bwd(const TspLayer& W, TspLayer& G, const Acts& a, Tensor& dx) {
  const int64_t Tl = Tl_, Ts = Ts_, h = t_.h, own = row0_ * h;  // this rank's rows of n1, n2
  // Layer gradients of the shards: straight into G, or (Σ > 1) into scratch summed over sp.
  Tensor ga = Sg_ > 1 ? ws32_0({t_.attn_size()}) : G.attn;
  Tensor gm = Sg_ > 1 ? ws32_0({t_.mlp_size()}) : G.mlp;
  KvGather first;  // Σ > 1: bucket 0's K/V re-gather travels during the MLP backward
  SpSum mlp_sum;   // and the MLP gradient's all-reduce during the attention backward
  {
    Tensor dX = exit_bwd(dx, Traffic::acts, Cat::workspace);
    if (Sg_ > 1 && !a2a_ && !p2p_) first = kv_gather(a, 0);
    Tensor dY2 = ws32_0({Ts, h}), dy2 = ws32_0({Tl, h});  // partial sums: fp32
    mlp_bwd(W, F32(gm), a, reweight(a.n2, W.post_norm), dX, dY2);
    enter_bwd(dY2, dy2, Traffic::acts);
    if (Sg_ > 1) mlp_sum = sp_sum_post(gm, G.mlp);
    k::rmsnorm_bwd(F(dx), F32(G.post_norm), F(dy2), F(a.n2) + own, F(W.post_norm), F32(a.rstd2), Tl,
                   h);
  }
  attn_sum_.finish();  // the layer above's attention gradient, hidden behind this MLP backward
  Tensor dX = exit_bwd(dx, Traffic::acts, Cat::workspace);
  Tensor dY1 = ws32_0({Ts, h}), dy1 = ws32_0({Tl, h});
  attn_bwd(W, F32(ga), a, reweight(a.n1, W.in_norm), dX, dY1, std::move(first));
  dX = Tensor();
  enter_bwd(dY1, dy1, Traffic::acts);
  k::rmsnorm_bwd(F(dx), F32(G.in_norm), F(dy1), F(a.n1) + own, F(W.in_norm), F32(a.rstd1), Tl, h);
  mlp_sum.finish();
  if (Sg_ > 1) attn_sum_ = sp_sum_post(ga, G.attn);  // finished by the layer below (or the end)
}

// ---- embedding and LM head ------------------------------------------------------------------

namespace {
// The tokens among the first n of b whose ids fall in this rank's vocabulary shard [v0, v0 + Vr):
// their positions and their rows of the shard, in position order.
std::pair<std::vector<int64_t>, std::vector<int64_t>> shard_rows(const Batch& b, int64_t n,
                                                                 int64_t v0, int64_t Vr) {
  std::vector<int64_t> rows, ids;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t id = b.inputs[static_cast<size_t>(t)];
    if (id >= v0 && id < v0 + Vr) rows.push_back(t), ids.push_back(id - v0);
  }
  return {rows, ids};
}
}  // namespace

void TpSpEngine::embed_fwd(const TspParams& p, const Batch& b, Tensor& x) {
  const int64_t h = t_.h, Vr = t_.Vr, v0 = tr_ * Vr;
  Tensor E = T_ > 1 ? ws32_0({Ts_, h}) : x;  // x, and the partial rows over t: fp32
  const auto [rows, ids] = shard_rows(b, Ts_, v0, Vr);
  k::index_copy_rows(F(E), F(p.embed), rows.data(), ids.data(), static_cast<int64_t>(rows.size()),
                     h);
  if (T_ > 1) {
    x.zero();
    exit_fwd(E, x, Traffic::embed_head);
  }
}

void TpSpEngine::embed_bwd(TspParams& g, const Batch& b, const Tensor& dx) {
  const int64_t h = t_.h, Vr = t_.Vr, v0 = tr_ * Vr;
  const Tensor dX = exit_bwd(dx, Traffic::embed_head, Cat::workspace, true);  // fp32 rows
  Tensor target = g.embed;
  if (Sg_ > 1) target = vocab_scratch_.defined() ? vocab_scratch_ : ws32_0({Vr, h});
  const auto [rows, ids] = shard_rows(b, Ts_, v0, Vr);  // position order
  k::index_add_rows(F32(target), F(dX), ids.data(), rows.data(), static_cast<int64_t>(rows.size()),
                    h);
  if (Sg_ > 1) sp_sum_into(target, g.embed);
  vocab_scratch_ = Tensor();
}

double TpSpEngine::head(const TspParams& p, TspParams* g, const Tensor& yf, Tensor* dyf,
                        const Batch& b, double inv_n) {
  const int64_t Ts = Ts_, h = t_.h, Vr = t_.Vr, v0 = tr_ * Vr, V = cfg_.vocab_size;
  const int64_t C = block::logits_chunk(Ts, Vr);
  const int64_t* tg = b.targets.data();
  const Tensor Y = enter_fwd(yf, Traffic::embed_head, Cat::workspace);
  const k::CPtr Wv = F(p.head_or_embed());
  // logits and the log-sum-exp statistics: fp32
  Tensor z = ws32({C, Vr}), st = ws32({3, Ts}), lse = ws32({Ts});
  float *m = F32(st), *l = m + Ts, *zt = l + Ts;
  k::ce_init<float>(m, l, zt, Ts);
  for (int64_t r0 = 0; r0 < Ts; r0 += C) {
    const int64_t c = std::min(C, Ts - r0);
    block::head_chunk_fwd(F32(z), m + r0, l + r0, zt + r0, F(Y) + r0 * h, Wv, c, h, Vr, v0, V,
                          tg + r0);
  }
  if (T_ > 1) {  // merge the per-shard statistics in rank order (identical on every TP rank)
    Tensor all = ws32({T_, 3 * Ts});
    tp_.iallgather(st.raw(), all.raw(), static_cast<int64_t>(st.nbytes()), Traffic::embed_head)
        .wait();
    // On the host (3·Ts·T floats; st may be device memory): copied over, merged, copied back.
    Tensor ha = Tensor::empty_host({T_, 3 * Ts}, DType::f32, Cat::workspace);
    Tensor hs = Tensor::empty_host({3, Ts}, DType::f32, Cat::workspace);
    if (!tensors_hold_no_data()) {  // (the dry run's meta tensors: nothing to merge)
      copy_bytes(ha.raw(), all.raw(), all.nbytes());
      copy_bytes(hs.raw(), st.raw(), st.nbytes());
      float *hm = F32(hs), *hl = hm + Ts, *hz = hl + Ts;
      for (int64_t r = 0; r < Ts; ++r) {
        if (tg[r] < 0) continue;
        float M = -std::numeric_limits<float>::infinity(), L = 0, Z = 0;
        for (int q = 0; q < T_; ++q) M = std::max(M, F32(ha)[q * 3 * Ts + r]);
        for (int q = 0; q < T_; ++q) {
          const float* s = F32(ha) + q * 3 * Ts;
          L += s[Ts + r] * std::exp(s[r] - M);
          Z += s[2 * Ts + r];
        }
        hm[r] = M;
        hl[r] = L;
        hz[r] = Z;
      }
      copy_bytes(st.raw(), hs.raw(), st.nbytes());
    }
  }
  k::ce_finish<float>(F32(lse), m, l, zt, Ts, tg);
  const auto [own0, own_n] = owned_rows();
  Tensor tmp = ws32({Ts});
  const double loss =
      k::ce_finish<float>(F32(tmp), m + own0, l + own0, zt + own0, own_n, tg + own0);
  if (!g) return loss;
  CommScope bwd({&tp_, &sp_}, kWhereHead, Phase::bwd);
  Tensor Gh = g->head_or_embed();
  if (Sg_ > 1) Gh = ws32_0({Vr, h});
  Tensor dY = ws32_0({Ts, h});  // partial over the vocabulary shards: fp32
  for (int64_t r0 = 0; r0 < Ts; r0 += C) {
    const int64_t c = std::min(C, Ts - r0);
    block::head_chunk_bwd(F32(z), F(dY) + r0 * h, F32(Gh), F32(lse) + r0, F(Y) + r0 * h, Wv, c, h,
                          Vr, v0, V, tg + r0, static_cast<float>(inv_n), true);
  }
  enter_bwd(dY, *dyf, Traffic::embed_head);
  if (Sg_ > 1) {
    if (g->head.defined())
      sp_sum_into(Gh, g->head);
    else
      vocab_scratch_ = Gh;  // tied: the embedding backward adds to it, then one sum over sp
  }
  return loss;
}

// ---- one micro-batch ------------------------------------------------------------------------

double TpSpEngine::forward_backward(const TspParams& p, TspParams& g, const Batch& b,
                                    double inv_n) {
  begin(b);
  const int64_t Tl = Tl_, h = t_.h;
  LayerSteps<Acts> s;
  s.embed = [&] {
    Tensor x = act32({Tl, h});  // the residual stream (and its gradient): fp32
    embed_fwd(p, b, x);
    return x;
  };
  s.forward = [&](size_t l, Tensor& x, Acts* a) { block_fwd(p.layers[l], x, a); };
  s.head = [&](const Tensor& x, Tensor& dx) {
    Tensor nf = ws({Tl, h}), rstd = ws32({Tl}), yf = ws({Tl, h}), dyf = ws32_0({Tl, h});
    k::rmsnorm_fwd(F(yf), F(nf), F32(rstd), F(x), F(p.final_norm), Tl, h, cfg_.rms_norm_eps);
    const double loss = head(p, &g, yf, &dyf, b, inv_n);
    k::rmsnorm_bwd(F(dx), F32(g.final_norm), F(dyf), F(nf), F(p.final_norm), F32(rstd), Tl, h);
    return loss;
  };
  s.recompute = [&](size_t l, Tensor& x, Acts& a) { block_fwd(p.layers[l], x, &a); };
  s.backward = [&](size_t l, Acts& a, Tensor& dx) { block_bwd(p.layers[l], g.layers[l], a, dx); };
  s.finish = [&] { attn_sum_.finish(); };
  s.embed_backward = [&](const Tensor& dx) { embed_bwd(g, b, dx); };
  return forward_backward_layers(s, p.layers.size(), o_.recompute, {&tp_, &sp_});
}

double TpSpEngine::forward_loss(const TspParams& p, const Batch& b) {
  begin(b);
  const int64_t Tl = Tl_, h = t_.h;
  Tensor x = ws32({Tl, h});  // the residual stream: fp32
  {
    CommScope c({&tp_, &sp_}, kWhereEmbed, Phase::fwd);
    embed_fwd(p, b, x);
  }
  for (size_t l = 0; l < p.layers.size(); ++l) {
    CommScope c({&tp_, &sp_}, static_cast<int>(l), Phase::fwd);
    block_fwd(p.layers[l], x, nullptr);
  }
  CommScope c({&tp_, &sp_}, kWhereHead, Phase::fwd);
  Tensor nf = ws({Tl, h}), rstd = ws32({Tl}), yf = ws({Tl, h});
  k::rmsnorm_fwd(F(yf), F(nf), F32(rstd), F(x), F(p.final_norm), Tl, h, cfg_.rms_norm_eps);
  return head(p, nullptr, yf, nullptr, b, 0.0);
}

void TpSpEngine::finish_grads(TspParams& g) {
  // Norm gradients are partial over the rows: over sp always, over tp only when the residual
  // stream is split (without sequence parallelism every TP rank computed the same full sum).
  CommScope c({&tp_, &sp_}, kWhereStep, Phase::bwd);
  g.for_each([&](Tensor& t, bool replicated) {
    if (!replicated) return;
    if (seqp_) tp_.iallreduce(F32(t), t.numel(), Traffic::other).wait();
    sp_.iallreduce(F32(t), t.numel(), Traffic::other).wait();
  });
}

}  // namespace origami
