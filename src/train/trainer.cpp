#include "train/trainer.h"

#include <mpi.h>
#include <omp.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
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
#include "kernels/profile.h"
#include "parallel/engine.h"
#include "parallel/layout.h"
#include "train/data.h"
#include "train/dataset.h"
#include "train/step.h"

namespace origami {

namespace {
// SIGTERM/SIGINT seen by this rank (the training loop polls it at every step's end).
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
}
void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}
}  // namespace

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

namespace {

// One `origami train` run, in named steps: the options checked, the data, the engine and its
// starting state, the steps (each: a train_step, its time split, the progress line, evaluation,
// checkpoint), and the report.
class TrainRun {
 public:
  explicit TrainRun(const TrainOptions& o)
      : o_(o),
        rss0_(proc_status_bytes("VmRSS")),  // before the first tensor
        layout_(Layout::parse(o.par.layout, mpi_world_size())),
        cfg_(ModelConfig::load(o.config)),
        B_(o.micro_batch),
        S_(o.seq),
        k_(o.grad_accum),
        G_(layout_.dp * B_ * k_) {}

  int run() {
    // Before anything slow (data, engine, resume): a preemption during setup is then honoured
    // after the first step instead of killing the rank.
    catch_stop_signals();
    check_options();
    load_data();
    // A run predicted not to fit is refused before it allocates anything (TrainOptions).
    const auto fits = o_.memory_check ? o_.memory_check(cfg_, layout_) : nullptr;
    select_device(o_.par);  // from here on new tensors live on --device
    if (fits) fits();
    eng_ = make_engine(layout_, cfg_, o_.par, o_.recompute, B_, S_);
    if (o_.profile_kernels) k::profile_start();
    talk_ = !o_.quiet && eng_->rank() == 0;
    start_ = o_.resume.empty() ? fresh_start() : resume();
    MemTracker::get().reset_peaks();
    MemTracker::device().reset_peaks();
    if (!o_.trace.empty()) {
      Trace::get().enable();
      eng_->barrier();  // ranks start their clocks together
      Trace::get().set_origin();
    }
    banner();
    t_run_ = Clock::now();
    for (int64_t step = start_; step < o_.steps; ++step) {
      train(step);
      if (step == start_ && o_.profile_kernels) k::profile_reset();  // without the warm-up step
      // SIGTERM or SIGINT on any rank (a scheduler's preemption): every rank stops after the
      // same step, writes a checkpoint of it and exits with kPreempted.
      if (step + 1 < o_.steps && any_rank(g_stop_signal != 0)) return preempted(step + 1);
    }
    if (start_ == o_.steps) checkpoint(start_);  // zero steps: re-export under this layout
    report();
    return 0;
  }

 private:
  // Global batch G = dp·k·B sequences; replica p takes [p·k·B, (p+1)·k·B) of the step's samples,
  // micro-step m the next B (tsp-spec §6).
  void check_options() const {
    if (S_ > cfg_.max_position_embeddings)
      fail("--seq=", S_, " exceeds max_position_embeddings=", cfg_.max_position_embeddings, " of ",
           o_.config);
    if (o_.steps < 1) fail("--steps=", o_.steps, " must be >= 1");
    if (!(o_.lr > 0)) fail("--lr=", o_.lr, " must be positive");
  }

  void load_data() {
    if (o_.synthetic) return;
    if (!o_.dataset.empty()) {
      dataset_ = std::make_unique<Dataset>(Dataset::open(o_.dataset));
      const Dataset& d = *dataset_;
      if (d.vocab_used() > cfg_.vocab_size)
        fail(o_.config, ": vocab_size=", cfg_.vocab_size, " is smaller than ", o_.dataset,
             "'s token ids (up to ", d.vocab_used() - 1, ")");
      if (o_.pack_documents) {
        dataset_->plan_packing(o_.seed, S_);
      } else if (d.train_tokens() <= S_ + 1 || d.eval_windows(S_) < 1) {
        fail("--seq=", S_, " is too long for ", o_.dataset, " (", d.train_tokens(),
             " training tokens; held out ", d.tokens() - d.train_tokens(),
             "): use --pack documents, or a shorter --seq");
      }
      return;
    }
    corpus_ = Corpus::load(o_.data, o_.tokenizer);
    if (corpus_.vocab_used() > cfg_.vocab_size)
      fail(o_.config, ": vocab_size=", cfg_.vocab_size,
           " is smaller than the corpus's token ids (up to ", corpus_.vocab_used() - 1, ")");
    if (corpus_.train_size() <= S_ + 1 || corpus_.eval_windows(S_) < 1)
      fail("--seq=", S_, " is too long for the corpus (", corpus_.size(), " tokens)");
  }

