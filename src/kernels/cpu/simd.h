// Elementwise helpers for the attention kernels' score tiles, written so that the compiler
// vectorises them, and compiled per instruction set: ORIGAMI_SIMD clones a function for AVX-512,
// AVX2+FMA and baseline x86-64, chosen once at load time (GCC target_clones; the build has no
// -march). Results can differ in the last bits between those machines (FMA contraction), never
// between runs or thread counts on one machine.
#pragma once
#include <bit>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ORIGAMI_SIMD __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ORIGAMI_SIMD
#endif

namespace origami::cpu {

// exp(x) without a libm call: x·log2(e) = n + f with n rounded to nearest, exp(x) = 2ⁿ·exp(r),
// r = x − n·ln2 in two parts (Cody–Waite), exp(r) by Cephes' degree-6 polynomial on
// |r| ≤ ln2/2. Relative error ≤ 2e-7 on [−87, 88]; inputs are clamped to [−87.3, 88.3], so
// very negative ones give ≈ 1e-38, not 0 (callers zero masked entries themselves). Branch-free, so
// loops over it vectorise.
inline float fast_exp(float x) {
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

}  // namespace origami::cpu
