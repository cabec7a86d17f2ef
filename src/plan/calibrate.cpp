#include "plan/calibrate.h"

#include <mpi.h>
#include <omp.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <vector>

#include "comm/mpi_comm.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "model/config.h"

namespace origami::plan {

namespace {

using Clock = std::chrono::steady_clock;

// Median seconds of `reps` calls of f after one warm-up call.
double median_s(int reps, const std::function<void()>& f) {
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
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

struct Shape {
  int64_t M, N, K;
};

// The GEMMs of one layer's forward at B·S/D tokens (tsp-spec §3): Q/K/V and O projections, the
// MLP's gate/up and down, and the LM head block.
std::vector<Shape> layer_shapes(const ModelConfig& c, int64_t tokens) {
  const int64_t h = c.hidden_size, kv = c.kv_dim(), I = c.intermediate_size;
  return {{tokens, h, h}, {tokens, kv, h}, {tokens, h, h},
          {tokens, I, h}, {tokens, h, I},  {tokens, std::min<int64_t>(c.vocab_size, 4096), h}};
}

// flop/s over the shapes, weighted by their work: total flops over total median time.
template <class T>
double gemm_rate(const std::vector<Shape>& shapes, int reps) {
  double flops = 0, secs = 0;
  for (const Shape& s : shapes) {
    std::vector<T> A(static_cast<size_t>(s.M * s.K)), B(static_cast<size_t>(s.N * s.K)),
        C(static_cast<size_t>(s.M * s.N));
    for (size_t i = 0; i < A.size(); ++i) A[i] = val<T>(0.01f * static_cast<float>(i % 64));
    for (size_t i = 0; i < B.size(); ++i) B[i] = val<T>(0.01f * static_cast<float>(i % 32));
    line_up();
    secs += median_s(reps, [&] {
      if constexpr (std::is_same_v<T, float>)
        cpu::gemm<float>(cpu::Trans::N, cpu::Trans::T, s.M, s.N, s.K, 1.f, A.data(), s.K, B.data(),
                         s.K, 0.f, C.data(), s.N);
      else
        cpu::gemm_bf16(cpu::Trans::N, cpu::Trans::T, s.M, s.N, s.K, 1.f, A.data(), s.K, B.data(),
                       s.K, 0.f, C.data(), DType::bf16, s.N);
    });
    flops += 2.0 * static_cast<double>(s.M) * static_cast<double>(s.N) * static_cast<double>(s.K);
  }
  return flops / secs;
}

// Causal attention over S positions, n_h query heads of d and n_kv KV heads: flop/s forward and
// backward (4·d and 10·d per visible pair and head).
template <class T>
std::pair<double, double> attn_rates(int64_t S, int n_h, int n_kv, int d, int reps) {
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
  const double pairs = static_cast<double>(S) * static_cast<double>(S + 1) / 2 * n_h;
  line_up();
  const double f = median_s(reps, [&] {
    cpu::flash_attn_fwd<T>(o.data(), lse.data(), S, q.data(), qw, &qs, 1, &ks, 1, sh, scale);
  });
  line_up();
  const double b = median_s(reps, [&] {
    cpu::flash_attn_bwd<T>(dq.data(), dout.data(), q.data(), o.data(), qw, lse.data(), S, &qs, 1,
                           &ks, 1, sh, scale);
  });
  return {4.0 * d * pairs / f, 10.0 * d * pairs / b};
}

}  // namespace

int run_calibrate(const CalibrateOptions& o) {
  const ModelConfig c = ModelConfig::load(o.config);
  int init = 0, rank = 0, world = 1;
  MPI_Initialized(&init);
  if (init) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
  }
  const bool talk = rank == 0;
  const int reps = o.reps;
  const int64_t tokens = o.tokens;
  if (talk)
    std::printf(
        "origami calibrate: %d rank(s), %d thread(s) each, GEMM shapes of %s at %lld "
        "tokens\n",
        world, omp_get_max_threads(), o.config.c_str(), static_cast<long long>(tokens));
  const auto shapes = layer_shapes(c, tokens);
  const double g32 = gemm_rate<float>(shapes, reps);
  const double g16 = gemm_rate<bfloat16>(shapes, reps);
  if (talk)
    std::printf("  GEMM        fp32 %8.1f GFLOP/s   bf16 %8.1f GFLOP/s\n", g32 / 1e9, g16 / 1e9);
  const int d = static_cast<int>(c.head_dim());
  const int n_h = static_cast<int>(c.num_attention_heads),
            n_kv = static_cast<int>(c.num_key_value_heads);
  const auto a32 = attn_rates<float>(o.attn_seq, n_h, n_kv, d, reps);
  const auto a16 = attn_rates<bfloat16>(o.attn_seq, n_h, n_kv, d, reps);
  if (talk)
    std::printf(
        "  attention   fp32 fwd %6.1f bwd %6.1f GFLOP/s   bf16 fwd %6.1f bwd %6.1f GFLOP/s "
        "(S = %lld, causal)\n",
        a32.first / 1e9, a32.second / 1e9, a16.first / 1e9, a16.second / 1e9,
        static_cast<long long>(o.attn_seq));
  // Memory-bound kernels: y += x over arrays far larger than the caches (3 × 4 bytes an element).
  const int64_t n = int64_t{16} << 20;
  std::vector<float> x(static_cast<size_t>(n), 1.f), y(static_cast<size_t>(n), 2.f);
  line_up();
  const double bw = 12.0 * static_cast<double>(n) /
                    median_s(reps, [&] { cpu::add_inplace<float>(y.data(), x.data(), n); });
  // Exponentials: one cross-entropy block update (an exp per logit; the SwiGLU kernels' bound too).
  const int64_t rows = 512, vblk = 4096;
  std::vector<float> z(static_cast<size_t>(rows * vblk)), m(rows), l(rows), zt(rows);
  for (size_t i = 0; i < z.size(); ++i) z[i] = 0.001f * static_cast<float>(i % 1000);
  std::vector<int64_t> target(static_cast<size_t>(rows), 7);
  line_up();
  const double exps = static_cast<double>(rows * vblk) / median_s(reps, [&] {
                        cpu::ce_init<float>(m.data(), l.data(), zt.data(), rows);
                        cpu::ce_update<float>(m.data(), l.data(), zt.data(), z.data(), rows, vblk,
                                              0, vblk, target.data());
                      });
  // A kernel call's fixed cost: y += x over 16 elements.
  line_up();
  const double launch = median_s(1001, [&] { cpu::add_inplace<float>(y.data(), x.data(), 16); });
  if (talk)
    std::printf(
        "  memory      %8.1f GB/s (add_inplace over 64 MiB arrays)   kernel call %.2f us   "
        "exp %.0f M/s (cross-entropy block)\n",
        bw / 1e9, launch * 1e6, exps / 1e6);

