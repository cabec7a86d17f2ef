// TSP attention (tsp-spec §4, §6). Rank r owns head group r: KV heads [r·n_kv/D, (r+1)·n_kv/D) and
// the query heads that use them, packed as [W_q; W_k; W_v; W_o] (see tsp_params.h).
//
// Forward, for owner j = 0..D-1 (the broadcast of j+1 is in flight while j computes):
//
//     rank j ──broadcast packet W_j──▶ all            (attn_weights, (2+2/g)h²/D each)
//     every rank:  q, k, v = y1 · W_{q,k,v,j}ᵀ for its local tokens [T, ·]; RoPE at global positions
//                  all-gather k, v ──▶ K_j, V_j [D·T, ·] rank-major (kv); the kernel takes them as
//                                                  2D segments
//                  o = flash(q; segments of K_j, V_j)           (causal by global position)
//                  x += o · W_o,jᵀ                              (local accumulation: no all-reduce)
//
// With --attn-buckets N a group's KV heads are processed N at a time (smaller gathered K/V).
//
// Backward, for each owner j: W_j again (broadcast, or kept from the recompute with
// --keep-attn-weights); re-gather K_j, V_j from the saved local k, v; dO = dy·W_o,j;
// flash backward gives dq (local) and dK, dV for all D·T keys; reduce-scatter dK, dV (kv) so each
// rank gets the sum for its own tokens; undo RoPE; dy1 += [dq dk dv]·[W_q;W_k;W_v]_j; the partial
// weight gradient of group j (from this rank's tokens) is reduced to owner j (grads).
//
// Backward pipeline over units u = (group j, bucket b), three stages each:
//   B1(u)  dO = dy·W_o; dW_o += dyᵀ·o
//   B2(u)  wait K/V of u, post the K/V all-gather of u+1; flash backward; post dK/dV's
//          reduce-scatter of u
//   C(u)   wait dK/dV of u; RoPE⁻¹ dk; dW_k, dW_v, dy1 (ProjBwd), then dq(u): RoPE⁻¹, dW_q, dy1
//
//   [MLP ring, last step: post gather(0), packets 0 and 1]                  (attn_bwd_prefetch)
//   B1(0) B2(0) dq(0) | B1(1) B2(1) C(0) dq(1) | B1(2) B2(2) C(1) dq(2) | … | C(U−1)
//           └─ flash(0) runs with gather(1) in flight; flash(1) with gather(2) and
//              reduce-scatter(0)
//   packets: j+1 posted when group j starts (three buffers); group j's gradient reduced to owner j
//   after its last C, waited when group j+2 needs the buffer; the layer's last reduce stays in
//   flight into the next layer's MLP backward (AttnTail)
//
// dy1 receives dk(u−1), dv(u−1), dq(u), dk(u), … in the order of the unpipelined schedule, so
// results are bitwise those of --no-overlap.
#include <cmath>

#include "core/trace.h"
#include "kernels/dispatch.h"
#include "parallel/sp_attention.h"
#include "parallel/tsp_internal.h"

