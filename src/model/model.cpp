#include "model/model.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/dispatch.h"
#include "model/block.h"
#include "model/layer_loop.h"

namespace origami {

using k::AttnShape;
using k::KvSeg;
using k::QSeg;
using k::Trans;

using block::act;
using block::act32;
using block::F;
using block::F32;
using block::in_elem;
using block::ws;
using block::ws0;
using block::ws32;
using block::ws32_0;

namespace {

// y = w * n (the norm output, recomputed from the saved normalised input)
Tensor reweight(const Tensor& n, const Tensor& w, int64_t rows, int64_t h) {
  Tensor y = ws({rows, h});
  k::rmsnorm_apply(F(y), F(n), F(w), rows, h);
  return y;
}

std::vector<int64_t> positions(const Batch& b) {
  std::vector<int64_t> p(static_cast<size_t>(b.B * b.S));
  for (int64_t t = 0; t < b.B * b.S; ++t) p[static_cast<size_t>(t)] = t % b.S;
  rope_positions(b, p, b.S);
  return p;
}
}  // namespace

void set_positions(Batch& b, std::vector<int64_t> pos, const std::string& src) {
  if (static_cast<int64_t>(pos.size()) != b.B * b.S)
    fail(src, ": position_ids has ", pos.size(), " elements, expected B*S=", b.B * b.S);
  b.doc_start.assign(pos.size(), 0);
  for (int64_t i = 0; i < b.B; ++i)
    for (int64_t p = 0; p < b.S; ++p) {
      const size_t t = static_cast<size_t>(i * b.S + p);
      if (pos[t] < 0) fail(src, ": position_ids[", i, ", ", p, "]=", pos[t], " is negative");
      if (p == 0 || pos[t] == 0) {
        b.doc_start[t] = p;
        continue;
      }
      if (pos[t] != pos[t - 1] + 1)
        fail(src, ": position_ids[", i, ", ", p, "]=", pos[t], " neither starts a document (0) ",
             "nor continues one (position_ids[", i, ", ", p - 1, "] + 1 = ", pos[t - 1] + 1, ")");
      b.doc_start[t] = b.doc_start[t - 1];
    }
  b.positions = std::move(pos);
}

Batch batch_rows(const Batch& b, int64_t first, int64_t n) {
  Batch r;
  r.B = n;
  r.S = b.S;
  const auto part = [&](const std::vector<int64_t>& v) {
    return v.empty() ? v
                     : std::vector<int64_t>(v.begin() + first * b.S, v.begin() + (first + n) * b.S);
  };
  r.inputs = part(b.inputs);
  r.targets = part(b.targets);
  r.positions = part(b.positions);
  r.doc_start = part(b.doc_start);
  return r;
}

void rope_positions(const Batch& b, std::vector<int64_t>& pos, int64_t rows_per_seq) {
  if (!b.packed()) return;
  for (size_t i = 0; i < pos.size(); ++i)
    pos[i] = b.rope_pos(static_cast<int64_t>(i) / rows_per_seq, pos[i]);
}

struct Model::Acts {
  Tensor x, n1, rstd1, q, k, v, o, lse, n2, rstd2, g, u;
};

int64_t Batch::num_targets() const {
  int64_t n = 0;
  for (auto t : targets) n += t >= 0;
  return n;
}

void validate_batch(const ModelConfig& c, const Batch& b, const std::string& src) {
  if (b.S > c.max_position_embeddings)
    fail(src, ": sequence length ", b.S,
         " exceeds max_position_embeddings=", c.max_position_embeddings);
  for (size_t t = 0; t < b.positions.size(); ++t)
    if (b.positions[t] >= c.max_position_embeddings)
      fail(src, ": position_ids[", static_cast<int64_t>(t) / b.S, ", ",
           static_cast<int64_t>(t) % b.S, "]=", b.positions[t],
           " is not below max_position_embeddings=", c.max_position_embeddings);
  for (int64_t i = 0; i < b.B * b.S; ++i) {
    const int64_t id = b.inputs[static_cast<size_t>(i)], tg = b.targets[static_cast<size_t>(i)];
    if (id < 0 || id >= c.vocab_size)
      fail(src, ": input_ids[", i / b.S, ", ", i % b.S, "]=", id, " is outside the vocabulary [0, ",
           c.vocab_size, ")");
    if (tg < -1 || tg >= c.vocab_size)
      fail(src, ": target [", i / b.S, ", ", i % b.S + 1, "]=", tg,
           " is outside the vocabulary [0, ", c.vocab_size, ") and is not the ignore index -100");
  }
}

Recompute parse_recompute(const std::string& s) {
  if (s == "none") return Recompute::none;
  if (s == "full") return Recompute::full;
  fail("--recompute=", s, " is not one of: none, full");
}

void make_rope_tables(const ModelConfig& c, Tensor& cos, Tensor& sin) {
  const int64_t half = c.head_dim() / 2;
  cos = Tensor::empty({c.max_position_embeddings, half}, DType::f32, Cat::workspace);
  sin = Tensor::empty({c.max_position_embeddings, half}, DType::f32, Cat::workspace);
  if (tensors_hold_no_data()) return;
  // Built on the host, then placed wherever tensors live (core/device.h).
  std::vector<float> hc(static_cast<size_t>(cos.numel())), hs(hc.size());
  cpu::rope_table<float>(hc.data(), hs.data(), c.max_position_embeddings,
                         static_cast<int>(c.head_dim()), c.rope_theta);
  copy_bytes(cos.raw(), hc.data(), hc.size() * sizeof(float));
  copy_bytes(sin.raw(), hs.data(), hs.size() * sizeof(float));
}

Model::Model(const ModelConfig& c) : cfg_(c) {
  make_rope_tables(c, cos_, sin_);
}

void Model::embed(Tensor& x, const ModelParams& p, const Batch& b) {
  const int64_t h = cfg_.hidden_size;
  k::index_copy_rows(F(x), F(p.embed), nullptr, b.inputs.data(), b.B * b.S, h);
}

void Model::attention(Tensor& o, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                      const Batch& b) {
  const int64_t T = b.B * b.S, qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
  const AttnShape sh{static_cast<int>(cfg_.num_attention_heads),
                     static_cast<int>(cfg_.num_key_value_heads), static_cast<int>(cfg_.head_dim())};
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(cfg_.head_dim())));
  for (int64_t s = 0; s < b.B; ++s) {
    QSeg qs{0, 0, b.S, b.doc_lo(s)};
    k::Kv ks{F(k) + s * b.S * kvd, F(v) + s * b.S * kvd, kvd, 0, b.S};
    k::flash_attn_fwd(F(o) + s * b.S * qd, F32(lse) + s * b.S, T, F(q) + s * b.S * qd, qd, &qs, 1,
                      &ks, 1, sh, scale);
  }
}

