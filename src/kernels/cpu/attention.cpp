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

int64_t flash_attn_tile_elems(bool bwd, int d) {
  return bwd ? 2 * BQ * BK + BQ : BQ * BK + BQ * d + 2 * BQ;
}

namespace {

struct Item {
  int h, s;
  int64_t t0, n;
};

// Number of keys j in [0, nk) of a tile starting at global position kp0 visible to query qp.
inline int64_t visible(int64_t qp, int64_t kp0, int64_t nk) {
  return std::clamp<int64_t>(qp - kp0 + 1, 0, nk);
}

// Forward, one [nq, nk] score tile (row stride ld): P = exp(S − m_new) on the visible keys, 0
// past them; the running max m, sum l and the accumulator rows acc [nq, d] are updated.
template <class T>
ORIGAMI_SIMD_INLINE void softmax_tile_t(T* S, int64_t ld, int64_t nq, int64_t nk, int64_t qp0,
                                        int64_t kp0, T* m, T* l, T* acc, int d) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < nq; ++i) {
    T* Si = S + i * ld;
    const int64_t lim = visible(qp0 + i, kp0, nk);
    if (lim == 0) {
      std::fill(Si, Si + nk, T(0));
      continue;
    }
    const T mnew = std::max(m[i], lane_max(Si, lim));
    const T alpha = m[i] == neg_inf ? T(0) : exp_of(m[i] - mnew);
    const T sum = lane_exp_sum<true>(Si, Si, mnew, lim);
    std::fill(Si + lim, Si + nk, T(0));
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
                                      int64_t kp0, const T* L) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < nq; ++i) {
    T* Pi = P + i * ld;
    const int64_t lim = L[i] == neg_inf ? 0 : visible(qp0 + i, kp0, nk);
    const T c = L[i];
    for (int64_t j = 0; j < lim; ++j) Pi[j] = exp_of(Pi[j] - c);
    std::fill(Pi + lim, Pi + nk, T(0));
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
                               int64_t kp0, float* m, float* l, float* acc, int d) {
  softmax_tile_t(S, ld, nq, nk, qp0, kp0, m, l, acc, d);
}
void softmax_tile(double* S, int64_t ld, int64_t nq, int64_t nk, int64_t qp0, int64_t kp0,
                  double* m, double* l, double* acc, int d) {
  softmax_tile_t(S, ld, nq, nk, qp0, kp0, m, l, acc, d);
}
ORIGAMI_SIMD void probs_tile(float* P, int64_t ld, int64_t nq, int64_t nk, int64_t qp0, int64_t kp0,
                             const float* L) {
  probs_tile_t(P, ld, nq, nk, qp0, kp0, L);
}
void probs_tile(double* P, int64_t ld, int64_t nq, int64_t nk, int64_t qp0, int64_t kp0,
                const double* L) {
  probs_tile_t(P, ld, nq, nk, qp0, kp0, L);
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

template <class T>
void flash_attn_fwd(T* o, T* lse, int64_t lse_stride, const T* q, int64_t q_stride, const QSeg* qs,
                    int nqs, const KvSeg<T>* ks, int nks, AttnShape sh, T scale) {
  const int d = sh.d, g = sh.n_h / sh.n_kv;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  std::vector<Item> items;
  for (int h = 0; h < sh.n_h; ++h)
    for (int s = 0; s < nqs; ++s)
      for (int64_t t0 = 0; t0 < qs[s].len; t0 += BQ)
        items.push_back({h, s, t0, std::min(BQ, qs[s].len - t0)});
  const int nt = omp_get_max_threads();
  const int64_t per = flash_attn_tile_elems(false, d);
  Tensor ws = Tensor::empty_host({nt, per}, dtype_of<T>(), Cat::workspace);  // a CPU kernel: host

#pragma omp parallel
  {
    T* S = ws.data<T>() + omp_get_thread_num() * per;
    T* acc = S + BQ * BK;
    T* m = acc + BQ * d;
    T* l = m + BQ;
#pragma omp for schedule(dynamic)
    for (size_t it = 0; it < items.size(); ++it) {
      const Item& w = items[it];
      const QSeg& qsg = qs[w.s];
      const int64_t row0 = qsg.row0 + w.t0, qp0 = qsg.pos0 + w.t0, nq = w.n;
      const T* Q = q + row0 * q_stride + static_cast<int64_t>(w.h) * d;
      const int kvh = w.h / g;
      std::fill(m, m + nq, neg_inf);
      std::fill(l, l + nq, T(0));
      std::fill(acc, acc + nq * d, T(0));
      for (int s = 0; s < nks; ++s) {
        const KvSeg<T>& kv = ks[s];
        for (int64_t k0 = 0; k0 < kv.len; k0 += BK) {
          const int64_t kp0 = kv.pos0 + k0;
          if (kp0 > qp0 + nq - 1) break;
          const int64_t nk = std::min(BK, kv.len - k0);
          const T* K = kv.k + k0 * kv.stride + static_cast<int64_t>(kvh) * d;
          const T* V = kv.v + k0 * kv.stride + static_cast<int64_t>(kvh) * d;
          gemm<T>(Trans::N, Trans::T, nq, nk, d, scale, Q, q_stride, K, kv.stride, T(0), S, BK);
          softmax_tile(S, BK, nq, nk, qp0, kp0, m, l, acc, d);
          gemm<T>(Trans::N, Trans::N, nq, d, nk, T(1), S, BK, V, kv.stride, T(1), acc, d);
        }
      }
      for (int64_t i = 0; i < nq; ++i) {
        T* oi = o + (row0 + i) * q_stride + static_cast<int64_t>(w.h) * d;
        const T inv = l[i] > 0 ? T(1) / l[i] : T(0);
        for (int c = 0; c < d; ++c) oi[c] = acc[i * d + c] * inv;
        lse[static_cast<int64_t>(w.h) * lse_stride + row0 + i] =
            l[i] > 0 ? m[i] + std::log(l[i]) : neg_inf;
      }
    }
  }
}

template <class T>
void flash_attn_bwd(T* dq, const T* dout, const T* q, const T* o, int64_t q_stride, const T* lse,
                    int64_t lse_stride, const QSeg* qs, int nqs, const KvSeg<T>* ks, int nks,
                    AttnShape sh, T scale) {
  const int d = sh.d, g = sh.n_h / sh.n_kv;
  const int nt = omp_get_max_threads();
  const int64_t per = flash_attn_tile_elems(true, d);
  Tensor ws = Tensor::empty_host({nt, per}, dtype_of<T>(), Cat::workspace);  // a CPU kernel: host

#pragma omp parallel
  {
    T* P = ws.data<T>() + omp_get_thread_num() * per;
    T* dP = P + BQ * BK;
    T* Dr = dP + BQ * BK;
#pragma omp for schedule(dynamic)
    for (int kvh = 0; kvh < sh.n_kv; ++kvh) {
      for (int h = kvh * g; h < (kvh + 1) * g; ++h) {
        for (int s = 0; s < nqs; ++s) {
          for (int64_t t0 = 0; t0 < qs[s].len; t0 += BQ) {
            const int64_t nq = std::min(BQ, qs[s].len - t0);
            const int64_t row0 = qs[s].row0 + t0, qp0 = qs[s].pos0 + t0;
            const int64_t hoff = static_cast<int64_t>(h) * d;
            const T* Q = q + row0 * q_stride + hoff;
            const T* dO = dout + row0 * q_stride + hoff;
            T* dQ = dq + row0 * q_stride + hoff;
            const T* L = lse + static_cast<int64_t>(h) * lse_stride + row0;
            for (int64_t i = 0; i < nq; ++i) {
              const T* oi = o + (row0 + i) * q_stride + hoff;
              T acc = 0;
              for (int c = 0; c < d; ++c) acc += dO[i * q_stride + c] * oi[c];
              Dr[i] = acc;
            }
            for (int sk = 0; sk < nks; ++sk) {
              const KvSeg<T>& kv = ks[sk];
              for (int64_t k0 = 0; k0 < kv.len; k0 += BK) {
                const int64_t kp0 = kv.pos0 + k0;
                if (kp0 > qp0 + nq - 1) break;
                const int64_t nk = std::min(BK, kv.len - k0);
                const int64_t koff = k0 * kv.stride + static_cast<int64_t>(kvh) * d;
                const T* K = kv.k + koff;
                const T* V = kv.v + koff;
                gemm<T>(Trans::N, Trans::T, nq, nk, d, scale, Q, q_stride, K, kv.stride, T(0), P,
                        BK);
                probs_tile(P, BK, nq, nk, qp0, kp0, L);
                gemm<T>(Trans::T, Trans::N, nk, d, nq, T(1), P, BK, dO, q_stride, T(1),
                        kv.dv + koff, kv.stride);
                gemm<T>(Trans::N, Trans::T, nq, nk, d, T(1), dO, q_stride, V, kv.stride, T(0), dP,
                        BK);
                dscores_tile(dP, P, BK, nq, nk, Dr);
                gemm<T>(Trans::N, Trans::N, nq, d, nk, scale, dP, BK, K, kv.stride, T(1), dQ,
                        q_stride);
                gemm<T>(Trans::T, Trans::N, nk, d, nq, scale, dP, BK, Q, q_stride, T(1),
                        kv.dk + koff, kv.stride);
              }
            }
          }
        }
      }
    }
  }
}

#define INST(T)                                                                                 \
  template void flash_attn_fwd<T>(T*, T*, int64_t, const T*, int64_t, const QSeg*, int,         \
                                  const KvSeg<T>*, int, AttnShape, T);                          \
  template void flash_attn_bwd<T>(T*, const T*, const T*, const T*, int64_t, const T*, int64_t, \
                                  const QSeg*, int, const KvSeg<T>*, int, AttnShape, T);
INST(float)
INST(double)

}  // namespace origami::cpu
