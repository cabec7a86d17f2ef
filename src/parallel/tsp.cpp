// The TSP engine: one block = RMSNorm -> attention schedule -> residual; RMSNorm -> MLP ring ->
// residual, on this rank's zigzag tokens. The loss normalisation 1/N is global (all-reduced by the
// caller before the first backward); each rank returns the CE sum of its own targets.
#include "parallel/tsp.h"

#include "core/trace.h"
#include "kernels/dispatch.h"
#include "model/layer_loop.h"
#include "parallel/layout.h"
#include "parallel/tsp_internal.h"

namespace origami {

using k::AttnShape;
using k::KvSeg;
using k::QSeg;
using k::Trans;
using namespace tsp;

TspEngine::TspEngine(const ModelConfig& c, Comm& comm, TspOptions o)
    : cfg_(c),
      comm_(comm),
      o_(o),
      t_(TspDims::of(c, comm.size())),
      D_(comm.size()),
      r_(comm.rank()) {
  make_rope_tables(c, cos_, sin_);
}

Batch TspEngine::shard_batch(const Batch& g) const {
  validate_tsp(cfg_, D_, g.S, o_.attn_buckets);
  return zigzag_batch(g, D_, r_, chunk_owners(g, D_, o_.balance));
}

void TspEngine::block_fwd(const TspLayer& W, Tensor& x, Acts* a, std::vector<Tensor>* keep,
                          bool mlp, AttnStart* start, const TspLayer* next_w, AttnStart* next) {
  const int64_t T = z_.local_tokens(), h = t_.h;
  Acts tmp;
  Acts& A = a ? *a : tmp;
  auto keepT = [&](std::vector<int64_t> s) { return a ? act(std::move(s)) : ws(std::move(s)); };
  auto keep32 = [&](std::vector<int64_t> s) {  // statistics: fp32
    return a ? act32(std::move(s)) : ws32(std::move(s));
  };
  A.n1 = keepT({T, h});
  A.rstd1 = keep32({T});
  RingStart mlp_start;  // the MLP ring's first shard, in flight during the last head group
  {
    Tensor y1 = ws({T, h});
    k::rmsnorm_fwd(F(y1), F(A.n1), F32(A.rstd1), F(x), F(W.in_norm), T, h, cfg_.rms_norm_eps);
    attn_fwd(
        W, y1, x, a, keep,
        [&] {
          if (mlp) mlp_start = mlp_prefetch(W);
        },
        start);
  }
  A.n2 = keepT({T, h});
  A.rstd2 = keep32({T});
  Tensor y2 = ws({T, h});
  k::rmsnorm_fwd(F(y2), F(A.n2), F32(A.rstd2), F(x), F(W.post_norm), T, h, cfg_.rms_norm_eps);
  // layer l+1's packets, accounted to layer l+1
  auto post_next = [&] {
    CommScope c(comm_, comm_.where() + 1, comm_.phase());
    *next = attn_start(*next_w, nullptr, false);
  };
  if (mlp) mlp_fwd(W, y2, x, a, &mlp_start, next ? std::function<void()>(post_next) : nullptr);
}

void TspEngine::block_bwd(const TspLayer& W, TspLayer& G, const Acts& a, Tensor& dx,
                          const std::vector<Tensor>* kept) {
  const int64_t T = z_.local_tokens(), h = t_.h;
  AttnStart start;
  {
    Tensor y2 = ws({T, h}), dy2 = ws32_0({T, h});  // dy2 sums D shards' GEMMs: fp32
    k::rmsnorm_apply(F(y2), F(a.n2), F(W.post_norm), T, h);
    mlp_bwd(W, G, a, y2, dx, dy2, [&] { start = attn_bwd_prefetch(W, a, kept != nullptr); });
    k::rmsnorm_bwd(F(dx), F32(G.post_norm), F(dy2), F(a.n2), F(W.post_norm), F32(a.rstd2), T, h);
  }
  Tensor y1 = ws({T, h}), dy1 = ws32_0({T, h});  // likewise
  k::rmsnorm_apply(F(y1), F(a.n1), F(W.in_norm), T, h);
  attn_bwd(W, G, a, y1, dx, dy1, kept, std::move(start));
  k::rmsnorm_bwd(F(dx), F32(G.in_norm), F(dy1), F(a.n1), F(W.in_norm), F32(a.rstd1), T, h);
}

void TspEngine::begin(const Batch& b) {
  docs_ = b.doc_start;
  owners_ = chunk_owners(b, D_, o_.balance);
  z_ = Zigzag{b.B,
              b.S,
              D_,
              r_,
              docs_.empty() ? nullptr : docs_.data(),
              owners_.empty() ? nullptr : owners_.data()};
  pos_ = z_.positions();
  rope_positions(b, pos_, z_.local_tokens() / b.B);
}

double TspEngine::forward_backward(const TspParams& p, TspParams& g, const Batch& b, double inv_n) {
  begin(b);
  const int64_t T = z_.local_tokens(), h = t_.h;
  const size_t L = p.layers.size();
  std::vector<int64_t> ids_all;
  AttnStart start;           // this layer's packets, posted during the previous layer's MLP
  std::vector<Tensor> kept;  // --keep-attn-weights: a layer's packets, recompute to backward
  LayerSteps<Acts> s;
  s.embed = [&] {
    Tensor x = act32({T, h});  // the residual stream (and its gradient): fp32
    embed_fwd(p, b, x, &ids_all);
    return x;
  };
  s.forward = [&](size_t l, Tensor& x, Acts* a) {
    AttnStart next;
    const bool more = l + 1 < L;
    block_fwd(p.layers[l], x, a, nullptr, true, &start, more ? &p.layers[l + 1] : nullptr,
              more ? &next : nullptr);
    start = std::move(next);
  };
  s.head = [&](const Tensor& x, Tensor& dx) {
    Tensor nf = ws({T, h}), rstd = ws32({T}), yf = ws({T, h}), dyf = ws32_0({T, h});
    k::rmsnorm_fwd(F(yf), F(nf), F32(rstd), F(x), F(p.final_norm), T, h, cfg_.rms_norm_eps);
    const double loss = head(p, &g, yf, &dyf, b, inv_n);
    k::rmsnorm_bwd(F(dx), F32(g.final_norm), F(dyf), F(nf), F(p.final_norm), F32(rstd), T, h);
    return loss;
  };
  s.recompute = [&](size_t l, Tensor& x, Acts& a) {
    block_fwd(p.layers[l], x, &a, o_.keep_attn_weights ? &kept : nullptr, !o_.fused_mlp);
  };
  s.backward = [&](size_t l, Acts& a, Tensor& dx) {
    block_bwd(p.layers[l], g.layers[l], a, dx, o_.keep_attn_weights ? &kept : nullptr);
    kept.clear();
  };
  s.finish = [&] {
    tail_.finish();  // the last ring's home hop, before the embedding adds to a tied head
    attn_tail_.finish();
  };
  s.embed_backward = [&](const Tensor& dx) { embed_bwd(g, ids_all, dx); };
  return forward_backward_layers(s, L, o_.recompute, {&comm_});
}

double TspEngine::forward_loss(const TspParams& p, const Batch& b) {
  const Tensor yf = forward_final(p, b, nullptr);
  return head(p, nullptr, yf, nullptr, b, 0.0);
}

Tensor TspEngine::forward_final(const TspParams& p, const Batch& b, KvSink* sink) {
  begin(b);
  const int64_t T = z_.local_tokens(), h = t_.h;
  Tensor x = ws32({T, h});  // the residual stream: fp32
  std::vector<int64_t> ids_all;
  {
    CommScope c(comm_, kWhereEmbed, Phase::fwd);
    embed_fwd(p, b, x, &ids_all);
  }
  sink_ = sink;
  for (size_t l = 0; l < p.layers.size(); ++l) {
    CommScope c(comm_, static_cast<int>(l), Phase::fwd);
    sink_layer_ = static_cast<int>(l);
    block_fwd(p.layers[l], x, nullptr, nullptr);
  }
  sink_ = nullptr;
  Tensor nf = ws({T, h}), rstd = ws32({T}), yf = ws({T, h});
  k::rmsnorm_fwd(F(yf), F(nf), F32(rstd), F(x), F(p.final_norm), T, h, cfg_.rms_norm_eps);
  return yf;
}

void TspEngine::finish_grads(TspParams& g) {
  CommScope c(comm_, kWhereStep, Phase::bwd);
  std::vector<Request> rs;
  g.for_each([&](Tensor& t, bool replicated) {
    if (replicated) rs.push_back(comm_.iallreduce(t.data<float>(), t.numel(), Traffic::other));
  });
  for (auto& r : rs) r.wait();
}

}  // namespace origami
