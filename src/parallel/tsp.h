// The TSP engine: forward and backward of one micro-batch on the local zigzag tokens of this rank,
// with every weight matrix sharded 1/D over the same ranks (tsp-spec §3-§6). Schedules:
//   attention  broadcast of head-group packets + K/V all-gather (tsp_attention.cpp)
//   MLP        ring of intermediate slices with a gradient accumulator (tsp_mlp.cpp)
//   embedding  vocabulary-sharded, rows by all-to-all-v; LM head: a ring with online lse
//              (tsp_vocab.cpp)
#pragma once
#include <memory>
#include <vector>

#include "comm/comm.h"
#include "model/model.h"
#include "parallel/attn_pipeline.h"
#include "parallel/layout.h"
#include "parallel/ring.h"
#include "parallel/sharded.h"
#include "parallel/tsp_params.h"
#include "parallel/zigzag.h"

namespace origami {

struct TspOptions {
  int attn_buckets = 1;
  bool keep_attn_weights = false;  // only with --recompute full
  Recompute recompute = Recompute::none;
  bool fused_mlp = false;  // --fused-mlp-recompute (needs recompute full)
  MlpTransport mlp_transport = MlpTransport::ring;
  SpComm sp_comm = SpComm::allgather;  // fsdp_sp: a2a = FSDP+Ulysses (fsdp_ulysses.cpp)
  Balance balance = Balance::zigzag;
  // (validate_options, layout.h, refuses the combinations these options cannot take)
};

// Inference (src/infer): receives, per layer, the rotated k and v of this rank's local tokens for
// kv heads [head0, head0 + heads) as rows [T, heads·d] in local order (the prefill's KV cache),
// in the engines' element type.
struct KvSink {
  virtual ~KvSink() = default;
  virtual void store(int layer, int64_t head0, int64_t heads, k::CPtr k, k::CPtr v) = 0;
};

class TspEngine : public ShardedSchedule {
 public:
  TspEngine(const ModelConfig& c, Comm& comm, TspOptions o);
  const TspDims& dims() const override { return t_; }
  Comm& shard_comm() override { return comm_; }
  bool writes_shard() const override { return true; }
  // A global batch (every rank holds all of it) -> this rank's zigzag shard.
  Batch shard_batch(const Batch& global) const override;
  int64_t owned_targets(const Batch& local) const override { return local.num_targets(); }
  // grads += d(inv_n * sum CE)/d(owned params) (norm grads: this rank's partial, to be all-reduced
  // once per step by finish_grads). Returns this rank's sum of CE over its local targets.
  double forward_backward(const TspParams& p, TspParams& g, const Batch& local,
                          double inv_n) override;
  // This rank's CE sum, no gradients, nothing saved.
  double forward_loss(const TspParams& p, const Batch& local) override;
  // Sum of the norm-weight gradients over ranks (once per step, fixed order).
  void finish_grads(TspParams& g) override;
  // The forward over the local tokens without a loss (the prefill of inference): returns the final
  // RMSNorm's output [T, h] of the local rows; `sink` receives every layer's k and v.
  Tensor forward_final(const TspParams& p, const Batch& local, KvSink* sink);
  const Zigzag& zigzag() const { return z_; }

  struct Acts;  // what one block saves (per head group / bucket and per MLP shard)

