// The block math every engine composes, written once: the single-device model, TSP and FSDP+SP,
// TP/SP/TP+SP and the decoders call these; a layout supplies where the weights come from and which
// collectives wrap the GEMMs. Pointers are rows of the engines' element type (elem_t, fp32 today):
// byte sizes come from it (bytes(n)), never from a literal.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace origami::block {

// The engines' element type: what activations, weights, gradients and buffers are stored in.
using elem_t = float;
constexpr DType kElem = DType::f32;
// Bytes of n elements of the engines' element type.
constexpr int64_t bytes(int64_t n) {
  return n * static_cast<int64_t>(sizeof(elem_t));
}

// Tensors of the element type: kept for the backward (activations), temporaries (workspace), and
// zeroed temporaries.
inline Tensor act(std::vector<int64_t> s) {
  return Tensor::empty(std::move(s), kElem, Cat::activations);
}
inline Tensor ws(std::vector<int64_t> s) {
  return Tensor::empty(std::move(s), kElem, Cat::workspace);
}
inline Tensor ws0(std::vector<int64_t> s) {
  return Tensor::zeros(std::move(s), kElem, Cat::workspace);
}
inline elem_t* F(Tensor& t) {
  return t.data<elem_t>();
}
inline const elem_t* F(const Tensor& t) {
  return t.data<elem_t>();
}

// Called between the GEMMs of a block function (a schedule advances its transfers there).
using Between = std::function<void()>;

// ---- gated MLP on one weight shard (tsp-spec §5) ---------------------------------------------
// W_gate, W_up [I_s, h] and W_down [h, I_s], row-major: the whole MLP (single device), a TSP
// ring shard or a TP column slice (I_s intermediate units).
struct MlpShard {
  const elem_t *gate, *up, *down;
  int64_t I;
};
// g = y·W_gateᵀ, u = y·W_upᵀ   [T, I_s]
void mlp_up(elem_t* g, elem_t* u, const elem_t* y, MlpShard W, int64_t T, int64_t h,
            const Between& between = nullptr);
// s = silu(g)⊙u; out = beta·out + s·W_downᵀ   [T, h]
void mlp_down(elem_t* out, elem_t beta, elem_t* s, const elem_t* g, const elem_t* u, MlpShard W,
              int64_t T, int64_t h);
// The backward of mlp_down: s = silu(g)⊙u again, dW_down += dyᵀ·s, da = dy·W_down, (dg, du) from
// swiglu's backward. s, da, dg, du: [T, I_s] scratch (da zeroed here).
void mlp_down_bwd(elem_t* dW_down, elem_t* dg, elem_t* du, elem_t* s, elem_t* da, const elem_t* dy,
                  const elem_t* g, const elem_t* u, MlpShard W, int64_t T, int64_t h,
                  const Between& between = nullptr);
// The backward of mlp_up: dW_gate += dgᵀ·y, dW_up += duᵀ·y, dy_in += dg·W_gate + du·W_up.
void mlp_up_bwd(elem_t* dW_gate, elem_t* dW_up, elem_t* dy_in, const elem_t* dg, const elem_t* du,
                const elem_t* y, MlpShard W, int64_t T, int64_t h,
                const Between& between = nullptr);

// ---- LM head and cross-entropy over token chunks and vocabulary shards ------------------------
// Rows of logits a head computes at a time: max(16, min(T, 2²¹ / V_r)) (never [T, V_r] at once).
int64_t logits_chunk(int64_t T, int64_t Vr);
// One token chunk (c rows of y) against a vocabulary shard W [V_r, h] whose first word is v0:
// z = y·Wᵀ [c, V_r], then the running statistics m, l, zt of those rows (online log-sum-exp).
void head_chunk_fwd(elem_t* z, elem_t* m, elem_t* l, elem_t* zt, const elem_t* y, const elem_t* W,
                    int64_t c, int64_t h, int64_t Vr, int64_t v0, int64_t V, const int64_t* tg);
// Its backward given the rows' lse: z := dz = (exp(z − lse) − onehot)·inv_n (z recomputed from y
// first when `recompute`), dy += dz·W, dW += dzᵀ·y.
void head_chunk_bwd(elem_t* z, elem_t* dy, elem_t* dW, const elem_t* lse, const elem_t* y,
                    const elem_t* W, int64_t c, int64_t h, int64_t Vr, int64_t v0, int64_t V,
                    const int64_t* tg, float inv_n, bool recompute);

// ---- projections --------------------------------------------------------------------------
// out = y·Wᵀ [T, w] for `heads` heads of d, rotated (RoPE) at the rows' global positions.
void project_rope(elem_t* out, const elem_t* y, const elem_t* W, int64_t T, int64_t w, int64_t h,
                  int heads, int d, const int64_t* pos, const Tensor& cos, const Tensor& sin);

}  // namespace origami::block
