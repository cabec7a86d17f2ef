// NCCL bootstrapped over MPI, run under mpirun. Every rank: the id rank 0 made arrives intact on
// all ranks (needs no device). Then the ranks agree: if any has no device, or two would share one
// (NCCL refuses "Duplicate GPU"; set ORIGAMI_NCCL_SHARE_GPU=1 to try anyway), all exit 77 together
// (CTest: Skipped); else they initialise NCCL and check an all-reduce and an all-gather.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/nccl_comm.h"
#include "cuda/runtime.h"

using namespace origami::cuda;

namespace {
int finish(int code) {
  MPI_Finalize();
  return code;
}
}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  try {
    const ncclUniqueId id = bootstrap_id(MPI_COMM_WORLD);
    std::vector<char> all(sizeof id * size);
    MPI_Allgather(&id, sizeof id, MPI_BYTE, all.data(), sizeof id, MPI_BYTE, MPI_COMM_WORLD);
    const ncclUniqueId zero{};
    bool ok = std::memcmp(&id, &zero, sizeof id) != 0;
    for (int r = 0; r < size; ++r)
      ok = ok && std::memcmp(all.data() + r * sizeof id, &id, sizeof id) == 0;
    int all_ok = 0, mine = ok ? 1 : 0;
    MPI_Allreduce(&mine, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_ok) {
      if (rank == 0) std::printf("FAILED: the NCCL id differs between ranks or is empty\n");
      return finish(1);
    }
    if (rank == 0)
      std::printf("NCCL %s: id from rank 0 reached all %d ranks\n", nccl_version().c_str(), size);

    const DeviceCensus c = device_census(MPI_COMM_WORLD);
    const bool share = std::getenv("ORIGAMI_NCCL_SHARE_GPU") != nullptr;
    if (!c.all_have_device || (!c.one_per_rank && !share)) {
      if (rank == 0)
        std::printf("SKIPPED (all %d ranks): %s\n", size,
                    !c.all_have_device ? "a rank has no CUDA device"
                                       : "ranks would share a GPU (NCCL refuses duplicate GPUs)");
      return finish(kSkipNoDevice);
    }
    NcclComm comm(MPI_COMM_WORLD);
    const int n = 1 << 20;
    std::vector<float> h(n);
    for (int i = 0; i < n; ++i) h[i] = static_cast<float>(rank + 1) * (i % 7);
    DBuf<float> x(n, origami::Cat::comm), g(int64_t(n) * size, origami::Cat::comm);
    to_device(x.get(), h.data(), n * sizeof(float));
    check_nccl(ncclAllReduce(x.get(), x.get(), n, ncclFloat, ncclSum, comm.get(), current_stream()),
               "all-reduce");
    check_nccl(ncclAllGather(x.get(), g.get(), n, ncclFloat, comm.get(), current_stream()),
               "all-gather");
    std::vector<float> out(n), gathered(int64_t(n) * size);
    to_host(out.data(), x.get(), n * sizeof(float));
    to_host(gathered.data(), g.get(), gathered.size() * sizeof(float));
    const float tri = size * (size + 1) / 2.f;
    int bad = 0;
    for (int i = 0; i < n; ++i) bad += out[i] != tri * (i % 7);
    for (int r = 0; r < size; ++r)
      for (int i = 0; i < n; i += 4099) bad += gathered[int64_t(r) * n + i] != tri * (i % 7);
    int total = 0;
    MPI_Allreduce(&bad, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
      std::printf("%s: NCCL all-reduce + all-gather over %d ranks, %d wrong values\n",
                  total ? "FAILED" : "OK", size, total);
    return finish(total ? 1 : 0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 1;
}
