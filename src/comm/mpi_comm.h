// The MPI communicator and the process-wide settings of its transfers (an emulated link, the
// progress thread, the time blocked in waits). Declared without MPI types; comm/mesh.h builds a
// layout's communicators from it.
#pragma once
#include <memory>
#include <string>

#include "comm/comm.h"

namespace origami {

// MPI_COMM_WORLD's size, or 1 when MPI is not initialised (a plain, non-mpirun start).
int mpi_world_size();

// A communicator over MPI_COMM_WORLD, one duplicated MPI communicator per traffic class.
// Requires MPI to be initialised.
std::unique_ptr<Comm> make_mpi_comm();

// --emulate-link GBPS[,LATENCY_US]: every transfer this rank receives completes no earlier than
// latency + bytes/bandwidth after it is posted, on one inbound link per rank shared by all its
// communicators (transfers queue on it); waiting sleeps. gbps = 0 turns it off.
void set_emulated_link(double gbps, double latency_us);
// --progress-thread US: a thread that tests every outstanding operation every US microseconds, so
// transfers advance while the caller computes (OpenMPI has no asynchronous progress of its own).
// 0 stops it; call with 0 before MPI_Finalize. Needs MPI_THREAD_MULTIPLE (notes and stays off
// otherwise) and MPI. Returns whether a thread runs. Results do not depend on it: reductions
// keep their fixed order whichever thread completes them.
bool set_progress_thread(double interval_us);
// Seconds this process has spent blocked in Request::wait() (exposed communication).
double comm_blocked_seconds();
// --timeout SECONDS: a wait or barrier that has not completed after this long (a rank stopped,
// died or lost its link) prints what it waited for (category, layer, phase) and aborts the job
// (exit 3). 0: no limit.
void set_comm_timeout(double seconds);
// For communicators outside this file (NCCL's watchdog, cuda/nccl_comm.cpp): --timeout (0: none);
// the abort on its expiry, naming what was waited for `waited_s` seconds. (MPI_Barrier bounded
// by it: bounded_barrier, comm/mpi_wait.h.)
double comm_timeout();
[[noreturn]] void comm_timed_out(const std::string& what, double waited_s);
// Prints "origami: error on rank R: <message>; ending the job" and aborts the job (exit 3): a
// communicator's failure that no agreement can wait for (comm_timed_out, NCCL's watchdog).
[[noreturn]] void comm_abort(const std::string& message);
// Whether `flag` is set on any rank of the job (a logical or over MPI_COMM_WORLD, on a
// communicator of its own: not a transfer of the engines, not in their byte counts). Collective:
// every rank calls it at the same point. Without MPI: flag.
bool any_rank(bool flag);

}  // namespace origami
