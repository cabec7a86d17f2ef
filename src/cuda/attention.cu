// Attention, the parity path: per head, per (query tile, key tile) the scores come from one
// cuBLASLt GEMM into an fp32 tile, a small kernel applies the causal mask at global positions and
// the online softmax (forward) or the probabilities and dS (backward), and further GEMMs accumulate
// O, dV, dQ, dK in fp32 buffers that are added into the outputs at the end. Tiles are visited in a
// fixed order, so results are deterministic; any dtype cuBLASLt takes works, fp32 included (cuDNN
// has no fp32 attention, so this is what fp32 parity runs on). A query at position p sees keys at
// positions <= p (and, with document masks, >= its document's start: QSeg::lo, uploaded once a
// call); key tiles wholly after a query tile, or wholly before its first document, are skipped.
#include <algorithm>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace origami::cuda {

namespace {

int g_bq = 512, g_bk = 512;

// Kernels over a tile batch: blockIdx.x = query row of the tile, blockIdx.y = batch member b
// (kv head b; its query head is b·group + gi). Buffers of the batch are `bs` elements apart.

template <class T>
__global__ void softmax_update_k(const float* S, T* P, float* m, float* l, float* oacc, int cols,
                                 int ld, int d, int64_t qpos0, const int64_t* lo, int64_t kpos0,
                                 int64_t bs_s, int64_t bs_o, int bq) {
  const int i = blockIdx.x, b = blockIdx.y;
  const int64_t qp = qpos0 + i, first = lo ? lo[i] : 0;  // visible: first <= key <= qp
  const float* s = S + b * bs_s + static_cast<int64_t>(i) * ld;
  T* p = P + b * bs_s + static_cast<int64_t>(i) * ld;
  float* mi = m + static_cast<int64_t>(b) * bq + i;
  float* li = l + static_cast<int64_t>(b) * bq + i;
  const float mold = *mi;
  float mx = -INFINITY;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    if (kpos0 + c <= qp && kpos0 + c >= first) mx = fmaxf(mx, s[c]);
  mx = block_max(mx);
  const float mnew = fmaxf(mold, mx);
  if (mnew == -INFINITY) {  // nothing visible yet: the state stays empty
    for (int c = threadIdx.x; c < cols; c += blockDim.x) st(p + c, 0.f);
    return;
  }
  float sum = 0;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float e = kpos0 + c <= qp && kpos0 + c >= first ? expf(s[c] - mnew) : 0.f;
    st(p + c, e);
    sum += e;
  }
  sum = block_sum(sum);
  const float alpha = expf(mold - mnew);  // 0 when mold = -inf
  float* o = oacc + b * bs_o + static_cast<int64_t>(i) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) o[c] *= alpha;
  if (threadIdx.x == 0) *li = *li * alpha + sum, *mi = mnew;
}

// o row of head b·group + gi (the caller offsets o and lse by gi); heads are group·d apart in o
// and group·lse_stride apart in lse.
template <class O>
__global__ void finalize_k(O* o, int64_t q_stride, int64_t o_head, float* lse, int64_t lse_head,
                           const float* oacc, const float* m, const float* l, int d, int64_t bs_o,
                           int bq) {
  const int i = blockIdx.x, b = blockIdx.y;
  const float mi = m[static_cast<int64_t>(b) * bq + i], li = l[static_cast<int64_t>(b) * bq + i];
  const float inv = li > 0 ? 1.f / li : 0.f;
  const float* a = oacc + b * bs_o + static_cast<int64_t>(i) * d;
  O* oi = o + i * q_stride + b * o_head;
  for (int c = threadIdx.x; c < d; c += blockDim.x) st(oi + c, a[c] * inv);
  if (threadIdx.x == 0) lse[b * lse_head + i] = li > 0 ? mi + logf(li) : -INFINITY;
}

__global__ void init_state_k(float* m, float* l, float* oacc, int64_t n_state, int64_t n_acc) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n_acc;
       e += int64_t(gridDim.x) * blockDim.x) {
    oacc[e] = 0;
    if (e < n_state) m[e] = -INFINITY, l[e] = 0;
  }
}

