// Vocabulary-sharded embedding and LM head (tsp-spec §6). Rank r owns rows [r·V'/D, (r+1)·V'/D).
//
// Embedding: all-gather the local token ids (B·S int32 in all), then owners send, by one
// all-to-all-v, one row per *distinct* id each rank needs (sorted by id). Backward: each rank sums
// its dx rows per distinct id in position order and sends them to the owner, which adds them in
// source-rank order.
//
// LM head, a ring over the vocabulary shards (ring.h), never [local tokens × V] logits:
//   forward   z_s = yf·W_sᵀ per token chunk; running max m, sum l, target logit; lse = m + log l
//   backward  a second ring recomputes z_s; dz = (exp(z_s − lse) − onehot)·mask/N;
//             dyf += dz·W_s locally, dW_s += dzᵀ·yf on the accumulator ring.
// Tied embeddings: the same shard serves both; its owner's gradient sums both contributions.
#include <algorithm>
#include <map>

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
// Sorted distinct ids of `ids` owned by each rank.
std::vector<std::vector<int64_t>> needs(const int64_t* ids, int64_t n, int D, int64_t Vr) {
  std::vector<std::vector<int64_t>> need(D);
  std::vector<int64_t> sorted(ids, ids + n);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  for (int64_t id : sorted) need[id / Vr].push_back(id);
  return need;
}
struct Plan {
  std::vector<int64_t> sb, so, rb, ro;       // bytes / offsets per rank
  std::vector<std::vector<int64_t>> mine;    // ids I need, per owner
  std::vector<std::vector<int64_t>> theirs;  // ids each rank needs from me
  // As rows of h elements: theirs rank after rank as rows of my shard (the send layout, row j the
  // j-th), and for each of my tokens its id's row in the receive layout (mine owner after owner).
  std::vector<int64_t> shard_rows, token_rows;
};
// esize: bytes of an element of the rows moved (the embedding's type forward; fp32 gradient rows
// backward).
Plan plan(const std::vector<int64_t>& ids_all, int64_t T, int D, int r, int64_t Vr, int64_t h,
          int64_t esize) {
  Plan p;
  p.theirs.resize(D);
  for (int q = 0; q < D; ++q) {
    auto nq = needs(ids_all.data() + q * T, T, D, Vr);
    if (q == r) p.mine = nq;
    p.theirs[q] = nq[r];
  }
  int64_t so = 0, ro = 0;
  for (int q = 0; q < D; ++q) {
    p.sb.push_back(static_cast<int64_t>(p.theirs[q].size()) * h * esize);
    p.so.push_back(so);
    so += p.sb.back();
    p.rb.push_back(static_cast<int64_t>(p.mine[q].size()) * h * esize);
    p.ro.push_back(ro);
    ro += p.rb.back();
  }
  std::map<int64_t, int64_t> row;
  for (int q = 0; q < D; ++q) {
    for (int64_t id : p.theirs[q]) p.shard_rows.push_back(id - r * Vr);
    for (int64_t id : p.mine[q]) row.emplace(id, static_cast<int64_t>(row.size()));
  }
  for (int64_t t = 0; t < T; ++t) p.token_rows.push_back(row.at(ids_all[r * T + t]));
  return p;
}
int64_t total(const std::vector<int64_t>& b) {
  int64_t s = 0;
  for (auto x : b) s += x;
  return s;
}
}  // namespace

void TspEngine::embed_fwd(const TspParams& p, const Batch& b, Tensor& x,
                          std::vector<int64_t>* ids_all) {
  const int64_t T = z_.local_tokens(), h = t_.h, Vr = t_.Vr;
  std::vector<int32_t> mine(b.inputs.begin(), b.inputs.end()), all(static_cast<size_t>(D_ * T));
  comm_
      .iallgather(mine.data(), all.data(), T * static_cast<int64_t>(sizeof(int32_t)),
                  Traffic::embed_head)
      .wait();
  ids_all->assign(all.begin(), all.end());
  const Plan pl = plan(*ids_all, T, D_, r_, Vr, h, bytes(1));
  const DType et = p.embed.dtype();
  Tensor send = Tensor::empty({total(pl.sb) / bytes(1) + 1}, et, Cat::comm);
  Tensor recv = Tensor::empty({total(pl.rb) / bytes(1) + 1}, et, Cat::comm);
  k::index_copy_rows(F(send), F(p.embed), nullptr, pl.shard_rows.data(),
                     static_cast<int64_t>(pl.shard_rows.size()), h);
  comm_
      .ialltoallv(send.raw(), pl.sb.data(), pl.so.data(), recv.raw(), pl.rb.data(), pl.ro.data(),
                  Traffic::embed_head)
      .wait();
  k::index_copy_rows(F(x), F(recv), nullptr, pl.token_rows.data(), T, h);
}

