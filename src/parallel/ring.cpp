#include "parallel/ring.h"

#include <algorithm>

#include "core/tensor.h"
#include "core/trace.h"
#include "kernels/dispatch.h"
#include "model/block.h"

namespace origami {

using k::CPtr;
using k::Ptr;

namespace {
// Tags of lane 0 (the ring; biring's lane to r+1) and lane 1 (biring's lane to r-1: at D = 2 both
// lanes join the same pair of ranks).
constexpr int kTagW[2] = {1, 3}, kTagAcc[2] = {2, 4};

// Bytes of a weight shard (its element type) and of an accumulator (fp32).
int64_t wbytes(const RingSpec& sp) {
  return sp.n * static_cast<int64_t>(dtype_size(sp.own.dt));
}
int64_t abytes(const RingSpec& sp) {
  return sp.n * static_cast<int64_t>(sizeof(float));
}
Ptr P(Tensor& t) {
  return {t.raw(), t.dtype()};
}
int lane_of(int dir) {
  return dir > 0 ? 0 : 1;
}

// One ring step's weight transfer: send the shard held to the next rank (r + dir), receive the
// next one from the previous (r - dir).
void post_shard(Comm& comm, const RingSpec& sp, int dir, CPtr cur, Ptr wnext, Request& ws,
                Request& wr) {
  const int D = comm.size(), r = comm.rank();
  comm.begin_group();
  ws = comm.isend(cur.p, wbytes(sp), (r + dir + D) % D, kTagW[lane_of(dir)], sp.weights);
  wr = comm.irecv(wnext.p, wbytes(sp), (r - dir + D) % D, kTagW[lane_of(dir)], sp.weights);
  comm.end_group();
}

RingStart prefetch(Comm& comm, const RingSpec& sp, int dir) {
  const int D = comm.size();
  RingStart st;
  st.posted = true;
  if (D == 1) return st;
  st.wbuf[0] = Tensor::empty({sp.n}, sp.own.dt, Cat::comm);
  if (D > 2) st.wbuf[1] = Tensor::empty({sp.n}, sp.own.dt, Cat::comm);
  post_shard(comm, sp, dir, sp.own, P(st.wbuf[0]), st.ws, st.wr);
  return st;
}

// One ring (ring.h), stepped from outside so that two can run interleaved (biring): at step t
// it holds shard (r - dir·t) mod D and, backward, the accumulator it adds that shard's partial to.
class Lane {
 public:
  Lane(Comm& comm, const RingSpec& sp, int dir, float* own_grad, RingStart first)
      : comm_(comm),
        sp_(sp),
        D_(comm.size()),
        r_(comm.rank()),
        dir_(dir),
        tag_(kTagAcc[lane_of(dir)]),
        own_grad_(own_grad),
        first_(std::move(first)) {
    wbuf_[0] = std::move(first_.wbuf[0]);
    wbuf_[1] = std::move(first_.wbuf[1]);
    cur_ = sp.own;
    if (D_ > 1 && own_grad_) {
      abuf_[1] = Tensor::empty({sp.n}, DType::f32, Cat::comm);
      if (D_ > 2) abuf_[0] = Tensor::empty({sp.n}, DType::f32, Cat::comm);
      home_ = Tensor::empty({sp.n}, DType::f32, Cat::comm);
    }
  }
  int shard(int t) const { return ((r_ - dir_ * t) % D_ + D_) % D_; }
  CPtr held() const { return cur_; }
  // Posts step t's weight transfer and returns the accumulator step t's partial goes into.
  float* begin(int t) {
    wnext_ = {};
    if (t < D_ - 1) {
      wnext_ = P(wbuf_[t % 2]);
      if (t == 0) {
        ws_ = std::move(first_.ws);
        wr_ = std::move(first_.wr);
      } else {
        post_shard(comm_, sp_, dir_, cur_, wnext_, ws_, wr_);
      }
    }
    if (!own_grad_) return nullptr;
    if (t == 0) return own_grad_;
    if (t == 1) {
      zero_bytes(abuf_[1].data<float>(), abytes(sp_));
      return abuf_[1].data<float>();
    }
    acc_recv_.wait();
    return abuf_[t % 2].data<float>();
  }
  // After step t's compute: passes the accumulator on (the last holder sends it home).
  void computed(int t, float* target) {
    if (!own_grad_ || t < 1) return;
    const int next = (r_ + dir_ + D_) % D_, prev = (r_ - dir_ + D_) % D_;
    const int64_t bytes = abytes(sp_);
    // The buffer we are about to receive into was sent at t-1.
    if (t + 1 <= D_ - 1) acc_send_[(t + 1) % 2].wait();
    // Send and receive as one group: NCCL runs an ungrouped send to completion before the
    // receive behind it on the same stream, which both ranks would wait for.
    comm_.begin_group();
    acc_send_[t % 2] = comm_.isend(target, bytes, next, tag_, sp_.accumulate);
    if (t + 1 <= D_ - 1)
      acc_recv_ = comm_.irecv(abuf_[(t + 1) % 2].data<float>(), bytes, prev, tag_, sp_.accumulate);
    else
      home_recv_ = comm_.irecv(home_.data<float>(), bytes, prev, tag_, sp_.accumulate);
    comm_.end_group();
  }
  void end(int) {
    ws_.wait();
    wr_.wait();
    if (wnext_.p) cur_ = wnext_;
  }
  // The home hop still in flight (backward, D > 1).
  RingTail::Part tail() {
    RingTail::Part t;
    t.sends[0] = std::move(acc_send_[0]);
    t.sends[1] = std::move(acc_send_[1]);
    t.home = std::move(home_recv_);
    t.acc[0] = std::move(abuf_[0]);
    t.acc[1] = std::move(abuf_[1]);
    t.home_buf = std::move(home_);
    t.dst = own_grad_;
    t.n = sp_.n;
    return t;
  }

