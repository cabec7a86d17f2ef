// OpenBLAS (cblas_sgemm) against oneDNN (dnnl_sgemm), fp32, on the 2048^3 peak shape and the
// shapes one training step of configs/small.json issues (T = tokens per micro-batch). Prints a
// table of GFLOP/s (median of five) and the ratio; the faster one is what src/kernels uses.
#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdio>
#include <vector>

#include "common.h"

using origami::bench::time_median;

int main() {
  struct Shape {
    const char* what;
    char ta, tb;
    int64_t M, N, K;
  };
  const Shape shapes[] = {
      {"peak 2048^3", 'N', 'N', 2048, 2048, 2048},
      {"qkv/o fwd  T=2048 h=512", 'N', 'T', 2048, 512, 512},
      {"gate/up fwd T=2048 I=1536", 'N', 'T', 2048, 1536, 512},
      {"down fwd   T=2048 I=1536", 'N', 'T', 2048, 512, 1536},
      {"dW gate    (I x h, K=T)", 'T', 'N', 1536, 512, 2048},
      {"dX down    T=2048", 'N', 'N', 2048, 1536, 512},
      {"head fwd  T=2048 V=8000", 'N', 'T', 2048, 8000, 512},
  };
  std::printf("threads: %d\n\n", omp_get_max_threads());
  std::printf("| shape | M | N | K | OpenBLAS GFLOP/s | oneDNN GFLOP/s | oneDNN / OpenBLAS |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const auto& s : shapes) {
    const int64_t lda = s.ta == 'N' ? s.K : s.M, ldb = s.tb == 'N' ? s.N : s.K;
    std::vector<float> a(s.M * s.K, 0.5f), b(s.K * s.N, 0.25f), c(s.M * s.N);
    auto blas = [&] {
      cblas_sgemm(CblasRowMajor, s.ta == 'N' ? CblasNoTrans : CblasTrans,
                  s.tb == 'N' ? CblasNoTrans : CblasTrans, s.M, s.N, s.K, 1.0f, a.data(), lda,
                  b.data(), ldb, 0.0f, c.data(), s.N);
    };
    auto dnnl = [&] {
      dnnl_sgemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(),
                 s.N);
    };
    blas();
    dnnl();
    const double fl = 2.0 * s.M * s.N * s.K / 1e9;
    const double gb = fl / time_median(5, blas), gd = fl / time_median(5, dnnl);
    std::printf("| %s | %lld | %lld | %lld | %.1f | %.1f | %.2f |\n", s.what, (long long)s.M,
                (long long)s.N, (long long)s.K, gb, gd, gd / gb);
  }
  return 0;
}
