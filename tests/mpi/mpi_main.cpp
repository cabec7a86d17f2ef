// GoogleTest main for tests that run on every rank under mpirun: MPI around RUN_ALL_TESTS, and
// the exit code is non-zero on every rank if any rank failed. ORIGAMI_TEST_PROGRESS_US=N runs
// the whole suite with the communicator's progress thread polling every N microseconds.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>

#include "comm/comm.h"
#include "comm/mpi_comm.h"

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  if (const char* us = std::getenv("ORIGAMI_TEST_PROGRESS_US"))
    if (!origami::set_progress_thread(std::atof(us))) {
      std::fprintf(stderr, "progress thread requested but not started\n");
      return 1;
    }
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& l = ::testing::UnitTest::GetInstance()->listeners();
    delete l.Release(l.default_result_printer());
  }
  int bad = RUN_ALL_TESTS() != 0, any = 0;
  MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  origami::set_progress_thread(0);
  MPI_Finalize();
  return any;
}
