// Every CPU kernel against a naive double-precision reference, and every backward against central
// finite differences in double (<= 1e-6 norm-wise relative).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

using namespace origami::cpu;
using Vec = std::vector<double>;

namespace {

Vec randn(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 g(seed);
  std::normal_distribution<double> d(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = d(g);
  return v;
}

double rel(const Vec& a, const Vec& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// Central differences of the scalar f() with respect to every element of x.
Vec numgrad(Vec& x, const std::function<double()>& f, double eps = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double s = x[i];
    x[i] = s + eps;
    const double fp = f();
    x[i] = s - eps;
    const double fm = f();
    x[i] = s;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

constexpr double kFd = 1e-6;

}  // namespace

TEST(Gemm, LinearMatchesNaive) {
  const int64_t M = 7, N = 5, K = 9;
  Vec x = randn(M * K, 1), W = randn(N * K, 2), dy = randn(M * N, 3);
  Vec y(M * N), dx(M * K, 0.5), dW(N * K, -0.25);
  linear_fwd<double>(y.data(), x.data(), W.data(), M, N, K);
  linear_bwd_x<double>(dx.data(), dy.data(), W.data(), M, N, K);
  linear_bwd_w<double>(dW.data(), dy.data(), x.data(), M, N, K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += x[m * K + k] * W[n * K + k];
      EXPECT_NEAR(y[m * N + n], s, 1e-12);
    }
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      double s = 0.5;
      for (int64_t n = 0; n < N; ++n) s += dy[m * N + n] * W[n * K + k];
      EXPECT_NEAR(dx[m * K + k], s, 1e-12);  // accumulates
    }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      double s = -0.25;
      for (int64_t m = 0; m < M; ++m) s += dy[m * N + n] * x[m * K + k];
      EXPECT_NEAR(dW[n * K + k], s, 1e-12);
    }
  // float path agrees with the double one
  std::vector<float> xf(x.begin(), x.end()), Wf(W.begin(), W.end()), yf(M * N);
  linear_fwd<float>(yf.data(), xf.data(), Wf.data(), M, N, K);
  for (int64_t i = 0; i < M * N; ++i) EXPECT_NEAR(yf[i], y[i], 1e-5);
}

TEST(RMSNorm, ForwardAndFiniteDifferences) {
  const int64_t R = 5, H = 12;
  const double eps = 1e-5;
  Vec x = randn(R * H, 4), w = randn(H, 5), c = randn(R * H, 6);
  auto fwd = [&](Vec& y, Vec& n, Vec& rs) {
    y.assign(R * H, 0);
    n.assign(R * H, 0);
    rs.assign(R, 0);
    rmsnorm_fwd<double>(y.data(), n.data(), rs.data(), x.data(), w.data(), R, H, eps);
  };
  Vec y, n, rs;
  fwd(y, n, rs);
  for (int64_t r = 0; r < R; ++r) {
    double ms = 0;
    for (int64_t i = 0; i < H; ++i) ms += x[r * H + i] * x[r * H + i] / H;
    for (int64_t i = 0; i < H; ++i)
      EXPECT_NEAR(y[r * H + i], w[i] * x[r * H + i] / std::sqrt(ms + eps), 1e-12);
  }
  auto loss = [&] {
    Vec yy, nn, rr;
    fwd(yy, nn, rr);
    return dot(yy, c);
  };
  Vec dx(R * H, 0), dw(H, 0);
  rmsnorm_bwd<double>(dx.data(), dw.data(), c.data(), n.data(), w.data(), rs.data(), R, H);
  EXPECT_LT(rel(dx, numgrad(x, loss)), kFd);
  EXPECT_LT(rel(dw, numgrad(w, loss)), kFd);
}

TEST(RoPE, ForwardAndFiniteDifferences) {
  const int d = 8, nh = 3, maxp = 40;
  const int64_t R = 4, stride = nh * d + 5;  // padded rows: the kernel must respect the stride
  const double theta = 10000.0;
  Vec cs(maxp * d / 2), sn(maxp * d / 2);
  rope_table<double>(cs.data(), sn.data(), maxp, d, theta);
  std::vector<int64_t> pos = {0, 7, 31, 39};
  Vec x = randn(R * stride, 7), c = randn(R * stride, 8);
  Vec y = x;
  rope_fwd<double>(y.data(), stride, pos.data(), R, nh, d, cs.data(), sn.data());
  for (int64_t r = 0; r < R; ++r)
    for (int hd = 0; hd < nh; ++hd)
      for (int i = 0; i < d; ++i) {
        const double* v = x.data() + r * stride + hd * d;
        const int j = i % (d / 2);
        const double a = pos[r] * std::pow(theta, -2.0 * j / d);
        const double rot = i < d / 2 ? -v[i + d / 2] : v[i - d / 2];
        EXPECT_NEAR(y[r * stride + hd * d + i], v[i] * std::cos(a) + rot * std::sin(a), 1e-12);
      }
  for (int64_t r = 0; r < R; ++r)  // padding untouched
    for (int64_t i = nh * d; i < stride; ++i) EXPECT_EQ(y[r * stride + i], x[r * stride + i]);
  auto loss = [&] {
    Vec yy = x;
    rope_fwd<double>(yy.data(), stride, pos.data(), R, nh, d, cs.data(), sn.data());
    double s = 0;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < nh * d; ++i) s += yy[r * stride + i] * c[r * stride + i];
    return s;
  };
  Vec g = c;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = nh * d; i < stride; ++i) g[r * stride + i] = 0;
  rope_bwd<double>(g.data(), stride, pos.data(), R, nh, d, cs.data(), sn.data());
  EXPECT_LT(rel(g, numgrad(x, loss)), kFd);
}

