// RMSNorm (HF LlamaRMSNorm): y = w * n, n = x * rstd, rstd = 1/sqrt(mean(x^2) + eps), statistics
// in double. Backward with gw = w*dy:  dx = rstd * (gw - n * mean(gw * n)),  dw = sum dy*n.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

namespace origami::cpu {

template <class T, class R>
void rmsnorm_fwd(T* y, T* n, acc_t<T>* rstd, const R* x, const T* w, int64_t rows, int64_t h,
                 double eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const R* xr = x + r * h;
    double ss = 0;
    for (int64_t i = 0; i < h; ++i) ss += static_cast<double>(ld(xr[i])) * ld(xr[i]);
    const acc_t<T> rs = static_cast<acc_t<T>>(1.0 / std::sqrt(ss / h + eps));
    rstd[r] = rs;
    T* yr = y + r * h;
    // y = w·n from n as stored (rounded, under bf16): the y a backward recomputes from the saved
    // n (rmsnorm_apply), and a TP layout from the gathered n, is then the forward's y exactly
    for (int64_t i = 0; i < h; ++i) {
      const T ni = st<T>(ld(xr[i]) * rs);
      yr[i] = st<T>(ld(w[i]) * ld(ni));
      if (n) n[r * h + i] = ni;
    }
  }
}

template <class T>
void rmsnorm_apply(T* y, const T* n, const T* w, int64_t rows, int64_t h) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < h; ++i) y[r * h + i] = st<T>(ld(w[i]) * ld(n[r * h + i]));
}

template <class T, class R>
void rmsnorm_bwd(R* dx, acc_t<T>* dw, const R* dy, const T* n, const T* w, const acc_t<T>* rstd,
                 int64_t rows, int64_t h) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* nr = n + r * h;
    const R* dyr = dy + r * h;
    const acc_t<T> rs = rstd[r];
    double dot = 0;
    for (int64_t i = 0; i < h; ++i) dot += static_cast<double>(ld(w[i]) * ld(dyr[i])) * ld(nr[i]);
    const acc_t<T> c = static_cast<acc_t<T>>(dot / h);
    R* dxr = dx + r * h;
    for (int64_t i = 0; i < h; ++i)
      dxr[i] = st<R>(ld(dxr[i]) + rs * (ld(w[i]) * ld(dyr[i]) - ld(nr[i]) * c));
  }
  // dw: per column a fixed-order sum over rows (deterministic, independent of threads). Rows run
  // outside so that a block of columns' sums advance side by side over contiguous memory (one
  // strided dependent chain per column ran 10x under the memory bound); each column's order of
  // additions is the same, so are its bits.
  constexpr int64_t kCols = 256;
#pragma omp parallel for schedule(static)
  for (int64_t i0 = 0; i0 < h; i0 += kCols) {
    const int64_t nc = std::min(kCols, h - i0);
    double acc[kCols] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const R* dyr = dy + r * h + i0;
      const T* nr = n + r * h + i0;
      for (int64_t c = 0; c < nc; ++c) acc[c] += static_cast<double>(ld(dyr[c])) * ld(nr[c]);
    }
    for (int64_t c = 0; c < nc; ++c) dw[i0 + c] += static_cast<acc_t<T>>(acc[c]);
  }
}

#define INST(T)                                                                                  \
  template void rmsnorm_apply<T>(T*, const T*, const T*, int64_t, int64_t);                      \
  template void rmsnorm_fwd<T>(T*, T*, acc_t<T>*, const T*, const T*, int64_t, int64_t, double); \
  template void rmsnorm_bwd<T>(T*, acc_t<T>*, const T*, const T*, const T*, const acc_t<T>*,     \
                               int64_t, int64_t);
INST(float)
INST(double)
INST(bfloat16)
template void rmsnorm_fwd<bfloat16, float>(bfloat16*, bfloat16*, float*, const float*,
                                           const bfloat16*, int64_t, int64_t, double);
template void rmsnorm_bwd<bfloat16, float>(float*, float*, const float*, const bfloat16*,
                                           const bfloat16*, const float*, int64_t, int64_t);

}  // namespace origami::cpu
