// origami bench: for every (sequence length, layout) it runs `mpirun -np N origami train
// --synthetic ...` with a report file, and with --emulate-link also the same run over the link and
// over the link blocking (--no-overlap), then prints one table per sequence length: tokens/s, step
// time, exposed communication share, overlap efficiency = 1 − (T_link − T_nolink)/(T_blocking −
// T_nolink), peak memory per rank, bytes received per rank and step, and the step time relative to
// the fastest layout (1.00). --plot draws tokens/s and peak memory against S (gnuplot).
// With --generate N it benchmarks inference instead: `origami generate` of N tokens after a
// prompt of S random ids (batch --global-batch) per layout (single, tsp, tp, sp): prefill
// tokens/s, time to first token, decode tokens/s, KV cache and bytes per decode step per rank.
#include "cli/bench.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/flags.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "model/config.h"
#include "parallel/layout.h"

namespace origami {

namespace {
struct Run {
  double step = 0, exposed = 0, tokens_per_s = 0;
  int64_t peak = 0, bytes = 0;
};

Run run_one(const std::string& cmd, const std::string& report) {
  if (std::system(cmd.c_str()) != 0) fail("origami bench: this run failed:\n  ", cmd);
  std::ifstream f(report);
  const auto j = nlohmann::json::parse(f);
  Run r;
  r.tokens_per_s = j["tokens_per_s"].get<double>();
  for (const auto& k : j["ranks"]) {
    r.step = std::max(r.step, k["time_s"]["step_median"].get<double>());
    r.exposed = std::max(r.exposed, k["time_s"]["comm_exposed"].get<double>());
    r.peak = std::max(r.peak, k["peak_bytes"]["total"].get<int64_t>());
    int64_t b = 0;
    for (const auto& [cat, ph] : k["comm_bytes"].items())
      for (const auto& [p, v] : ph.items()) b += v.get<int64_t>();
    r.bytes = std::max(r.bytes, b / std::max<int64_t>(1, j["steps"].get<int64_t>()));
  }
  return r;
}
// --generate: one table per S of the layouts' inference (each its own mpirun job).
int bench_generate(const Args& a, const std::vector<std::string>& layouts,
                   const std::vector<int64_t>& seqs, const std::string& self) {
  const int64_t N = a.i64("generate", 1), B = a.i64("global-batch", 1);
  const std::string out = a.str("out"), cfgp = a.str("config");
  const ModelConfig cfg = ModelConfig::load(cfgp);
  std::filesystem::create_directories(out);
  const std::string root = getuid() == 0 ? " --allow-run-as-root" : "";
  const std::string weights = out + "/weights.safetensors";
  if (std::system(("'" + self + "' init --config '" + cfgp + "' --out '" + weights + "'").c_str()))
    fail("origami bench: init failed");
  struct Res {
    double ttft, prefill, decode;
    int64_t cache, step, peak;
  };
  for (int64_t S : seqs) {
    // Random prompt ids from the counter-based RNG (the same file for every layout).
    std::vector<int64_t> ids(static_cast<size_t>(B * S));
    for (int64_t i = 0; i < B * S; ++i)
      ids[static_cast<size_t>(i)] = static_cast<int64_t>(
          rng_bits(rng_key(7, static_cast<uint64_t>(S)), static_cast<uint64_t>(i)) %
          static_cast<uint64_t>(cfg.vocab_size));
    const std::string prompt = out + "/prompt_S" + std::to_string(S) + ".safetensors";
    SafeTensorsWriter w;
    w.add("input_ids", DType::i64, {B, S}, ids.data());
    w.write(prompt);
    std::vector<std::pair<std::string, Res>> rows;
    for (const auto& ls : layouts) {
      const Layout L = Layout::parse(ls, -1);
      const std::string rep = out + "/gen_S" + std::to_string(S) + "_" + L.text + ".json";
      std::ostringstream cmd;
      cmd << "mpirun -np " << L.world() << " --bind-to none --oversubscribe" << root
          << " -x OMP_NUM_THREADS=" << a.str("threads") << " '" << self << "' generate --config '"
          << cfgp << "' --weights '" << weights << "' --tokens '" << prompt << "' --max-new-tokens "
          << N << " --eos-id -1 --quiet --report '" << rep << "' --layout " << L.text << " --dtype "
          << a.str("dtype");
      std::fprintf(stderr, "bench: generate S=%lld %s\n", static_cast<long long>(S),
                   L.text.c_str());
      if (std::system(cmd.str().c_str()) != 0)
        fail("origami bench: this run failed:\n  ", cmd.str());
      std::ifstream f(rep);
      const auto j = nlohmann::json::parse(f);
      Res r{j["time_to_first_token_s"].get<double>(),
            j["prefill_tokens_per_s"].get<double>(),
            j["decode_tokens_per_s"].get<double>(),
            0,
            0,
            0};
      for (const auto& k : j["ranks"]) {
        r.cache = std::max(r.cache, k["kv_cache_bytes"].get<int64_t>());
        r.peak = std::max(r.peak, k["peak_bytes"]["total"].get<int64_t>());
        for (const auto& b : k["decode_step_bytes"]) r.step = std::max(r.step, b.get<int64_t>());
      }
      rows.push_back({L.text, r});
    }
    std::printf(
        "\nS = %lld, batch %lld, %lld new tokens (greedy)\n\n| layout | prefill tok/s | "
        "time to first token (s) | decode tok/s | KV cache/rank (MiB) | received/rank/step "
        "(KiB) | peak/rank (MiB) |\n|---|---|---|---|---|---|---|\n",
        static_cast<long long>(S), static_cast<long long>(B), static_cast<long long>(N));
    for (const auto& [name, r] : rows)
      std::printf("| %s | %.0f | %.3f | %.1f | %.2f | %.1f | %.1f |\n", name.c_str(), r.prefill,
                  r.ttft, r.decode, static_cast<double>(r.cache) / (1 << 20),
                  static_cast<double>(r.step) / 1024, static_cast<double>(r.peak) / (1 << 20));
  }
  return 0;
}

}  // namespace

namespace {

// The layouts' training runs: one row per (layout, TP sequence-parallel setting), each cell
// (S, row) the median of --repeat runs, without a link and (with --emulate-link or --link-ratio)
// over the link overlapped and blocking; then a table per S and the plot.
class TrainBench {
 public:
  TrainBench(const Args& a, std::vector<int64_t> seqs) : a_(a), seqs_(std::move(seqs)) {}

