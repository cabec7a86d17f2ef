// NCCL communicators bootstrapped over MPI: rank 0 of an MPI communicator makes the NCCL unique
// id, MPI_Bcast hands it to every rank, each rank initialises its NCCL communicator on its device
// (local rank modulo the node's devices). Ranks first agree whether every one of them has a device
// of its own, so they either all initialise or all skip (never some waiting in NCCL for others).
#pragma once
#include <mpi.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "comm/comm.h"
#include "comm/mesh.h"

namespace origami::cuda {

struct DeviceCensus {
  bool all_have_device = false;  // every rank sees at least one device
  bool one_per_rank = false;     // no two ranks of a node would share a device
  int min_devices = 0;           // fewest devices any rank sees
};
// Collective over `comm`.
DeviceCensus device_census(MPI_Comm comm);

// The NCCL id made by rank 0 of `comm`, broadcast to all (collective). Needs no device.
ncclUniqueId bootstrap_id(MPI_Comm comm);

class NcclComm {
 public:
  // Collective over `comm`; selects device (local rank % devices) and initialises NCCL (blocking).
  explicit NcclComm(MPI_Comm comm);
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;
  ncclComm_t get() const { return c_; }
  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  ncclComm_t c_ = nullptr;
  int rank_ = 0, size_ = 1;
};

void check_nccl(ncclResult_t r, const char* what);
std::string nccl_version();

// origami's communicator (comm/comm.h) over NCCL, for device buffers: one NCCL communicator and
// one stream per traffic class (ncclCommSplit of one bootstrapped over `comm`), so classes never
// queue behind each other. An operation first makes its class stream wait for the work already
// on current_stream() (its inputs), then runs there; Request::wait() makes current_stream() wait
// for it (no host block), test() asks whether it has finished. Point-to-point operations posted
// between begin_group() and end_group() are fused (ncclGroupStart/End), as a ring step's send and
// receive must be. Bytes are recorded with the MPI communicator's formulas (comm.h); the seconds
// of a record are left 0 (they would need a host wait). barrier() waits for every class stream.
std::unique_ptr<Comm> make_nccl_comm(MPI_Comm comm);
// The same for a layout's axes (--comm nccl, a CommMaker): the first call checks, collectively over
// the world, that every rank has a device and that no two share one (unless
// ORIGAMI_NCCL_SHARE_GPU is set: each rank then needs its own NCCL_HOSTID), and refuses otherwise.
// Host buffers (the engines' token ids, counts and loss sums) travel through device copies; such
// an operation's wait() blocks the host until the result is back.
std::unique_ptr<Comm> make_nccl_layout_comm(MPI_Comm comm);

}  // namespace origami::cuda
