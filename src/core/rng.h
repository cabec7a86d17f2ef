// Layout-independent randomness (tsp-spec §3): every random number is a pure function of a key and
// a counter, so a parameter element or a synthetic token is the same whichever rank computes it.
//   parameter (seed, HF tensor name, flat index) -> N(0, std)
//   synthetic token (seed, global sample index, position) -> uniform in [0, V)
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>

namespace origami {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// Two-level key so (a, b) pairs never collide for small counters.
inline uint64_t rng_key(uint64_t seed, uint64_t stream) {
  return splitmix64(splitmix64(seed) ^ stream);
}

inline uint64_t rng_bits(uint64_t key, uint64_t counter) {
  return splitmix64(key ^ splitmix64(counter));
}

// Uniform in (0, 1), 53 bits.
inline double rng_uniform(uint64_t key, uint64_t counter) {
  return (static_cast<double>(rng_bits(key, counter) >> 11) + 0.5) * 0x1.0p-53;
}

// Standard normal for element i (Box-Muller on counters 2i and 2i+1).
inline double rng_normal(uint64_t key, uint64_t i) {
  double u1 = rng_uniform(key, 2 * i), u2 = rng_uniform(key, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

inline uint64_t param_key(uint64_t seed, std::string_view name) {
  return rng_key(seed, fnv1a(name));
}

inline int64_t synthetic_token(uint64_t seed, int64_t sample, int64_t pos, int64_t vocab) {
  uint64_t key = rng_key(seed ^ 0x5EED5EED5EEDull, static_cast<uint64_t>(sample));
  return static_cast<int64_t>(rng_bits(key, static_cast<uint64_t>(pos)) %
                              static_cast<uint64_t>(vocab));
}

}  // namespace origami
