#include "infer/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/device.h"
#include "core/error.h"
#include "core/trace.h"
#include "infer/internal.h"
#include "kernels/dispatch.h"

namespace origami::infer {

using k::AttnShape;
using k::QSeg;
using k::Trans;
using namespace detail;

void KvCache::init(int64_t layers, int64_t b, int64_t cap, int64_t kv) {
  B = b, capacity = cap, kvd = kv;
  k.clear(), v.clear(), positions.clear();
  for (int64_t l = 0; l < layers; ++l) {
    k.push_back(Tensor::zeros({B, capacity, kvd}, block::elem(), Cat::activations));
    v.push_back(Tensor::zeros({B, capacity, kvd}, block::elem(), Cat::activations));
  }
}

int64_t KvCache::append(int64_t pos) {
  if (size() >= capacity)
    fail("KV cache full: ", capacity, " slots on this rank, position ", pos,
         " does not fit (internal: the capacity comes from cache_capacity)");
  positions.push_back(pos);
  return size() - 1;
}

k::Ptr KvCache::k_row(size_t layer, int64_t b, int64_t slot) {
  return F(k[layer]) + (b * capacity + slot) * kvd;
}
k::Ptr KvCache::v_row(size_t layer, int64_t b, int64_t slot) {
  return F(v[layer]) + (b * capacity + slot) * kvd;
}

void KvCache::write(size_t layer, k::CPtr kp, k::CPtr vp, int64_t w,
                    const std::vector<int64_t>& src_rows, const std::vector<int64_t>& b,
                    const std::vector<int64_t>& slot, const std::vector<int64_t>& blk) {
  ORIGAMI_CHECK(w > 0 && kvd % w == 0, "KV cache write: width ", w, " does not divide ", kvd);
  std::vector<int64_t> rows(src_rows.size());
  for (size_t i = 0; i < rows.size(); ++i)
    rows[i] = (b[i] * capacity + slot[i]) * (kvd / w) + (blk.empty() ? 0 : blk[i]);
  const int64_t n = static_cast<int64_t>(rows.size());
  k::index_copy_rows(F(k[layer]), kp, rows.data(), src_rows.data(), n, w);
  k::index_copy_rows(F(v[layer]), vp, rows.data(), src_rows.data(), n, w);
}

std::vector<int64_t> prefill_counts(int64_t S, int D) {
  const int64_t c = padded(S, D) / (2 * D);
  std::vector<int64_t> n(static_cast<size_t>(D));
  for (int r = 0; r < D; ++r)
    for (int64_t q : {static_cast<int64_t>(r), static_cast<int64_t>(2 * D - 1 - r)})
      n[static_cast<size_t>(r)] += std::clamp<int64_t>(S - q * c, 0, c);
  return n;
}

int owner_of(const std::vector<int64_t>& counts, int64_t p) {
  const int D = static_cast<int>(counts.size());
  int best = -1;
  for (int i = 0; i < D; ++i) {  // from p mod D round the ranks: the first with the fewest wins
    const int r = static_cast<int>((p + i) % D);
    if (best < 0 || counts[static_cast<size_t>(r)] < counts[static_cast<size_t>(best)]) best = r;
  }
  return best;
}

int64_t cache_capacity(int64_t S, int64_t new_tokens, int D) {
  auto n = prefill_counts(S, D);
  // The prefill's own rows need their slots before the rebalance moves some away.
  const int64_t first = *std::max_element(n.begin(), n.end());
  n = balanced_counts(n);
  for (int64_t p = S; p < S + new_tokens; ++p) ++n[static_cast<size_t>(owner_of(n, p))];
  return std::max(first, *std::max_element(n.begin(), n.end()));
}

TspDecoder::TspDecoder(const ModelConfig& c, Comm& comm, TspParams params, int64_t B,
                       int64_t max_new)
    : cfg_(c),
      comm_(comm),
      p_(std::move(params)),
      t_(TspDims::of(c, comm.size())),
      D_(comm.size()),
      r_(comm.rank()),
      B_(B),
      max_new_(max_new),
      engine_(c, comm, TspOptions{}) {
  make_rope_tables(c, cos_, sin_);
}

namespace {
// The prefill's KV sink: rows of local positions below S go to their slots.
struct PrefillSink : KvSink {
  KvCache* cache;
  std::vector<int64_t> slot_of_row;  // per local row: its slot, or -1 (padding)
  int64_t rows_per_seq = 0, d = 0;
  void store(int layer, int64_t head0, int64_t heads, k::CPtr k, k::CPtr v) override {
    const int64_t w = heads * d, T = static_cast<int64_t>(slot_of_row.size());
    ORIGAMI_CHECK(head0 % heads == 0, "KV sink: head ", head0, " starts no ", heads, "-head block");
    std::vector<int64_t> src, bs, slots;  // the real (not padding) rows, into block head0/heads
    for (int64_t t = 0; t < T; ++t) {
      const int64_t slot = slot_of_row[static_cast<size_t>(t)];
      if (slot >= 0) src.push_back(t), bs.push_back(t / rows_per_seq), slots.push_back(slot);
    }
    cache->write(static_cast<size_t>(layer), k, v, w, src, bs, slots,
                 std::vector<int64_t>(src.size(), head0 / heads));
  }
};
}  // namespace

std::vector<int64_t> Padding::positions(int64_t B, int64_t S) const {
  std::vector<int64_t> p(static_cast<size_t>(B * S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) p[static_cast<size_t>(b * S + s)] = rope(b, s);
  return p;
}

std::vector<int64_t> Padding::lo(int64_t b, int64_t p0, int64_t n) const {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = p0 + i < of(b) ? 0 : of(b);
  return v;
}

std::vector<float> TspDecoder::prefill(const std::vector<int64_t>& ids, int64_t S,
                                       const Padding& pad) {
  pad_ = pad;
  const int64_t Sp = padded(S, D_), h = t_.h;
  if (S < 1) fail("prefill: the prompt is empty");
  if (Sp > cfg_.max_position_embeddings)
    fail("the prompt of ", S, " tokens, padded to ", Sp, " (a multiple of 2·tsp=", 2 * D_,
         "), exceeds max_position_embeddings=", cfg_.max_position_embeddings);
  Batch g;
  g.B = B_, g.S = Sp;
  for (int64_t b = 0; b < B_; ++b)
    for (int64_t s = 0; s < Sp; ++s) {
      g.inputs.push_back(s < S ? ids[static_cast<size_t>(b * S + s)] : 0);
      g.targets.push_back(-1);
    }
  if (!pad.pads.empty()) set_positions(g, pad.positions(B_, Sp), "the prompts' attention_mask");
  const Batch local = engine_.shard_batch(g);
  const Zigzag z{B_, Sp, D_, r_};
  // Slots: this rank's positions below S in ascending order (chunk r, then chunk 2D-1-r).
  const std::vector<int64_t> pos = z.positions();  // [B, 2, c]
  const int64_t per_seq = 2 * z.chunk();
  cache_.init(static_cast<int64_t>(p_.layers.size()), B_, cache_capacity(S, max_new_, D_),
              cfg_.kv_dim());
  PrefillSink sink;
  sink.cache = &cache_;
  sink.rows_per_seq = per_seq, sink.d = t_.d;
  std::vector<int64_t> slot(static_cast<size_t>(per_seq), -1);
  for (int64_t i = 0; i < per_seq; ++i)
    if (pos[static_cast<size_t>(i)] < S)
      slot[static_cast<size_t>(i)] = cache_.append(pos[static_cast<size_t>(i)]);
  for (int64_t t = 0; t < B_ * per_seq; ++t)
    sink.slot_of_row.push_back(slot[static_cast<size_t>(t % per_seq)]);
  counts_ = prefill_counts(S, D_);
  Tensor yf = engine_.forward_final(p_, local, &sink);
  rebalance(cache_, counts_, comm_);
  // The last prompt position's final hidden state, from the rank that holds it, to all.
  CommScope ctx(comm_, kWhereHead, Phase::fwd);
  const int64_t c = z.chunk(), q = (S - 1) / c;
  const int holder = static_cast<int>(q < D_ ? q : 2 * D_ - 1 - q);
  Tensor last = ws({B_, h});  // final-norm output: the element type
  if (holder == r_) {
    const int k = q < D_ ? 0 : 1;
    for (int64_t b = 0; b < B_; ++b)
      copy_bytes((F(last) + b * h).p, (F(yf) + ((b * 2 + k) * c + (S - 1 - q * c)) * h).p,
                 bytes(h));
  }
  comm_.ibcast(last.raw(), bytes(B_ * h), holder, Traffic::acts).wait();
  pos_ = S;
  return logits_sharded(comm_, last, p_.head_or_embed(), B_, t_.Vr, cfg_.vocab_size);
}

std::vector<int64_t> balanced_counts(const std::vector<int64_t>& counts) {
  const int D = static_cast<int>(counts.size());
  int64_t n = 0;
  for (auto c : counts) n += c;
  // floor(n/D) each; the n mod D extra positions stay with the ranks holding the most (the
  // first such ranks on ties): fewest moves.
  std::vector<int> order(static_cast<size_t>(D));
  for (int i = 0; i < D; ++i) order[static_cast<size_t>(i)] = i;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return counts[static_cast<size_t>(a)] > counts[static_cast<size_t>(b)];
  });
  std::vector<int64_t> t(static_cast<size_t>(D), n / D);
  for (int64_t i = 0; i < n % D; ++i) ++t[static_cast<size_t>(order[static_cast<size_t>(i)])];
  return t;
}

