// The block math every engine composes, written once: the single-device model, TSP and FSDP+SP,
// TP/SP/TP+SP and the decoders call these; a layout supplies where the weights come from and which
// collectives wrap the GEMMs. Pointers are rows of the engines' element type (elem(): fp32 or
// bf16): byte sizes come from it (bytes(n)), never from a literal.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace origami::block {

// The engines' element type: what activations, the weights they compute with, activation
// gradients and transfer buffers are stored in — fp32, or bf16 under --dtype bf16
// (compute_dtype()). Statistics (RMSNorm's rstd, log-sum-exp, the loss), logits, the attention
// kernels' dq/dk/dv and parameter gradients are fp32 in either case (the `32` helpers). Pointers
// into tensors are k::Ptr (their type known at run time); a float* is an fp32-only path.
using k::CPtr;
using k::Ptr;
inline DType elem() {
  return compute_dtype();
}
// Bytes of n elements of the engines' element type.
inline int64_t bytes(int64_t n) {
  return n * static_cast<int64_t>(dtype_size(elem()));
}

// Tensors of the element type: kept for the backward (activations), temporaries (workspace), and
// zeroed temporaries; and their fp32 twins.
inline Tensor act(std::vector<int64_t> s) {
  return Tensor::empty(std::move(s), elem(), Cat::activations);
}
inline Tensor ws(std::vector<int64_t> s) {
  return Tensor::empty(std::move(s), elem(), Cat::workspace);
}
inline Tensor ws0(std::vector<int64_t> s) {
  return Tensor::zeros(std::move(s), elem(), Cat::workspace);
}
inline Tensor act32(std::vector<int64_t> s) {
  return Tensor::empty(std::move(s), DType::f32, Cat::activations);
}
inline Tensor ws32(std::vector<int64_t> s) {
  return Tensor::empty(std::move(s), DType::f32, Cat::workspace);
}
inline Tensor ws32_0(std::vector<int64_t> s) {
  return Tensor::zeros(std::move(s), DType::f32, Cat::workspace);
}
// A tensor's elements, typed at run time.
inline Ptr F(Tensor& t) {
  return {t.raw(), t.dtype()};
}
inline CPtr F(const Tensor& t) {
  return {t.raw(), t.dtype()};
}
// An fp32 tensor's elements (statistics, gradients): checked.
inline float* F32(Tensor& t) {
  return t.data<float>();
}
inline const float* F32(const Tensor& t) {
  return t.data<float>();
}
// An fp32 tensor (dq, dk, dv) in the element type, for the GEMMs that read it: itself under fp32,
// a converted copy (workspace) under bf16.
Tensor in_elem(const Tensor& t32);

// Called between the GEMMs of a block function (a schedule advances its transfers there).
using Between = std::function<void()>;

// ---- gated MLP on one weight shard (tsp-spec §5) ---------------------------------------------
// W_gate, W_up [I_s, h] and W_down [h, I_s], row-major: the whole MLP (single device), a TSP
// ring shard or a TP column slice (I_s intermediate units).
struct MlpShard {
  CPtr gate, up, down;
  int64_t I;
};
// g = y·W_gateᵀ, u = y·W_upᵀ   [T, I_s]
void mlp_up(Ptr g, Ptr u, CPtr y, MlpShard W, int64_t T, int64_t h,
            const Between& between = nullptr);
// s = silu(g)⊙u; out = beta·out + s·W_downᵀ   [T, h]
void mlp_down(Ptr out, float beta, Ptr s, CPtr g, CPtr u, MlpShard W, int64_t T, int64_t h);
// The backward of mlp_down: s = silu(g)⊙u again, dW_down += dyᵀ·s, da = dy·W_down, (dg, du) from
// swiglu's backward. s, da, dg, du: [T, I_s] scratch (da zeroed here).
// dW_down: fp32 (a gradient).
void mlp_down_bwd(float* dW_down, Ptr dg, Ptr du, Ptr s, Ptr da, CPtr dy, CPtr g, CPtr u,
                  MlpShard W, int64_t T, int64_t h, const Between& between = nullptr);
// The backward of mlp_up: dW_gate += dgᵀ·y, dW_up += duᵀ·y, dy_in += dg·W_gate + du·W_up.
void mlp_up_bwd(float* dW_gate, float* dW_up, Ptr dy_in, CPtr dg, CPtr du, CPtr y, MlpShard W,
                int64_t T, int64_t h, const Between& between = nullptr);

// ---- LM head and cross-entropy over token chunks and vocabulary shards ------------------------
// Rows of logits a head computes at a time: max(16, min(T, 2²¹ / V_r)) (never [T, V_r] at once).
int64_t logits_chunk(int64_t T, int64_t Vr);
// One token chunk (c rows of y) against a vocabulary shard W [V_r, h] whose first word is v0:
// z = y·Wᵀ [c, V_r], then the running statistics m, l, zt of those rows (online log-sum-exp).
// z, m, l, zt: fp32 whatever the element type.
void head_chunk_fwd(float* z, float* m, float* l, float* zt, CPtr y, CPtr W, int64_t c, int64_t h,
                    int64_t Vr, int64_t v0, int64_t V, const int64_t* tg);
// Its backward given the rows' lse: z := dz = (exp(z − lse) − onehot)·inv_n (z recomputed from y
// first when `recompute`), dy += dz·W, dW (fp32) += dzᵀ·y. Under bf16, dz is rounded to bf16 for
// the two GEMMs (a [c, V_r] workspace).
void head_chunk_bwd(float* z, Ptr dy, float* dW, const float* lse, CPtr y, CPtr W, int64_t c,
                    int64_t h, int64_t Vr, int64_t v0, int64_t V, const int64_t* tg, float inv_n,
                    bool recompute);

// ---- projections --------------------------------------------------------------------------
// out = y·Wᵀ [T, w] for `heads` heads of d, rotated (RoPE) at the rows' global positions.
void project_rope(Ptr out, CPtr y, CPtr W, int64_t T, int64_t w, int64_t h, int heads, int d,
                  const int64_t* pos, const Tensor& cos, const Tensor& sin);

}  // namespace origami::block