TEST(SwiGLU, ForwardAndFiniteDifferences) {
  const int64_t n = 50;
  Vec g = randn(n, 9, 2.0), u = randn(n, 10), c = randn(n, 11), a(n);
  swiglu_fwd<double>(a.data(), g.data(), u.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(a[i], g[i] / (1 + std::exp(-g[i])) * u[i], 1e-12);
  auto loss = [&] {
    Vec aa(n);
    swiglu_fwd<double>(aa.data(), g.data(), u.data(), n);
    return dot(aa, c);
  };
  Vec dg(n), du(n);
  swiglu_bwd<double>(dg.data(), du.data(), c.data(), g.data(), u.data(), n);
  EXPECT_LT(rel(dg, numgrad(g, loss)), kFd);
  EXPECT_LT(rel(du, numgrad(u, loss)), kFd);
}

// ---- attention ---------------------------------------------------------------------------------
namespace {
// A zigzag-like setting: the rank's queries are two chunks at different global positions; the
// keys of the whole sequence arrive as segments in rank-major order (not position order), each
// with its own row stride.
struct AttnCase {
  int nh = 4, nkv = 2, d = 8;
  int64_t S = 150;                                  // global sequence (keys)
  std::vector<QSeg> qs{{0, 10, 20}, {20, 80, 70}};  // 90 local query rows, several tiles
  int64_t nq = 90;
  // key segments: global positions [75,150), [0,40), [40,75) with different strides
  std::vector<std::array<int64_t, 3>> kseg{{75, 75, 3}, {0, 40, 0}, {40, 35, 1}};  // pos0, len, pad
  // Document masks (packed documents): the first position of each position's document.
  std::vector<int64_t> doc0;
  // Documents starting at 0, 5, 6 (a one-token document), 7, 70 and 130: they cross the query
  // and key segments' boundaries and the 64-row tiles, and the second query segment's last tile
  // (rows at 144..149, documents from 130) skips the keys before 128 as whole tiles.
  void with_docs() {
    doc0.assign(S, 0);
    const int64_t starts[] = {0, 5, 6, 7, 70, 130};
    for (int64_t p = 0; p < S; ++p)
      for (int64_t st : starts)
        if (st <= p) doc0[p] = st;
    for (QSeg& q : qs) q.lo = doc0.data() + q.pos0;
  }
  int64_t first_key(int64_t qp) const { return doc0.empty() ? 0 : doc0[qp]; }
};

template <class T>
struct AttnData {
  std::vector<T> q, k[3], v[3], o, lse, dq, dk[3], dv[3];
};

template <class T>
void run_fwd(const AttnCase& c, std::vector<T>& q, std::vector<T>* k, std::vector<T>* v,
             std::vector<T>& o, std::vector<T>& lse) {
  const int64_t qd = c.nh * c.d;
  std::vector<KvSeg<T>> ks;
  for (int s = 0; s < 3; ++s) {
    const int64_t stride = c.nkv * c.d + c.kseg[s][2];
    ks.push_back({k[s].data(), v[s].data(), stride, c.kseg[s][0], c.kseg[s][1]});
  }
  o.assign(c.nq * qd, 0);
  lse.assign(c.nh * c.nq, 0);
  flash_attn_fwd<T>(o.data(), lse.data(), c.nq, q.data(), qd, c.qs.data(), 2, ks.data(), 3,
                    {c.nh, c.nkv, c.d}, static_cast<T>(1.0 / std::sqrt(double(c.d))));
}

// Naive reference: materialise all scores of one head in double.
void naive(const AttnCase& c, const Vec& q, const Vec* k, const Vec* v, Vec& o, Vec& lse) {
  const int64_t qd = c.nh * c.d;
  o.assign(c.nq * qd, 0);
  lse.assign(c.nh * c.nq, 0);
  const double scale = 1.0 / std::sqrt(double(c.d));
  for (int h = 0; h < c.nh; ++h) {
    const int kvh = h / (c.nh / c.nkv);
    for (const auto& qs : c.qs)
      for (int64_t i = 0; i < qs.len; ++i) {
        const int64_t row = qs.row0 + i, qp = qs.pos0 + i;
        std::vector<std::pair<double, const double*>> sc;  // score, v row
        for (int s = 0; s < 3; ++s) {
          const int64_t stride = c.nkv * c.d + c.kseg[s][2];
          for (int64_t j = 0; j < c.kseg[s][1]; ++j) {
            if (c.kseg[s][0] + j > qp || c.kseg[s][0] + j < c.first_key(qp)) continue;
            double dd = 0;
            for (int e = 0; e < c.d; ++e)
              dd += q[row * qd + h * c.d + e] * k[s][j * stride + kvh * c.d + e];
            sc.push_back({dd * scale, &v[s][j * stride + kvh * c.d]});
          }
        }
        double mx = -1e300, sum = 0;
        for (auto& [s, p] : sc) mx = std::max(mx, s);
        for (auto& [s, p] : sc) sum += std::exp(s - mx);
        for (auto& [s, p] : sc)
          for (int e = 0; e < c.d; ++e) o[row * qd + h * c.d + e] += std::exp(s - mx) / sum * p[e];
        lse[h * c.nq + row] = mx + std::log(sum);
      }
  }
}
// Random K and V for the case's three key segments (padding columns included).
void rand_kv(const AttnCase& c, Vec* k, Vec* v, uint32_t seed_k, uint32_t seed_v) {
  for (int s = 0; s < 3; ++s) {
    const int64_t n = c.kseg[s][1] * (c.nkv * c.d + c.kseg[s][2]);
    k[s] = randn(n, seed_k + s);
    v[s] = randn(n, seed_v + s);
  }
}
}  // namespace

class FlashAttention : public ::testing::TestWithParam<bool> {};  // param: document masks

TEST_P(FlashAttention, ForwardMatchesNaiveAcrossSegmentsTilesAndGQA) {
  AttnCase c;
  if (GetParam()) c.with_docs();
  const int64_t qd = c.nh * c.d;
  Vec q = randn(c.nq * qd, 12), k[3], v[3];
  rand_kv(c, k, v, 20, 30);
  Vec o, lse, ro, rlse;
  run_fwd<double>(c, q, k, v, o, lse);
  naive(c, q, k, v, ro, rlse);
  EXPECT_LT(rel(o, ro), 1e-13);
  EXPECT_LT(rel(lse, rlse), 1e-13);
  // float kernel against the double reference
  std::vector<float> qf(q.begin(), q.end()), kf[3], vf[3], of, lf;
  for (int s = 0; s < 3; ++s) {
    kf[s].assign(k[s].begin(), k[s].end());
    vf[s].assign(v[s].begin(), v[s].end());
  }
  run_fwd<float>(c, qf, kf, vf, of, lf);
  EXPECT_LT(rel(Vec(of.begin(), of.end()), ro), 1e-5);
  EXPECT_LT(rel(Vec(lf.begin(), lf.end()), rlse), 1e-6);
}

TEST_P(FlashAttention, BackwardFiniteDifferences) {
  AttnCase c;
  if (GetParam()) c.with_docs();
  c.nh = 4;
  c.nkv = 1;  // MQA: every query head accumulates into the one kv head
  c.d = 4;
  const int64_t qd = c.nh * c.d;
  Vec q = randn(c.nq * qd, 40), k[3], v[3], dout = randn(c.nq * qd, 41);
  rand_kv(c, k, v, 50, 60);
  Vec o, lse;
  run_fwd<double>(c, q, k, v, o, lse);
  auto loss = [&] {
    Vec oo, ll;
    run_fwd<double>(c, q, k, v, oo, ll);
    return dot(oo, dout);
  };
  Vec dq(q.size(), 0), dk[3], dv[3];
  std::vector<KvSeg<double>> ks;
  for (int s = 0; s < 3; ++s) {
    dk[s].assign(k[s].size(), 0);
    dv[s].assign(v[s].size(), 0);
    ks.push_back({k[s].data(), v[s].data(), c.nkv * c.d + c.kseg[s][2], c.kseg[s][0], c.kseg[s][1],
                  dk[s].data(), dv[s].data()});
  }
  flash_attn_bwd<double>(dq.data(), dout.data(), q.data(), o.data(), qd, lse.data(), c.nq,
                         c.qs.data(), 2, ks.data(), 3, {c.nh, c.nkv, c.d},
                         1.0 / std::sqrt(double(c.d)));
  EXPECT_LT(rel(dq, numgrad(q, loss)), kFd);
  for (int s = 0; s < 3; ++s) {
    // the padding columns of a strided segment are not inputs: their gradient stays 0
    Vec nk = numgrad(k[s], loss), nv = numgrad(v[s], loss);
    EXPECT_LT(rel(dk[s], nk), kFd) << "segment " << s;
    EXPECT_LT(rel(dv[s], nv), kFd) << "segment " << s;
  }
}

// The float backward (vectorised exp and dS tiles) against the double backward.
TEST_P(FlashAttention, FloatBackwardMatchesDouble) {
  AttnCase c;
  if (GetParam()) c.with_docs();
  const int64_t qd = c.nh * c.d;
  Vec q = randn(c.nq * qd, 80), k[3], v[3], dout = randn(c.nq * qd, 81);
  rand_kv(c, k, v, 82, 85);
  auto run = [&](auto zero, auto& out_q, auto* out_k, auto* out_v) {
    using T = decltype(zero);
    std::vector<T> qt(q.begin(), q.end()), dt(dout.begin(), dout.end()), kt[3], vt[3], o, lse;
    for (int s = 0; s < 3; ++s) {
      kt[s].assign(k[s].begin(), k[s].end());
      vt[s].assign(v[s].begin(), v[s].end());
    }
    run_fwd<T>(c, qt, kt, vt, o, lse);
    out_q.assign(q.size(), 0);
    std::vector<KvSeg<T>> ks;
    for (int s = 0; s < 3; ++s) {
      out_k[s].assign(k[s].size(), 0);
      out_v[s].assign(v[s].size(), 0);
      ks.push_back({kt[s].data(), vt[s].data(), c.nkv * c.d + c.kseg[s][2], c.kseg[s][0],
                    c.kseg[s][1], out_k[s].data(), out_v[s].data()});
    }
    flash_attn_bwd<T>(out_q.data(), dt.data(), qt.data(), o.data(), qd, lse.data(), c.nq,
                      c.qs.data(), 2, ks.data(), 3, {c.nh, c.nkv, c.d},
                      static_cast<T>(1.0 / std::sqrt(double(c.d))));
  };
  Vec dq, dk[3], dv[3];
  std::vector<float> fq, fk[3], fv[3];
  run(0.0, dq, dk, dv);
  run(0.0f, fq, fk, fv);
  EXPECT_LT(rel(Vec(fq.begin(), fq.end()), dq), 1e-5);
  for (int s = 0; s < 3; ++s) {
    EXPECT_LT(rel(Vec(fk[s].begin(), fk[s].end()), dk[s]), 1e-5) << "segment " << s;
    EXPECT_LT(rel(Vec(fv[s].begin(), fv[s].end()), dv[s]), 1e-5) << "segment " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Masks, FlashAttention, ::testing::Values(false, true),
                         [](const auto& i) { return i.param ? "documents" : "causal"; });

TEST(FastExp, RelativeErrorAndRange) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(fast_exp(x) - want) / want);
  }
  EXPECT_LT(worst, 4e-7);
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
  EXPECT_LT(fast_exp(-1000.0f), 1e-37f);  // clamped, never NaN or negative
  EXPECT_GE(fast_exp(-1000.0f), 0.0f);
  EXPECT_TRUE(std::isfinite(fast_exp(1000.0f)));
}

