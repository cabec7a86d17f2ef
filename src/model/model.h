// The single-device Llama decoder: embedding, L blocks (RMSNorm -> attention -> residual;
// RMSNorm -> SwiGLU MLP -> residual), final RMSNorm, LM head. It says *what* a block computes by
// calling the kernels; parallel schedules (next issues) reuse the same kernels and saved-activation
// layout and only change *where* the shards live.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/params.h"

namespace origami {

// B sequences of S tokens; targets already shifted (targets[t] is the token after inputs[t]),
// -1 = ignored (the -100 of HF labels is mapped to -1 on load).
// Packed documents (HF's packed-sequence convention): `positions` [B, S] are the RoPE positions;
// a document starts at each sequence's first token and wherever a position is 0, continues with
// +1, and attends only to itself (causal within the document). Empty: one document a sequence,
// positions 0..S-1. `doc_start` [B, S]: the first position of each token's document (the
// attention kernels' lower bound), made by set_positions. Every shard of a batch keeps both
// global arrays (a few bytes a token).
struct Batch {
  int64_t B = 0, S = 0;
  std::vector<int64_t> inputs, targets;
  std::vector<int64_t> positions, doc_start;
  int64_t num_targets() const;  // non-ignored
  bool packed() const { return !positions.empty(); }
  // Sequence b's document starts (null when not packed): QSeg::lo of a query at position p is
  // doc_lo(b) + p.
  const int64_t* doc_lo(int64_t b) const { return packed() ? doc_start.data() + b * S : nullptr; }
  // RoPE position of the token at position p of sequence b.
  int64_t rope_pos(int64_t b, int64_t p) const {
    return packed() ? positions[static_cast<size_t>(b * S + p)] : p;
  }
};

// Sets b's positions ([B, S]) and derives doc_start; names the element that breaks the rule
// (a position is 0, or its predecessor's + 1, except at a sequence's start; >= 0).
void set_positions(Batch& b, std::vector<int64_t> positions, const std::string& source);
// Sequences [first, first + n) of b (a DP replica's share), packing included.
Batch batch_rows(const Batch& b, int64_t first, int64_t n);
// The rows' RoPE positions: pos[i] (a position within sequence i / rows_per_seq) becomes the
// batch's RoPE position there. A no-op without packing.
void rope_positions(const Batch& b, std::vector<int64_t>& pos, int64_t rows_per_seq);

// Checks ids and labels against the config; names the offending element.
void validate_batch(const ModelConfig& c, const Batch& b, const std::string& source);

enum class Recompute { none, full };
Recompute parse_recompute(const std::string& s);

class Model {
 public:
  explicit Model(const ModelConfig& c);
  const ModelConfig& config() const { return cfg_; }

  // Forward and backward of one micro-batch: grads += d(inv_n * sum CE)/d(params).
  // Returns the sum of the cross-entropy over the batch's non-ignored targets (double).
  double forward_backward(const ModelParams& p, ModelParams& grads, const Batch& b, double inv_n,
                          Recompute rc);
  // Sum of the cross-entropy, no gradients, nothing saved.
  double forward_loss(const ModelParams& p, const Batch& b);

 private:
  struct Acts;  // what one block saves for its backward
  void embed(Tensor& x, const ModelParams& p, const Batch& b);
  void block_forward(const LayerParams& W, Tensor& x, Acts* save, const Batch& b);
  void block_backward(const LayerParams& W, LayerParams& G, const Acts& a, Tensor& dx,
                      const Batch& b);
  double head(const ModelParams& p, ModelParams* grads, const Tensor& x, Tensor* dx, const Batch& b,
              double inv_n);
  void attention(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                 const Batch& b);

  ModelConfig cfg_;
  Tensor cos_, sin_;  // RoPE tables [max_position_embeddings, d/2] (make_rope_tables)
};

// The RoPE cos/sin tables [max_position_embeddings, head_dim/2] of a config (fp32, workspace).
void make_rope_tables(const ModelConfig& c, Tensor& cos, Tensor& sin);

}  // namespace origami
