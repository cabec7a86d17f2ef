// `origami calibrate --out FILE`: measures this machine for `plan --time` (plan/hardware.h). The
// GEMM shapes are the ones the engines issue: dry runs of --layout at --seq (one training step
// of every rank, plan/dry_run.h) collect every distinct (transposes, m, n, k) with its share of
// a step's flops, and each is timed in fp32 and bf16. Causal flash attention forward and backward
// at a ladder of lengths covering the calls those runs make, memory bandwidth, exponentials, a
// kernel call's fixed cost and, under mpirun with two or more ranks, the MPI link between ranks 0
// and 1. Every quantity is measured in --rounds interleaved rounds (each the median of --reps
// calls after a warm-up) and the profile keeps the median over rounds, and their spread: one
// round on a shared machine can be 20-50% off. Every rank measures at once (as a run's ranks
// share the node); rank 0 writes the profile, each number with its provenance.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace origami::plan {

struct CalibrateOptions {
  std::string config = "configs/small.json", out;
  std::vector<int64_t> seqs = {1024, 4096};  // the runs to predict
  std::vector<std::string> layouts;          // empty: those of this world size (default_layouts)
  int64_t micro_batch = 1;
  int64_t attn_seq = 4096;        // the longest causal attention measured
  bool fp32 = true, bf16 = true;  // the element types measured (--dtype)
  int rounds = 5;
  int reps = 3;
};
int run_calibrate(const CalibrateOptions& o);
// The layouts calibrate collects shapes from by default for `world` ranks.
std::vector<std::string> default_layouts(int world);

}  // namespace origami::plan
