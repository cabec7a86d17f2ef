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
constexpr int kTagW = 1, kTagAcc = 2;

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

// One ring step's weight transfer: send the shard held to the next rank, receive the next one.
void post_shard(Comm& comm, const RingSpec& sp, CPtr cur, Ptr wnext, Request& ws, Request& wr) {
  const int D = comm.size(), r = comm.rank();
  comm.begin_group();
  ws = comm.isend(cur.p, wbytes(sp), (r + 1) % D, kTagW, sp.weights);
  wr = comm.irecv(wnext.p, wbytes(sp), (r + D - 1) % D, kTagW, sp.weights);
  comm.end_group();
}
}  // namespace

RingStart ring_prefetch(Comm& comm, const RingSpec& sp) {
  const int D = comm.size();
  RingStart st;
  st.posted = true;
  if (D == 1) return st;
  st.wbuf[0] = Tensor::empty({sp.n}, sp.own.dt, Cat::comm);
  if (D > 2) st.wbuf[1] = Tensor::empty({sp.n}, sp.own.dt, Cat::comm);
  post_shard(comm, sp, sp.own, P(st.wbuf[0]), st.ws, st.wr);
  return st;
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
  if (!dst) return;
  sends[0].wait();
  sends[1].wait();
  home.wait();
  k::add_inplace<float>(dst, home_buf.data<float>(), n);
  *this = RingTail();
}

void ring_backward(Comm& comm, const RingSpec& sp, float* own_grad, const RingBwd& compute,
                   RingTail* tail, RingStart* start) {
  const int D = comm.size(), r = comm.rank();
  const int next = (r + 1) % D, prev = (r + D - 1) % D;
  const int64_t acc_bytes = abytes(sp);
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
  CPtr cur = sp.own;
  Request acc_send[2], acc_recv, home_recv;
  for (int t = 0; t < D; ++t) {
    const int s = (r - t + D) % D;
    Request ws, wr;
    Ptr wnext;
    if (t < D - 1) {
      wnext = P(wbuf[t % 2]);
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
        zero_bytes(target, acc_bytes);
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
      acc_send[t % 2] = comm.isend(target, acc_bytes, next, kTagAcc, sp.accumulate);
      if (t + 1 <= D - 1)
        acc_recv =
            comm.irecv(abuf[(t + 1) % 2].data<float>(), acc_bytes, prev, kTagAcc, sp.accumulate);
      else
        home_recv = comm.irecv(home.data<float>(), acc_bytes, prev, kTagAcc, sp.accumulate);
      comm.end_group();
    }
    ws.wait();
    wr.wait();
    if (wnext.p) cur = wnext;
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
