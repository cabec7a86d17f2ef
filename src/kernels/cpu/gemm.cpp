// GEMM through OpenBLAS (cblas). bench/gemm_backends compares it with oneDNN on this machine.
#include <cblas.h>

#include "kernels/kernels.h"

namespace origami::cpu {

namespace {
CBLAS_TRANSPOSE tr(Trans t) { return t == Trans::N ? CblasNoTrans : CblasTrans; }
}  // namespace

template <>
void gemm<float>(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
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

#define INST(T)                                                                     \
  template void linear_fwd<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, T); \
  template void linear_bwd_x<T>(T*, const T*, const T*, int64_t, int64_t, int64_t);  \
  template void linear_bwd_w<T>(T*, const T*, const T*, int64_t, int64_t, int64_t);
INST(float)
INST(double)

}  // namespace origami::cpu
