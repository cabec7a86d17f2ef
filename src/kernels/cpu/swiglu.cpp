// SwiGLU: a = silu(g) * u, silu(g) = g * s, s = sigmoid(g).
//   du = da * silu(g),  dg = da * u * s * (1 + g * (1 - s))
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

namespace origami::cpu {

namespace {
// float: the sigmoid through fast_exp (simd.h), vectorised per ISA; each thread takes a static
// contiguous range, so results do not depend on the thread count.
ORIGAMI_SIMD void swiglu_fwd_f(float* a, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + fast_exp(-g[i]));
    a[i] = g[i] * s * u[i];
  }
}
ORIGAMI_SIMD void swiglu_bwd_f(float* dg, float* du, const float* da, const float* g,
                               const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + fast_exp(-g[i]));
    du[i] = da[i] * g[i] * s;
    dg[i] = da[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}
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
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    T s = T(1) / (T(1) + std::exp(-g[i]));
    a[i] = g[i] * s * u[i];
  }
}

template <class T>
void swiglu_bwd(T* dg, T* du, const T* da, const T* g, const T* u, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    T s = T(1) / (T(1) + std::exp(-g[i]));
    du[i] = da[i] * g[i] * s;
    dg[i] = da[i] * u[i] * s * (T(1) + g[i] * (T(1) - s));
  }
}

template <>
void swiglu_fwd<float>(float* a, const float* g, const float* u, int64_t n) {
  split(n, [&](int64_t lo, int64_t m) { swiglu_fwd_f(a + lo, g + lo, u + lo, m); });
}
template <>
void swiglu_bwd<float>(float* dg, float* du, const float* da, const float* g, const float* u,
                       int64_t n) {
  split(n,
        [&](int64_t lo, int64_t m) { swiglu_bwd_f(dg + lo, du + lo, da + lo, g + lo, u + lo, m); });
}

template void swiglu_fwd<double>(double*, const double*, const double*, int64_t);
template void swiglu_bwd<double>(double*, double*, const double*, const double*, const double*,
                                 int64_t);

}  // namespace origami::cpu
