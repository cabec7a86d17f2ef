// Training data. A sample is a window of S+1 tokens addressed by its *global sample index*
// (tsp-spec §6): sample i of step t is global index t*G + i, so any layout, micro-batching or
// resume point reads the same tokens. The corpus is tokenised once at start-up; the last
// `eval_fraction` of its tokens is held out for evaluation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace origami {

class Corpus {
 public:
  static Corpus load(const std::string& text_path, const std::string& tokenizer_path,
                     double eval_fraction = 0.05);
  static Corpus from_tokens(std::vector<int32_t> tokens, double eval_fraction = 0.05);
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t train_size() const { return n_train_; }
  int64_t vocab_used() const;  // 1 + the largest token id
  // Training window for a global sample index (a counter-based random offset).
  void train_sample(uint64_t seed, int64_t index, int64_t S, int64_t* inputs,
                    int64_t* targets) const;
  // Held-out window j (consecutive, non-overlapping, wrapping).
  void eval_sample(int64_t j, int64_t S, int64_t* inputs, int64_t* targets) const;
  int64_t eval_windows(int64_t S) const;

 private:
  std::vector<int32_t> tokens_;
  int64_t n_train_ = 0;
};

// Synthetic tokens keyed by (seed, global sample index, position): any config can be timed
// without a corpus.
void synthetic_sample(uint64_t seed, int64_t index, int64_t S, int64_t vocab, int64_t* inputs,
                      int64_t* targets);

}  // namespace origami
