// Inference with TSP (tsp-spec §11). Prefill is the TSP forward over the prompt (TspEngine::
// forward_final) with each rank keeping K and V of *its own tokens for all heads*: 1/D of the
// cache. Decode never moves a weight. Per step and layer, with the new tokens' hidden states x
// [B, h] replicated on every rank and rank r owning head group r and MLP slice r (its TSP shards):
//
//     q_r, k_r, v_r = norm(x) · W_{q,k,v},rᵀ        (own head group; RoPE at the new position p)
//     all-gather q_r            ──▶ q of all heads on every rank                      (acts, B·h)
//     send k_r, v_r to owner(p) ──▶ the rank that caches position p stores them     (kv, 2B·h/g)
//     every rank: o_r, lse_r = attention of all heads over its cached positions
//     all-to-all: rank j gets every rank's (o, lse) of head group j, merged by log-sum-exp
//     x += all-reduce(o_j · W_o,jᵀ)                                                   (acts, B·h)
//     x += all-reduce(swiglu(norm(x) · W_{gate,up},rᵀ) · W_down,rᵀ)                   (acts, B·h)
//
// then logits = all-gather of norm(x) · W_head,rᵀ (vocabulary shards) and the embedding of the
// next tokens by an all-reduce of the owners' rows.
//
// The cache stays balanced. The prefill pads S up to a multiple of 2D and never caches the
// padding, so a padded prompt leaves the ranks up to 2D−1 positions apart; the prefill then moves
// surplus positions (their K and V rows of every layer) to the ranks short of n/D. owner(p) is
// the rank caching the fewest positions, ties broken round-robin from p mod D (round-robin while
// balanced). Every rank holds 1/D of the positions ±1 after the prefill and after every step.
// docs/inference.md has the byte formula of a step; D = 1 is the single-device decoder (the same
// code with every transfer a local copy). The baselines (tp, sp) implement the same interface
// (infer/baselines.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/comm.h"
#include "core/tensor.h"
#include "model/block.h"
#include "model/config.h"
#include "parallel/layout.h"
#include "parallel/tsp.h"
#include "parallel/tsp_params.h"

