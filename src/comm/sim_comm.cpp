#include "comm/sim_comm.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>

#include "comm/direct.h"
#include "core/error.h"
#include "core/sim_clock.h"
#include "core/tensor.h"
#include "kernels/meta.h"

namespace origami {

namespace {

std::atomic<bool> g_abort{false};

bool host(const void* p) {
  return p && !meta::is_meta(p);
}

enum class Kind { bcast, allgather, alltoallv, reduce_scatter, reduce, allreduce, barrier };
// The kind's measured collective (sim::Link::coll), -1: none.
int coll_of(Kind k) {
  return k == Kind::allgather        ? sim::Link::allgather
         : k == Kind::reduce_scatter ? sim::Link::reduce_scatter
         : k == Kind::allreduce      ? sim::Link::allreduce
         : k == Kind::alltoallv      ? sim::Link::alltoall
                                     : -1;
}

// One rank's arguments of a collective (counts and offsets copied: the caller's may not outlive
// the post).
struct Call {
  const void* send = nullptr;
  void* recv = nullptr;
  int64_t bytes = 0, n = 0;
  int root = 0;
  DType dt = DType::f32;
  std::vector<int64_t> sb, so, rb, ro;
  int64_t received = 0;  // bytes this rank receives (MpiComm's count), for the simulated clock
  double posted_at = 0;  // the rank's simulated time when it posted
  double interval = 0;   // its compute since its last wait
};
struct Slot {
  Kind kind = Kind::barrier;
  std::vector<Call> calls;
  int posted = 0;
  double done_at = 0;  // simulated completion time (written before done)
  std::atomic<bool> done{false};
};
struct P2p {
  const void* send = nullptr;
  void* recv = nullptr;
  int64_t bytes = 0;
  double posted_at = 0, interval = 0;
  double done_at = 0;
  std::atomic<bool> done{false};
};

double sim_now() {
  const sim::Clock* c = sim::clock();
  return c ? c->now : 0;
}
// The rank's compute since its last wait (sim::Link::sync_skew).
double sim_interval() {
  const sim::Clock* c = sim::clock();
  return c ? c->since_wait : 0;
}

// dst[i] = sum over ranks q in order of src_q[i] (MpiComm's order: acc = first, then +=).
template <class T>
void sum_in_order(T* dst, const std::vector<const T*>& src, int64_t n) {
  std::vector<T> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    T acc = 0;
    for (size_t q = 0; q < src.size(); ++q) acc = q == 0 ? src[q][i] : acc + src[q][i];
    out[static_cast<size_t>(i)] = acc;
  }
  std::memcpy(dst, out.data(), static_cast<size_t>(n) * sizeof(T));
}
template <class T>
void reduce_host(const Call& dst, const std::vector<Call>& calls, int64_t n, int64_t block) {
  std::vector<const T*> src;
  for (const Call& c : calls) src.push_back(static_cast<const T*>(c.send) + block * n);
  sum_in_order<T>(static_cast<T*>(dst.recv), src, n);
}

// The data of a complete collective, host buffers only.
void execute(Slot& s) {
  auto& c = s.calls;
  const int n = static_cast<int>(c.size());
  switch (s.kind) {
    case Kind::barrier:
      return;
    case Kind::bcast:
      for (int q = 0; q < n; ++q)
        if (q != c[0].root && host(c[q].recv) && host(c[c[0].root].recv))
          std::memcpy(c[q].recv, c[c[0].root].recv, static_cast<size_t>(c[0].bytes));
      return;
    case Kind::allgather:
      for (int p = 0; p < n; ++p)
        for (int q = 0; q < n; ++q) {
          char* dst = static_cast<char*>(c[p].recv) + q * c[p].bytes;
          if (host(dst) && host(c[q].send) && dst != c[q].send)
            std::memmove(dst, c[q].send, static_cast<size_t>(c[p].bytes));
        }
      return;
    case Kind::alltoallv:
      for (int p = 0; p < n; ++p)
        for (int q = 0; q < n; ++q)
          if (host(c[p].recv) && host(c[q].send) && c[q].sb[p] > 0)
            std::memmove(static_cast<char*>(c[p].recv) + c[p].ro[q],
                         static_cast<const char*>(c[q].send) + c[q].so[p],
                         static_cast<size_t>(c[q].sb[p]));
      return;
    case Kind::reduce_scatter:
      if (host(c[0].send) && host(c[0].recv))
        for (int p = 0; p < n; ++p) reduce_host<float>(c[p], c, c[p].n, p);
      return;
    case Kind::reduce:
      if (host(c[0].send) && host(c[c[0].root].recv))
        reduce_host<float>(c[c[0].root], c, c[0].n, 0);
      return;
    case Kind::allreduce: {
      if (!host(c[0].recv)) return;
      // In place on every rank: sum once, then copy out.
      const size_t bytes = static_cast<size_t>(c[0].n) * dtype_size(c[0].dt);
      std::vector<char> sum(bytes);
      Call tmp;
      tmp.recv = sum.data();
      if (c[0].dt == DType::f32) reduce_host<float>(tmp, c, c[0].n, 0);
      if (c[0].dt == DType::f64) reduce_host<double>(tmp, c, c[0].n, 0);
      if (c[0].dt == DType::i64) reduce_host<int64_t>(tmp, c, c[0].n, 0);
      for (const Call& x : c) std::memcpy(x.recv, sum.data(), bytes);
      return;
    }
  }
}

struct Group {
  Group(int n, double timeout, sim::Link l) : n(n), timeout_s(timeout), link(l), seq(n) {}
  const int n;
  const double timeout_s;
  // The simulated clock: the group's link, and when each traffic class's collectives (and each
  // class's point-to-point transfers from one rank to another) next find it free. Transfers of
  // one class queue behind each other; classes do not contend (each completes in an order the
  // schedule fixes, so the times do not depend on how the threads ran).
  const sim::Link link;
  std::array<double, kNumTraffic + 1> coll_free{};
  std::map<std::tuple<int, int, int>, double> p2p_free;
  std::mutex mu;
  std::vector<std::array<int64_t, kNumTraffic + 1>> seq;  // per rank, per traffic (+ barrier)
  std::map<std::pair<int, int64_t>, std::shared_ptr<Slot>> slots;
  std::map<std::tuple<int, int, int, int>, std::deque<std::shared_ptr<P2p>>> sends, recvs;
};

// An operation of the dry run: complete when `done` says so; holds MpiComm's scratch until the
// request is dropped.
class SimOp : public Request::Op {
 public:
  SimOp(std::shared_ptr<Group> g, std::function<bool()> done, std::vector<Tensor> scratch,
        std::function<double()> done_at = nullptr, std::string what = {}, double copy = 0,
        double wire = 0, double background = 0)
      : g_(std::move(g)),
        done_(std::move(done)),
        scratch_(std::move(scratch)),
        done_at_(std::move(done_at)),
        what_(std::move(what)),
        copy_(copy),
        wire_(wire),
        background_(background) {}
  // Dropped before it completed (a rank unwinding from an error): its buffers may be about to
  // go, so no peer may complete it any more — the abort, set under the lock, stops every post.
  ~SimOp() override {
    if (!g_ || done_()) return;
    std::lock_guard lk(g_->mu);
    g_abort = true;
  }
  bool test() override { return !g_ || done_(); }
  void wait() override {
    spin();
    if (done_at_) sim::waited(done_at_(), copy_, what_.c_str(), wire_, background_);
    wire_ = background_ = 0;  // counted once
  }

