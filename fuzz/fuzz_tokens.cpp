// libFuzzer target: grad's tokens file reader (load_token_batch: input_ids [B, S+1], optional
// labels) on arbitrary bytes, against a small config. Every input must be refused with origami's
// Error or give a batch within the vocabulary.
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "fuzz/fuzz_file.h"
#include "train/grad.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const origami::ModelConfig cfg = [] {
    origami::ModelConfig c;
    c.hidden_size = 16, c.intermediate_size = 24, c.num_attention_heads = 2;
    c.num_key_value_heads = 1, c.num_hidden_layers = 1, c.vocab_size = 30;
    c.max_position_embeddings = 64;
    return c;
  }();
  const origami::fuzz::TempFile f(data, size);
  try {
    const origami::Batch b = origami::load_token_batch(f.path(), cfg);
    for (size_t i = 0; i < b.inputs.size(); ++i)
      if (b.inputs[i] < 0 || b.inputs[i] >= cfg.vocab_size || b.targets[i] >= cfg.vocab_size)
        std::abort();  // accepted out of range: a reader bug
  } catch (const origami::Error&) {
  }
  return 0;
}
