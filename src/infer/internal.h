// Pieces the layouts' decoders share (infer/decoder.cpp, infer/baselines.cpp).
#pragma once
#include <vector>

#include "comm/comm.h"
#include "core/tensor.h"
#include "infer/decoder.h"
#include "model/block.h"
#include "model/config.h"
#include "parallel/tsp_params.h"

namespace origami::infer::detail {

using block::bytes;
using block::CPtr;
using block::F;
using block::F32;
using block::Ptr;
using block::ws;
using block::ws32;
inline int64_t padded(int64_t S, int D) {
  return (S + 2 * D - 1) / (2 * D) * (2 * D);
}
// Checks the decode step's ids and position (names the offending value).
void check_step(const ModelConfig& c, const std::vector<int64_t>& ids, int64_t B, int64_t pos);
// x [B, h] (fp32, the residual stream): the embedding rows of `ids`, each from the rank owning its vocabulary shard (rows
// [r·Vr, (r+1)·Vr) of `shard`), summed over the ranks (one non-zero term per row: exact).
Tensor embed_sharded(Comm& comm, const std::vector<int64_t>& ids, const Tensor& shard, int64_t Vr,
                     int64_t h);
// Logits [B, V] (fp32) from yf [B, h] and this rank's vocabulary shard of the head (an all-gather).
std::vector<float> logits_sharded(Comm& comm, const Tensor& yf, const Tensor& shard, int64_t B,
                                  int64_t Vr, int64_t V);
// Every query head of q [B, n_h·d] against all positions this rank caches (all at or before
// the query's): a partial result, fp32 whatever the element type (merged with the other ranks'
// before it is rounded): o [B, n_h·d], lse [n_h, B] (−inf where nothing is cached).
// (pad: sequence b sees only the cached positions >= pad.of(b))
void attend_cache(KvCache& cache, size_t layer, const ModelConfig& c, CPtr q, float* o, float* lse,
                  const Padding& pad = {});
// D partial results, block i = [B, nh·d] of o then [nh, B] of lse (fp32), merged by log-sum-exp
// in rank order into out [B, nh·d] (rounded once to its type).
void merge_partials(const float* blocks, int D, int64_t B, int64_t nh, int64_t d, Ptr out);
// n floats of host or device memory, as a host vector.
std::vector<float> to_host(const float* p, int64_t n);
// The TP-style tail of a layer on rank r's shards for T replicated rows: x += all-reduce(o ·
// W_o,rᵀ), then x += all-reduce(swiglu(norm(x)·W_{g,u},rᵀ)·W_d,rᵀ) (o: [T, q_rows] of the own
// heads). TSP's decode step and TP's layer share it.
// x: fp32; the partial sums are all-reduced in fp32.
void tp_tail(Comm& comm, const TspDims& t, const TspLayer& W, CPtr o, Tensor& x, int64_t T,
             float eps);
// After a prefill that left `counts` (every rank's positions): moves surplus positions (their K
// and V rows of every layer) to the ranks short of n/D; counts becomes balanced_counts(counts).
void rebalance(KvCache& cache, std::vector<int64_t>& counts, Comm& comm);

}  // namespace origami::infer::detail