 protected:
  // ---- where a layer's weights come from and how their gradients return: TSP streams shards
  // (broadcast packets, the MLP ring); FsdpSpEngine (fsdp_sp.cpp) overrides these to gather whole
  // layers and reduce-scatter their gradients. Everything else is shared.
  // attention (tsp_attention.cpp): y1 is the normed input; x += attention output.
  // The attention's weight packets in flight: FSDP+SP's layer gather, or TSP's broadcasts in
  // three buffers (j % 3); in the backward also unit 0's K/V gather. attn_start posts packets 0
  // and 1 ahead of the schedule: the forward of layer l+1's while layer l's MLP ring computes its
  // last step, the backward's (with unit 0's K/V, attn_bwd_prefetch) while the same layer's MLP
  // ring computes its last step — the inbound link is idle there (the ring's home hop is posted
  // after it), so they are not queued behind other transfers.
  struct AttnStart {
    Tensor layer;  // FSDP+SP: the layer's packets [D, P]
    Request layer_req;
    Tensor buf[3];
    std::vector<Request> preq;
    KvGather first;  // backward: unit 0's K, V
    bool posted() const { return !preq.empty(); }
  };
  // `into` (--keep-attn-weights' recompute): the packets go to (*into)[j], which the backward
  // reads; `have` (that backward): they are there already, nothing to post.
  virtual AttnStart attn_start(const TspLayer& W, std::vector<Tensor>* into, bool have);
  virtual void attn_post_packet(AttnStart& st, const TspLayer& W, int j, std::vector<Tensor>* into);
  AttnStart attn_bwd_prefetch(const TspLayer& W, const Acts& a, bool have);
  // Packet j of the layer being computed: FSDP+SP's gathered layer, a kept packet, the owner's
  // own parameters, or the broadcast buffer.
  virtual k::CPtr packet(const AttnStart& st, const TspLayer& W, int j,
                         const std::vector<Tensor>* kept) const;
  // The attention backward's partial weight gradients, this rank's, and their way to the owners:
  // TSP reduces group j's to owner j while later groups compute (two partial buffers), FSDP+SP
  // reduce-scatters all of them at the end. `sum`: what the owner receives, added to its gradient
  // when the reduce in flight (`red`) completes.
  struct GradReturn {
    Tensor part[2], sum;
    Request red;
    bool owner_pending = false;  // the reduce in flight is rooted here
    void finish(float* own_grad);
  };
  virtual void grads_alloc(GradReturn& g);
  virtual float* grad_of(GradReturn& g, int j);
  // Before group j's first unit (b == 0) and after its last unit's C stage; after the layer.
  virtual void group_begin(GradReturn& g, AttnStart& st, const TspLayer& W, TspLayer& G, int j,
                           const std::vector<Tensor>* kept);
  virtual void group_done(GradReturn& g, TspLayer& G, int j);
  virtual void layer_done(GradReturn&) {}
  // The MLP's weights: the ring (ring.h), FSDP+SP: the gathered layer.
  virtual RingStart mlp_prefetch(const TspLayer& W);
  virtual void mlp_weights_fwd(const TspLayer& W, const RingFwd& f, RingStart* start);
  virtual void mlp_weights_bwd(const TspLayer& W, TspLayer& G, const RingBwd& f);
  // The last gradient reduce of an attention backward (TSP: group D−1's partial to its owner;
  // FSDP+SP: the reduce-scatter of all partials): nothing reads the layer's gradient before the
  // optimizer, so it stays in flight through the next layer's MLP backward; the next
  // attn_bwd (or the end of the backward) finishes it — the owner's add keeps its place.
  struct AttnTail {
    GradReturn g;
    float* dst = nullptr;  // the owner's gradient
    void finish();
  };
  // before_last(): called when the last unit's compute starts, after the attention's own
  // transfers are posted (block_fwd posts the MLP ring's first shard there)
  void attn_fwd(const TspLayer& W, const Tensor& y1, Tensor& x, Acts* a, std::vector<Tensor>* keep,
                const std::function<void()>& before_last, AttnStart* start);
  void attn_bwd(const TspLayer& W, TspLayer& G, const Acts& a, const Tensor& y1, const Tensor& dy,
                Tensor& dy1, const std::vector<Tensor>* kept, AttnStart st);
  // --sp-comm a2a (fsdp_sp only): the gathered layer's head groups computed Ulysses' way
  // (fsdp_ulysses.cpp): q, k, v of every group for this rank's tokens all-to-all'ed so that rank
  // j attends head group j over every token, o back.
  void attn_fwd_a2a(const TspLayer& W, const Tensor& y1, Tensor& x, Acts* a,
                    const std::function<void()>& before_last, AttnStart* start);
  void attn_bwd_a2a(const TspLayer& W, TspLayer& G, const Acts& a, const Tensor& y1,
                    const Tensor& dy, Tensor& dy1, AttnStart st);
  // MLP ring (tsp_mlp.cpp)
  void mlp_fwd(const TspLayer& W, const Tensor& y2, Tensor& x, Acts* a, RingStart* start,
               const std::function<void()>& before_last);
  // before_last(): called when the ring's last step starts computing (attn_bwd_prefetch)
  void mlp_bwd(const TspLayer& W, TspLayer& G, const Acts& a, const Tensor& y2, const Tensor& dy,
               Tensor& dy2, const std::function<void()>& before_last);
  // embedding and head (tsp_vocab.cpp)
  void embed_fwd(const TspParams& p, const Batch& b, Tensor& x, std::vector<int64_t>* ids_all);
  void embed_bwd(TspParams& g, const std::vector<int64_t>& ids_all, const Tensor& dx);
  double head(const TspParams& p, TspParams* g, const Tensor& yf, Tensor* dyf, const Batch& b,
              double inv_n);
  // a block
  // mlp = false (the fused recompute): stop after the second norm's statistics; `start`: this
  // layer's packets if already posted; `next` (the plain forward): layer l+1's packets, posted
  // during this layer's last MLP step
  void block_fwd(const TspLayer& W, Tensor& x, Acts* a, std::vector<Tensor>* keep, bool mlp = true,
                 AttnStart* start = nullptr, const TspLayer* next_w = nullptr,
                 AttnStart* next = nullptr);
  void block_bwd(const TspLayer& W, TspLayer& G, const Acts& a, Tensor& dx,
                 const std::vector<Tensor>* kept);
  // helpers
  bool biring() const;
  int64_t mlp_unit_width() const;  // the intermediate units of one MLP compute (shard or piece)
  int mlp_units() const;           // MLP computes per pass (D, biring 2D)
  int mlp_last_step_call() const;  // the first compute of the ring's last step (before_last)
  RingSpec mlp_spec(const TspLayer& W) const {
    return {t_.mlp_size(), {W.mlp.raw(), W.mlp.dtype()}, Traffic::mlp_weights, Traffic::grads};
  }

  ModelConfig cfg_;
  Comm& comm_;
  TspOptions o_;
  TspDims t_;
  int D_, r_;
  Zigzag z_{};
  std::vector<int64_t> pos_;   // RoPE position of each local row
  std::vector<int64_t> docs_;  // packed documents: the batch's document starts (else empty)
  std::vector<int> owners_;    // --balance documents: the batch's chunk owners (else empty)
  // z_ and pos_ for batch b (document masks included).
  void begin(const Batch& b);
  Tensor cos_, sin_;
  RingTail tail_;           // the last backward ring's home hop, still in flight
  AttnTail attn_tail_;      // the last attention backward's gradient reduce, still in flight
  KvSink* sink_ = nullptr;  // forward_final only
  int sink_layer_ = 0;
};

}  // namespace origami
