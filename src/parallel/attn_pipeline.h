// What the attention backward pipelines of TSP / FSDP+SP (tsp_attention.cpp) and TP+SP
// (tpsp.cpp) share: a unit's K/V re-gather, its dK/dV reduce-scatter in flight between the flash
// backward and the C stage, and the end of a projection's backward (tsp-spec §6).
#pragma once
#include <cstdint>
#include <vector>

#include "comm/comm.h"
#include "core/tensor.h"
#include "kernels/dispatch.h"
#include "model/block.h"

namespace origami {

// A unit's K, V: this rank's k, v [T, kw] all-gathered into [ranks·T, kw] (workspace, the
// element type).
struct KvGather {
  Tensor K, V;
  Request k, v;
  bool posted() const { return K.defined(); }
  static KvGather post(Comm& c, const Tensor& k, const Tensor& v, int64_t T, int64_t kw) {
    KvGather g{block::ws({c.size() * T, kw}), block::ws({c.size() * T, kw}), {}, {}};
    g.k = c.iallgather(k.raw(), g.K.raw(), block::bytes(T * kw), Traffic::kv);
    g.v = c.iallgather(v.raw(), g.V.raw(), block::bytes(T * kw), Traffic::kv);
    return g;
  }
};

// An all-to-all of equal contiguous blocks of `block` bytes (Ulysses, --sp-comm a2a): block
// block_of[r] of send (block r without block_of) to rank r, block s of recv from rank s.
inline Request alltoall_blocks(Comm& c, const void* send, void* recv, int64_t block, Traffic t,
                               const std::vector<int>* block_of = nullptr) {
  const size_t n = static_cast<size_t>(c.size());
  std::vector<int64_t> cnt(n, block), so(n), ro(n);
  for (size_t r = 0; r < n; ++r) {
    so[r] = (block_of ? (*block_of)[r] : static_cast<int64_t>(r)) * block;
    ro[r] = static_cast<int64_t>(r) * block;
  }
  return c.ialltoallv(send, cnt.data(), so.data(), recv, cnt.data(), ro.data(), t);
}

// A projection's output gradient dp [T, w] (dq, or this rank's dk, dv after their
// reduce-scatter; fp32), RoPE undone where it was applied, gives dW += dpᵀ·y1 and dy1 += dp·W in
// the element type (dp converted first under bf16); MPI progress between the GEMMs.
struct ProjBwd {
  Comm& comm;
  const int64_t* pos;
  const Tensor &cos, &sin;
  const Tensor& y1;
  Tensor& dy1;
  int64_t T, h;
  int d;
  void operator()(float* dp, int64_t w, int heads, bool rope, k::CPtr W, float* G) const {
    if (rope) k::rope_bwd<float>(dp, w, pos, T, heads, d, cos.data<float>(), sin.data<float>());
    comm.progress();
    Tensor e;  // bf16: dp in the element type
    k::CPtr dpe = dp;
    if (block::elem() != DType::f32) {
      e = block::ws({T, w});
      k::convert(block::F(e), dpe, T * w);
      dpe = block::F(e);
    }
    k::linear_bwd_w(G, dpe, block::F(y1), T, w, h);
    comm.progress();
    k::linear_bwd_x(block::F(dy1), dpe, W, T, w, h);
  }
};

// A unit between its flash backward and its C stage: dK, dV [ranks·T, kw] reduce-scattered (fixed
// order) into this rank's dk, dv [T, kw] — fp32, like every reduction of gradients.
struct PendingKv {
  int64_t unit = -1;
  Tensor dKg, dVg, dk, dv;
  Request rk, rv;
  static PendingKv post(Comm& c, int64_t unit, Tensor dKg, Tensor dVg, int64_t T, int64_t kw) {
    PendingKv p{unit,
                std::move(dKg),
                std::move(dVg),
                Tensor::empty({T, kw}, DType::f32, Cat::workspace),
                Tensor::empty({T, kw}, DType::f32, Cat::workspace),
                {},
                {}};
    p.rk = c.ireduce_scatter(p.dKg.data<float>(), p.dk.data<float>(), T * kw, Traffic::kv);
    p.rv = c.ireduce_scatter(p.dVg.data<float>(), p.dv.data<float>(), T * kw, Traffic::kv);
    return p;
  }
  // The C stage: wait for dk, dv; RoPE⁻¹ on dk; dW_k, dW_v and dy1 through `proj`.
  void finish(const ProjBwd& proj, int64_t kw, int heads, k::CPtr Wk, k::CPtr Wv, float* Gk,
              float* Gv) {
    rk.wait();
    rv.wait();
    proj(dk.data<float>(), kw, heads, true, Wk, Gk);
    proj(dv.data<float>(), kw, heads, false, Wv, Gv);
  }
};

}  // namespace origami
