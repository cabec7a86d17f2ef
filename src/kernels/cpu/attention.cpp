// Causal flash attention (FlashAttention-2 style) over key segments, with GQA.
//
// Forward, per (query head h, query tile of BQ rows), kv head = h / g:
//   for each key segment, for each key tile of BK keys not entirely in the future:
//     S   = scale * Q K^T                       [BQ, BK]   (BLAS, strided views, no copies)
//     mask keys with global position > the query's
//     m'  = max(m, rowmax S);  P = exp(S - m');  l = l*exp(m - m') + rowsum P
//     acc = acc*exp(m - m') + P V               [BQ, d]
//   o = acc / l;  lse = m + log l
// Memory: one [BQ, BK] score tile and one [BQ, d] accumulator per thread — O(S), never S x S.
//
// Backward (recompute P from lse), Dr = rowsum(dO * O):
//   P = exp(scale Q K^T - lse);  dV += P^T dO;  dP = dO V^T;  dS = P * (dP - Dr)
//   dQ += scale dS K;  dK += scale dS^T Q
// Work is split by kv head, so every dq/dk/dv element has exactly one writer and the
// summation order is fixed: results do not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

namespace origami::cpu {

namespace {
constexpr int64_t BQ = 64, BK = 64;
}  // namespace

int64_t flash_attn_tile_elems(bool bwd, int d, bool bf16) {
  const int64_t wide = bf16 ? (bwd ? 2 * BQ * d + 2 * BK * d : BQ * d + 2 * BK * d) : 0;
  return (bwd ? 2 * BQ * BK + BQ : BQ * BK + BQ * d + 2 * BQ) + wide;
}

namespace {

// A tile of n rows of d elements (row stride `stride`) as rows of acc_t: the rows themselves for
// float and double; for bf16, widened into w (row stride d).
template <class T>
struct Rows {
  const acc_t<T>* p;
  int64_t ld;
};
template <class T>
Rows<T> rows(const T* x, int64_t stride, int64_t n, int d, acc_t<T>* w) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    (void)n, (void)d, (void)w;
    return {x, stride};
  } else {
    for (int64_t i = 0; i < n; ++i)
      for (int c = 0; c < d; ++c) w[i * d + c] = ld(x[i * stride + c]);
    return {w, d};
  }
}

struct Item {
  int h, s;
  int64_t t0, n;
};

// Keys j in [first, lim) of a tile of nk keys starting at global position kp0 are visible to
// query qp whose document starts at lo (0 without document masks).
struct Vis {
  int64_t first, lim;
};
inline Vis visible(int64_t qp, int64_t lo, int64_t kp0, int64_t nk) {
  const int64_t lim = std::clamp<int64_t>(qp - kp0 + 1, 0, nk);
  return {std::clamp<int64_t>(lo - kp0, 0, lim), lim};
}

// Forward, one [nq, nk] score tile (row stride ld): P = exp(S − m_new) on the visible keys, 0
// past them; the running max m, sum l and the accumulator rows acc [nq, d] are updated.
// lo: the rows' document starts (null: none).
template <class T>
ORIGAMI_SIMD_INLINE void softmax_tile_t(T* S, int64_t ld, int64_t nq, int64_t nk, int64_t qp0,
                                        const int64_t* lo, int64_t kp0, T* m, T* l, T* acc, int d) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < nq; ++i) {
    T* Si = S + i * ld;
    const Vis v = visible(qp0 + i, lo ? lo[i] : 0, kp0, nk);
    if (v.first >= v.lim) {
      std::fill(Si, Si + nk, T(0));
      continue;
    }
    const int64_t n = v.lim - v.first;
    const T mnew = std::max(m[i], lane_max(Si + v.first, n));
    const T alpha = m[i] == neg_inf ? T(0) : exp_of(m[i] - mnew);
    const T sum = lane_exp_sum<true>(Si + v.first, Si + v.first, mnew, n);
    std::fill(Si, Si + v.first, T(0));
    std::fill(Si + v.lim, Si + nk, T(0));
    l[i] = l[i] * alpha + sum;
    m[i] = mnew;
    if (alpha != T(1)) {
      T* a = acc + i * d;
      for (int c = 0; c < d; ++c) a[c] *= alpha;
    }
  }
}