 private:
  // The peers are threads of this process (more of them than cores): yield until they have
  // posted, rather than sleep on a condition variable (a wake-up per operation and rank costs
  // several times more).
  void spin() {
    if (!g_ || done_()) return;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t spin = 1; !done_(); ++spin) {
      std::this_thread::yield();
      if (spin % 1024) continue;
      const bool late =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() >
          g_->timeout_s;
      if (!g_abort && !late) continue;
      // This rank unwinds now: under the lock, so that no peer's execute() is writing into its
      // buffers, and with the abort set, so that none starts (posts check it under the lock).
      std::lock_guard lk(g_->mu);
      const bool other = g_abort.exchange(true);
      if (other && !late) fail("dry run: another simulated rank failed");
      fail("dry run: a rank waited ", g_->timeout_s, " s for its peers (the schedule would hang)");
    }
  }
  std::shared_ptr<Group> g_;
  std::function<bool()> done_;
  std::vector<Tensor> scratch_;
  std::function<double()> done_at_;  // the simulated completion time (when a clock runs)
  std::string what_;
  double copy_ = 0;  // the rank's own copying (Link::on_cores): what it receives over the link
  double wire_ = 0;  // the transfer's bytes over its link's bandwidth (Clock::link_busy)
  double background_ = 0;  // its copy's cost when it completed before the wait (sim::waited)
};

