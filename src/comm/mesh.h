// A layout's communicators (tsp-spec §9), made over MPI: the one header of comm/ that names MPI
// types (a CommMaker takes an MPI communicator), so the interface (comm.h) stays free of <mpi.h>.
#pragma once
#include <mpi.h>

#include <memory>

#include "comm/comm.h"

namespace origami {

// The axes of a layout (tsp-spec §9): world rank = dp_i·M + i with M the model degree, and inside
// a replica i = sp_i·T + tp_i. `model` spans the M ranks of one replica (consecutive world ranks),
// `dp` the replicas holding the same shard, `tp` the T consecutive ranks of a TP group and `sp`
// the Σ = M/T ranks of a replica with the same tp_i. Without MPI every one is a one-rank
// communicator.
struct Mesh {
  std::unique_ptr<Comm> model, dp, tp, sp;
  int world_rank = 0;
};
// A communicator over (a duplicate of) an MPI communicator: the MPI one by default; the NCCL one
// (cuda/nccl_comm.h) for --comm nccl. The caller frees its MPI communicator afterwards.
using CommMaker = std::unique_ptr<Comm> (*)(MPI_Comm);
Mesh make_mesh(int model_degree, int tp = 1, CommMaker make = nullptr);

}  // namespace origami