// Backward: P = exp(S − lse) where visible (fp32 into S, T into Pt); lse of member b at
// lse + b·lse_head.
template <class T>
__global__ void probs_k(float* S, T* Pt, const float* lse, int64_t lse_head, int cols, int ld,
                        int64_t qpos0, const int64_t* lo, int64_t kpos0, int64_t bs_s) {
  const int i = blockIdx.x, b = blockIdx.y;
  const int64_t qp = qpos0 + i, first = lo ? lo[i] : 0;
  const float L = lse[b * lse_head + i];
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const int64_t e = b * bs_s + static_cast<int64_t>(i) * ld + c;
    const bool vis = kpos0 + c <= qp && kpos0 + c >= first;
    const float p = (vis && L != -INFINITY) ? expf(S[e] - L) : 0.f;
    S[e] = p;
    st(Pt + e, p);
  }
}

// dS = P (dP − D) into Pt; D of member b at D + b·d_head.
template <class T>
__global__ void dscores_k(T* Pt, const float* P, const float* dP, const float* D, int64_t d_head,
                          int cols, int ld, int64_t bs_s) {
  const int i = blockIdx.x, b = blockIdx.y;
  const float Di = D[b * d_head + i];
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const int64_t e = b * bs_s + static_cast<int64_t>(i) * ld + c;
    st(Pt + e, P[e] * (dP[e] - Di));
  }
}

// D[head, row] = Σ_c dout·o over the head's d columns; blockIdx.y = head, D's heads R apart.
template <class T>
__global__ void rowdot_k(float* D, int64_t R, const T* dout, const T* o, int64_t q_stride, int d) {
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const int64_t off = i * q_stride + h * d;
  float s = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) s += ld(dout + off + c) * ld(o + off + c);
  s = block_sum(s);
  if (threadIdx.x == 0) D[h * R + i] = s;
}

constexpr int kRowThreads = 128;

void check_shape(AttnShape sh) {
  ORIGAMI_CHECK(sh.n_kv > 0 && sh.n_h % sh.n_kv == 0, "attention: n_heads=", sh.n_h,
                " is not divisible by n_kv_heads=", sh.n_kv);
  ORIGAMI_CHECK(sh.d > 0, "attention: head_dim=", sh.d, " must be positive");
}

}  // namespace

void set_attention_tiles(int bq, int bk) {
  ORIGAMI_CHECK(bq > 0 && bk > 0, "attention tiles must be positive (got ", bq, " x ", bk, ")");
  g_bq = bq, g_bk = bk;
}

namespace {
// Document masks: every query segment's QSeg::lo on the device (one upload a call; pageable
// host memory, so the host arrays may change once the copy is issued). Null rows: plain causal.
class DocBounds {
 public:
  DocBounds(const QSeg* qs, int nqs) : off_(static_cast<size_t>(nqs), -1) {
    int64_t n = 0;
    for (int si = 0; si < nqs; ++si)
      if (qs[si].lo) off_[static_cast<size_t>(si)] = n, n += qs[si].len;
    if (n == 0) return;
    buf_ = DBuf<int64_t>(n, Cat::workspace);
    for (int si = 0; si < nqs; ++si)
      if (qs[si].lo)
        ORIGAMI_CUDA_CHECK(cudaMemcpyAsync(buf_.get() + off_[static_cast<size_t>(si)], qs[si].lo,
                                           static_cast<size_t>(qs[si].len) * sizeof(int64_t),
                                           cudaMemcpyHostToDevice, current_stream()));
  }
  // Rows from qb of segment si on the device, or null.
  const int64_t* rows(int si, int64_t qb) const {
    const int64_t o = off_[static_cast<size_t>(si)];
    return o < 0 ? nullptr : buf_.get() + o + qb;
  }

