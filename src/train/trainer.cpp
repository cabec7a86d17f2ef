#include "train/trainer.h"

#include <mpi.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "comm/accounting.h"
#include "comm/mpi_comm.h"
#include "core/device.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/trace.h"
#include "io/checkpoint.h"
#include "io/report.h"
#include "kernels/kernels.h"
#include "parallel/engine.h"
#include "parallel/layout.h"
#include "train/data.h"
#include "train/step.h"

namespace origami {

namespace {
using Clock = std::chrono::steady_clock;
double secs(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string fmt_eta(double s) {
  char b[32];
  const int t = static_cast<int>(s + 0.5);
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%dh%02dm", t / 3600, t / 60 % 60);
  else
    std::snprintf(b, sizeof b, "%dm%02ds", t / 60, t % 60);
  return b;
}

int64_t warmup_steps(const TrainOptions& o) {
  return o.warmup >= 0 ? o.warmup : std::min<int64_t>(100, o.steps / 10);
}
}  // namespace

double lr_at(const TrainOptions& o, int64_t step) {
  const double min_lr = o.min_lr >= 0 ? o.min_lr : o.lr * 0.1;
  const int64_t w = warmup_steps(o);
  if (step < w) return o.lr * static_cast<double>(step + 1) / static_cast<double>(w);
  if (o.steps <= w) return o.lr;
  const double t = static_cast<double>(step - w) / static_cast<double>(o.steps - w);
  return min_lr + 0.5 * (o.lr - min_lr) * (1.0 + std::cos(M_PI * std::min(1.0, t)));
}

int run_train(const TrainOptions& o) {
  const int64_t rss0 = proc_status_bytes("VmRSS");  // before the first tensor
  const Layout layout = Layout::parse(o.par.layout, mpi_world_size());
  const ModelConfig cfg = ModelConfig::load(o.config);
  // Global batch G = dp·k·B sequences; replica p takes [p·k·B, (p+1)·k·B) of the step's samples,
  // micro-step m the next B (tsp-spec §6).
  const int64_t B = o.micro_batch, S = o.seq, k = o.grad_accum, G = layout.dp * B * k;
  if (S > cfg.max_position_embeddings)
    fail("--seq=", S, " exceeds max_position_embeddings=", cfg.max_position_embeddings, " of ",
         o.config);
  if (o.steps < 1) fail("--steps=", o.steps, " must be >= 1");
  if (!(o.lr > 0)) fail("--lr=", o.lr, " must be positive");

  Corpus corpus;
  if (!o.synthetic) {
    corpus = Corpus::load(o.data, o.tokenizer);
    if (corpus.vocab_used() > cfg.vocab_size)
      fail(o.config, ": vocab_size=", cfg.vocab_size,
           " is smaller than the corpus's token ids (up to ", corpus.vocab_used() - 1, ")");
    if (corpus.train_size() <= S + 1 || corpus.eval_windows(S) < 1)
      fail("--seq=", S, " is too long for the corpus (", corpus.size(), " tokens)");
  }
  auto make_batch = [&](int64_t first_index, bool eval) {
    if (o.synthetic) return synthetic_batch(o.seed, first_index, B, S, cfg.vocab_size);
    Batch b;
    b.B = B;
    b.S = S;
    b.inputs.resize(static_cast<size_t>(B * S));
    b.targets.resize(static_cast<size_t>(B * S));
    for (int64_t i = 0; i < B; ++i) {
      int64_t* in = b.inputs.data() + i * S;
      int64_t* tg = b.targets.data() + i * S;
      if (eval)
        corpus.eval_sample(first_index + i, S, in, tg);
      else
        corpus.train_sample(o.seed, first_index + i, S, in, tg);
    }
    return b;
  };

  select_device(o.par);  // from here on new tensors live on --device
  std::unique_ptr<Engine> eng = make_engine(layout, cfg, o.par, o.recompute, B, S);
  const bool talk = !o.quiet && eng->rank() == 0;
  int64_t start = 0;
  {
    if (!o.resume.empty()) {
      // Each rank copies its slices straight out of the mapped checkpoint files.
      TrainerState st = read_checkpoint(
          o.resume, cfg, [&](const ModelParams& P, const ModelParams& M, const ModelParams& V) {
            eng->load_state(FullState{P, M, V}, true);
          });
      start = st.step;
      if (st.extra.value("seed", o.seed) != o.seed)
        fail("--seed=", o.seed, " differs from the checkpoint's seed ", st.extra["seed"].dump());
      struct Same {
        const char *key, *flag;
        int64_t value;
      };
      // The samples of a step depend on S and the global batch G = dp·k·B only, so any layout
      // and any split of G into replicas, micro-steps and micro-batches may resume.
      for (const Same& c : {Same{"seq", "--seq", S},
                            Same{"global_batch", "the global batch dp*grad-accum*micro-batch", G}})
        if (st.extra.contains(c.key) && st.extra[c.key].get<int64_t>() != c.value)
          fail(c.flag, "=", c.value, " differs from the checkpoint's ", c.key, "=",
               st.extra[c.key].get<int64_t>(), ": the resumed run would read different samples");
      if (start > o.steps)
        fail("--steps=", o.steps, " but the checkpoint is already at step ", start);
      if (start == o.steps && o.save_dir.empty())
        fail("--steps=", o.steps,
             " equals the checkpoint's step: nothing to do (add --save-dir to "
             "re-export the checkpoint under this layout)");
      if (talk)
        std::printf("resumed from %s (written under %s) at step %lld\n", o.resume.c_str(),
                    st.extra.value("layout", std::string("?")).c_str(),
                    static_cast<long long>(start));
    } else {
      // A fresh start materialises the full model once on every rank (layout-independent init).
      FullState init{ModelParams::zeros_host(cfg, Cat::workspace), ModelParams(), ModelParams()};
      if (!o.init_weights.empty())
        load_params(init.params, SafeTensorsReader(o.init_weights));
      else
        init_params(init.params, o.seed);
      eng->load_state(init, false);
      eng->init_moments();
    }
  }
  MemTracker::get().reset_peaks();
  MemTracker::device().reset_peaks();

  cpu::AdamW hp{0.0, o.beta1, o.beta2, 1e-8, o.weight_decay};
  std::vector<double> losses, step_times, grad_norms, t_compute, t_exposed, t_skew;
  if (!o.trace.empty()) {
    Trace::get().enable();
    eng->barrier();  // ranks start their clocks together
    Trace::get().set_origin();
  }
  nlohmann::json evals = nlohmann::json::array();
  // Held-out set: eval_batches batches of dp·B windows, each replica evaluating its B, so every
  // layout with the same global micro-batch evaluates the same windows.
  auto evaluate = [&]() {
    double sum = 0;
    int64_t n = 0;
    for (int64_t j = 0; j < o.eval_batches; ++j) {
      Batch b = make_batch((j * layout.dp + eng->dp_rank()) * B, true);
      sum += eng->eval_sum(b);
      n += eng->global_targets({b});
    }
    return n ? sum / static_cast<double>(n) : 0.0;
  };
  auto checkpoint = [&](int64_t steps_done) {
    TrainerState st;
    st.step = steps_done;
    st.consumed_samples = steps_done * G;
    st.extra = {{"seed", o.seed},
                {"config", cfg.to_json()},
                {"layout", eng->layout()},
                {"lr_schedule",
                 {{"lr", o.lr},
                  {"min_lr", o.min_lr >= 0 ? o.min_lr : o.lr * 0.1},
                  {"warmup", warmup_steps(o)},
                  {"steps", o.steps},
                  {"kind", "cosine"}}},
                {"micro_batch", B},
                {"grad_accum", k},
                {"global_batch", G},
                {"seq", S}};
    eng->save_checkpoint(o.save_dir, st);
    if (talk)
      std::printf("saved checkpoint %s/step_%lld\n", o.save_dir.c_str(),
                  static_cast<long long>(steps_done));
  };

  if (talk)
    std::printf(
        "origami train: %s (%.1fM params), layout %s, S=%lld, batch %lld x %lld accum = %lld "
        "seqs/step, %s, %d threads/rank\n",
        o.config.c_str(), cfg.num_params() / 1e6, eng->layout().c_str(), static_cast<long long>(S),
        static_cast<long long>(B), static_cast<long long>(k), static_cast<long long>(G),
        o.synthetic ? "synthetic tokens" : "corpus", omp_get_max_threads());
  const auto t_run = Clock::now();
  for (int64_t step = start; step < o.steps; ++step) {
    const auto t0 = Clock::now();
    const double blocked0 = comm_blocked_seconds();
    TraceSpan step_span(std::string("step ").append(std::to_string(step + 1)));
    std::vector<Batch> micro;
    for (int64_t j = 0; j < k; ++j)
      micro.push_back(make_batch(step * G + eng->dp_rank() * k * B + j * B, false));
    hp.lr = lr_at(o, step);
    const StepResult sr = train_step(*eng, micro, hp, o.clip, step);
    const double loss = sr.loss, gnorm = sr.grad_norm;
    // Time: exposed communication = blocked in waits; skew = waiting for the slowest rank at the
    // step's end; compute = the rest.
    const double exposed = comm_blocked_seconds() - blocked0;
    const auto tb = Clock::now();
    {
      TraceSpan span("skew (barrier)");
      eng->barrier();
    }
    const double dt = secs(t0, Clock::now()), skew = secs(tb, Clock::now());
    t_exposed.push_back(exposed);
    t_skew.push_back(skew);
    t_compute.push_back(dt - exposed - skew);
    losses.push_back(loss);
    grad_norms.push_back(gnorm);
    step_times.push_back(dt);
    const bool last = step + 1 == o.steps;
    if (talk && (o.log_every > 0 && ((step + 1) % o.log_every == 0 || last))) {
      const double el = secs(t_run, Clock::now());
      const double eta =
          el / static_cast<double>(step + 1 - start) * static_cast<double>(o.steps - step - 1);
      std::printf(
          "step %lld/%lld | loss %.6f | lr %.2e | gnorm %.3f | %.0f tok/s | %.3f s/step | "
          "comm exposed %.0f%% | %smem %s | eta %s\n",
          static_cast<long long>(step + 1), static_cast<long long>(o.steps), loss, hp.lr, gnorm,
          static_cast<double>(G * S) / dt, dt, 100.0 * exposed / dt,
          device_ops() ? "device " : "",  // the tensors' memory: the device's when selected
          format_bytes((device_ops() ? MemTracker::device() : MemTracker::get()).stats().total_peak)
              .c_str(),
          fmt_eta(eta).c_str());
      std::fflush(stdout);
    }
    if (!o.synthetic && o.eval_every > 0 && ((step + 1) % o.eval_every == 0 || last)) {
      const double el = evaluate();
      evals.push_back({{"step", step + 1}, {"loss", el}});
      if (talk)
        std::printf("eval step %lld | held-out loss %.6f\n", static_cast<long long>(step + 1), el);
    }
    if (!o.save_dir.empty() && ((o.save_every > 0 && (step + 1) % o.save_every == 0) || last))
      checkpoint(step + 1);
  }
  if (start == o.steps) checkpoint(start);  // zero steps: re-export under this layout
  RunSummary sum;
  sum.layout = eng->layout();
  sum.world_size = eng->world();
  sum.config = cfg.to_json();
  sum.seq = S;
  sum.micro_batch = B;
  sum.grad_accum = k;
  sum.steps = o.steps - start;
  sum.tokens_per_step = G * S;
  sum.losses = losses;
  sum.grad_norms = grad_norms;
  sum.step_times = step_times;
  sum.eval = evals;
  const MemStats mem = MemTracker::get().stats();
  nlohmann::json me = eng->rank_report();
  me["rank"] = eng->rank();
  me["peak_bytes"] = peak_json(mem);
  if (device_ops()) me["device_peak_bytes"] = peak_json(MemTracker::device().stats());
  me["rss_bytes"] = {{"baseline", rss0}, {"peak", proc_status_bytes("VmHWM")}};
  const double tmed = step_median(step_times);  // without the warm-up step
  me["time_s"] = {{"step_median", tmed},
                  {"compute", step_median(t_compute)},
                  {"comm_exposed", step_median(t_exposed)},
                  {"skew", step_median(t_skew)}};
  const auto ranks = gather_to_root(me.dump());
  if (!o.trace.empty()) {
    const auto tr = gather_to_root(Trace::get().events_json(eng->rank()));
    if (eng->rank() == 0) {
      std::string all = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
      for (size_t i = 0; i < tr.size(); ++i) all.append(i ? ",\n" : "").append(tr[i]);
      write_file_atomic(o.trace, all.append("\n]}\n"));
      if (talk) std::printf("trace: %s (open in https://ui.perfetto.dev)\n", o.trace.c_str());
    }
  }
  if (talk) print_memory(ranks);
  if (eng->rank() == 0 && !o.report.empty()) {
    for (const auto& r : ranks) sum.ranks.push_back(nlohmann::json::parse(r));
    write_report(o.report, sum);
  }
  return 0;
}

}  // namespace origami