  // The link between two ranks (shared-memory MPI on one host): half a ping-pong round trip of 8
  // bytes (latency) and of 16 MiB (bandwidth) between ranks 0 and 1; the others wait.
  double lat = 0, link_bw = 0;
  if (world >= 2) {
    auto comm = make_mpi_comm();
    std::vector<char> buf(size_t{16} << 20);
    auto ping = [&](int64_t bytes) {
      return median_s(reps * 4,
                      [&] {
                        if (rank == 0) {
                          comm->isend(buf.data(), bytes, 1, 7, Traffic::other).wait();
                          comm->irecv(buf.data(), bytes, 1, 7, Traffic::other).wait();
                        } else if (rank == 1) {
                          comm->irecv(buf.data(), bytes, 0, 7, Traffic::other).wait();
                          comm->isend(buf.data(), bytes, 0, 7, Traffic::other).wait();
                        }
                      }) /
             2;
    };
    comm->barrier();
    lat = ping(8);
    const double big = ping(int64_t{16} << 20);
    link_bw = static_cast<double>(int64_t{16} << 20) / std::max(1e-12, big - lat);
    if (talk)
      std::printf("  MPI link    latency %.2f us, %8.2f GB/s (ranks 0 and 1, shared memory)\n",
                  lat * 1e6, link_bw / 1e9);
  }
  if (!talk) return 0;

  utsname u{};
  uname(&u);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  const std::string measured = cat("measured by `origami calibrate` on ", date, " (", world,
                                   " rank(s) at once, ", omp_get_max_threads(), " thread(s) each)");
  nlohmann::json j;
  j["name"] = cat(cpu_model(), ", ", world, " rank(s) x ", omp_get_max_threads(), " thread(s)");
  j["gemm_flops"] = {{"fp32", g32}, {"bf16", g16}};
  j["attn_fwd_flops"] = {{"fp32", a32.first}, {"bf16", a16.first}};
  j["attn_bwd_flops"] = {{"fp32", a32.second}, {"bf16", a16.second}};
  j["memory_bytes_per_s"] = bw;
  j["kernel_launch_s"] = launch;
  j["exp_per_s"] = exps;
  j["ranks_per_node"] = world;
  const nlohmann::json link =
      world >= 2 ? nlohmann::json{{"latency_s", lat}, {"bytes_per_s", link_bw}, {"on_cores", true}}
                 : nlohmann::json{{"latency_s", 1e-6}, {"bytes_per_s", 1e10}, {"on_cores", true}};
  j["intra_node"] = link;
  j["inter_node"] = link;
  j["provenance"] = {
      {"machine", cat(host, ": ", cpu_model(), ", ", u.sysname, " ", u.release)},
      {"gemm_flops", cat(measured, ": oneDNN/BLAS GEMMs of one layer of ", o.config, " at ", tokens,
                         " tokens (QKV, O, gate/up, down, an LM-head block), total "
                         "flops over the sum of median times")},
      {"attn_fwd_flops", cat(measured, ": causal flash attention over S = ", o.attn_seq, ", ", n_h,
                             "/", n_kv, " heads of ", d, ", 4·d flop per visible pair")},
      {"attn_bwd_flops", cat(measured, ", the backward: 10·d flop per visible pair")},
      {"memory_bytes_per_s", cat(measured, ": y += x over 64 MiB fp32 arrays (12 bytes/element)")},
      {"kernel_launch_s", cat(measured, ": y += x over 16 elements")},
      {"exp_per_s", cat(measured, ": one cross-entropy block update, 512 rows x 4096 logits")},
      {"ranks_per_node", "the ranks calibrate ran with"},
      {"intra_node", world >= 2
                         ? cat(measured,
                               ": half an MPI ping-pong between ranks 0 and 1 "
                               "(8 bytes: latency; 16 MiB: bandwidth); on_cores: shared-memory MPI "
                               "copies with the ranks' own cores")
                         : std::string("assumed (one rank: no link measured)")},
      {"inter_node", "the same link (one host); pass --emulate-link to plan for another"}};
  std::ofstream f(o.out);
  if (!f) fail("cannot write ", o.out);
  f << j.dump(1) << "\n";
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}

}  // namespace origami::plan
