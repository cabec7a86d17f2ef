// Every elementwise/reduction kernel of the CUDA backend against the CPU fp32 kernels, for fp32
// (≤ 1e-5 norm-wise) and bf16 storage (≤ 1e-2, reference on the rounded inputs); outputs are
// poisoned with NaN bytes first; accumulating kernels start from non-zero outputs; every kernel is
// rerun and must give the same bytes.
#include <algorithm>
#include <numeric>

#include "gpu_test.h"

namespace origami::cuda::test {
namespace {

template <class T>
class GpuKernels : public ::testing::Test {};
TYPED_TEST_SUITE(GpuKernels, StorageTypes);

TYPED_TEST(GpuKernels, RmsNormForwardBackward) {
  using T = TypeParam;
  // h = 300: not a multiple of the block (bf16: nor of the 16-byte pack, so the scalar kernel);
  // h = 256: the pack kernel for both types. rows: not a multiple of the dw chunk.
  for (const int64_t h : {300, 256}) {
    const int64_t rows = 37;
    auto x = rounded<T>(randn(rows * h, 1)), w = rounded<T>(randn(h, 2));
    auto dy = rounded<T>(randn(rows * h, 3)), dx0 = rounded<T>(randn(rows * h, 4, 0.1f));
    auto dw0 = rounded<T>(randn(h, 5, 0.1f));
    std::vector<float> y(rows * h), n(rows * h), rs(rows), dx = dx0, dw = dw0, ya(rows * h);
    cpu::rmsnorm_fwd<float>(y.data(), n.data(), rs.data(), x.data(), w.data(), rows, h, 1e-5);
    auto nr = rounded<T>(n);  // backward sees the stored (rounded) normalised input
    cpu::rmsnorm_bwd<float>(dx.data(), dw.data(), dy.data(), nr.data(), w.data(), rs.data(), rows,
                            h);
    cpu::rmsnorm_apply<float>(ya.data(), nr.data(), w.data(), rows, h);

    auto X = upload<T>(x), W = upload<T>(w), DY = upload<T>(dy);
    auto Y = poisoned<T>(rows * h), N = poisoned<T>(rows * h), YA = poisoned<T>(rows * h);
    auto RS = poisoned<float>(rows);
    rmsnorm_fwd<T>(Y.get(), N.get(), RS.get(), X.get(), W.get(), rows, h, 1e-5);
    EXPECT_CLOSE(T, download(Y), y);
    EXPECT_CLOSE(T, download(N), n);
    EXPECT_LE(rel_err(download(RS), rs), 1e-6);
    rmsnorm_apply<T>(YA.get(), N.get(), W.get(), rows, h);
    EXPECT_CLOSE(T, download(YA), ya);
    auto NR = upload<T>(nr);
    auto RSd = upload<float>(rs);
    std::vector<unsigned char> first;
    for (int rep = 0; rep < 2; ++rep) {
      auto DX = upload<T>(dx0), DW = upload<T>(dw0);
      rmsnorm_bwd<T>(DX.get(), DW.get(), DY.get(), NR.get(), W.get(), RSd.get(), rows, h);
      EXPECT_CLOSE(T, download(DX), dx);
      EXPECT_CLOSE(T, download(DW), dw);
      auto b = bytes(DW);
      if (rep == 0)
        first = b;
      else
        EXPECT_EQ(first, b) << "rmsnorm dw is not bitwise reproducible";
    }
  }
}

TYPED_TEST(GpuKernels, RopeAtGlobalPositions) {
  using T = TypeParam;
  const int n_heads = 3, d = 16, max_pos = 4096;
  const int64_t rows = 10, stride = n_heads * d + 8;  // padded rows: the pad must stay untouched
  std::vector<int64_t> pos = {0, 1, 2, 3, 1000, 1001, 4095, 7, 2048, 3000};
  std::vector<float> cs(max_pos * d / 2), sn(max_pos * d / 2);
  cpu::rope_table<float>(cs.data(), sn.data(), max_pos, d, 10000.0);
  auto x = rounded<T>(randn(rows * stride, 7));
  auto ref = x, back = x;
  cpu::rope_fwd<float>(ref.data(), stride, pos.data(), rows, n_heads, d, cs.data(), sn.data());
  cpu::rope_bwd<float>(back.data(), stride, pos.data(), rows, n_heads, d, cs.data(), sn.data());
  auto C = upload<float>(cs), S = upload<float>(sn);
  auto P = upload_i64(pos);
  auto X = upload<T>(x), B = upload<T>(x);
  rope_fwd<T>(X.get(), stride, P.get(), rows, n_heads, d, C.get(), S.get());
  rope_bwd<T>(B.get(), stride, P.get(), rows, n_heads, d, C.get(), S.get());
  EXPECT_CLOSE(T, download(X), ref);
  EXPECT_CLOSE(T, download(B), back);
}

TYPED_TEST(GpuKernels, SwiGlu) {
  using T = TypeParam;
  // 10007: the scalar kernels; 8192 (aligned buffers): the 16-byte pack kernels.
  for (int64_t n : {10007, 8192}) {
    auto g = rounded<T>(randn(n, 8, 3.f)), u = rounded<T>(randn(n, 9)),
         da = rounded<T>(randn(n, 10));
    std::vector<float> a(n), dg(n), du(n);
    cpu::swiglu_fwd<float>(a.data(), g.data(), u.data(), n);
    cpu::swiglu_bwd<float>(dg.data(), du.data(), da.data(), g.data(), u.data(), n);
    auto G = upload<T>(g), U = upload<T>(u), DA = upload<T>(da);
    auto A = poisoned<T>(n), DG = poisoned<T>(n), DU = poisoned<T>(n);
    swiglu_fwd<T>(A.get(), G.get(), U.get(), n);
    swiglu_bwd<T>(DG.get(), DU.get(), DA.get(), G.get(), U.get(), n);
    EXPECT_CLOSE(T, download(A), a) << " n=" << n;
    EXPECT_CLOSE(T, download(DG), dg) << " n=" << n;
    EXPECT_CLOSE(T, download(DU), du) << " n=" << n;
  }
}

TYPED_TEST(GpuKernels, CrossEntropyOverVocabularyBlocks) {
  using T = TypeParam;
  // Two blocks of 300 columns over a vocabulary of 517 (83 padding columns), 2 ignored rows.
  const int64_t rows = 21, vblk = 300, v_real = 517;
  std::vector<int64_t> target(rows);
  for (int64_t r = 0; r < rows; ++r) target[r] = (r * 97) % v_real;
  target[3] = -1, target[11] = -1, target[5] = 299, target[6] = 300, target[7] = 516;
  std::vector<std::vector<float>> z = {rounded<T>(randn(rows * vblk, 11, 4.f)),
                                       rounded<T>(randn(rows * vblk, 12, 4.f))};
  std::vector<float> m(rows), l(rows), zt(rows), lse(rows);
  cpu::ce_init<float>(m.data(), l.data(), zt.data(), rows);
  for (int b = 0; b < 2; ++b)
    cpu::ce_update<float>(m.data(), l.data(), zt.data(), z[b].data(), rows, vblk, b * vblk, v_real,
                          target.data());
  const double loss =
      cpu::ce_finish<float>(lse.data(), m.data(), l.data(), zt.data(), rows, target.data());
  auto M = poisoned<float>(rows), L = poisoned<float>(rows), ZT = poisoned<float>(rows),
       LSE = poisoned<float>(rows);
  auto TG = upload_i64(target);
  std::vector<DBuf<T>> Z;
  for (int b = 0; b < 2; ++b) Z.push_back(upload<T>(z[b]));
  ce_init(M.get(), L.get(), ZT.get(), rows);
  for (int b = 0; b < 2; ++b)
    ce_update<T>(M.get(), L.get(), ZT.get(), Z[b].get(), rows, vblk, b * vblk, v_real, TG.get());
  const double gloss = ce_finish(LSE.get(), M.get(), L.get(), ZT.get(), rows, TG.get());
  EXPECT_NEAR(gloss, loss, 1e-5 * std::abs(loss));
  EXPECT_LE(rel_err(download(LSE), lse), 1e-6);
  for (int b = 0; b < 2; ++b) {
    std::vector<float> dz(rows * vblk);
    cpu::ce_bwd<float>(dz.data(), z[b].data(), lse.data(), rows, vblk, b * vblk, v_real,
                       target.data(), 0.05f);
    auto DZ = poisoned<T>(rows * vblk);
    ce_bwd<T>(DZ.get(), Z[b].get(), LSE.get(), rows, vblk, b * vblk, v_real, TG.get(), 0.05f);
    EXPECT_CLOSE(T, download(DZ), dz);
  }
}

TYPED_TEST(GpuKernels, AdamWAndReductions) {
  using T = TypeParam;
  const int64_t n = 70001;
  auto p0 = randn(n, 13), g = rounded<T>(randn(n, 14, 0.1f));
  std::vector<float> p = p0, m(n, 0.f), v(n, 0.f);
  cpu::AdamW h{1e-3, 0.9, 0.95, 1e-8, 0.1};
  auto P = upload<float>(p0), M = upload<float>(m), V = upload<float>(v);
  auto G = upload<T>(g);
  for (int step = 1; step <= 3; ++step) {
    cpu::adamw_step<float>(p.data(), g.data(), m.data(), v.data(), n, h, step);
    cuda::adamw_step<T>(P.get(), G.get(), M.get(), V.get(), n, h, step);
  }
  EXPECT_LE(rel_err(download(P), p), 1e-6);
  EXPECT_LE(rel_err(download(M), m), 1e-6);
  EXPECT_LE(rel_err(download(V), v), 1e-6);

  const double ss = cpu::sum_squares<float>(g.data(), n);
  const double gs = sum_squares<T>(G.get(), n);
  EXPECT_NEAR(gs, ss, 1e-6 * ss);
  EXPECT_EQ(gs, sum_squares<T>(G.get(), n)) << "sum_squares is not bitwise reproducible";

  auto y = rounded<T>(randn(n, 15));
  std::vector<float> yr = y;
  cpu::add_inplace<float>(yr.data(), g.data(), n);
  cpu::scale_inplace<float>(yr.data(), n, 0.5f);
  auto Y = upload<T>(y);
  add_inplace<T>(Y.get(), G.get(), n);
  scale_inplace<T>(Y.get(), n, 0.5f);
  EXPECT_CLOSE(T, download(Y), yr);
}

TYPED_TEST(GpuKernels, IndexRows) {
  using T = TypeParam;
  const int64_t w = 1000, n = 9, rows = 5;
  auto src = rounded<T>(randn(n * w, 16)), base = rounded<T>(randn(rows * w, 17));
  const std::vector<int64_t> dst_rows = {4, 0, 4, 2, 4, 1, 0, 3, 4},
                             src_rows = {8, 7, 6, 5, 4, 3, 2, 1, 0};
  auto add = base;  // repeated destinations: summed in index order
  cpu::index_add_rows<float>(add.data(), src.data(), dst_rows.data(), src_rows.data(), n, w);
  std::vector<float> gather(n * w);
  cpu::index_copy_rows<float>(gather.data(), base.data(), nullptr, dst_rows.data(), n, w);
  auto S = upload<T>(src), A = upload<T>(base), B = upload<T>(base);
  auto G = upload<T>(std::vector<float>(n * w, std::nanf("")));
  auto DR = upload_i64(dst_rows), SR = upload_i64(src_rows);
  index_add_rows<T>(A.get(), S.get(), DR.get(), SR.get(), n, w);
  index_copy_rows<T>(G.get(), B.get(), nullptr, DR.get(), n, w);
  EXPECT_CLOSE(T, download(A), add);
  EXPECT_CLOSE(T, download(G), gather);
  if constexpr (std::is_same_v<T, float>) {
    EXPECT_EQ(download(A), add) << "not the CPU's order";
  }
}

TEST(GpuMemory, DeviceAllocationsAreCountedPerCategory) {
  auto before = MemTracker::device().stats();
  {
    DBuf<float> a(1000, Cat::weights);
    DBuf<bf16> b(3000, Cat::grads);
    auto s = MemTracker::device().stats();
    EXPECT_EQ(s.live[static_cast<int>(Cat::weights)] - before.live[static_cast<int>(Cat::weights)],
              4000);
    EXPECT_EQ(s.live[static_cast<int>(Cat::grads)] - before.live[static_cast<int>(Cat::grads)],
              6000);
  }
  EXPECT_EQ(MemTracker::device().stats().total_live, before.total_live);
}

}  // namespace
}  // namespace origami::cuda::test