  int run() {
    make_rows();
    check_options();
    for (int64_t S : seqs_) run_cells(S);
    for (int64_t S : seqs_) print_table(S);
    if (!a_.str("plot").empty()) write_plot(a_.str("plot"));
    return 0;
  }

 private:
  struct Row {
    Layout L;
    std::string sp_flag,
        label;  // sp_flag: the row's own flags (--tp-sequence-parallel, --mlp-transport, --sp-comm)
  };

  void make_rows() {
    ParallelOptions checked;  // the schedule flags' values, refused now rather than per run
    schedule_options(a_, checked, true);
    const std::string tpsp = a_.str("tp-sequence-parallel");
    for (const auto& ls : a_.list("layout")) {
      const Layout L = Layout::parse(ls, -1);
      if (L.spec->mlp_transport) {  // tsp: the transports asked for (all: one row each)
        const std::string mt = a_.str("mlp-transport");
        for (const MlpTransport t :
             {MlpTransport::ring, MlpTransport::biring, MlpTransport::broadcast})
          if (mt == "all" || mt == mlp_transport_name(t))
            rows_.push_back({L, cat(" --mlp-transport ", mlp_transport_name(t)),
                             L.text + mlp_transport_suffix(t)});
        continue;
      }
      if (L.spec->sp_comm && L.tp_degree() == 1) {  // sp, fsdp_sp: the methods asked for
        const std::string sc = a_.str("sp-comm");
        for (const SpComm c : sp_comms_of(L)) {
          if (sc != "all" && sc != sp_comm_name(c)) continue;
          rows_.push_back({L, cat(" --sp-comm ", sp_comm_name(c)), L.text + sp_comm_suffix(c)});
        }
        continue;
      }
      if (!L.has_tp_axis()) {
        rows_.push_back({L, "", L.text});
        continue;
      }
      for (const char* v : {"on", "off"})
        if (tpsp == "both" || tpsp == v)
          rows_.push_back({L, std::string(" --tp-sequence-parallel ") + v,
                           L.text + (std::string(v) == "off" ? " (SP off)" : "")});
    }
    if (rows_.empty() || seqs_.empty()) fail("origami bench: give --layout and --seq");
  }

  void check_options() {
    G_ = a_.i64("global-batch", 1);
    steps_ = a_.i64("steps", 1);
    out_ = a_.str("out");
    link_ = a_.str("emulate-link");
    if (!link_.empty()) {  // refused now, not after the runs without a link
      ParallelOptions check;
      parse_emulated_link(link_, check);
    }
    if (a_.given("link-ratio")) {
      ratio_ = a_.f64("link-ratio");
      if (!(ratio_ > 0)) fail("--link-ratio=", a_.str("link-ratio"), " must be positive");
      if (!link_.empty()) fail("give --emulate-link or --link-ratio, not both");
    }
    links_ = !link_.empty() || ratio_ > 0;
    std::filesystem::create_directories(out_);
    if (readlink("/proc/self/exe", self_, sizeof self_ - 1) < 0)
      fail("cannot find the origami binary");
    for (const Row& w : rows_)
      if (G_ % w.L.dp)
        fail("--global-batch=", G_, " is not divisible by dp=", w.L.dp, " of ", w.label);
    repeat_ = static_cast<int>(a_.i64("repeat", 1));
  }