TEST(CrossEntropy, BlockwiseOnlineLseMatchesNaiveAndFiniteDifferences) {
  const int64_t R = 6, V = 23, vblk = 8, Vp = 24;  // 3 blocks, the last one has a padding column
  Vec z = randn(R * Vp, 70, 3.0);
  std::vector<int64_t> tg = {3, -1, 22, 8, 0, 15};
  auto run = [&](Vec& lse, double* loss) {
    Vec m(R), l(R), zt(R), blk(R * vblk);
    ce_init<double>(m.data(), l.data(), zt.data(), R);
    for (int64_t v0 = 0; v0 < Vp; v0 += vblk) {
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < vblk; ++j) blk[r * vblk + j] = z[r * Vp + v0 + j];
      ce_update<double>(m.data(), l.data(), zt.data(), blk.data(), R, vblk, v0, V, tg.data());
    }
    lse.assign(R, 0);
    *loss = ce_finish<double>(lse.data(), m.data(), l.data(), zt.data(), R, tg.data());
  };
  Vec lse;
  double loss;
  run(lse, &loss);
  double ref = 0;
  for (int64_t r = 0; r < R; ++r) {
    if (tg[r] < 0) continue;
    double mx = -1e300, s = 0;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, z[r * Vp + j]);
    for (int64_t j = 0; j < V; ++j) s += std::exp(z[r * Vp + j] - mx);
    EXPECT_NEAR(lse[r], mx + std::log(s), 1e-12);
    ref += mx + std::log(s) - z[r * Vp + tg[r]];
  }
  EXPECT_NEAR(loss, ref, 1e-12);
  const double scale = 0.37;
  auto f = [&] {
    Vec l2;
    double v;
    run(l2, &v);
    return v * scale;
  };
  Vec dz(R * Vp);
  for (int64_t v0 = 0; v0 < Vp; v0 += vblk) {
    Vec blk(R * vblk), dblk(R * vblk);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < vblk; ++j) blk[r * vblk + j] = z[r * Vp + v0 + j];
    ce_bwd<double>(dblk.data(), blk.data(), lse.data(), R, vblk, v0, V, tg.data(), scale);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < vblk; ++j) dz[r * Vp + v0 + j] = dblk[r * vblk + j];
  }
  EXPECT_LT(rel(dz, numgrad(z, f)), kFd);
}