std::vector<float> TspDecoder::step(const std::vector<int64_t>& ids) {
  check_step(cfg_, ids, B_, pos_);
  const int64_t h = t_.h;
  Tensor x = embed_sharded(comm_, ids, p_.embed, t_.Vr, h);
  const int owner = owner_of(counts_, pos_);
  ++counts_[static_cast<size_t>(owner)];
  const int64_t slot = owner == r_ ? cache_.append(pos_) : -1;
  for (size_t l = 0; l < p_.layers.size(); ++l) {
    CommScope ctx(comm_, static_cast<int>(l), Phase::fwd);
    TraceSpan span("decode layer " + std::to_string(l));
    layer_step(l, x, owner, slot);
  }
  Tensor yf = ws({B_, h}), n = ws({B_, h}), rstd = ws32({B_});
  k::rmsnorm_fwd(F(yf), F(n), F32(rstd), F(x), F(p_.final_norm), B_, h, cfg_.rms_norm_eps);
  ++pos_;
  return logits_sharded(comm_, yf, p_.head_or_embed(), B_, t_.Vr, cfg_.vocab_size);
}

void TspDecoder::layer_step(size_t l, Tensor& x, int owner, int64_t slot) {
  const TspLayer& W = p_.layers[l];
  const int64_t h = t_.h, d = t_.d, qw = t_.q_rows, kw = t_.kv_rows, nq = t_.nq_loc;
  const int64_t qd = cfg_.q_dim(), B = B_;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  std::vector<int64_t> pos(static_cast<size_t>(B));  // RoPE positions
  for (int64_t b = 0; b < B; ++b) pos[static_cast<size_t>(b)] = pad_.rope(b, pos_);
  Tensor y = ws({B, h}), n = ws({B, h}), rstd = ws32({B});
  k::rmsnorm_fwd(F(y), F(n), F32(rstd), F(x), F(W.in_norm), B, h, eps);
  // Own head group: q, and [k | v] per row (what the owner of the position stores).
  const CPtr pk = F(W.attn);
  Tensor q = ws({B, qw}), kv = ws({B, 2 * kw});
  k::linear_fwd(F(q), F(y), pk, B, qw, h);
  {
    Tensor k = ws({B, kw}), v = ws({B, kw});
    k::linear_fwd(F(k), F(y), pk + t_.off_k(), B, kw, h);
    k::linear_fwd(F(v), F(y), pk + t_.off_v(), B, kw, h);
    k::rope_fwd(F(q), qw, pos.data(), B, static_cast<int>(nq), static_cast<int>(d), F32(cos_),
                F32(sin_));
    k::rope_fwd(F(k), kw, pos.data(), B, static_cast<int>(t_.nkv_loc), static_cast<int>(d),
                F32(cos_), F32(sin_));
    // kv as rows of kw: k of sequence b is row 2b, its v row 2b + 1
    std::vector<int64_t> even(static_cast<size_t>(B)), odd(even.size());
    for (int64_t b = 0; b < B; ++b)
      even[static_cast<size_t>(b)] = 2 * b, odd[static_cast<size_t>(b)] = 2 * b + 1;
    k::index_copy_rows(F(kv), F(k), even.data(), nullptr, B, kw);
    k::index_copy_rows(F(kv), F(v), odd.data(), nullptr, B, kw);
  }
  Tensor qall = ws({D_, B, qw});
  Request gq = comm_.iallgather(q.raw(), qall.raw(), bytes(B * qw), Traffic::acts);
  // The new k, v of every head group to the owner of the position.
  if (owner == r_) {
    Tensor kvall = ws({D_, B, 2 * kw});
    std::vector<Request> rq;
    for (int j = 0; j < D_; ++j)
      if (j != r_)
        rq.push_back(
            comm_.irecv((F(kvall) + j * B * 2 * kw).p, bytes(B * 2 * kw), j, 7, Traffic::kv));
    copy_bytes((F(kvall) + r_ * B * 2 * kw).p, kv.raw(), bytes(B * 2 * kw));
    for (auto& r : rq) r.wait();
    // kvall as rows of kw: k of (j, b) is row 2(jB + b), v the row after; head group j is the
    // j-th kw-wide block of a cache row.
    std::vector<int64_t> src, bs, blk;
    for (int j = 0; j < D_; ++j)
      for (int64_t b = 0; b < B; ++b)
        src.push_back(2 * (j * B + b)), bs.push_back(b), blk.push_back(j);
    cache_.write(l, F(kvall), F(kvall) + kw, kw, src, bs, std::vector<int64_t>(src.size(), slot),
                 blk);
  } else {
    comm_.isend(kv.raw(), bytes(B * 2 * kw), owner, 7, Traffic::kv).wait();
  }
  gq.wait();
  // All heads over this rank's cached positions (all at or before pos_: no mask needed beyond
  // "every cached key"), as a query at position n-1 over keys 0..n-1.
  Tensor qf = ws({B, qd}), o = ws32({B, qd});  // partial: fp32
  Tensor lse = ws32({cfg_.num_attention_heads, B});
  {  // qf as rows of qw: head group j of sequence b is row bD + j, from row jB + b of qall
    std::vector<int64_t> dst, src;
    for (int j = 0; j < D_; ++j)
      for (int64_t b = 0; b < B; ++b) dst.push_back(b * D_ + j), src.push_back(j * B + b);
    k::index_copy_rows(F(qf), F(qall), dst.data(), src.data(), D_ * B, qw);
  }
  attend_cache(cache_, l, cfg_, F(qf), F32(o), F32(lse), pad_);
  // Partials of head group j to rank j: [B, qw] of o, then [nq, B] of lse (fp32).
  const int64_t blk = B * qw + nq * B, fb = static_cast<int64_t>(sizeof(float));
  Tensor sendb = ws32({D_, blk}), recvb = ws32({D_, blk});
  std::vector<int64_t> rows(static_cast<size_t>(B));  // o as rows of qw: (b, j) is row bD + j
  for (int j = 0; j < D_; ++j) {
    float* dst = F32(sendb) + j * blk;
    for (int64_t b = 0; b < B; ++b) rows[static_cast<size_t>(b)] = b * D_ + j;
    k::index_copy_rows<float>(dst, F32(o), nullptr, rows.data(), B, qw);
    copy_bytes(dst + B * qw, F32(lse) + j * nq * B, static_cast<size_t>(fb * nq * B));
  }
  std::vector<int64_t> counts(static_cast<size_t>(D_), fb * blk), off(static_cast<size_t>(D_));
  for (int j = 0; j < D_; ++j) off[static_cast<size_t>(j)] = j * fb * blk;
  comm_
      .ialltoallv(sendb.raw(), counts.data(), off.data(), recvb.raw(), counts.data(), off.data(),
                  Traffic::acts)
      .wait();
  // Merge the D partials of this rank's heads by log-sum-exp, in rank order.
  Tensor om = ws({B, qw});
  merge_partials(F32(recvb), D_, B, nq, d, F(om));
  tp_tail(comm_, t_, W, F(om), x, B, eps);
}

