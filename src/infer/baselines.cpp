// The baselines' inference, for comparison with TSP (docs/inference.md):
//
//   tp  Megatron TP: rank r owns head group r and MLP slice r (TSP's shards), every rank runs
//       every token. Prefill and decode run the same layer: q, k, v of the own heads for all
//       tokens; the cache holds the own kv heads of *every* position (1/D of it, by heads);
//       attention of the own heads; x += all-reduce(o_r W_o,rᵀ); x += all-reduce(MLP slice).
//       Decode moves 2 all-reduces of B·h per layer.
//   sp  Sequence parallel: full weights everywhere. Prefill is zigzag over the prompt with K, V
//       all-gathered per layer; each rank caches its own positions, all heads (1/D, by
//       sequence; balanced as for TSP). Decode: every rank runs the whole layer for the new
//       tokens, the caching rank stores k, v (no transfer), each rank attends its cache, and the
//       partial (o, lse) of all heads are all-gathered and merged. Decode moves D−1 partials of
//       B·(h + n_h) per layer.
#include <cmath>
#include <cstring>
#include <limits>

#include "core/device.h"
#include "core/error.h"
#include "infer/internal.h"
#include "kernels/dispatch.h"
#include "model/model.h"
#include "model/params.h"
#include "parallel/sp_attention.h"
#include "parallel/zigzag.h"

namespace origami::infer {

using k::AttnShape;
using k::QSeg;
using k::Trans;
using namespace detail;

namespace {

class TpDecoder : public Decoder {
 public:
  TpDecoder(const ModelConfig& c, Comm& comm, const ModelParams& full, int64_t B, int64_t max_new)
      : cfg_(c),
        comm_(comm),
        t_(TspDims::of(c, comm.size())),
        D_(comm.size()),
        r_(comm.rank()),
        B_(B),
        max_new_(max_new) {
    p_ = TspParams::zeros(c, D_, Cat::weights, block::elem());
    full_to_shard(full, p_, t_, r_);
    make_rope_tables(c, cos_, sin_);
  }

  std::vector<float> prefill(const std::vector<int64_t>& ids, int64_t S,
                             const Padding& pad = {}) override {
    if (S < 1) fail("prefill: the prompt is empty");
    pad_ = pad;
    cache_.init(static_cast<int64_t>(p_.layers.size()), B_, S + max_new_, t_.kv_rows);
    for (int64_t s = 0; s < S; ++s) cache_.append(s);
    Tensor x = embed_sharded(comm_, ids, p_.embed, t_.Vr, t_.h);
    std::vector<int64_t> pos;
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t s = 0; s < S; ++s) pos.push_back(s);
    run_layers(x, pos, S);
    Tensor last = ws32({B_, t_.h});  // the residual stream: fp32
    for (int64_t b = 0; b < B_; ++b)
      copy_bytes(F32(last) + b * t_.h, F32(x) + (b * S + S - 1) * t_.h, sizeof(float) * t_.h);
    pos_ = S;
    return head(last);
  }

  std::vector<float> step(const std::vector<int64_t>& ids) override {
    check_step(cfg_, ids, B_, pos_);
    Tensor x = embed_sharded(comm_, ids, p_.embed, t_.Vr, t_.h);
    cache_.append(pos_);
    run_layers(x, std::vector<int64_t>(static_cast<size_t>(B_), pos_), 1);
    ++pos_;
    return head(x);
  }
  const KvCache& cache() const override { return cache_; }

 private:
  std::vector<float> head(const Tensor& x) {
    Tensor yf = ws({B_, t_.h}), n = ws({B_, t_.h}), rstd = ws32({B_});
    k::rmsnorm_fwd(F(yf), F(n), F32(rstd), F(x), F(p_.final_norm), B_, t_.h, cfg_.rms_norm_eps);
    return logits_sharded(comm_, yf, p_.head_or_embed(), B_, t_.Vr, cfg_.vocab_size);
  }