// Backward: P = exp(S − lse) on the visible keys, 0 past them (rows with lse = −∞ see nothing).
template <class T>
ORIGAMI_SIMD_INLINE void probs_tile_t(T* P, int64_t ld, int64_t nq, int64_t nk, int64_t qp0,
                                      const int64_t* lo, int64_t kp0, const T* L) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < nq; ++i) {
    T* Pi = P + i * ld;
    Vis v = visible(qp0 + i, lo ? lo[i] : 0, kp0, nk);
    if (L[i] == neg_inf) v = {0, 0};
    const T c = L[i];
    std::fill(Pi, Pi + v.first, T(0));
    for (int64_t j = v.first; j < v.lim; ++j) Pi[j] = exp_of(Pi[j] - c);
    std::fill(Pi + std::max(v.first, v.lim), Pi + nk, T(0));
  }
}

// Backward: dS = P ⊙ (dP − Dr) in place of dP.
template <class T>
ORIGAMI_SIMD_INLINE void dscores_tile_t(T* dP, const T* P, int64_t ld, int64_t nq, int64_t nk,
                                        const T* Dr) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nk; ++j) dP[i * ld + j] = P[i * ld + j] * (dP[i * ld + j] - Dr[i]);
}

// float: cloned per ISA (simd.h); double: plain.
ORIGAMI_SIMD void softmax_tile(float* S, int64_t ld, int64_t nq, int64_t nk, int64_t qp0,
                               const int64_t* lo, int64_t kp0, float* m, float* l, float* acc,
                               int d) {
  softmax_tile_t(S, ld, nq, nk, qp0, lo, kp0, m, l, acc, d);
}
void softmax_tile(double* S, int64_t ld, int64_t nq, int64_t nk, int64_t qp0, const int64_t* lo,
                  int64_t kp0, double* m, double* l, double* acc, int d) {
  softmax_tile_t(S, ld, nq, nk, qp0, lo, kp0, m, l, acc, d);
}
ORIGAMI_SIMD void probs_tile(float* P, int64_t ld, int64_t nq, int64_t nk, int64_t qp0,
                             const int64_t* lo, int64_t kp0, const float* L) {
  probs_tile_t(P, ld, nq, nk, qp0, lo, kp0, L);
}
void probs_tile(double* P, int64_t ld, int64_t nq, int64_t nk, int64_t qp0, const int64_t* lo,
                int64_t kp0, const double* L) {
  probs_tile_t(P, ld, nq, nk, qp0, lo, kp0, L);
}
ORIGAMI_SIMD void dscores_tile(float* dP, const float* P, int64_t ld, int64_t nq, int64_t nk,
                               const float* Dr) {
  dscores_tile_t(dP, P, ld, nq, nk, Dr);
}
void dscores_tile(double* dP, const double* P, int64_t ld, int64_t nq, int64_t nk,
                  const double* Dr) {
  dscores_tile_t(dP, P, ld, nq, nk, Dr);
}
}  // namespace

