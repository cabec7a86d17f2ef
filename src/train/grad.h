// `origami grad`: the gradient oracle interface. Loss = mean cross-entropy over all non-ignored
// targets; output = `loss` [1] plus one fp32 gradient per parameter under its HF name, gathered
// to full tensors whatever the layout (rank 0 writes the file).
#pragma once
#include <string>

#include "model/model.h"
#include "parallel/layout.h"

namespace origami {

struct GradOptions {
  std::string config, weights, tokens, out, report;
  Recompute recompute = Recompute::none;
  ParallelOptions par;
};

// T holds input_ids [B, S+1] (I32/I64) and optionally labels (same shape, -100 = ignored).
// Inputs are input_ids[:, :-1]; targets labels[:, 1:] if present, else input_ids[:, 1:].
Batch load_token_batch(const std::string& path, const ModelConfig& cfg);
void run_grad(const GradOptions& o);

}  // namespace origami
