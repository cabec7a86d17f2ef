// RoPE, HF convention: for i < d/2, angle = pos * theta^(-2i/d),
//   y_i       = x_i cos - x_{i+d/2} sin
//   y_{i+d/2} = x_{i+d/2} cos + x_i sin
// The backward applies the transpose rotation (angle -> -angle).
#include <cmath>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

namespace origami::cpu {

template <class T>
void rope_table(T* cos, T* sin, int64_t max_pos, int d, double theta) {
  const int half = d / 2;
  for (int64_t p = 0; p < max_pos; ++p)
    for (int i = 0; i < half; ++i) {
      double a = static_cast<double>(p) * std::pow(theta, -2.0 * i / d);
      cos[p * half + i] = static_cast<T>(std::cos(a));
      sin[p * half + i] = static_cast<T>(std::sin(a));
    }
}

namespace {
template <class T>
void rotate(T* x, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
            const acc_t<T>* cos, const acc_t<T>* sin, acc_t<T> sign) {
  const int half = d / 2;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const acc_t<T>* c = cos + pos[r] * half;
    const acc_t<T>* s = sin + pos[r] * half;
    for (int hd = 0; hd < n_heads; ++hd) {
      T* v = x + r * stride + static_cast<int64_t>(hd) * d;
      for (int i = 0; i < half; ++i) {
        const acc_t<T> a = ld(v[i]), b = ld(v[i + half]), si = sign * s[i];
        v[i] = st<T>(a * c[i] - b * si);
        v[i + half] = st<T>(b * c[i] + a * si);
      }
    }
  }
}
}  // namespace

template <class T>
void rope_fwd(T* x, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const acc_t<T>* cos, const acc_t<T>* sin) {
  rotate<T>(x, stride, pos, rows, n_heads, d, cos, sin, acc_t<T>(1));
}
template <class T>
void rope_bwd(T* dx, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const acc_t<T>* cos, const acc_t<T>* sin) {
  rotate<T>(dx, stride, pos, rows, n_heads, d, cos, sin, acc_t<T>(-1));
}

#define INST(T)                                                                              \
  template void rope_fwd<T>(T*, int64_t, const int64_t*, int64_t, int, int, const acc_t<T>*, \
                            const acc_t<T>*);                                                \
  template void rope_bwd<T>(T*, int64_t, const int64_t*, int64_t, int, int, const acc_t<T>*, \
                            const acc_t<T>*);
template void rope_table<float>(float*, float*, int64_t, int, double);
template void rope_table<double>(double*, double*, int64_t, int, double);
INST(float)
INST(double)
INST(bfloat16)

}  // namespace origami::cpu