 private:
  Comm& comm_;
  RingSpec sp_;
  int D_, r_, dir_, tag_;
  float* own_grad_;
  RingStart first_;
  Tensor wbuf_[2], abuf_[2], home_;
  CPtr cur_;
  Ptr wnext_;
  Request ws_, wr_, acc_send_[2], acc_recv_, home_recv_;
};

// Hands this ring's tail to `tail` (finishing the previous ring's after this ring's compute) or
// finishes it now.
void hand_over(RingTail t, RingTail* tail) {
  if (tail) {
    tail->finish();  // the previous ring's home hop, hidden behind this ring
    *tail = std::move(t);
  } else {
    t.finish();
  }
}
}  // namespace

RingStart ring_prefetch(Comm& comm, const RingSpec& sp) {
  return prefetch(comm, sp, +1);
}

RingStart gathered_prefetch(Comm& comm, const RingSpec& sp) {
  RingStart st;
  st.posted = true;
  st.all = Tensor::empty({comm.size(), sp.n}, sp.own.dt, Cat::comm);
  st.gather = comm.iallgather(sp.own.p, st.all.raw(), wbytes(sp), sp.weights);
  return st;
}

void ring_forward(Comm& comm, const RingSpec& sp, const RingFwd& compute, RingStart* start) {
  ring_backward(
      comm, sp, nullptr, [&](int s, CPtr W, float*) { compute(s, W); }, nullptr, start);
}

void RingTail::finish() {
  for (Part& p : parts) {
    p.sends[0].wait();
    p.sends[1].wait();
    p.home.wait();
    k::add_inplace<float>(p.dst, p.home_buf.data<float>(), p.n);
  }
  if (then) then();
  *this = RingTail();
}

void ring_backward(Comm& comm, const RingSpec& sp, float* own_grad, const RingBwd& compute,
                   RingTail* tail, RingStart* start) {
  const int D = comm.size();
  Lane lane(comm, sp, +1, own_grad,
            start && start->posted ? std::move(*start) : prefetch(comm, sp, +1));
  for (int t = 0; t < D; ++t) {
    float* target = lane.begin(t);
    {
      TraceSpan span(
          std::string(traffic_name(sp.weights)).append(" ring step ").append(std::to_string(t)));
      compute(lane.shard(t), lane.held(), target);
    }
    lane.computed(t, target);
    lane.end(t);
  }
  if (own_grad && D > 1) {
    RingTail t;
    t.parts.push_back(lane.tail());
    hand_over(std::move(t), tail);
  }
}

RingStart biring_prefetch(Comm& comm, const RingSpec (&pieces)[2]) {
  RingStart st = prefetch(comm, pieces[0], +1);
  st.lane1 = std::make_unique<RingStart>(prefetch(comm, pieces[1], -1));
  return st;
}

void biring_backward(Comm& comm, const RingSpec (&pieces)[2], float* const (&own_grad)[2],
                     const RingBwd& compute, const std::function<void()>& then, RingTail* tail,
                     RingStart* start) {
  const int D = comm.size();
  RingStart first = start && start->posted ? std::move(*start) : biring_prefetch(comm, pieces);
  RingStart second = std::move(*first.lane1);
  Lane lanes[2] = {Lane(comm, pieces[0], +1, own_grad[0], std::move(first)),
                   Lane(comm, pieces[1], -1, own_grad[1], std::move(second))};
  for (int t = 0; t < D; ++t) {
    float* target[2] = {lanes[0].begin(t), lanes[1].begin(t)};
    TraceSpan span(std::string(traffic_name(pieces[0].weights))
                       .append(" biring step ")
                       .append(std::to_string(t)));
    for (int l = 0; l < 2; ++l) {
      compute(2 * lanes[l].shard(t) + l, lanes[l].held(), target[l]);
      lanes[l].computed(t, target[l]);
    }
    lanes[0].end(t);
    lanes[1].end(t);
  }
  if (!own_grad[0]) return;
  RingTail t;
  if (D > 1) t.parts = {lanes[0].tail(), lanes[1].tail()};
  t.then = then;
  hand_over(std::move(t), tail);
}

void gathered_forward(Comm& comm, const RingSpec& sp, const RingFwd& compute, RingStart* start) {
  gathered_backward(
      comm, sp, nullptr, [&](int s, CPtr W, float*) { compute(s, W); }, start);
}

void gathered_backward(Comm& comm, const RingSpec& sp, float* own_grad, const RingBwd& compute,
                       RingStart* start) {
  const int D = comm.size(), r = comm.rank();
  RingStart first = start && start->posted ? std::move(*start) : gathered_prefetch(comm, sp);
  first.gather.wait();
  Tensor all = std::move(first.all);
  Tensor part;
  if (own_grad) part = Tensor::zeros({D, sp.n}, DType::f32, Cat::comm);
  for (int t = 0; t < D; ++t) {
    const int s = (r - t + D) % D;
    compute(s, P(all) + s * sp.n, own_grad ? part.data<float>() + s * sp.n : nullptr);
  }
  if (!own_grad) return;
  Tensor sum = Tensor::empty({sp.n}, DType::f32, Cat::comm);
  comm.ireduce_scatter(part.data<float>(), sum.data<float>(), sp.n, sp.accumulate).wait();
  k::add_inplace<float>(own_grad, sum.data<float>(), sp.n);
}

}  // namespace origami