  // x [B·rows, h] (replicated) at positions pos (rows per sequence consecutive).
  void run_layers(Tensor& x, const std::vector<int64_t>& pos, int64_t rows) {
    std::vector<int64_t> rope(pos.size());  // RoPE positions; the queries' first visible keys
    std::vector<std::vector<int64_t>> lo(static_cast<size_t>(B_));
    for (size_t i = 0; i < pos.size(); ++i)
      rope[i] = pad_.rope(static_cast<int64_t>(i) / rows, pos[i]);
    if (!pad_.pads.empty())
      for (int64_t b = 0; b < B_; ++b)
        lo[static_cast<size_t>(b)] = pad_.lo(b, pos[static_cast<size_t>(b * rows)], rows);
    const int64_t T = B_ * rows, h = t_.h, d = t_.d, qw = t_.q_rows, kw = t_.kv_rows;
    const int64_t nq = t_.nq_loc, nkv = t_.nkv_loc;
    const float eps = static_cast<float>(cfg_.rms_norm_eps);
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    const AttnShape sh{static_cast<int>(nq), static_cast<int>(nkv), static_cast<int>(d)};
    for (size_t l = 0; l < p_.layers.size(); ++l) {
      CommScope ctx(comm_, static_cast<int>(l), Phase::fwd);
      const TspLayer& W = p_.layers[l];
      const CPtr pk = F(W.attn);
      Tensor y = ws({T, h}), n = ws({T, h}), rstd = ws32({T});
      k::rmsnorm_fwd(F(y), F(n), F32(rstd), F(x), F(W.in_norm), T, h, eps);
      Tensor q = ws({T, qw}), k = ws({T, kw}), v = ws({T, kw});
      block::project_rope(F(q), F(y), pk, T, qw, h, static_cast<int>(nq), static_cast<int>(d),
                          rope.data(), cos_, sin_);
      block::project_rope(F(k), F(y), pk + t_.off_k(), T, kw, h, static_cast<int>(nkv),
                          static_cast<int>(d), rope.data(), cos_, sin_);
      k::linear_fwd(F(v), F(y), pk + t_.off_v(), T, kw, h);
      {  // slot = position
        std::vector<int64_t> src(static_cast<size_t>(T)), bs(src.size());
        for (int64_t t = 0; t < T; ++t)
          src[static_cast<size_t>(t)] = t, bs[static_cast<size_t>(t)] = t / rows;
        cache_.write(l, F(k), F(v), kw, src, bs, pos);
      }
      Tensor o = ws({T, qw}), lse = ws32({nq, T});
      for (int64_t b = 0; b < B_; ++b) {
        const int64_t p0 = pos[static_cast<size_t>(b * rows)];
        QSeg qs{b * rows, p0, rows,
                pad_.pads.empty() ? nullptr : lo[static_cast<size_t>(b)].data()};
        const k::Kv ks{cache_.k_row(l, b, 0), cache_.v_row(l, b, 0), kw, 0, p0 + rows};
        k::flash_attn_fwd(F(o), F32(lse), T, F(q), qw, &qs, 1, &ks, 1, sh, scale);
      }
      tp_tail(comm_, t_, W, F(o), x, T, eps);
    }
  }

  ModelConfig cfg_;
  Comm& comm_;
  TspDims t_;
  int D_, r_;
  int64_t B_, max_new_, pos_ = 0;
  TspParams p_;
  KvCache cache_;
  Tensor cos_, sin_;
  Padding pad_;
};

class SpDecoder : public Decoder {
 public:
  SpDecoder(const ModelConfig& c, Comm& comm, const ModelParams& full, int64_t B, int64_t max_new,
            SpComm sp_comm)
      : cfg_(c),
        sp_comm_(comm.size() > 1 ? sp_comm : SpComm::allgather),
        comm_(comm),
        D_(comm.size()),
        r_(comm.rank()),
        B_(B),
        max_new_(max_new),
        P_(ModelParams::zeros(c, Cat::weights, block::elem())) {
    copy_params(full, P_);
    make_rope_tables(c, cos_, sin_);
  }

