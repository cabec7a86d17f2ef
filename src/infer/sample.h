// Choosing the next token from logits. Greedy (temperature 0, the default): the largest logit,
// the lowest id on ties. Otherwise softmax(logits / temperature) restricted to the top-k ids
// (k > 0) and then to the smallest set of most likely ids whose mass reaches top-p (p < 1), drawn
// with the counter-based RNG keyed by (seed, sequence, step): the same token on every rank and
// under every layout whenever the logits are.
#pragma once
#include <cstdint>

namespace origami::infer {

struct Sampling {
  double temperature = 0.0;
  int64_t top_k = 0;   // 0: all
  double top_p = 1.0;  // 1: all
  uint64_t seed = 1;
};
// Throws naming the flag when a value is out of range.
void validate(const Sampling& s);
int64_t sample(const float* logits, int64_t V, const Sampling& s, int64_t seq, int64_t step);

}  // namespace origami::infer
