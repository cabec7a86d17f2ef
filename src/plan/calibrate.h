// `origami calibrate --out FILE`: measures this machine for `plan --time` (plan/hardware.h): GEMM
// rates over the shapes one layer of --config issues at --tokens, causal flash attention forward
// and backward, memory bandwidth, a kernel call's fixed cost and, under mpirun with two or more
// ranks, the MPI link between ranks 0 and 1. Every rank measures at once (as a run's ranks share
// the node); rank 0 writes the profile, each number with its provenance.
#pragma once
#include <cstdint>
#include <string>

namespace origami::plan {

struct CalibrateOptions {
  std::string config = "configs/small.json", out;
  int64_t tokens = 512;     // GEMM rows: B·S/D of the runs to predict
  int64_t attn_seq = 1024;  // causal attention length
  int reps = 5;
};
int run_calibrate(const CalibrateOptions& o);

}  // namespace origami::plan
