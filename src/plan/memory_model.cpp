// The memory model as a replay of the engine's buffers (see memory_model.h). Each function below
// mirrors one engine function: the same buffers, in the same order, in the same scopes; a buffer
// is a handle that frees its bytes when its last copy goes (like Tensor). Sizes are in elements;
// `E` is the element size of the chosen dtype.
#include "plan/memory_model.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.h"
#include "parallel/tsp_params.h"

namespace origami::plan {

Dtype parse_dtype(const std::string& s) {
  if (s == "fp32" || s == "f32") return Dtype::f32;
  if (s == "bf16") return Dtype::bf16;
  fail("--dtype=", s, " is not one of: fp32, bf16");
}

namespace {

using Buf = std::shared_ptr<void>;
using Bufs = std::vector<Buf>;

// MemTracker's bookkeeping without memory.
class Sim {
 public:
  explicit Sim(int64_t elem) : E(elem) {}
  Buf alloc(Cat c, int64_t bytes) {
    const int i = static_cast<int>(c);
    live_[i] += bytes;
    total_ += bytes;
    peak_[i] = std::max(peak_[i], live_[i]);
    total_peak_ = std::max(total_peak_, total_);
    return Buf(nullptr, [this, i, bytes](void*) {
      live_[i] -= bytes;
      total_ -= bytes;
    });
  }
  // Elements of the dtype, by category.
  Buf A(int64_t n) { return alloc(Cat::activations, n * E); }
  Buf W(int64_t n) { return alloc(Cat::workspace, n * E); }
  Buf C(int64_t n) { return alloc(Cat::comm, n * E); }
  Buf keep(bool a, int64_t n) { return a ? A(n) : W(n); }
  // The scratch of the communicator's fixed-order all-reduce of n elements of `bytes` each over
  // D ranks (padded copy D·m, reduced block m, received blocks (D−1)·m; m = ⌈n/D⌉), alive while
  // the request is; `hold` keeps it for the caller.
  Bufs allreduce(int D, int64_t n, int64_t bytes) {
    if (D <= 1) return {};
    const int64_t m = (n + D - 1) / D;
    return {alloc(Cat::comm, D * m * bytes), alloc(Cat::comm, m * bytes),
            alloc(Cat::comm, (D - 1) * m * bytes)};
  }
  // The flash-attention kernels' scratch (attention.cpp), one tile set per OpenMP thread, alive
  // during the kernel call: forward BQ·BK + BQ·d + 2·BQ, backward 2·BQ·BK + BQ elements.
  void attn_kernel(bool bwd) {
    constexpr int64_t BQ = 64, BK = 64;
    const int64_t per = bwd ? 2 * BQ * BK + BQ : BQ * BK + BQ * d + 2 * BQ;
    Buf b = alloc(Cat::workspace, threads * per * 4);
  }
  int64_t threads = 1, d = 0;
  // Reduce-scatter of own block n: the D−1 received blocks.
  Buf reduce_scatter(int D, int64_t n) { return D > 1 ? C((D - 1) * n) : Buf(); }
  const int64_t E;
  std::array<int64_t, kNumCats> peak_{};
  int64_t total_peak_ = 0;

