// origami's communicators for device buffers, under mpirun: `nccl` (cuda/nccl_comm.h:
// make_nccl_comm) or `staged` (comm/staged_comm.h: pinned host staging + the MPI communicator):
// every operation of the interface against values computed on the host (integers, so sums are
// exact), a ring step's send and receive fused by begin_group/end_group, all-to-all-v with
// uneven counts, a bitwise rerun of an all-reduce of random floats, and the bytes each operation
// records against comm.h's formulas. The ranks agree first: without a device each (or, for nccl,
// with two ranks on one GPU unless ORIGAMI_NCCL_SHARE_GPU is set) they all exit 77 (Skipped).
// usage: test_device_comm nccl|staged
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "comm/mpi_comm.h"
#include "comm/staged_comm.h"
#include "cuda/backend.h"
#include "cuda/runtime.h"
#ifdef ORIGAMI_WITH_NCCL
#include "cuda/nccl_comm.h"
#endif

using namespace origami;
using namespace origami::cuda;

namespace {

int g_fail = 0, g_rank = 0;
void check(bool ok, const std::string& what) {
  if (!ok) {
    ++g_fail;
    std::printf("rank %d FAILED: %s\n", g_rank, what.c_str());
  }
}

template <class T>
DBuf<T> up(const std::vector<T>& h) {
  DBuf<T> d(static_cast<int64_t>(h.size()), Cat::comm);
  to_device(d.get(), h.data(), h.size() * sizeof(T));
  return d;
}
template <class T>
std::vector<T> down(const DBuf<T>& d) {
  std::vector<T> h(static_cast<size_t>(d.size()));
  to_host(h.data(), d.get(), h.size() * sizeof(T));
  return h;
}

int finish(int code) {
  MPI_Finalize();
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const int r = g_rank, D = size;
  const std::string kind = argc > 1 ? argv[1] : "";
  if (kind != "nccl" && kind != "staged") {
    if (r == 0) std::printf("usage: test_device_comm nccl|staged\n");
    return finish(2);
  }
  try {
    // Every rank sees a device? Agreed before anything else touches one.
    int mine = device_count() > 0 ? 1 : 0, all_have = 0;
    MPI_Allreduce(&mine, &all_have, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    bool skip = !all_have;
    const char* why = "a rank has no CUDA device";
#ifdef ORIGAMI_WITH_NCCL
    if (!skip && kind == "nccl") {
      const DeviceCensus census = device_census(MPI_COMM_WORLD);
      skip = !census.one_per_rank && std::getenv("ORIGAMI_NCCL_SHARE_GPU") == nullptr;
      why = "ranks would share a GPU (NCCL refuses duplicates)";
    }
#else
    if (kind == "nccl") skip = true, why = "built without NCCL";
#endif
    if (skip) {
      if (r == 0) std::printf("SKIPPED (all %d ranks): %s\n", D, why);
      return finish(kSkipNoDevice);
    }
    // NCCL's own device memory (its buffers are not origami's allocations): the device's used
    // memory before the communicator, after it, and after the operations below (connections are
    // set up lazily), between barriers, divided by the ranks sharing the GPU (NCCL allocates the
    // same on each). A measurement, printed; not a check.
    const int sharing = (D + device_count() - 1) / device_count();  // one node here
    auto used = [&] {
      ORIGAMI_CUDA_CHECK(cudaDeviceSynchronize());
      MPI_Barrier(MPI_COMM_WORLD);
      size_t free_b = 0, total_b = 0;
      ORIGAMI_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
      // less what the stream-ordered pool holds for origami's own buffers (kept after a free)
      int dev = 0;
      cudaMemPool_t pool;
      uint64_t reserved = 0;
      ORIGAMI_CUDA_CHECK(cudaGetDevice(&dev));
      ORIGAMI_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
      ORIGAMI_CUDA_CHECK(
          cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
      MPI_Barrier(MPI_COMM_WORLD);
      return static_cast<double>(total_b - free_b) - static_cast<double>(reserved) * sharing;
    };
    const double used0 = used();
    std::unique_ptr<Comm> comm;
#ifdef ORIGAMI_WITH_NCCL
    if (kind == "nccl") comm = make_nccl_comm(MPI_COMM_WORLD);
#endif
    const double used1 = kind == "nccl" ? used() : used0;
    if (kind == "staged") {  // stages through the selected device's pinned host memory
      use_cuda();
      comm = make_staged_comm(make_mpi_comm());
    }
    Comm& c = *comm;
    auto last_bytes = [&] { return c.records().back().bytes; };

    // all-reduce, three element types (odd length)
    const int64_t n = 1000003;
    {
      std::vector<float> h(n);
      for (int64_t i = 0; i < n; ++i) h[i] = static_cast<float>((r + 1) * (i % 13 - 6));
      auto x = up(h);
      c.iallreduce(x.get(), n, Traffic::grads).wait();
      check(last_bytes() == 2 * (D - 1) * n * 4 / D, "all-reduce bytes");
      auto y = down(x);
      bool ok = true;
      for (int64_t i = 0; i < n; ++i)
        ok = ok && y[i] == static_cast<float>(D * (D + 1) / 2 * (i % 13 - 6));
      check(ok, "all-reduce float values");
      std::vector<double> hd = {1.5 * (r + 1), -2.0};
      std::vector<int64_t> hi = {int64_t(r) << 40, 7};
      auto xd = up(hd);
      auto xi = up(hi);
      c.iallreduce(xd.get(), 2, Traffic::other).wait();
      c.iallreduce(xi.get(), 2, Traffic::other).wait();
      const auto yd = down(xd);
      const auto yi = down(xi);
      check(yd[0] == 1.5 * D * (D + 1) / 2 && yd[1] == -2.0 * D, "all-reduce double");
      check(yi[0] == (int64_t(D) * (D - 1) / 2) << 40 && yi[1] == 7 * D, "all-reduce int64");
    }
    // all-gather in place (send = own block of recv), broadcast, reduce, reduce-scatter
    {
      const int64_t m = 4099;
      std::vector<int32_t> h(static_cast<size_t>(D * m), -1);
      for (int64_t i = 0; i < m; ++i) h[r * m + i] = r * 100000 + static_cast<int32_t>(i);
      auto g = up(h);
      c.iallgather(g.get() + r * m, g.get(), m * 4, Traffic::kv).wait();
      check(last_bytes() == (D - 1) * m * 4, "all-gather bytes");
      auto y = down(g);
      bool ok = true;
      for (int q = 0; q < D; ++q)
        for (int64_t i = 0; i < m; ++i) ok = ok && y[q * m + i] == q * 100000 + i;
      check(ok, "all-gather values");

      std::vector<float> b(m, r == D - 1 ? 3.f : 0.f);
      auto bb = up(b);
      c.ibcast(bb.get(), m * 4, D - 1, Traffic::attn_weights).wait();
      check(last_bytes() == (r == D - 1 ? 0 : m * 4), "broadcast bytes");
      bool bok = true;
      for (float v : down(bb)) bok = bok && v == 3.f;
      check(bok, "broadcast values");

      const int root = 1 % D;
      std::vector<float> hs(m, static_cast<float>(r + 1));
      auto s = up(hs);
      DBuf<float> out(m, Cat::comm);
      c.ireduce(s.get(), out.get(), m, root, Traffic::grads).wait();
      check(last_bytes() == (r == root ? (D - 1) * m * 4 : 0), "reduce bytes");
      if (r == root) {
        bool rok = true;
        for (float v : down(out)) rok = rok && v == static_cast<float>(D * (D + 1) / 2);
        check(rok, "reduce values at the root");
      }

      std::vector<float> rs(static_cast<size_t>(D * m));
      for (int q = 0; q < D; ++q)
        for (int64_t i = 0; i < m; ++i)
          rs[q * m + i] = static_cast<float>((r + 1) * (q * 7 + i % 5));
      auto rsd = up(rs);
      DBuf<float> mine(m, Cat::comm);
      c.ireduce_scatter(rsd.get(), mine.get(), m, Traffic::kv).wait();
      check(last_bytes() == (D - 1) * m * 4, "reduce-scatter bytes");
      bool sok = true;
      const auto ym = down(mine);
      for (int64_t i = 0; i < m; ++i)
        sok = sok && ym[i] == static_cast<float>(D * (D + 1) / 2 * (r * 7 + i % 5));
      check(sok, "reduce-scatter values");
    }
    // a ring step: send to the next rank, receive from the previous, fused
    {
      const int64_t m = 1 << 18;
      std::vector<float> h(m, static_cast<float>(r));
      auto s = up(h);
      DBuf<float> rcv(m, Cat::comm);
      c.begin_group();
      Request a = c.isend(s.get(), m * 4, (r + 1) % D, 0, Traffic::mlp_weights);
      Request b = c.irecv(rcv.get(), m * 4, (r + D - 1) % D, 0, Traffic::mlp_weights);
      c.end_group();
      a.wait(), b.wait();
      check(last_bytes() == m * 4, "ring receive bytes");
      bool ok = true;
      for (float v : down(rcv)) ok = ok && v == static_cast<float>((r + D - 1) % D);
      check(ok, "ring step values (grouped send/receive)");
    }
    // all-to-all-v with uneven counts: rank r sends (r + q + 1)·8 bytes to rank q
    {
      std::vector<int64_t> sb(D), so(D), rb(D), ro(D);
      int64_t st = 0, rt = 0;
      for (int q = 0; q < D; ++q) {
        sb[q] = (r + q + 1) * 8, so[q] = st, st += sb[q];
        rb[q] = (q + r + 1) * 8, ro[q] = rt, rt += rb[q];
      }
      std::vector<int32_t> hs(static_cast<size_t>(st / 4));
      for (int q = 0; q < D; ++q)
        for (int64_t i = 0; i < sb[q] / 4; ++i)
          hs[so[q] / 4 + i] = r * 1000 + q * 10 + int32_t(i % 10);
      auto s = up(hs);
      DBuf<int32_t> rv(rt / 4, Cat::comm);
      c.ialltoallv(s.get(), sb.data(), so.data(), rv.get(), rb.data(), ro.data(),
                   Traffic::embed_head)
          .wait();
      int64_t want = 0;
      for (int q = 0; q < D; ++q)
        if (q != r) want += rb[q];
      check(last_bytes() == want, "all-to-all-v bytes");
      const auto y = down(rv);
      bool ok = true;
      for (int q = 0; q < D; ++q)
        for (int64_t i = 0; i < rb[q] / 4; ++i)
          ok = ok && y[ro[q] / 4 + i] == q * 1000 + r * 10 + int32_t(i % 10);
      check(ok, "all-to-all-v values");
    }
    // reruns: an all-reduce of random floats twice gives the same bits
    {
      std::mt19937 gen(11 + r);
      std::normal_distribution<float> nd;
      std::vector<float> h(1 << 20);
      for (auto& v : h) v = nd(gen);
      auto a = up(h), b = up(h);
      c.iallreduce(a.get(), a.size(), Traffic::grads).wait();
      c.iallreduce(b.get(), b.size(), Traffic::grads).wait();
      const auto ya = down(a), yb = down(b);
      check(std::memcmp(ya.data(), yb.data(), ya.size() * 4) == 0, "all-reduce rerun bitwise");
    }
    c.barrier();
    if (kind == "nccl") {
      const double used2 = used();
      if (r == 0)
        std::printf(
            "NCCL device memory per rank (%d rank(s) per GPU, %d traffic classes): %.1f MiB after "
            "the communicator, %.1f MiB after the operations\n",
            sharing, kNumTraffic, (used1 - used0) / sharing / 1048576.0,
            (used2 - used0) / sharing / 1048576.0);
    }
  } catch (const std::exception& e) {
    std::printf("rank %d FAILED: %s\n", r, e.what());
    ++g_fail;
  }
  int all = 0;
  MPI_Allreduce(&g_fail, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (r == 0)
    std::printf("%s %s: %d failed check(s) over %d ranks\n", kind.c_str(),
                all ? "FAILED" : "PASSED", all, D);
  return finish(all ? 1 : 0);
}
