// One training step (forward + backward + AdamW) of a config on synthetic tokens: tokens/s and
// MFU against the GEMM peak measured in the same process (tsp-spec §10). Prints one JSON line.
// With DTYPE bf16 the step is the engine's bf16 step (bf16 compute copy of fp32 master weights,
// refreshed after AdamW) and the peak is oneDNN's bf16 GEMM at 2048³.
// usage: bench_step CONFIG SEQ [MICRO_BATCH] [REPS] [RECOMPUTE] [DTYPE]
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/rng.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/optimizer.h"
#include "train/data.h"

using namespace origami;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: bench_step CONFIG SEQ [MICRO_BATCH] [REPS] [none|full] [fp32|bf16]\n");
    return 2;
  }
  const ModelConfig cfg = ModelConfig::load(argv[1]);
  const int64_t S = std::atoll(argv[2]), B = argc > 3 ? std::atoll(argv[3]) : 1;
  const int reps = argc > 4 ? std::atoi(argv[4]) : 3;
  const Recompute rc = parse_recompute(argc > 5 ? argv[5] : "none");
  const DType dt = parse_compute_dtype(argc > 6 ? argv[6] : "fp32");
  const bool bf16 = dt == DType::bf16;
  const double peak = bf16 ? bench::gemm_bf16_peak_gflops() : bench::gemm_peak_gflops();
  set_compute_dtype(dt);

  Model model(cfg);
  ModelParams p = ModelParams::zeros(cfg, Cat::weights, dt),
              g = ModelParams::zeros(cfg, Cat::grads);
  ModelParams m = ModelParams::zeros(cfg, Cat::optimizer),
              v = ModelParams::zeros(cfg, Cat::optimizer);
  ModelParams master = bf16 ? ModelParams::zeros(cfg, Cat::optimizer) : p;  // fp32
  init_params(master, 1);
  if (bf16) copy_params(master, p);
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
    adamw_update(master, g, m, v, cpu::AdamW{1e-4}, ++step);
    if (bf16) copy_params(master, p);  // the compute copy, as the engines refresh it
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
                      {"dtype", compute_dtype_name(dt)},
                      {"step_s", t},
                      {"tokens_per_s", tok / t},
                      {"model_gflops", achieved},
                      {"gemm_peak_gflops", peak},
                      {"mfu", achieved / peak},
                      {"peak_bytes_total", MemTracker::get().stats().total_peak}};
  // The flash-attention kernels alone at this S (all heads, one sequence, causal): useful FLOPs
  // (visible query-key pairs only) per second; forward 2 GEMMs, backward 5, 2·d flops per pair
  // each.
  {
    const int nh = cfg.num_attention_heads, nkv = cfg.num_key_value_heads;
    const int d = static_cast<int>(cfg.hidden_size / nh);
    auto rnd = [](int64_t n, uint64_t seed) {
      Tensor t = Tensor::empty({n}, DType::f32, Cat::workspace);
      const uint64_t key = rng_key(seed, 0);
      for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = static_cast<float>(rng_normal(key, i));
      return t;
    };
    // the inputs in the element type; lse, dq, dk, dv fp32 (as the engines hold them)
    auto elem = [&](Tensor t) {
      if (!bf16) return t;
      Tensor e = Tensor::empty(t.shape(), DType::bf16, Cat::workspace);
      k::convert({e.raw(), e.dtype()}, {t.raw(), t.dtype()}, t.numel());
      return e;
    };
    auto P = [](Tensor& t) { return k::Ptr{t.raw(), t.dtype()}; };
    Tensor q = elem(rnd(S * nh * d, 1)), k = elem(rnd(S * nkv * d, 2)),
           v = elem(rnd(S * nkv * d, 3)), dout = elem(rnd(S * nh * d, 4));
    Tensor o = elem(Tensor::zeros({S * nh * d}, DType::f32, Cat::workspace)),
           lse = Tensor::zeros({nh * S}, DType::f32, Cat::workspace),
           dq = Tensor::zeros({S * nh * d}, DType::f32, Cat::workspace),
           dk = Tensor::zeros({S * nkv * d}, DType::f32, Cat::workspace),
           dv = Tensor::zeros({S * nkv * d}, DType::f32, Cat::workspace);
    const cpu::QSeg qs{0, 0, S};
    const k::Kv ks{P(k), P(v), nkv * d, 0, S, dk.data<float>(), dv.data<float>()};
    const cpu::AttnShape sh{nh, nkv, d};
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    auto fwd = [&] {
      k::flash_attn_fwd(P(o), lse.data<float>(), S, P(q), nh * d, &qs, 1, &ks, 1, sh, scale);
    };
    auto bwd = [&] {
      k::flash_attn_bwd(dq.data<float>(), P(dout), P(q), P(o), nh * d, lse.data<float>(), S, &qs, 1,
                        &ks, 1, sh, scale);
    };
    fwd();
    bwd();
    const double pairs = 0.5 * static_cast<double>(S) * static_cast<double>(S + 1) * nh;
    const double tf = bench::time_median(reps, fwd), tb = bench::time_median(reps, bwd);
    j["attn_fwd_s"] = tf;
    j["attn_bwd_s"] = tb;
    j["attn_fwd_gflops"] = 4.0 * d * pairs / tf / 1e9;
    j["attn_bwd_gflops"] = 10.0 * d * pairs / tb / 1e9;
    j["attn_fwd_of_peak"] = 4.0 * d * pairs / tf / 1e9 / peak;
    j["attn_bwd_of_peak"] = 10.0 * d * pairs / tb / 1e9 / peak;
  }
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
