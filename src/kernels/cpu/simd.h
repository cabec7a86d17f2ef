// Elementwise helpers of the CPU kernels (attention score tiles, SwiGLU, the LM head's
// log-sum-exp), written so that the compiler vectorises them. A kernel writes its loop once as a
// template over these helpers and instantiates it twice: for float inside an ORIGAMI_SIMD
// function, which GCC clones for AVX-512, AVX2+FMA and baseline x86-64 and picks at load time
// (target_clones; the build has no -march), and for double (the tests' reference precision,
// libm exp). Float results can differ in the last bits between those machines (FMA contraction),
// never between runs or thread counts on one machine.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

// Not under ThreadSanitizer: a clone's resolver runs during relocation, before the sanitizer's
// runtime is up, and crashes there (tools/sanitize.sh tsan).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define ORIGAMI_SIMD __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ORIGAMI_SIMD
#endif
// For everything an ORIGAMI_SIMD function calls: GCC does not inline an ordinary function into a
// clone with other target options, and an out-of-line baseline copy runs at SSE2 speed (the
// flash forward fell from 48% to 20% of peak that way).
#define ORIGAMI_SIMD_INLINE __attribute__((always_inline)) inline

#include "core/dtype.h"

namespace origami::cpu {

// Loads and stores of an element: the identity for float and double; bf16 widens to fp32 on the
// way in and rounds to nearest even on the way out (so one loop serves all three types).
ORIGAMI_SIMD_INLINE float ld(bfloat16 x) {
  return to_float(x);
}
ORIGAMI_SIMD_INLINE float ld(float x) {
  return x;
}
ORIGAMI_SIMD_INLINE double ld(double x) {
  return x;
}
template <class T, class V>
ORIGAMI_SIMD_INLINE T st(V v) {
  if constexpr (std::is_same_v<T, bfloat16>)
    return to_bf16(v);
  else
    return v;
}

// exp(x) without a libm call: x·log2(e) = n + f with n rounded to nearest, exp(x) = 2ⁿ·exp(r),
// r = x − n·ln2 in two parts (Cody–Waite), exp(r) by Cephes' degree-6 polynomial on
// |r| ≤ ln2/2. Relative error ≤ 2e-7 on [−87, 88]; inputs are clamped to [−87.3, 88.3], so
// very negative ones give ≈ 1e-38, not 0 (callers zero masked entries themselves). Branch-free, so
// loops over it vectorise.
ORIGAMI_SIMD_INLINE float fast_exp(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;  // keeps 2ⁿ finite (n ≤ 127)
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5·2²³ trick)
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(e);
}

ORIGAMI_SIMD_INLINE float exp_of(float x) {
  return fast_exp(x);
}
ORIGAMI_SIMD_INLINE double exp_of(double x) {
  return std::exp(x);
}

// Fixed-order reductions in 16 lanes: vectorisable without -ffast-math, and the order (so the
// result) does not depend on the instruction set's vector width.
constexpr int kLanes = 16;
template <class T>
ORIGAMI_SIMD_INLINE T lane_max(const T* x, int64_t n) {
  T p[kLanes];
  for (int k = 0; k < kLanes; ++k) p[k] = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) p[k] = p[k] > x[j + k] ? p[k] : x[j + k];
  for (int k = 0; j < n; ++j, ++k) p[k] = p[k] > x[j] ? p[k] : x[j];
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) p[k] = p[k] > p[k + w] ? p[k] : p[k + w];
  return p[0];
}
// Σ_j exp(x[j] − c) for j < n; with kStore also out[j] = exp(x[j] − c) (out may be x).
template <bool kStore, class T>
ORIGAMI_SIMD_INLINE T lane_exp_sum(T* out, const T* x, T c, int64_t n) {
  T p[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const T e = exp_of(x[j + k] - c);
      if constexpr (kStore) out[j + k] = e;
      p[k] += e;
    }
  for (int k = 0; j < n; ++j, ++k) {
    const T e = exp_of(x[j] - c);
    if constexpr (kStore) out[j] = e;
    p[k] += e;
  }
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) p[k] += p[k + w];
  return p[0];
}

}  // namespace origami::cpu
