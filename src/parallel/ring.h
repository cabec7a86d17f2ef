// The ring that both the gated MLP (tsp-spec §5) and the LM head (§6) run: D steps; at step t
// rank r holds shard s = (r - t) mod D. While it computes with shard s, shard s is already on its
// way to rank r+1 and shard s-1 is arriving from rank r-1 (double buffer, non-blocking).
//
//   step:     0          1            2         ...   D-1
//   rank r:   W_r        W_{r-1}      W_{r-2}          W_{r+1}
//             send W_r → r+1, recv W_{r-1} ← r-1 (not on the last step)
//
// Backward: next to each weight shard travels a gradient accumulator. The owner keeps its own
// partial dW_s (step 0); the accumulator starts at the next rank (step 1), each rank adds its
// partial and passes it on, and the last holder (rank s-1, step D-1) sends it home — D-1 hops, the
// volume of a reduce-scatter — where the owner adds it after its own partial (fixed order).
//
// The ring's last hop (the accumulator coming home) has no compute of this ring left to hide
// behind. With a RingTail the ring returns with it still in flight, and the next backward ring
// given the same RingTail finishes it after its own compute (the owner's add keeps its place: own
// partial, then the home accumulator, before anything else touches that gradient), so the hop
// overlaps that compute; the caller finishes the last one. The accumulators and the home buffer
// stay allocated until then.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "comm/comm.h"
#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace origami {

// The shards travel in their own element type (bf16 under --dtype bf16); the gradient
// accumulators are fp32.
struct RingSpec {
  int64_t n;           // elements of one shard
  k::CPtr own;         // this rank's shard
  Traffic weights;     // category of the weight transfers
  Traffic accumulate;  // category of the accumulator transfers (backward)
};
using RingFwd = std::function<void(int, k::CPtr)>;
using RingBwd = std::function<void(int, k::CPtr, float*)>;

struct RingStart;

class RingTail {
 public:
  RingTail() = default;
  RingTail(RingTail&&) = default;
  RingTail& operator=(RingTail&&) = default;
  // Waits for the home accumulators and the last sends, adds each accumulator to the owner's
  // gradient, runs `then` (biring: unpacks the pieces' gradients) and frees the buffers.
  // Idempotent.
  void finish();

  struct Part {  // one lane's home hop
    Request sends[2], home;
    Tensor acc[2], home_buf;
    float* dst = nullptr;
    int64_t n = 0;
  };
  std::vector<Part> parts;
  std::function<void()> then;
};

// A ring's first transfer (step 0's send and receive; FSDP+SP: the whole gather), posted ahead of
// the ring by ring_prefetch / gathered_prefetch so that it travels while the caller still computes
// something else (TSP: the attention's last head group); the ring then starts with it.
struct RingStart {
  Tensor wbuf[2], all;
  Request ws, wr, gather;
  bool posted = false;
  Tensor own;                        // biring: this lane's packed piece of the own shard
  std::unique_ptr<RingStart> lane1;  // biring: the other lane's first transfer
};
RingStart ring_prefetch(Comm& comm, const RingSpec& spec);
RingStart gathered_prefetch(Comm& comm, const RingSpec& spec);

// compute(s, W_s) for every shard, in ring order.
void ring_forward(Comm& comm, const RingSpec& spec, const RingFwd& compute,
                  RingStart* start = nullptr);
// compute(s, W_s, G) accumulates this rank's partial dW_s into G; own_grad receives the complete
// gradient of this rank's shard (own partial + the accumulator that comes home), added to it —
// on return, or, with `tail`, when the tail is finished: `tail` holds the previous ring's tail on
// entry (finished after this ring's compute) and this ring's on return.
void ring_backward(Comm& comm, const RingSpec& spec, float* own_grad, const RingBwd& compute,
                   RingTail* tail = nullptr, RingStart* start = nullptr);

// --mlp-transport biring: two rings in opposite directions, each carrying one piece of every
// shard (pieces[0] to rank r+1, as the ring; pieces[1] to rank r-1), so that a rank's two links
// each carry half the bytes. At step t rank r holds piece 0 of shard (r - t) mod D and piece 1 of
// shard (r + t) mod D, and calls compute(2·s + lane, piece, G) for both; each piece's accumulator
// travels its own lane home to own_grad[lane] (a packed piece gradient). `then` runs once both
// have arrived (with `tail`: when the tail is finished) — the caller unpacks the pieces there.
RingStart biring_prefetch(Comm& comm, const RingSpec (&pieces)[2]);
void biring_backward(Comm& comm, const RingSpec (&pieces)[2], float* const (&own_grad)[2],
                     const RingBwd& compute, const std::function<void()>& then,
                     RingTail* tail = nullptr, RingStart* start = nullptr);

// FSDP+SP's counterpart: all-gather every rank's shard (the whole layer), compute with each in
// the ring's order, and (backward) reduce-scatter the partial gradients to their owners. Same
// bytes as the ring (f·n gathered, f·n reduced), but the whole layer is resident at once.
void gathered_forward(Comm& comm, const RingSpec& spec, const RingFwd& compute,
                      RingStart* start = nullptr);
void gathered_backward(Comm& comm, const RingSpec& spec, float* own_grad, const RingBwd& compute,
                       RingStart* start = nullptr);

}  // namespace origami
