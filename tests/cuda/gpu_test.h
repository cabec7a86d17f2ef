// Helpers for the GPU tests: host <-> device copies through fp32 vectors whatever the storage type,
// poisoned outputs (NaN bytes) so a kernel that skips an element fails, norm-wise errors.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/kernels.h"
#include "cuda/runtime.h"

namespace origami::cuda::test {

// The storage types every kernel is instantiated for (the typed test suites' parameter).
using StorageTypes = ::testing::Types<float, bf16>;

template <class T>
T to_t(float v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return __float2bfloat16(v);
}
template <class T>
float from_t(T v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return __bfloat162float(v);
}

// The values as T holds them (what the device kernel really sees).
template <class T>
std::vector<float> rounded(std::vector<float> v) {
  for (auto& x : v) x = from_t(to_t<T>(x));
  return v;
}

template <class T>
DBuf<T> upload(const std::vector<float>& h) {
  std::vector<T> t(h.size());
  for (size_t i = 0; i < h.size(); ++i) t[i] = to_t<T>(h[i]);
  DBuf<T> d(static_cast<int64_t>(h.size()), Cat::activations);
  to_device(d.get(), t.data(), t.size() * sizeof(T));
  return d;
}
inline DBuf<int64_t> upload_i64(const std::vector<int64_t>& h) {
  DBuf<int64_t> d(static_cast<int64_t>(h.size()), Cat::activations);
  to_device(d.get(), h.data(), h.size() * sizeof(int64_t));
  return d;
}

template <class T>
std::vector<float> download(const T* d, int64_t n) {
  std::vector<T> t(static_cast<size_t>(n));
  to_host(t.data(), d, t.size() * sizeof(T));
  std::vector<float> h(t.size());
  for (size_t i = 0; i < t.size(); ++i) h[i] = from_t(t[i]);
  return h;
}
template <class T>
std::vector<float> download(const DBuf<T>& d) {
  return download(d.get(), d.size());
}
// Raw bytes, for bitwise comparisons of reruns.
template <class T>
std::vector<unsigned char> bytes(const DBuf<T>& d) {
  std::vector<unsigned char> b(static_cast<size_t>(d.size()) * sizeof(T));
  to_host(b.data(), d.get(), b.size());
  return b;
}

template <class T>
DBuf<T> poisoned(int64_t n, Cat c = Cat::activations) {
  DBuf<T> d(n, c);
  ORIGAMI_CUDA_CHECK(cudaMemsetAsync(d.get(), 0xFF, n * sizeof(T), current_stream()));
  return d;
}

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// ‖out − ref‖ / ‖ref‖ (NaN anywhere in out gives NaN, which fails every bound).
inline double rel_err(const std::vector<float>& out, const std::vector<float>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size() && i < out.size(); ++i) {
    const double e = static_cast<double>(out[i]) - ref[i];
    num += e * e;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

// fp32 kernels against the fp32 CPU reference; bf16 storage against fp32 on the rounded inputs.
template <class T>
constexpr double tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-2;
}

#define EXPECT_CLOSE(T, out, ref) \
  EXPECT_LE(::origami::cuda::test::rel_err(out, ref), ::origami::cuda::test::tol<T>()) << #out

}  // namespace origami::cuda::test