namespace origami {

using k::AttnShape;
using k::KvSeg;
using k::QSeg;
using k::Trans;
using namespace tsp;

namespace {
struct Segs {
  std::vector<QSeg> q;
  std::vector<k::Kv> kv;
};
// The query chunks of local batch element bb and the 2D key chunks of everyone's tokens (K, V in
// the element type; dK, dV fp32).
Segs segments(const Zigzag& z, int64_t bb, k::CPtr K, k::CPtr V, float* dK, float* dV, int64_t kw) {
  return {spattn::own_qsegs(z, bb), spattn::all_kvsegs(z, bb, K, V, dK, dV, kw)};
}
}  // namespace

void TspEngine::attn_fwd(const TspLayer& W, const Tensor& y1, Tensor& x, Acts* a,
                         std::vector<Tensor>* keep, const std::function<void()>& before_last,
                         AttnStart* start) {
  const int64_t T = z_.local_tokens(), h = t_.h, d = t_.d, N = o_.attn_buckets;
  const int64_t qb = t_.nq_loc / N, kvb = t_.nkv_loc / N, qw = qb * d, kw = kvb * d;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const AttnShape sh{static_cast<int>(qb), static_cast<int>(kvb), static_cast<int>(d)};
  if (o_.sp_comm == SpComm::a2a && D_ > 1) return attn_fwd_a2a(W, y1, x, a, before_last, start);
  // Pipeline (tsp-spec §4): units u = (head group j, bucket b) in order. While unit u computes,
  // the K/V all-gather of unit u+1 and the broadcast of packet j+2 are in flight: three packet
  // buffers (D kept packets with --keep-attn-weights), two units of gathered K/V.
  if (keep) keep->assign(D_, Tensor());
  AttnStart st = start && start->posted() ? std::move(*start) : attn_start(W, keep, false);
  st.layer_req.wait();
  if (a) {
    for (auto* v : {&a->q, &a->k, &a->v, &a->o, &a->lse}) v->assign(D_ * N, Tensor());
  }
  struct Unit {  // one unit's gathered K, V and their transfers
    Tensor Kg, Vg;
    Request gk, gv;
  };
  // Stage A of unit u: project this rank's k, v, rotate k, post their all-gathers.
  auto stage_a = [&](int64_t u) {
    const int j = static_cast<int>(u / N);
    const int64_t b = u % N;
    if (j != r_) st.preq[j].wait();  // the root reads its own packet: waited last
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(packet(st, W, j, keep), b, N);
    Unit un{ws({D_ * T, kw}), ws({D_ * T, kw}), {}, {}};
    const k::Ptr kown = F(un.Kg) + r_ * T * kw;
    const k::Ptr vown = F(un.Vg) + r_ * T * kw;
    block::project_rope(kown, F(y1), Wk, T, kw, h, static_cast<int>(kvb), static_cast<int>(d),
                        pos_.data(), cos_, sin_);
    k::linear_fwd(vown, F(y1), Wv, T, kw, h);
    un.gk = comm_.iallgather(kown.p, un.Kg.raw(), bytes(T * kw), Traffic::kv);
    un.gv = comm_.iallgather(vown.p, un.Vg.raw(), bytes(T * kw), Traffic::kv);
    if (sink_) sink_->store(sink_layer_, j * t_.nkv_loc + b * kvb, kvb, kown, vown);
    if (a) {
      a->k[u] = act({T, kw});
      a->v[u] = act({T, kw});
      copy_bytes(a->k[u].raw(), kown.p, bytes(T * kw));
      copy_bytes(a->v[u].raw(), vown.p, bytes(T * kw));
    }
    return un;
  };
  const int64_t U = D_ * N;
  Unit cur = stage_a(0);
  for (int64_t u = 0; u < U; ++u) {
    const int j = static_cast<int>(u / N);
    const int64_t b = u % N;
    if (b == 0) attn_post_packet(st, W, j + 2, keep);
    Unit nxt;
    if (u + 1 < U) nxt = stage_a(u + 1);
    if (u + 1 == U && before_last) before_last();
    // Stage B of unit u: queries, attention against the gathered keys, output projection.
    TraceSpan span(std::string("attention head group ").append(std::to_string(j)));
    const auto [Wq, Wk, Wv, Wo] =
        t_.bucket(packet(st, W, j, keep), b, N);  // W_o: columns of [h, q_rows]
    Tensor q = a ? act({T, qw}) : ws({T, qw});
    block::project_rope(F(q), F(y1), Wq, T, qw, h, static_cast<int>(qb), static_cast<int>(d),
                        pos_.data(), cos_, sin_);
    comm_.progress();
    cur.gk.wait();
    cur.gv.wait();
    Tensor o = a ? act({T, qw}) : ws({T, qw});
    Tensor lse = a ? act32({qb, T}) : ws32({qb, T});
    for (int64_t bb = 0; bb < z_.B; ++bb) {
      Segs s = segments(z_, bb, F(cur.Kg), F(cur.Vg), nullptr, nullptr, kw);
      k::flash_attn_fwd(F(o), F32(lse), T, F(q), qw, s.q.data(), 2, s.kv.data(),
                        static_cast<int>(s.kv.size()), sh, scale);
    }
    comm_.progress();
    k::gemm(Trans::N, Trans::T, T, h, qw, 1.0f, F(o), qw, Wo, t_.q_rows, 1.0f, F(x), h);
    if (a) {
      a->q[u] = std::move(q);
      a->o[u] = std::move(o);
      a->lse[u] = std::move(lse);
    }
    cur = std::move(nxt);
  }
}

void TspEngine::AttnTail::finish() {
  g.finish(dst);
  *this = AttnTail();  // the buffers go
}

k::CPtr TspEngine::packet(const AttnStart& st, const TspLayer& W, int j,
                          const std::vector<Tensor>* kept) const {
  return kept ? F((*kept)[j]) : (j == r_ ? F(W.attn) : F(st.buf[j % 3]));
}

void TspEngine::attn_post_packet(AttnStart& st, const TspLayer& W, int j,
                                 std::vector<Tensor>* into) {
  if (j >= D_) return;
  const int64_t P = t_.attn_size();
  Tensor& dst = into ? (*into)[j] : st.buf[j % 3];
  if (into) {
    dst = Tensor::empty({P}, W.attn.dtype(), Cat::comm);
    if (j == r_) copy_bytes(dst.raw(), W.attn.raw(), bytes(P));
  } else if (!dst.defined()) {
    dst = Tensor::empty({P}, W.attn.dtype(), Cat::comm);
  }
  void* p = j == r_ && !into ? const_cast<void*>(W.attn.raw()) : dst.raw();  // the owner's own
  st.preq[j] = comm_.ibcast(p, bytes(P), j, Traffic::attn_weights);
}

TspEngine::AttnStart TspEngine::attn_start(const TspLayer& W, std::vector<Tensor>* into,
                                           bool have) {
  AttnStart st;
  st.preq.resize(static_cast<size_t>(D_));
  if (!have) {
    attn_post_packet(st, W, 0, into);
    attn_post_packet(st, W, 1, into);
  }
  return st;
}

TspEngine::AttnStart TspEngine::attn_bwd_prefetch(const TspLayer& W, const Acts& a, bool have) {
  AttnStart st = attn_start(W, nullptr, have);
  if (o_.sp_comm == SpComm::a2a && D_ > 1) return st;  // no K/V gather: Ulysses' all-to-alls
  st.first = KvGather::post(comm_, a.k[0], a.v[0], z_.local_tokens(), t_.kv_rows / o_.attn_buckets);
  return st;
}

void TspEngine::attn_bwd(const TspLayer& W, TspLayer& G, const Acts& a, const Tensor& y1,
                         const Tensor& dy, Tensor& dy1, const std::vector<Tensor>* kept,
                         AttnStart st) {
  const int64_t T = z_.local_tokens(), h = t_.h, d = t_.d, N = o_.attn_buckets;
  const int64_t qb = t_.nq_loc / N, kvb = t_.nkv_loc / N, qw = qb * d, kw = kvb * d;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const AttnShape sh{static_cast<int>(qb), static_cast<int>(kvb), static_cast<int>(d)};
  const int64_t P = t_.attn_size();
  // The pipeline B1 B2 C over units: the diagram at the top of this file.
  if (!st.posted()) st = attn_bwd_prefetch(W, a, kept != nullptr);
  if (o_.sp_comm == SpComm::a2a && D_ > 1) return attn_bwd_a2a(W, G, a, y1, dy, dy1, std::move(st));
  attn_tail_.finish();  // the previous layer's last reduce, hidden behind this layer's MLP
  st.layer_req.wait();
  const Tensor dy_e = block::in_elem(dy);  // the fp32 residual gradient, for the GEMMs
  GradReturn gr;                           // this rank's partial dW and their way to the owners
  grads_alloc(gr);
  gr.sum = Tensor::empty({P}, DType::f32, Cat::comm);  // the owner's reduced gradient
  auto grad = [&](int j) { return grad_of(gr, j); };
  const ProjBwd proj{comm_, pos_.data(), cos_, sin_, y1, dy1, T, h, static_cast<int>(d)};
  PendingKv pend;  // the unit between B2 and C
  auto stage_c = [&] {
    if (pend.unit < 0) return;
    const int j = static_cast<int>(pend.unit / N);
    const int64_t b = pend.unit % N;
    {
      TraceSpan span(std::string("attention bwd dK dV group ").append(std::to_string(j)));
      const auto [Wq, Wk, Wv, Wo] = t_.bucket(packet(st, W, j, kept), b, N);
      const auto [Gq, Gk, Gv, Go] = t_.bucket(grad(j), b, N);
      pend.finish(proj, kw, static_cast<int>(kvb), Wk, Wv, Gk, Gv);
    }
    pend = PendingKv();
    if (b + 1 == N) group_done(gr, G, j);  // group j is complete
  };
  const int64_t U = D_ * N;
  KvGather cur = std::move(st.first);
  for (int64_t u = 0; u < U; ++u) {
    const int j = static_cast<int>(u / N);
    const int64_t b = u % N;
    TraceSpan span(std::string("attention bwd head group ").append(std::to_string(j)));
    if (b == 0) group_begin(gr, st, W, G, j, kept);
    const k::CPtr pk = packet(st, W, j, kept);
    const auto [Wq, Wk, Wv, Wo] = t_.bucket(pk, b, N);  // W_o: columns of [h, q_rows]
    const auto [Gq, Gk, Gv, Go] = t_.bucket(grad(j), b, N);
    // B1(u)
    Tensor dO = ws({T, qw});
    k::gemm(Trans::N, Trans::N, T, qw, h, 1.0f, F(dy_e), h, Wo, t_.q_rows, 0.0f, F(dO), qw);
    comm_.progress();
    k::gemm(Trans::T, Trans::N, h, qw, T, 1.0f, F(dy_e), h, F(a.o[u]), qw, 1.0f, Go, t_.q_rows);
    comm_.progress();
    // B2(u)
    cur.k.wait();
    cur.v.wait();
    KvGather nxt;
    if (u + 1 < U) nxt = KvGather::post(comm_, a.k[u + 1], a.v[u + 1], T, kw);
    // the attention kernels' gradients: fp32
    Tensor dKg = ws32_0({D_ * T, kw}), dVg = ws32_0({D_ * T, kw}), dq = ws32_0({T, qw});
    for (int64_t bb = 0; bb < z_.B; ++bb) {
      Segs s = segments(z_, bb, F(cur.K), F(cur.V), F32(dKg), F32(dVg), kw);
      k::flash_attn_bwd(F32(dq), F(dO), F(a.q[u]), F(a.o[u]), qw, F32(a.lse[u]), T, s.q.data(), 2,
                        s.kv.data(), static_cast<int>(s.kv.size()), sh, scale);
    }
    cur = std::move(nxt);
    PendingKv posted = PendingKv::post(comm_, u, std::move(dKg), std::move(dVg), T, kw);
    stage_c();  // C(u-1)
    proj(F32(dq), qw, static_cast<int>(qb), true, Wq, Gq);
    pend = std::move(posted);
  }
  stage_c();  // C(U-1)
  for (auto& q : st.preq) q.wait();
  layer_done(gr);
  // the last reduce stays in flight (AttnTail): finished by the next attn_bwd or the caller
  attn_tail_ = {std::move(gr), F32(G.attn)};
}

// ---- TSP's gradient return: group j's partial reduced to owner j while later groups compute ----

void TspEngine::GradReturn::finish(float* own_grad) {
  red.wait();
  if (owner_pending) k::add_inplace<float>(own_grad, F32(sum), sum.numel());
  owner_pending = false;
}

void TspEngine::grads_alloc(GradReturn& g) {
  g.part[0] = Tensor::empty({t_.attn_size()}, DType::f32, Cat::comm);
  if (D_ > 1) g.part[1] = Tensor::empty({t_.attn_size()}, DType::f32, Cat::comm);
}

float* TspEngine::grad_of(GradReturn& g, int j) {
  return F32(g.part[j % 2]);
}

void TspEngine::group_begin(GradReturn& g, AttnStart& st, const TspLayer& W, TspLayer& G, int j,
                            const std::vector<Tensor>* kept) {
  if (j >= 2) g.finish(F32(G.attn));  // group j-2's used part[j % 2]; normally long done
  zero_bytes(grad_of(g, j), static_cast<size_t>(t_.attn_size()) * sizeof(float));  // fp32
  if (j >= 1 && !kept) attn_post_packet(st, W, j + 1, nullptr);  // buffer of j-2: free
  if (!kept && j != r_) st.preq[j].wait();  // the root's own broadcast is waited last
}

void TspEngine::group_done(GradReturn& g, TspLayer& G, int j) {
  g.finish(F32(G.attn));  // group j-1's, overlapped with group j
  g.red = comm_.ireduce(grad_of(g, j), F32(g.sum), t_.attn_size(), j, Traffic::grads);
  g.owner_pending = j == r_;
}

}  // namespace origami
