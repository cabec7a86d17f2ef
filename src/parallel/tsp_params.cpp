#include "parallel/tsp_params.h"

#include <cstring>

#include "kernels/dispatch.h"

namespace origami {

TspDims TspDims::of(const ModelConfig& c, int D) {
  TspDims t{};
  t.h = c.hidden_size;
  t.d = c.head_dim();
  t.D = D;
  t.nq_loc = c.num_attention_heads / D;
  t.nkv_loc = c.num_key_value_heads / D;
  t.q_rows = t.nq_loc * t.d;
  t.kv_rows = t.nkv_loc * t.d;
  t.Ir = c.intermediate_size / D;
  t.Vp = (c.vocab_size + D - 1) / D * D;
  t.Vr = t.Vp / D;
  return t;
}

TspParams TspParams::zeros(const ModelConfig& c, int D, Cat cat, DType dt) {
  const TspDims t = TspDims::of(c, D);
  auto z = [&](std::vector<int64_t> s) { return Tensor::zeros(std::move(s), dt, cat); };
  TspParams p;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    p.layers.push_back({z({t.attn_size()}), z({t.mlp_size()}), z({t.h}), z({t.h})});
  p.embed = z({t.Vr, t.h});
  if (!c.tie_word_embeddings) p.head = z({t.Vr, t.h});
  p.final_norm = z({t.h});
  return p;
}

void TspParams::for_each(const std::function<void(Tensor&, bool)>& fn) {
  fn(embed, false);
  for (auto& L : layers) {
    fn(L.in_norm, true);
    fn(L.attn, false);
    fn(L.post_norm, true);
    fn(L.mlp, false);
  }
  fn(final_norm, true);
  if (head.defined()) fn(head, false);
}

void TspParams::zero() {
  for_each([](Tensor& t, bool) { t.zero(); });
}

void convert_params(const TspParams& src, TspParams& dst) {
  std::vector<const Tensor*> s;
  const_cast<TspParams&>(src).for_each([&](Tensor& t, bool) { s.push_back(&t); });
  size_t i = 0;
  dst.for_each([&](Tensor& t, bool) {
    const Tensor& from = *s[i++];
    k::convert({t.raw(), t.dtype()}, {from.raw(), from.dtype()}, t.numel());
  });
}

namespace {
// Copies a block of `rows` x `cols` between a (row stride fs) and b (row stride ss).
void block(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows,
           int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    copy_bytes(dst + i * dst_stride, src + i * src_stride, 4 * cols);
}

template <bool ToShard>
void transfer(std::conditional_t<ToShard, const ModelParams&, ModelParams&> full,
              std::conditional_t<ToShard, TspParams&, const TspParams&> sh, const TspDims& t,
              int r) {
  const int64_t h = t.h, qd = t.q_rows * t.D, I = t.Ir * t.D;
  auto mv = [&](float* shard, int64_t ss, auto* fullp, int64_t fs, int64_t rows, int64_t cols) {
    if constexpr (ToShard)
      block(shard, ss, fullp, fs, rows, cols);
    else
      block(const_cast<float*>(fullp), fs, shard, ss, rows, cols);
  };
  auto S = [](auto& tensor) { return const_cast<float*>(tensor.template data<float>()); };
  for (size_t l = 0; l < sh.layers.size(); ++l) {
    auto& F = full.layers[l];
    auto& L = sh.layers[l];
    float* a = S(L.attn);
    mv(a, h, F.wq.template data<float>() + r * t.q_rows * h, h, t.q_rows, h);
    mv(a + t.off_k(), h, F.wk.template data<float>() + r * t.kv_rows * h, h, t.kv_rows, h);
    mv(a + t.off_v(), h, F.wv.template data<float>() + r * t.kv_rows * h, h, t.kv_rows, h);
    mv(a + t.off_o(), t.q_rows, F.wo.template data<float>() + r * t.q_rows, qd, h, t.q_rows);
    float* m = S(L.mlp);
    mv(m, h, F.w_gate.template data<float>() + r * t.Ir * h, h, t.Ir, h);
    mv(m + t.Ir * h, h, F.w_up.template data<float>() + r * t.Ir * h, h, t.Ir, h);
    mv(m + 2 * t.Ir * h, t.Ir, F.w_down.template data<float>() + r * t.Ir, I, h, t.Ir);
    mv(S(L.in_norm), h, F.input_norm.template data<float>(), h, 1, h);
    mv(S(L.post_norm), h, F.post_norm.template data<float>(), h, 1, h);
  }
  mv(S(sh.final_norm), h, full.final_norm.template data<float>(), h, 1, h);
  const int64_t V = full.embed.dim(0);
  const int64_t row0 = r * t.Vr, n = std::max<int64_t>(0, std::min(t.Vr, V - row0));
  mv(S(sh.embed), h, full.embed.template data<float>() + row0 * h, h, n, h);
  if (sh.head.defined()) mv(S(sh.head), h, full.lm_head.template data<float>() + row0 * h, h, n, h);
}
}  // namespace

void full_to_shard(const ModelParams& full, TspParams& shard, const TspDims& t, int r) {
  transfer<true>(full, shard, t, r);
}
void shard_to_full(const TspParams& shard, ModelParams& full, const TspDims& t, int r) {
  transfer<false>(full, shard, t, r);
}

}  // namespace origami

#include "comm/comm.h"

namespace origami {

void gather_full(Comm& comm, TspParams& shard, ModelParams& full, const TspDims& t) {
  const int D = comm.size();
  std::vector<Tensor*> mine;
  shard.for_each([&](Tensor& x, bool) { mine.push_back(&x); });
  std::vector<Tensor> all;
  CommScope ctx(comm, kWhereStep, Phase::bwd);
  for (Tensor* x : mine) {
    all.push_back(Tensor::empty({D, x->numel()}, DType::f32, Cat::comm));
    comm.iallgather(x->raw(), all.back().raw(), static_cast<int64_t>(x->nbytes()), Traffic::other)
        .wait();
  }
  for (int q = 0; q < D; ++q) {
    TspParams tmp = shard;  // same shapes; fill with rank q's blocks
    std::vector<Tensor*> dst;
    tmp.for_each([&](Tensor& x, bool) {
      x = x.clone(Cat::workspace);
      dst.push_back(&x);
    });
    for (size_t i = 0; i < dst.size(); ++i)
      copy_bytes(dst[i]->raw(), all[i].data<float>() + q * dst[i]->numel(), dst[i]->nbytes());
    shard_to_full(tmp, full, t, q);
  }
}

}  // namespace origami
