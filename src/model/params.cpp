#include "model/params.h"

#include <set>

#include "core/rng.h"
#include "kernels/dispatch.h"

namespace origami {

ModelParams ModelParams::make(
    const ModelConfig& c,
    const std::function<Tensor(const std::string&, std::vector<int64_t>)>& mk) {
  const int64_t h = c.hidden_size, I = c.intermediate_size;
  ModelParams p;
  p.embed = mk("model.embed_tokens.weight", {c.vocab_size, h});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    p.layers.push_back(
        {mk(pre + "input_layernorm.weight", {h}),
         mk(pre + "self_attn.q_proj.weight", {c.q_dim(), h}),
         mk(pre + "self_attn.k_proj.weight", {c.kv_dim(), h}),
         mk(pre + "self_attn.v_proj.weight", {c.kv_dim(), h}),
         mk(pre + "self_attn.o_proj.weight", {h, c.q_dim()}),
         mk(pre + "post_attention_layernorm.weight", {h}), mk(pre + "mlp.gate_proj.weight", {I, h}),
         mk(pre + "mlp.up_proj.weight", {I, h}), mk(pre + "mlp.down_proj.weight", {h, I})});
  }
  p.final_norm = mk("model.norm.weight", {h});
  if (!c.tie_word_embeddings) p.lm_head = mk("lm_head.weight", {c.vocab_size, h});
  return p;
}

ModelParams ModelParams::zeros(const ModelConfig& c, Cat cat, DType dt) {
  return make(c, [cat, dt](const std::string&, std::vector<int64_t> s) {
    return Tensor::zeros(std::move(s), dt, cat);
  });
}
ModelParams ModelParams::zeros_host(const ModelConfig& c, Cat cat) {
  return make(c, [cat](const std::string&, std::vector<int64_t> s) {
    return Tensor::zeros_host(std::move(s), DType::f32, cat);
  });
}

void ModelParams::for_each(const std::function<void(const std::string&, Tensor&)>& fn) {
  fn("model.embed_tokens.weight", embed);
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    LayerParams& L = layers[l];
    fn(pre + "input_layernorm.weight", L.input_norm);
    fn(pre + "self_attn.q_proj.weight", L.wq);
    fn(pre + "self_attn.k_proj.weight", L.wk);
    fn(pre + "self_attn.v_proj.weight", L.wv);
    fn(pre + "self_attn.o_proj.weight", L.wo);
    fn(pre + "post_attention_layernorm.weight", L.post_norm);
    fn(pre + "mlp.gate_proj.weight", L.w_gate);
    fn(pre + "mlp.up_proj.weight", L.w_up);
    fn(pre + "mlp.down_proj.weight", L.w_down);
  }
  fn("model.norm.weight", final_norm);
  if (lm_head.defined()) fn("lm_head.weight", lm_head);
}

void ModelParams::zero() {
  for_each([](const std::string&, Tensor& t) { t.zero(); });
}

void init_params(ModelParams& p, uint64_t seed) {
  p.for_each([&](const std::string& name, Tensor& t) {
    float* x = t.data<float>();
    const int64_t n = t.numel();
    if (t.shape().size() == 1) {
      for (int64_t i = 0; i < n; ++i) x[i] = 1.0f;
      return;
    }
    const uint64_t key = param_key(seed, name);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(0.02 * rng_normal(key, i));
  });
}

namespace {
void no_unknown(const SafeTensorsReader& r, const std::set<std::string>& known) {
  for (const auto& [name, e] : r.entries())
    if (!known.count(name)) {
      if (name == "lm_head.weight")
        fail(r.path(),
             ": tensor 'lm_head.weight' present but the config has tie_word_embeddings=true");
      fail(r.path(), ": unknown tensor '", name, "' (not a parameter of this config)");
    }
}
}  // namespace

ModelParams map_params(const ModelConfig& c, const SafeTensorsReader& r) {
  std::set<std::string> known;
  ModelParams p = ModelParams::make(c, [&](const std::string& name, std::vector<int64_t> shape) {
    known.insert(name);
    const bool bf16 = r.has(name) && r.get(name).dtype == DType::bf16;
    return r.view(name, bf16 ? DType::bf16 : DType::f32, shape);
  });
  no_unknown(r, known);
  return p;
}

void copy_params(const ModelParams& src, ModelParams& dst) {
  std::vector<const Tensor*> s;
  const_cast<ModelParams&>(src).for_each([&](const std::string&, Tensor& t) { s.push_back(&t); });
  size_t i = 0;
  dst.for_each([&](const std::string&, Tensor& t) {
    const Tensor& from = *s[i++];
    if (!from.on_device())  // host memory (a mapped file): converted on the host if need be
      k::upload({t.raw(), t.dtype()}, {from.raw(), from.dtype()}, t.numel());
    else
      k::convert({t.raw(), t.dtype()}, {from.raw(), from.dtype()}, t.numel());
  });
}

void save_params(ModelParams& p, const std::string& path) {
  SafeTensorsWriter w;
  p.for_each([&](const std::string& name, Tensor& t) { w.add(name, t); });
  w.write(path);
}

}  // namespace origami
