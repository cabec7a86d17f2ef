// Cross-entropy with online log-sum-exp over vocabulary blocks, so a caller can stream the LM head
// over token chunks (single device) or over vocabulary shards (TSP ring) and never hold
// [tokens x V] logits. Statistics in the element type; the loss sum in double.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

namespace origami::cpu {

namespace {
// Σ_j exp(z_j − c), and d_j = exp(z_j − c)·scale: float cloned per ISA (simd.h), double plain.
ORIGAMI_SIMD float exp_sum(const float* z, float c, int64_t n) {
  return lane_exp_sum<false>(static_cast<float*>(nullptr), z, c, n);
}
double exp_sum(const double* z, double c, int64_t n) {
  return lane_exp_sum<false>(static_cast<double*>(nullptr), z, c, n);
}
template <class T>
ORIGAMI_SIMD_INLINE void exp_scale_t(T* d, const T* z, T c, T scale, int64_t n) {
  for (int64_t j = 0; j < n; ++j) d[j] = exp_of(z[j] - c) * scale;
}
ORIGAMI_SIMD void exp_scale(float* d, const float* z, float c, float scale, int64_t n) {
  exp_scale_t(d, z, c, scale, n);
}
void exp_scale(double* d, const double* z, double c, double scale, int64_t n) {
  exp_scale_t(d, z, c, scale, n);
}
}  // namespace

template <class T>
void ce_init(T* m, T* l, T* zt, int64_t rows) {
  std::fill(m, m + rows, -std::numeric_limits<T>::infinity());
  std::fill(l, l + rows, T(0));
  std::fill(zt, zt + rows, T(0));
}

template <class T>
void ce_update(T* m, T* l, T* zt, const T* z, int64_t rows, int64_t vblk, int64_t v0,
               int64_t v_real, const int64_t* target) {
  const int64_t nv = std::clamp<int64_t>(v_real - v0, 0, vblk);
  if (nv == 0) return;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    if (target[r] < 0) continue;
    const T* zr = z + r * vblk;
    T mx = *std::max_element(zr, zr + nv);
    T mnew = std::max(m[r], mx);
    const T sum = exp_sum(zr, mnew, nv);
    l[r] = l[r] * std::exp(m[r] - mnew) + sum;
    m[r] = mnew;
    if (target[r] >= v0 && target[r] < v0 + nv) zt[r] = zr[target[r] - v0];
  }
}

template <class T>
double ce_finish(T* lse, const T* m, const T* l, const T* zt, int64_t rows, const int64_t* target) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (target[r] < 0) {
      lse[r] = 0;
      continue;
    }
    lse[r] = m[r] + std::log(l[r]);
    total += static_cast<double>(lse[r]) - static_cast<double>(zt[r]);
  }
  return total;
}

template <class T>
void ce_bwd(T* dz, const T* z, const T* lse, int64_t rows, int64_t vblk, int64_t v0, int64_t v_real,
            const int64_t* target, T scale) {
  const int64_t nv = std::clamp<int64_t>(v_real - v0, 0, vblk);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    T* dr = dz + r * vblk;
    if (target[r] < 0) {
      std::fill(dr, dr + vblk, T(0));
      continue;
    }
    const T* zr = z + r * vblk;
    exp_scale(dr, zr, lse[r], scale, nv);
    std::fill(dr + nv, dr + vblk, T(0));
    if (target[r] >= v0 && target[r] < v0 + nv) dr[target[r] - v0] -= scale;
  }
}

#define INST(T)                                                                            \
  template void ce_init<T>(T*, T*, T*, int64_t);                                           \
  template void ce_update<T>(T*, T*, T*, const T*, int64_t, int64_t, int64_t, int64_t,     \
                             const int64_t*);                                              \
  template double ce_finish<T>(T*, const T*, const T*, const T*, int64_t, const int64_t*); \
  template void ce_bwd<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, int64_t,      \
                          const int64_t*, T);
INST(float)
INST(double)

}  // namespace origami::cpu