TEST(AdamW, MatchesTorchFormula) {
  const int64_t n = 10;
  Vec p = randn(n, 80), g = randn(n, 81), m(n, 0), v(n, 0);
  Vec rp = p, rm = m, rv = v;
  AdamW h{1e-2, 0.9, 0.95, 1e-8, 0.1};
  for (int64_t step = 1; step <= 3; ++step) {
    adamw_step<double>(p.data(), g.data(), m.data(), v.data(), n, h, step);
    for (int64_t i = 0; i < n; ++i) {  // torch.optim.AdamW, written out
      rp[i] *= 1 - h.lr * h.weight_decay;
      rm[i] = 0.9 * rm[i] + 0.1 * g[i];
      rv[i] = 0.95 * rv[i] + 0.05 * g[i] * g[i];
      const double mh = rm[i] / (1 - std::pow(0.9, step)), vh = rv[i] / (1 - std::pow(0.95, step));
      rp[i] -= h.lr * mh / (std::sqrt(vh) + h.eps);
    }
  }
  EXPECT_LT(rel(p, rp), 1e-13);
}

TEST(Clip, SumSquaresIsExactAndThreadIndependent) {
  Vec x = randn(10000, 90);
  double ref = 0;
  for (double a : x) ref += a * a;
  EXPECT_NEAR(sum_squares<double>(x.data(), 10000), ref, 1e-9);
  std::vector<float> xf(x.begin(), x.end());
  EXPECT_NEAR(sum_squares<float>(xf.data(), 10000) / ref, 1.0, 1e-6);
  scale_inplace<double>(x.data(), 10000, 0.5);
  EXPECT_NEAR(sum_squares<double>(x.data(), 10000), ref / 4, 1e-9);
}