  Run run_once(int64_t S, const Row& w, size_t v, const std::string& extra, int k) const {
    std::ostringstream rep, cmd;
    std::string tag = w.label;
    for (char& ch : tag)
      if (ch == ' ' || ch == '(' || ch == ')') ch = '_';
    rep << out_ << "/S" << S << "_" << tag << "_" << v << "_r" << k << ".json";
    cmd << "mpirun -np " << w.L.world() << " --bind-to none --oversubscribe"
        << (getuid() == 0 ? " --allow-run-as-root" : "")
        << " -x OMP_NUM_THREADS=" << a_.str("threads") << " '" << self_ << "' train --config '"
        << a_.str("config") << "' --synthetic --quiet --eval-every 0 --log-every 0 --steps "
        << steps_ << " --seq " << S << " --micro-batch " << G_ / w.L.dp << schedule_args(a_)
        << " --progress-thread " << a_.str("progress-thread") << " --dtype " << a_.str("dtype")
        << " --report '" << rep.str() << "'"
        << " --layout " << w.L.text << w.sp_flag << extra;
    std::fprintf(stderr, "bench: S=%lld %s%s (run %d of %d)\n", static_cast<long long>(S),
                 w.label.c_str(), extra.c_str(), k + 1, repeat_);
    return run_one(cmd.str(), rep.str());
  }
  // One cell: `repeat` runs; the one with the median step time is kept.
  void run_cell(int64_t S, const Row& w, size_t v, const std::string& extra) {
    std::vector<Run> runs;
    for (int k = 0; k < repeat_; ++k) runs.push_back(run_once(S, w, v, extra, k));
    std::sort(runs.begin(), runs.end(), [](const Run& x, const Run& y) { return x.step < y.step; });
    auto& r = res_[{S, w.label}];
    r.resize(std::max(r.size(), v + 1));
    r[v] = runs[runs.size() / 2];
  }
  void run_cells(int64_t S) {
    for (const Row& w : rows_) run_cell(S, w, 0, "");
    if (!links_) return;
    std::string l = link_;
    if (ratio_ > 0) {  // bytes / bandwidth = ratio · compute of the first layout
      const Run& f = res_[{S, rows_[0].label}][0];
      const double compute = f.step - f.exposed;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3g",
                    static_cast<double>(f.bytes) / (ratio_ * compute) / 1e9);
      l = buf;
    }
    link_of_[S] = l;
    for (const Row& w : rows_) {
      run_cell(S, w, 1, " --emulate-link " + l);
      run_cell(S, w, 2, " --emulate-link " + l + " --no-overlap");
    }
  }

  void print_table(int64_t S) {
    double best = 1e30;
    for (const auto& [k, r] : res_)
      if (k.first == S) best = std::min(best, r[0].step);
    std::printf("\nS = %lld, global batch %lld, --recompute %s, median of %d run(s)",
                static_cast<long long>(S), static_cast<long long>(G_), a_.str("recompute").c_str(),
                repeat_);
    if (links_) {
      std::printf(", link %s GB/s", link_of_[S].c_str());
      if (ratio_ > 0)
        std::printf(" (%s's bytes per step take %.2g x its compute time)", rows_[0].label.c_str(),
                    ratio_);
    }
    std::printf(
        "\n\n| layout | ranks | tokens/s | step (s) | vs fastest | exposed comm |%s peak/rank "
        "(MiB) | received/rank/step (MiB) |\n",
        links_ ? " step over link (s) | blocking (s) | exposed over link | "
                 "overlap efficiency |"
               : "");
    std::printf("|---|---|---|---|---|---|%s---|---|\n", links_ ? "---|---|---|---|" : "");
    for (const Row& w : rows_) {
      const auto& r = res_[{S, w.label}];
      std::printf("| %s | %d | %.0f | %.3f | %.2f | %.0f%% |", w.label.c_str(), w.L.world(),
                  r[0].tokens_per_s, r[0].step, r[0].step / best, 100 * r[0].exposed / r[0].step);
      if (links_) {
        const double denom = r[2].step - r[0].step;  // what blocking costs over no link
        std::printf(" %.3f | %.3f | %.0f%% |", r[1].step, r[2].step,
                    100 * r[1].exposed / r[1].step);
        if (denom > 0)
          std::printf(" %.2f |", 1 - (r[1].step - r[0].step) / denom);
        else
          std::printf(" n/a |");
      }
      std::printf(" %.1f | %.1f |\n", static_cast<double>(r[0].peak) / (1 << 20),
                  static_cast<double>(r[0].bytes) / (1 << 20));
    }
  }

