#include "plan/plan_cli.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/error.h"
#include "infer/decoder.h"

namespace origami::plan {

namespace {
std::string gib(int64_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f", static_cast<double>(b) / (1 << 30));
  return s;
}
int world(const std::string& name) {  // "tp=8 (SP off)" -> 8
  const std::string l = name.substr(0, name.find(' '));
  return Layout::parse(l, -1).world();
}
// Inference per rank (infer/decoder.h): weights kept, KV cache for S + new positions, bytes
// received per decode step, in --dtype as generate runs it. Empty for layouts inference does not
// run.
struct InferRow {
  bool ok = false;
  int64_t weights = 0, cache = 0, step = 0;
};
InferRow infer_row(const ModelConfig& c, const std::string& name, int64_t B, int64_t S, int64_t n,
                   DType dt) {
  InferRow r;
  const Layout L = Layout::parse(name.substr(0, name.find(' ')), -1);
  if (L.dp > 1 || L.spec->infer(L) == InferKind::none) return r;
  const auto il = infer::infer_layout(L);
  const int D = L.model_degree();
  r.ok = true;
  r.weights = infer::weight_bytes(il, c, D, dt);
  r.cache = infer::kv_cache_bytes(il, c, D, B, S, n, dt);
  r.step = infer::decode_step_bytes(il, c, D, B, dt);
  return r;
}
int64_t sum_phase(const nlohmann::json& per_layer, const char* phase) {
  int64_t s = 0;
  for (const auto& [cat, ph] : per_layer.items()) s += ph[phase].get<int64_t>();
  return s;
}
}  // namespace

namespace {

struct Row {
  std::string layout;
  int64_t seq;
  Result r;
  std::string error;  // with --new-tokens: why training cannot run this (layout, S)
};
const char* dtype_name(const PlanOptions& o) {
  return o.dtype == DType::f32 ? "fp32" : "bf16";
}
const char* recompute_name(const PlanOptions& o) {
  return o.recompute == Recompute::full ? "full" : "none";
}

// --devices N: the layout with a DP axis of N / its model degree.
std::string with_devices(const std::string& ls, int64_t N) {
  const Layout L = Layout::parse(ls, -1);
  const int M = L.model_degree();
  if (L.dp > 1) fail("--layout ", ls, ": give --devices or a dp axis, not both");
  if (N % M != 0)
    fail("--devices=", N, " is not a multiple of the ", M, " model-parallel ranks of --layout ",
         ls);
  std::string t = cat("dp=", N / M);
  for (const auto& [axis, n] : L.axes) t += cat(",", axis, "=", n);
  return t;
}

// One dry run per (layout, TP sequence-parallel setting, S); `names` gets one name per line.
std::vector<Row> dry_runs(const PlanOptions& o, const ModelConfig& cfg,
                          std::vector<std::string>& names, const Hardware* hw) {
  std::vector<Row> rows;
  for (const std::string& given : o.layouts) {
    const std::string ls = o.devices > 0 ? with_devices(given, o.devices) : given;
    const Layout L = Layout::parse(ls, -1);
    // The variants of this layout: TP's sequence-parallel setting (tp rows), the MLP transport
    // (tsp rows); each option applies to the layouts that take it.
    std::vector<std::pair<ParallelOptions, std::string>> variants;
    const bool tp_axis = L.has_tp_axis();
    for (const bool seqp : {true, false}) {
      if (!seqp && !(tp_axis && o.tp_sp_both)) continue;
      ParallelOptions par = o.par;
      if (tp_axis && o.tp_sp_both) par.tp_seq_parallel = seqp;
      if (!L.spec->mlp_transport) par.mlp_transport = MlpTransport::ring;
      const std::string name =
          L.text + (tp_axis && L.tp_degree() > 1 && !par.tp_seq_parallel ? " (SP off)" : "");
      if (!L.spec->sp_comm) par.sp_comm = SpComm::allgather;
      std::vector<MlpTransport> transports = {par.mlp_transport};
      if (L.spec->mlp_transport && o.mlp_transport_all)
        transports = {MlpTransport::ring, MlpTransport::biring, MlpTransport::broadcast};
      std::vector<SpComm> sp_comms = {par.sp_comm};
      if (o.sp_comm_all) sp_comms = sp_comms_of(L);
      for (const MlpTransport t : transports)
        for (const SpComm c : sp_comms) {
          par.mlp_transport = t;
          par.sp_comm = c;
          variants.push_back({par, name + mlp_transport_suffix(t) + sp_comm_suffix(c)});
        }
    }
    for (const auto& [par, name] : variants) {
      names.push_back(name);
      for (int64_t S : o.seqs) {
        Row row{name, S, {}, ""};
        try {
          row.r = dry_run({cfg, L, par, o.recompute, o.micro_batch, S, o.dtype, o.threads, hw,
                           !o.trace.empty() && rows.empty(), o.dense_attention, o.no_zigzag});
        } catch (const Error& e) {
          if (o.new_tokens <= 0) throw;
          row.error = e.what();  // e.g. S not divisible by 2D: inference pads, training cannot
        }
        rows.push_back(std::move(row));
      }
    }
  }
  return rows;
}

void print_json(const PlanOptions& o, const ModelConfig& cfg, const std::vector<Row>& rows) {
  const char* dt = dtype_name(o);
  const char* rc = recompute_name(o);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : rows) {
    nlohmann::json j;
    if (row.error.empty()) {
      j = row.r.to_json();
      const auto cats = j["comm_bytes_per_layer"];
      j["comm_bytes_per_layer_by_category"] = cats;
      j["comm_bytes_per_layer"] = {{"fwd", sum_phase(cats, "fwd")},
                                   {"recompute", sum_phase(cats, "recompute")},
                                   {"bwd", sum_phase(cats, "bwd")}};
      if (o.device_gib > 0)
        j["fits"] = static_cast<double>(row.r.total) <= o.device_gib * (1 << 30);
    } else {
      j["training_error"] = row.error;
    }
    j["layout"] = row.layout;
    j["seq"] = row.seq;
    j["micro_batch"] = o.micro_batch;
    j["dtype"] = dt;
    j["recompute"] = rc;
    j["world_size"] = world(row.layout);
    if (o.new_tokens > 0) {
      const InferRow ir = infer_row(cfg, row.layout, o.micro_batch, row.seq, o.new_tokens, o.dtype);
      if (ir.ok)
        j["inference"] = {{"new_tokens", o.new_tokens},
                          {"weights_bytes", ir.weights},
                          {"kv_cache_bytes", ir.cache},
                          {"decode_step_bytes", ir.step}};
    }
    out.push_back(j);
  }
  std::printf("%s\n", out.dump(1).c_str());
}

void print_tables(const PlanOptions& o, const ModelConfig& cfg, const std::vector<Row>& rows) {
  const char* dt = dtype_name(o);
  const char* rc = recompute_name(o);
  std::printf(
      "origami plan: %s (%.2fB parameters), micro-batch %lld per replica, %s%s, "
      "--recompute %s; per rank, GiB (worst rank); bytes per layer and micro-step\n",
      o.config.c_str(), static_cast<double>(cfg.num_params()) / 1e9,
      static_cast<long long>(o.micro_batch), dt,
      o.dtype == DType::bf16 ? " (AdamW moments and master weights fp32)" : "", rc);
  for (int64_t S : o.seqs) {
    std::printf("\nS = %lld\n", static_cast<long long>(S));
    std::printf("%-18s %5s %8s %8s %9s %11s %9s %8s %8s %10s %10s %10s%s\n", "layout", "ranks",
                "weights", "grads", "optimizer", "activations", "workspace", "comm", "total",
                "fwd GiB/l", "rec GiB/l", "bwd GiB/l", o.device_gib > 0 ? "  fits" : "");
    for (const auto& row : rows) {
      if (row.seq != S) continue;
      if (!row.error.empty()) {
        std::printf("%-18s %5d (training: %s)\n", row.layout.c_str(), world(row.layout),
                    row.error.c_str());
        continue;
      }
      const auto& p = row.r.peak;
      const auto& cl = row.r.comm_per_layer;
      std::printf("%-18s %5d %8s %8s %9s %11s %9s %8s %8s %10s %10s %10s%s\n", row.layout.c_str(),
                  world(row.layout), gib(p[0]).c_str(), gib(p[1]).c_str(), gib(p[2]).c_str(),
                  gib(p[3]).c_str(), gib(p[4]).c_str(), gib(p[5]).c_str(), gib(row.r.total).c_str(),
                  gib(sum_phase(cl, "fwd")).c_str(), gib(sum_phase(cl, "recompute")).c_str(),
                  gib(sum_phase(cl, "bwd")).c_str(),
                  o.device_gib <= 0                                              ? ""
                  : static_cast<double>(row.r.total) <= o.device_gib * (1 << 30) ? "  yes"
                                                                                 : "  no");
    }
  }
}

// The simulated step times (Input::hw): a training step and a forward pass per layout and S.
void print_time(const PlanOptions& o, const Hardware& hw, const std::vector<Row>& rows) {
  std::printf(
      "\nPredicted time (simulated clock; hardware profile %s: %s): per step of one micro-batch "
      "of %lld sequence(s) per replica; exposed = the worst rank's time waiting for transfers; "
      "link = the busiest rank's received bytes over its inbound capacity (all its links at once) "
      "and the step; tokens/s per device\n",
      hw.path.c_str(), hw.name.c_str(), static_cast<long long>(o.micro_batch));
  const bool job = o.devices > 0;
  for (int64_t S : o.seqs) {
    std::printf("\nS = %lld\n%-22s %5s %11s %9s %9s %9s %11s %9s %13s %13s%s\n",
                static_cast<long long>(S), "layout", "ranks", "train ms", "compute", "exposed",
                "link", "forward ms", "exposed", "train tok/s", "fwd tok/s",
                job ? "   job train tok/s    job fwd tok/s" : "");
    for (const auto& row : rows) {
      if (row.seq != S || !row.error.empty()) continue;
      const Timing& t = row.r.time;
      const Layout L = Layout::parse(row.layout.substr(0, row.layout.find(' ')), -1);
      const double tokens = static_cast<double>(o.micro_batch * S) / L.model_degree();
      std::printf("%-22s %5d %11.2f %8.0f%% %8.0f%% %8.0f%% %11.2f %8.0f%% %13.0f %13.0f",
                  row.layout.c_str(), world(row.layout), 1e3 * t.step_s,
                  100 * t.step_compute_s / t.step_s, 100 * t.step_exposed_s / t.step_s,
                  100 * t.step_link_busy_s / t.step_s, 1e3 * t.fwd_s,
                  100 * t.fwd_exposed_s / t.fwd_s, tokens / t.step_s, tokens / t.fwd_s);
      const double n = static_cast<double>(L.world());  // per device times every device
      if (job) std::printf(" %18.4g %16.4g", n * tokens / t.step_s, n * tokens / t.fwd_s);
      std::printf("\n");
    }
  }
}

std::string comma_list(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// --recommend: per S, the layouts whose predicted peak fits the device, best training throughput
// first, and why the winner wins (its compute and exposed time against the runner-up's).
void print_recommendation(const PlanOptions& o, const Hardware& hw, const std::vector<Row>& rows) {
  const double budget = o.device_gib > 0 ? o.device_gib * (1 << 30) : hw.device_memory_bytes;
  std::printf("\nRecommendation (%s; training tokens/s per device; %s)\n", hw.name.c_str(),
              budget > 0
                  ? cat("layouts whose predicted peak fits ", budget / (1 << 30), " GiB").c_str()
                  : "no memory budget: every layout");
  for (int64_t S : o.seqs) {
    std::vector<const Row*> fit;
    std::vector<std::string> too_big;
    for (const auto& row : rows) {
      if (row.seq != S || !row.error.empty()) continue;
      if (budget > 0 && static_cast<double>(row.r.total) > budget)
        too_big.push_back(cat(row.layout, " (", gib(row.r.total), " GiB)"));
      else
        fit.push_back(&row);
    }
    std::printf("S = %lld: ", static_cast<long long>(S));
    if (fit.empty()) {
      std::printf("no layout fits%s\n",
                  too_big.empty() ? "" : cat(": ", comma_list(too_big)).c_str());
      continue;
    }
    std::sort(fit.begin(), fit.end(),
              [](const Row* a, const Row* b) { return a->r.time.step_s < b->r.time.step_s; });
    const Timing& w = fit[0]->r.time;
    std::printf("%s", fit[0]->layout.c_str());
    if (fit.size() > 1) {
      const Timing& r = fit[1]->r.time;
      std::printf(
          ", %.2fx the next (%s): its step %.3f s = compute %.3f s + waiting %.3f s, "
          "against %.3f s = %.3f + %.3f",
          r.step_s / w.step_s, fit[1]->layout.c_str(), w.step_s, w.step_compute_s,
          w.step_s - w.step_compute_s, r.step_s, r.step_compute_s, r.step_s - r.step_compute_s);
      const double dc = r.step_compute_s - w.step_compute_s,
                   dw = (r.step_s - r.step_compute_s) - (w.step_s - w.step_compute_s);
      std::printf(" (%s)", dw > dc ? "it exposes less communication" : "it computes less");
    }
    if (!too_big.empty()) std::printf("; too big: %s", comma_list(too_big).c_str());
    std::printf("\n");
  }
}

// Every rank's simulated timeline as a Chrome/Perfetto trace, in train --trace's form.
void write_sim_trace(const std::string& path, const Row& row) {
  std::vector<std::string> ranks;
  const auto& tr = row.r.time.trace;
  for (size_t r = 0; r < tr.size(); ++r)
    ranks.push_back(trace_events_json(static_cast<int>(r), tr[r], " (simulated)"));
  std::ofstream f(path);
  if (!f || !(f << trace_file_json(ranks))) fail("cannot write --trace ", path);
}

void print_inference(const PlanOptions& o, const ModelConfig& cfg, const std::vector<Row>& rows) {
  std::printf(
      "\nInference (origami generate): a prompt of S tokens, %lld new, batch %lld; per rank: "
      "weights kept, KV cache, bytes received per decode step (tsp: the rank caching the new "
      "position)\n",
      static_cast<long long>(o.new_tokens), static_cast<long long>(o.micro_batch));
  for (int64_t S : o.seqs) {
    std::printf("\nS = %lld\n%-18s %5s %12s %12s %12s %18s\n", static_cast<long long>(S), "layout",
                "ranks", "weights GiB", "KV GiB", "total GiB", "decode KiB/step");
    for (const auto& row : rows) {
      if (row.seq != S || row.layout.find(' ') != std::string::npos) continue;
      const InferRow ir = infer_row(cfg, row.layout, o.micro_batch, S, o.new_tokens, o.dtype);
      if (!ir.ok) {
        std::printf("%-18s %5d %12s\n", row.layout.c_str(), world(row.layout),
                    "(no inference for this layout)");
        continue;
      }
      std::printf("%-18s %5d %12s %12s %12s %18.1f\n", row.layout.c_str(), world(row.layout),
                  gib(ir.weights).c_str(), gib(ir.cache).c_str(),
                  gib(ir.weights + ir.cache).c_str(), static_cast<double>(ir.step) / 1024);
    }
  }
}

void print_crossovers(const ModelConfig& cfg, DType dt) {
  // tsp-spec §7: TSP against TP, every term ×f (W = one layer's weights, K = 2BSh/g).
  const double h = static_cast<double>(cfg.hidden_size);
  const double g = static_cast<double>(cfg.num_attention_heads) / cfg.num_key_value_heads;
  const double F = static_cast<double>(cfg.intermediate_size) / h;
  const double Wh = (2 + 2 / g + 3 * F) * h;  // W / h
  const double Wah = (2 + 2 / g) * h;
  if (dt == DType::bf16) {
    // In bytes (docs/layouts.md): TSP's weights and K/V 2 B forward and re-sent, its weight
    // gradients and dK/dV 4 B; TP's two gathers 2 B and two reduce-scatters 4 B a direction.
    std::printf(
        "\nTSP moves fewer bytes than TP (tsp-spec §7, bf16 bytes) above these tokens per "
        "micro-batch (B·S):\n"
        "  forward only                               %.0f  (2W + 2K < 12BSh)\n"
        "  training step, --recompute none            %.0f  (8W + 8K < 24BSh)\n"
        "  training step, --recompute full            %.0f  (10W + 10K < 36BSh)\n"
        "  training step, full + --keep-attn-weights  %.0f  (10W - 2W_a + 10K < 36BSh)\n"
        "  ... + --fused-mlp-recompute                %.0f  (8W + 10K < 36BSh)\n",
        2 * Wh / (12 - 4 / g), 8 * Wh / (24 - 16 / g), 10 * Wh / (36 - 20 / g),
        (10 * Wh - 2 * Wah) / (36 - 20 / g), 8 * Wh / (36 - 20 / g));
    return;
  }
  std::printf(
      "\nTSP moves fewer bytes than TP (tsp-spec §7) above these tokens per micro-batch (B·S):\n"
      "  forward only                               %.0f  (W + K < 4BSh)\n"
      "  training step, --recompute none            %.0f  (3W + 3K < 8BSh)\n"
      "  training step, --recompute full            %.0f  (4W + 4K < 12BSh)\n"
      "  training step, full + --keep-attn-weights  %.0f  (4W - W_a + 4K < 12BSh)\n"
      "  ... + --fused-mlp-recompute                %.0f  (3W + 4K < 12BSh)\n",
      Wh / (4 - 2 / g), 3 * Wh / (8 - 6 / g), 4 * Wh / (12 - 8 / g), (4 * Wh - Wah) / (12 - 8 / g),
      3 * Wh / (12 - 8 / g));
}

void write_plot(const PlanOptions& o, const std::vector<Row>& rows,
                const std::vector<std::string>& names) {
  const char* dt = dtype_name(o);
  const char* rc = recompute_name(o);
  const std::string dat = o.plot + ".dat", gp = o.plot + ".gp";
  std::ofstream d(dat);
  for (const std::string& name : names) {
    d << "\"" << name << "\"\n";
    for (const auto& row : rows)
      if (row.layout == name && row.error.empty())
        d << row.seq << " " << static_cast<double>(row.r.total) / (1 << 30) << "\n";
    d << "\n\n";
  }
  d.close();
  std::ofstream g(gp);
  g << "set terminal pngcairo size 1000,560 noenhanced\nset output '" << o.plot << "'\n"
    << "set logscale x 2\nset xlabel 'sequence length S'\nset ylabel 'predicted peak per rank "
    << "(GiB)'\nset key outside right\nset grid\nset title '" << o.config << ", " << dt
    << ", --recompute " << rc << ", micro-batch " << o.micro_batch << "'\n";
  if (o.device_gib > 0)
    g << "set arrow from graph 0, first " << o.device_gib << " to graph 1, first " << o.device_gib
      << " nohead dt 2\n";
  g << "plot for [i=0:" << names.size() - 1 << "] '" << dat
    << "' index i using 1:2 with linespoints title columnheader(1)\n";
  g.close();
  if (std::system(("gnuplot " + gp).c_str()) != 0) fail("gnuplot failed on ", gp);
  std::remove(dat.c_str());
  std::remove(gp.c_str());
  if (!o.json) std::printf("\nplot: %s\n", o.plot.c_str());
}

}  // namespace

int run_plan(const PlanOptions& o) {
  const ModelConfig cfg = ModelConfig::load(o.config);
  if (o.seqs.empty()) fail("origami plan: give at least one --seq");
  if (o.layouts.empty()) fail("origami plan: give at least one --layout");
  std::vector<std::string> names;  // one per plotted line
  std::unique_ptr<Hardware> hw;
  if (!o.hardware.empty()) hw = std::make_unique<Hardware>(Hardware::load(o.hardware));
  if (hw && o.par.link_gbps > 0) {  // --emulate-link: every link replaced by it
    // (train --emulate-link sleeps until the emulated transfer is due: the cores copy as before,
    // at the profile's own link rate)
    const double bw = o.par.link_gbps * 1e9;
    // (the measured collectives, skew and copy rates stay: a collective takes at least what MPI
    // measured)
    sim::Link l = hw->intra;
    if (!(l.copy_bytes_per_s > 0)) l.copy_bytes_per_s = l.bytes_per_s;
    l.latency_s = o.par.link_latency_us * 1e-6;
    l.bytes_per_s = l.peer_bytes_per_s = bw;
    hw->intra = hw->inter = l;
    hw->name += cat(", links --emulate-link ", o.par.link_gbps, ",", o.par.link_latency_us);
  }
  if (!o.trace.empty() && !hw) fail("origami plan: --trace needs --time --hardware FILE");
  const std::vector<Row> rows = dry_runs(o, cfg, names, hw.get());
  if (o.json) {
    print_json(o, cfg, rows);
  } else {
    print_tables(o, cfg, rows);
    if (hw) print_time(o, *hw, rows);
    if (hw && o.recommend) print_recommendation(o, *hw, rows);
    if (o.new_tokens > 0) print_inference(o, cfg, rows);
    print_crossovers(cfg, o.dtype);
  }
  if (!o.plot.empty()) write_plot(o, rows, names);
  if (!o.trace.empty() && !rows.empty() && rows[0].error.empty()) {
    write_sim_trace(o.trace, rows[0]);
    if (!o.json)
      std::printf("\ntrace (simulated, %s at S = %lld): %s\n", rows[0].layout.c_str(),
                  static_cast<long long>(rows[0].seq), o.trace.c_str());
  }
  return 0;
}

}  // namespace origami::plan
