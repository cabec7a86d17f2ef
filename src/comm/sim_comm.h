// The communicators of the dry run (plan/dry_run.h), where the ranks of a layout run as threads of
// one process on the meta device (kernels/meta.h). No transport: an operation completes when every
// rank it involves has posted it (a receive: when its send is posted), and only the host buffers
// among its arguments get data (token ids, counts, scalar sums, summed in rank order as MpiComm
// does); meta tensors move nothing. Each operation records the bytes MpiComm records and holds the
// scratch MpiComm's fixed-order reductions hold, for as long (comm/direct.h): on the meta device
// when the payload is there, so a dry run's comm peak is the engine's.
#pragma once
#include <memory>
#include <vector>

#include "comm/comm.h"
#include "core/sim_clock.h"

namespace origami {

// n communicators of one group, rank i the i-th: one per simulated rank (thread). A rank that
// waits longer than `timeout_s` for its peers fails (a schedule that would hang). When the
// posting thread has a simulated clock (core/sim_clock.h), every operation gets a completion
// time on `link` (see Group in sim_comm.cpp) and a wait advances the clock to it.
std::vector<std::unique_ptr<Comm>> make_sim_comms(int n, double timeout_s = 60,
                                                  sim::Link link = {});
// Rank 0 of `size` ranks whose peers are not simulated (the replicas of a DP axis): every
// operation completes when posted, with MpiComm's bytes and scratch. Host data: an all-reduce
// keeps this rank's values, an all-gather repeats its block; other host payloads are not written
// (the engines send none over the DP axis).
// With a clock, its transfers take their time on `link` (the DP axis's, between nodes).
std::unique_ptr<Comm> make_solo_comm(int size, sim::Link link = {});
// Makes every waiting rank of every group fail (a simulated rank threw: its peers must not hang).
void abort_sim_comms();
void reset_sim_comms();

}  // namespace origami
