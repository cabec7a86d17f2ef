#include "train/grad.h"

#include <mpi.h>

#include <cstdio>
#include <vector>

#include "comm/accounting.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "parallel/layout.h"
#include "parallel/tsp.h"
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
  const int world = mpi_world_size();
  int mpi = 0;
  MPI_Initialized(&mpi);
  // Everything below until the first collective is a pure function of the arguments and the
  // files, so every rank reaches the same verdict on bad input.
  const Layout layout = Layout::parse(o.par.layout, world);
  const ModelConfig cfg = ModelConfig::load(o.config);
  ModelParams params = ModelParams::zeros(cfg, Cat::weights);
  load_params(params, SafeTensorsReader(o.weights));
  const Batch b = load_token_batch(o.tokens, cfg);
  if (!o.par.layout.empty()) validate_tsp(cfg, layout.tsp, b.S, o.par.attn_buckets);
  ModelParams grads = ModelParams::zeros(cfg, Cat::grads);
  double sum = 0;
  int64_t N = b.num_targets();
  if (o.par.layout.empty()) {
    if (o.par.keep_attn_weights) fail("--keep-attn-weights needs a TSP layout (--layout tsp=D)");
    Model model(cfg);
    sum = model.forward_backward(params, grads, b, N ? 1.0 / static_cast<double>(N) : 0.0,
                                 o.recompute);
  } else {
    auto comm = mpi ? make_mpi_comm() : make_self_comm();
    TspEngine eng(cfg, *comm,
                  {o.par.attn_buckets, o.par.keep_attn_weights, o.par.overlap, o.recompute});
    const TspDims& t = eng.dims();
    TspParams p = TspParams::zeros(cfg, layout.tsp, Cat::weights);
    full_to_shard(params, p, t, comm->rank());
    params = ModelParams();
    TspParams g = TspParams::zeros(cfg, layout.tsp, Cat::grads);
    const Batch local = eng.shard_batch(b);
    N = local.num_targets();  // the global N: all-reduced before the first backward
    comm->set_context(kWhereStep, Phase::fwd);
    comm->iallreduce(&N, 1, Traffic::other).wait();
    sum = eng.forward_backward(p, g, local, N ? 1.0 / static_cast<double>(N) : 0.0);
    eng.finish_grads(g);
    comm->iallreduce(&sum, 1, Traffic::other).wait();
    nlohmann::json mine = comm_summary(comm->records(), static_cast<int>(cfg.num_hidden_layers));
    mine["rank"] = comm->rank();
    mine["peak_bytes"] = peak_json(MemTracker::get().stats());
    gather_full(*comm, g, grads, t);
    const auto ranks = gather_to_root(mine.dump());
    if (comm->rank() != 0) return;
    if (!o.report.empty()) {
      nlohmann::json rep = {{"schema_version", 1},
                            {"layout", layout.text},
                            {"world_size", world},
                            {"config", cfg.to_json()},
                            {"seq", b.S},
                            {"micro_batch", b.B},
                            {"ranks", nlohmann::json::array()}};
      for (const auto& r : ranks) rep["ranks"].push_back(nlohmann::json::parse(r));
      write_file_atomic(o.report, rep.dump(1) + "\n");
    }
  }
  if (N == 0) std::fprintf(stderr, "warning: no non-ignored targets; loss and gradients are 0\n");
  const float loss = static_cast<float>(N ? sum / static_cast<double>(N) : 0.0);
  SafeTensorsWriter w;
  w.add("loss", DType::f32, {1}, &loss);
  grads.for_each([&](const std::string& name, Tensor& t) { w.add(name, t); });
  w.write(o.out);
}

}  // namespace origami
