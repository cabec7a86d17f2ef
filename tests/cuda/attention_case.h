// The attention case shared by the parity-path and cuDNN tests: a zigzag-like query layout against
// keys in three segments, checked against the CPU fp32 kernels, and a bitwise rerun.
#pragma once
#include "gpu_test.h"
#ifdef ORIGAMI_WITH_CUDNN
#include "cuda/cudnn_sdpa.h"
#endif

namespace origami::cuda::test {

// A zigzag-like call: this rank's queries are two chunks of the sequence (rows 0..c-1 at
// positions [r c, (r+1) c), rows c..2c-1 at [(2D-1-r) c, (2D-r) c)), keys in three segments.
struct AttnCase {
  int n_h, n_kv, d;
  int64_t c;
  int bq, bk;
  int64_t split = 0;  // end of the first key segment (0: c); < c splits a query chunk's keys
  bool docs = false;  // document masks (QSeg::lo): documents across the chunks and tiles
};

enum class AttnPath { parity, cudnn };

// Runs `path` (the tiled parity kernels, or cuDNN SDPA for bf16) on the case twice: against the
// CPU fp32 kernels on the rounded inputs, and the second run bitwise equal to the first.
template <class T>
void attention_case(const AttnCase& ac, AttnPath path) {
  const int n_h = ac.n_h, n_kv = ac.n_kv, d = ac.d;
  const int64_t c = ac.c, D = 2, r = 0;
  const int64_t rows = 2 * c, q_stride = n_h * d + 16, kv_stride = n_kv * d + 8;
  std::vector<QSeg> qs = {{0, r * c, c}, {c, (2 * D - 1 - r) * c, c}};
  std::vector<int64_t> doc0(static_cast<size_t>(4 * c), 0);  // each position's document start
  if (ac.docs) {
    const int64_t starts[] = {0, c / 3, c / 3 + 1, c + 5, 2 * c + c / 2, 3 * c + 1, 3 * c + 2};
    for (int64_t p = 0; p < 4 * c; ++p)
      for (int64_t s : starts)
        if (s <= p) doc0[static_cast<size_t>(p)] = s;
    for (QSeg& s : qs) s.lo = doc0.data() + s.pos0;
  }
  // Keys: positions [0, s1), [s1, 3c) and [3c, 4c) held in three buffers (s1 = c unless split).
  const int64_t s1 = ac.split ? ac.split : c;
  std::vector<int64_t> kpos = {0, s1, 3 * c}, klen = {s1, 3 * c - s1, c};
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

  if (path == AttnPath::parity) set_attention_tiles(ac.bq, ac.bk);
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
    if (path == AttnPath::parity) {
      cuda::flash_attn_fwd<T>(O.get(), LSE.get(), rows, Q.get(), q_stride, qs.data(), 2, gks.data(),
                              3, {n_h, n_kv, d}, scale);
      cuda::flash_attn_bwd<T>(DQ.get(), DO.get(), Q.get(), OR.get(), q_stride, LSE.get(), rows,
                              qs.data(), 2, gks.data(), 3, {n_h, n_kv, d}, scale);
    } else {
#ifdef ORIGAMI_WITH_CUDNN
      if constexpr (std::is_same_v<T, bf16>) {
        cudnn::attn_fwd(O.get(), LSE.get(), rows, Q.get(), q_stride, qs.data(), 2, gks.data(), 3,
                        {n_h, n_kv, d}, scale);
        cudnn::attn_bwd(DQ.get(), DO.get(), Q.get(), OR.get(), q_stride, LSE.get(), rows, qs.data(),
                        2, gks.data(), 3, {n_h, n_kv, d}, scale);
      } else {
        FAIL() << "cuDNN attention is bf16 only";
      }
#else
      FAIL() << "built without cuDNN";
#endif
    }
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
  if (path == AttnPath::parity) set_attention_tiles(512, 512);
}

}  // namespace origami::cuda::test
