// Host-side logic of the CUDA backend, run on every machine (no GPU needed): the row-major to
// column-major GEMM mapping that cuBLASLt receives, executed through the CPU BLAS's column-major
// interface and compared with the row-major CPU GEMM; device discovery without a driver.
#include <cblas.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <vector>

#include "cuda/kernels.h"
#include "cuda/runtime.h"

namespace origami::cuda {
namespace {

TEST(CudaHost, RowMajorGemmMapsOntoColumnMajorBlas) {
  std::mt19937 g(7);
  std::normal_distribution<float> nd;
  const int64_t M = 13, N = 29, K = 17;
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T}) {
      const int64_t ar = ta == Trans::N ? M : K, ac = ta == Trans::N ? K : M;
      const int64_t br = tb == Trans::N ? K : N, bc = tb == Trans::N ? N : K;
      const int64_t lda = ac + 2, ldb = bc + 3, ldc = N + 1;
      std::vector<float> a(ar * lda), b(br * ldb), c0(M * ldc);
      for (auto* v : {&a, &b, &c0})
        for (auto& x : *v) x = nd(g);
      std::vector<float> ref = c0, got = c0;
      cpu::gemm<float>(ta, tb, M, N, K, 0.75f, a.data(), lda, b.data(), ldb, 0.5f, ref.data(), ldc);
      const ColMajorGemm m = map_row_major(ta, tb, M, N, K, lda, ldb, ldc);
      // The stored shapes cuBLASLt is told must fit the leading dimensions.
      EXPECT_GE(m.lda, m.a_rows);
      EXPECT_GE(m.ldb, m.b_rows);
      EXPECT_EQ(m.a_rows * m.a_cols, N * K);
      EXPECT_EQ(m.b_rows * m.b_cols, M * K);
      cblas_sgemm(CblasColMajor, m.trans_a ? CblasTrans : CblasNoTrans,
                  m.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m.m),
                  static_cast<int>(m.n), static_cast<int>(m.k), 0.75f, b.data(),
                  static_cast<int>(m.lda), a.data(), static_cast<int>(m.ldb), 0.5f, got.data(),
                  static_cast<int>(m.ldc));
      for (size_t i = 0; i < ref.size(); ++i)
        ASSERT_NEAR(got[i], ref[i], 1e-4) << "ta=" << int(ta) << " tb=" << int(tb) << " i=" << i;
    }
}

// The skip path of every GPU test: with no device visible (hidden here, so this holds on a GPU
// machine too, as long as nothing in this process initialised the CUDA runtime before), the count
// is 0, not an exception or an abort.
TEST(CudaHost, NoVisibleDeviceCountsZero) {
  ASSERT_EQ(setenv("CUDA_VISIBLE_DEVICES", "", 1), 0);
  EXPECT_EQ(device_count(), 0);
}

}  // namespace
}  // namespace origami::cuda
