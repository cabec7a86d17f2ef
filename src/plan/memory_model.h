// The analytic memory model of `origami plan` (docs/memory-model.md): per-rank peak bytes by
// category for a config, layout, micro-batch, sequence length, dtype and recompute mode.
//
// It follows the engine's own rules as a *replay of its buffers*: each schedule is written here
// as the sequence of buffers the engine allocates and frees (same names, same sizes, same
// scopes), without computing anything, on a simulated tracker with MemTracker's semantics (a
// category's peak is its maximum over time; `total` the maximum of the sum). The depths the
// engine uses (packets in flight, ring buffers, head buckets) are the parameters in Depths, so
// overlap work that changes them updates one place. The communication bytes per layer come from
// the tsp-spec §7 formulas (which the tests assert the engine records exactly).
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/memory.h"
#include "model/config.h"
#include "model/model.h"
#include "parallel/layout.h"

namespace origami::plan {

enum class Dtype { f32, bf16 };  // bf16: weights, grads, activations, buffers 2 B; AdamW fp32
Dtype parse_dtype(const std::string& s);

// The pipeline depths of the engine's schedules today (ring.cpp, tsp_attention.cpp): overlap
// work that changes a depth changes it here, and test_memory_model.py checks the two agree.
struct Depths {
  int attn_packets = 3;      // attention forward: packets j, j+1 and j+2 in flight
  int ring_weight_bufs = 2;  // weight buffers of the MLP / LM-head ring (D > 2; one at D = 2)
  int ring_acc_bufs = 2;     // gradient accumulators in the ring's backward (D > 2; one at D = 2)
};

struct Input {
  ModelConfig cfg;
  Layout layout;
  ParallelOptions par;
  Recompute recompute = Recompute::none;
  int64_t micro_batch = 1;  // sequences per replica per micro-step
  int64_t seq = 0;
  Dtype dtype = Dtype::f32;
  int threads = 1;  // OpenMP threads per rank (the attention kernels keep tiles per thread)
  Depths depths{};
};

struct Result {
  std::array<int64_t, kNumCats> peak{};  // per category, worst rank
  int64_t total = 0;                     // maximum over time of the sum, worst rank
  // Bytes one rank receives per layer and micro-step, by category and phase (tsp-spec §7).
  nlohmann::json comm_per_layer;
  nlohmann::json to_json() const;
};

// Validates the layout like `train` does (same errors) and predicts one training step in steady
// state (AdamW state allocated, every micro-step alike).
Result predict(const Input& in);

}  // namespace origami::plan