template <class T, class O>
void flash_attn_fwd(O* o, acc_t<T>* lse, int64_t lse_stride, const T* q, int64_t q_stride,
                    const QSeg* qs, int nqs, const KvSeg<T>* ks, int nks, AttnShape sh,
                    acc_t<T> scale) {
  using A = acc_t<T>;
  constexpr bool wide = !std::is_same_v<T, A>;
  const int d = sh.d, g = sh.n_h / sh.n_kv;
  const A neg_inf = -std::numeric_limits<A>::infinity();
  std::vector<Item> items;
  for (int h = 0; h < sh.n_h; ++h)
    for (int s = 0; s < nqs; ++s)
      for (int64_t t0 = 0; t0 < qs[s].len; t0 += BQ)
        items.push_back({h, s, t0, std::min(BQ, qs[s].len - t0)});
  const int nt = omp_get_max_threads();
  const int64_t per = flash_attn_tile_elems(false, d, wide);
  Tensor ws = Tensor::empty_host({nt, per}, dtype_of<A>(), Cat::workspace);  // a CPU kernel: host

#pragma omp parallel
  {
    A* S = ws.data<A>() + omp_get_thread_num() * per;
    A* acc = S + BQ * BK;
    A* m = acc + BQ * d;
    A* l = m + BQ;
    A* wq = l + BQ;  // bf16: the widened Q, K, V tiles
    A* wk = wq + BQ * d;
    A* wv = wk + BK * d;
#pragma omp for schedule(dynamic)
    for (size_t it = 0; it < items.size(); ++it) {
      const Item& w = items[it];
      const QSeg& qsg = qs[w.s];
      const int64_t row0 = qsg.row0 + w.t0, qp0 = qsg.pos0 + w.t0, nq = w.n;
      const int64_t* lo = qsg.lo ? qsg.lo + w.t0 : nullptr;
      const int64_t lo0 = lo ? lo[0] : 0;  // the tile's earliest visible key
      const Rows<T> Q =
          rows(q + row0 * q_stride + static_cast<int64_t>(w.h) * d, q_stride, nq, d, wq);
      const int kvh = w.h / g;
      std::fill(m, m + nq, neg_inf);
      std::fill(l, l + nq, A(0));
      std::fill(acc, acc + nq * d, A(0));
      for (int s = 0; s < nks; ++s) {
        const KvSeg<T>& kv = ks[s];
        for (int64_t k0 = 0; k0 < kv.len; k0 += BK) {
          const int64_t kp0 = kv.pos0 + k0;
          if (kp0 > qp0 + nq - 1) break;
          const int64_t nk = std::min(BK, kv.len - k0);
          if (kp0 + nk <= lo0) continue;  // before every row's document: skipped
          const int64_t koff = k0 * kv.stride + static_cast<int64_t>(kvh) * d;
          const Rows<T> K = rows(kv.k + koff, kv.stride, nk, d, wk);
          const Rows<T> V = rows(kv.v + koff, kv.stride, nk, d, wv);
          gemm<A>(Trans::N, Trans::T, nq, nk, d, scale, Q.p, Q.ld, K.p, K.ld, A(0), S, BK);
          softmax_tile(S, BK, nq, nk, qp0, lo, kp0, m, l, acc, d);
          gemm<A>(Trans::N, Trans::N, nq, d, nk, A(1), S, BK, V.p, V.ld, A(1), acc, d);
        }
      }
      for (int64_t i = 0; i < nq; ++i) {
        O* oi = o + (row0 + i) * q_stride + static_cast<int64_t>(w.h) * d;
        const A inv = l[i] > 0 ? A(1) / l[i] : A(0);
        for (int c = 0; c < d; ++c) oi[c] = st<O>(acc[i * d + c] * inv);
        lse[static_cast<int64_t>(w.h) * lse_stride + row0 + i] =
            l[i] > 0 ? m[i] + std::log(l[i]) : neg_inf;
      }
    }
  }
}

