// AdamW exactly as torch.optim.AdamW (decoupled decay p *= 1 - lr*wd, bias-corrected moments,
// eps added after dividing sqrt(v) by sqrt(1 - beta2^t)), and the pieces of global-norm clipping.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

namespace origami::cpu {

template <class T>
void adamw_step(T* p, const T* g, T* m, T* v, int64_t n, const AdamW& h, int64_t step) {
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
  const T step_size = static_cast<T>(h.lr / bc1);
  const T bc2_sqrt = static_cast<T>(std::sqrt(bc2));
  const T decay = static_cast<T>(1.0 - h.lr * h.weight_decay);
  const T b1 = static_cast<T>(h.beta1), b2 = static_cast<T>(h.beta2), eps = static_cast<T>(h.eps);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (h.weight_decay != 0) p[i] *= decay;
    m[i] = b1 * m[i] + (T(1) - b1) * g[i];
    v[i] = b2 * v[i] + (T(1) - b2) * g[i] * g[i];
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

template <class T>
double sum_squares(const T* x, int64_t n) {
  // Fixed-order blocked sum: independent of the thread count.
  constexpr int64_t kBlock = 4096;
  const int64_t nb = (n + kBlock - 1) / kBlock;
  std::vector<double> part(static_cast<size_t>(nb));
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b) {
    double s = 0;
    for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i)
      s += static_cast<double>(x[i]) * x[i];
    part[static_cast<size_t>(b)] = s;
  }
  double s = 0;
  for (double v : part) s += v;
  return s;
}

template <class T>
void scale_inplace(T* x, int64_t n, T s) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

template <class T>
void add_inplace(T* y, const T* x, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = st<T>(ld(y[i]) + ld(x[i]));
}

template <class D, class S>
void convert(D* dst, const S* src, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = st<D>(ld(src[i]));
}

template <class T, class D>
void index_copy_rows(D* dst, const T* src, const int64_t* dst_rows, const int64_t* src_rows,
                     int64_t n, int64_t w) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    D* y = dst + (dst_rows ? dst_rows[i] : i) * w;
    const T* x = src + (src_rows ? src_rows[i] : i) * w;
    if constexpr (std::is_same_v<T, D>)
      std::memcpy(y, x, sizeof(T) * static_cast<size_t>(w));
    else
      for (int64_t c = 0; c < w; ++c) y[c] = st<D>(ld(x[c]));
  }
}

template <class T>
void index_add_rows(acc_t<T>* dst, const T* src, const int64_t* dst_rows, const int64_t* src_rows,
                    int64_t n, int64_t w) {
  // Threads take column blocks; each walks the rows in order of i (the sum order of a row).
  constexpr int64_t kCols = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < w; c0 += kCols) {
    const int64_t c1 = std::min(w, c0 + kCols);
    for (int64_t i = 0; i < n; ++i) {
      acc_t<T>* y = dst + (dst_rows ? dst_rows[i] : i) * w;
      const T* x = src + (src_rows ? src_rows[i] : i) * w;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) y[c] += ld(x[c]);
    }
  }
}

#define INST(T)                                                                           \
  template void adamw_step<T>(T*, const T*, T*, T*, int64_t, const AdamW&, int64_t);      \
  template double sum_squares<T>(const T*, int64_t);                                      \
  template void scale_inplace<T>(T*, int64_t, T);                                         \
  template void add_inplace<T>(T*, const T*, int64_t);                                    \
  template void index_copy_rows<T>(T*, const T*, const int64_t*, const int64_t*, int64_t, \
                                   int64_t);                                              \
  template void index_add_rows<T>(T*, const T*, const int64_t*, const int64_t*, int64_t, int64_t);
INST(float)
INST(double)
template void add_inplace<bfloat16>(bfloat16*, const bfloat16*, int64_t);
template void index_copy_rows<bfloat16>(bfloat16*, const bfloat16*, const int64_t*, const int64_t*,
                                        int64_t, int64_t);
template void index_copy_rows<bfloat16, float>(float*, const bfloat16*, const int64_t*,
                                               const int64_t*, int64_t, int64_t);
template void index_add_rows<bfloat16>(float*, const bfloat16*, const int64_t*, const int64_t*,
                                       int64_t, int64_t);
template void convert<bfloat16, float>(bfloat16*, const float*, int64_t);
template void convert<float, bfloat16>(float*, const bfloat16*, int64_t);

}  // namespace origami::cpu
