// The sp axis's attention methods (sp_attention.h); diagrams in docs/schedules.md.
#include "parallel/sp_attention.h"

#include <algorithm>

#include "model/block.h"
#include "parallel/attn_pipeline.h"

namespace origami::spattn {

using block::bytes;
using block::F;
using block::F32;
using block::ws;
using block::ws32;

std::vector<k::QSeg> all_qsegs(const Zigzag& z, int64_t bb) {
  const int64_t c = z.chunk(), T = z.local_tokens();
  std::vector<k::QSeg> s;
  for (int src = 0; src < z.D; ++src)
    for (int k = 0; k < 2; ++k)
      s.push_back({src * T + (bb * 2 + k) * c, z.chunk_pos0_of(src, k), c,
                   z.lo(bb, z.chunk_pos0_of(src, k))});
  return s;
}

std::vector<k::Kv> all_kvsegs(const Zigzag& z, int64_t bb, k::CPtr K, k::CPtr V, float* dK,
                              float* dV, int64_t kw) {
  std::vector<k::Kv> s;
  for (const k::QSeg& q : all_qsegs(z, bb))
    s.push_back({K + q.row0 * kw, V + q.row0 * kw, kw, q.pos0, q.len,
                 dK ? dK + q.row0 * kw : nullptr, dV ? dV + q.row0 * kw : nullptr});
  return s;
}

std::vector<k::QSeg> own_qsegs(const Zigzag& z, int64_t bb) {
  const int64_t c = z.chunk();
  return {{(bb * 2) * c, z.chunk_pos0(0), c, z.lo(bb, z.chunk_pos0(0))},
          {(bb * 2 + 1) * c, z.chunk_pos0(1), c, z.lo(bb, z.chunk_pos0(1))}};
}

std::vector<k::Kv> block_kvsegs(const Zigzag& z, int64_t bb, int src, k::CPtr KV, float* dKV,
                                int64_t kw) {
  const int64_t c = z.chunk(), vrows = z.local_tokens() * kw;  // V follows K
  std::vector<k::Kv> s;
  for (int k = 0; k < 2; ++k) {
    const int64_t row = (bb * 2 + k) * c;
    s.push_back({KV + row * kw, KV + vrows + row * kw, kw, z.chunk_pos0_of(src, k), c,
                 dKV ? dKV + row * kw : nullptr, dKV ? dKV + vrows + row * kw : nullptr});
  }
  return s;
}

KvRing::KvRing(Comm& c, Tensor own, int64_t T, int64_t kw)
    : c_(c), cur_(std::move(own)), T_(T), kw_(kw) {
  post();
}

void KvRing::post() {
  const int S = c_.size(), r = c_.rank();
  if (j_ + 1 >= S) return;
  const int64_t blk = bytes(2 * T_ * kw_);
  nxt_ = ws({2 * T_, kw_});
  c_.begin_group();
  rr_ = c_.irecv(nxt_.raw(), blk, (r + S - 1) % S, kTagKv, Traffic::kv);
  rs_ = c_.isend(cur_.raw(), blk, (r + 1) % S, kTagKv, Traffic::kv);
  c_.end_group();
}

void KvRing::advance() {
  rs_.wait();
  rr_.wait();
  cur_ = std::move(nxt_);
  ++j_;
  post();
}

void ring_fwd(Comm& c, const Zigzag& z, const Tensor& own, int64_t kw,
              const std::function<Tensor()>& make_q, int64_t qw, k::AttnShape sh, float scale,
              Tensor& o, Tensor& lse) {
  const int S = c.size(), r = c.rank();
  const int64_t T = z.local_tokens();
  KvRing ring(c, own, T, kw);
  const Tensor q = make_q();
  // The running result and each step's partial: fp32 (under bf16 too), rounded once at the end.
  Tensor oacc = ws32({T, qw}), opart, lpart;
  for (int j = 0; j < S; ++j) {
    const int src = (r - j + S) % S;
    if (j == 1) opart = ws32({T, qw}), lpart = ws32({sh.n_h, T});
    Tensor &po = j ? opart : oacc, &pl = j ? lpart : lse;
    for (int64_t bb = 0; bb < z.B; ++bb) {
      const auto qs = own_qsegs(z, bb);
      const auto ks = block_kvsegs(z, bb, src, F(ring.cur()), nullptr, kw);
      k::flash_attn_fwd(F32(po), F32(pl), T, F(q), qw, qs.data(), static_cast<int>(qs.size()),
                        ks.data(), static_cast<int>(ks.size()), sh, scale);
      c.progress();
    }
    if (j) k::attn_merge(F32(oacc), F32(lse), F32(opart), F32(lpart), T, sh.n_h, sh.d, qw, T);
    if (j + 1 < S) ring.advance();
  }
  k::convert(F(o), F32(oacc), T * qw);
}

Heads Heads::of(int64_t n_h, int64_t n_kv, int64_t d, int ranks) {
  Heads H;
  H.qh = n_h / ranks;
  H.kh = std::max<int64_t>(n_kv / ranks, 1);
  H.qw = H.qh * d;
  H.kw = H.kh * d;
  const int64_t g = n_h / n_kv;  // query heads per KV head
  for (int r = 0; r < ranks; ++r) {
    H.q_of.push_back(r);
    H.kv_of.push_back(static_cast<int>(r * H.qh / g / H.kh));
  }
  return H;
}

namespace {
// The rows of a token-major [T, nblk·w] (as [T·nblk, w]: t·nblk + b) against those of a
// block-major [nblk, T, w] (b·T + t), for every token t and block b.
void block_rows(int64_t T, int64_t nblk, std::vector<int64_t>& tok, std::vector<int64_t>& blk) {
  tok.resize(static_cast<size_t>(T * nblk));
  blk.resize(tok.size());
  size_t i = 0;
  for (int64_t b = 0; b < nblk; ++b)
    for (int64_t t = 0; t < T; ++t, ++i) {
      tok[i] = t * nblk + b;
      blk[i] = b * T + t;
    }
}
}  // namespace

A2a to_heads(Comm& c, const Tensor& x, int64_t w, int64_t nblk, const std::vector<int>& block_of,
             Traffic t, Cat cat) {
  const int64_t T = x.numel() / (nblk * w), es = static_cast<int64_t>(dtype_size(x.dtype()));
  A2a m;
  if (nblk == 1) {
    m.send = x;
  } else {
    m.send = Tensor::empty({nblk * T, w}, x.dtype(), Cat::comm);
    std::vector<int64_t> tok, blk;
    block_rows(T, nblk, tok, blk);
    k::index_copy_rows(F(m.send), F(x), blk.data(), tok.data(), nblk * T, w);
  }
  m.recv = Tensor::empty({c.size() * T, w}, x.dtype(), cat);
  m.req = alltoall_blocks(c, m.send.raw(), m.recv.raw(), T * w * es, t, &block_of);
  return m;
}

A2a from_heads(Comm& c, const Tensor& X, int64_t w, Traffic t) {
  const int64_t T = X.numel() / (c.size() * w);
  A2a m{X, Tensor::empty({c.size() * T, w}, X.dtype(), Cat::workspace), {}};
  m.req = alltoall_blocks(c, X.raw(), m.recv.raw(),
                          T * w * static_cast<int64_t>(dtype_size(X.dtype())), t);
  return m;
}

void unblock(Tensor& x, const Tensor& recv, int64_t T, int ranks, int64_t w) {
  std::vector<int64_t> tok, blk;
  block_rows(T, ranks, tok, blk);
  k::index_copy_rows(F(x), F(recv), tok.data(), blk.data(), ranks * T, w);
}

UlyssesAct ulysses_fwd(Comm& c, const Zigzag& z, const Tensor& k, const Tensor& v,
                       const std::function<Tensor()>& make_q, int64_t n_h, int64_t n_kv, int d,
                       float scale, Tensor& o, Cat keep) {
  const int S = c.size();
  const int64_t T = z.local_tokens(), n = S * T;
  const Heads H = Heads::of(n_h, n_kv, d, S);
  const k::AttnShape sh{static_cast<int>(H.qh), static_cast<int>(H.kh), d};
  A2a K = to_heads(c, k, H.kw, n_kv / H.kh, H.kv_of, Traffic::kv, keep);
  A2a V = to_heads(c, v, H.kw, n_kv / H.kh, H.kv_of, Traffic::kv, keep);
  A2a Q = to_heads(c, make_q(), H.qw, S, H.q_of, Traffic::acts, keep);  // while K, V travel
  K.req.wait();
  V.req.wait();
  Q.req.wait();
  UlyssesAct u{std::move(Q.recv), std::move(K.recv), std::move(V.recv),
               Tensor::empty({n, H.qw}, block::elem(), keep),
               Tensor::empty({H.qh, n}, DType::f32, keep)};
  K.send = V.send = Q.send = Tensor();
  for (int64_t bb = 0; bb < z.B; ++bb) {
    const auto qs = all_qsegs(z, bb);
    const auto ks = all_kvsegs(z, bb, F(u.K), F(u.V), nullptr, nullptr, H.kw);
    k::flash_attn_fwd(F(u.O), F32(u.lse), n, F(u.Q), H.qw, qs.data(), static_cast<int>(qs.size()),
                      ks.data(), static_cast<int>(ks.size()), sh, scale);
  }
  A2a Ob = from_heads(c, u.O, H.qw, Traffic::acts);
  Ob.req.wait();
  unblock(o, Ob.recv, T, S, H.qw);
  return u;
}

}  // namespace origami::spattn