// x: block input [T, h] -> overwritten with the block output.
void Model::block_forward(const LayerParams& W, Tensor& x, Acts* save, const Batch& b) {
  const int64_t T = b.B * b.S, h = cfg_.hidden_size, I = cfg_.intermediate_size;
  const int64_t qd = cfg_.q_dim(), kvd = cfg_.kv_dim(), nh = cfg_.num_attention_heads;
  const int d = static_cast<int>(cfg_.head_dim());
  auto keep = [&](std::vector<int64_t> s) { return save ? act(std::move(s)) : ws(std::move(s)); };
  auto keep32 = [&](std::vector<int64_t> s) {  // statistics: fp32
    return save ? act32(std::move(s)) : ws32(std::move(s));
  };
  const auto pos = positions(b);

  Acts tmp;
  Acts& a = save ? *save : tmp;  // (a.x, the block's input, is the layer loop's)
  a.n1 = keep({T, h});
  a.rstd1 = keep32({T});
  {
    Tensor y1 = ws({T, h});
    k::rmsnorm_fwd(F(y1), F(a.n1), F32(a.rstd1), F(x), F(W.input_norm), T, h, cfg_.rms_norm_eps);
    a.q = keep({T, qd});
    a.k = keep({T, kvd});
    a.v = keep({T, kvd});
    block::project_rope(F(a.q), F(y1), F(W.wq), T, qd, h, static_cast<int>(nh), d, pos.data(), cos_,
                        sin_);
    block::project_rope(F(a.k), F(y1), F(W.wk), T, kvd, h,
                        static_cast<int>(cfg_.num_key_value_heads), d, pos.data(), cos_, sin_);
    k::linear_fwd(F(a.v), F(y1), F(W.wv), T, kvd, h);
  }
  a.o = keep({T, qd});
  a.lse = keep32({nh, T});
  attention(a.o, a.lse, a.q, a.k, a.v, b);
  k::linear_fwd(F(x), F(a.o), F(W.wo), T, h, qd, 1.0f);  // x = x + o Wo^T  (h1)

  a.n2 = keep({T, h});
  a.rstd2 = keep32({T});
  a.g = keep({T, I});
  a.u = keep({T, I});
  const block::MlpShard mlp{F(W.w_gate), F(W.w_up), F(W.w_down), I};
  {
    Tensor y2 = ws({T, h});
    k::rmsnorm_fwd(F(y2), F(a.n2), F32(a.rstd2), F(x), F(W.post_norm), T, h, cfg_.rms_norm_eps);
    block::mlp_up(F(a.g), F(a.u), F(y2), mlp, T, h);
  }
  {
    Tensor s = ws({T, I});
    block::mlp_down(F(x), 1.0f, F(s), F(a.g), F(a.u), mlp, T, h);  // x = h1 + a Wd^T
  }
}

