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
#pragma once
#include <vector>

#include "kernels/kernels.h"
#include "parallel/attn_pipeline.h"
#include "parallel/sharded.h"
#include "parallel/zigzag.h"

namespace origami {

struct TpSpOptions {
  bool seq_parallel = true;  // Megatron sequence parallelism inside TP
  int attn_buckets = 1;
  Recompute recompute = Recompute::none;
};

class TpSpEngine : public ShardedSchedule {
 public:
  TpSpEngine(const ModelConfig& c, Comm& tp, Comm& sp, TpSpOptions o);
  const TspDims& dims() const override { return t_; }
  Comm& shard_comm() override { return tp_; }
  bool writes_shard() const override { return sp_.rank() == 0; }
  Batch shard_batch(const Batch& replica) const override;
  int64_t owned_targets(const Batch& local) const override;
  double forward_backward(const TspParams& p, TspParams& g, const Batch& local,
                          double inv_n) override;
  double forward_loss(const TspParams& p, const Batch& local) override;
  void finish_grads(TspParams& g) override;

  struct Acts;

 private:
  // token geometry of the current micro-batch
  void begin(const Batch& local);
  std::vector<cpu::QSeg> qsegs(int64_t bb) const;
  std::vector<cpu::KvSeg<float>> kvsegs(int64_t bb, float* K, float* V, float* dK, float* dV,
                                        int64_t kw) const;
  // rows this rank reports the loss of: [own0, own0 + own_n)
  std::pair<int64_t, int64_t> owned_rows() const;
  // TP activation traffic: [Tl] -> [Ts] (identity without sequence parallelism), and the sum of
  // the partial [Ts] over tp added into this rank's rows [Tl].
  Tensor gather(const Tensor& x, Traffic t, Cat c);
  void reduce_into(Tensor& partial, Tensor& x, Traffic t);

  void attn_fwd(const TspLayer& W, const Tensor& Y1, Tensor& x, Acts* a);
  // A bucket's K/V re-gather over sp (backward).
  KvGather kv_gather(const Acts& a, int64_t b);
  // `first`: bucket 0's gather, posted during the MLP backward (Σ > 1), or not yet posted.
  void attn_bwd(const TspLayer& W, float* G, const Acts& a, const Tensor& Y1, const Tensor& dX,
                Tensor& dY1, KvGather first);
  void mlp_fwd(const TspLayer& W, const Tensor& Y2, Tensor& x, Acts* a);
  void mlp_bwd(const TspLayer& W, float* G, const Acts& a, const Tensor& Y2, const Tensor& dX,
               Tensor& dY2);
  Tensor norm_fwd(const Tensor& x, const Tensor& w, Tensor& N, Tensor& rstd, bool keep);
  Tensor reweight(const Tensor& N, const Tensor& w);
  void block_fwd(const TspLayer& W, Tensor& x, Acts* a);
  void block_bwd(const TspLayer& W, TspLayer& G, const Acts& a, Tensor& dx);
  void embed_fwd(const TspParams& p, const Batch& b, Tensor& x);
  void embed_bwd(TspParams& g, const Batch& b, const Tensor& dx);
  double head(const TspParams& p, TspParams* g, const Tensor& yf, Tensor* dyf, const Batch& b,
              double inv_n);
  // Σ > 1: gradients of a replicated-over-sp shard are computed into scratch, all-reduced over sp
  // and then added (each micro-batch: bytes per layer as in tsp-spec §7).
  void sp_sum_into(Tensor& scratch, Tensor& grad);
  // The same, left in flight: a layer's MLP gradient travels during its attention backward, its
  // attention gradient during the next layer's MLP backward (nothing reads a layer's gradient
  // before the optimizer; the add happens in finish()).
  struct SpSum {
    Tensor scratch;
    Tensor* grad = nullptr;
    Request req;
    void finish();
  };
  SpSum sp_sum_post(const Tensor& scratch, Tensor& grad);

  ModelConfig cfg_;
  Comm &tp_, &sp_;
  TpSpOptions o_;
  TspDims t_;
  int T_, Sg_, tr_, sr_;
  bool seqp_ = false;
  int64_t B_ = 0, S_ = 0, Ts_ = 0, Tl_ = 0, row0_ = 0;
  std::vector<int64_t> pos_;
  Tensor cos_, sin_;
  Tensor vocab_scratch_;  // tied embeddings under Σ > 1: head and embedding gradients together
  SpSum attn_sum_;        // the last layer's attention-gradient all-reduce, still in flight
};

}  // namespace origami
