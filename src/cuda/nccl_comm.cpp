#include "cuda/nccl_comm.h"

#include <cstring>

#include "core/error.h"
#include "cuda/runtime.h"

namespace origami::cuda {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("NCCL ", what, " failed: ", ncclGetErrorString(r));
}

std::string nccl_version() {
  int v = 0;
  ncclGetVersion(&v);
  return cat(v / 10000, ".", v / 100 % 100, ".", v % 100);
}

namespace {
// The ranks of `comm` on this node, in `comm`'s order; the caller frees it.
MPI_Comm node_comm(MPI_Comm comm) {
  MPI_Comm node;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  return node;
}
}  // namespace

DeviceCensus device_census(MPI_Comm comm) {
  MPI_Comm node = node_comm(comm);
  int node_size = 1;
  MPI_Comm_size(node, &node_size);
  MPI_Comm_free(&node);
  const int n = device_count();
  int mine[2] = {n, n >= node_size ? 1 : 0}, all[2] = {0, 0};
  MPI_Allreduce(mine, all, 2, MPI_INT, MPI_MIN, comm);
  DeviceCensus c;
  c.min_devices = all[0];
  c.all_have_device = all[0] > 0;
  c.one_per_rank = all[1] == 1;
  return c;
}

ncclUniqueId bootstrap_id(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  int ok = 1;
  if (rank == 0) ok = ncclGetUniqueId(&id) == ncclSuccess;
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  ORIGAMI_CHECK(ok, "NCCL: rank 0 could not make a unique id (ncclGetUniqueId)");
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm);
  return id;
}

NcclComm::NcclComm(MPI_Comm comm) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
  const int n = device_count();
  ORIGAMI_CHECK(n > 0, "NCCL communicator on rank ", rank_, ": no CUDA device");
  MPI_Comm node = node_comm(comm);
  int local = 0;
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  ORIGAMI_CUDA_CHECK(cudaSetDevice(local % n));
  const ncclUniqueId id = bootstrap_id(comm);
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  check_nccl(ncclCommInitRankConfig(&c_, size_, id, rank_, &cfg), "ncclCommInitRankConfig");
}

NcclComm::~NcclComm() {
  if (c_) ncclCommDestroy(c_);
}

}  // namespace origami::cuda