  void write_plot(const std::string& plot) {
    const std::string dat = out_ + "/bench.dat";
    std::ofstream d(dat);
    for (const Row& w : rows_) {
      d << "\"" << w.label << "\"\n";
      for (int64_t S : seqs_) {
        const auto& r = res_[{S, w.label}][0];
        d << S << " " << r.tokens_per_s << " " << static_cast<double>(r.peak) / (1 << 20) << "\n";
      }
      d << "\n\n";
    }
    d.close();
    std::ostringstream g;
    const size_t n = rows_.size() - 1;
    g << "set terminal pngcairo size 1100,480 noenhanced\nset output '" << plot << "'\n"
      << "set multiplot layout 1,2\nset logscale x 2\nset grid\nset key left top\n"
      << "set xlabel 'sequence length S'\nset ylabel 'tokens/s (all ranks)'\n"
      << "plot for [i=0:" << n << "] '" << dat << "' index i using 1:2 with linespoints title "
      << "columnheader(1)\nset ylabel 'peak per rank (MiB)'\nplot for [i=0:" << n << "] '" << dat
      << "' index i using 1:3 with linespoints title columnheader(1)\nunset multiplot\n";
    const std::string gp = out_ + "/bench.gp";
    std::ofstream(gp) << g.str();
    if (std::system(("gnuplot '" + gp + "'").c_str()) != 0) fail("gnuplot failed on ", gp);
    std::printf("\nplot: %s\n", plot.c_str());
  }

  const Args& a_;
  const std::vector<int64_t> seqs_;
  std::vector<Row> rows_;
  int64_t G_ = 1, steps_ = 1;
  std::string out_, link_;
  double ratio_ = 0;
  bool links_ = false;
  int repeat_ = 1;
  char self_[4096] = {};
  std::map<std::pair<int64_t, std::string>, std::vector<Run>> res_;
  std::map<int64_t, std::string> link_of_;  // the link each S ran over
};

}  // namespace

int cmd_bench(int argc, char** argv) {
  Args a("bench",
         "Run the same model, global batch and sequence length under several layouts (each its\n"
         "own mpirun job of `origami train --synthetic`) and compare them in one table.");
  a.flag("config", "", "HF Llama config.json", true);
  a.repeatable("layout", "", "a layout as for train, e.g. tsp=2, tp=2, sp=2, fsdp_sp=2, dp=2");
  a.repeatable("seq", "", "sequence length S");
  a.flag("global-batch", "1", "sequences per step (split over dp replicas)");
  a.flag("steps", "3",
         "steps per run (the median step time over the steps after the first, a warm-up, is "
         "reported)");
  a.flag("repeat", "1",
         "runs per cell; the run with the median step time is reported (single runs on a shared "
         "machine move by 10-20%)");
  schedule_flags(a, true);  // as for train, passed to every run (--tp-sequence-parallel: per row)
  a.flag("emulate-link", "",
         "GBPS[,LATENCY_US]: also run every layout over this emulated link, with overlap and "
         "blocking (--no-overlap), for the overlap efficiency");
  a.flag("link-ratio", "",
         "R: like --emulate-link, with the bandwidth chosen per S so that the first layout's "
         "bytes per step take R times its compute time (measured without a link first)");
  a.flag("progress-thread", "100", "poll interval of the MPI progress thread (us), 0 = off");
  a.flag("threads", "1", "OpenMP threads per rank");
  a.flag("dtype", "fp32", "fp32 | bf16: the compute type of every train or generate run");
  a.flag("out", "build/bench/origami_bench", "directory for the reports (JSON per run)");
  a.flag("plot", "", "write a PNG of tokens/s and peak memory per rank against S");
  a.flag("generate", "",
         "N: benchmark inference instead (origami generate of N new tokens after a prompt of S "
         "random ids per layout: single, tsp, tp, sp): prefill and decode tokens/s, time to "
         "first token, KV cache and bytes per decode step per rank");
  if (!a.parse(argc, argv)) return 0;
  const std::vector<int64_t> seqs = a.i64_list("seq", 1);
  parse_compute_dtype(a.str("dtype"));  // refused here, before any run
  if (a.given("generate")) {
    char exe[4096] = {};
    if (readlink("/proc/self/exe", exe, sizeof exe - 1) < 0) fail("cannot find the origami binary");
    if (a.list("layout").empty() || seqs.empty()) fail("origami bench: give --layout and --seq");
    return bench_generate(a, a.list("layout"), seqs, exe);
  }
  return TrainBench(a, seqs).run();
}

}  // namespace origami
