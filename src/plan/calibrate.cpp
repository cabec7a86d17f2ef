#include "plan/calibrate.h"

#include <mpi.h>
#include <omp.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include "comm/direct.h"
#include "comm/mpi_comm.h"
#include "core/error.h"
#include "io/report.h"
#include "kernels/kernels.h"
#include "model/config.h"
#include "parallel/layout.h"
#include "plan/dry_run.h"
#include "plan/hardware.h"

namespace origami::plan {

namespace {

using Clock = std::chrono::steady_clock;

// With more ranks than cores on the node, a kernel shorter than the scheduler's time slice runs
// at a whole core's speed when timed alone, while a run's rank gets its share of the core over
// time: each measurement then times a batch of calls lasting at least this long (0: one call).
double g_min_batch_s = 0;

// Median seconds of one call of f over `reps` measurements after a warm-up call; batch: each
// measurement a batch of calls of at least g_min_batch_s (kernels only: collectives and
// ping-pongs must post the same calls on every rank).
double median_s(int reps, const std::function<void()>& f, bool batch = true) {
  auto t0 = Clock::now();
  f();
  const double warm = std::chrono::duration<double>(Clock::now() - t0).count();
  const int k = batch && g_min_batch_s > warm
                    ? static_cast<int>(std::ceil(g_min_batch_s / std::max(warm, 1e-7)))
                    : 1;
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    t0 = Clock::now();
    for (int j = 0; j < k; ++j) f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / k);
  }
  return median(t);
}

