// The segment contract of flash_attn_fwd/bwd (kernels.h) over cuDNN SDPA calls (cudnn_sdpa.h):
// the call plan is host logic (plan_calls, unit-tested without a GPU); this file adds the merge of
// partial forward results by log-sum-exp and the accumulation of per-call gradients.
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/cudnn_sdpa.h"

namespace origami::cuda::cudnn {
namespace {

// (o, lse) ← their log-sum-exp merge with (oi, lsei), one block per (row, head).
__global__ void merge_k(bf16* o, int64_t ldo, float* lse, int64_t lse_stride, const bf16* oi,
                        int64_t ldi, const float* lsei, int64_t lsei_stride, int d) {
  const int64_t r = blockIdx.x;
  const int h = blockIdx.y;
  const float a = lse[h * lse_stride + r], b = lsei[h * lsei_stride + r];
  const float m = fmaxf(a, b);
  if (m == -INFINITY) return;  // uniform across the block
  const float wa = expf(a - m), wb = expf(b - m), s = wa + wb;
  bf16* orow = o + r * ldo + static_cast<int64_t>(h) * d;
  const bf16* irow = oi + r * ldi + static_cast<int64_t>(h) * d;
  for (int e = threadIdx.x; e < d; e += blockDim.x)
    st(orow + e, (wa * ld(orow + e) + wb * ld(irow + e)) / s);
  __syncthreads();  // every thread has read lse before it changes
  if (threadIdx.x == 0) lse[h * lse_stride + r] = m + logf(s);
}

__global__ void fill_k(float* x, int64_t ld, int64_t rows, int64_t cols, float v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[(i / cols) * ld + i % cols] = v;
}

SdpaDims dims_of(const Call& c, const AttnShape& sh, int64_t q_stride, int64_t kv_stride,
                 int64_t lse_stride) {
  SdpaDims s;
  s.hq = sh.n_h, s.hk = sh.n_kv, s.d = sh.d;
  s.sq = c.rows, s.skv = c.keys;
  s.q_stride = q_stride, s.kv_stride = kv_stride, s.lse_stride = lse_stride;
  return s;
}

std::vector<Call> calls_for(const QSeg& q, const KvSeg<bf16>* ks, int nks) {
  std::vector<int64_t> pos(nks), len(nks);
  for (int j = 0; j < nks; ++j) pos[j] = ks[j].pos0, len[j] = ks[j].len;
  return plan_calls(q, pos.data(), len.data(), nks);
}

}  // namespace

void attn_fwd(bf16* o, float* lse, int64_t lse_stride, const bf16* q, int64_t q_stride,
              const QSeg* qs, int nqs, const KvSeg<bf16>* ks, int nks, AttnShape sh, float scale) {
  const int64_t hd = static_cast<int64_t>(sh.n_h) * sh.d;
  for (int i = 0; i < nqs; ++i) {
    const QSeg& seg = qs[i];
    ORIGAMI_CHECK(!seg.lo, "cuDNN SDPA: document masks (QSeg::lo) are the parity kernels' only");
    auto calls = calls_for(seg, ks, nks);
    bf16* o0 = o + seg.row0 * q_stride;
    float* lse0 = lse + seg.row0;
    if (calls.size() == 1 && calls[0].r0 == 0) {  // one call covers the segment: written in place
      const Call& c = calls[0];
      sdpa_fwd(o0, lse0, q + seg.row0 * q_stride, ks[c.kv].k, ks[c.kv].v,
               dims_of(c, sh, q_stride, ks[c.kv].stride, lse_stride), scale, c.shift);
      continue;
    }
    ORIGAMI_CUDA_CHECK(cudaMemset2DAsync(o0, q_stride * sizeof(bf16), 0, hd * sizeof(bf16), seg.len,
                                         current_stream()));
    fill_k<<<grid_for(seg.len * sh.n_h), kThreads, 0, current_stream()>>>(lse0, lse_stride, sh.n_h,
                                                                          seg.len, -INFINITY);
    check_launch("attention lse fill");
    for (const Call& c : calls) {
      DBuf<bf16> oi(c.rows * q_stride, Cat::workspace);
      DBuf<float> li(sh.n_h * c.rows, Cat::workspace);
      sdpa_fwd(oi.get(), li.get(), q + (seg.row0 + c.r0) * q_stride, ks[c.kv].k, ks[c.kv].v,
               dims_of(c, sh, q_stride, ks[c.kv].stride, c.rows), scale, c.shift);
      merge_k<<<dim3(static_cast<unsigned>(c.rows), static_cast<unsigned>(sh.n_h)), 128, 0,
                current_stream()>>>(o0 + c.r0 * q_stride, q_stride, lse0 + c.r0, lse_stride,
                                    oi.get(), q_stride, li.get(), c.rows, sh.d);
      check_launch("attention merge");
    }
  }
}

void attn_bwd(bf16* dq, const bf16* dout, const bf16* q, const bf16* o, int64_t q_stride,
              const float* lse, int64_t lse_stride, const QSeg* qs, int nqs, const KvSeg<bf16>* ks,
              int nks, AttnShape sh, float scale) {
  const int64_t hd = static_cast<int64_t>(sh.n_h) * sh.d,
                kvd = static_cast<int64_t>(sh.n_kv) * sh.d;
  for (int i = 0; i < nqs; ++i) {
    const QSeg& seg = qs[i];
    ORIGAMI_CHECK(!seg.lo, "cuDNN SDPA: document masks (QSeg::lo) are the parity kernels' only");
    for (const Call& c : calls_for(seg, ks, nks)) {
      const KvSeg<bf16>& kv = ks[c.kv];
      const int64_t row = seg.row0 + c.r0;
      DBuf<bf16> dqi(c.rows * q_stride, Cat::workspace);
      DBuf<bf16> dki(c.keys * kv.stride, Cat::workspace), dvi(c.keys * kv.stride, Cat::workspace);
      sdpa_bwd(dqi.get(), dki.get(), dvi.get(), dout + row * q_stride, q + row * q_stride, kv.k,
               kv.v, o + row * q_stride, lse + row, dims_of(c, sh, q_stride, kv.stride, lse_stride),
               scale, c.shift);
      copy_rows<bf16, bf16>(dq + row * q_stride, q_stride, dqi.get(), q_stride, c.rows, hd, true);
      copy_rows<bf16, bf16>(kv.dk, kv.stride, dki.get(), kv.stride, c.keys, kvd, true);
      copy_rows<bf16, bf16>(kv.dv, kv.stride, dvi.get(), kv.stride, c.keys, kvd, true);
    }
  }
}

}  // namespace origami::cuda::cudnn