// dx: d(block output) [T, h] on entry, d(block input) on exit.
void Model::block_backward(const LayerParams& W, LayerParams& G, const Acts& a, Tensor& dx,
                           const Batch& b) {
  const int64_t T = b.B * b.S, h = cfg_.hidden_size, I = cfg_.intermediate_size;
  const int64_t qd = cfg_.q_dim(), kvd = cfg_.kv_dim(), nh = cfg_.num_attention_heads;
  const int d = static_cast<int>(cfg_.head_dim());
  const auto pos = positions(b);

  // ---- MLP: out = h1 + swiglu(y2 Wg^T, y2 Wu^T) Wd^T, y2 = norm2(h1)
  {
    const block::MlpShard mlp{F(W.w_gate), F(W.w_up), F(W.w_down), I};
    Tensor dg = ws({T, I}), du = ws({T, I});
    {
      const Tensor dx_e = in_elem(dx);  // the fp32 residual gradient, for the GEMMs
      Tensor s = ws({T, I}), da = ws({T, I});
      block::mlp_down_bwd(F32(G.w_down), F(dg), F(du), F(s), F(da), F(dx_e), F(a.g), F(a.u), mlp, T,
                          h);
    }
    Tensor y2 = reweight(a.n2, W.post_norm, T, h);
    Tensor dy2 = ws32_0({T, h});  // summed over GEMMs: fp32
    block::mlp_up_bwd(F32(G.w_gate), F32(G.w_up), F(dy2), F(dg), F(du), F(y2), mlp, T, h);
    k::rmsnorm_bwd(F(dx), F32(G.post_norm), F(dy2), F(a.n2), F(W.post_norm), F32(a.rstd2), T, h);
  }
  // dx now holds d(h1). ---- attention: h1 = x + attn(y1) Wo^T, y1 = norm1(x)
  const Tensor dx_e = in_elem(dx);
  k::linear_bwd_w(F32(G.wo), F(dx_e), F(a.o), T, h, qd);
  // The attention kernels' gradients: fp32 (they sum over every key tile), in the element type
  // for the projections' GEMMs (block::in_elem).
  Tensor dq = ws32_0({T, qd}), dk = ws32_0({T, kvd}), dv = ws32_0({T, kvd});
  {
    Tensor dout = ws0({T, qd});
    k::linear_bwd_x(F(dout), F(dx_e), F(W.wo), T, h, qd);
    const AttnShape sh{static_cast<int>(nh), static_cast<int>(cfg_.num_key_value_heads), d};
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    for (int64_t s = 0; s < b.B; ++s) {
      QSeg qs{0, 0, b.S, b.doc_lo(s)};
      const int64_t ko = s * b.S * kvd;
      k::Kv ks{F(a.k) + ko, F(a.v) + ko, kvd, 0, b.S, F32(dk) + ko, F32(dv) + ko};
      const int64_t qo = s * b.S * qd;
      k::flash_attn_bwd(F32(dq) + qo, F(dout) + qo, F(a.q) + qo, F(a.o) + qo, qd,
                        F32(a.lse) + s * b.S, T, &qs, 1, &ks, 1, sh, scale);
    }
  }
  k::rope_bwd<float>(F32(dq), qd, pos.data(), T, static_cast<int>(nh), d, F32(cos_), F32(sin_));
  k::rope_bwd<float>(F32(dk), kvd, pos.data(), T, static_cast<int>(cfg_.num_key_value_heads), d,
                     F32(cos_), F32(sin_));
  const Tensor dq_e = in_elem(dq), dk_e = in_elem(dk), dv_e = in_elem(dv);
  Tensor y1 = reweight(a.n1, W.input_norm, T, h);
  k::linear_bwd_w(F32(G.wq), F(dq_e), F(y1), T, qd, h);
  k::linear_bwd_w(F32(G.wk), F(dk_e), F(y1), T, kvd, h);
  k::linear_bwd_w(F32(G.wv), F(dv_e), F(y1), T, kvd, h);
  Tensor dy1 = ws32_0({T, h});  // summed over GEMMs: fp32
  k::linear_bwd_x(F(dy1), F(dq_e), F(W.wq), T, qd, h);
  k::linear_bwd_x(F(dy1), F(dk_e), F(W.wk), T, kvd, h);
  k::linear_bwd_x(F(dy1), F(dv_e), F(W.wv), T, kvd, h);
  k::rmsnorm_bwd(F(dx), F32(G.input_norm), F(dy1), F(a.n1), F(W.input_norm), F32(a.rstd1), T, h);
}

