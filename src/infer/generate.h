// `origami generate`: text (or ids) from a model, with the prompt prefilled by the TSP forward
// and every new token decoded without moving a weight (infer/decoder.h). Layouts: single and
// tsp=D (TP and SP inference: not built yet).
#pragma once
#include <string>

#include "infer/sample.h"
#include "parallel/layout.h"

namespace origami::infer {

struct GenerateOptions {
  std::string config, weights, checkpoint, prompt, tokens, tokenizer, out, layout, report;
  std::string dump_logits;  // tests: the logits of every generated token, [new, B, V]
  int64_t max_new_tokens = 32;
  int64_t eos_id = -2;        // -2: the tokenizer's (text prompts) or none (ids); -1: none
  double max_memory_gib = 0;  // 0: no budget
  bool quiet = false;
  Sampling sampling;
  ParallelOptions par;  // device and comm only (--device, --comm); the layout is `layout`
};

int run_generate(const GenerateOptions& o);

}  // namespace origami::infer
