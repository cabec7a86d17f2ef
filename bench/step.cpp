// One training step (forward + backward + AdamW) of a config on synthetic tokens: tokens/s and
// MFU against the GEMM peak measured in the same process (tsp-spec §10). Prints one JSON line.
// usage: bench_step CONFIG SEQ [MICRO_BATCH] [REPS] [RECOMPUTE]
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "train/data.h"
#include "train/optimizer.h"

using namespace origami;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_step CONFIG SEQ [MICRO_BATCH] [REPS] [none|full]\n");
    return 2;
  }
  const ModelConfig cfg = ModelConfig::load(argv[1]);
  const int64_t S = std::atoll(argv[2]), B = argc > 3 ? std::atoll(argv[3]) : 1;
  const int reps = argc > 4 ? std::atoi(argv[4]) : 3;
  const Recompute rc = parse_recompute(argc > 5 ? argv[5] : "none");
  const double peak = bench::gemm_peak_gflops();

  Model model(cfg);
  ModelParams p = ModelParams::zeros(cfg, Cat::weights), g = ModelParams::zeros(cfg, Cat::grads);
  ModelParams m = ModelParams::zeros(cfg, Cat::optimizer),
              v = ModelParams::zeros(cfg, Cat::optimizer);
  init_params(p, 1);
  Batch b;
  b.B = B;
  b.S = S;
  b.inputs.resize(B * S);
  b.targets.resize(B * S);
  for (int64_t i = 0; i < B; ++i)
    synthetic_sample(1, i, S, cfg.vocab_size, b.inputs.data() + i * S, b.targets.data() + i * S);
  int64_t step = 0;
  auto run = [&] {
    g.zero();
    model.forward_backward(p, g, b, 1.0 / (B * S), rc);
    adamw_update(p, g, m, v, cpu::AdamW{1e-4}, ++step);
  };
  run();  // warm-up
  const double t = bench::time_median(reps, run);
  const double tok = static_cast<double>(B * S);
  const double flops_tok =
      6.0 * cfg.num_matmul_params() + 6.0 * cfg.num_hidden_layers * S * cfg.hidden_size;
  const double achieved = flops_tok * tok / t / 1e9;
  nlohmann::json j = {{"engine", "origami"},
                      {"seq", S},
                      {"micro_batch", B},
                      {"threads", omp_get_max_threads()},
                      {"step_s", t},
                      {"tokens_per_s", tok / t},
                      {"model_gflops", achieved},
                      {"gemm_peak_gflops", peak},
                      {"mfu", achieved / peak},
                      {"peak_bytes_total", MemTracker::get().stats().total_peak}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
