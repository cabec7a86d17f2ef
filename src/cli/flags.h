// The flags several commands share, declared and parsed in one place: the schedule's (train,
// grad, plan and bench take the same ones, with the same help and the same checks) and where a
// run executes (train, grad, generate).
#pragma once
#include <string>

#include "cli/args.h"
#include "model/model.h"
#include "parallel/layout.h"

namespace origami {

// --recompute, --attn-buckets, --keep-attn-weights, --fused-mlp-recompute,
// --sp-comm, --tp-sequence-parallel (with `both`: on | off | both, a row each in plan and bench).
void schedule_flags(Args& a, bool both = false);
struct ScheduleFlags {
  Recompute recompute = Recompute::none;
  bool tp_sp_both = false;         // --tp-sequence-parallel both
  bool mlp_transport_all = false;  // --mlp-transport all (plan): every transport for tsp rows
  bool sp_comm_all = false;        // --sp-comm all (plan): every method for the layouts taking it
};
// Into p's schedule fields; the rest of the choice is returned. `both` as declared.
ScheduleFlags schedule_options(const Args& a, ParallelOptions& p, bool both = false);
// The schedule flags given, as command-line arguments for a child run (bench's train runs; not
// --tp-sequence-parallel, --mlp-transport and --sp-comm, which bench sets per row).
std::string schedule_args(const Args& a);

// --device, --comm; with `transfers` also --no-overlap, --emulate-link, --progress-thread.
void runtime_flags(Args& a, bool transfers);
// (The CUDA and NCCL hooks, RuntimeOptions::use_cuda and make_nccl, are the entry point's to set:
// it is built once per binary.)
void runtime_options(const Args& a, RuntimeOptions& p, bool transfers);

// --layout's help, from the registered layouts (parallel/layouts.cpp).
std::string layout_help();

}  // namespace origami