namespace origami::infer {

// One rank's KV cache: per layer, K and V [B, capacity, n_kv·d] of the positions it caches, all
// kv heads, in the engines' element type (bf16 under --dtype bf16: half the bytes); slot i holds
// global position positions[i] in every sequence.
struct KvCache {
  int64_t B = 0, capacity = 0, kvd = 0;
  std::vector<Tensor> k, v;
  std::vector<int64_t> positions;
  void init(int64_t layers, int64_t B, int64_t capacity, int64_t kvd);
  int64_t size() const { return static_cast<int64_t>(positions.size()); }
  int64_t bytes() const {
    return k.empty() ? 0 : 2 * static_cast<int64_t>(k.size() * k[0].nbytes());
  }
  int64_t append(int64_t pos);  // the new slot
  k::Ptr k_row(size_t layer, int64_t b, int64_t slot);
  k::Ptr v_row(size_t layer, int64_t b, int64_t slot);
  // Rows src_rows[i] of k and v (rows of w elements of the cache's type) into (sequence b[i],
  // slot[i]) of `layer`, at the blk[i]-th w-wide block of the row (w divides kvd; no blk: the
  // first): one index copy each (not a copy per row, which on a GPU would be a synchronised copy
  // each).
  void write(size_t layer, k::CPtr k, k::CPtr v, int64_t w, const std::vector<int64_t>& src_rows,
             const std::vector<int64_t>& b, const std::vector<int64_t>& slot,
             const std::vector<int64_t>& blk = {});
};

// Positions the prefill of an S-token prompt leaves on each of D ranks (zigzag over S padded to
// a multiple of 2D, padding not cached).
std::vector<int64_t> prefill_counts(int64_t S, int D);
// Every rank's count after the prefill's rebalance: floor(n/D) each, the n mod D extra ones
// left with the ranks holding the most.
std::vector<int64_t> balanced_counts(const std::vector<int64_t>& counts);
// The rank that caches position p given every rank's count (see above).
int owner_of(const std::vector<int64_t>& counts, int64_t p);
// Slots a rank needs for a prompt of S tokens and `new_tokens` generated ones.
int64_t cache_capacity(int64_t S, int64_t new_tokens, int D);

// Prompts of different lengths (generate's attention_mask: HF's left padding): sequence b's first
// pads[b] positions are padding, a document of their own (docs/design.md, document masks) that
// neither the prompt nor the tokens generated after it attend to; the prompt's RoPE positions
// start at 0 where it starts. Empty: every prompt S long.
struct Padding {
  std::vector<int64_t> pads;
  int64_t of(int64_t b) const { return pads.empty() ? 0 : pads[static_cast<size_t>(b)]; }
  // RoPE position of (global) position p of sequence b.
  int64_t rope(int64_t b, int64_t p) const { return p < of(b) ? p : p - of(b); }
  // The positions [B, S] of a batch of the padded prompts (HF's position_ids; past the prompt,
  // trailing padding continues the count).
  std::vector<int64_t> positions(int64_t B, int64_t S) const;
  // The first key position sequence b's queries at positions [p0, p0 + n) may see.
  std::vector<int64_t> lo(int64_t b, int64_t p0, int64_t n) const;
};

// What generate needs from a layout's inference.
class Decoder {
 public:
  virtual ~Decoder() = default;
  // The prompt [B, S] (row-major ids, every sequence S long, the first pad.of(b) positions of
  // sequence b padding) → logits [B, V] of its last position, the same on every rank.
  virtual std::vector<float> prefill(const std::vector<int64_t>& ids, int64_t S,
                                     const Padding& pad = {}) = 0;
  // The tokens [B] at the next position → logits [B, V] of that position.
  virtual std::vector<float> step(const std::vector<int64_t>& ids) = 0;
  virtual const KvCache& cache() const = 0;
};

// The decoder of a layout (LayoutSpec::infer): tsp (with D = 1: the single device), tp or sp.
using InferLayout = InferKind;
// This rank's decoder; `full` are the full HF-named weights (each layout keeps what it owns);
// sp_comm: the SP decoder's prefill attention (--sp-comm; the others take allgather).
std::unique_ptr<Decoder> make_decoder(InferLayout l, const ModelConfig& c, Comm& comm,
                                      const ModelParams& full, int64_t B, int64_t max_new,
                                      SpComm sp_comm = SpComm::allgather);
// Per-rank bytes of the weights a layout keeps and of its KV cache (generate's --max-memory), in
// the compute type dt (--dtype: weights and cache in it).
int64_t weight_bytes(InferLayout l, const ModelConfig& c, int D, DType dt);
int64_t kv_cache_bytes(InferLayout l, const ModelConfig& c, int D, int64_t B, int64_t S,
                       int64_t max_new, DType dt);
// Bytes one rank receives in a decode step of B tokens (docs/inference.md; tsp: the rank that
// caches the new position, which receives the others' k, v on top of what every rank does).
// Queries, keys, values and attention outputs travel in dt; log-sum-exps, logits and the
// all-reduced rows of the residual stream in fp32.
int64_t decode_step_bytes(InferLayout l, const ModelConfig& c, int D, int64_t B, DType dt);
InferLayout infer_layout(const Layout& L);  // refuses the layouts generate does not run

class TspDecoder : public Decoder {
 public:
  // params: this rank's TSP shards; B sequences, at most max_new tokens after the prompt.
  TspDecoder(const ModelConfig& c, Comm& comm, TspParams params, int64_t B, int64_t max_new);
  std::vector<float> prefill(const std::vector<int64_t>& ids, int64_t S,
                             const Padding& pad = {}) override;
  std::vector<float> step(const std::vector<int64_t>& ids) override;
  const KvCache& cache() const override { return cache_; }

 private:
  Padding pad_;
  void layer_step(size_t l, Tensor& x, int owner, int64_t slot);

  ModelConfig cfg_;
  Comm& comm_;
  TspParams p_;
  TspDims t_;
  int D_, r_;
  int64_t B_, max_new_, pos_ = 0;
  TspEngine engine_;
  KvCache cache_;
  std::vector<int64_t> counts_;
  Tensor cos_, sin_;
};

}  // namespace origami::infer