// Final norm + LM head + cross-entropy, streamed over chunks of tokens so that no more than
// [chunk, V] logits ever exist. With grads, the backward of each chunk runs right after its
// forward (the loss normalisation 1/N is known in advance): dx gets d(loss)/d(final input).
double Model::head(const ModelParams& p, ModelParams* grads, const Tensor& x, Tensor* dx,
                   const Batch& b, double inv_n) {
  const int64_t T = b.B * b.S, h = cfg_.hidden_size, V = cfg_.vocab_size;
  const int64_t C = block::logits_chunk(T, V);
  Tensor n = ws({T, h}), rstd = ws32({T}), y = ws({T, h});
  k::rmsnorm_fwd(F(y), F(n), F32(rstd), F(x), F(p.final_norm), T, h, cfg_.rms_norm_eps);
  // logits and the log-sum-exp statistics: fp32
  Tensor z = ws32({C, V}), m = ws32({C}), l = ws32({C}), zt = ws32({C}), lse = ws32({C});
  Tensor dy = grads ? ws32_0({T, h}) : Tensor();  // summed over chunks' GEMMs: fp32
  const k::CPtr Wh = F(p.head());
  double total = 0;
  for (int64_t r0 = 0; r0 < T; r0 += C) {
    const int64_t c = std::min(C, T - r0);
    const int64_t* tg = b.targets.data() + r0;
    k::ce_init<float>(F32(m), F32(l), F32(zt), c);
    block::head_chunk_fwd(F32(z), F32(m), F32(l), F32(zt), F(y) + r0 * h, Wh, c, h, V, 0, V, tg);
    total += k::ce_finish<float>(F32(lse), F32(m), F32(l), F32(zt), c, tg);
    if (!grads) continue;
    block::head_chunk_bwd(F32(z), F(dy) + r0 * h, F32(grads->head()), F32(lse), F(y) + r0 * h, Wh,
                          c, h, V, 0, V, tg, static_cast<float>(inv_n), false);
  }
  if (grads)
    k::rmsnorm_bwd(F(*dx), F32(grads->final_norm), F(dy), F(n), F(p.final_norm), F32(rstd), T, h);
  return total;
}

double Model::forward_loss(const ModelParams& p, const Batch& b) {
  Tensor x = ws32({b.B * b.S, cfg_.hidden_size});  // the residual stream: fp32
  embed(x, p, b);
  for (const auto& W : p.layers) block_forward(W, x, nullptr, b);
  return head(p, nullptr, x, nullptr, b, 0.0);
}

double Model::forward_backward(const ModelParams& p, ModelParams& grads, const Batch& b,
                               double inv_n, Recompute rc) {
  const int64_t T = b.B * b.S, h = cfg_.hidden_size;
  LayerSteps<Acts> s;
  s.embed = [&] {
    Tensor x = act32({T, h});  // the residual stream (and its gradient): fp32
    embed(x, p, b);
    return x;
  };
  s.forward = [&](size_t l, Tensor& x, Acts* a) { block_forward(p.layers[l], x, a, b); };
  s.head = [&](const Tensor& x, Tensor& dx) { return head(p, &grads, x, &dx, b, inv_n); };
  s.recompute = [&](size_t l, Tensor& x, Acts& a) { block_forward(p.layers[l], x, &a, b); };
  s.backward = [&](size_t l, Acts& a, Tensor& dx) {
    block_backward(p.layers[l], grads.layers[l], a, dx, b);
  };
  // Embedding backward: rows summed per token id in position order (deterministic).
  s.embed_backward = [&](const Tensor& dx) {
    k::index_add_rows(F32(grads.embed), F(dx), b.inputs.data(), nullptr, T, h);
  };
  return forward_backward_layers(s, p.layers.size(), rc, {});
}

}  // namespace origami