// Rows by index: copies land where the indices say; adds to a repeated destination row happen in
// index order (bitwise the same as adding the rows one after the other).
TEST(IndexRows, CopyAndOrderedAdd) {
  const int64_t w = 131, n = 9, rows = 5;  // w: not a multiple of the column block
  const Vec s = randn(n * w, 3), d0 = randn(rows * w, 4);
  std::vector<float> src(s.begin(), s.end()), base(d0.begin(), d0.end());
  const std::vector<int64_t> dst_rows = {4, 0, 4, 2, 4, 1, 0, 3, 4},
                             src_rows = {8, 7, 6, 5, 4, 3, 2, 1, 0};
  std::vector<float> want = base;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < w; ++c) want[dst_rows[i] * w + c] += src[src_rows[i] * w + c];
  std::vector<float> got = base;
  index_add_rows<float>(got.data(), src.data(), dst_rows.data(), src_rows.data(), n, w);
  EXPECT_EQ(got, want);
  // identity source rows
  want = base, got = base;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < w; ++c) want[dst_rows[i] * w + c] += src[i * w + c];
  index_add_rows<float>(got.data(), src.data(), dst_rows.data(), nullptr, n, w);
  EXPECT_EQ(got, want);
  // a gather (identity destinations) and a scatter to distinct rows
  std::vector<float> g(n * w, -1.f);
  index_copy_rows<float>(g.data(), base.data(), nullptr, dst_rows.data(), n, w);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < w; ++c) ASSERT_EQ(g[i * w + c], base[dst_rows[i] * w + c]);
  std::vector<float> sc(rows * w, -1.f);
  const std::vector<int64_t> perm = {3, 0, 4, 1, 2};
  index_copy_rows<float>(sc.data(), src.data(), perm.data(), nullptr, rows, w);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < w; ++c) ASSERT_EQ(sc[perm[i] * w + c], src[i * w + c]);
}

