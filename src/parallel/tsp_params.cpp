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
// Copies a block of `rows` x `cols` elements from src (row stride ss) to dst (row stride ds).
// Into a shard the types may differ (an fp32 or bf16 file into fp32 or bf16 weights): the full
// side is host memory then (a mapped file, a host tensor), converted on the host. A contiguous
// block is one copy (on a GPU one synchronised copy, not one per row).
template <bool ToShard>
void block(k::Ptr dst, int64_t ds, k::CPtr src, int64_t ss, int64_t rows, int64_t cols) {
  if constexpr (!ToShard)
    ORIGAMI_CHECK(dst.dt == src.dt, "shard_to_full: a ", dtype_name(src.dt), " shard into ",
                  dtype_name(dst.dt), " full weights");
  if (ds == cols && ss == cols) return k::upload(dst, src, rows * cols);  // contiguous: one copy
  for (int64_t i = 0; i < rows; ++i) k::upload(dst + i * ds, src + i * ss, cols);
}

template <bool ToShard>
void transfer(std::conditional_t<ToShard, const ModelParams&, ModelParams&> full,
              std::conditional_t<ToShard, TspParams&, const TspParams&> sh, const TspDims& t,
              int r) {
  const int64_t h = t.h, qd = t.q_rows * t.D, I = t.Ir * t.D;
  auto mv = [&](k::CPtr shard, int64_t ss, k::CPtr fullp, int64_t fs, int64_t rows, int64_t cols) {
    auto mut = [](k::CPtr p) { return k::Ptr{const_cast<void*>(p.p), p.dt}; };
    if constexpr (ToShard)
      block<true>(mut(shard), ss, fullp, fs, rows, cols);
    else
      block<false>(mut(fullp), fs, shard, ss, rows, cols);
  };
  auto S = [](auto& tensor) { return k::CPtr{tensor.raw(), tensor.dtype()}; };
  for (size_t l = 0; l < sh.layers.size(); ++l) {
    auto& F = full.layers[l];
    auto& L = sh.layers[l];
    const k::CPtr a = S(L.attn);
    mv(a, h, S(F.wq) + r * t.q_rows * h, h, t.q_rows, h);
    mv(a + t.off_k(), h, S(F.wk) + r * t.kv_rows * h, h, t.kv_rows, h);
    mv(a + t.off_v(), h, S(F.wv) + r * t.kv_rows * h, h, t.kv_rows, h);
    mv(a + t.off_o(), t.q_rows, S(F.wo) + r * t.q_rows, qd, h, t.q_rows);
    const k::CPtr m = S(L.mlp);
    mv(m, h, S(F.w_gate) + r * t.Ir * h, h, t.Ir, h);
    mv(m + t.Ir * h, h, S(F.w_up) + r * t.Ir * h, h, t.Ir, h);
    mv(m + 2 * t.Ir * h, t.Ir, S(F.w_down) + r * t.Ir, I, h, t.Ir);
    mv(S(L.in_norm), h, S(F.input_norm), h, 1, h);
    mv(S(L.post_norm), h, S(F.post_norm), h, 1, h);
  }
  mv(S(sh.final_norm), h, S(full.final_norm), h, 1, h);
  const int64_t V = full.embed.dim(0);
  const int64_t row0 = r * t.Vr, n = std::max<int64_t>(0, std::min(t.Vr, V - row0));
  mv(S(sh.embed), h, S(full.embed) + row0 * h, h, n, h);
  if (sh.head.defined()) mv(S(sh.head), h, S(full.lm_head) + row0 * h, h, n, h);
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