void detail::tp_tail(Comm& comm, const TspDims& t, const TspLayer& W, CPtr o, Tensor& x, int64_t T,
                     float eps) {
  const int64_t h = t.h, qw = t.q_rows, Ir = t.Ir;
  // W_o,r is [h, q_rows] columns at off_o of the packet; the partial sums are fp32.
  Tensor part = ws32({T, h});
  k::gemm(Trans::N, Trans::T, T, h, qw, 1.0f, o, qw, F(W.attn) + t.off_o(), qw, 0.0f, F(part), h);
  comm.iallreduce(F32(part), T * h, Traffic::acts).wait();
  k::add_inplace(F(x), F(part), T * h);
  Tensor y = ws({T, h}), n = ws({T, h}), rstd = ws32({T});
  k::rmsnorm_fwd(F(y), F(n), F32(rstd), F(x), F(W.post_norm), T, h, eps);
  const CPtr pm = F(W.mlp);
  Tensor g = ws({T, Ir}), u = ws({T, Ir}), a = ws({T, Ir});
  const block::MlpShard Ws{pm, pm + Ir * h, pm + 2 * Ir * h, Ir};
  block::mlp_up(F(g), F(u), F(y), Ws, T, h);
  block::mlp_down(F(part), 0.0f, F(a), F(g), F(u), Ws, T, h);
  comm.iallreduce(F32(part), T * h, Traffic::acts).wait();
  k::add_inplace(F(x), F(part), T * h);
}

