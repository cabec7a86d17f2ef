// SwiGLU: a = silu(g) * u, silu(g) = g * s, s = sigmoid(g).
//   du = da * silu(g),  dg = da * u * s * (1 + g * (1 - s))
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

namespace origami::cpu {

namespace {
template <class T>
ORIGAMI_SIMD_INLINE void swiglu_fwd_t(T* a, const T* g, const T* u, int64_t n) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) {
    const A gi = ld(g[i]);
    const A s = A(1) / (A(1) + exp_of(-gi));
    a[i] = st<T>(gi * s * ld(u[i]));
  }
}
template <class T>
ORIGAMI_SIMD_INLINE void swiglu_bwd_t(T* dg, T* du, const T* da, const T* g, const T* u,
                                      int64_t n) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) {
    const A s = A(1) / (A(1) + exp_of(-ld(g[i])));
    du[i] = st<T>(ld(da[i]) * ld(g[i]) * s);
    dg[i] = st<T>(ld(da[i]) * ld(u[i]) * s * (A(1) + ld(g[i]) * (A(1) - s)));
  }
}
// float cloned per ISA (simd.h), double plain
ORIGAMI_SIMD void fwd_range(float* a, const float* g, const float* u, int64_t n) {
  swiglu_fwd_t(a, g, u, n);
}
void fwd_range(double* a, const double* g, const double* u, int64_t n) {
  swiglu_fwd_t(a, g, u, n);
}
ORIGAMI_SIMD void fwd_range(bfloat16* a, const bfloat16* g, const bfloat16* u, int64_t n) {
  swiglu_fwd_t(a, g, u, n);
}
ORIGAMI_SIMD void bwd_range(float* dg, float* du, const float* da, const float* g, const float* u,
                            int64_t n) {
  swiglu_bwd_t(dg, du, da, g, u, n);
}
void bwd_range(double* dg, double* du, const double* da, const double* g, const double* u,
               int64_t n) {
  swiglu_bwd_t(dg, du, da, g, u, n);
}
ORIGAMI_SIMD void bwd_range(bfloat16* dg, bfloat16* du, const bfloat16* da, const bfloat16* g,
                            const bfloat16* u, int64_t n) {
  swiglu_bwd_t(dg, du, da, g, u, n);
}
// Each thread takes a static contiguous range: results do not depend on the thread count.
template <class F>
void split(int64_t n, F f) {
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
    if (hi > lo) f(lo, hi - lo);
  }
}
}  // namespace

template <class T>
void swiglu_fwd(T* a, const T* g, const T* u, int64_t n) {
  split(n, [&](int64_t lo, int64_t m) { fwd_range(a + lo, g + lo, u + lo, m); });
}

template <class T>
void swiglu_bwd(T* dg, T* du, const T* da, const T* g, const T* u, int64_t n) {
  split(n, [&](int64_t lo, int64_t m) { bwd_range(dg + lo, du + lo, da + lo, g + lo, u + lo, m); });
}

template void swiglu_fwd<float>(float*, const float*, const float*, int64_t);
template void swiglu_fwd<double>(double*, const double*, const double*, int64_t);
template void swiglu_bwd<float>(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_bwd<double>(double*, double*, const double*, const double*, const double*,
                                 int64_t);
template void swiglu_fwd<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, int64_t);
template void swiglu_bwd<bfloat16>(bfloat16*, bfloat16*, const bfloat16*, const bfloat16*,
                                   const bfloat16*, int64_t);

}  // namespace origami::cpu
