#include "model/block.h"

#include <algorithm>

#include "core/trace.h"
#include "kernels/dispatch.h"

namespace origami::block {

namespace {
void call(const Between& f) {
  if (f) f();
}
}  // namespace

Tensor in_elem(const Tensor& t32) {
  if (elem() == DType::f32) return t32;
  Tensor t = ws(t32.shape());
  k::convert(F(t), F(t32), t32.numel());
  return t;
}

void mlp_up(Ptr g, Ptr u, CPtr y, MlpShard W, int64_t T, int64_t h, const Between& between) {
  {
    TraceSpan span("GEMM gate");
    k::linear_fwd(g, y, W.gate, T, W.I, h);
  }
  call(between);
  {
    TraceSpan span("GEMM up");
    k::linear_fwd(u, y, W.up, T, W.I, h);
  }
  call(between);
}

void mlp_down(Ptr out, float beta, Ptr s, CPtr g, CPtr u, MlpShard W, int64_t T, int64_t h) {
  k::swiglu_fwd(s, g, u, T * W.I);
  TraceSpan span("GEMM down");
  k::linear_fwd(out, s, W.down, T, h, W.I, beta);
}

void mlp_down_bwd(float* dW_down, Ptr dg, Ptr du, Ptr s, Ptr da, CPtr dy, CPtr g, CPtr u,
                  MlpShard W, int64_t T, int64_t h, const Between& between) {
  k::swiglu_fwd(s, g, u, T * W.I);
  k::linear_bwd_w(dW_down, dy, s, T, h, W.I);
  zero_bytes(da.p, static_cast<size_t>(bytes(T * W.I)));
  k::linear_bwd_x(da, dy, W.down, T, h, W.I);
  call(between);
  k::swiglu_bwd(dg, du, da, g, u, T * W.I);
}

void mlp_up_bwd(float* dW_gate, float* dW_up, Ptr dy_in, CPtr dg, CPtr du, CPtr y, MlpShard W,
                int64_t T, int64_t h, const Between& between) {
  k::linear_bwd_w(dW_gate, dg, y, T, W.I, h);
  k::linear_bwd_w(dW_up, du, y, T, W.I, h);
  call(between);
  k::linear_bwd_x(dy_in, dg, W.gate, T, W.I, h);
  k::linear_bwd_x(dy_in, du, W.up, T, W.I, h);
}

int64_t logits_chunk(int64_t T, int64_t Vr) {
  return std::max<int64_t>(16, std::min<int64_t>(T, (int64_t{1} << 21) / Vr));
}

void head_chunk_fwd(float* z, float* m, float* l, float* zt, CPtr y, CPtr W, int64_t c, int64_t h,
                    int64_t Vr, int64_t v0, int64_t V, const int64_t* tg) {
  k::linear_fwd(z, y, W, c, Vr, h);
  k::ce_update<float>(m, l, zt, z, c, Vr, v0, V, tg);
}

void head_chunk_bwd(float* z, Ptr dy, float* dW, const float* lse, CPtr y, CPtr W, int64_t c,
                    int64_t h, int64_t Vr, int64_t v0, int64_t V, const int64_t* tg, float inv_n,
                    bool recompute) {
  if (recompute) k::linear_fwd(z, y, W, c, Vr, h);
  k::ce_bwd<float>(z, z, lse, c, Vr, v0, V, tg, inv_n);  // z := dz
  Tensor dz16;                                           // bf16: dz rounded for the GEMMs
  CPtr dz = z;
  if (y.dt != DType::f32) {
    dz16 = ws({c, Vr});
    k::convert(F(dz16), dz, c * Vr);
    dz = F(dz16);
  }
  k::linear_bwd_x(dy, dz, W, c, Vr, h);
  k::linear_bwd_w(dW, dz, y, c, Vr, h);
}

void project_rope(Ptr out, CPtr y, CPtr W, int64_t T, int64_t w, int64_t h, int heads, int d,
                  const int64_t* pos, const Tensor& cos, const Tensor& sin) {
  k::linear_fwd(out, y, W, T, w, h);
  k::rope_fwd(out, w, pos, T, heads, d, cos.data<float>(), sin.data<float>());
}

}  // namespace origami::block
