#include "parallel/ring.h"

#include <algorithm>

#include "core/tensor.h"
#include "core/trace.h"
#include "kernels/dispatch.h"
#include "model/block.h"

namespace origami {

using block::bytes;

namespace {
constexpr int kTagW = 1, kTagAcc = 2;

// One ring step's weight transfer: send the shard held to the next rank, receive the next one.
void post_shard(Comm& comm, const RingSpec& sp, const float* cur, float* wnext, Request& ws,
                Request& wr) {
  const int D = comm.size(), r = comm.rank();
  comm.begin_group();
  ws = comm.isend(cur, bytes(sp.n), (r + 1) % D, kTagW, sp.weights);
  wr = comm.irecv(wnext, bytes(sp.n), (r + D - 1) % D, kTagW, sp.weights);
  comm.end_group();
}
}  // namespace

RingStart ring_prefetch(Comm& comm, const RingSpec& sp) {
  const int D = comm.size();
  RingStart st;
  st.posted = true;
  if (D == 1) return st;
  st.wbuf[0] = Tensor::empty({sp.n}, DType::f32, Cat::comm);
  if (D > 2) st.wbuf[1] = Tensor::empty({sp.n}, DType::f32, Cat::comm);
  post_shard(comm, sp, sp.own, st.wbuf[0].data<float>(), st.ws, st.wr);
  return st;
}

RingStart gathered_prefetch(Comm& comm, const RingSpec& sp) {
  RingStart st;
  st.posted = true;
  st.all = Tensor::empty({comm.size(), sp.n}, DType::f32, Cat::comm);
  st.gather = comm.iallgather(sp.own, st.all.data<float>(), bytes(sp.n), sp.weights);
  return st;
}

void ring_forward(Comm& comm, const RingSpec& sp,
                  const std::function<void(int, const float*)>& compute, RingStart* start) {
  ring_backward(
      comm, sp, nullptr, [&](int s, const float* W, float*) { compute(s, W); }, nullptr, start);
}

void RingTail::finish() {
  if (!dst) return;
  sends[0].wait();
  sends[1].wait();
  home.wait();
  k::add_inplace<float>(dst, home_buf.data<float>(), n);
  *this = RingTail();
}

void ring_backward(Comm& comm, const RingSpec& sp, float* own_grad,
                   const std::function<void(int, const float*, float*)>& compute, RingTail* tail,
                   RingStart* start) {
  const int D = comm.size(), r = comm.rank();
  const int next = (r + 1) % D, prev = (r + D - 1) % D;
  const int64_t shard_bytes = bytes(sp.n);
  const bool bwd = own_grad != nullptr;
  RingStart first = start && start->posted ? std::move(*start) : ring_prefetch(comm, sp);
  Tensor wbuf[2] = {std::move(first.wbuf[0]), std::move(first.wbuf[1])}, abuf[2], home;
  if (D > 1) {
    if (bwd) {
      abuf[1] = Tensor::empty({sp.n}, DType::f32, Cat::comm);
      if (D > 2) abuf[0] = Tensor::empty({sp.n}, DType::f32, Cat::comm);
      home = Tensor::empty({sp.n}, DType::f32, Cat::comm);
    }
  }
  const float* cur = sp.own;
  Request acc_send[2], acc_recv, home_recv;
  for (int t = 0; t < D; ++t) {
    const int s = (r - t + D) % D;
    Request ws, wr;
    float* wnext = nullptr;
    if (t < D - 1) {
      wnext = wbuf[t % 2].data<float>();
      if (t == 0) {
        ws = std::move(first.ws);
        wr = std::move(first.wr);
      } else {
        post_shard(comm, sp, cur, wnext, ws, wr);
      }
    }
    float* target = nullptr;
    if (bwd) {
      if (t == 0) {
        target = own_grad;
      } else if (t == 1) {
        target = abuf[1].data<float>();
        zero_bytes(target, bytes(sp.n));
      } else {
        acc_recv.wait();
        target = abuf[t % 2].data<float>();
      }
    }
    {
      TraceSpan span(
          std::string(traffic_name(sp.weights)).append(" ring step ").append(std::to_string(t)));
      compute(s, cur, target);
    }
    if (bwd && t >= 1) {
      // The buffer we are about to receive into was sent at t-1.
      if (t + 1 <= D - 1) acc_send[(t + 1) % 2].wait();
      // Send and receive as one group: NCCL runs an ungrouped send to completion before the
      // receive behind it on the same stream, which both ranks would wait for.
      comm.begin_group();
      acc_send[t % 2] = comm.isend(target, shard_bytes, next, kTagAcc, sp.accumulate);
      if (t + 1 <= D - 1)
        acc_recv =
            comm.irecv(abuf[(t + 1) % 2].data<float>(), shard_bytes, prev, kTagAcc, sp.accumulate);
      else
        home_recv = comm.irecv(home.data<float>(), shard_bytes, prev, kTagAcc, sp.accumulate);
      comm.end_group();
    }
    ws.wait();
    wr.wait();
    if (wnext) cur = wnext;
  }
  if (bwd && D > 1) {
    RingTail t;
    t.sends[0] = std::move(acc_send[0]);
    t.sends[1] = std::move(acc_send[1]);
    t.home = std::move(home_recv);
    t.acc[0] = std::move(abuf[0]);
    t.acc[1] = std::move(abuf[1]);
    t.home_buf = std::move(home);
    t.dst = own_grad;
    t.n = sp.n;
    if (tail) {
      tail->finish();  // the previous ring's home hop, hidden behind this ring
      *tail = std::move(t);
    } else {
      t.finish();
    }
  }
}

void gathered_forward(Comm& comm, const RingSpec& sp,
                      const std::function<void(int, const float*)>& compute, RingStart* start) {
  gathered_backward(
      comm, sp, nullptr, [&](int s, const float* W, float*) { compute(s, W); }, start);
}

void gathered_backward(Comm& comm, const RingSpec& sp, float* own_grad,
                       const std::function<void(int, const float*, float*)>& compute,
                       RingStart* start) {
  const int D = comm.size(), r = comm.rank();
  RingStart first = start && start->posted ? std::move(*start) : gathered_prefetch(comm, sp);
  first.gather.wait();
  Tensor all = std::move(first.all);
  Tensor part;
  if (own_grad) part = Tensor::zeros({D, sp.n}, DType::f32, Cat::comm);
  for (int t = 0; t < D; ++t) {
    const int s = (r - t + D) % D;
    compute(s, all.data<float>() + s * sp.n, own_grad ? part.data<float>() + s * sp.n : nullptr);
  }
  if (!own_grad) return;
  Tensor sum = Tensor::empty({sp.n}, DType::f32, Cat::comm);
  comm.ireduce_scatter(part.data<float>(), sum.data<float>(), sp.n, sp.accumulate).wait();
  k::add_inplace<float>(own_grad, sum.data<float>(), sp.n);
}

}  // namespace origami
