// What the training loop and `origami grad` need from a schedule whose ranks hold shards of the
// packed parameters (TspParams): TSP and FSDP+SP (shard degree D) and TP+SP (shard degree T,
// replicated over Σ). One replica's communicators are owned by the caller.
#pragma once
#include <algorithm>
#include <vector>

#include "comm/comm.h"
#include "model/model.h"
#include "parallel/layout.h"
#include "parallel/tsp_params.h"
#include "parallel/zigzag.h"

namespace origami {

// The attention work (visible query-key pairs under the batch's document masks, summed over its
// sequences) of each of the 2D chunks of batch g's sequence axis over D ranks.
inline std::vector<double> chunk_work(const Batch& g, int D) {
  const int n = 2 * D;
  const int64_t c = g.S / n;
  std::vector<double> work(static_cast<size_t>(n), 0.0);
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t p = 0; p < g.S; ++p)
      work[static_cast<size_t>(std::min<int64_t>(p / c, n - 1))] += static_cast<double>(
          p - (g.packed() ? g.doc_start[static_cast<size_t>(b * g.S + p)] : 0) + 1);
  return work;
}

// The chunk owners of --balance for batch g over D ranks (Zigzag::own; empty for zigzag).
inline std::vector<int> chunk_owners(const Batch& g, int D, Balance m) {
  if (m == Balance::zigzag) return {};
  const int n = 2 * D;
  const std::vector<double> work = chunk_work(g, D);
  std::vector<int> order(static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) order[static_cast<size_t>(j)] = j;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return work[static_cast<size_t>(a)] < work[static_cast<size_t>(b)];
  });
  std::vector<int> own(static_cast<size_t>(n));
  for (int q = 0; q < D; ++q) {
    own[static_cast<size_t>(2 * q)] = order[static_cast<size_t>(q)];
    own[static_cast<size_t>(2 * q + 1)] = order[static_cast<size_t>(n - 1 - q)];
  }
  return own;
}

// Rank r's share of a batch over D ranks: zigzag (tsp-spec §3), or the chunks `own` names.
inline Batch zigzag_batch(const Batch& g, int D, int r, const std::vector<int>& own = {}) {
  Batch b;
  b.B = g.B;
  b.S = g.S;
  const Zigzag z{g.B, g.S, D, r, nullptr, own.empty() ? nullptr : own.data()};
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
