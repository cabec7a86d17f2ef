// `origami plan`: the memory model and the communication formulas for several layouts and
// sequence lengths, as tables (or JSON, or a gnuplot PNG), with the TSP-vs-TP crossovers.
#pragma once
#include <string>
#include <vector>

#include "model/model.h"
#include "parallel/layout.h"
#include "plan/dry_run.h"

namespace origami::plan {

struct PlanOptions {
  std::string config, plot;
  std::vector<int64_t> seqs;
  std::vector<std::string> layouts;
  int64_t micro_batch = 1;
  DType dtype = DType::f32;
  Recompute recompute = Recompute::none;
  ParallelOptions par;
  double device_gib = 0;  // 0: no budget
  bool json = false;
  bool tp_sp_both = false;         // tp layouts with and without sequence parallelism
  bool mlp_transport_all = false;  // tsp layouts once per --mlp-transport
  bool sp_comm_all = false;        // sp layouts (tp = 1) once per --sp-comm
  int threads = 1;
  int64_t new_tokens = 0;  // > 0: also the inference table (generate with this many new tokens)
  std::string hardware;    // --time --hardware FILE: simulated step times (plan/hardware.h)
  std::string trace;       // --trace FILE: the simulated timeline of the first (layout, S)
  int64_t devices = 0;     // --devices N: DP fills the rest (N / the layout's model degree)
  bool recommend = false;  // --recommend: rank the layouts that fit by predicted throughput
  bool dense_attention = false, no_zigzag = false;  // counterfactual attention charges
};

int run_plan(const PlanOptions& o);

}  // namespace origami::plan