// The accounting and scratch both kinds share.
class SimBase : public Comm {
 public:
  SimBase(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void progress() override {}

  Request ibcast(void* buf, int64_t bytes, int root, Traffic t) override {
    record(t, direct::bcast(rank_, root, bytes));
    Call c{buf, buf, bytes, 0, root, DType::f32, {}, {}, {}, {}};
    return collective(Kind::bcast, static_cast<int>(t), std::move(c), {});
  }
  Request iallgather(const void* send, void* recv, int64_t bytes, Traffic t) override {
    record(t, direct::allgather(size_, bytes));
    return collective(Kind::allgather, static_cast<int>(t),
                      Call{send, recv, bytes, 0, 0, DType::f32, {}, {}, {}, {}}, {});
  }
  Request ialltoallv(const void* send, const int64_t* sb, const int64_t* so, void* recv,
                     const int64_t* rb, const int64_t* ro, Traffic t) override {
    record(t, direct::alltoallv(size_, rank_, rb));
    const auto v = [this](const int64_t* p) { return std::vector<int64_t>(p, p + size_); };
    return collective(Kind::alltoallv, static_cast<int>(t),
                      Call{send, recv, 0, 0, 0, DType::f32, v(sb), v(so), v(rb), v(ro)}, {});
  }
  Request ireduce_scatter(const float* send, float* recv, int64_t n, Traffic t) override {
    record(t, direct::reduce_scatter(size_, n * 4));
    return collective(Kind::reduce_scatter, static_cast<int>(t),
                      Call{send, recv, 0, n, 0, DType::f32, {}, {}, {}, {}},
                      scratch(send, direct::reduce_scatter_scratch(size_, n), DType::f32));
  }
  Request ireduce(const float* send, float* recv, int64_t n, int root, Traffic t) override {
    record(t, direct::reduce(size_, rank_, root, n * 4));
    return collective(Kind::reduce, static_cast<int>(t),
                      Call{send, recv, 0, n, root, DType::f32, {}, {}, {}, {}},
                      scratch(send, direct::reduce_scratch(size_, rank_, root, n), DType::f32));
  }
  Request iallreduce(float* buf, int64_t n, Traffic t) override { return allreduce(buf, n, t); }
  Request iallreduce(double* buf, int64_t n, Traffic t) override { return allreduce(buf, n, t); }
  Request iallreduce(int64_t* buf, int64_t n, Traffic t) override { return allreduce(buf, n, t); }
  void barrier() override { collective(Kind::barrier, kNumTraffic, Call{}, {}).wait(); }

 protected:
  virtual Request collective(Kind k, int traffic, Call c, std::vector<Tensor> scratch) = 0;
  // MpiComm's scratch for a payload at p: host memory for a host payload, else on the meta device.
  // Only counted, never read (execute() sums straight from the ranks' buffers).
  static std::vector<Tensor> scratch(const void* p, const std::vector<std::vector<int64_t>>& shapes,
                                     DType dt) {
    std::vector<Tensor> out;
    for (const auto& shape : shapes)
      out.push_back(host(p) ? Tensor::empty_host(shape, dt, Cat::comm)
                            : Tensor::empty(shape, dt, Cat::comm));
    return out;
  }
  template <class T>
  Request allreduce(T* buf, int64_t n, Traffic t) {
    record(t, direct::allreduce(size_, n * static_cast<int64_t>(sizeof(T))));
    return collective(Kind::allreduce, static_cast<int>(t),
                      Call{buf, buf, 0, n, 0, dtype_of<T>(), {}, {}, {}, {}},
                      scratch(buf, direct::allreduce_scratch(size_, n), dtype_of<T>()));
  }
  const int rank_, size_;
};

class SimComm : public SimBase {
 public:
  SimComm(std::shared_ptr<Group> g, int rank) : SimBase(rank, g->n), g_(std::move(g)) {}