// ---- bf16 (--dtype bf16) ------------------------------------------------------------------------
// Each bf16 kernel against the double kernel run on the same bf16-rounded inputs: what is left is
// the kernel's own error. Outputs stored in bf16 carry its rounding (≤ 2⁻⁹ relative per element,
// ~2e-3 norm-wise): bound kBf = 4e-3. What is fp32 (statistics, attention and parameter
// gradients, GEMMs into fp32) must be fp32-accurate (kAcc = 1e-6; measured ≤ 2.4e-7): a kernel that rounded its sums
// to bf16 would miss it by orders of magnitude. And each bf16 output must be measurably less
// accurate than fp32 (> 1e-4), or the bf16 path would be computing in fp32.
namespace {
using origami::bfloat16;
constexpr double kBf = 4e-3, kAcc = 1e-6, kAboveFp32 = 1e-4;

std::vector<bfloat16> to16(const Vec& v) {
  std::vector<bfloat16> r;
  for (double x : v) r.push_back(origami::to_bf16(static_cast<float>(x)));
  return r;
}
Vec of16(const std::vector<bfloat16>& v) {
  Vec r;
  for (auto x : v) r.push_back(origami::to_float(x));
  return r;
}
Vec rounded(const Vec& v) {
  return of16(to16(v));
}
}  // namespace