 private:
  std::vector<int64_t> off_;
  DBuf<int64_t> buf_;
};
// The first key a query tile's rows may see (0 without document masks): earlier key tiles are
// skipped.
inline int64_t first_key(const QSeg& q, int64_t qb) {
  return q.lo ? q.lo[qb] : 0;
}

// A key segment's K and V as T, whatever element type names them in the segment (cpu's bfloat16
// and CUDA's __nv_bfloat16 share the bits); its dK, dV in the segment's own gradient type.
template <class T, class S>
const T* seg_k(const S& s) {
  return reinterpret_cast<const T*>(s.k);
}
template <class T, class S>
const T* seg_v(const S& s) {
  return reinterpret_cast<const T*>(s.v);
}

// Heads are visited as `group` passes of n_kv-member batches: pass gi takes query heads
// b·group + gi (b = 0..n_kv−1), which use kv head b, so every operand of a batch is a fixed
// stride apart (queries group·d, keys d) and one cuBLASLt call covers all kv heads.
// T: Q, K, V elements; O: o's (T, or fp32 for a partial result); S: the segment type.
template <class T, class O, class Seg>
void attn_fwd_impl(O* o, float* lse, int64_t lse_stride, const T* q, int64_t q_stride,
                   const QSeg* qs, int nqs, const Seg* ks, int nks, AttnShape sh, float scale) {
  check_shape(sh);
  const int d = sh.d, group = sh.n_h / sh.n_kv, nb = sh.n_kv, BQ = g_bq, BK = g_bk;
  const cudaStream_t st_ = current_stream();
  const int64_t bs_s = int64_t(BQ) * BK, bs_o = int64_t(BQ) * d;
  DBuf<float> S(nb * bs_s, Cat::workspace), oacc(nb * bs_o, Cat::workspace),
      m(int64_t(nb) * BQ, Cat::workspace), l(int64_t(nb) * BQ, Cat::workspace);
  DBuf<T> P(nb * bs_s, Cat::workspace);
  const DocBounds docs(qs, nqs);
  const Batch bS{nb, int64_t(group) * d, d, bs_s}, bO{nb, bs_s, d, bs_o};
  for (int gi = 0; gi < group; ++gi)
    for (int si = 0; si < nqs; ++si)
      for (int64_t qb = 0; qb < qs[si].len; qb += BQ) {
        const int rows = static_cast<int>(std::min<int64_t>(BQ, qs[si].len - qb));
        const int64_t qpos0 = qs[si].pos0 + qb, qrow0 = qs[si].row0 + qb;
        const T* qp = q + qrow0 * q_stride + int64_t(gi) * d;
        init_state_k<<<grid_for(nb * bs_o), kThreads, 0, st_>>>(m.get(), l.get(), oacc.get(),
                                                                int64_t(nb) * BQ, nb * bs_o);
        const dim3 grid(rows, nb);
        for (int ki = 0; ki < nks; ++ki) {
          const Seg& k = ks[ki];
          for (int64_t kb = 0; kb < k.len; kb += BK) {
            const int64_t kpos0 = k.pos0 + kb;
            if (kpos0 > qpos0 + rows - 1) break;  // this and later tiles are in the future
            const int cols = static_cast<int>(std::min<int64_t>(BK, k.len - kb));
            if (kpos0 + cols <= first_key(qs[si], qb)) continue;  // before every row's document
            gemm_ex(Trans::N, Trans::T, rows, cols, d, scale, qp, q_stride,
                    seg_k<T>(k) + kb * k.stride, k.stride, dtype_of<T>(), 0.f, S.get(), BK,
                    DType::f32, bS);
            softmax_update_k<T><<<grid, kRowThreads, 0, st_>>>(
                S.get(), P.get(), m.get(), l.get(), oacc.get(), cols, BK, d, qpos0,
                docs.rows(si, qb), kpos0, bs_s, bs_o, BQ);
            check_launch("attention softmax");
            gemm_ex(Trans::N, Trans::N, rows, d, cols, 1.f, P.get(), BK,
                    seg_v<T>(k) + kb * k.stride, k.stride, dtype_of<T>(), 1.f, oacc.get(), d,
                    DType::f32, bO);
          }
        }
        finalize_k<O><<<grid, kRowThreads, 0, st_>>>(
            o + qrow0 * q_stride + int64_t(gi) * d, q_stride, int64_t(group) * d,
            lse + gi * lse_stride + qrow0, group * lse_stride, oacc.get(), m.get(), l.get(), d,
            bs_o, BQ);
        check_launch("attention finalize");
      }
}

// G: dq's type and the segments' dK, dV (T, or fp32 under mixed precision).
template <class T, class G, class Seg>
void attn_bwd_impl(G* dq, const T* dout, const T* q, const T* o, int64_t q_stride, const float* lse,
                   int64_t lse_stride, const QSeg* qs, int nqs, const Seg* ks, int nks,
                   AttnShape sh, float scale) {
  check_shape(sh);
  const int d = sh.d, group = sh.n_h / sh.n_kv, nb = sh.n_kv, BQ = g_bq, BK = g_bk;
  const cudaStream_t st_ = current_stream();
  int64_t R = 0;  // rows spanned by the query segments
  for (int si = 0; si < nqs; ++si) R = std::max(R, qs[si].row0 + qs[si].len);
  DBuf<float> D(int64_t(sh.n_h) * R, Cat::workspace);
  for (int si = 0; si < nqs; ++si)
    if (qs[si].len > 0) {
      const int64_t r0 = qs[si].row0;
      rowdot_k<T><<<dim3(static_cast<unsigned>(qs[si].len), sh.n_h), kRowThreads, 0, st_>>>(
          D.get() + r0, R, dout + r0 * q_stride, o + r0 * q_stride, q_stride, d);
      check_launch("attention rowdot");
    }
  const int64_t bs_s = int64_t(BQ) * BK, bs_kv = int64_t(BK) * d;
  // dQ of every head in fp32 ([n_h, R, d]): added into dq once, after all key tiles.
  DBuf<float> S(nb * bs_s, Cat::workspace), dP(nb * bs_s, Cat::workspace),
      dqacc(int64_t(sh.n_h) * R * d, Cat::workspace), dkacc(nb * bs_kv, Cat::workspace),
      dvacc(nb * bs_kv, Cat::workspace);
  DBuf<T> Pt(nb * bs_s, Cat::workspace);
  const DocBounds docs(qs, nqs);
  ORIGAMI_CUDA_CHECK(cudaMemsetAsync(dqacc.get(), 0, dqacc.size() * sizeof(float), st_));
  const int64_t qh = int64_t(group) * d;  // query-head stride of a batch (columns)
  for (int ki = 0; ki < nks; ++ki) {
    const Seg& k = ks[ki];
    for (int64_t kb = 0; kb < k.len; kb += BK) {
      const int cols = static_cast<int>(std::min<int64_t>(BK, k.len - kb));
      const int64_t kpos0 = k.pos0 + kb;
      const T* kp = seg_k<T>(k) + kb * k.stride;
      const T* vp = seg_v<T>(k) + kb * k.stride;
      ORIGAMI_CUDA_CHECK(cudaMemsetAsync(dkacc.get(), 0, dkacc.size() * sizeof(float), st_));
      ORIGAMI_CUDA_CHECK(cudaMemsetAsync(dvacc.get(), 0, dvacc.size() * sizeof(float), st_));
      for (int gi = 0; gi < group; ++gi)
        for (int si = 0; si < nqs; ++si)
          for (int64_t qb = 0; qb < qs[si].len; qb += BQ) {
            const int rows = static_cast<int>(std::min<int64_t>(BQ, qs[si].len - qb));
            const int64_t qpos0 = qs[si].pos0 + qb, qrow0 = qs[si].row0 + qb;
            if (kpos0 > qpos0 + rows - 1) continue;               // keys all in this tile's future
            if (kpos0 + cols <= first_key(qs[si], qb)) continue;  // before its documents
            const int64_t qoff = qrow0 * q_stride + int64_t(gi) * d;
            const dim3 grid(rows, nb);
            gemm_ex(Trans::N, Trans::T, rows, cols, d, scale, q + qoff, q_stride, kp, k.stride,
                    dtype_of<T>(), 0.f, S.get(), BK, DType::f32, {nb, qh, d, bs_s});
            probs_k<T><<<grid, kRowThreads, 0, st_>>>(
                S.get(), Pt.get(), lse + gi * lse_stride + qrow0, group * lse_stride, cols, BK,
                qpos0, docs.rows(si, qb), kpos0, bs_s);
            check_launch("attention probs");
            gemm_ex(Trans::T, Trans::N, cols, d, rows, 1.f, Pt.get(), BK, dout + qoff, q_stride,
                    dtype_of<T>(), 1.f, dvacc.get(), d, DType::f32, {nb, bs_s, qh, bs_kv});
            gemm_ex(Trans::N, Trans::T, rows, cols, d, 1.f, dout + qoff, q_stride, vp, k.stride,
                    dtype_of<T>(), 0.f, dP.get(), BK, DType::f32, {nb, qh, d, bs_s});
            dscores_k<T><<<grid, kRowThreads, 0, st_>>>(
                Pt.get(), S.get(), dP.get(), D.get() + gi * R + qrow0, group * R, cols, BK, bs_s);
            check_launch("attention dscores");
            gemm_ex(Trans::N, Trans::N, rows, d, cols, scale, Pt.get(), BK, kp, k.stride,
                    dtype_of<T>(), 1.f, dqacc.get() + (gi * R + qrow0) * d, d, DType::f32,
                    {nb, bs_s, d, int64_t(group) * R * d});
            gemm_ex(Trans::T, Trans::N, cols, d, rows, scale, Pt.get(), BK, q + qoff, q_stride,
                    dtype_of<T>(), 1.f, dkacc.get(), d, DType::f32, {nb, bs_s, qh, bs_kv});
          }
      for (int b = 0; b < nb; ++b) {
        copy_rows<G, float>(reinterpret_cast<G*>(k.dk) + kb * k.stride + int64_t(b) * d, k.stride,
                            dkacc.get() + b * bs_kv, d, cols, d, true);
        copy_rows<G, float>(reinterpret_cast<G*>(k.dv) + kb * k.stride + int64_t(b) * d, k.stride,
                            dvacc.get() + b * bs_kv, d, cols, d, true);
      }
    }
  }
  // dqacc holds head h = b·group + gi at (gi + b·group)·R·d = h·R·d.
  for (int h = 0; h < sh.n_h; ++h)
    for (int si = 0; si < nqs; ++si)
      copy_rows<G, float>(dq + qs[si].row0 * q_stride + int64_t(h) * d, q_stride,
                          dqacc.get() + (h * R + qs[si].row0) * d, d, qs[si].len, d, true);
}
}  // namespace