 private:
  std::array<int64_t, kNumCats> live_{};
  int64_t total_ = 0;
};

// Expected number of distinct ids among n uniformly random draws from V, within a range of k ids
// (the embedding exchange is data-dependent; corpus text repeats more, so this is an upper
// estimate there).
int64_t distinct(int64_t n, int64_t V, int64_t k) {
  const double p = 1.0 - std::pow(1.0 - 1.0 / static_cast<double>(V), static_cast<double>(n));
  return static_cast<int64_t>(std::llround(static_cast<double>(k) * p));
}

// ---- the single-device model (model.cpp), also each replica of dp=N -------------------------
struct SingleSim {
  Sim& s;
  const ModelConfig& c;
  int64_t T, B, S;
  Bufs block_forward(bool save) {
    const int64_t h = c.hidden_size, I = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
    Bufs a;
    if (save) a.push_back(s.A(T * h));
    a.push_back(s.keep(save, T * h));
    a.push_back(s.keep(save, T));
    {
      Buf y1 = s.W(T * h);
      a.push_back(s.keep(save, T * qd));
      a.push_back(s.keep(save, T * kvd));
      a.push_back(s.keep(save, T * kvd));
    }
    a.push_back(s.keep(save, T * qd));
    a.push_back(s.keep(save, c.num_attention_heads * T));
    s.attn_kernel(false);
    a.push_back(s.keep(save, T * h));
    a.push_back(s.keep(save, T));
    a.push_back(s.keep(save, T * I));
    a.push_back(s.keep(save, T * I));
    { Buf y2 = s.W(T * h); }
    { Buf sw = s.W(T * I); }
    return save ? a : Bufs();
  }
  void block_backward() {
    const int64_t h = c.hidden_size, I = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
    {
      Buf dg = s.W(T * I), du = s.W(T * I);
      { Buf sw = s.W(T * I), da = s.W(T * I); }
      Buf y2 = s.W(T * h), dy2 = s.W(T * h);
    }
    Buf dq = s.W(T * qd), dk = s.W(T * kvd), dv = s.W(T * kvd);
    {
      Buf dout = s.W(T * qd);
      s.attn_kernel(true);
    }
    Buf y1 = s.W(T * h), dy1 = s.W(T * h);
  }
  void head() {
    const int64_t h = c.hidden_size, V = c.vocab_size;
    const int64_t C = std::max<int64_t>(16, std::min<int64_t>(T, (int64_t{1} << 21) / V));
    Bufs b{s.W(T * h), s.W(T), s.W(T * h), s.W(C * V), s.W(C), s.W(C), s.W(C), s.W(C), s.W(T * h)};
  }
  void step(Recompute rc) {
    const int64_t h = c.hidden_size;
    const size_t L = static_cast<size_t>(c.num_hidden_layers);
    const bool full = rc == Recompute::full;
    Buf x = s.A(T * h);
    std::vector<Bufs> saved(L);
    for (size_t l = 0; l < L; ++l) {
      if (full) {
        saved[l] = {s.A(T * h)};
        block_forward(false);
      } else {
        saved[l] = block_forward(true);
      }
    }
    Buf dx = s.A(T * h);
    head();
    x.reset();
    for (size_t l = L; l-- > 0;) {
      if (full) {
        Buf xin = s.W(T * h);
        Bufs a = block_forward(true);
        block_backward();
      } else {
        block_backward();
      }
      saved[l].clear();
    }
  }
};

// ---- TSP and FSDP+SP (tsp.cpp, tsp_attention.cpp, tsp_mlp.cpp, ring.cpp, tsp_vocab.cpp) ----
struct TspSim {
  Sim& s;
  const ModelConfig& c;
  const TspDims& t;
  int D;
  int64_t T, B, S, N;  // local tokens, batch, sequence, head buckets
  bool fsdp, keep_packets;
  Depths dep;
  // ring_backward's buffers (ring.cpp): the weight buffers (one for D = 2), in the backward the
  // accumulators (one for D = 2) and the home buffer. Those two outlive the ring as its tail
  // (RingTail), until the next backward ring has run (or the step's last ring has).
  // `scratch` elements are allocated during each step's compute (the fused recompute's g, u).
  Bufs tail;
  bool fused = false;  // --fused-mlp-recompute
  // The backward ring; before_last runs where the engine's last step starts computing.
  void ring(int64_t n, bool bwd, int64_t scratch = 0,
            const std::function<void()>& before_last = {}) {
    if (D == 1) {
      if (before_last) before_last();
      if (scratch) Buf x = s.W(scratch);
      return;
    }
    Bufs w, t;
    for (int i = 0; i < (D > 2 ? dep.ring_weight_bufs : 1); ++i) w.push_back(s.C(n));
    if (!bwd) return;
    for (int i = 0; i < (D > 2 ? dep.ring_acc_bufs : 1); ++i) t.push_back(s.C(n));
    t.push_back(s.C(n));
    if (before_last) before_last();
    if (scratch) Buf x = s.W(scratch);
    w.clear();
    tail = std::move(t);  // the previous tail is finished (freed) here
  }
  // ring_prefetch / gathered_prefetch: the MLP ring's first weight buffers.
  Bufs ring_start(int64_t n) {
    Bufs w;
    if (fsdp) return {s.C(D * n)};
    if (D == 1) return w;
    for (int i = 0; i < (D > 2 ? dep.ring_weight_bufs : 1); ++i) w.push_back(s.C(n));
    return w;
  }
  // attn_start: packets 0 and 1 (FSDP+SP: the layer), or into the kept packets.
  struct Packets {
    Buf layer;
    std::vector<Buf> buf;
  };
  void post(Packets& st, int j, Bufs* into) {
    if (fsdp || j >= D) return;
    Buf& b = st.buf[static_cast<size_t>(j % dep.attn_packets)];
    if (into)
      into->push_back(s.C(t.attn_size()));
    else if (!b)
      b = s.C(t.attn_size());
  }
  Packets attn_start(Bufs* into, bool have) {
    Packets st{Buf(), std::vector<Buf>(static_cast<size_t>(dep.attn_packets))};
    if (fsdp) {
      st.layer = s.C(D * t.attn_size());
    } else if (!have) {
      post(st, 0, into);
      post(st, 1, into);
    }
    return st;
  }
  // Units u = (group, bucket): K/V of u+1 gathered while u computes; packet j+2 in flight; the
  // MLP ring's first shard posted when the last unit starts (into `mlp_start`).
  void attn_fwd(bool a, Bufs* acts, Bufs* kept, Packets* start, Bufs& mlp_start, bool mlp) {
    const int64_t qb = t.nq_loc / N, qw = t.q_rows / N, kw = t.kv_rows / N;
    Packets st = start ? std::move(*start) : attn_start(kept, false);
    auto stage_a = [&]() {
      Bufs un{s.W(D * T * kw), s.W(D * T * kw)};
      if (a) acts->insert(acts->end(), {s.A(T * kw), s.A(T * kw)});
      return un;
    };
    const int64_t U = D * N;
    Bufs cur = stage_a();
    for (int64_t u = 0; u < U; ++u) {
      const int j = static_cast<int>(u / N);
      if (u % N == 0) post(st, j + 2, kept);
      Bufs nxt;
      if (u + 1 < U) nxt = stage_a();
      if (u + 1 == U && mlp) mlp_start = ring_start(t.mlp_size());
      Buf q = s.keep(a, T * qw), o = s.keep(a, T * qw), lse = s.keep(a, qb * T);
      s.attn_kernel(false);
      if (a) acts->insert(acts->end(), {q, o, lse});
      cur = nxt;
    }
  }
  // The gather of unit u+1 and the reduce-scatter of u−1 in flight during the flash backward of
  // u (tsp_attention.cpp); unit 0's K/V and packets 0, 1 posted during the MLP's last step
  // (`st`); the last reduce left in flight (attn_tail) until the next attn_bwd or the step's end.
  Bufs attn_tail;
  int root = 0;  // the rank replayed
  struct BwdStart {
    Packets p;
    Bufs first;
  };
  BwdStart attn_bwd_prefetch(bool have_kept) {
    const int64_t kw = t.kv_rows / N;
    BwdStart st{attn_start(nullptr, have_kept), {}};
    st.first = {s.W(D * T * kw), s.W(D * T * kw)};
    return st;
  }
  void attn_bwd(bool have_kept, BwdStart st) {
    const int64_t P = t.attn_size(), qw = t.q_rows / N, kw = t.kv_rows / N;
    attn_tail.clear();
    Buf part0 = fsdp ? s.C(D * P) : s.C(P);
    Buf part1 = !fsdp && D > 1 ? s.C(P) : Buf();
    Buf sum = s.C(P);
    Buf red;  // the received copies at the root of the reduce in flight
    Bufs pend;
    int64_t pend_u = -1;
    auto stage_c = [&] {
      if (pend_u < 0) return;
      const int64_t j = pend_u / N, b = pend_u % N;
      pend.clear();
      pend_u = -1;
      if (b + 1 < N || fsdp) return;
      red = j == root && D > 1 ? s.C((D - 1) * P) : Buf();  // this rank is group root's root
    };
    Bufs cur = std::move(st.first);
    for (int64_t u = 0; u < D * N; ++u) {
      const int j = static_cast<int>(u / N);
      if (u % N == 0 && !fsdp && j >= 1 && !have_kept) post(st.p, j + 1, nullptr);
      Buf dO = s.W(T * qw);
      Bufs nxt;
      if (u + 1 < D * N) nxt = {s.W(D * T * kw), s.W(D * T * kw)};
      Buf dKg = s.W(D * T * kw), dVg = s.W(D * T * kw), dq = s.W(T * qw);
      s.attn_kernel(true);
      cur = std::move(nxt);
      Buf dk = s.W(T * kw), dv = s.W(T * kw);
      Buf rk = s.reduce_scatter(D, T * kw), rv = s.reduce_scatter(D, T * kw);
      stage_c();
      pend = {dKg, dVg, dk, dv, rk, rv};
      pend_u = u;
    }
    stage_c();
    if (fsdp) red = s.reduce_scatter(D, P);
    attn_tail = {red, part0, part1, sum};
  }
  void mlp(bool a, Bufs* acts, bool bwd, Bufs* start = nullptr,
           const std::function<void()>& before_last = {}) {
    const int64_t Ir = t.Ir, M = t.mlp_size();
    Bufs w;
    if (!bwd) {
      w.push_back(s.W(T * Ir));
      for (int k = 0; k < D; ++k) {
        if (k == D - 1 && before_last) before_last();
        Buf g = s.keep(a, T * Ir), u = s.keep(a, T * Ir);
        if (a) acts->insert(acts->end(), {g, u});
      }
      if (start) start->clear();  // the ring's weight buffers (FSDP+SP: the gathered layer)
      return;
    }
    for (int i = 0; i < 4; ++i) w.push_back(s.W(T * Ir));
    if (fsdp) {
      Buf all = s.C(D * M);
      Buf part = s.C(D * M);
      if (before_last) before_last();
      if (fused) Buf x = s.W(2 * T * Ir);
      Buf sum = s.C(M);
      Buf tmp = s.reduce_scatter(D, M);
      return;
    }
    ring(M, bwd, fused ? 2 * T * Ir : 0, before_last);
  }
  Bufs block_fwd(bool a, Bufs* kept, bool with_mlp = true, Packets* start = nullptr,
                 Packets* next = nullptr) {
    const int64_t h = t.h;
    Bufs A{s.keep(a, T * h), s.keep(a, T)};
    Bufs mlp_start;
    {
      Buf y1 = s.W(T * h);
      attn_fwd(a, &A, kept, start, mlp_start, with_mlp);
    }
    A.push_back(s.keep(a, T * h));
    A.push_back(s.keep(a, T));
    Buf y2 = s.W(T * h);
    if (with_mlp)
      mlp(a, &A, false, &mlp_start, [&] {
        if (next) *next = attn_start(nullptr, false);
      });
    return a ? A : Bufs();
  }
  void block_bwd(bool have_kept) {
    const int64_t h = t.h;
    BwdStart st;
    {
      Buf y2 = s.W(T * h), dy2 = s.W(T * h);
      mlp(false, nullptr, true, nullptr, [&] { st = attn_bwd_prefetch(have_kept); });
    }
    Buf y1 = s.W(T * h), dy1 = s.W(T * h);
    attn_bwd(have_kept, std::move(st));
  }
  void embed(bool bwd) {  // all-to-all-v buffers (expected sizes, see distinct())
    const int64_t h = t.h, V = c.vocab_size;
    const int64_t send = D * distinct(T, V, t.Vr) * h + 1, recv = distinct(T, V, V) * h + 1;
    Buf a = s.C(bwd ? recv : send), b = s.C(bwd ? send : recv);
  }
  void head(bool grads) {
    const int64_t Vr = t.Vr, h = t.h;
    const int64_t C = std::max<int64_t>(16, std::min<int64_t>(T, (int64_t{1} << 21) / Vr));
    Bufs w{s.W(C * Vr), s.W(T), s.W(T), s.W(T), s.W(T)};
    ring(Vr * h, false);
    if (grads) ring(Vr * h, true);
  }
  void step(Recompute rc) {
    const int64_t h = t.h;
    const size_t L = static_cast<size_t>(c.num_hidden_layers);
    const bool full = rc == Recompute::full;
    Buf x = s.A(T * h);
    embed(false);
    std::vector<Bufs> saved(L);
    Packets start;  // this layer's packets, posted during the previous layer's MLP
    for (size_t l = 0; l < L; ++l) {
      Buf xs = s.A(T * h);
      Packets next;
      saved[l] =
          block_fwd(!full, nullptr, true, l > 0 ? &start : nullptr, l + 1 < L ? &next : nullptr);
      saved[l].push_back(xs);
      start = std::move(next);
    }
    Buf dx = s.A(T * h);
    {
      Bufs w{s.W(T * h), s.W(T), s.W(T * h), s.W(T * h)};
      head(true);
    }
    x.reset();
    for (size_t l = L; l-- > 0;) {
      Bufs kept;
      if (full) {
        Buf xin = s.W(T * h);
        Bufs a = block_fwd(true, keep_packets ? &kept : nullptr, !fused);
        saved[l] = a;
      }
      block_bwd(keep_packets);
      saved[l].clear();
    }
    tail.clear();
    attn_tail.clear();
    embed(true);
  }
};

// ---- TP(T) + SP(Σ) (tpsp.cpp) -----------------------------------------------------------------
struct TpSpSim {
  Sim& s;
  const ModelConfig& c;
  const TspDims& t;
  int T, Sg;
  bool seqp;
  int64_t Ts, Tl, N;
  Buf vocab_scratch;
  void reduce_into() {  // partial [Ts, h] -> this rank's rows
    const int64_t h = t.h;
    if (T > 1 && seqp) {
      Buf r = s.W(Tl * h), tmp = s.reduce_scatter(T, Tl * h);
      return;
    }
    if (T > 1) Bufs ar = s.allreduce(T, Ts * h, s.E);
  }
  Buf gather() { return seqp ? s.W(Ts * t.h) : Buf(); }
  Buf norm_fwd(bool keep, Bufs& A) {
    const int64_t h = t.h;
    A.push_back(s.keep(keep, Tl));
    Buf y = s.W(Tl * h);
    if (!seqp) {
      A.push_back(s.keep(keep, Ts * h));
      return y;
    }
    Buf n = s.W(Tl * h);
    A.push_back(s.keep(keep, Ts * h));
    return s.W(Ts * h);
  }
  void attn_fwd(bool a, Bufs& A) {
    const int64_t h = t.h, qb = t.nq_loc / N, qw = t.q_rows / N, kw = t.kv_rows / N;
    Buf P = s.W(Ts * h);
    for (int64_t b = 0; b < N; ++b) {
      Buf Kg = s.W(Sg * Ts * kw), Vg = s.W(Sg * Ts * kw), q = s.keep(a, Ts * qw);
      Buf k, v;
      if (a) k = s.A(Ts * kw), v = s.A(Ts * kw);
      Buf o = s.keep(a, Ts * qw), lse = s.keep(a, qb * Ts);
      s.attn_kernel(false);
      if (a) A.insert(A.end(), {q, k, v, o, lse});
    }
    reduce_into();
  }
  void mlp_fwd(bool a, Bufs& A) {
    const int64_t Ir = t.Ir;
    Buf g = s.keep(a, Ts * Ir), u = s.keep(a, Ts * Ir), sw = s.W(Ts * Ir), P = s.W(Ts * t.h);
    if (a) A.insert(A.end(), {g, u});
    reduce_into();
  }
  Bufs block_fwd(bool a) {
    Bufs A;
    {
      Buf Y1 = norm_fwd(a, A);
      attn_fwd(a, A);
    }
    Buf Y2 = norm_fwd(a, A);
    mlp_fwd(a, A);
    return a ? A : Bufs();
  }
  // Buckets in the order B(b) C(b−1) dq(b): the gather of b+1 and the reduce-scatter of b−1 in
  // flight during the flash backward of b (tpsp.cpp); bucket 0's gather posted during the MLP
  // backward when Σ > 1.
  Bufs kv_gather() {
    const int64_t kw = t.kv_rows / N;
    return {s.W(Sg * Ts * kw), s.W(Sg * Ts * kw)};
  }
  void attn_bwd(Bufs first) {
    const int64_t qw = t.q_rows / N, kw = t.kv_rows / N;
    Bufs pend, cur = first.empty() ? kv_gather() : std::move(first);
    for (int64_t b = 0; b < N; ++b) {
      Buf dO = s.W(Ts * qw);
      Bufs nxt;
      if (b + 1 < N) nxt = kv_gather();
      Buf dKg = s.W(Sg * Ts * kw), dVg = s.W(Sg * Ts * kw), dq = s.W(Ts * qw);
      s.attn_kernel(true);
      cur = std::move(nxt);
      Buf dk = s.W(Ts * kw), dv = s.W(Ts * kw);
      Buf rk = s.reduce_scatter(Sg, Ts * kw), rv = s.reduce_scatter(Sg, Ts * kw);
      pend.clear();
      pend = {dKg, dVg, dk, dv, rk, rv};
    }
  }
  // The MLP gradient's all-reduce in flight during the attention backward, the attention
  // gradient's into the next layer's MLP backward (attn_sum, finished by the next block_bwd).
  Bufs attn_sum;
  void block_bwd() {
    const int64_t h = t.h, Ir = t.Ir;
    Buf ga = Sg > 1 ? s.W(t.attn_size()) : Buf(), gm = Sg > 1 ? s.W(t.mlp_size()) : Buf();
    Bufs first, mlp_sum;
    {
      Buf dX = gather();
      if (Sg > 1) first = kv_gather();
      Buf dY2 = s.W(Ts * h), dy2 = s.W(Tl * h);
      {
        Buf Y = s.W(Ts * h);
        Bufs m{s.W(Ts * Ir), s.W(Ts * Ir), s.W(Ts * Ir), s.W(Ts * Ir)};
      }
      reduce_into();
      if (Sg > 1) mlp_sum = s.allreduce(Sg, t.mlp_size(), s.E);
    }
    attn_sum.clear();
    Buf dX = gather(), dY1 = s.W(Ts * h), dy1 = s.W(Tl * h);
    {
      Buf Y = s.W(Ts * h);
      attn_bwd(std::move(first));
    }
    dX.reset();
    reduce_into();
    mlp_sum.clear();
    if (Sg > 1) {
      attn_sum = s.allreduce(Sg, t.attn_size(), s.E);
      attn_sum.push_back(ga);
    }
  }
  void embed_fwd() {
    if (T == 1) return;
    Buf E = s.W(Ts * t.h);
    reduce_into();
  }
  void embed_bwd() {
    Buf dX = gather();
    Buf target = Sg > 1 ? (vocab_scratch ? vocab_scratch : s.W(t.Vr * t.h)) : Buf();
    if (Sg > 1) Bufs r = s.allreduce(Sg, t.Vr * t.h, s.E);
    vocab_scratch.reset();
  }
  void head(bool tied) {
    const int64_t Vr = t.Vr, h = t.h;
    const int64_t C = std::max<int64_t>(16, std::min<int64_t>(Ts, (int64_t{1} << 21) / Vr));
    Buf Y = gather(), z = s.W(C * Vr), st = s.W(3 * Ts), lse = s.W(Ts);
    if (T > 1) Buf all = s.W(T * 3 * Ts);
    Buf tmp = s.W(Ts);
    Buf Gh = Sg > 1 ? s.W(Vr * h) : Buf(), dY = s.W(Ts * h);
    reduce_into();
    if (Sg > 1) {
      if (!tied)
        Bufs r = s.allreduce(Sg, Vr * h, s.E);
      else
        vocab_scratch = Gh;
    }
  }
  void step(Recompute rc) {
    const int64_t h = t.h;
    const size_t L = static_cast<size_t>(c.num_hidden_layers);
    const bool full = rc == Recompute::full;
    Buf x = s.A(Tl * h);
    embed_fwd();
    std::vector<Bufs> saved(L);
    for (size_t l = 0; l < L; ++l) {
      Buf xs = s.A(Tl * h);
      saved[l] = block_fwd(!full);
      saved[l].push_back(xs);
    }
    Buf dx = s.A(Tl * h);
    {
      Bufs w{s.W(Tl * h), s.W(Tl), s.W(Tl * h), s.W(Tl * h)};
      head(c.tie_word_embeddings);
    }
    x.reset();
    for (size_t l = L; l-- > 0;) {
      if (full) {
        Buf xin = s.W(Tl * h);
        Bufs a = block_fwd(true);
        saved[l] = a;
      }
      block_bwd();
      saved[l].clear();
    }
    attn_sum.clear();
    embed_bwd();
  }
};

// Elements of each tensor a rank holds (in TspParams / ModelParams order).
std::vector<int64_t> held_tensors(const ModelConfig& c, int shard) {
  std::vector<int64_t> n;
  if (shard == 0) {  // full model
    const int64_t h = c.hidden_size, I = c.intermediate_size;
    n.push_back(c.vocab_size * h);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      for (int64_t x : {h, h * c.q_dim(), h * c.kv_dim(), h * c.kv_dim(), c.q_dim() * h, h, I * h,
                        I * h, h * I})
        n.push_back(x);
    n.push_back(h);
    if (!c.tie_word_embeddings) n.push_back(c.vocab_size * h);
    return n;
  }
  const TspDims t = TspDims::of(c, shard);
  n.push_back(t.Vr * t.h);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (int64_t x : {t.h, t.attn_size(), t.h, t.mlp_size()}) n.push_back(x);
  n.push_back(t.h);
  if (!c.tie_word_embeddings) n.push_back(t.Vr * t.h);
  return n;
}

nlohmann::json table(double scale,
                     std::initializer_list<std::pair<const char*, std::array<double, 3>>> cells) {
  nlohmann::json j;
  for (const char* c :
       {"attn_weights", "mlp_weights", "kv", "grads", "embed_head", "acts", "other"})
    j[c] = {{"fwd", 0}, {"recompute", 0}, {"bwd", 0}};
  for (const auto& [c, v] : cells)
    j[c] = {{"fwd", std::llround(v[0] * scale)},
            {"recompute", std::llround(v[1] * scale)},
            {"bwd", std::llround(v[2] * scale)}};
  return j;
}

}  // namespace

nlohmann::json Result::to_json() const {
  nlohmann::json p;
  for (int i = 0; i < kNumCats; ++i)
    p[cat_name(static_cast<Cat>(i))] = peak[static_cast<size_t>(i)];
  p["total"] = total;
  return {{"peak_bytes", p}, {"comm_bytes_per_layer", comm_per_layer}};
}

Result predict(const Input& in) {
  const ModelConfig& c = in.cfg;
  const Layout& L = in.layout;
  validate_options(L, in.par, in.recompute);
  const int64_t B = in.micro_batch, S = in.seq;
  if (S > c.max_position_embeddings)
    fail("--seq=", S, " exceeds max_position_embeddings=", c.max_position_embeddings);
  const int64_t E = in.dtype == Dtype::f32 ? 4 : 2;
  // AdamW moments (and, under bf16, an fp32 master copy) per parameter.
  const int64_t opt_bytes = in.dtype == Dtype::f32 ? 8 : 12;
  int shard = 0, model_comm = 1;
  int64_t tokens = B * S;
  const bool full = in.recompute == Recompute::full;
  const bool fused = full && in.par.fused_mlp_recompute;
  const int64_t h = c.hidden_size, kvd = c.kv_dim();
  const double g = static_cast<double>(c.num_attention_heads) / c.num_key_value_heads;
  const double Wa = 2.0 * h * h + 2.0 * h * kvd, Wm = 3.0 * c.intermediate_size * h;
  const double K = 2.0 * B * S * h / g;
  Result r;
  if (L.uses_tsp()) {
    const int D = L.folded_degree();
    validate_tsp(c, D, S, in.par.attn_buckets);
    shard = model_comm = D;
    const double f = (D - 1.0) / D;
    const double aw = in.par.keep_attn_weights ? 0 : f * Wa;
    r.comm_per_layer = table(E, {{"attn_weights", {f * Wa, full ? f * Wa : 0, aw}},
                                 {"mlp_weights", {f * Wm, full && !fused ? f * Wm : 0, f * Wm}},
                                 {"kv", {f * K, full ? f * K : 0, 2 * f * K}},
                                 {"grads", {0, 0, f * Wa + f * Wm}}});
  } else if (L.uses_tpsp()) {
    validate_tpsp(c, L.tp, L.sp, B, S, in.par.attn_buckets, in.par.tp_seq_parallel);
    shard = L.tp;
    model_comm = L.tp * L.sp;
    const double fT = (L.tp - 1.0) / L.tp, fS = (L.sp - 1.0) / L.sp;
    const double acts = 4 * fT * B * S / L.sp * h, kv = fS * K / L.tp, w = (Wa + Wm) / L.tp;
    r.comm_per_layer = table(E, {{"acts", {acts, full ? acts : 0, acts}},
                                 {"kv", {kv, full ? kv : 0, 2 * kv}},
                                 {"grads", {0, 0, 2 * fS * w}}});
  } else {
    r.comm_per_layer = table(E, {});
  }
  // One rank's replay. TSP ranks differ in one buffer: rank j receives group j's partial
  // gradients as the root of its reduce, and group D−1's stays in flight into the next layer
  // (AttnTail): the peak is the larger of rank 0's and rank D−1's replay.
  auto replay = [&](int root) {
    Sim s(E);
    s.threads = in.threads;
    s.d = c.head_dim();
    // persistent: parameters, gradients, AdamW state, RoPE tables (fp32)
    int64_t held = 0;
    const auto tensors = held_tensors(c, shard);
    for (int64_t n : tensors) held += n;
    Buf w = s.alloc(Cat::weights, held * E), gr = s.alloc(Cat::grads, held * E);
    Buf opt = s.alloc(Cat::optimizer, held * opt_bytes);
    Buf rope = s.alloc(Cat::workspace, 2 * c.max_position_embeddings * (c.head_dim() / 2) * 4);
    // the step: N over the replica and the replicas (int64), the micro-batch, the gradient sums
    { Bufs a = s.allreduce(model_comm, 1, 8); }
    { Bufs a = s.allreduce(L.dp, 1, 8); }
    if (L.uses_tsp()) {
      const TspDims t = TspDims::of(c, shard);
      TspSim m{s,
               c,
               t,
               shard,
               tokens / shard,
               B,
               S,
               in.par.attn_buckets,
               L.fsdp_axis,
               in.par.keep_attn_weights,
               in.depths,
               {},
               fused,
               {},
               root};
      m.step(in.recompute);
      for (int64_t l = 0; l < 2 * c.num_hidden_layers + 1; ++l) Bufs a = s.allreduce(shard, h, E);
    } else if (L.uses_tpsp()) {
      const TspDims t = TspDims::of(c, shard);
      const bool seqp = in.par.tp_seq_parallel && L.tp > 1;
      const int64_t Ts = tokens / L.sp;
      TpSpSim m{s,     c, t, L.tp, L.sp, seqp, Ts, seqp ? Ts / L.tp : Ts, in.par.attn_buckets,
                Buf(), {}};
      m.step(in.recompute);
      for (int64_t l = 0; l < 2 * c.num_hidden_layers + 1; ++l) {
        if (seqp) Bufs a = s.allreduce(L.tp, h, E);
        Bufs b = s.allreduce(L.sp, h, E);
      }
    } else {
      SingleSim m{s, c, tokens, B, S};
      m.step(in.recompute);
    }
    for (int64_t n : tensors) Bufs a = s.allreduce(L.dp, n, E);               // the DP gradient sum
    if (shard > 1) Bufs a = s.allreduce(L.uses_tpsp() ? L.tp : shard, 1, 8);  // clipping norm
    return std::make_pair(s.peak_, s.total_peak_);
  };
  std::tie(r.peak, r.total) = replay(0);
  if (L.uses_tsp() && shard > 1) {
    const auto [peak, total] = replay(shard - 1);
    for (size_t i = 0; i < peak.size(); ++i) r.peak[i] = std::max(r.peak[i], peak[i]);
    r.total = std::max(r.total, total);
  }
  return r;
}

}  // namespace origami::plan