void TspEngine::embed_bwd(TspParams& g, const std::vector<int64_t>& ids_all, const Tensor& dx) {
  const int64_t T = z_.local_tokens(), h = t_.h, Vr = t_.Vr;
  constexpr int64_t f32 = sizeof(float);  // gradient rows: fp32
  const Plan pl = plan(ids_all, T, D_, r_, Vr, h, f32);
  // sum my dx rows per distinct id, in position order, laid out as the owners expect (the
  // forward's receive layout)
  Tensor send = Tensor::zeros({total(pl.rb) / f32 + 1}, DType::f32, Cat::comm);
  Tensor recv = Tensor::empty({total(pl.sb) / f32 + 1}, DType::f32, Cat::comm);
  k::index_add_rows(F32(send), F(dx), pl.token_rows.data(), nullptr, T, h);
  comm_
      .ialltoallv(F32(send), pl.rb.data(), pl.ro.data(), F32(recv), pl.sb.data(), pl.so.data(),
                  Traffic::embed_head)
      .wait();
  // received rows in source-rank order, each added to its id's row of my shard
  k::index_add_rows<float>(F32(g.embed), F32(recv), pl.shard_rows.data(), nullptr,
                           static_cast<int64_t>(pl.shard_rows.size()), h);
}

double TspEngine::head(const TspParams& p, TspParams* g, const Tensor& yf, Tensor* dyf,
                       const Batch& b, double inv_n) {
  const int64_t T = z_.local_tokens(), h = t_.h, Vr = t_.Vr, V = cfg_.vocab_size;
  const int64_t C = block::logits_chunk(T, Vr);
  // logits and the log-sum-exp statistics: fp32
  Tensor z = ws32({C, Vr}), m = ws32({T}), l = ws32({T}), zt = ws32({T}), lse = ws32({T});
  k::ce_init<float>(F32(m), F32(l), F32(zt), T);
  const RingSpec spec{Vr * h, F(p.head_or_embed()), Traffic::embed_head, Traffic::embed_head};
  CommScope fwd(comm_, kWhereHead, Phase::fwd);  // also forward_loss's (not in the layer loop)
  ring_forward(comm_, spec, [&](int s, k::CPtr Wp) {
    for (int64_t r0 = 0; r0 < T; r0 += C) {
      const int64_t c = std::min(C, T - r0);
      block::head_chunk_fwd(F32(z), F32(m) + r0, F32(l) + r0, F32(zt) + r0, F(yf) + r0 * h, Wp, c,
                            h, Vr, s * Vr, V, b.targets.data() + r0);
      comm_.progress();
    }
  });
  const double loss = k::ce_finish<float>(F32(lse), F32(m), F32(l), F32(zt), T, b.targets.data());
  if (!g) return loss;
  CommScope bwd(comm_, kWhereHead, Phase::bwd);
  ring_backward(
      comm_, spec, F32(g->head_or_embed()),
      [&](int s, k::CPtr Wp, float* Gp) {
        for (int64_t r0 = 0; r0 < T; r0 += C) {
          const int64_t c = std::min(C, T - r0);
          block::head_chunk_bwd(F32(z), F(*dyf) + r0 * h, Gp, F32(lse) + r0, F(yf) + r0 * h, Wp, c,
                                h, Vr, s * Vr, V, b.targets.data() + r0, static_cast<float>(inv_n),
                                true);
          comm_.progress();
        }
      },
      &tail_);
  return loss;
}

}  // namespace origami
