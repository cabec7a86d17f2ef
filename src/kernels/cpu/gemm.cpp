// GEMM through a BLAS: fp32 through oneDNN (dnnl_sgemm) by default, or OpenBLAS with
// ORIGAMI_GEMM=openblas; fp64 (finite-difference tests only) through OpenBLAS. Both are measured
// side by side by bench/gemm_backends and bench/step_bench.py; oneDNN was the faster one here
// (docs/results.md).
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "kernels/kernels.h"

namespace origami::cpu {

namespace {
CBLAS_TRANSPOSE tr(Trans t) {
  return t == Trans::N ? CblasNoTrans : CblasTrans;
}

bool use_onednn() {
  static const bool v = [] {
    const char* e = std::getenv("ORIGAMI_GEMM");
    if (!e || !*e || !std::strcmp(e, "onednn")) return true;
    if (!std::strcmp(e, "openblas")) return false;
    fail("ORIGAMI_GEMM=", e, " is not one of: onednn, openblas");
  }();
  return v;
}
}  // namespace

const char* gemm_backend() {
  return use_onednn() ? "onednn" : "openblas";
}

template <>
void gemm<float>(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (use_onednn()) {
    const dnnl_status_t st = dnnl_sgemm(ta == Trans::N ? 'N' : 'T', tb == Trans::N ? 'N' : 'T', M,
                                        N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (st != dnnl_success) fail("dnnl_sgemm failed with status ", static_cast<int>(st));
    return;
  }
  cblas_sgemm(CblasRowMajor, tr(ta), tr(tb), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <>
void gemm<double>(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, double alpha,
                  const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                  double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_dgemm(CblasRowMajor, tr(ta), tr(tb), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <class T>
void linear_fwd(T* y, const T* x, const T* W, int64_t M, int64_t N, int64_t K, T beta) {
  gemm<T>(Trans::N, Trans::T, M, N, K, 1, x, K, W, K, beta, y, N);
}
template <class T>
void linear_bwd_x(T* dx, const T* dy, const T* W, int64_t M, int64_t N, int64_t K) {
  gemm<T>(Trans::N, Trans::N, M, K, N, 1, dy, N, W, K, 1, dx, K);
}
template <class T>
void linear_bwd_w(T* dW, const T* dy, const T* x, int64_t M, int64_t N, int64_t K) {
  gemm<T>(Trans::T, Trans::N, N, K, M, 1, dy, N, x, K, 1, dW, K);
}

#define INST(T)                                                                      \
  template void linear_fwd<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, T); \
  template void linear_bwd_x<T>(T*, const T*, const T*, int64_t, int64_t, int64_t);  \
  template void linear_bwd_w<T>(T*, const T*, const T*, int64_t, int64_t, int64_t);
INST(float)
INST(double)

}  // namespace origami::cpu
