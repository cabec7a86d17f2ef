// A hardware profile for `origami plan --time` (configs/hardware/*.json; `origami calibrate`
// measures this machine's): what one rank's kernels sustain and what its links carry. Every
// number says where it came from in the file's "provenance" (measured, datasheet, assumed).
//
//   {"name": "...", "provenance": {...},
//    "gemm_flops":     {"fp32": F, "bf16": F},   sustained GEMM rate of one rank (flop/s)
//    "attn_fwd_flops": {"fp32": F, "bf16": F},   flash attention forward, 4·d flop per visible
//    "attn_bwd_flops": {"fp32": F, "bf16": F},   (query, key) pair and head; backward 10·d
//    "memory_bytes_per_s": B,                     memory-bound kernels (bytes read + written)
//    "kernel_launch_s": L,                        fixed cost of every kernel call
//    "exp_per_s": E,                              (optional) exponentials per second: the
//                                                 cross-entropy and SwiGLU kernels' bound on a CPU
//    "update_per_s": U,                           (optional) AdamW element updates per second
//                                                 (a square root and a division each on a CPU)
//    "chain_per_s": C,                            (optional) additions per second of a sum in a
//                                                 fixed order (RMSNorm's row statistics, the
//                                                 gradient norm): one dependent chain on a CPU
//    "ranks_per_node": R,                         ranks sharing the fast links
//    "intra_node": {"latency_s": l, "bytes_per_s": b,    a rank's links inside a node: what it
//                   "peer_bytes_per_s": p},              receives from all peers at once, and from
//                                                        one (a full mesh: one link; default b)
//    "inter_node": {"latency_s": l, "bytes_per_s": b},   and between nodes (its NIC)
//                   (either may say "on_cores": true: the ranks' cores copy the data, as MPI over
//                   shared memory does on a host the ranks fill; and "sync_skew": f, the lag of
//                   the slowest rank at an exchange as a fraction of the compute since the last
//                   one, measured by calibrate on a noisy host; and
//                   "background_copy_bytes_per_s": c, what a copy that an MPI progress thread
//                   does beside the rank's compute costs it; sim::Link)
//    "device_memory_bytes": M,                    (optional) for --recommend
//    "rank_slowdown": [s0, s1, ...],              (optional, `origami calibrate` under mpirun)
//                                                 rank r's kernels take s[r mod n] × the time
//                                                 the tables give (the rates are rank 0's; cores
//                                                 of a shared host differ)
//    "gemm_shapes": {"fp32": [[ta, tb, m, n, k, flop/s], ...], "bf16": [...]},
//                                                 (optional, `origami calibrate`) the rate of
//                                                 each GEMM shape the engines issue; a GEMM takes
//                                                 the rate of the nearest measured shape with its
//                                                 transposes (log distance over m, n, k)
//    "attn_sizes": {"fp32": [[pairs, fwd flop/s, bwd flop/s], ...], "bf16": [...]}}
//                                                 (optional) attention rates by a call's visible
//                                                 (query, key) pairs per head, interpolated in
//                                                 log(pairs) and held at the ends
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/sim_clock.h"

namespace origami::plan {

struct Rates {
  double fp32 = 0, bf16 = 0;
  double of(bool bf) const { return bf ? bf16 : fp32; }
};

struct Hardware {
  std::string name, path;
  Rates gemm, attn_fwd, attn_bwd;
  double memory_bytes_per_s = 0, kernel_launch_s = 0, device_memory_bytes = 0;
  double exp_per_s = 0;     // optional: exponentials per second (0: free)
  double update_per_s = 0;  // optional: AdamW element updates per second (0: memory-bound only)
  double chain_per_s = 0;   // optional: fixed-order additions per second (0: memory-bound only)
  std::vector<double> rank_slowdown;  // optional: per rank, its kernels' time over rank 0's
  double slowdown_of(int rank) const {
    return rank_slowdown.empty() ? 1.0
                                 : rank_slowdown[static_cast<size_t>(rank) % rank_slowdown.size()];
  }
  int ranks_per_node = 1;
  sim::Link intra, inter;
  struct GemmShape {
    bool ta = false, tb = false;
    double m = 0, n = 0, k = 0, flops = 0;
  };
  struct AttnSize {
    double pairs = 0, fwd = 0, bwd = 0;
  };
  std::vector<GemmShape> gemm_shapes[2];  // [bf16]; sorted as measured
  std::vector<AttnSize> attn_sizes[2];    // [bf16]; by pairs, ascending
  // Sees every kernel's work before it is timed (`origami calibrate` collects the shapes the
  // engines issue); called from every simulated rank's thread.
  std::function<void(const sim::Work&)> observe;

  static Hardware load(const std::string& path);
  // Seconds a kernel's work takes on one rank: the launch cost plus the longer of its compute
  // (flops at the kernel's rate) and its memory traffic.
  double kernel_time(const sim::Work& w) const;
  // The rate a GEMM or an attention call runs at: by its shape when the profile measured shapes,
  // else the single number.
  double gemm_rate(const sim::Work& w) const;
  double attn_rate(const sim::Work& w) const;
};

}  // namespace origami::plan