void detail::rebalance(KvCache& cache_, std::vector<int64_t>& counts_, Comm& comm_) {
  const int D_ = comm_.size(), r_ = comm_.rank();
  const int64_t B_ = cache_.B;
  const auto target = balanced_counts(counts_);
  if (target == counts_) return;
  CommScope ctx(comm_, kWhereStep, Phase::fwd);
  // Moves (src, dst, n): surplus ranks in rank order hand their highest positions to deficit
  // ranks in rank order.
  struct Move {
    int src, dst;
    int64_t n;
  };
  std::vector<Move> moves;
  std::vector<int64_t> have = counts_;
  for (int s = 0, d = 0; s < D_; ++s)
    while (have[static_cast<size_t>(s)] > target[static_cast<size_t>(s)]) {
      while (have[static_cast<size_t>(d)] >= target[static_cast<size_t>(d)]) ++d;
      const int64_t n = std::min(have[static_cast<size_t>(s)] - target[static_cast<size_t>(s)],
                                 target[static_cast<size_t>(d)] - have[static_cast<size_t>(d)]);
      moves.push_back({s, d, n});
      have[static_cast<size_t>(s)] -= n, have[static_cast<size_t>(d)] += n;
    }
  const int64_t L = static_cast<int64_t>(cache_.k.size()), kvd = cache_.kvd;
  const int64_t rb = bytes(kvd);  // a k or v row of the cache's type
  for (const Move& m : moves) {
    if (m.src != r_ && m.dst != r_) continue;
    // Per slot: its position (a 4-byte float), then per layer and sequence its k and v rows.
    const int64_t per = static_cast<int64_t>(sizeof(float)) + L * B_ * 2 * rb;
    Tensor buf = ws32({(m.n * per + 3) / 4});
    auto at = [&](int64_t i, int64_t l, int64_t b) {
      return static_cast<char*>(buf.raw()) + i * per + sizeof(float) + (l * B_ + b) * 2 * rb;
    };
    if (m.src == r_) {
      const int64_t first = cache_.size() - m.n;
      for (int64_t i = 0; i < m.n; ++i) {
        const int64_t slot = first + i;
        const float pos = static_cast<float>(cache_.positions[static_cast<size_t>(slot)]);
        copy_bytes(static_cast<char*>(buf.raw()) + i * per, &pos, sizeof pos);  // maybe device
        for (int64_t l = 0; l < L; ++l)
          for (int64_t b = 0; b < B_; ++b) {
            copy_bytes(at(i, l, b), cache_.k_row(static_cast<size_t>(l), b, slot).p, rb);
            copy_bytes(at(i, l, b) + rb, cache_.v_row(static_cast<size_t>(l), b, slot).p, rb);
          }
      }
      comm_.isend(buf.raw(), m.n * per, m.dst, 8, Traffic::kv).wait();
      cache_.positions.resize(static_cast<size_t>(first));
    } else {
      comm_.irecv(buf.raw(), m.n * per, m.src, 8, Traffic::kv).wait();
      for (int64_t i = 0; i < m.n; ++i) {
        float pos = 0;
        copy_bytes(&pos, static_cast<char*>(buf.raw()) + i * per, sizeof pos);
        const int64_t slot = cache_.append(static_cast<int64_t>(pos));
        for (int64_t l = 0; l < L; ++l)
          for (int64_t b = 0; b < B_; ++b) {
            copy_bytes(cache_.k_row(static_cast<size_t>(l), b, slot).p, at(i, l, b), rb);
            copy_bytes(cache_.v_row(static_cast<size_t>(l), b, slot).p, at(i, l, b) + rb, rb);
          }
      }
    }
  }
  counts_ = target;
}