  // B samples from global index first_index: synthetic, held-out windows, or training windows.
  Batch make_batch(int64_t first_index, bool eval) const {
    if (o_.synthetic) return synthetic_batch(o_.seed, first_index, B_, S_, cfg_.vocab_size);
    if (o_.pack_documents) return dataset_->packed_batch(first_index, B_, S_, eval);
    Batch b;
    b.B = B_;
    b.S = S_;
    b.inputs.resize(static_cast<size_t>(B_ * S_));
    b.targets.resize(static_cast<size_t>(B_ * S_));
    for (int64_t i = 0; i < B_; ++i) {
      int64_t* in = b.inputs.data() + i * S_;
      int64_t* tg = b.targets.data() + i * S_;
      const int64_t j = first_index + i;
      if (dataset_ && eval)
        dataset_->eval_window(j, S_, in, tg);
      else if (dataset_)
        dataset_->train_window(o_.seed, j, S_, in, tg);
      else if (eval)
        corpus_.eval_sample(j, S_, in, tg);
      else
        corpus_.train_sample(o_.seed, j, S_, in, tg);
    }
    return b;
  }

  // A fresh start from --init maps the file (each rank reads only the rows of its own slices);
  // a random one materialises the full model once on every rank (layout-independent init).
  int64_t fresh_start() {
    if (!o_.init_weights.empty()) {
      const SafeTensorsReader r(o_.init_weights);
      eng_->load_state(FullState{map_params(cfg_, r), ModelParams(), ModelParams()}, false);
      eng_->init_moments();
      return 0;
    }
    FullState init{ModelParams::zeros_host(cfg_, Cat::workspace), ModelParams(), ModelParams()};
    init_params(init.params, o_.seed);
    eng_->load_state(init, false);
    eng_->init_moments();
    return 0;
  }

  // Each rank copies its slices straight out of the mapped checkpoint files.
  int64_t resume() {
    TrainerState st = read_checkpoint(
        o_.resume, cfg_, [&](const ModelParams& P, const ModelParams& M, const ModelParams& V) {
          eng_->load_state(FullState{P, M, V}, true);
        });
    const int64_t start = st.step;
    if (st.extra.value("seed", o_.seed) != o_.seed)
      fail("--seed=", o_.seed, " differs from the checkpoint's seed ", st.extra["seed"].dump());
    struct Same {
      const char *key, *flag;
      int64_t value;
    };
    // The samples of a step depend on S and the global batch G = dp·k·B only, so any layout
    // and any split of G into replicas, micro-steps and micro-batches may resume.
    for (const Same& c : {Same{"seq", "--seq", S_},
                          Same{"global_batch", "the global batch dp*grad-accum*micro-batch", G_}})
      if (st.extra.contains(c.key) && st.extra[c.key].get<int64_t>() != c.value)
        fail(c.flag, "=", c.value, " differs from the checkpoint's ", c.key, "=",
             st.extra[c.key].get<int64_t>(), ": the resumed run would read different samples");
    if (st.extra.contains("data") && st.extra["data"].get<std::string>() != data_kind())
      fail("the data (", data_kind(), ") differs from the checkpoint's (",
           st.extra["data"].get<std::string>(), "): the resumed run would read different samples");
    if (start > o_.steps)
      fail("--steps=", o_.steps, " but the checkpoint is already at step ", start);
    if (start == o_.steps && o_.save_dir.empty())
      fail("--steps=", o_.steps,
           " equals the checkpoint's step: nothing to do (add --save-dir to "
           "re-export the checkpoint under this layout)");
    if (talk_)
      std::printf("resumed from %s (written under %s) at step %lld\n", o_.resume.c_str(),
                  st.extra.value("layout", std::string("?")).c_str(),
                  static_cast<long long>(start));
    return start;
  }