  std::vector<float> prefill(const std::vector<int64_t>& ids, int64_t S,
                             const Padding& pad = {}) override {
    if (S < 1) fail("prefill: the prompt is empty");
    pad_ = pad;
    const int64_t Sp = padded(S, D_), h = cfg_.hidden_size, qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
    if (Sp > cfg_.max_position_embeddings)
      fail("the prompt of ", S, " tokens, padded to ", Sp, " (a multiple of 2·sp=", 2 * D_,
           "), exceeds max_position_embeddings=", cfg_.max_position_embeddings);
    Batch g;  // the padding's document masks and RoPE positions
    g.B = B_, g.S = Sp;
    if (!pad.pads.empty()) set_positions(g, pad.positions(B_, Sp), "the prompts' attention_mask");
    const Zigzag z{B_, Sp, D_, r_, g.packed() ? g.doc_start.data() : nullptr};
    const int64_t c = z.chunk(), T = z.local_tokens(), per = 2 * c;
    const std::vector<int64_t> pos = z.positions();
    std::vector<int64_t> rope = pos;
    rope_positions(g, rope, per);
    cache_.init(static_cast<int64_t>(P_.layers.size()), B_, cache_capacity(S, max_new_, D_), kvd);
    std::vector<int64_t> slot(static_cast<size_t>(per), -1);
    for (int64_t i = 0; i < per; ++i)
      if (pos[static_cast<size_t>(i)] < S)
        slot[static_cast<size_t>(i)] = cache_.append(pos[static_cast<size_t>(i)]);
    counts_ = prefill_counts(S, D_);
    // Local rows [B, 2, c]: embedding (full table on every rank).
    Tensor x = ws32({T, h});  // the residual stream: fp32
    std::vector<int64_t> tok(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t b = t / per, p = pos[static_cast<size_t>(t % per)];
      tok[static_cast<size_t>(t)] = p < S ? ids[static_cast<size_t>(b * S + p)] : 0;
    }
    k::index_copy_rows(F(x), F(P_.embed), nullptr, tok.data(), T, h);
    const int d = static_cast<int>(cfg_.head_dim());
    const AttnShape sh{static_cast<int>(cfg_.num_attention_heads),
                       static_cast<int>(cfg_.num_key_value_heads), d};
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    for (size_t l = 0; l < P_.layers.size(); ++l) {
      CommScope ctx(comm_, static_cast<int>(l), Phase::fwd);
      const LayerParams& W = P_.layers[l];
      // k, v of the local tokens: in the all-gather's buffers (own block r), ring attention's
      // block [2T, kvd], or as they are for Ulysses' all-to-all
      Tensor y = ws({T, h}), q = ws({T, qd}), Kg, Vg, own, kt, vt;
      Ptr k, v;
      if (sp_comm_ == SpComm::allgather) {
        Kg = ws({D_, T, kvd}), Vg = ws({D_, T, kvd});
        k = F(Kg) + r_ * T * kvd, v = F(Vg) + r_ * T * kvd;
      } else if (sp_comm_ == SpComm::p2p) {
        own = ws({2 * T, kvd});
        k = F(own), v = F(own) + T * kvd;
      } else {
        kt = ws({T, kvd}), vt = ws({T, kvd});
        k = F(kt), v = F(vt);
      }
      norm(y, x, W.input_norm, T);
      block::project_rope(F(q), F(y), F(W.wq), T, qd, h, static_cast<int>(cfg_.num_attention_heads),
                          d, rope.data(), cos_, sin_);
      block::project_rope(k, F(y), F(W.wk), T, kvd, h, static_cast<int>(cfg_.num_key_value_heads),
                          d, rope.data(), cos_, sin_);
      k::linear_fwd(v, F(y), F(W.wv), T, kvd, h);
      {
        std::vector<int64_t> src, bs, ss;  // the real (not padding) rows
        for (int64_t t = 0; t < T; ++t) {
          const int64_t s = slot[static_cast<size_t>(t % per)];
          if (s >= 0) src.push_back(t), bs.push_back(t / per), ss.push_back(s);
        }
        cache_.write(l, k, v, kvd, src, bs, ss);
      }
      Tensor o = ws({T, qd});
      if (sp_comm_ == SpComm::p2p) {
        Tensor lse = ws32({cfg_.num_attention_heads, T});
        spattn::ring_fwd(
            comm_, z, own, kvd, [&] { return q; }, qd, sh, scale, o, lse);
      } else if (sp_comm_ == SpComm::a2a) {
        spattn::ulysses_fwd(
            comm_, z, kt, vt, [&] { return q; }, cfg_.num_attention_heads, cfg_.num_key_value_heads,
            d, scale, o, Cat::workspace);
      } else {
        Request gk = comm_.iallgather(k.p, Kg.raw(), bytes(T * kvd), Traffic::kv);
        Request gv = comm_.iallgather(v.p, Vg.raw(), bytes(T * kvd), Traffic::kv);
        gk.wait(), gv.wait();
        Tensor lse = ws32({cfg_.num_attention_heads, T});
        for (int64_t bb = 0; bb < B_; ++bb) {
          const auto qs = spattn::own_qsegs(z, bb);
          const auto ks = spattn::all_kvsegs(z, bb, F(Kg), F(Vg), nullptr, nullptr, kvd);
          k::flash_attn_fwd(F(o), F32(lse), T, F(q), qd, qs.data(), 2, ks.data(),
                            static_cast<int>(ks.size()), sh, scale);
        }
      }
      k::linear_fwd(F(x), F(o), F(W.wo), T, h, qd, 1.0f);
      mlp(x, W, T);
    }
    rebalance(cache_, counts_, comm_);
    // The last prompt position's hidden state from its holder.
    CommScope ctx(comm_, kWhereHead, Phase::fwd);
    const int64_t qc = (S - 1) / c;
    const int holder = static_cast<int>(qc < D_ ? qc : 2 * D_ - 1 - qc);
    Tensor last = ws32({B_, h});  // the residual stream: fp32
    if (holder == r_)
      for (int64_t b = 0; b < B_; ++b)
        copy_bytes(F32(last) + b * h,
                   F32(x) + ((b * 2 + (qc < D_ ? 0 : 1)) * c + (S - 1 - qc * c)) * h,
                   sizeof(float) * h);
    comm_.ibcast(last.raw(), static_cast<int64_t>(last.nbytes()), holder, Traffic::acts).wait();
    pos_ = S;
    return head(last);
  }

