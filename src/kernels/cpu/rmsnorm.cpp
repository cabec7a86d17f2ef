// RMSNorm (HF LlamaRMSNorm): y = w * n, n = x * rstd, rstd = 1/sqrt(mean(x^2) + eps), statistics
// in double. Backward with gw = w*dy:  dx = rstd * (gw - n * mean(gw * n)),  dw = sum dy*n.
#include <cmath>

#include "kernels/kernels.h"

namespace origami::cpu {

template <class T>
void rmsnorm_fwd(T* y, T* n, T* rstd, const T* x, const T* w, int64_t rows, int64_t h, double eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * h;
    double ss = 0;
    for (int64_t i = 0; i < h; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    T rs = static_cast<T>(1.0 / std::sqrt(ss / h + eps));
    rstd[r] = rs;
    T* yr = y + r * h;
    for (int64_t i = 0; i < h; ++i) yr[i] = w[i] * (xr[i] * rs);
    if (n)
      for (int64_t i = 0; i < h; ++i) n[r * h + i] = xr[i] * rs;
  }
}

template <class T>
void rmsnorm_apply(T* y, const T* n, const T* w, int64_t rows, int64_t h) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < h; ++i) y[r * h + i] = w[i] * n[r * h + i];
}

template <class T>
void rmsnorm_bwd(T* dx, T* dw, const T* dy, const T* n, const T* w, const T* rstd, int64_t rows,
                 int64_t h) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T *nr = n + r * h, *dyr = dy + r * h;
    const T rs = rstd[r];
    double dot = 0;
    for (int64_t i = 0; i < h; ++i) dot += static_cast<double>(w[i] * dyr[i]) * nr[i];
    const T c = static_cast<T>(dot / h);
    T* dxr = dx + r * h;
    for (int64_t i = 0; i < h; ++i) dxr[i] += rs * (w[i] * dyr[i] - nr[i] * c);
  }
  // dw: a fixed-order reduction over rows (deterministic, independent of threads).
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < h; ++i) {
    double acc = 0;
    for (int64_t r = 0; r < rows; ++r) acc += static_cast<double>(dy[r * h + i]) * n[r * h + i];
    dw[i] += static_cast<T>(acc);
  }
}

#define INST(T)                                                                           \
  template void rmsnorm_apply<T>(T*, const T*, const T*, int64_t, int64_t);               \
  template void rmsnorm_fwd<T>(T*, T*, T*, const T*, const T*, int64_t, int64_t, double); \
  template void rmsnorm_bwd<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t, int64_t);
INST(float)
INST(double)

}  // namespace origami::cpu