  Request isend(const void* buf, int64_t bytes, int dst, int tag, Traffic t) override {
    record(t, 0);
    return p2p(true, const_cast<void*>(buf), bytes, rank_, dst, tag, t);
  }
  Request irecv(void* buf, int64_t bytes, int src, int tag, Traffic t) override {
    record(t, direct::recv(rank_, src, bytes), src);
    return p2p(false, buf, bytes, src, rank_, tag, t);
  }

 private:
  Request p2p(bool send, void* buf, int64_t bytes, int src, int dst, int tag, Traffic t) {
    const bool timed = sim::clock() != nullptr;
    std::string what = timed ? last_op() : std::string();
    std::lock_guard lk(g_->mu);
    // A failed rank's peers may have unwound: their buffers are gone, so nothing may be matched.
    if (g_abort) fail("dry run: another simulated rank failed");
    const auto key = std::make_tuple(static_cast<int>(t), src, dst, tag);
    auto& mine = send ? g_->sends[key] : g_->recvs[key];
    auto& other = send ? g_->recvs[key] : g_->sends[key];
    auto op = std::make_shared<P2p>();
    if (send)
      op->send = buf;
    else
      op->recv = buf;
    op->bytes = bytes;
    op->posted_at = sim_now();
    op->interval = sim_interval();
    if (!other.empty()) {
      auto peer = other.front();
      other.pop_front();
      const void* from = send ? buf : peer->send;
      void* to = send ? peer->recv : buf;
      if (host(from) && host(to) && from != to)
        std::memmove(to, from, static_cast<size_t>(std::min(bytes, peer->bytes)));
      // Sent once both sides have posted and the class's link from src to dst is free.
      double& free = g_->p2p_free[{static_cast<int>(t), src, dst}];
      const double start = std::max(std::max(op->posted_at, peer->posted_at) +
                                        g_->link.sync_skew * std::max(op->interval, peer->interval),
                                    free);
      free = op->done_at = peer->done_at =
          start + g_->link.peer_time(static_cast<double>(std::min(bytes, peer->bytes)));
      op->done = true;
      peer->done = true;
    } else {
      mine.push_back(op);
    }
    const double copy = send ? 0 : g_->link.copy_time(static_cast<double>(bytes), true);
    // (utilisation of the rank's inbound capacity, all its links at once: a ring's one link of a
    // full mesh shows as a seventh of it)
    const double wire =
        !send && g_->link.bytes_per_s > 0 ? static_cast<double>(bytes) / g_->link.bytes_per_s : 0;
    return Request(std::make_shared<SimOp>(
        g_, [op] { return op->done.load(); }, std::vector<Tensor>{},
        timed ? std::function<double()>([op] { return op->done_at; }) : nullptr, std::move(what),
        copy, wire, send ? 0 : g_->link.background_copy_time(static_cast<double>(bytes))));
  }
  Request collective(Kind k, int traffic, Call c, std::vector<Tensor> scratch) override {
    const bool timed = sim::clock() != nullptr;
    std::string what = !timed ? std::string() : k == Kind::barrier ? "barrier" : last_op();
    if (k != Kind::barrier) c.received = records().back().bytes;
    c.posted_at = sim_now();
    c.interval = sim_interval();
    const double copy =
        c.received > 0 ? g_->link.copy_time(static_cast<double>(c.received), false) : 0;
    const double wire =
        g_->link.bytes_per_s > 0 ? static_cast<double>(c.received) / g_->link.bytes_per_s : 0;
    std::lock_guard lk(g_->mu);
    if (g_abort) fail("dry run: another simulated rank failed");  // (as in p2p)
    const int64_t seq = g_->seq[rank_][traffic]++;
    auto& slot = g_->slots[{traffic, seq}];
    if (!slot) {
      slot = std::make_shared<Slot>();
      slot->kind = k;
      slot->calls.resize(g_->n);
    }
    ORIGAMI_CHECK(slot->kind == k, "dry run: ranks posted different collectives");
    slot->calls[rank_] = std::move(c);
    auto s = slot;
    if (++s->posted == g_->n) {
      execute(*s);
      // Starts when the last rank has posted and the class's link is free; takes as long as the
      // rank that receives most needs (one latency: MpiComm's exchanges are direct).
      double start = g_->coll_free[static_cast<size_t>(traffic)], most = 0, last = 0, lag = 0;
      for (const Call& x : s->calls) {
        last = std::max(last, x.posted_at);
        lag = std::max(lag, x.interval);
        most = std::max(most, static_cast<double>(x.received));
      }
      start = std::max(start, last + g_->link.sync_skew * lag);
      s->done_at =
          start + (k == Kind::barrier ? g_->link.latency_s : g_->link.coll_time(coll_of(k), most));
      g_->coll_free[static_cast<size_t>(traffic)] = s->done_at;
      s->done = true;
      g_->slots.erase({traffic, seq});
    }
    return Request(std::make_shared<SimOp>(
        g_, [s] { return s->done.load(); }, std::move(scratch),
        timed ? std::function<double()>([s] { return s->done_at; }) : nullptr, std::move(what),
        copy, wire, g_->link.background_copy_time(static_cast<double>(c.received))));
  }
  std::string last_op() const {
    const CommRecord& r = records().back();
    return op_context(r.cat, r.where, r.phase);
  }
  std::shared_ptr<Group> g_;
};

class SoloComm : public SimBase {
 public:
  SoloComm(int size, sim::Link link) : SimBase(0, size), link_(link) {}
  Request isend(const void*, int64_t, int, int, Traffic) override {
    fail("internal: point-to-point on a dry run's replica axis");
  }
  Request irecv(void*, int64_t, int, int, Traffic) override {
    fail("internal: point-to-point on a dry run's replica axis");
  }