template <class T>
void flash_attn_fwd(T* o, float* lse, int64_t lse_stride, const T* q, int64_t q_stride,
                    const QSeg* qs, int nqs, const KvSeg<T>* ks, int nks, AttnShape sh,
                    float scale) {
  attn_fwd_impl<T, T>(o, lse, lse_stride, q, q_stride, qs, nqs, ks, nks, sh, scale);
}
template <class T>
void flash_attn_bwd(T* dq, const T* dout, const T* q, const T* o, int64_t q_stride,
                    const float* lse, int64_t lse_stride, const QSeg* qs, int nqs,
                    const KvSeg<T>* ks, int nks, AttnShape sh, float scale) {
  attn_bwd_impl<T, T>(dq, dout, q, o, q_stride, lse, lse_stride, qs, nqs, ks, nks, sh, scale);
}

void flash_attn_fwd_mixed(void* o, DType o_type, float* lse, int64_t lse_stride, const bfloat16* q,
                          int64_t q_stride, const QSeg* qs, int nqs, const KvSeg<bfloat16>* ks,
                          int nks, AttnShape sh, float scale) {
  const bf16* qq = reinterpret_cast<const bf16*>(q);
  if (o_type == DType::f32)
    return attn_fwd_impl<bf16, float>(static_cast<float*>(o), lse, lse_stride, qq, q_stride, qs,
                                      nqs, ks, nks, sh, scale);
  attn_fwd_impl<bf16, bf16>(static_cast<bf16*>(o), lse, lse_stride, qq, q_stride, qs, nqs, ks, nks,
                            sh, scale);
}
void flash_attn_bwd_mixed(float* dq, const bfloat16* dout, const bfloat16* q, const bfloat16* o,
                          int64_t q_stride, const float* lse, int64_t lse_stride, const QSeg* qs,
                          int nqs, const KvSeg<bfloat16>* ks, int nks, AttnShape sh, float scale) {
  attn_bwd_impl<bf16, float>(dq, reinterpret_cast<const bf16*>(dout),
                             reinterpret_cast<const bf16*>(q), reinterpret_cast<const bf16*>(o),
                             q_stride, lse, lse_stride, qs, nqs, ks, nks, sh, scale);
}

#define INST(T)                                                                               \
  template void flash_attn_fwd<T>(T*, float*, int64_t, const T*, int64_t, const QSeg*, int,   \
                                  const KvSeg<T>*, int, AttnShape, float);                    \
  template void flash_attn_bwd<T>(T*, const T*, const T*, const T*, int64_t, const float*,    \
                                  int64_t, const QSeg*, int, const KvSeg<T>*, int, AttnShape, \
                                  float);
INST(float)
INST(bf16)

}  // namespace origami::cuda
