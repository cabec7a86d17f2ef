// cuBLASLt GEMM (every transpose pair, odd sizes, padded leading dimensions, beta 0/1, the linear
// layer helpers) and the tiled attention (zigzag-like segments, GQA, tiles smaller than and larger
// than the segments) against the CPU fp32 kernels; bitwise reruns.
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

// A zigzag-like call: this rank's queries are two chunks of the sequence (rows 0..c-1 at
// positions [r c, (r+1) c), rows c..2c-1 at [(2D-1-r) c, (2D-r) c)), keys in three segments.
struct AttnCase {
  int n_h, n_kv, d;
  int64_t c;
  int bq, bk;
};

template <class T>
void attention_case(const AttnCase& ac) {
  const int n_h = ac.n_h, n_kv = ac.n_kv, d = ac.d;
  const int64_t c = ac.c, D = 2, r = 0;
  const int64_t rows = 2 * c, q_stride = n_h * d + 16, kv_stride = n_kv * d + 8;
  std::vector<QSeg> qs = {{0, r * c, c}, {c, (2 * D - 1 - r) * c, c}};
  // Keys: positions [0, c), [c, 3c) and [3c, 4c) held in three buffers.
  std::vector<int64_t> kpos = {0, c, 3 * c}, klen = {c, 2 * c, c};
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  auto q = rounded<T>(randn(rows * q_stride, 41)), dout = rounded<T>(randn(rows * q_stride, 42));
  std::vector<std::vector<float>> k, v;
  for (int s = 0; s < 3; ++s) {
    k.push_back(rounded<T>(randn(klen[s] * kv_stride, 50 + s)));
    v.push_back(rounded<T>(randn(klen[s] * kv_stride, 60 + s)));
  }
  // CPU reference (fp32).
  std::vector<float> o(rows * q_stride, 0.f), lse(n_h * rows), dq(rows * q_stride, 0.f);
  std::vector<std::vector<float>> dk, dv;
  std::vector<cpu::KvSeg<float>> cks;
  for (int s = 0; s < 3; ++s) {
    dk.emplace_back(klen[s] * kv_stride, 0.f);
    dv.emplace_back(klen[s] * kv_stride, 0.f);
  }
  for (int s = 0; s < 3; ++s)
    cks.push_back(
        {k[s].data(), v[s].data(), kv_stride, kpos[s], klen[s], dk[s].data(), dv[s].data()});
  cpu::flash_attn_fwd<float>(o.data(), lse.data(), rows, q.data(), q_stride, qs.data(), 2,
                             cks.data(), 3, {n_h, n_kv, d}, scale);
  auto o_r = rounded<T>(o);  // the backward consumes the stored output
  cpu::flash_attn_bwd<float>(dq.data(), dout.data(), q.data(), o_r.data(), q_stride, lse.data(),
                             rows, qs.data(), 2, cks.data(), 3, {n_h, n_kv, d}, scale);

  set_attention_tiles(ac.bq, ac.bk);
  auto Q = upload<T>(q), DO = upload<T>(dout), OR = upload<T>(o_r);
  std::vector<DBuf<T>> K, V, DK, DV;
  for (int s = 0; s < 3; ++s) {
    K.push_back(upload<T>(k[s]));
    V.push_back(upload<T>(v[s]));
  }
  std::vector<unsigned char> first_o, first_dq;
  for (int rep = 0; rep < 2; ++rep) {
    DK.clear(), DV.clear();
    std::vector<KvSeg<T>> gks;
    for (int s = 0; s < 3; ++s) {
      DK.push_back(upload<T>(std::vector<float>(klen[s] * kv_stride, 0.f)));
      DV.push_back(upload<T>(std::vector<float>(klen[s] * kv_stride, 0.f)));
      gks.push_back(
          {K[s].get(), V[s].get(), kv_stride, kpos[s], klen[s], DK[s].get(), DV[s].get()});
    }
    auto O = upload<T>(std::vector<float>(rows * q_stride, 0.f));
    auto LSE = poisoned<float>(n_h * rows);
    auto DQ = upload<T>(std::vector<float>(rows * q_stride, 0.f));
    cuda::flash_attn_fwd<T>(O.get(), LSE.get(), rows, Q.get(), q_stride, qs.data(), 2, gks.data(),
                            3, {n_h, n_kv, d}, scale);
    cuda::flash_attn_bwd<T>(DQ.get(), DO.get(), Q.get(), OR.get(), q_stride, LSE.get(), rows,
                            qs.data(), 2, gks.data(), 3, {n_h, n_kv, d}, scale);
    EXPECT_CLOSE(T, download(O), o);
    EXPECT_LE(rel_err(download(LSE), lse), (std::is_same_v<T, float> ? 1e-6 : 1e-3));
    EXPECT_CLOSE(T, download(DQ), dq);
    for (int s = 0; s < 3; ++s) {
      EXPECT_CLOSE(T, download(DK[s]), dk[s]) << " segment " << s;
      EXPECT_CLOSE(T, download(DV[s]), dv[s]) << " segment " << s;
    }
    if (rep == 0)
      first_o = bytes(O), first_dq = bytes(DQ);
    else {
      EXPECT_EQ(first_o, bytes(O)) << "attention forward rerun differs";
      EXPECT_EQ(first_dq, bytes(DQ)) << "attention backward rerun differs";
    }
  }
  set_attention_tiles(512, 512);
}

TYPED_TEST(GpuGemm, AttentionSmallTilesCrossSegments) {
  attention_case<TypeParam>({4, 2, 32, 40, 16, 24});
}
TYPED_TEST(GpuGemm, AttentionDefaultTilesGqa4) {
  attention_case<TypeParam>({8, 2, 64, 96, 512, 512});
}
TYPED_TEST(GpuGemm, AttentionHeadDim128) {
  attention_case<TypeParam>({4, 4, 128, 64, 32, 64});
}

}  // namespace
}  // namespace origami::cuda::test
