// The sp axis's attention methods over one communicator of Σ ranks holding zigzag token shards
// (--sp-comm p2p: ring attention; a2a: DeepSpeed Ulysses), as free functions: the training
// engines (tpsp.cpp's sp axis, ring_attention.cpp, ulysses.cpp, fsdp_ulysses.cpp) and the SP
// decoder's prefill (infer/baselines.cpp) share them. The schedules and diagrams:
// docs/schedules.md, "The sp axis's other methods".
#pragma once
#include <functional>
#include <vector>

#include "comm/comm.h"
#include "core/tensor.h"
#include "kernels/dispatch.h"
#include "parallel/zigzag.h"

namespace origami::spattn {

// Every rank's two chunks of sequence bb as segments of rank-major rows (Σ blocks of the
// z.local_tokens() rows of each rank): queries, and keys/values (dK, dV at the same rows).
std::vector<k::QSeg> all_qsegs(const Zigzag& z, int64_t bb);
std::vector<k::Kv> all_kvsegs(const Zigzag& z, int64_t bb, k::CPtr K, k::CPtr V, float* dK,
                              float* dV, int64_t kw);
// This rank's own two chunks of sequence bb (queries), and rank src's as keys of a K, V block
// [2T, kw] (k rows, then v rows; dKV the same layout).
std::vector<k::QSeg> own_qsegs(const Zigzag& z, int64_t bb);
std::vector<k::Kv> block_kvsegs(const Zigzag& z, int64_t bb, int src, k::CPtr KV, float* dKV,
                                int64_t kw);

// ---- ring attention (p2p) --------------------------------------------------------------------
// K, V blocks travel one neighbour a step (tag kTagKv; a send and a receive per step, grouped).
constexpr int kTagKv = 11, kTagAcc = 12;
// The K, V blocks [2T, kw] around the ring: at step j this rank holds rank r−j's block (cur())
// while it sends it on to r+1 and receives r−j−1's from r−1 (a grouped send and receive).
class KvRing {
 public:
  KvRing(Comm& c, Tensor own, int64_t T, int64_t kw);  // step 0: posts its transfers
  const Tensor& cur() const { return cur_; }
  void advance();  // the arriving block becomes current; the next step's transfers are posted
  void release() { cur_ = nxt_ = Tensor(); }

 private:
  void post();
  Comm& c_;
  Tensor cur_, nxt_;
  Request rs_, rr_;
  int64_t T_, kw_;
  int j_ = 0;
};
// o [T, qw] (compute type) and lse [n_h, T] (fp32) of this rank's queries against every rank's
// block, passed around the ring from `own` [2T, kw]; each step's partial merged in fp32
// (k::attn_merge), o rounded once. make_q runs while the first block travels and returns q
// [T, qw] (RoPE applied).
void ring_fwd(Comm& c, const Zigzag& z, const Tensor& own, int64_t kw,
              const std::function<Tensor()>& make_q, int64_t qw, k::AttnShape sh, float scale,
              Tensor& o, Tensor& lse);

// ---- Ulysses (a2a) ---------------------------------------------------------------------------
// Rank r's heads: query heads [r·qh, (r+1)·qh) and KV block kv_of[r] of kh heads (kh = 1 and a
// head replicated on Σ/n_kv ranks when n_kv < Σ).
struct Heads {
  int64_t qh, kh, qw, kw;
  std::vector<int> q_of, kv_of;
  static Heads of(int64_t n_h, int64_t n_kv, int64_t d, int ranks);
};
// One all-to-all in flight and its buffers.
struct A2a {
  Tensor send, recv;
  Request req;
};
// tokens → heads: x [T, nblk·w] to recv [Σ·T, w] (rank-major), block block_of[r] going to rank r.
A2a to_heads(Comm& c, const Tensor& x, int64_t w, int64_t nblk, const std::vector<int>& block_of,
             Traffic t, Cat cat);
// heads → tokens: X [Σ·T, w] to recv [Σ, T, w]: rank r's head block of this rank's tokens.
A2a from_heads(Comm& c, const Tensor& X, int64_t w, Traffic t);
// recv [Σ, T, w] of from_heads into x [T, Σ·w] (head block r at columns r·w).
void unblock(Tensor& x, const Tensor& recv, int64_t T, int ranks, int64_t w);
// What the forward leaves for the backward: this rank's heads over every token.
struct UlyssesAct {
  Tensor Q, K, V, O, lse;
};
// o [T, n_h·d] (compute type) of this rank's tokens from k, v [T, n_kv·d] and make_q's q [T,
// n_h·d] (RoPE applied; make_q runs while K, V travel); the head-sharded tensors in `keep`.
UlyssesAct ulysses_fwd(Comm& c, const Zigzag& z, const Tensor& k, const Tensor& v,
                       const std::function<Tensor()>& make_q, int64_t n_h, int64_t n_kv, int d,
                       float scale, Tensor& o, Cat keep);

}  // namespace origami::spattn
