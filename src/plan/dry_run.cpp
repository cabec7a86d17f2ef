#include "plan/dry_run.h"

#include <algorithm>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/accounting.h"
#include "comm/mesh.h"
#include "comm/sim_comm.h"
#include "core/error.h"
#include "core/sim_clock.h"
#include "kernels/meta.h"
#include "parallel/engine.h"
#include "train/step.h"
#include "train/trainer.h"

namespace origami::plan {

nlohmann::json Result::to_json() const {
  nlohmann::json p;
  for (int i = 0; i < kNumCats; ++i)
    p[cat_name(static_cast<Cat>(i))] = peak[static_cast<size_t>(i)];
  p["total"] = total;
  nlohmann::json j{{"peak_bytes", p}, {"comm_bytes_per_layer", comm_per_layer}};
  if (time.step_s > 0)
    j["predicted_seconds"] = {{"train_step", time.step_s},
                              {"train_step_compute", time.step_compute_s},
                              {"train_step_exposed", time.step_exposed_s},
                              {"train_step_link_busy", time.step_link_busy_s},
                              {"forward", time.fwd_s},
                              {"forward_exposed", time.fwd_exposed_s}};
  return j;
}

namespace {

// The communicators of rank i of one replica of M ranks, TP groups of T consecutive ranks
// (comm/mesh.h's arrangement), and a DP axis of `dp` replicas standing still.
// With a hardware profile, a group's link is the node's when the ranks it spans fit in a node
// (tp groups are consecutive ranks; the model and sp groups span the replica), else the NIC's;
// the DP axis crosses nodes unless the whole job fits in one.
std::vector<Mesh> sim_meshes(int M, int T, int dp, const Hardware* hw) {
  const auto link = [hw](int span) {
    return !hw ? sim::Link{} : span <= hw->ranks_per_node ? hw->intra : hw->inter;
  };
  std::vector<Mesh> m(static_cast<size_t>(M));
  auto model = make_sim_comms(M, 60, link(M));
  std::vector<std::vector<std::unique_ptr<Comm>>> tp, sp;
  for (int g = 0; g < M / T; ++g) tp.push_back(make_sim_comms(T, 60, link(T)));
  for (int g = 0; g < T; ++g) sp.push_back(make_sim_comms(M / T, 60, link(M)));
  for (int i = 0; i < M; ++i) {
    m[i].world_rank = i;
    m[i].model = std::move(model[i]);
    m[i].tp = std::move(tp[i / T][i % T]);
    m[i].sp = std::move(sp[i % T][i / T]);
    m[i].dp = make_solo_comm(dp, link(M * dp));
  }
  return m;
}

}  // namespace

Result dry_run(const Input& in) {
  const ModelConfig& c = in.cfg;
  const Layout& L = in.layout;
  const int64_t B = in.micro_batch, S = in.seq;
  // validate_engine's checks, with --seq between them as the replay had it
  validate_options(L, in.par, in.recompute);
  if (S > c.max_position_embeddings)
    fail("--seq=", S, " exceeds max_position_embeddings=", c.max_position_embeddings);
  L.spec->validate(L, c, in.par, B, S);
  const int M = L.model_degree();
  std::vector<Mesh> meshes = sim_meshes(M, L.tp_degree(), L.dp, in.hw);
  std::vector<sim::Clock> train_clock(static_cast<size_t>(M)), fwd_clock(static_cast<size_t>(M));
  std::vector<std::vector<TraceEvent>> spans(in.trace ? static_cast<size_t>(M) : 0);
  std::vector<MemTracker> trackers(static_cast<size_t>(M));
  std::vector<MemStats> stats(static_cast<size_t>(M));
  nlohmann::json comm;
  std::exception_ptr error;
  std::mutex mu;
  const TrainOptions defaults;
  cpu::AdamW hp{defaults.lr, defaults.beta1, defaults.beta2, 1e-8, defaults.weight_decay};

  reset_sim_comms();
  struct DtypeScope {  // the engines compute (and allocate) in the planned type
    DType was = compute_dtype();
    explicit DtypeScope(DType t) { set_compute_dtype(t); }
    ~DtypeScope() { set_compute_dtype(was); }
  } dtype_scope(in.dtype);
  meta::start({.threads = in.threads});
  struct KernelTimeScope {  // kernels take the profile's time (none without one)
    explicit KernelTimeScope(const Hardware* hw) {
      if (hw)
        sim::set_kernel_time(
            [](const sim::Work& w, const void* h) {
              return static_cast<const Hardware*>(h)->kernel_time(w);
            },
            hw);
    }
    ~KernelTimeScope() { sim::set_kernel_time(nullptr, nullptr); }
  } kernel_time_scope(in.hw);
  struct AttnChargeScope {
    explicit AttnChargeScope(const sim::AttnCharge& a) { sim::set_attn_charge(a); }
    ~AttnChargeScope() { sim::set_attn_charge({}); }
  } attn_charge_scope([&] {
    sim::AttnCharge a;
    a.dense = in.dense_attention;
    if (in.contiguous) {  // the sequence axis: TSP's and FSDP+SP's D, SP's Σ (TP alone: none)
      a.sigma = L.has("sp") ? L.size("sp") : L.has_tp_axis() ? 1 : L.model_degree();
      a.chunk = S / (2 * a.sigma);
    }
    return a;
  }());
  auto rank = [&](int i) {
    try {
      ThreadTracker tt(trackers[i]);
      auto eng = make_engine_on(L, c, in.par, in.recompute, std::move(meshes[i]));
      eng->init_moments();
      trackers[i].reset_peaks();
      // The trainer's step 0 of replica 0: samples 0 … B−1 (every rank holds the global batch).
      const Batch batch = synthetic_batch(defaults.seed, 0, B, S, c.vocab_size);
      if (in.hw) {
        if (in.trace) train_clock[i].trace = &spans[i];
        train_clock[i].slowdown = in.hw->slowdown_of(i);
        sim::bind(&train_clock[i]);
      }
      train_step(*eng, {batch}, hp, defaults.clip, 0);
      stats[i] = trackers[i].stats();
      if (i == 0) comm = eng->rank_report()["comm_bytes_per_layer"][0];
      if (in.hw) {  // then a forward pass alone, timed from a barrier that lines the ranks up
        sim::Clock& f = fwd_clock[i];
        f = train_clock[i];  // the step's end (the transfers' times carry on from it)
        f.trace = nullptr;
        sim::bind(&f);
        eng->barrier();
        const double t0 = f.now, e0 = f.exposed;
        eng->eval_sum(batch);
        sim::bind(nullptr);
        f.now -= t0;
        f.exposed -= e0;
      }
    } catch (...) {
      sim::bind(nullptr);
      std::lock_guard lk(mu);
      if (!error) error = std::current_exception();
      abort_sim_comms();
    }
  };
  std::vector<std::thread> threads;
  try {
    for (int i = 0; i < M; ++i) threads.emplace_back(rank, i);
  } catch (...) {  // a thread could not start: stop the ones that did
    abort_sim_comms();
    for (auto& t : threads) t.join();
    meta::stop();
    throw;
  }
  for (auto& t : threads) t.join();
  meta::stop();
  if (error) std::rethrow_exception(error);

  Result r;
  for (const MemStats& s : stats) {
    for (size_t k = 0; k < r.peak.size(); ++k) r.peak[k] = std::max(r.peak[k], s.peak[k]);
    r.total = std::max(r.total, s.total_peak);
  }
  r.comm_per_layer = comm.is_null() ? nlohmann::json::object() : comm;
  if (in.hw) {
    for (int i = 0; i < M; ++i) {
      const sim::Clock &t = train_clock[static_cast<size_t>(i)],
                       &f = fwd_clock[static_cast<size_t>(i)];
      r.time.step_s = std::max(r.time.step_s, t.now);
      r.time.step_compute_s = std::max(r.time.step_compute_s, t.compute);
      r.time.step_exposed_s = std::max(r.time.step_exposed_s, t.exposed);
      r.time.step_link_busy_s = std::max(r.time.step_link_busy_s, t.link_busy);
      r.time.fwd_s = std::max(r.time.fwd_s, f.now);
      r.time.fwd_exposed_s = std::max(r.time.fwd_exposed_s, f.exposed);
    }
    r.time.trace = std::move(spans);
  }
  if (r.comm_per_layer.empty())  // no layers: the table's categories, all zero
    for (int t = 0; t < kNumTraffic; ++t)
      r.comm_per_layer[traffic_name(static_cast<Traffic>(t))] = {
          {"fwd", 0}, {"recompute", 0}, {"bwd", 0}};
  return r;
}

}  // namespace origami::plan
