// libFuzzer target: the HF config parser (model/config.h) on arbitrary bytes. Every input must be
// refused with origami's Error (naming the field) or give a config whose sizes are consistent.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;  // not JSON: ModelConfig::load reports that itself
  try {
    const origami::ModelConfig c = origami::ModelConfig::from_json(j, "fuzz.json");
    if (c.hidden_size % c.num_attention_heads || c.num_attention_heads % c.num_key_value_heads ||
        c.head_dim() % 2 || c.num_params() <= 0)
      std::abort();  // accepted but inconsistent: a parser bug
  } catch (const origami::Error&) {
  }
  return 0;
}