  // What the samples are (the checkpoint records it: a resume must read the same ones). The
  // dataset by its token checksum, so a moved directory still resumes.
  std::string data_kind() const {
    if (o_.synthetic) return "synthetic";
    if (o_.dataset.empty()) return "corpus";
    return std::string(o_.pack_documents ? "packed documents" : "windows") + " of dataset " +
           dataset_->checksum();
  }

  void banner() const {
    if (!talk_) return;
    std::printf(
        "origami train: %s (%.1fM params), layout %s, S=%lld, batch %lld x %lld accum = %lld "
        "seqs/step, %s, %d threads/rank\n",
        o_.config.c_str(), cfg_.num_params() / 1e6, eng_->layout().c_str(),
        static_cast<long long>(S_), static_cast<long long>(B_), static_cast<long long>(k_),
        static_cast<long long>(G_),
        o_.synthetic          ? "synthetic tokens"
        : o_.pack_documents   ? "packed documents"
        : !o_.dataset.empty() ? "dataset windows"
                              : "corpus",
        omp_get_max_threads());
    if (o_.pack_documents) {
      const Dataset& d = *dataset_;
      const PackingStats& p = d.packing_stats();
      std::printf(
          "packed %lld training documents into %lld sequences of %lld (%lld split, "
          "%.1f%% padding); held out: %lld sequences\n",
          static_cast<long long>(d.train_documents()), static_cast<long long>(p.sequences),
          static_cast<long long>(S_), static_cast<long long>(p.split_documents),
          100 * p.padding_fraction, static_cast<long long>(d.packed_eval_count(S_)));
    }
    std::fflush(stdout);  // a log piped to a file or a supervisor shows the run has started
  }

  // One optimizer step and what follows it. Time: exposed communication = blocked in waits; skew
  // = waiting for the slowest rank at the step's end; compute = the rest.
  void train(int64_t step) {
    const auto t0 = Clock::now();
    const double blocked0 = comm_blocked_seconds();
    TraceSpan step_span(std::string("step ").append(std::to_string(step + 1)));
    std::vector<Batch> micro;
    for (int64_t j = 0; j < k_; ++j)
      micro.push_back(make_batch(step * G_ + eng_->dp_rank() * k_ * B_ + j * B_, false));
    cpu::AdamW hp{lr_at(o_, step), o_.beta1, o_.beta2, 1e-8, o_.weight_decay};
    const StepResult sr = train_step(*eng_, micro, hp, o_.clip, step);
    const double exposed = comm_blocked_seconds() - blocked0;
    const auto tb = Clock::now();
    {
      TraceSpan span("skew (barrier)");
      eng_->barrier();
    }
    const double dt = secs(t0, Clock::now()), skew = secs(tb, Clock::now());
    t_exposed_.push_back(exposed);
    t_skew_.push_back(skew);
    t_compute_.push_back(dt - exposed - skew);
    losses_.push_back(sr.loss);
    grad_norms_.push_back(sr.grad_norm);
    step_times_.push_back(dt);
    if (sr.skipped) guard(step, sr);
    skips_ = sr.skipped ? skips_ + 1 : 0;
    const bool last = step + 1 == o_.steps;
    if (talk_ && (o_.log_every > 0 && ((step + 1) % o_.log_every == 0 || last)))
      progress(step, sr, hp.lr, dt, exposed);
    if (!o_.synthetic && o_.eval_every > 0 && ((step + 1) % o_.eval_every == 0 || last)) {
      const double el = evaluate();
      evals_.push_back({{"step", step + 1}, {"loss", el}});
      if (talk_)
        std::printf("eval step %lld | held-out loss %.6f\n", static_cast<long long>(step + 1), el);
    }
    if (!o_.save_dir.empty() && ((o_.save_every > 0 && (step + 1) % o_.save_every == 0) || last))
      checkpoint(step + 1);
  }

