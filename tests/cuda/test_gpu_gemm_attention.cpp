// cuBLASLt GEMM (every transpose pair, odd sizes, padded leading dimensions, beta 0/1, the linear
// layer helpers) and the tiled attention (zigzag-like segments, GQA, tiles smaller than and larger
// than the segments) against the CPU fp32 kernels; bitwise reruns.
#include "attention_case.h"
#include "gpu_test.h"

namespace origami::cuda::test {
namespace {

template <class T>
class GpuGemm : public ::testing::Test {};
TYPED_TEST_SUITE(GpuGemm, StorageTypes);

TYPED_TEST(GpuGemm, AllTransposesOddSizesPaddedRows) {
  using T = TypeParam;
  const int64_t M = 37, N = 53, K = 71;
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T})
      for (float beta : {0.f, 1.f}) {
        const int64_t ar = ta == Trans::N ? M : K, ac = ta == Trans::N ? K : M;
        const int64_t br = tb == Trans::N ? K : N, bc = tb == Trans::N ? N : K;
        const int64_t lda = ac + 3, ldb = bc + 5, ldc = N + 2;
        auto a = rounded<T>(randn(ar * lda, 21)), b = rounded<T>(randn(br * ldb, 22));
        auto c0 = rounded<T>(randn(M * ldc, 23));
        std::vector<float> c = c0;
        cpu::gemm<float>(ta, tb, M, N, K, 0.5f, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
        auto A = upload<T>(a), B = upload<T>(b), C = upload<T>(c0);
        cuda::gemm<T>(ta, tb, M, N, K, 0.5f, A.get(), lda, B.get(), ldb, beta, C.get(), ldc);
        EXPECT_CLOSE(T, download(C), c)
            << " ta=" << int(ta) << " tb=" << int(tb) << " beta=" << beta;
      }
}

TYPED_TEST(GpuGemm, StridedBatch) {
  using T = TypeParam;
  const int64_t M = 24, N = 40, K = 32, lda = 3 * K, ldb = 3 * K, ldc = N;
  const int count = 3;
  // Members interleaved by columns (A, B: member i at column offset i·K), C members apart.
  auto a = rounded<T>(randn(M * lda, 71)), b = rounded<T>(randn(N * ldb, 72));
  auto c0 = rounded<T>(randn(count * M * ldc, 73));
  std::vector<float> c = c0;
  for (int i = 0; i < count; ++i)
    cpu::gemm<float>(Trans::N, Trans::T, M, N, K, 1.f, a.data() + i * K, lda, b.data() + i * K, ldb,
                     1.f, c.data() + i * M * ldc, ldc);
  auto A = upload<T>(a), B = upload<T>(b), C = upload<T>(c0);
  constexpr DType t = dtype_of<T>();
  gemm_ex(Trans::N, Trans::T, M, N, K, 1.f, A.get(), lda, B.get(), ldb, t, 1.f, C.get(), ldc, t,
          {count, K, K, M * ldc});
  EXPECT_CLOSE(T, download(C), c);
}

TYPED_TEST(GpuGemm, LinearLayerHelpersAndRerun) {
  using T = TypeParam;
  const int64_t M = 96, N = 160, K = 128;
  auto x = rounded<T>(randn(M * K, 31)), w = rounded<T>(randn(N * K, 32, 0.1f));
  auto dy = rounded<T>(randn(M * N, 33)), dx0 = rounded<T>(randn(M * K, 34));
  auto dw0 = rounded<T>(randn(N * K, 35));
  std::vector<float> y(M * N), dx = dx0, dw = dw0;
  cpu::linear_fwd<float>(y.data(), x.data(), w.data(), M, N, K);
  cpu::linear_bwd_x<float>(dx.data(), dy.data(), w.data(), M, N, K);
  cpu::linear_bwd_w<float>(dw.data(), dy.data(), x.data(), M, N, K);
  auto X = upload<T>(x), W = upload<T>(w), DY = upload<T>(dy);
  std::vector<unsigned char> first;
  for (int rep = 0; rep < 2; ++rep) {
    auto Y = poisoned<T>(M * N);
    auto DX = upload<T>(dx0), DW = upload<T>(dw0);
    cuda::linear_fwd<T>(Y.get(), X.get(), W.get(), M, N, K);
    cuda::linear_bwd_x<T>(DX.get(), DY.get(), W.get(), M, N, K);
    cuda::linear_bwd_w<T>(DW.get(), DY.get(), X.get(), M, N, K);
    EXPECT_CLOSE(T, download(Y), y);
    EXPECT_CLOSE(T, download(DX), dx);
    EXPECT_CLOSE(T, download(DW), dw);
    auto b = bytes(DW);
    if (rep == 0)
      first = b;
    else
      EXPECT_EQ(first, b) << "GEMM rerun differs";
  }
}

TYPED_TEST(GpuGemm, AttentionSmallTilesCrossSegments) {
  attention_case<TypeParam>({4, 2, 32, 40, 16, 24}, AttnPath::parity);
}
TYPED_TEST(GpuGemm, AttentionDefaultTilesGqa4) {
  attention_case<TypeParam>({8, 2, 64, 96, 512, 512}, AttnPath::parity);
}
TYPED_TEST(GpuGemm, AttentionHeadDim128) {
  attention_case<TypeParam>({4, 4, 128, 64, 32, 64}, AttnPath::parity);
}
// Packed documents (QSeg::lo, issue 21): a one-token document, documents across the chunks and
// the 16 x 24 tiles, key tiles wholly before a query tile's documents skipped.
TYPED_TEST(GpuGemm, AttentionDocumentMasks) {
  attention_case<TypeParam>({4, 2, 32, 40, 16, 24, 0, true}, AttnPath::parity);
}

}  // namespace
}  // namespace origami::cuda::test
