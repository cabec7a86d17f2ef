#include "infer/sample.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

namespace origami::infer {

void validate(const Sampling& s) {
  if (!(s.temperature >= 0) || !std::isfinite(s.temperature))
    fail("--temperature=", s.temperature, " must be >= 0 (0 = greedy)");
  if (s.top_k < 0) fail("--top-k=", s.top_k, " must be >= 0 (0 = no limit)");
  if (!(s.top_p > 0 && s.top_p <= 1)) fail("--top-p=", s.top_p, " must be in (0, 1]");
}

int64_t sample(const float* z, int64_t V, const Sampling& s, int64_t seq, int64_t step) {
  if (s.temperature == 0) return std::max_element(z, z + V) - z;  // first maximum
  std::vector<int64_t> ids(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  // Most likely first, ties by id: the order (and so the draw) depends on the logits only.
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return z[a] > z[b]; });
  int64_t n = s.top_k > 0 ? std::min(s.top_k, V) : V;
  std::vector<double> p(static_cast<size_t>(n));
  const double m = z[ids[0]];
  double total = 0;
  for (int64_t i = 0; i < n; ++i)
    total += p[static_cast<size_t>(i)] =
        std::exp((z[ids[static_cast<size_t>(i)]] - m) / s.temperature);
  if (s.top_p < 1) {
    double acc = 0;
    int64_t keep = 0;
    while (keep < n && acc < s.top_p * total) acc += p[static_cast<size_t>(keep++)];
    n = std::max<int64_t>(keep, 1);
    total = std::accumulate(p.begin(), p.begin() + n, 0.0);
  }
  const double u = rng_uniform(rng_key(s.seed ^ 0x5A3B1E5ull, static_cast<uint64_t>(seq)),
                               static_cast<uint64_t>(step)) *
                   total;
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    acc += p[static_cast<size_t>(i)];
    if (u < acc) return ids[static_cast<size_t>(i)];
  }
  return ids[static_cast<size_t>(n - 1)];
}

}  // namespace origami::infer
