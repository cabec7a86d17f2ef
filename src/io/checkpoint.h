// Checkpoints (tsp-spec §10): <dir>/step_N/{model.safetensors, optimizer.safetensors, trainer.json}
// written into step_N.tmp/, fsync'd, renamed; <dir>/latest names the newest step and is replaced
// atomically. A crash at any moment leaves either the previous checkpoint or the new one, whole.
// Under --dtype bf16 the model file is bf16 (what the run computes with; an HF bf16 checkpoint)
// and the optimizer file also holds the fp32 master weights as `master.<name>`: a resume reads
// those, so it is bit-exact, in either precision and under any layout.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "model/params.h"

namespace origami {

struct TrainerState {
  int64_t step = 0;              // steps completed
  int64_t consumed_samples = 0;  // global samples consumed
  nlohmann::json extra;          // lr schedule, seed, config, layout, ...
};

// params: the weights the run computes with (the model file, in their type); master: under bf16
// the fp32 master weights they are rounded from (into the optimizer file), else null.
void save_checkpoint(const std::string& dir, const TrainerState& st, ModelParams& params,
                     ModelParams& exp_avg, ModelParams& exp_avg_sq, ModelParams* master = nullptr);
std::string sha256_file(const std::string& path);

// The same checkpoint, written by several ranks at once: rank 0 creates step_N.tmp/ and both
// files at full size with their headers; then every rank maps them and writes only its own
// slices through the views it is given (write(params, exp_avg, exp_avg_sq), each a ModelParams
// of views into the files); then rank 0 hashes, writes trainer.json and renames. `barrier`
// synchronises the ranks between the phases. With model_dt bf16 the params views are the fp32
// master weights in the optimizer file, and rank 0 rounds them into the bf16 model file.
void save_checkpoint_sharded(
    const std::string& dir, const TrainerState& st, const ModelConfig& c, int rank,
    const std::function<void()>& barrier,
    const std::function<void(ModelParams&, ModelParams&, ModelParams&)>& write,
    DType model_dt = DType::f32);
// Deletes the step_* directories of `dir` beyond the keep_last newest (never step `current`, the
// one just written); keep_last <= 0 keeps all. Called by rank 0 after a save.
void prune_checkpoints(const std::string& dir, int64_t keep_last, int64_t current);
// `path` is a checkpoint root (uses `latest`; if the step it names is missing or corrupt, the
// newest complete step, with a warning on stderr) or a step_N directory. Verifies the sha256 of both
// files and hands views of its tensors (memory-mapped, read-only: a rank touches
// only the pages of the slices it copies) to `read`: the fp32 weights (the master weights of a
// bf16 checkpoint) and the moments. Shapes, dtypes and names are checked.
TrainerState read_checkpoint(
    const std::string& path, const ModelConfig& c,
    const std::function<void(const ModelParams&, const ModelParams&, const ModelParams&)>& read);

}  // namespace origami
