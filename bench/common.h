// Shared by the benchmarks: wall-clock medians and the GEMM peak of tsp-spec §10
// (median of five 2048^3 sgemm in the same process with the same threads).
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace origami::bench {

inline double time_median(int reps, const std::function<void()>& f) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double gemm_peak_gflops();       // fp32 GEMM (cpu::gemm) 2048^3, median of five (after one warm-up)
double gemm_bf16_peak_gflops();  // bf16 GEMM (cpu::gemm_bf16, fp32 output) 2048^3, likewise

}  // namespace origami::bench
