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

void mlp_up(elem_t* g, elem_t* u, const elem_t* y, MlpShard W, int64_t T, int64_t h,
            const Between& between) {
  {
    TraceSpan span("GEMM gate");
    k::linear_fwd<elem_t>(g, y, W.gate, T, W.I, h);
  }
  call(between);
  {
    TraceSpan span("GEMM up");
    k::linear_fwd<elem_t>(u, y, W.up, T, W.I, h);
  }
  call(between);
}

void mlp_down(elem_t* out, elem_t beta, elem_t* s, const elem_t* g, const elem_t* u, MlpShard W,
              int64_t T, int64_t h) {
  k::swiglu_fwd<elem_t>(s, g, u, T * W.I);
  TraceSpan span("GEMM down");
  k::linear_fwd<elem_t>(out, s, W.down, T, h, W.I, beta);
}

void mlp_down_bwd(elem_t* dW_down, elem_t* dg, elem_t* du, elem_t* s, elem_t* da, const elem_t* dy,
                  const elem_t* g, const elem_t* u, MlpShard W, int64_t T, int64_t h,
                  const Between& between) {
  k::swiglu_fwd<elem_t>(s, g, u, T * W.I);
  k::linear_bwd_w<elem_t>(dW_down, dy, s, T, h, W.I);
  zero_bytes(da, static_cast<size_t>(bytes(T * W.I)));
  k::linear_bwd_x<elem_t>(da, dy, W.down, T, h, W.I);
  call(between);
  k::swiglu_bwd<elem_t>(dg, du, da, g, u, T * W.I);
}

void mlp_up_bwd(elem_t* dW_gate, elem_t* dW_up, elem_t* dy_in, const elem_t* dg, const elem_t* du,
                const elem_t* y, MlpShard W, int64_t T, int64_t h, const Between& between) {
  k::linear_bwd_w<elem_t>(dW_gate, dg, y, T, W.I, h);
  k::linear_bwd_w<elem_t>(dW_up, du, y, T, W.I, h);
  call(between);
  k::linear_bwd_x<elem_t>(dy_in, dg, W.gate, T, W.I, h);
  k::linear_bwd_x<elem_t>(dy_in, du, W.up, T, W.I, h);
}

int64_t logits_chunk(int64_t T, int64_t Vr) {
  return std::max<int64_t>(16, std::min<int64_t>(T, (int64_t{1} << 21) / Vr));
}

void head_chunk_fwd(elem_t* z, elem_t* m, elem_t* l, elem_t* zt, const elem_t* y, const elem_t* W,
                    int64_t c, int64_t h, int64_t Vr, int64_t v0, int64_t V, const int64_t* tg) {
  k::linear_fwd<elem_t>(z, y, W, c, Vr, h);
  k::ce_update<elem_t>(m, l, zt, z, c, Vr, v0, V, tg);
}

void head_chunk_bwd(elem_t* z, elem_t* dy, elem_t* dW, const elem_t* lse, const elem_t* y,
                    const elem_t* W, int64_t c, int64_t h, int64_t Vr, int64_t v0, int64_t V,
                    const int64_t* tg, float inv_n, bool recompute) {
  if (recompute) k::linear_fwd<elem_t>(z, y, W, c, Vr, h);
  k::ce_bwd<elem_t>(z, z, lse, c, Vr, v0, V, tg, inv_n);  // z := dz
  k::linear_bwd_x<elem_t>(dy, z, W, c, Vr, h);
  k::linear_bwd_w<elem_t>(dW, z, y, c, Vr, h);
}

void project_rope(elem_t* out, const elem_t* y, const elem_t* W, int64_t T, int64_t w, int64_t h,
                  int heads, int d, const int64_t* pos, const Tensor& cos, const Tensor& sin) {
  k::linear_fwd<elem_t>(out, y, W, T, w, h);
  k::rope_fwd<elem_t>(out, w, pos, T, heads, d, cos.data<elem_t>(), sin.data<elem_t>());
}

}  // namespace origami::block
