// The parameters of a Llama model, one tensor per HF name. The same struct holds gradients and
// AdamW moments (allocated under their own memory categories).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "model/config.h"

namespace origami {

struct LayerParams {
  Tensor input_norm, wq, wk, wv, wo, post_norm, w_gate, w_up, w_down;
};

struct ModelParams {
  Tensor embed, final_norm, lm_head;  // lm_head undefined when tied
  std::vector<LayerParams> layers;

  static ModelParams zeros(const ModelConfig& c, Cat cat, DType dt = DType::f32);
  // Host memory even when a device is selected (a full model staged for load_state, a report).
  static ModelParams zeros_host(const ModelConfig& c, Cat cat);
  // Every tensor from make(HF name, shape), e.g. views into a mapped checkpoint file.
  static ModelParams make(
      const ModelConfig& c,
      const std::function<Tensor(const std::string&, std::vector<int64_t>)>& make);
  const Tensor& head() const { return lm_head.defined() ? lm_head : embed; }
  Tensor& head() { return lm_head.defined() ? lm_head : embed; }
  // Every tensor with its HF name, in HF order; a tied head is visited once (as the embedding).
  void for_each(const std::function<void(const std::string&, Tensor&)>& fn);
  void zero();
};

// Element (i) of tensor `name` ~ N(0, 0.02) from the counter-based RNG (tsp-spec §3); norms are 1.
void init_params(ModelParams& p, uint64_t seed);
// Every parameter by HF name (a missing, unknown, mistyped or misshapen tensor is an error) as a
// read-only view into r's mapped file (no copy), in the file's type (F32 or BF16; full_to_shard and copy_params convert while copying): each rank then
// reads only the pages of the slices it keeps. r must outlive the result.
ModelParams map_params(const ModelConfig& c, const SafeTensorsReader& r);
void save_params(ModelParams& p, const std::string& path);
// dst := src, tensor by tensor (same config; host or device memory on either side; converted
// where the types differ: fp32 master weights into their bf16 copy).
void copy_params(const ModelParams& src, ModelParams& dst);

}  // namespace origami
