// The simulated clock of a dry run with time (`origami plan --time`, plan/timing.h). Each
// simulated rank (a thread of the dry run, plan/dry_run.h) binds a Clock; the meta device's
// kernels (kernels/meta.h) describe their work (a GEMM's flops and bytes, attention's visible
// pairs, a memory-bound kernel's bytes) and the installed cost model turns it into seconds that
// advance the rank's clock; the dry run's communicators (comm/sim_comm.h) give every transfer a
// completion time from its link (latency and bandwidth) and the moments its ranks posted it, and a
// wait advances the clock to that moment. Overlap, skew and exposed communication then follow
// from the schedule's own order. Nothing here runs unless a clock is bound.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/trace.h"

namespace origami::sim {

// A kernel's work, as the meta device sees it.
struct Work {
  enum Kind { gemm, attn_fwd, attn_bwd, memory };
  Kind kind = memory;
  double flops = 0;    // gemm: 2·M·N·K; attention: 4·d per visible (query, key) pair and head
                       // forward, 10·d backward (QKᵀ and PV again, dP, dQ, dK, dV)
  double bytes = 0;    // bytes read and written at least once
  double exps = 0;     // exponentials (softmax over the vocabulary, SiLU): CPU-bound
  double updates = 0;  // AdamW element updates (a square root and a division each): CPU-bound
  double chain = 0;    // additions of a fixed-order sum in double (one dependent chain per
                       // row or block, kept for bitwise reproducibility): latency-bound on a CPU
  bool bf16 = false;   // the kernel's element type
  const char* name = "";
  // Its shape, for rates that depend on it: a GEMM's op(A)[m,k]·op(B)[k,n] and transposes; an
  // attention call's visible (query, key) pairs per head (m) and head dimension (n).
  double m = 0, n = 0, k = 0;
  bool ta = false, tb = false;
};

struct Clock {
  double now = 0;         // seconds since the step began
  double slowdown = 1;    // this rank's kernels take slowdown × the profile's time (a slower core)
  double compute = 0;     // seconds in kernels
  double exposed = 0;     // seconds waiting for transfers
  double since_wait = 0;  // seconds in kernels since the rank's last wait (Link::sync_skew)
  double link_busy = 0;   // its received bytes over its inbound capacity (Link::bytes_per_s)
  // When set, every kernel (tid 0) and wait (tid 1) is appended, in microseconds.
  std::vector<TraceEvent>* trace = nullptr;
};

// A link: a transfer of `bytes` received by a rank in `steps` latency-bound steps takes
// steps·latency + bytes/bandwidth. bytes_per_s is what a rank receives from all its peers at once
// (a collective); peer_bytes_per_s from one peer (a point-to-point transfer: on a full mesh one
// of its links, behind a switch the same as bytes_per_s). bandwidth 0: transfers take no time.
// on_cores: the transfer's data is copied by the ranks' own cores (MPI over shared memory on a
// host whose cores the ranks fill: no asynchronous progress, no copy engine), so a receiving
// rank's clock pays the transfer's time at its wait even when the transfer ended long before;
// copy_bytes_per_s, when set, is that copy's rate where it differs from the link's (an emulated
// link: the wire's time is a sleep, the cores still copy at shared memory's rate).
// background_copy_bytes_per_s, when set: a transfer that completed while the rank computed
// (before its wait) was copied by the rank's MPI progress thread meanwhile, on the same core, at
// this rate (measured by calibrate: the compute lost to an exchange posted beside GEMMs, slower
// than a copy alone since both share the core and its caches); the rank's clock pays that as
// compute, not at the wait. Unset: such a copy is paid at the wait (the transfer's own rate).
// sync_skew: on a shared host the ranks' compute is noisy, so at every exchange the slowest of
// them lags the others; a transfer then starts sync_skew × (the compute its ranks did since their
// last wait) after the last post (the expected lag of the slowest, as `origami calibrate`
// measures it: a fixed piece of compute on every rank at once, the slowest over the mean).
struct Link {
  double latency_s = 0, bytes_per_s = 0, peer_bytes_per_s = 0;
  bool on_cores = false;
  double sync_skew = 0;
  double copy_bytes_per_s = 0;
  double background_copy_bytes_per_s = 0;
  // Measured collectives (`origami calibrate`: MpiComm's all-gather, reduce-scatter, all-reduce,
  // all-to-all, blocking, at two sizes): {received bytes, seconds} twice; a transfer of that kind
  // takes the line through them (at least the link's own time). All zero: not measured.
  enum Coll { allgather, reduce_scatter, allreduce, alltoall, kColls };
  static constexpr const char* kCollNames[kColls] = {"allgather", "reduce_scatter", "allreduce",
                                                     "alltoall"};  // the profile's keys
  std::array<std::array<double, 4>, kColls> coll{};
  double time(double bytes, int steps) const {
    return bytes_per_s > 0 ? steps * latency_s + bytes / bytes_per_s : 0;
  }
  double coll_time(int kind, double bytes) const {
    const double own = time(bytes, 1);
    if (kind < 0 || kind >= kColls || bytes <= 0) return own;
    const auto& c = coll[static_cast<size_t>(kind)];
    if (!(c[2] > c[0])) return own;
    return std::max(own, c[1] + (bytes - c[0]) * (c[3] - c[1]) / (c[2] - c[0]));
  }
  // What a receiving rank's cores spend copying `bytes` (on_cores); peer: from one peer.
  double copy_time(double bytes, bool peer) const {
    if (!on_cores) return 0;
    if (copy_bytes_per_s > 0) return bytes / copy_bytes_per_s;
    return peer ? peer_time(bytes) : time(bytes, 1);
  }
  // What copying `bytes` in the background (background_copy_bytes_per_s) costs the rank's compute.
  double background_copy_time(double bytes) const {
    return on_cores && background_copy_bytes_per_s > 0 ? bytes / background_copy_bytes_per_s : 0;
  }
  double peer_time(double bytes) const {
    const double bw = peer_bytes_per_s > 0 ? peer_bytes_per_s : bytes_per_s;
    return bw > 0 ? latency_s + bytes / bw : 0;
  }
};

// How attention calls are charged (`plan --time` variants of a baseline's kernels and balance;
// the engines themselves always run causal zigzag): dense: every (query, key) pair of the
// segments a call is given, as a masked dense kernel that skips no tile; contiguous (chunk > 0):
// positions relabelled as if the sequence were split into 2Σ contiguous chunks of `chunk` with
// rank i holding chunks 2i, 2i+1, instead of zigzag's i and 2Σ-1-i.
struct AttnCharge {
  bool dense = false;
  int64_t chunk = 0;
  int sigma = 0;
};
void set_attn_charge(const AttnCharge& a);  // for every thread (the dry run sets it)
const AttnCharge& attn_charge();

// This thread's clock (nullptr: time is not simulated).
Clock* clock();
void bind(Clock* c);
// Seconds a kernel's work takes (installed by the planner; nullptr: kernels take no time).
using KernelTime = double (*)(const Work&, const void* ctx);
void set_kernel_time(KernelTime f, const void* ctx);
// A kernel ran on this thread: advance its clock (when bound).
void kernel(const Work& w);
// A wait on this thread ended at `done` (a transfer's completion time): advance the clock to it,
// or, when the rank's cores copied the transfer's data (Link::on_cores), by at least `copy`.
// `wire`: the transfer's bytes over its link's bandwidth (Clock::link_busy). `background`: when
// the transfer had completed before the wait, its copy's cost to the rank's compute
// (Link::background_copy_bytes_per_s), paid instead of `copy`.
void waited(double done, double copy, const char* what, double wire = 0, double background = 0);

}  // namespace origami::sim