  int preempted(int64_t steps_done) {
    const bool saved = !o_.save_dir.empty();
    if (saved && (o_.save_every <= 0 || steps_done % o_.save_every != 0)) checkpoint(steps_done);
    report();
    if (eng_->rank() == 0)  // even under --quiet: the run did not finish
      std::fprintf(stderr, "origami: stopped by a signal after step %lld of %lld%s%s%s (exit %d)\n",
                   static_cast<long long>(steps_done), static_cast<long long>(o_.steps),
                   saved ? "; checkpoint " : "; no --save-dir: nothing saved",
                   saved ? (o_.save_dir + "/step_" + std::to_string(steps_done)).c_str() : "",
                   saved ? " written: continue with --resume" : "", kPreempted);
    return kPreempted;
  }

  // A step whose loss or gradient norm was not finite applied no update (train_step); every rank
  // sees the same values, so every rank reaches the same verdict here.
  void guard(int64_t step, const StepResult& sr) {
    skipped_.push_back(step + 1);
    if (talk_)
      std::fprintf(stderr,
                   "origami: warning: step %lld: loss %g, gradient norm %g: not finite (or the "
                   "norm's square overflows fp32), the update is skipped (%lld in a row; "
                   "--max-skips=%lld)\n",
                   static_cast<long long>(step + 1), sr.loss, sr.grad_norm,
                   static_cast<long long>(skips_ + 1), static_cast<long long>(o_.max_skips));
    if (skips_ + 1 >= o_.max_skips)
      fail("step ", step + 1, ": ", skips_ + 1,
           " consecutive steps with a non-finite loss or gradient norm (--max-skips=", o_.max_skips,
           "); stopping. The weights are those of the last finite step",
           o_.save_dir.empty() ? "" : " (the last checkpoint holds finite state)",
           ": lower --lr, or check --init and the data");
  }

  void progress(int64_t step, const StepResult& sr, double lr, double dt, double exposed) const {
    const double el = secs(t_run_, Clock::now());
    const double eta =
        el / static_cast<double>(step + 1 - start_) * static_cast<double>(o_.steps - step - 1);
    std::printf(
        "step %lld/%lld | loss %.6f | lr %.2e | gnorm %.3f | %.0f tok/s | %.3f s/step | "
        "comm exposed %.0f%% | %smem %s | eta %s\n",
        static_cast<long long>(step + 1), static_cast<long long>(o_.steps), sr.loss, lr,
        sr.grad_norm, static_cast<double>(G_ * S_) / dt, dt, 100.0 * exposed / dt,
        device_ops() ? "device " : "",  // the tensors' memory: the device's when selected
        format_bytes((device_ops() ? MemTracker::device() : MemTracker::get()).stats().total_peak)
            .c_str(),
        fmt_eta(eta).c_str());
    std::fflush(stdout);
  }

  // Held-out set: eval_batches batches of dp·B windows, each replica evaluating its B, so every
  // layout with the same global micro-batch evaluates the same windows.
  double evaluate() {
    double sum = 0;
    int64_t n = 0;
    for (int64_t j = 0; j < o_.eval_batches; ++j) {
      Batch b = make_batch((j * layout_.dp + eng_->dp_rank()) * B_, true);
      sum += eng_->eval_sum(b);
      n += eng_->global_targets({b});
    }
    return n ? sum / static_cast<double>(n) : 0.0;
  }

