// The parameters one TSP rank owns (tsp-spec §3), packed so that each schedule moves one buffer:
//   attn  = [W_q rows of head group r | W_k rows | W_v rows | W_o columns (as [h, n_h/D·d])]
//           (2 + 2/g)·h²/D elements: the packet the attention schedule broadcasts
//   mlp   = [W_gate rows r·I/D.. | W_up rows | W_down columns (as [h, I/D])]
//           3·I·h/D elements: the shard the MLP ring passes on
//   embed = rows [r·V'/D, (r+1)·V'/D) of the embedding, V' = V padded to a multiple of D
//           (pad rows are zero and stay zero); head likewise unless tied
//   norms = replicated on every rank
// Gradients and AdamW moments use the same struct; the optimizer state of a shard lives only
// with its owner.
#pragma once
#include <functional>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/params.h"

namespace origami {

struct TspDims {
  int64_t h, d, D, q_rows, kv_rows, Ir, Vp, Vr;  // Vp = padded vocab, Vr = rows per rank
  int64_t nq_loc, nkv_loc;
  int64_t off_k() const { return q_rows * h; }
  int64_t off_v() const { return off_k() + kv_rows * h; }
  int64_t off_o() const { return off_v() + kv_rows * h; }
  int64_t attn_size() const { return off_o() + h * q_rows; }
  int64_t mlp_size() const { return 3 * Ir * h; }
  // Bucket b of N of an attention packet: its W_q, W_k, W_v rows and W_o columns (row stride
  // q_rows), or the same places in a gradient packet. P: a pointer (float*, k::CPtr).
  template <class P>
  struct Bucket {
    P q, k, v, o;
  };
  template <class P>
  Bucket<P> bucket(P pk, int64_t b, int64_t N) const {
    const int64_t qw = q_rows / N, kw = kv_rows / N;
    return {pk + b * qw * h, pk + off_k() + b * kw * h, pk + off_v() + b * kw * h,
            pk + off_o() + b * qw};
  }
  static TspDims of(const ModelConfig& c, int D);
};

struct TspLayer {
  Tensor attn, mlp, in_norm, post_norm;
};

struct TspParams {
  std::vector<TspLayer> layers;
  Tensor embed, head, final_norm;  // head undefined when tied
  static TspParams zeros(const ModelConfig& c, int D, Cat cat, DType dt = DType::f32);
  const Tensor& head_or_embed() const { return head.defined() ? head : embed; }
  Tensor& head_or_embed() { return head.defined() ? head : embed; }
  // Every tensor; `replicated` is true for the norm weights.
  void for_each(const std::function<void(Tensor&, bool replicated)>& fn);
  void zero();
};

// dst := src tensor by tensor, converted where the types differ (the bf16 compute copy of fp32
// master weights).
void convert_params(const TspParams& src, TspParams& dst);
// Copy rank r's slices between full HF-named parameters and its shard, either direction (fp32).
void full_to_shard(const ModelParams& full, TspParams& shard, const TspDims& t, int r);
void shard_to_full(const TspParams& shard, ModelParams& full, const TspDims& t, int r);

}  // namespace origami

namespace origami {
class Comm;
// Every rank ends with the full HF-named tensors assembled from all ranks' shards (all-gather of
// each packed tensor; category `other`, outside the per-layer accounting).
void gather_full(Comm& comm, TspParams& shard, ModelParams& full, const TspDims& t);
}  // namespace origami