// Every rank measures at once (under mpirun the ranks of a node share its cores and memory, as a
// run's ranks do); rank 0's numbers are written. A barrier before each measurement lines them up.
void line_up() {
  int init = 0;
  MPI_Initialized(&init);
  if (init) MPI_Barrier(MPI_COMM_WORLD);
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

template <class T>
T val(float f) {
  if constexpr (std::is_same_v<T, float>)
    return f;
  else
    return to_bf16(f);
}

// One GEMM the engines issue: op(A)[m,k]·op(B)[k,n].
struct Shape {
  bool bf16, ta, tb;
  int64_t m, n, k;
  auto key() const { return std::tie(bf16, ta, tb, m, n, k); }
  bool operator<(const Shape& o) const { return key() < o.key(); }
};

// Seconds of one GEMM of shape s in element type T (median of reps after a warm-up).
template <class T>
double gemm_seconds(const Shape& s, int reps) {
  std::vector<T> A(static_cast<size_t>(s.m * s.k)), B(static_cast<size_t>(s.k * s.n)),
      C(static_cast<size_t>(s.m * s.n));
  for (size_t i = 0; i < A.size(); ++i) A[i] = val<T>(0.01f * static_cast<float>(i % 64));
  for (size_t i = 0; i < B.size(); ++i) B[i] = val<T>(0.01f * static_cast<float>(i % 32));
  const int64_t lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
  const auto ta = s.ta ? cpu::Trans::T : cpu::Trans::N, tb = s.tb ? cpu::Trans::T : cpu::Trans::N;
  line_up();
  return median_s(reps, [&] {
    if constexpr (std::is_same_v<T, float>)
      cpu::gemm<float>(ta, tb, s.m, s.n, s.k, 1.f, A.data(), lda, B.data(), ldb, 0.f, C.data(),
                       s.n);
    else
      cpu::gemm_bf16(ta, tb, s.m, s.n, s.k, 1.f, A.data(), lda, B.data(), ldb, 0.f, C.data(),
                     DType::bf16, s.n);
  });
}
double gemm_seconds(const Shape& s, int reps) {
  return s.bf16 ? gemm_seconds<bfloat16>(s, reps) : gemm_seconds<float>(s, reps);
}

// Causal attention over S positions, n_h query heads of d and n_kv KV heads: seconds forward and
// backward.
template <class T>
std::pair<double, double> attn_seconds(int64_t S, int n_h, int n_kv, int d, int reps) {
  const int64_t qw = n_h * d, kw = n_kv * d;
  std::vector<T> q(static_cast<size_t>(S * qw)), k(static_cast<size_t>(S * kw)),
      v(static_cast<size_t>(S * kw)), o(static_cast<size_t>(S * qw)),
      dout(static_cast<size_t>(S * qw));
  for (size_t i = 0; i < q.size(); ++i) q[i] = dout[i] = val<T>(0.01f * static_cast<float>(i % 7));
  for (size_t i = 0; i < k.size(); ++i) k[i] = v[i] = val<T>(0.01f * static_cast<float>(i % 5));
  std::vector<float> lse(static_cast<size_t>(n_h * S)), dq(static_cast<size_t>(S * qw)),
      dk(static_cast<size_t>(S * kw)), dv(static_cast<size_t>(S * kw));
  const cpu::QSeg qs{0, 0, S};
  cpu::KvSeg<T> ks{k.data(), v.data(), kw, 0, S, dk.data(), dv.data()};
  const cpu::AttnShape sh{n_h, n_kv, d};
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  line_up();
  const double f = median_s(reps, [&] {
    cpu::flash_attn_fwd<T>(o.data(), lse.data(), S, q.data(), qw, &qs, 1, &ks, 1, sh, scale);
  });
  line_up();
  const double b = median_s(reps, [&] {
    cpu::flash_attn_bwd<T>(dq.data(), dout.data(), q.data(), o.data(), qw, lse.data(), S, &qs, 1,
                           &ks, 1, sh, scale);
  });
  return {f, b};
}

double pairs_of(int64_t S) {
  return static_cast<double>(S) * static_cast<double>(S + 1) / 2;
}

// What the dry runs of the layouts at the given lengths issue: every GEMM shape with its flops in
// one step (all layouts and lengths together), and the smallest and largest attention call
// (visible pairs per head).
struct Issued {
  std::map<Shape, double> gemm_flops;
  double attn_min = 0, attn_max = 0;
  std::vector<std::string> runs, skipped;
};
Issued collect(const CalibrateOptions& o, const ModelConfig& c, int world) {
  Issued is;
  std::mutex mu;
  Hardware hw;  // any positive rates: only the work is looked at
  hw.gemm = hw.attn_fwd = hw.attn_bwd = {1e12, 1e12};
  hw.memory_bytes_per_s = 1e12;
  hw.observe = [&](const sim::Work& w) {
    std::lock_guard<std::mutex> lock(mu);
    if (w.kind == sim::Work::gemm) {
      const Shape s{w.bf16,
                    w.ta,
                    w.tb,
                    static_cast<int64_t>(w.m),
                    static_cast<int64_t>(w.n),
                    static_cast<int64_t>(w.k)};
      is.gemm_flops[s] += w.flops;
    } else if (w.kind != sim::Work::memory && w.m > 0) {
      is.attn_min = is.attn_min > 0 ? std::min(is.attn_min, w.m) : w.m;
      is.attn_max = std::max(is.attn_max, w.m);
    }
  };
  const auto layouts = o.layouts.empty() ? default_layouts(world) : o.layouts;
  for (const std::string& name : layouts) {
    const Layout L = Layout::parse(name, -1);
    for (const bool seqp : {true, false}) {
      if (!seqp && !(L.has_tp_axis() && L.tp_degree() > 1)) continue;
      ParallelOptions par;
      par.layout = name;
      par.tp_seq_parallel = seqp;
      for (const int64_t S : o.seqs)
        for (const DType dt : {DType::f32, DType::bf16}) {
          if (!(dt == DType::bf16 ? o.bf16 : o.fp32)) continue;
          const std::string what = cat(name, seqp ? "" : " (SP off)", " S=", S, " ",
                                       dt == DType::bf16 ? "bf16" : "fp32");
          try {
            dry_run({c, L, par, Recompute::none, o.micro_batch, S, dt, omp_get_max_threads(), &hw,
                     false});
            is.runs.push_back(what);
          } catch (const Error& e) {
            is.skipped.push_back(cat(what, ": ", e.what()));
          }
        }
    }
  }
  return is;
}

// (max - min) / median of a quantity's rounds.
double spread(const std::vector<double>& v) {
  const double m = median(v);
  return m > 0 ? (*std::max_element(v.begin(), v.end()) - *std::min_element(v.begin(), v.end())) / m
               : 0;
}

}  // namespace

std::vector<std::string> default_layouts(int world) {
  if (world <= 1) return {"single"};
  const std::string n = std::to_string(world);
  std::vector<std::string> l = {"tsp=" + n, "fsdp_sp=" + n, "tp=" + n, "sp=" + n};
  if (world == 4) l.push_back("tp=2,sp=2");
  return l;
}

