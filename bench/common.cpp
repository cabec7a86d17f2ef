#include "common.h"

#include <vector>

#include "kernels/kernels.h"

namespace origami::bench {

double gemm_peak_gflops() {
  const int64_t n = 2048;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  auto run = [&] {
    cpu::gemm<float>(cpu::Trans::N, cpu::Trans::N, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                     c.data(), n);
  };
  run();
  return 2.0 * n * n * n / time_median(5, run) / 1e9;
}

double gemm_bf16_peak_gflops() {
  const int64_t n = 2048;
  std::vector<bfloat16> a(n * n, to_bf16(0.5f)), b(n * n, to_bf16(0.25f));
  std::vector<float> c(n * n);
  auto run = [&] {
    cpu::gemm_bf16(cpu::Trans::N, cpu::Trans::N, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                   c.data(), DType::f32, n);
  };
  run();
  return 2.0 * n * n * n / time_median(5, run) / 1e9;
}

}  // namespace origami::bench
