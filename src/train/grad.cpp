#include "train/grad.h"

#include <mpi.h>

#include <cstdio>
#include <vector>

#include "comm/accounting.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "parallel/layout.h"
#include "parallel/tsp.h"
#include "train/engine.h"
#include "train/report.h"

namespace origami {

Batch load_token_batch(const std::string& path, const ModelConfig& cfg) {
  SafeTensorsReader r(path);
  for (const auto& [name, e] : r.entries())
    if (name != "input_ids" && name != "labels")
      fail(path, ": unknown tensor '", name, "' (expected input_ids and optionally labels)");
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
  validate_batch(cfg, b, path);
  return b;
}

void run_grad(const GradOptions& o) {
  // Everything before make_mesh is a pure function of the arguments and the files, so every rank
  // reaches the same verdict on bad input before the first collective.
  const Layout layout = Layout::parse(o.par.layout, mpi_world_size());
  const ModelConfig cfg = ModelConfig::load(o.config);
  ModelParams params = ModelParams::zeros(cfg, Cat::weights);
  load_params(params, SafeTensorsReader(o.weights));
  const Batch global = load_token_batch(o.tokens, cfg);
  if (global.B % layout.dp)
    fail(o.tokens, ": the batch has B=", global.B, " sequences, not divisible by dp=", layout.dp);
  if (layout.uses_tsp())
    validate_tsp(cfg, layout.folded_degree(), global.S, o.par.attn_buckets);
  else if (o.par.keep_attn_weights)
    fail("--keep-attn-weights needs a TSP layout (--layout tsp=D)");
  Mesh mesh = make_mesh(layout.model_degree());
  Comm &model = *mesh.model, &dp = *mesh.dp;
  // This replica's sequences: [p·B/dp, (p+1)·B/dp).
  Batch b;
  b.B = global.B / layout.dp;
  b.S = global.S;
  const auto first = global.inputs.begin() + dp.rank() * b.B * b.S;
  b.inputs.assign(first, first + b.B * b.S);
  const auto tfirst = global.targets.begin() + dp.rank() * b.B * b.S;
  b.targets.assign(tfirst, tfirst + b.B * b.S);

  ModelParams grads = ModelParams::zeros(cfg, Cat::grads);
  double sum = 0;
  int64_t N = 0;
  auto all_sum = [&](auto* x) {  // over the model group, then over the replicas
    model.set_context(kWhereStep, Phase::fwd);
    model.iallreduce(x, 1, Traffic::other).wait();
    dp.set_context(kWhereStep, Phase::fwd);
    dp.iallreduce(x, 1, Traffic::other).wait();
  };
  if (!layout.uses_tsp()) {
    N = b.num_targets();
    all_sum(&N);
    Model m(cfg);
    sum = m.forward_backward(params, grads, b, N ? 1.0 / static_cast<double>(N) : 0.0, o.recompute);
    std::vector<Tensor*> gs;
    grads.for_each([&](const std::string&, Tensor& t) { gs.push_back(&t); });
    dp_sum_grads(dp, gs);
  } else {
    TspEngine eng(cfg, model,
                  {o.par.attn_buckets, o.par.keep_attn_weights, o.par.overlap, o.recompute,
                   layout.fsdp_axis});
    const TspDims& t = eng.dims();
    TspParams p = TspParams::zeros(cfg, layout.folded_degree(), Cat::weights);
    full_to_shard(params, p, t, model.rank());
    params = ModelParams();
    TspParams g = TspParams::zeros(cfg, layout.folded_degree(), Cat::grads);
    const Batch local = eng.shard_batch(b);
    N = local.num_targets();  // the global N: all-reduced before the first backward
    all_sum(&N);
    sum = eng.forward_backward(p, g, local, N ? 1.0 / static_cast<double>(N) : 0.0);
    eng.finish_grads(g);
    std::vector<Tensor*> gs;
    g.for_each([&](Tensor& x, bool) { gs.push_back(&x); });
    dp_sum_grads(dp, gs);
    gather_full(model, g, grads, t);
  }
  model.set_context(kWhereStep, Phase::fwd);
  model.iallreduce(&sum, 1, Traffic::other).wait();
  dp.iallreduce(&sum, 1, Traffic::other).wait();
  std::vector<CommRecord> recs = model.records();
  recs.insert(recs.end(), dp.records().begin(), dp.records().end());
  nlohmann::json mine = comm_summary(recs, static_cast<int>(cfg.num_hidden_layers));
  mine["rank"] = mesh.world_rank;
  mine["peak_bytes"] = peak_json(MemTracker::get().stats());
  const auto ranks = gather_to_root(mine.dump());
  if (mesh.world_rank != 0) return;
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