std::vector<float> detail::logits_sharded(Comm& comm, const Tensor& yf, const Tensor& shard,
                                          int64_t B, int64_t Vr, int64_t V) {
  CommScope ctx(comm, kWhereHead, Phase::fwd);
  const int D = comm.size();
  const int64_t h = yf.shape()[1];
  Tensor mine = ws32({B, Vr}), all = ws32({D, B, Vr});  // logits: fp32
  k::linear_fwd(F(mine), F(yf), F(shard), B, Vr, h);
  comm.iallgather(mine.raw(), all.raw(), static_cast<int64_t>(mine.nbytes()), Traffic::embed_head)
      .wait();
  const std::vector<float> a = to_host(F32(all), D * B * Vr);  // sampling runs on the host
  std::vector<float> out(static_cast<size_t>(B * V));
  for (int r = 0; r < D; ++r)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Vr && r * Vr + i < V; ++i)
        out[static_cast<size_t>(b * V + r * Vr + i)] = a[static_cast<size_t>((r * B + b) * Vr + i)];
  return out;
}

void detail::check_step(const ModelConfig& c, const std::vector<int64_t>& ids, int64_t B,
                        int64_t pos) {
  if (static_cast<int64_t>(ids.size()) != B) fail("decode step: ", ids.size(), " ids for B=", B);
  if (pos >= c.max_position_embeddings)
    fail("decode: position ", pos, " reaches max_position_embeddings=", c.max_position_embeddings);
  for (int64_t id : ids)
    if (id < 0 || id >= c.vocab_size)
      fail("decode: token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
}

Tensor detail::embed_sharded(Comm& comm, const std::vector<int64_t>& ids, const Tensor& shard,
                             int64_t Vr, int64_t h) {
  CommScope ctx(comm, kWhereEmbed, Phase::fwd);
  const int r = comm.rank();
  const int64_t B = static_cast<int64_t>(ids.size());
  Tensor x = Tensor::zeros({B, h}, DType::f32, Cat::workspace);
  std::vector<int64_t> rows, local;  // the sequences whose id this rank's shard holds
  for (int64_t b = 0; b < B; ++b) {
    const int64_t id = ids[static_cast<size_t>(b)];
    if (id / Vr == r) rows.push_back(b), local.push_back(id - r * Vr);
  }
  k::index_copy_rows(F(x), F(shard), rows.data(), local.data(), static_cast<int64_t>(rows.size()),
                     h);  // bf16 rows widened exactly
  comm.iallreduce(F32(x), B * h, Traffic::embed_head).wait();
  return x;
}

void detail::attend_cache(KvCache& cache, size_t l, const ModelConfig& c, CPtr q, float* o,
                          float* lse, const Padding& pad) {
  const int64_t B = cache.B, n = cache.size(), qd = c.q_dim(), nh = c.num_attention_heads;
  if (n == 0) {
    zero_bytes(o, sizeof(float) * static_cast<size_t>(B * qd));
    const std::vector<float> none(static_cast<size_t>(nh * B),
                                  -std::numeric_limits<float>::infinity());
    copy_bytes(lse, none.data(), sizeof(float) * none.size());
    return;
  }
  const int d = static_cast<int>(c.head_dim());
  const AttnShape sh{static_cast<int>(nh), static_cast<int>(c.num_key_value_heads), d};
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  zero_bytes(o, sizeof(float) * static_cast<size_t>(B * qd));
  for (int64_t b = 0; b < B; ++b) {
    QSeg qs{b, n - 1, 1};  // a query after every cached key
    // the runs of slots at or past the padding (slots are not in position order after the
    // prefill's rebalance); without padding, one segment of every slot
    std::vector<k::Kv> ks;
    for (int64_t s0 = 0; s0 < n;) {
      if (cache.positions[static_cast<size_t>(s0)] < pad.of(b)) {
        ++s0;
        continue;
      }
      int64_t s1 = s0 + 1;
      while (s1 < n && cache.positions[static_cast<size_t>(s1)] >= pad.of(b)) ++s1;
      ks.push_back({cache.k_row(l, b, s0), cache.v_row(l, b, s0), cache.kvd, s0, s1 - s0});
      s0 = s1;
    }
    if (ks.empty()) {  // this rank caches none of the sequence's visible positions
      const float none = -std::numeric_limits<float>::infinity();  // o stays 0
      for (int64_t h = 0; h < nh; ++h) copy_bytes(lse + h * B + b, &none, sizeof none);
      continue;
    }
    k::flash_attn_fwd(o, lse, B, q, qd, &qs, 1, ks.data(), static_cast<int>(ks.size()), sh, scale);
  }
}

void detail::merge_partials(const float* dev_blocks, int D, int64_t B, int64_t nh, int64_t d,
                            Ptr dev_out) {
  const int64_t w = nh * d, blk = B * w + nh * B;
  // On the host (B·nh·d per rank: one decode step's attention output): copied over and back,
  // the merged result rounded to the output's type once.
  const std::vector<float> in = to_host(dev_blocks, D * blk);
  std::vector<float> res(static_cast<size_t>(B * w));
  const float* blocks = in.data();
  float* out = res.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < nh; ++c) {
      float m = -std::numeric_limits<float>::infinity();
      for (int i = 0; i < D; ++i) m = std::max(m, blocks[i * blk + B * w + c * B + b]);
      float* o = out + b * w + c * d;
      std::fill(o, o + d, 0.f);
      float wsum = 0.f;
      for (int i = 0; i < D; ++i) {
        const float li = blocks[i * blk + B * w + c * B + b];
        if (li == -std::numeric_limits<float>::infinity()) continue;
        const float e = std::exp(li - m);
        wsum += e;
        const float* oi = blocks + i * blk + b * w + c * d;
        for (int64_t k = 0; k < d; ++k) o[k] += e * oi[k];
      }
      for (int64_t k = 0; k < d; ++k) o[k] /= wsum;
    }
  k::upload(dev_out, out, B * w);
}

std::vector<float> detail::to_host(const float* p, int64_t n) {
  std::vector<float> h(static_cast<size_t>(n));
  copy_bytes(h.data(), p, sizeof(float) * h.size());
  return h;
}

}  // namespace origami::infer