 private:
  Request collective(Kind k, int traffic, Call c, std::vector<Tensor> scratch) override {
    if (k == Kind::allgather)  // the absent replicas' blocks: this rank's
      for (int q = 0; q < size_; ++q) {
        char* dst = static_cast<char*>(c.recv) + q * c.bytes;
        if (host(dst) && host(c.send) && dst != c.send)
          std::memmove(dst, c.send, static_cast<size_t>(c.bytes));
      }
    // The scratch lives as long as the request, as MpiComm's does.
    if (!sim::clock() || link_.bytes_per_s <= 0)
      return Request(std::make_shared<SimOp>(
          nullptr, [] { return true; }, std::move(scratch)));
    // The replicas run in step with this rank: the transfer starts when it posts (once the
    // class's link is free) and moves what this rank receives.
    const CommRecord& r = records().back();
    double& free = free_[static_cast<size_t>(traffic)];
    free = std::max(free, sim_now()) + link_.coll_time(coll_of(k), static_cast<double>(r.bytes));
    const double done = free;
    return Request(std::make_shared<SimOp>(
        nullptr, [] { return true; }, std::move(scratch), [done] { return done; },
        op_context(r.cat, r.where, r.phase), link_.copy_time(static_cast<double>(r.bytes), false),
        static_cast<double>(r.bytes) / link_.bytes_per_s,
        link_.background_copy_time(static_cast<double>(r.bytes))));
  }
  sim::Link link_;
  std::array<double, kNumTraffic + 1> free_{};
};

}  // namespace

std::vector<std::unique_ptr<Comm>> make_sim_comms(int n, double timeout_s, sim::Link link) {
  auto g = std::make_shared<Group>(n, timeout_s, link);
  std::vector<std::unique_ptr<Comm>> out;
  for (int i = 0; i < n; ++i) out.push_back(std::make_unique<SimComm>(g, i));
  return out;
}

std::unique_ptr<Comm> make_solo_comm(int size, sim::Link link) {
  return std::make_unique<SoloComm>(size, link);
}

void abort_sim_comms() {
  g_abort = true;
}
void reset_sim_comms() {
  g_abort = false;
}

}  // namespace origami