  std::vector<float> step(const std::vector<int64_t>& ids) override {
    check_step(cfg_, ids, B_, pos_);
    const int64_t h = cfg_.hidden_size, qd = cfg_.q_dim(), kvd = cfg_.kv_dim(), B = B_;
    const int64_t nh = cfg_.num_attention_heads;
    const int d = static_cast<int>(cfg_.head_dim());
    Tensor x = ws32({B, h});  // the residual stream: fp32
    k::index_copy_rows(F(x), F(P_.embed), nullptr, ids.data(), B, h);
    const int owner = owner_of(counts_, pos_);
    ++counts_[static_cast<size_t>(owner)];
    const int64_t slot = owner == r_ ? cache_.append(pos_) : -1;
    std::vector<int64_t> pos(static_cast<size_t>(B));  // RoPE positions
    for (int64_t b = 0; b < B; ++b) pos[static_cast<size_t>(b)] = pad_.rope(b, pos_);
    const int64_t blk = B * qd + nh * B;  // a partial (o, lse): fp32
    for (size_t l = 0; l < P_.layers.size(); ++l) {
      CommScope ctx(comm_, static_cast<int>(l), Phase::fwd);
      const LayerParams& W = P_.layers[l];
      Tensor y = ws({B, h}), q = ws({B, qd}), k = ws({B, kvd}), v = ws({B, kvd});
      norm(y, x, W.input_norm, B);
      block::project_rope(F(q), F(y), F(W.wq), B, qd, h, static_cast<int>(nh), d, pos.data(), cos_,
                          sin_);
      block::project_rope(F(k), F(y), F(W.wk), B, kvd, h,
                          static_cast<int>(cfg_.num_key_value_heads), d, pos.data(), cos_, sin_);
      k::linear_fwd(F(v), F(y), F(W.wv), B, kvd, h);
      if (owner == r_) {
        std::vector<int64_t> src(static_cast<size_t>(B));
        for (int64_t b = 0; b < B; ++b) src[static_cast<size_t>(b)] = b;
        cache_.write(l, F(k), F(v), kvd, src, src, std::vector<int64_t>(src.size(), slot));
      }
      Tensor mine = ws32({blk}), all = ws32({D_, blk}), o = ws({B, qd});
      attend_cache(cache_, l, cfg_, F(q), F32(mine), F32(mine) + B * qd, pad_);
      comm_.iallgather(mine.raw(), all.raw(), static_cast<int64_t>(mine.nbytes()), Traffic::acts)
          .wait();
      merge_partials(F32(all), D_, B, nh, d, F(o));
      k::linear_fwd(F(x), F(o), F(W.wo), B, h, qd, 1.0f);
      mlp(x, W, B);
    }
    ++pos_;
    return head(x);
  }
  const KvCache& cache() const override { return cache_; }

 private:
  void norm(Tensor& y, const Tensor& x, const Tensor& w, int64_t T) {
    Tensor n = ws({T, cfg_.hidden_size}), rstd = ws32({T});
    k::rmsnorm_fwd(F(y), F(n), F32(rstd), F(x), F(w), T, cfg_.hidden_size, cfg_.rms_norm_eps);
  }
  void mlp(Tensor& x, const LayerParams& W, int64_t T) {
    const int64_t h = cfg_.hidden_size, I = cfg_.intermediate_size;
    Tensor y = ws({T, h}), g = ws({T, I}), u = ws({T, I}), a = ws({T, I});
    norm(y, x, W.post_norm, T);
    const block::MlpShard Ws{F(W.w_gate), F(W.w_up), F(W.w_down), I};
    block::mlp_up(F(g), F(u), F(y), Ws, T, h);
    block::mlp_down(F(x), 1.0f, F(a), F(g), F(u), Ws, T, h);
  }
  std::vector<float> head(const Tensor& x) {
    const int64_t h = cfg_.hidden_size, V = cfg_.vocab_size;
    Tensor yf = ws({B_, h});
    norm(yf, x, P_.final_norm, B_);
    Tensor z = ws32({B_, V});  // logits (fp32) on the device; sampling is the host's
    k::linear_fwd(F(z), F(yf), F(P_.head()), B_, V, h);
    return to_host(F32(z), B_ * V);
  }

