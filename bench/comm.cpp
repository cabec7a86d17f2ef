// MpiComm's collectives against OpenMPI's own, in the same run: the engines post all-gather,
// reduce-scatter and all-reduce through MpiComm (the reductions staged by hand so that every rank
// sums in rank order, tsp-spec §7); MPI_Allgather, MPI_Reduce_scatter_block and MPI_Allreduce
// over the same buffers are the baseline. Per kind and size: median, 10th and 90th percentile of
// the received bytes' rate (GB/s), blocking calls, ranks lined up by a barrier before each.
//
//   mpirun -np 2 build/bench/bench_comm [--reps N] [--warmup N] [--progress-thread US]
//                                       [--mib A,B,...] [--raw]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "comm/direct.h"
#include "comm/mpi_comm.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Pct {
  double p10, p50, p90;
};
Pct percentiles(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  const auto at = [&](double q) { return t[static_cast<size_t>(q * (t.size() - 1) + 0.5)]; };
  return {at(0.1), at(0.5), at(0.9)};
}

// Every rank's slowest time of each rep (the collective's time is its slowest rank's).
std::vector<double> timed(int reps, const std::function<void()>& f) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto a = Clock::now();
    f();
    double s = std::chrono::duration<double>(Clock::now() - a).count();
    MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    t.push_back(s);
  }
  return t;
}

// "A,B,...": positive numbers; empty when malformed.
std::vector<double> sizes(const char* p) {
  std::vector<double> out;
  for (;;) {
    char* end = nullptr;
    const double v = std::strtod(p, &end);
    if (end == p || !(v > 0) || (*end && *end != ',')) return {};
    out.push_back(v);
    if (!*end) return out;
    p = end + 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  int reps = 30, warmup = 10;
  bool raw = false;
  double progress_us = 50;
  std::vector<double> mib = {1, 4, 16, 64};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool more = i + 1 < argc;
    if (a == "--reps" && more) {
      reps = std::atoi(argv[++i]);
    } else if (a == "--warmup" && more) {
      warmup = std::atoi(argv[++i]);
    } else if (a == "--raw") {
      raw = true;
    } else if (a == "--progress-thread" && more) {
      progress_us = std::atof(argv[++i]);
    } else if (a == "--mib" && more && !(mib = sizes(argv[++i])).empty()) {
    } else {
      if (rank == 0)
        std::fprintf(
            stderr,
            "usage: mpirun -np D bench_comm [--reps N (30)] [--warmup N (10 calls of each, "
            "not timed)] [--progress-thread US (50; 0: off)] [--mib A,B,... (1,4,16,64: "
            "MiB a rank)] [--raw (every MpiComm sample, GB/s)]\n");
      MPI_Finalize();
      return a == "--help" ? 0 : 2;
    }
  }
  if (world < 2 || reps < 3) {
    if (rank == 0) std::fprintf(stderr, "bench_comm: needs >= 2 ranks and --reps >= 3\n");
    MPI_Finalize();
    return 2;
  }
  origami::set_progress_thread(progress_us);
  auto comm = origami::make_mpi_comm();
  using origami::Traffic;
  if (rank == 0) {
    char pt[32] = "off";
    if (progress_us > 0) std::snprintf(pt, sizeof pt, "every %g us", progress_us);
    std::printf(
        "# bench_comm: %d ranks, %d reps after %d warm-up calls, progress thread %s; GB/s "
        "of received bytes (p10 / median / p90), the slowest rank's time\n",
        world, reps, warmup, pt);
    std::printf(
        "| MiB a rank | kind | MpiComm | MPI | MpiComm / MPI (median) |\n|---|---|---|---|---|\n");
  }
  for (double mb : mib) {
    const int64_t floats = static_cast<int64_t>(mb * (1 << 20) / 4) / world * world;
    const int64_t blk = floats / world;
    std::vector<float> in(static_cast<size_t>(floats)), out(in.size()), buf(in.size());
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 977) * 1e-3f;
    struct Kind {
      const char* name;
      double bytes;
      std::function<void()> ours, theirs;
    };
    const Kind kinds[] = {
        {"all-gather", static_cast<double>(origami::direct::allgather(world, blk * 4)),
         [&] { comm->iallgather(in.data(), out.data(), blk * 4, Traffic::other).wait(); },
         [&] {
           MPI_Allgather(in.data(), static_cast<int>(blk * 4), MPI_BYTE, out.data(),
                         static_cast<int>(blk * 4), MPI_BYTE, MPI_COMM_WORLD);
         }},
        {"reduce-scatter", static_cast<double>(origami::direct::reduce_scatter(world, blk * 4)),
         [&] { comm->ireduce_scatter(in.data(), out.data(), blk, Traffic::other).wait(); },
         [&] {
           MPI_Reduce_scatter_block(in.data(), out.data(), static_cast<int>(blk), MPI_FLOAT,
                                    MPI_SUM, MPI_COMM_WORLD);
         }},
        {"all-reduce", static_cast<double>(origami::direct::allreduce(world, floats * 4)),
         [&] {
           std::memcpy(buf.data(), in.data(), in.size() * 4);
           comm->iallreduce(buf.data(), floats, Traffic::other).wait();
         },
         [&] {
           std::memcpy(buf.data(), in.data(), in.size() * 4);
           MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(floats), MPI_FLOAT, MPI_SUM,
                         MPI_COMM_WORLD);
         }},
    };
    for (const Kind& k : kinds) {
      // Warm-up: a buffer the heap has not yet held faults its pages in on first touch, ~11 us a
      // page on the VMs here (0.4 GB/s), and the heap takes some calls to settle (docs/results.md).
      for (int w = 0; w < warmup; ++w) k.ours(), k.theirs();
      // Interleaved in blocks, so that a drift of the host lands on both.
      std::vector<double> a, b;
      for (int r = 0; r < reps; r += 5) {
        const int n = std::min(5, reps - r);
        for (double t : timed(n, k.ours)) a.push_back(k.bytes / t / 1e9);
        for (double t : timed(n, k.theirs)) b.push_back(k.bytes / t / 1e9);
      }
      if (rank == 0 && raw) {
        for (double v : a) std::printf(" %.2f", v);
        std::printf("  <- %s ours\n", k.name);
      }
      const Pct pa = percentiles(a), pb = percentiles(b);
      if (rank == 0)
        std::printf("| %g | %s | %.2f / %.2f / %.2f | %.2f / %.2f / %.2f | %.2f |\n", mb, k.name,
                    pa.p10, pa.p50, pa.p90, pb.p10, pb.p50, pb.p90, pa.p50 / pb.p50);
      std::fflush(stdout);
    }
  }
  comm.reset();
  origami::set_progress_thread(0);
  MPI_Finalize();
  return 0;
}
