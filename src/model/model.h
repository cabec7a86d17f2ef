// The single-device Llama decoder: embedding, L blocks (RMSNorm -> attention -> residual;
// RMSNorm -> SwiGLU MLP -> residual), final RMSNorm, LM head. It says *what* a block computes by
// calling the kernels; parallel schedules (next issues) reuse the same kernels and saved-activation
// layout and only change *where* the shards live.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/params.h"

namespace origami {

// B sequences of S tokens; targets already shifted (targets[t] is the token after inputs[t]),
// -1 = ignored (the -100 of HF labels is mapped to -1 on load).
struct Batch {
  int64_t B = 0, S = 0;
  std::vector<int64_t> inputs, targets;
  int64_t num_targets() const;  // non-ignored
};

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
