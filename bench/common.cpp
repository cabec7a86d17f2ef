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

}  // namespace origami::bench
