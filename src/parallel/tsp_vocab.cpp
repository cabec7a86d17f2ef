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
  // As rows of h floats: theirs rank after rank as rows of my shard (the send layout, row j the
  // j-th), and for each of my tokens its id's row in the receive layout (mine owner after owner).
  std::vector<int64_t> shard_rows, token_rows;
};
Plan plan(const std::vector<int64_t>& ids_all, int64_t T, int D, int r, int64_t Vr, int64_t h) {
  Plan p;
  p.theirs.resize(D);
  for (int q = 0; q < D; ++q) {
    auto nq = needs(ids_all.data() + q * T, T, D, Vr);
    if (q == r) p.mine = nq;
    p.theirs[q] = nq[r];
  }
  int64_t so = 0, ro = 0;
  for (int q = 0; q < D; ++q) {
    p.sb.push_back(bytes(static_cast<int64_t>(p.theirs[q].size()) * h));
    p.so.push_back(so);
    so += p.sb.back();
    p.rb.push_back(bytes(static_cast<int64_t>(p.mine[q].size()) * h));
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
  const Plan pl = plan(*ids_all, T, D_, r_, Vr, h);
  Tensor send = Tensor::empty({total(pl.sb) / bytes(1) + 1}, DType::f32, Cat::comm);
  Tensor recv = Tensor::empty({total(pl.rb) / bytes(1) + 1}, DType::f32, Cat::comm);
  k::index_copy_rows<float>(F(send), F(p.embed), nullptr, pl.shard_rows.data(),
                            static_cast<int64_t>(pl.shard_rows.size()), h);
  comm_
      .ialltoallv(F(send), pl.sb.data(), pl.so.data(), F(recv), pl.rb.data(), pl.ro.data(),
                  Traffic::embed_head)
      .wait();
  k::index_copy_rows<float>(F(x), F(recv), nullptr, pl.token_rows.data(), T, h);
}

void TspEngine::embed_bwd(TspParams& g, const std::vector<int64_t>& ids_all, const Tensor& dx) {
  const int64_t T = z_.local_tokens(), h = t_.h, Vr = t_.Vr;
  const Plan pl = plan(ids_all, T, D_, r_, Vr, h);
  // sum my dx rows per distinct id, in position order, laid out as the owners expect (the
  // forward's receive layout)
  Tensor send = Tensor::zeros({total(pl.rb) / bytes(1) + 1}, DType::f32, Cat::comm);
  Tensor recv = Tensor::empty({total(pl.sb) / bytes(1) + 1}, DType::f32, Cat::comm);
  k::index_add_rows<float>(F(send), F(dx), pl.token_rows.data(), nullptr, T, h);
  comm_
      .ialltoallv(F(send), pl.rb.data(), pl.ro.data(), F(recv), pl.sb.data(), pl.so.data(),
                  Traffic::embed_head)
      .wait();
  // received rows in source-rank order, each added to its id's row of my shard
  k::index_add_rows<float>(F(g.embed), F(recv), pl.shard_rows.data(), nullptr,
                           static_cast<int64_t>(pl.shard_rows.size()), h);
}

double TspEngine::head(const TspParams& p, TspParams* g, const Tensor& yf, Tensor* dyf,
                       const Batch& b, double inv_n) {
  const int64_t T = z_.local_tokens(), h = t_.h, Vr = t_.Vr, V = cfg_.vocab_size;
  const int64_t C = block::logits_chunk(T, Vr);
  Tensor z = ws({C, Vr}), m = ws({T}), l = ws({T}), zt = ws({T}), lse = ws({T});
  k::ce_init<float>(F(m), F(l), F(zt), T);
  const RingSpec spec{Vr * h, F(p.head_or_embed()), Traffic::embed_head, Traffic::embed_head};
  CommScope fwd(comm_, kWhereHead, Phase::fwd);  // also forward_loss's (not in the layer loop)
  ring_forward(comm_, spec, [&](int s, const float* Wp) {
    for (int64_t r0 = 0; r0 < T; r0 += C) {
      const int64_t c = std::min(C, T - r0);
      block::head_chunk_fwd(F(z), F(m) + r0, F(l) + r0, F(zt) + r0, F(yf) + r0 * h, Wp, c, h, Vr,
                            s * Vr, V, b.targets.data() + r0);
      comm_.progress();
    }
  });
  const double loss = k::ce_finish<float>(F(lse), F(m), F(l), F(zt), T, b.targets.data());
  if (!g) return loss;
  CommScope bwd(comm_, kWhereHead, Phase::bwd);
  ring_backward(
      comm_, spec, F(g->head_or_embed()),
      [&](int s, const float* Wp, float* Gp) {
        for (int64_t r0 = 0; r0 < T; r0 += C) {
          const int64_t c = std::min(C, T - r0);
          block::head_chunk_bwd(F(z), F(*dyf) + r0 * h, Gp, F(lse) + r0, F(yf) + r0 * h, Wp, c, h,
                                Vr, s * Vr, V, b.targets.data() + r0, static_cast<float>(inv_n),
                                true);
          comm_.progress();
        }
      },
      &tail_);
  return loss;
}

}  // namespace origami