int run_calibrate(const CalibrateOptions& o) {
  const ModelConfig c = ModelConfig::load(o.config);
  int init = 0, rank = 0, world = 1;
  MPI_Initialized(&init);
  if (init) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
  }
  const bool talk = rank == 0;
  if (o.rounds < 1 || o.reps < 1) fail("--rounds and --reps must be >= 1");
  int node_ranks = 1;  // ranks sharing this rank's node
  if (init) {
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &node_ranks);
    MPI_Comm_free(&node);
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_min_batch_s = node_ranks * omp_get_max_threads() > cores ? 0.02 : 0;
  const Issued is = collect(o, c, world);
  if (is.gemm_flops.empty())
    fail("calibrate: no dry run of the layouts succeeded at the given --seq (",
         is.skipped.empty() ? std::string("none given") : is.skipped.front(), ")");
  const std::vector<Shape> shapes = [&] {
    std::vector<Shape> v;
    for (const auto& [s, f] : is.gemm_flops) v.push_back(s);
    return v;
  }();
  // Causal lengths whose calls span the issued ones (pairs per head), powers of two from 128,
  // at most --attn-seq: longer calls take the longest's rate.
  std::vector<int64_t> attn_lens;
  for (int64_t S = 128; S <= o.attn_seq; S *= 2)
    if (pairs_of(S) >= is.attn_min / 4 && (pairs_of(S / 2) <= is.attn_max || attn_lens.empty()))
      attn_lens.push_back(S);
  if (attn_lens.empty()) attn_lens.push_back(std::min<int64_t>(o.attn_seq, 1024));
  if (talk) {
    std::printf(
        "origami calibrate: %d rank(s), %d thread(s) each; %zu GEMM shapes issued by %zu dry "
        "runs of %s; attention at %zu lengths up to %lld; %d rounds of %d reps\n",
        world, omp_get_max_threads(), shapes.size(), is.runs.size(), o.config.c_str(),
        attn_lens.size(), static_cast<long long>(attn_lens.back()), o.rounds, o.reps);
    for (const auto& sk : is.skipped) std::printf("  (not collected: %s)\n", sk.c_str());
    std::fflush(stdout);
  }
  const int d = static_cast<int>(c.head_dim());
  const int n_h = static_cast<int>(c.num_attention_heads),
            n_kv = static_cast<int>(c.num_key_value_heads);

  std::vector<std::vector<double>> t_gemm(shapes.size());
  std::vector<std::array<std::vector<double>, 4>> t_attn(attn_lens.size());  // f32 f/b, bf16 f/b
  std::vector<double> t_mem, t_exp, t_launch, t_lat, t_big, t_adam, t_chain, t_bg;
  std::vector<std::vector<double>> skew_samples;  // every rank's time of the same GEMMs
  // The collectives as the engines post them (MpiComm: all-gather, the staged reduce-scatter and
  // all-reduce, all-to-all), blocking, over 1 MiB and 16 MiB a rank: seconds per kind and size.
  constexpr int kColls = sim::Link::kColls;
  const int64_t coll_floats[2] = {int64_t{256} << 10, int64_t{4} << 20};
  std::array<std::array<std::vector<double>, 2>, kColls> t_coll;
  const auto coll_received = [&](int k, int64_t floats) {
    const int64_t blk = floats / world;  // a rank's block
    return static_cast<double>(k == sim::Link::allgather ? direct::allgather(world, blk * 4)
                               : k == sim::Link::reduce_scatter
                                   ? direct::reduce_scatter(world, blk * 4)
                               : k == sim::Link::allreduce ? direct::allreduce(world, floats * 4)
                                                           : (world - 1) * blk * 4);
  };
  // AdamW over 4 Mi elements (p, g, m, v: 64 MiB, beyond the caches as a model's are).
  const int64_t n_adam = int64_t{4} << 20;
  std::vector<float> ap(static_cast<size_t>(n_adam), 0.5f), ag(ap.size(), 0.01f),
      am(ap.size(), 0.f), av(ap.size(), 0.f);
  // Noise between ranks: the same GEMMs (~5 ms) on every rank at once after a barrier.
  const Shape noise_shape{false, false, true, 256, 512, 512};
  std::vector<float> na(256 * 512), nb(512 * 512), nc(256 * 512);
  const auto noise_gemms = [&] {
    for (int j = 0; j < 4; ++j)
      cpu::gemm<float>(cpu::Trans::N, cpu::Trans::T, noise_shape.m, noise_shape.n, noise_shape.k,
                       1.f, na.data(), noise_shape.k, nb.data(), noise_shape.k, 0.f, nc.data(),
                       noise_shape.n);
  };
  const int64_t n = int64_t{16} << 20;
  std::vector<float> x(static_cast<size_t>(n), 1.f), y(static_cast<size_t>(n), 2.f);
  const int64_t rows = 512, vblk = 4096;
  std::vector<float> z(static_cast<size_t>(rows * vblk)), m(rows), l(rows), zt(rows);
  for (size_t i = 0; i < z.size(); ++i) z[i] = 0.001f * static_cast<float>(i % 1000);
  std::vector<int64_t> target(static_cast<size_t>(rows), 7);
  std::unique_ptr<Comm> comm = world >= 2 ? make_mpi_comm() : nullptr;
  std::vector<char> buf(world >= 2 ? size_t{16} << 20 : 0);
  const auto t_start = Clock::now();
  for (int r = 0; r < o.rounds; ++r) {
    for (size_t i = 0; i < shapes.size(); ++i) t_gemm[i].push_back(gemm_seconds(shapes[i], o.reps));
    for (size_t i = 0; i < attn_lens.size(); ++i) {
      // (an element type not measured takes the other's times: its rows mirror them)
      const auto a32 = o.fp32 ? attn_seconds<float>(attn_lens[i], n_h, n_kv, d, o.reps)
                              : attn_seconds<bfloat16>(attn_lens[i], n_h, n_kv, d, o.reps);
      const auto a16 =
          o.bf16 ? (o.fp32 ? attn_seconds<bfloat16>(attn_lens[i], n_h, n_kv, d, o.reps) : a32)
                 : a32;
      t_attn[i][0].push_back(a32.first), t_attn[i][1].push_back(a32.second);
      t_attn[i][2].push_back(a16.first), t_attn[i][3].push_back(a16.second);
    }
    // Memory-bound kernels: y += x over arrays far larger than the caches (12 bytes an element).
    line_up();
    t_mem.push_back(median_s(o.reps, [&] { cpu::add_inplace<float>(y.data(), x.data(), n); }));
    // Exponentials: a cross-entropy block update (an exp per logit; the SwiGLU kernels' bound too).
    line_up();
    t_exp.push_back(median_s(o.reps, [&] {
      cpu::ce_init<float>(m.data(), l.data(), zt.data(), rows);
      cpu::ce_update<float>(m.data(), l.data(), zt.data(), z.data(), rows, vblk, 0, vblk,
                            target.data());
    }));
    line_up();
    t_adam.push_back(median_s(o.reps, [&] {
      cpu::adamw_step<float>(ap.data(), ag.data(), am.data(), av.data(), n_adam,
                             {1e-4, 0.9, 0.95, 1e-8, 0.1}, 10);
    }));
    // A fixed-order sum in double (the gradient norm's; RMSNorm's row statistics alike): over
    // AdamW's 4 Mi gradient elements.
    line_up();
    t_chain.push_back(median_s(o.reps, [&] {
      volatile double s = cpu::sum_squares<float>(ag.data(), n_adam);
      (void)s;
    }));
    // A kernel call's fixed cost: y += x over 16 elements.
    line_up();
    t_launch.push_back(median_s(201, [&] { cpu::add_inplace<float>(y.data(), x.data(), 16); }));
    // The link between ranks 0 and 1 (shared-memory MPI on one host): half a ping-pong round
    // trip of 8 bytes (latency) and of 16 MiB (bandwidth); the others wait.
    if (comm) {
      // The slowest rank's time over the mean: the lag a rank's peers wait at an exchange.
      for (int i = 0; i < 20; ++i) {
        line_up();
        const auto t0 = Clock::now();
        noise_gemms();
        double t = std::chrono::duration<double>(Clock::now() - t0).count();
        std::vector<double> all(static_cast<size_t>(world));
        MPI_Allgather(&t, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, MPI_COMM_WORLD);
        skew_samples.push_back(all);
      }
      auto ping = [&](int64_t bytes) {
        return median_s(
                   o.reps * 4,
                   [&] {
                     if (rank == 0) {
                       comm->isend(buf.data(), bytes, 1, 7, Traffic::other).wait();
                       comm->irecv(buf.data(), bytes, 1, 7, Traffic::other).wait();
                     } else if (rank == 1) {
                       comm->irecv(buf.data(), bytes, 0, 7, Traffic::other).wait();
                       comm->isend(buf.data(), bytes, 0, 7, Traffic::other).wait();
                     }
                   },
                   false) /
               2;
      };
      comm->barrier();
      for (int size = 0; size < 2; ++size) {
        const int64_t floats = coll_floats[size];
        float* f = reinterpret_cast<float*>(buf.data());
        const int64_t blk = floats / world;  // a rank's block
        std::vector<float> out(static_cast<size_t>(floats)), in(out.size(), 1.f);
        std::vector<int64_t> cnt(static_cast<size_t>(world), blk * 4), off(cnt.size());
        for (int q = 0; q < world; ++q) off[static_cast<size_t>(q)] = q * blk * 4;
        const std::function<void()> ops[kColls] = {
            [&] { comm->iallgather(in.data(), out.data(), blk * 4, Traffic::other).wait(); },
            [&] { comm->ireduce_scatter(in.data(), out.data(), blk, Traffic::other).wait(); },
            [&] { comm->iallreduce(f, floats, Traffic::other).wait(); },
            [&] {
              comm->ialltoallv(in.data(), cnt.data(), off.data(), out.data(), cnt.data(),
                               off.data(), Traffic::other)
                  .wait();
            }};
        for (int k = 0; k < kColls; ++k) {
          // Warm-up: the scratch a reduction allocates lands on pages the heap has not held yet
          // for its first calls, and a first touch costs ~11 us a page on the VMs here (0.4 GB/s:
          // bench_comm --raw); a run's steps reuse the heap, so time the settled calls.
          for (int w = 0; w < 10; ++w) ops[k]();
          comm->barrier();
          t_coll[static_cast<size_t>(k)][static_cast<size_t>(size)].push_back(
              median_s(o.reps, ops[k], false));
        }
      }
      t_lat.push_back(ping(8));
      t_big.push_back(ping(int64_t{16} << 20));
      // A copy beside compute: with train's MPI progress thread (--progress-thread 100), ranks
      // 2i and 2i+1 exchange 4 MiB while each computes 4 GEMMs, then wait; against the same
      // GEMMs alone (interleaved, medians), the compute lost is what the copy cost the rank —
      // more than a copy alone, since the progress thread and the GEMMs share the core and its
      // caches.
      const int peer = (rank ^ 1) < world ? rank ^ 1 : -1;
      const int64_t bg_bytes = int64_t{4} << 20;
      std::vector<char> bg_in(static_cast<size_t>(bg_bytes)), bg_out(bg_in.size(), 1);
      const bool threaded = set_progress_thread(100);
      std::vector<double> with, alone;
      for (int i = 0; i < 2 * o.reps + 2; ++i) {
        line_up();
        const auto t0 = Clock::now();
        Request rr, rs;
        if (i % 2 && peer >= 0) {
          rr = comm->irecv(bg_in.data(), bg_bytes, peer, 9, Traffic::other);
          rs = comm->isend(bg_out.data(), bg_bytes, peer, 9, Traffic::other);
        }
        noise_gemms();
        if (i % 2 && peer >= 0) rr.wait(), rs.wait();
        if (i >= 2)  // (the first pair warms the buffers up)
          (i % 2 ? with : alone)
              .push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      if (threaded) set_progress_thread(0);
      t_bg.push_back(threaded ? std::max(1e-9, median(with) - median(alone)) / bg_bytes : 0);
    }
    if (talk) {
      std::printf("  round %d/%d done (%.0f s)\n", r + 1, o.rounds,
                  std::chrono::duration<double>(Clock::now() - t_start).count());
      std::fflush(stdout);
    }
  }

  // Medians over rounds; a dtype's single GEMM rate is the issued flops over their time.
  nlohmann::json gemm_rows = {{"fp32", nlohmann::json::array()}, {"bf16", nlohmann::json::array()}};
  double fl[2] = {0, 0}, secs[2] = {0, 0};
  std::vector<double> gemm_spreads;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    const double t = median(t_gemm[i]);
    const double rate =
        2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k) / t;
    gemm_rows[s.bf16 ? "bf16" : "fp32"].push_back(
        {s.ta ? 1 : 0, s.tb ? 1 : 0, s.m, s.n, s.k, rate});
    fl[s.bf16] += is.gemm_flops.at(s);
    secs[s.bf16] += is.gemm_flops.at(s) / rate;
    gemm_spreads.push_back(spread(t_gemm[i]));
  }
  double g32 = secs[0] > 0 ? fl[0] / secs[0] : 0, g16 = secs[1] > 0 ? fl[1] / secs[1] : 0;
  if (!o.bf16) g16 = g32;  // not measured: the other type's rate (the provenance says so)
  if (!o.fp32) g32 = g16;
  nlohmann::json attn_rows = {{"fp32", nlohmann::json::array()}, {"bf16", nlohmann::json::array()}};
  std::vector<double> attn_spreads;
  double a[4] = {0, 0, 0, 0};  // the rates at the length nearest the issued calls' middle
  const double mid = std::sqrt(std::max(is.attn_min, 1.0) * std::max(is.attn_max, 1.0));
  double best = 1e300;
  for (size_t i = 0; i < attn_lens.size(); ++i) {
    const double p = pairs_of(attn_lens[i]);
    double r[4];
    for (int j = 0; j < 4; ++j) {
      r[j] = (j % 2 ? 10.0 : 4.0) * d * p * n_h / median(t_attn[i][j]);
      attn_spreads.push_back(spread(t_attn[i][j]));
    }
    attn_rows["fp32"].push_back({p, r[0], r[1]});
    attn_rows["bf16"].push_back({p, r[2], r[3]});
    if (std::abs(std::log(p / mid)) < best) {
      best = std::abs(std::log(p / mid));
      std::copy(r, r + 4, a);
    }
  }
  const double bw = 12.0 * static_cast<double>(n) / median(t_mem);
  const double exps = static_cast<double>(rows * vblk) / median(t_exp);
  const double launch = median(t_launch);
  const double updates = static_cast<double>(n_adam) / median(t_adam);
  const double chain = static_cast<double>(n_adam) / median(t_chain);
  const double lat = comm ? median(t_lat) : 0;
  const double link_bw =
      comm ? static_cast<double>(int64_t{16} << 20) / std::max(1e-12, median(t_big) - lat) : 0;
  // (0: no progress thread here, MPI without MPI_THREAD_MULTIPLE: such copies happen in waits)
  const double bg_copy = comm && median(t_bg) > 0 ? 1 / median(t_bg) : 0;
  // The ranks' cores need not be alike (a shared host's vCPUs): each rank's time for one step's
  // GEMMs (every shape's calls at its median) and the attention ladder, over rank 0's, is its
  // slowdown; the tables written are rank 0's.
  double mine = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    mine += is.gemm_flops.at(s) /
            (2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k)) *
            median(t_gemm[i]);
  }
  for (const auto& a : t_attn)
    for (const auto& v : a) mine += median(v);
  std::vector<double> slowdown(static_cast<size_t>(world), 1.0);
  if (comm) {
    MPI_Allgather(&mine, 1, MPI_DOUBLE, slowdown.data(), 1, MPI_DOUBLE, MPI_COMM_WORLD);
    const double t0 = slowdown[0];
    for (double& x : slowdown) x /= t0;
  }
  // The lag of the slowest rank beyond the cores' steady difference: each rank's samples over
  // its own median, then the mean over samples of (slowest - mean) / mean (the runs pay the
  // mean, not the median).
  double sync_skew = 0;
  if (!skew_samples.empty()) {
    std::vector<double> own(static_cast<size_t>(world));
    for (int r = 0; r < world; ++r) {
      std::vector<double> v;
      for (const auto& s : skew_samples) v.push_back(s[static_cast<size_t>(r)]);
      own[static_cast<size_t>(r)] = median(v);
    }
    for (const auto& s : skew_samples) {
      double mean = 0, most = 0;
      for (int r = 0; r < world; ++r) {
        const double u = s[static_cast<size_t>(r)] / own[static_cast<size_t>(r)];
        mean += u / world, most = std::max(most, u);
      }
      sync_skew += (most - mean) / mean / static_cast<double>(skew_samples.size());
    }
  }
  const auto worst = [](const std::vector<double>& v) {
    return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
  };
  std::vector<double> link_spreads;
  if (comm) link_spreads = {spread(t_lat), spread(t_big)};
  if (talk) {
    std::printf(
        "  GEMM        fp32 %8.1f GFLOP/s   bf16 %8.1f GFLOP/s (the issued flops over their "
        "time)\n",
        g32 / 1e9, g16 / 1e9);
    for (size_t i = 0; i < attn_lens.size(); ++i) {
      const auto& r32 = attn_rows["fp32"][i];
      const auto& r16 = attn_rows["bf16"][i];
      std::printf(
          "  attention   S=%-5lld fp32 fwd %6.1f bwd %6.1f GFLOP/s   bf16 fwd %6.1f bwd %6.1f "
          "GFLOP/s\n",
          static_cast<long long>(attn_lens[i]), r32[1].get<double>() / 1e9,
          r32[2].get<double>() / 1e9, r16[1].get<double>() / 1e9, r16[2].get<double>() / 1e9);
    }
    std::printf(
        "  memory      %8.1f GB/s (add_inplace over 64 MiB arrays)   kernel call %.2f us   "
        "exp %.0f M/s (cross-entropy block)   AdamW %.0f M elements/s   fixed-order sum %.0f M/s\n",
        bw / 1e9, launch * 1e6, exps / 1e6, updates / 1e6, chain / 1e6);
    if (comm)
      std::printf(
          "  MPI link    latency %.2f us, %8.2f GB/s (ranks 0 and 1, shared memory); the slowest "
          "rank lags by %.1f%% of a compute interval beyond the ranks' steady difference\n",
          lat * 1e6, link_bw / 1e9, 100 * sync_skew);
    if (bg_copy > 0)
      std::printf(
          "  MPI copy    %8.2f GB/s beside compute (the progress thread's copy of an exchange, "
          "as the GEMMs it interleaves with lose it)\n",
          bg_copy / 1e9);
    if (comm) {
      const char* names[kColls] = {"all-gather", "reduce-scatter", "all-reduce", "all-to-all"};
      for (int size = 0; size < 2; ++size) {
        std::printf("  collectives, %s a rank (received bytes over time):",
                    size ? "16 MiB" : "1 MiB");
        for (int k = 0; k < kColls; ++k)
          std::printf(" %s %.2f GB/s", names[k],
                      coll_received(k, coll_floats[size]) /
                          median(t_coll[static_cast<size_t>(k)][static_cast<size_t>(size)]) / 1e9);
        std::printf("\n");
      }
      std::printf("  ranks' kernels over rank 0's (rank_slowdown):");
      for (const double x : slowdown) std::printf(" %.3f", x);
      std::printf("\n");
    }
    std::printf(
        "  spread over rounds ((max - min) / median): GEMM shapes median %.0f%%, worst %.0f%%; "
        "attention worst %.0f%%; memory %.0f%%; exp %.0f%%; link worst %.0f%%\n",
        100 * median(gemm_spreads), 100 * worst(gemm_spreads), 100 * worst(attn_spreads),
        100 * spread(t_mem), 100 * spread(t_exp), 100 * worst(link_spreads));
  }
  if (!talk) return 0;

  utsname u{};
  uname(&u);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  const std::string measured =
      cat("measured by `origami calibrate` on ", date, " (", world, " rank(s) at once, ",
          omp_get_max_threads(), " thread(s) each; the median of ", o.rounds,
          " interleaved rounds, each the median of ", o.reps, " calls after a warm-up",
          g_min_batch_s > 0 ? cat("; more ranks than cores: each kernel measurement a batch of "
                                  "calls lasting at least ",
                                  g_min_batch_s * 1e3, " ms, the cores' time slices averaged")
                            : std::string(),
          ")");
  std::string runs;
  for (const auto& r : is.runs) runs += (runs.empty() ? "" : "; ") + r;
  nlohmann::json j;
  j["name"] = cat(cpu_model(), ", ", world, " rank(s) x ", omp_get_max_threads(), " thread(s)");
  j["gemm_flops"] = {{"fp32", g32}, {"bf16", g16}};
  j["attn_fwd_flops"] = {{"fp32", a[0]}, {"bf16", a[2]}};
  j["attn_bwd_flops"] = {{"fp32", a[1]}, {"bf16", a[3]}};
  j["memory_bytes_per_s"] = bw;
  j["kernel_launch_s"] = launch;
  j["exp_per_s"] = exps;
  j["update_per_s"] = updates;
  j["chain_per_s"] = chain;
  j["ranks_per_node"] = world;
  if (comm) j["rank_slowdown"] = slowdown;
  nlohmann::json colls;
  if (comm) {
    for (int k = 0; k < kColls; ++k)
      colls[sim::Link::kCollNames[k]] = {
          coll_received(k, coll_floats[0]), median(t_coll[static_cast<size_t>(k)][0]),
          coll_received(k, coll_floats[1]), median(t_coll[static_cast<size_t>(k)][1])};
  }
  nlohmann::json link =
      comm ? nlohmann::json{{"latency_s", lat},
                            {"bytes_per_s", link_bw},
                            {"on_cores", true},
                            {"sync_skew", sync_skew},
                            {"collectives", colls}}
           : nlohmann::json{{"latency_s", 1e-6}, {"bytes_per_s", 1e10}, {"on_cores", true}};
  if (bg_copy > 0) link["background_copy_bytes_per_s"] = bg_copy;
  j["intra_node"] = link;
  j["inter_node"] = link;
  j["gemm_shapes"] = gemm_rows;
  j["attn_sizes"] = attn_rows;
  j["spread"] = {{"what", "(max - min) / median over the rounds"},
                 {"gemm_median", median(gemm_spreads)},
                 {"gemm_worst", worst(gemm_spreads)},
                 {"attention_worst", worst(attn_spreads)},
                 {"memory", spread(t_mem)},
                 {"exp", spread(t_exp)},
                 {"link_worst", worst(link_spreads)}};
  if (!(o.fp32 && o.bf16))
    j["not_measured"] =
        cat(o.fp32 ? "bf16" : "fp32", ": calibrate --dtype ", o.fp32 ? "fp32" : "bf16",
            " measured the other type only; its rates "
            "are copied");
  j["provenance"] = {
      {"machine", cat(host, ": ", cpu_model(), ", ", u.sysname, " ", u.release)},
      {"gemm_shapes", cat(measured,
                          ": every GEMM (transposes, m, n, k) issued by one training "
                          "step of each dry run: ",
                          runs)},
      {"gemm_flops", "the issued GEMMs' flops over their measured time (gemm_shapes)"},
      {"attn_sizes", cat(measured, ": causal flash attention of ", n_h, "/", n_kv, " heads of ", d,
                         " at S = 128·2^i, 4·d (forward) and 10·d (backward) flop per visible "
                         "pair and head; rows: pairs per head, forward, backward flop/s")},
      {"attn_fwd_flops", "attn_sizes at the length nearest the issued calls' middle"},
      {"attn_bwd_flops", "attn_sizes at the length nearest the issued calls' middle"},
      {"memory_bytes_per_s", cat(measured, ": y += x over 64 MiB fp32 arrays (12 bytes/element)")},
      {"kernel_launch_s", cat(measured, ": y += x over 16 elements")},
      {"exp_per_s", cat(measured, ": one cross-entropy block update, 512 rows x 4096 logits")},
      {"update_per_s", cat(measured, ": AdamW over 4 Mi fp32 elements (p, g, m, v)")},
      {"chain_per_s",
       cat(measured, ": the gradient norm's fixed-order sum of squares over 4 Mi fp32 elements")},
      {"ranks_per_node", "the ranks calibrate ran with"},
      {"rank_slowdown",
       cat(measured,
           ": each rank's time for one step's GEMMs (every issued shape at its median) and the "
           "attention ladder, over rank 0's (whose rates the tables hold)")},
      {"intra_node", comm ? cat(measured,
                                ": half an MPI ping-pong between ranks 0 and 1 "
                                "(8 bytes: latency; 16 MiB: bandwidth); on_cores: shared-memory "
                                "MPI copies with the ranks' own cores; sync_skew: 4 GEMMs of "
                                "256x512x512 on every rank at once after a barrier, the mean over "
                                "20 samples a round of (slowest - mean) / mean, each rank's "
                                "over its own median; collectives: MpiComm's all-gather, "
                                "reduce-scatter, all-reduce and all-to-all, blocking, over 1 MiB "
                                "and 16 MiB a rank: [received bytes, seconds] at each; "
                                "background_copy_bytes_per_s: 4 MiB exchanged by ranks 2i and "
                                "2i+1 beside 4 GEMMs of 256x512x512 with the progress thread at "
                                "100 us, over the time those GEMMs lost against the same alone "
                                "(medians)")
                          : std::string("assumed (one rank: no link measured)")},
      {"inter_node", "the same link (one host); pass --emulate-link to plan for another"}};
  std::ofstream f(o.out);
  if (!f) fail("cannot write ", o.out);
  f << j.dump(1) << "\n";
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}

}  // namespace origami::plan
