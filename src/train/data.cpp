#include "train/data.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"

namespace origami {

Corpus Corpus::from_tokens(std::vector<int32_t> tokens, double eval_fraction) {
  Corpus c;
  c.tokens_ = std::move(tokens);
  c.n_train_ = static_cast<int64_t>(static_cast<double>(c.tokens_.size()) * (1.0 - eval_fraction));
  return c;
}

Corpus Corpus::load(const std::string& text_path, const std::string& tokenizer_path,
                    double eval_fraction) {
  sentencepiece::SentencePieceProcessor sp;
  const auto st = sp.Load(tokenizer_path);
  if (!st.ok()) fail(tokenizer_path, ": cannot load the sentencepiece model: ", st.ToString());
  std::ifstream f(text_path);
  if (!f) fail(text_path, ": cannot open the corpus");
  std::vector<int32_t> all;
  std::string line;
  std::vector<int> ids;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    ids.clear();
    const auto s = sp.Encode(line, &ids);
    if (!s.ok()) fail(text_path, ": tokenizer failed: ", s.ToString());
    all.insert(all.end(), ids.begin(), ids.end());
  }
  if (all.size() < 1024) fail(text_path, ": corpus too small (", all.size(), " tokens)");
  return from_tokens(std::move(all), eval_fraction);
}

int64_t Corpus::vocab_used() const {
  return tokens_.empty() ? 0 : 1 + *std::max_element(tokens_.begin(), tokens_.end());
}

void Corpus::train_sample(uint64_t seed, int64_t index, int64_t S, int64_t* in, int64_t* tg) const {
  const int64_t span = n_train_ - (S + 1);
  if (span <= 0) fail("--seq=", S, " is longer than the training split (", n_train_, " tokens)");
  const uint64_t key = rng_key(seed, 0xDA7A);
  const int64_t start = static_cast<int64_t>(rng_bits(key, static_cast<uint64_t>(index)) %
                                             static_cast<uint64_t>(span + 1));
  for (int64_t i = 0; i < S; ++i) {
    in[i] = tokens_[static_cast<size_t>(start + i)];
    tg[i] = tokens_[static_cast<size_t>(start + i + 1)];
  }
}

int64_t Corpus::eval_windows(int64_t S) const {
  return (size() - n_train_ - 1) / S;
}

void Corpus::eval_sample(int64_t j, int64_t S, int64_t* in, int64_t* tg) const {
  const int64_t nw = eval_windows(S);
  if (nw <= 0)
    fail("--seq=", S, " is longer than the held-out split (", size() - n_train_, " tokens)");
  const int64_t start = n_train_ + (j % nw) * S;
  for (int64_t i = 0; i < S; ++i) {
    in[i] = tokens_[static_cast<size_t>(start + i)];
    tg[i] = tokens_[static_cast<size_t>(start + i + 1)];
  }
}

void synthetic_sample(uint64_t seed, int64_t index, int64_t S, int64_t vocab, int64_t* in,
                      int64_t* tg) {
  for (int64_t i = 0; i < S; ++i) {
    in[i] = synthetic_token(seed, index, i, vocab);
    tg[i] = synthetic_token(seed, index, i + 1, vocab);
  }
}

}  // namespace origami
