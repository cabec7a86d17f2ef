// The Megatron-style baselines on a T×Σ mesh (tsp-spec §9): TP inside groups of T consecutive
// ranks, context-parallel SP across them. The schedule and its diagram: tpsp.cpp.
#pragma once
#include <vector>

#include "kernels/kernels.h"
#include "model/block.h"
#include "parallel/attn_pipeline.h"
#include "parallel/layout.h"
#include "parallel/sharded.h"
#include "parallel/zigzag.h"

namespace origami {

struct TpSpOptions {
  bool seq_parallel = true;  // Megatron sequence parallelism inside TP
  int attn_buckets = 1;
  Recompute recompute = Recompute::none;
  SpComm sp_comm = SpComm::allgather;  // T = 1 (validate_tpsp)
  Balance balance = Balance::zigzag;
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
  std::vector<k::Kv> kvsegs(int64_t bb, k::CPtr K, k::CPtr V, float* dK, float* dV,
                            int64_t kw) const;
  // rows this rank reports the loss of: [own0, own0 + own_n)
  std::pair<int64_t, int64_t> owned_rows() const;
  // TP's activation collectives as forward/backward pairs (Megatron-Core's regions): each region
  // names both directions, so a backward cannot be paired with the wrong collective.
  //   enter  into a column-parallel GEMM (q/k/v, gate/up, the LM head), rows [Tl] -> [Ts]:
  //          fwd  all-gather over tp (gather_from_sequence_parallel_region; identity without SP)
  //          bwd  the input gradient's partial sums [Ts] reduce-scattered into [Tl] and added
  //               (reduce_scatter_to_sequence_parallel_region; all-reduce without SP)
  //   exit   out of a row-parallel GEMM (W_o, W_down, the vocabulary-parallel embedding):
  //          fwd  the partial output [Ts] reduce-scattered into [Tl] and added (all-reduce)
  //          bwd  the output gradient all-gathered [Tl] -> [Ts] (identity without SP)
  Tensor enter_fwd(const Tensor& x, Traffic t, Cat c) { return gather(x, t, c); }
  void enter_bwd(Tensor& partial, Tensor& dx, Traffic t) { reduce_into(partial, dx, t); }
  void exit_fwd(Tensor& partial, Tensor& x, Traffic t) { reduce_into(partial, x, t); }
  // dx: the fp32 residual gradient; gathered in the element type (what the GEMMs read), or as it is
  // (`as_is`: the embedding's gradient rows, fp32).
  Tensor exit_bwd(const Tensor& dx, Traffic t, Cat c, bool as_is = false) {
    return gather(as_is ? dx : block::in_elem(dx), t, c);
  }
  // The two collectives behind them: [Tl] -> [Ts], and the sum over tp of a partial [Ts] added
  // into this rank's rows [Tl].
  Tensor gather(const Tensor& x, Traffic t, Cat c);
  void reduce_into(Tensor& partial, Tensor& x, Traffic t);

  void attn_fwd(const TspLayer& W, const Tensor& Y1, Tensor& x, Acts* a);
  // --sp-comm a2a (DeepSpeed Ulysses, ulysses.cpp) and p2p (ring attention,
  // ring_attention.cpp): sp_attention.h's methods on the sp communicator.
  void attn_fwd_a2a(const TspLayer& W, const Tensor& Y1, Tensor& x, Acts* a);
  void attn_bwd_a2a(const TspLayer& W, float* G, const Acts& a, const Tensor& Y1, const Tensor& dX,
                    Tensor& dY1);
  void attn_fwd_p2p(const TspLayer& W, const Tensor& Y1, Tensor& x, Acts* a);
  void attn_bwd_p2p(const TspLayer& W, float* G, const Acts& a, const Tensor& Y1, const Tensor& dX,
                    Tensor& dY1);
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
  bool a2a_ = false, p2p_ = false;  // --sp-comm with Σ > 1
  int64_t B_ = 0, S_ = 0, Ts_ = 0, Tl_ = 0, row0_ = 0;
  std::vector<int64_t> pos_;   // RoPE position of each local row
  std::vector<int64_t> docs_;  // packed documents: the batch's document starts (else empty)
  std::vector<int> owners_;    // --balance documents: the batch's chunk owners (else empty)
  // The sp axis's split of the current batch (document masks and chunk owners included).
  Zigzag zigzag() const {
    return {B_,
            S_,
            Sg_,
            sr_,
            docs_.empty() ? nullptr : docs_.data(),
            owners_.empty() ? nullptr : owners_.data()};
  }
  Tensor cos_, sin_;
  Tensor vocab_scratch_;  // tied embeddings under Σ > 1: head and embedding gradients together
  SpSum attn_sum_;        // the last layer's attention-gradient all-reduce, still in flight
};

// What a block keeps (tpsp.cpp, ulysses.cpp).
struct TpSpEngine::Acts {
  Tensor x;             // block input [Tl, h] (all that full recompute keeps)
  Tensor n1, n2;        // normalised inputs of both norms, all Ts rows (gathered under SP)
  Tensor rstd1, rstd2;  // this rank's rows
  std::vector<Tensor> q, k, v, o, lse;  // per head bucket; k, v this SP rank's tokens
  // (a2a: q, k, v, lse of this rank's heads and every token; o this rank's tokens, every head,
  // and O this rank's heads' output, every token; p2p: k holds this rank's K and V, v none)
  Tensor O;
  Tensor g, u;  // [Ts, I/T]
};

}  // namespace origami
