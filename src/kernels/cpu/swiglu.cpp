// SwiGLU: a = silu(g) * u, silu(g) = g * s, s = sigmoid(g).
//   du = da * silu(g),  dg = da * u * s * (1 + g * (1 - s))
#include <cmath>

#include "kernels/kernels.h"

namespace origami::cpu {

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

template void swiglu_fwd<float>(float*, const float*, const float*, int64_t);
template void swiglu_fwd<double>(double*, const double*, const double*, int64_t);
template void swiglu_bwd<float>(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_bwd<double>(double*, double*, const double*, const double*, const double*,
                                 int64_t);

}  // namespace origami::cpu