TEST(Bf16, RoundsToNearestEven) {
  using origami::to_bf16;
  using origami::to_float;
  EXPECT_EQ(to_float(to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(to_float(to_bf16(1.0f + 1.0f / 256)), 1.0f);                       // tie → even
  EXPECT_EQ(to_float(to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);          // tie → even (up)
  EXPECT_EQ(to_float(to_bf16(1.0f + 1.0f / 256 + 1e-6f)), 1.0f + 2.0f / 256);  // above the tie
  EXPECT_TRUE(std::isnan(to_float(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(to_float(to_bf16(std::numeric_limits<float>::infinity())),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(to_float(to_bf16(3.4e38f)), std::numeric_limits<float>::infinity());  // overflows
}

TEST(Bf16, GemmAccumulatesInFp32) {
  const int64_t M = 37, N = 29, K = 300;
  for (int tr = 0; tr < 8; ++tr) {  // transposes; tr >= 4: padded rows (sub-blocks, as the
                                    // engines' strided weight buckets are)
    const Trans ta = tr & 1 ? Trans::T : Trans::N, tb = tr & 2 ? Trans::T : Trans::N;
    const int64_t pad = tr >= 4 ? 5 : 0;
    const int64_t lda = (ta == Trans::N ? K : M) + pad, ldb = (tb == Trans::N ? N : K) + pad;
    const int64_t ldc = N + pad;
    const Vec a = rounded(randn((ta == Trans::N ? M : K) * lda, 100 + tr));
    const Vec b = rounded(randn((tb == Trans::N ? K : N) * ldb, 200 + tr));
    const Vec c0 = randn(M * ldc, 300 + tr);
    Vec want = c0;  // C = 0.5·op(A)·op(B) + 1·C in double
    gemm<double>(ta, tb, M, N, K, 0.5, a.data(), lda, b.data(), ldb, 1.0, want.data(), ldc);
    const auto a16 = to16(a), b16 = to16(b);
    std::vector<float> c32(c0.begin(), c0.end());
    gemm_bf16(ta, tb, M, N, K, 0.5f, a16.data(), lda, b16.data(), ldb, 1.0f, c32.data(),
              origami::DType::f32, ldc);
    EXPECT_LT(rel(Vec(c32.begin(), c32.end()), want), kAcc) << "fp32 C, case " << tr;
    auto c16 = to16(c0);
    gemm_bf16(ta, tb, M, N, K, 0.5f, a16.data(), lda, b16.data(), ldb, 1.0f, c16.data(),
              origami::DType::bf16, ldc);
    const double e = rel(of16(c16), want);
    EXPECT_LT(e, kBf) << "bf16 C, case " << tr;
    EXPECT_GT(e, kAboveFp32) << "bf16 C, case " << tr;
  }
}

TEST(Bf16, ElementwiseKernels) {
  const int64_t R = 6, h = 40, n = R * h;
  const Vec x = rounded(randn(n, 400)), w = rounded(randn(h, 401)), dy = rounded(randn(n, 402));
  // RMSNorm forward: y, n in bf16; rstd fp32
  Vec y(n), nn(n), rs(R);
  rmsnorm_fwd<double>(y.data(), nn.data(), rs.data(), x.data(), w.data(), R, h, 1e-5);
  std::vector<bfloat16> y16(n), n16(n);
  std::vector<float> rs32(R);
  rmsnorm_fwd<bfloat16>(y16.data(), n16.data(), rs32.data(), to16(x).data(), to16(w).data(), R, h,
                        1e-5);
  EXPECT_LT(rel(of16(y16), y), kBf);
  EXPECT_GT(rel(of16(y16), y), kAboveFp32);
  EXPECT_LT(rel(of16(n16), nn), kBf);
  EXPECT_LT(rel(Vec(rs32.begin(), rs32.end()), rs), kAcc);
  // RMSNorm backward from the bf16 forward's saved n: dx bf16 (accumulates), dw fp32
  const Vec n_saved = of16(n16), dx0 = rounded(randn(n, 403));
  Vec dx = dx0, dw(h, 0.25);
  const Vec rs_saved(rs32.begin(), rs32.end());
  rmsnorm_bwd<double>(dx.data(), dw.data(), dy.data(), n_saved.data(), w.data(), rs_saved.data(), R,
                      h);
  auto dx16 = to16(dx0);
  std::vector<float> dw32(h, 0.25f);
  rmsnorm_bwd<bfloat16>(dx16.data(), dw32.data(), to16(dy).data(), n16.data(), to16(w).data(),
                        rs32.data(), R, h);
  EXPECT_LT(rel(of16(dx16), dx), kBf);
  EXPECT_LT(rel(Vec(dw32.begin(), dw32.end()), dw), kAcc);
  // SwiGLU forward and backward
  const Vec g = rounded(randn(n, 404, 2.0)), u = rounded(randn(n, 405));
  Vec a(n), dg(n), du(n);
  swiglu_fwd<double>(a.data(), g.data(), u.data(), n);
  swiglu_bwd<double>(dg.data(), du.data(), dy.data(), g.data(), u.data(), n);
  std::vector<bfloat16> a16(n), dg16(n), du16(n);
  swiglu_fwd<bfloat16>(a16.data(), to16(g).data(), to16(u).data(), n);
  swiglu_bwd<bfloat16>(dg16.data(), du16.data(), to16(dy).data(), to16(g).data(), to16(u).data(),
                       n);
  EXPECT_LT(rel(of16(a16), a), kBf);
  EXPECT_GT(rel(of16(a16), a), kAboveFp32);
  EXPECT_LT(rel(of16(dg16), dg), kBf);
  EXPECT_LT(rel(of16(du16), du), kBf);
  // RoPE forward in bf16 with fp32 tables
  const int nh = 2, d = 20;
  std::vector<float> cs(64 * d / 2), sn(cs.size());
  rope_table<float>(cs.data(), sn.data(), 64, d, 10000.0);
  Vec csd(cs.begin(), cs.end()), snd(sn.begin(), sn.end()), xr = x;
  const std::vector<int64_t> pos = {0, 5, 63, 7, 1, 30};
  rope_fwd<double>(xr.data(), h, pos.data(), R, nh, d, csd.data(), snd.data());
  auto x16 = to16(x);
  rope_fwd<bfloat16>(x16.data(), h, pos.data(), R, nh, d, cs.data(), sn.data());
  EXPECT_LT(rel(of16(x16), xr), kBf);
  // conversions, bf16 adds, fp32 gradient rows gaining bf16 rows
  std::vector<float> xf(x.begin(), x.end()), back(n);
  std::vector<bfloat16> c16(n);
  convert<bfloat16, float>(c16.data(), xf.data(), n);
  convert<float, bfloat16>(back.data(), c16.data(), n);
  EXPECT_EQ(Vec(back.begin(), back.end()), x);  // x is bf16-exact: the round trip is lossless
  auto s16 = to16(x);
  add_inplace<bfloat16>(s16.data(), to16(dy).data(), n);
  Vec sum(n);
  for (int64_t i = 0; i < n; ++i) sum[i] = x[i] + dy[i];
  EXPECT_LT(rel(of16(s16), sum), kBf);
  std::vector<float> gr(2 * h, 1.0f);
  const std::vector<int64_t> rows = {1, 0, 1};
  index_add_rows<bfloat16>(gr.data(), to16(x).data(), rows.data(), nullptr, 3, h);
  for (int64_t c = 0; c < h; ++c) {
    EXPECT_FLOAT_EQ(gr[c], 1.0f + static_cast<float>(x[h + c]));
    EXPECT_FLOAT_EQ(gr[h + c], 1.0f + static_cast<float>(x[c]) + static_cast<float>(x[2 * h + c]));
  }
}

// The bf16 flash attention: bf16 Q, K, V, O, dO; fp32 scores, statistics and dq/dk/dv. Against
// the double kernel on the same rounded inputs (and, backward, the bf16 forward's own O).
class Bf16Attention : public ::testing::TestWithParam<bool> {};  // param: document masks

TEST_P(Bf16Attention, ForwardAndBackward) {
  AttnCase c;
  if (GetParam()) c.with_docs();
  const int64_t qd = c.nh * c.d;
  const Vec q = rounded(randn(c.nq * qd, 90)), dout = rounded(randn(c.nq * qd, 91));
  Vec k[3], v[3];
  rand_kv(c, k, v, 92, 95);
  for (int s = 0; s < 3; ++s) k[s] = rounded(k[s]), v[s] = rounded(v[s]);
  const double scale = 1.0 / std::sqrt(double(c.d));
  const AttnShape sh{c.nh, c.nkv, c.d};
  // forward
  std::vector<bfloat16> k16[3], v16[3];
  std::vector<KvSeg<bfloat16>> ks16;
  std::vector<KvSeg<double>> ksd;
  Vec dk[3], dv[3];
  std::vector<float> dk32[3], dv32[3];
  Vec kk[3] = {k[0], k[1], k[2]}, vv[3] = {v[0], v[1], v[2]};
  for (int s = 0; s < 3; ++s) {
    k16[s] = to16(k[s]), v16[s] = to16(v[s]);
    dk[s].assign(k[s].size(), 0), dv[s].assign(v[s].size(), 0);
    dk32[s].assign(k[s].size(), 0.f), dv32[s].assign(v[s].size(), 0.f);
    const int64_t stride = c.nkv * c.d + c.kseg[s][2];
    ks16.push_back({k16[s].data(), v16[s].data(), stride, c.kseg[s][0], c.kseg[s][1],
                    dk32[s].data(), dv32[s].data()});
    ksd.push_back({kk[s].data(), vv[s].data(), stride, c.kseg[s][0], c.kseg[s][1], dk[s].data(),
                   dv[s].data()});
  }
  Vec o(c.nq * qd), lse(c.nh * c.nq);
  Vec qq = q;
  flash_attn_fwd<double>(o.data(), lse.data(), c.nq, qq.data(), qd, c.qs.data(), 2, ksd.data(), 3,
                         sh, scale);
  std::vector<bfloat16> o16(o.size());
  std::vector<float> lse32(lse.size());
  const auto q16 = to16(q), dout16 = to16(dout);
  flash_attn_fwd<bfloat16>(o16.data(), lse32.data(), c.nq, q16.data(), qd, c.qs.data(), 2,
                           ks16.data(), 3, sh, static_cast<float>(scale));
  EXPECT_LT(rel(of16(o16), o), kBf);
  EXPECT_GT(rel(of16(o16), o), kAboveFp32);
  EXPECT_LT(rel(Vec(lse32.begin(), lse32.end()), lse), kAcc);
  // the fp32-output variant (decode's partial results): the unrounded o, fp32-accurate, whose
  // rounding is the bf16 output bit for bit; the same lse
  {
    std::vector<float> ow(o.size()), lw(lse.size());
    flash_attn_fwd<bfloat16, float>(ow.data(), lw.data(), c.nq, q16.data(), qd, c.qs.data(), 2,
                                    ks16.data(), 3, sh, static_cast<float>(scale));
    EXPECT_LT(rel(Vec(ow.begin(), ow.end()), o), kAcc);
    EXPECT_EQ(lw, lse32);
    for (size_t i = 0; i < ow.size(); ++i)
      ASSERT_EQ(origami::to_bf16(ow[i]).bits, o16[i].bits) << "element " << i;
  }
  // backward, both from the bf16 forward's O and fp32 lse
  const Vec o_saved = of16(o16), lse_saved(lse32.begin(), lse32.end());
  Vec dq(q.size(), 0);
  flash_attn_bwd<double>(dq.data(), dout.data(), qq.data(), o_saved.data(), qd, lse_saved.data(),
                         c.nq, c.qs.data(), 2, ksd.data(), 3, sh, scale);
  std::vector<float> dq32(q.size(), 0.f);
  flash_attn_bwd<bfloat16>(dq32.data(), dout16.data(), q16.data(), o16.data(), qd, lse32.data(),
                           c.nq, c.qs.data(), 2, ks16.data(), 3, sh, static_cast<float>(scale));
  EXPECT_LT(rel(Vec(dq32.begin(), dq32.end()), dq), kAcc);
  for (int s = 0; s < 3; ++s) {
    EXPECT_LT(rel(Vec(dk32[s].begin(), dk32[s].end()), dk[s]), kAcc) << "segment " << s;
    EXPECT_LT(rel(Vec(dv32[s].begin(), dv32[s].end()), dv[s]), kAcc) << "segment " << s;
  }
}
INSTANTIATE_TEST_SUITE_P(Masks, Bf16Attention, ::testing::Values(false, true),
                         [](const auto& i) { return i.param ? "documents" : "causal"; });
