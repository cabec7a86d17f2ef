// Checkpoints (tsp-spec §10): <dir>/step_N/{model.safetensors, optimizer.safetensors, trainer.json}
// written into step_N.tmp/, fsync'd, renamed; <dir>/latest names the newest step and is replaced
// atomically. A crash at any moment leaves either the previous checkpoint or the new one, whole.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "model/params.h"

namespace origami {

struct TrainerState {
  int64_t step = 0;              // steps completed
  int64_t consumed_samples = 0;  // global samples consumed
  nlohmann::json extra;          // lr schedule, seed, config, layout, ...
};

void save_checkpoint(const std::string& dir, const TrainerState& st, ModelParams& params,
                     ModelParams& exp_avg, ModelParams& exp_avg_sq);
// `path` is a checkpoint root (uses `latest`) or a step_N directory. Verifies the sha256 of both
// files, loads everything, returns the trainer state.
TrainerState load_checkpoint(const std::string& path, ModelParams& params, ModelParams& exp_avg,
                             ModelParams& exp_avg_sq);
std::string sha256_file(const std::string& path);

}  // namespace origami