  ModelConfig cfg_;
  SpComm sp_comm_;  // the prefill's attention (--sp-comm)
  Comm& comm_;
  int D_, r_;
  int64_t B_, max_new_, pos_ = 0;
  ModelParams P_;
  KvCache cache_;
  std::vector<int64_t> counts_;
  Padding pad_;
  Tensor cos_, sin_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(InferLayout l, const ModelConfig& c, Comm& comm,
                                      const ModelParams& full, int64_t B, int64_t max_new,
                                      SpComm sp_comm) {
  switch (l) {
    case InferLayout::tp:
      return std::make_unique<TpDecoder>(c, comm, full, B, max_new);
    case InferLayout::sp:
      return std::make_unique<SpDecoder>(c, comm, full, B, max_new, sp_comm);
    default: {
      TspParams shard = TspParams::zeros(c, comm.size(), Cat::weights, block::elem());
      full_to_shard(full, shard, TspDims::of(c, comm.size()), comm.rank());
      return std::make_unique<TspDecoder>(c, comm, std::move(shard), B, max_new);
    }
  }
}

int64_t weight_bytes(InferLayout l, const ModelConfig& c, int D, DType dt) {
  const int64_t h = c.hidden_size, L = c.num_hidden_layers, heads = c.tie_word_embeddings ? 1 : 2;
  const auto e = static_cast<int64_t>(dtype_size(dt));
  if (l == InferLayout::sp) return e * c.num_params();  // the full model
  const TspDims t = TspDims::of(c, D);                  // TSP's shards (tp keeps the same ones)
  return e * (heads * t.Vr * h + h + L * (t.attn_size() + t.mlp_size() + 2 * h));
}

int64_t decode_step_bytes(InferLayout l, const ModelConfig& c, int D, int64_t B, DType dt) {
  if (D == 1) return 0;
  const int64_t h = c.hidden_size, L = c.num_hidden_layers, nh = c.num_attention_heads;
  const auto e = static_cast<int64_t>(dtype_size(dt)), f = static_cast<int64_t>(sizeof(float));
  const int64_t ar = 2 * (D - 1) * f * B * h / D;  // an all-reduce of B·h (fp32) elements
  // the partial (o, lse) of all heads from each other rank (fp32: merged before rounding)
  if (l == InferLayout::sp) return L * (D - 1) * f * (B * c.q_dim() + nh * B);
  const TspDims t = TspDims::of(c, D);
  const int64_t head = (D - 1) * f * B * t.Vr, embed = ar;  // logits; embedding rows
  if (l == InferLayout::tp) return embed + L * 2 * ar + head;
  const int64_t layer = (D - 1) * e * B * t.q_rows         // q all-gather
                        + (D - 1) * e * B * 2 * t.kv_rows  // new k, v (the caching rank)
                        + (D - 1) * f * (B * t.q_rows + t.nq_loc * B)  // partial (o, lse)
                        + 2 * ar;                                      // W_o and MLP all-reduces
  return embed + L * layer + head;
}

InferLayout infer_layout(const Layout& L) {
  const InferKind kind = L.spec->infer(L);
  if (L.dp > 1 || kind == InferKind::none)
    fail("--layout=", L.text,
         ": inference runs single, tsp=D, tp=D or sp=D (dp, fsdp_sp and tp+sp inference are not "
         "built)");
  return kind;
}

int64_t kv_cache_bytes(InferLayout l, const ModelConfig& c, int D, int64_t B, int64_t S,
                       int64_t max_new, DType dt) {
  const int64_t per_pos = 2 * c.num_hidden_layers * B * static_cast<int64_t>(dtype_size(dt));
  if (l == InferLayout::tp) return per_pos * (S + max_new) * (c.kv_dim() / D);
  return per_pos * cache_capacity(S, max_new, D) * c.kv_dim();
}

}  // namespace origami::infer