template <class T>
void flash_attn_bwd(acc_t<T>* dq, const T* dout, const T* q, const T* o, int64_t q_stride,
                    const acc_t<T>* lse, int64_t lse_stride, const QSeg* qs, int nqs,
                    const KvSeg<T>* ks, int nks, AttnShape sh, acc_t<T> scale) {
  using A = acc_t<T>;
  constexpr bool wide = !std::is_same_v<T, A>;
  const int d = sh.d, g = sh.n_h / sh.n_kv;
  const int nt = omp_get_max_threads();
  const int64_t per = flash_attn_tile_elems(true, d, wide);
  Tensor ws = Tensor::empty_host({nt, per}, dtype_of<A>(), Cat::workspace);  // a CPU kernel: host

#pragma omp parallel
  {
    A* P = ws.data<A>() + omp_get_thread_num() * per;
    A* dP = P + BQ * BK;
    A* Dr = dP + BQ * BK;
    A* wq = Dr + BQ;  // bf16: the widened Q, dO, K, V tiles
    A* wdo = wq + BQ * d;
    A* wk = wdo + BQ * d;
    A* wv = wk + BK * d;
#pragma omp for schedule(dynamic)
    for (int kvh = 0; kvh < sh.n_kv; ++kvh) {
      for (int h = kvh * g; h < (kvh + 1) * g; ++h) {
        for (int s = 0; s < nqs; ++s) {
          for (int64_t t0 = 0; t0 < qs[s].len; t0 += BQ) {
            const int64_t nq = std::min(BQ, qs[s].len - t0);
            const int64_t row0 = qs[s].row0 + t0, qp0 = qs[s].pos0 + t0;
            const int64_t* lo = qs[s].lo ? qs[s].lo + t0 : nullptr;
            const int64_t lo0 = lo ? lo[0] : 0;
            const int64_t hoff = static_cast<int64_t>(h) * d;
            const Rows<T> Q = rows(q + row0 * q_stride + hoff, q_stride, nq, d, wq);
            const Rows<T> dO = rows(dout + row0 * q_stride + hoff, q_stride, nq, d, wdo);
            A* dQ = dq + row0 * q_stride + hoff;
            const A* L = lse + static_cast<int64_t>(h) * lse_stride + row0;
            for (int64_t i = 0; i < nq; ++i) {
              const T* oi = o + (row0 + i) * q_stride + hoff;
              A acc = 0;
              for (int c = 0; c < d; ++c) acc += dO.p[i * dO.ld + c] * ld(oi[c]);
              Dr[i] = acc;
            }
            for (int sk = 0; sk < nks; ++sk) {
              const KvSeg<T>& kv = ks[sk];
              for (int64_t k0 = 0; k0 < kv.len; k0 += BK) {
                const int64_t kp0 = kv.pos0 + k0;
                if (kp0 > qp0 + nq - 1) break;
                const int64_t nk = std::min(BK, kv.len - k0);
                if (kp0 + nk <= lo0) continue;
                const int64_t koff = k0 * kv.stride + static_cast<int64_t>(kvh) * d;
                const Rows<T> K = rows(kv.k + koff, kv.stride, nk, d, wk);
                const Rows<T> V = rows(kv.v + koff, kv.stride, nk, d, wv);
                gemm<A>(Trans::N, Trans::T, nq, nk, d, scale, Q.p, Q.ld, K.p, K.ld, A(0), P, BK);
                probs_tile(P, BK, nq, nk, qp0, lo, kp0, L);
                gemm<A>(Trans::T, Trans::N, nk, d, nq, A(1), P, BK, dO.p, dO.ld, A(1), kv.dv + koff,
                        kv.stride);
                gemm<A>(Trans::N, Trans::T, nq, nk, d, A(1), dO.p, dO.ld, V.p, V.ld, A(0), dP, BK);
                dscores_tile(dP, P, BK, nq, nk, Dr);
                gemm<A>(Trans::N, Trans::N, nq, d, nk, scale, dP, BK, K.p, K.ld, A(1), dQ,
                        q_stride);
                gemm<A>(Trans::T, Trans::N, nk, d, nq, scale, dP, BK, Q.p, Q.ld, A(1), kv.dk + koff,
                        kv.stride);
              }
            }
          }
        }
      }
    }
  }
}

void attn_merge(float* o, float* lse, const float* o2, const float* lse2, int64_t rows, int n_h,
                int d, int64_t stride, int64_t lse_stride) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
#pragma omp parallel for collapse(2) schedule(static)
  for (int h = 0; h < n_h; ++h)
    for (int64_t i = 0; i < rows; ++i) {
      float& a = lse[h * lse_stride + i];
      const float b = lse2[h * lse_stride + i];
      if (b == neg_inf) continue;
      float* oi = o + i * stride + static_cast<int64_t>(h) * d;
      const float* pi = o2 + i * stride + static_cast<int64_t>(h) * d;
      if (a == neg_inf) {
        std::copy(pi, pi + d, oi);
        a = b;
        continue;
      }
      const float m = std::max(a, b), ea = std::exp(a - m), eb = std::exp(b - m), s = ea + eb;
      const float wa = ea / s, wb = eb / s;
      for (int c = 0; c < d; ++c) oi[c] = wa * oi[c] + wb * pi[c];
      a = m + std::log(s);
    }
}

#define INST(T)                                                                                \
  template void flash_attn_fwd<T>(T*, acc_t<T>*, int64_t, const T*, int64_t, const QSeg*, int, \
                                  const KvSeg<T>*, int, AttnShape, acc_t<T>);                  \
  template void flash_attn_bwd<T>(acc_t<T>*, const T*, const T*, const T*, int64_t,            \
                                  const acc_t<T>*, int64_t, const QSeg*, int, const KvSeg<T>*, \
                                  int, AttnShape, acc_t<T>);
INST(float)
INST(double)
INST(bfloat16)
template void flash_attn_fwd<bfloat16, float>(float*, float*, int64_t, const bfloat16*, int64_t,
                                              const QSeg*, int, const KvSeg<bfloat16>*, int,
                                              AttnShape, float);

}  // namespace origami::cpu
