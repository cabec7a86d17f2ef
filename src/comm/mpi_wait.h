// MPI waits bounded by --timeout (comm/mpi_comm.h: set_comm_timeout), for code that holds MPI
// communicators of its own (the NCCL communicator's bootstrap communicator).
#pragma once
#include <mpi.h>

namespace origami {

// MPI_Barrier on c; past --timeout it names the barrier and ends the job (exit 3).
void bounded_barrier(MPI_Comm c);

}  // namespace origami
