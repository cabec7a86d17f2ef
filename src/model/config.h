// Model configuration, read from an HF Llama config.json (same field names). Fields with an HF
// LlamaConfig default may be omitted (rms_norm_eps 1e-6, rope_theta 10000, max_position_embeddings
// 2048, tie_word_embeddings false); the structural fields are required. Anything origami does not
// implement (rope_scaling, biases, a head_dim other than h/n_h, another activation) is rejected.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace origami {

struct ModelConfig {
  int64_t hidden_size = 0, intermediate_size = 0, num_attention_heads = 0, num_key_value_heads = 0,
          num_hidden_layers = 0, vocab_size = 0, max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6, rope_theta = 10000.0;
  bool tie_word_embeddings = false;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t q_dim() const { return num_attention_heads * head_dim(); }
  int64_t kv_dim() const { return num_key_value_heads * head_dim(); }
  int64_t num_params() const;
  int64_t num_matmul_params() const;  // LM head in, embedding out (tsp-spec §10 FLOPs)

  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig load(const std::string& path);
  nlohmann::json to_json() const;
};

}  // namespace origami
