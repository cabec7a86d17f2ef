// What the training loop and `origami grad` need from a schedule whose ranks hold shards of the
// packed parameters (TspParams): TSP and FSDP+SP (shard degree D) and TP+SP (shard degree T,
// replicated over Σ). One replica's communicators are owned by the caller.
#pragma once
#include "comm/comm.h"
#include "model/model.h"
#include "parallel/tsp_params.h"
#include "parallel/zigzag.h"

namespace origami {

// Rank r's zigzag share of a batch (tsp-spec §3) over D ranks.
inline Batch zigzag_batch(const Batch& g, int D, int r) {
  Batch b;
  b.B = g.B;
  b.S = g.S;
  const Zigzag z{g.B, g.S, D, r};
  b.inputs.resize(static_cast<size_t>(z.local_tokens()));
  b.targets.resize(b.inputs.size());
  z.shard(b.inputs.data(), g.inputs.data(), 1);
  z.shard(b.targets.data(), g.targets.data(), 1);
  b.positions = g.positions;  // global: the rows' RoPE positions and document masks
  b.doc_start = g.doc_start;
  return b;
}

class ShardedSchedule {
 public:
  virtual ~ShardedSchedule() = default;
  virtual const TspDims& dims() const = 0;
  // The ranks whose shards differ (TSP: the model axis; TP+SP: the TP group) and this rank there.
  virtual Comm& shard_comm() = 0;
  // Whether this rank writes its shard into checkpoints (one copy of each shard per replica).
  virtual bool writes_shard() const = 0;
  // A replica's batch (every rank of the replica holds all of it) -> this rank's tokens.
  virtual Batch shard_batch(const Batch& replica) const = 0;
  // The targets whose cross-entropy this rank reports (summed over the replica: the batch's).
  virtual int64_t owned_targets(const Batch& local) const = 0;
  // grads += d(inv_n · Σ CE)/d(shards); returns the CE sum over this rank's owned targets.
  virtual double forward_backward(const TspParams& p, TspParams& g, const Batch& local,
                                  double inv_n) = 0;
  virtual double forward_loss(const TspParams& p, const Batch& local) = 0;
  // Once per step: sum the replicated (norm) gradients over the ranks that hold partials.
  virtual void finish_grads(TspParams& g) = 0;
};

}  // namespace origami