  void checkpoint(int64_t steps_done) {
    TrainerState st;
    st.step = steps_done;
    st.consumed_samples = steps_done * G_;
    st.extra = {{"seed", o_.seed},
                {"config", cfg_.to_json()},
                {"layout", eng_->layout()},
                {"lr_schedule",
                 {{"lr", o_.lr},
                  {"min_lr", o_.min_lr >= 0 ? o_.min_lr : o_.lr * 0.1},
                  {"warmup", warmup_steps(o_)},
                  {"steps", o_.steps},
                  {"kind", "cosine"}}},
                {"micro_batch", B_},
                {"grad_accum", k_},
                {"global_batch", G_},
                {"seq", S_},
                {"data", data_kind()}};
    eng_->save_checkpoint(o_.save_dir, st);
    if (eng_->rank() == 0) prune_checkpoints(o_.save_dir, o_.keep_last, steps_done);
    if (talk_)
      std::printf("saved checkpoint %s/step_%lld\n", o_.save_dir.c_str(),
                  static_cast<long long>(steps_done));
  }

  // Every rank's memory, communication and time split, gathered to rank 0: printed, written to
  // --report; the trace of every rank to --trace.
  void report() {
    nlohmann::json me = eng_->rank_report();
    me["rank"] = eng_->rank();
    me["peak_bytes"] = peak_json(MemTracker::get().stats());
    if (device_ops()) me["device_peak_bytes"] = peak_json(MemTracker::device().stats());
    me["rss_bytes"] = {{"baseline", rss0_}, {"peak", proc_status_bytes("VmHWM")}};
    me["time_s"] = {{"step_median", step_median(step_times_)},  // without the warm-up step
                    {"compute", step_median(t_compute_)},
                    {"comm_exposed", step_median(t_exposed_)},
                    {"skew", step_median(t_skew_)}};
    if (o_.profile_kernels) {  // seconds per step in each kernel, the warm-up step left out
      nlohmann::json kp = k::profile_report();
      const double n = static_cast<double>(std::max<int64_t>(1, o_.steps - start_ - 1));
      for (auto& [name, e] : kp.items()) e["seconds"] = e["seconds"].get<double>() / n;
      me["kernel_seconds_per_step"] = kp;
    }
    const auto ranks = gather_to_root(me.dump());
    if (!o_.trace.empty()) write_trace();
    if (talk_) print_memory(ranks);
    if (eng_->rank() != 0 || o_.report.empty()) return;
    RunSummary sum;
    sum.layout = eng_->layout();
    sum.world_size = eng_->world();
    sum.config = cfg_.to_json();
    sum.seq = S_;
    sum.micro_batch = B_;
    sum.grad_accum = k_;
    sum.steps = o_.steps - start_;
    sum.tokens_per_step = G_ * S_;
    sum.losses = losses_;
    sum.grad_norms = grad_norms_;
    sum.skipped_steps = skipped_;
    sum.step_times = step_times_;
    sum.eval = evals_;
    for (const auto& r : ranks) sum.ranks.push_back(nlohmann::json::parse(r));
    write_report(o_.report, sum);
  }

  void write_trace() const {
    const auto tr = gather_to_root(Trace::get().events_json(eng_->rank()));
    if (eng_->rank() != 0) return;
    write_file_atomic(o_.trace, trace_file_json(tr));
    if (talk_) std::printf("trace: %s (open in https://ui.perfetto.dev)\n", o_.trace.c_str());
  }

  const TrainOptions& o_;
  const int64_t rss0_;
  const Layout layout_;
  const ModelConfig cfg_;
  const int64_t B_, S_, k_, G_;
  Corpus corpus_;
  std::unique_ptr<Dataset> dataset_;  // --dataset (memory-mapped)
  std::unique_ptr<Engine> eng_;
  bool talk_ = false;
  int64_t start_ = 0;
  Clock::time_point t_run_;
  std::vector<double> losses_, step_times_, grad_norms_, t_compute_, t_exposed_, t_skew_;
  std::vector<int64_t> skipped_;  // steps (1-based) whose update was skipped
  int64_t skips_ = 0;             // consecutive ones so far
  nlohmann::json evals_ = nlohmann::json::array();
};

}  // namespace

int run_train(const TrainOptions& o) {
  return TrainRun(o).run();
}

}  // namespace origami
