#include "model/config.h"

#include <cmath>
#include <fstream>

#include "core/error.h"

namespace origami {

namespace {
// Sizes beyond these are not a model anyone trains, and their products (tensor sizes, byte counts)
// could overflow 64 bits: refused, naming the field, before anything is allocated.
constexpr int64_t kMaxDim = int64_t(1) << 31;

int64_t get_int(const nlohmann::json& j, const std::string& src, const char* key, bool required,
                int64_t def, int64_t max = kMaxDim) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) fail(src, ": missing required field '", key, "'");
    return def;
  }
  if (!j[key].is_number_integer())
    fail(src, ": field '", key, "' must be an integer, got ", j[key].dump());
  if (j[key].is_number_unsigned() && j[key].get<uint64_t>() > static_cast<uint64_t>(max))
    fail(src, ": field '", key, "'=", j[key].dump(), " exceeds ", max);
  int64_t v = j[key].get<int64_t>();
  if (v <= 0) fail(src, ": field '", key, "'=", v, " must be positive");
  if (v > max) fail(src, ": field '", key, "'=", v, " exceeds ", max);
  return v;
}
double get_num(const nlohmann::json& j, const std::string& src, const char* key, double def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number()) fail(src, ": field '", key, "' must be a number, got ", j[key].dump());
  double v = j[key].get<double>();
  if (!(v > 0) || !std::isfinite(v))
    fail(src, ": field '", key, "'=", v, " must be positive and finite");
  return v;
}
}  // namespace

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& src) {
  if (!j.is_object()) fail(src, ": a config must be a JSON object");
  ModelConfig c;
  c.hidden_size = get_int(j, src, "hidden_size", true, 0, int64_t(1) << 20);
  c.intermediate_size = get_int(j, src, "intermediate_size", true, 0, int64_t(1) << 22);
  c.num_attention_heads = get_int(j, src, "num_attention_heads", true, 0, int64_t(1) << 16);
  c.num_key_value_heads =
      get_int(j, src, "num_key_value_heads", false, c.num_attention_heads, int64_t(1) << 16);
  c.num_hidden_layers = get_int(j, src, "num_hidden_layers", true, 0, int64_t(1) << 16);
  c.vocab_size = get_int(j, src, "vocab_size", true, 0);
  c.max_position_embeddings = get_int(j, src, "max_position_embeddings", false, 2048);
  c.rms_norm_eps = get_num(j, src, "rms_norm_eps", 1e-6);
  c.rope_theta = get_num(j, src, "rope_theta", 10000.0);
  if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null()) {
    if (!j["tie_word_embeddings"].is_boolean())
      fail(src, ": field 'tie_word_embeddings' must be true or false, got ",
           j["tie_word_embeddings"].dump());
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  // What origami does not implement is rejected, never silently ignored.
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    fail(src, ": 'rope_scaling' is not supported (must be absent or null)");
  for (const char* b : {"attention_bias", "mlp_bias"})
    if (j.contains(b) && !(j[b].is_boolean() && !j[b].get<bool>()))
      fail(src, ": '", b, "'=", j[b].dump(),
           " is not supported (Llama has no biases; must be false)");
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    fail(src, ": hidden_act=", j["hidden_act"].dump(), " is not supported (only \"silu\")");
  if (j.contains("model_type") && j["model_type"] != "llama")
    fail(src, ": model_type=", j["model_type"].dump(), " is not supported (only \"llama\")");
  if (c.hidden_size % c.num_attention_heads)
    fail(src, ": hidden_size=", c.hidden_size,
         " is not divisible by num_attention_heads=", c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads)
    fail(src, ": num_attention_heads=", c.num_attention_heads,
         " is not divisible by num_key_value_heads=", c.num_key_value_heads);
  if (c.head_dim() % 2)
    fail(src, ": head_dim = hidden_size/num_attention_heads = ", c.head_dim(),
         " must be even (RoPE)");
  if (j.contains("head_dim") && !j["head_dim"].is_null() &&
      !(j["head_dim"].is_number_integer() && j["head_dim"].get<int64_t>() == c.head_dim()))
    fail(src, ": head_dim=", j["head_dim"].dump(),
         " differs from hidden_size/num_attention_heads=", c.head_dim(), " (not supported)");
  // The parameter count in double (exact far beyond this bound): its byte counts fit in 64 bits.
  const double h = static_cast<double>(c.hidden_size), L = static_cast<double>(c.num_hidden_layers);
  const double n = static_cast<double>(c.vocab_size) * h * (c.tie_word_embeddings ? 1 : 2) +
                   L * (2 * h * h + 2 * h * static_cast<double>(c.kv_dim()) +
                        3 * h * static_cast<double>(c.intermediate_size) + 2 * h) +
                   h;
  if (n > 1e15)
    fail(src, ": the model has ", n, " parameters (hidden_size=", c.hidden_size,
         ", num_hidden_layers=", c.num_hidden_layers, ", vocab_size=", c.vocab_size,
         "): more than 1e15 is refused (its byte counts would overflow)");
  return c;
}

ModelConfig ModelConfig::load(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail(path, ": cannot open config");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  return from_json(j, path);
}

nlohmann::json ModelConfig::to_json() const {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_act", "silu"},
          {"hidden_size", hidden_size},
          {"intermediate_size", intermediate_size},
          {"num_attention_heads", num_attention_heads},
          {"num_key_value_heads", num_key_value_heads},
          {"num_hidden_layers", num_hidden_layers},
          {"vocab_size", vocab_size},
          {"max_position_embeddings", max_position_embeddings},
          {"rms_norm_eps", rms_norm_eps},
          {"rope_theta", rope_theta},
          {"tie_word_embeddings", tie_word_embeddings}};
}

int64_t ModelConfig::num_matmul_params() const {
  const int64_t h = hidden_size;
  const int64_t block = 2 * h * q_dim() + 2 * h * kv_dim() + 3 * h * intermediate_size;
  return num_hidden_layers * block + vocab_size * h;
}

int64_t ModelConfig::num_params() const {
  const int64_t h = hidden_size;
  return num_matmul_params() + (tie_word_embeddings ? 0 : vocab_size * h) +
         (2 * num_hidden_layers + 1) * h;
}

}  // namespace origami
