#include "train/grad.h"

#include <mpi.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "comm/accounting.h"
#include "comm/mpi_comm.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "io/report.h"
#include "parallel/engine.h"
#include "parallel/layout.h"

namespace origami {

Batch load_token_batch(const std::string& path, const ModelConfig& cfg) {
  SafeTensorsReader r(path);
  for (const auto& [name, e] : r.entries())
    if (name != "input_ids" && name != "labels" && name != "position_ids")
      fail(path, ": unknown tensor '", name,
           "' (expected input_ids and optionally labels and position_ids)");
  std::vector<int64_t> shape;
  const std::vector<int64_t> ids = r.load_ints("input_ids", &shape);
  if (shape.size() != 2 || shape[1] < 2)
    fail(path, ": input_ids has shape ", shape_str(shape), ", expected [B, S+1] with S >= 1");
  std::vector<int64_t> labels = ids;
  if (r.has("labels")) {
    std::vector<int64_t> lshape;
    labels = r.load_ints("labels", &lshape);
    if (lshape != shape)
      fail(path, ": labels has shape ", shape_str(lshape), ", expected input_ids' shape ",
           shape_str(shape));
  }
  const int64_t W = shape[1];
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= cfg.vocab_size)
      fail(path, ": input_ids[", static_cast<int64_t>(i) / W, ", ", static_cast<int64_t>(i) % W,
           "]=", ids[i], " is outside the vocabulary [0, ", cfg.vocab_size, ")");
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] >= cfg.vocab_size)
      fail(path, ": labels[", static_cast<int64_t>(i) / W, ", ", static_cast<int64_t>(i) % W,
           "]=", labels[i], " is outside the vocabulary [0, ", cfg.vocab_size, ")");
  Batch b;
  b.B = shape[0];
  b.S = shape[1] - 1;
  for (int64_t i = 0; i < b.B; ++i)
    for (int64_t s = 0; s < b.S; ++s) {
      b.inputs.push_back(ids[static_cast<size_t>(i * W + s)]);
      const int64_t t = labels[static_cast<size_t>(i * W + s + 1)];
      if (t == -100)
        b.targets.push_back(-1);
      else if (t < 0)
        fail(path, ": labels[", i, ", ", s + 1, "]=", t,
             " is negative and not the ignore index -100");
      else
        b.targets.push_back(t);
    }
  if (r.has("position_ids")) {  // packed documents: the inputs' positions (first S columns)
    std::vector<int64_t> pshape;
    const std::vector<int64_t> pos = r.load_ints("position_ids", &pshape);
    if (pshape != shape)
      fail(path, ": position_ids has shape ", shape_str(pshape), ", expected input_ids' shape ",
           shape_str(shape));
    std::vector<int64_t> p;
    for (int64_t i = 0; i < b.B; ++i)
      for (int64_t s = 0; s < b.S; ++s) p.push_back(pos[static_cast<size_t>(i * W + s)]);
    set_positions(b, std::move(p), path);
  }
  validate_batch(cfg, b, path);
  return b;
}

void run_grad(const GradOptions& o) {
  // Everything before make_engine's first collective is a pure function of the arguments and the
  // files, so every rank reaches the same verdict on bad input.
  const Layout layout = Layout::parse(o.par.layout, mpi_world_size());
  const ModelConfig cfg = ModelConfig::load(o.config);
  const Batch global = load_token_batch(o.tokens, cfg);
  if (global.B % layout.dp)
    fail(o.tokens, ": the batch has B=", global.B, " sequences, not divisible by dp=", layout.dp);
  // The weights as views of the mapped file: each rank reads only the rows of its own slices,
  // and unmaps the file once the engine holds them.
  auto weights = std::make_unique<SafeTensorsReader>(o.weights);
  FullState st{map_params(cfg, *weights), ModelParams(), ModelParams()};
  ModelParams grads = ModelParams::zeros_host(cfg, Cat::grads);
  // From here on tensors live on --device and the kernels are its own; the communicators are
  // --comm's (make_engine: by default MPI on the CPU, the staged one on a device).
  select_device(o.par);
  auto eng = make_engine(layout, cfg, o.par, o.recompute, global.B / layout.dp, global.S);
  eng->load_state(st, false);
  st = FullState();
  weights.reset();
  // This replica's sequences: [p·B/dp, (p+1)·B/dp).
  const int64_t Br = global.B / layout.dp;
  const Batch b = batch_rows(global, eng->dp_rank() * Br, Br);

  const int64_t N = eng->global_targets({b});  // before the first backward
  eng->zero_grads();
  const double sum =
      eng->sum_over_ranks(eng->forward_backward(b, N ? 1.0 / static_cast<double>(N) : 0.0));
  eng->reduce_grads();
  eng->full_grads(grads);
  nlohmann::json mine = eng->rank_report();
  mine["rank"] = eng->rank();
  mine["peak_bytes"] = peak_json(MemTracker::get().stats());
  if (device_ops()) mine["device_peak_bytes"] = peak_json(MemTracker::device().stats());
  const auto ranks = gather_to_root(mine.dump());
  if (eng->rank() != 0) return;
  if (!o.report.empty()) {
    nlohmann::json rep = {{"schema_version", 1},
                          {"layout", layout.text},
                          {"world_size", mpi_world_size()},
                          {"config", cfg.to_json()},
                          {"seq", global.S},
                          {"micro_batch", global.B},
                          {"ranks", nlohmann::json::array()}};
    for (const auto& r : ranks) rep["ranks"].push_back(nlohmann::json::parse(r));
    write_file_atomic(o.report, rep.dump(1) + "\n");
  }
  if (N == 0) std::fprintf(stderr, "warning: no non-ignored targets; loss and gradients are 0\n");
  const float loss = static_cast<float>(N ? sum / static_cast<double>(N) : 0.0);
  SafeTensorsWriter w;
  w.add("loss", DType::f32, {1}, &loss);
  grads.for_each([&](const std::string& name, Tensor& t) { w.add(name, t); });
  w.write(o.out);
}

}  // namespace origami
