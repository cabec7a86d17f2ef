// A driver for the fuzz targets without libFuzzer (g++, the default suite): runs every file of
// the seed corpus given, then `mutations` inputs derived from them by a fixed-seed generator (bit
// flips, byte changes, truncations, insertions and splices of corpus files). A crash, an abort or
// an exception other than origami's Error (which the targets catch) fails the run.
// usage: fuzz_X_smoke CORPUS_DIR [mutations]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR [mutations]\n", argv[0]);
    return 2;
  }
  const long mutations = argc > 2 ? std::atol(argv[2]) : 2000;
  std::vector<std::vector<uint8_t>> corpus;
  for (const auto& e : std::filesystem::directory_iterator(argv[1])) {
    std::ifstream f(e.path(), std::ios::binary);
    corpus.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  if (corpus.empty()) {
    std::fprintf(stderr, "%s: empty corpus\n", argv[1]);
    return 2;
  }
  for (const auto& c : corpus) LLVMFuzzerTestOneInput(c.data(), c.size());
  std::mt19937_64 rng(20261203);
  for (long i = 0; i < mutations; ++i) {
    std::vector<uint8_t> x = corpus[rng() % corpus.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      const size_t n = x.size();
      switch (rng() % 5) {
        case 0:  // flip a bit
          if (n) x[rng() % n] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:  // an interesting byte
          if (n) x[rng() % n] = static_cast<uint8_t>("\x00\xff\x7f\x80\x01\"{}[]:,-9e"[rng() % 15]);
          break;
        case 2:  // truncate
          if (n) x.resize(rng() % n);
          break;
        case 3:  // insert bytes
          x.insert(x.begin() + static_cast<long>(n ? rng() % n : 0), 1 + rng() % 8,
                   static_cast<uint8_t>(rng()));
          break;
        default: {  // splice another corpus file's tail
          const auto& o = corpus[rng() % corpus.size()];
          if (n && !o.empty()) {
            x.resize(rng() % n);
            x.insert(x.end(), o.begin() + static_cast<long>(rng() % o.size()), o.end());
          }
        }
      }
    }
    LLVMFuzzerTestOneInput(x.data(), x.size());
  }
  std::printf("%zu corpus files and %ld mutations: no crash\n", corpus.size(), mutations);
  return 0;
}
