// The MPI communicator. Broadcast, all-gather and all-to-all-v are MPI's non-blocking collectives
// (they move bytes, no arithmetic). Reductions are fixed-order point-to-point schedules: every
// rank sends the block a peer owns to that peer, and the owner adds the D contributions in rank
// order 0..D-1 — deterministic, whatever MPI's algorithm of the day. An all-reduce is such a
// reduce-scatter followed by an all-gather of the reduced blocks (2(D-1)M/D received).
#include "comm/mpi_comm.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include "comm/comm.h"
#include "comm/direct.h"
#include "comm/mesh.h"
#include "comm/mpi_wait.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/trace.h"

namespace origami {

const char* phase_name(Phase p) {
  static const char* n[] = {"fwd", "recompute", "bwd"};
  return n[static_cast<int>(p)];
}
const char* traffic_name(Traffic t) {
  static const char* n[] = {"attn_weights", "mlp_weights", "kv",   "grads",
                            "embed_head",   "acts",        "other"};
  return n[static_cast<int>(t)];
}
std::string op_context(Traffic t, int where, Phase p) {
  std::ostringstream o;  // (g++ 12 warns falsely on std::string concatenation here)
  o << traffic_name(t) << ' ';
  if (where >= 0)
    o << 'L' << where;
  else
    o << (where == kWhereEmbed ? "embed" : where == kWhereHead ? "head" : "step");
  o << ' ' << phase_name(p);
  return o.str();
}

namespace {

using Clock = std::chrono::steady_clock;

int icount(int64_t bytes) {
  if (bytes < 0 || bytes > INT_MAX) fail("MPI message of ", bytes, " bytes exceeds INT_MAX");
  return static_cast<int>(bytes);
}

// The emulated link (--emulate-link): each rank's inbound link, shared by all its communicators.
// A transfer of b received bytes starts when the link is free (and not before it is posted),
// occupies it b/bandwidth seconds and completes latency later.
struct Link {
  double bytes_per_s = 0, latency_s = 0;
  Clock::time_point free{};
};
Link g_link;
double g_blocked_s = 0;  // time spent blocked in wait() (exposed communication)
double g_timeout_s = 0;  // --timeout: the longest a wait may go without completing (0: no limit)

// A wait that has gone past --timeout: a peer stopped, died or lost its link. Every other wait of
// the job is as stuck, so this rank ends the job, saying what it waited for.
[[noreturn]] void timed_out(const std::string& what, Clock::time_point since) {
  comm_timed_out(what, std::chrono::duration<double>(Clock::now() - since).count());
}
bool past(Clock::time_point since) {
  return g_timeout_s > 0 &&
         std::chrono::duration<double>(Clock::now() - since).count() > g_timeout_s;
}
// MPI_Waitall with --timeout: polls (as MPI_Waitall itself spins) and gives up past it; what()
// names the operation (built only then).
template <class What>
void wait_all(std::vector<MPI_Request>& reqs, const What& what, Clock::time_point since) {
  if (reqs.empty()) return;
  if (g_timeout_s <= 0) {
    MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE);
    return;
  }
  int flag = 0;
  for (int i = 0; !flag; ++i) {
    MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &flag, MPI_STATUSES_IGNORE);
    if (!flag && i % 1024 == 1023 && past(since)) timed_out(what(), since);
  }
}

// Every operation's state, the registry of live operations, the link and the communicators'
// records are touched under this lock: by the calling thread and by the progress thread.
// Recursive, so that nothing that runs under it can deadlock on it.
std::recursive_mutex g_mu;
class StagedOp;
std::vector<StagedOp*> g_live;  // operations not yet destroyed, in posting order

// The progress thread (--progress-thread US): every US microseconds it tests every live
// operation, so transfers advance while the calling thread computes.
// It sleeps on g_cv while no operation has MPI work left (g_pending == 0), so an idle rank's
// compute is not interrupted.
std::thread g_progress;
std::atomic<bool> g_progress_stop{false}, g_progress_on{false};
std::condition_variable_any g_cv;
int g_pending = 0;  // live operations whose MPI stages are not all complete

// A sequence of stages; each posts MPI requests and, when they complete, runs its finish step.
// The operation completes when its last stage has and, with an emulated link, not before its
// deadline; then its time is recorded (and traced).
class StagedOp : public Request::Op {
 public:
  struct Stage {
    std::function<void(std::vector<MPI_Request>&)> post;
    std::function<void()> finish;
  };
  StagedOp(Comm* c, size_t rec, std::vector<Stage> st)
      : comm_(c), rec_(rec), stages_(std::move(st)), t0_(Clock::now()), deadline_(t0_) {
    const CommRecord& r = comm_->records()[rec_];
    if (g_link.bytes_per_s > 0 && r.bytes > 0) {
      const auto start = std::max(t0_, g_link.free);
      const auto busy = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(static_cast<double>(r.bytes) / g_link.bytes_per_s));
      g_link.free = start + busy;
      deadline_ = g_link.free + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(g_link.latency_s));
    }
    g_live.push_back(this);
    ++g_pending;
    start_next();
    if (!mpi_done_) g_cv.notify_one();
  }
  // Runs where the last Request is dropped (the calling thread), so the temporaries the stages
  // hold are freed there, at the point the memory model expects.
  ~StagedOp() override {
    std::lock_guard lk(g_mu);
    if (!mpi_done_) --g_pending;  // dropped unfinished (an error path)
    std::erase(g_live, this);
  }
  bool test() override {
    std::lock_guard lk(g_mu);
    return test_locked();
  }
  // Advances the MPI stages as far as they go without blocking; true when all are complete.
  bool advance_locked() {
    while (!mpi_done_) {
      int flag = 1;
      if (!reqs_.empty())
        MPI_Testall(static_cast<int>(reqs_.size()), reqs_.data(), &flag, MPI_STATUSES_IGNORE);
      if (!flag) return false;
      finish_current();
    }
    return true;
  }
  bool test_locked() {
    if (!advance_locked()) return false;
    if (!done_ && Clock::now() < deadline_) return false;
    complete();
    return true;
  }
  void wait() override {
    const auto tw = Clock::now();
    const auto what = [this] { return "the wait for " + name(); };
    std::unique_lock lk(g_mu);
    if (done_) return;
    if (g_progress_on) {
      // The progress thread moves it too. Poll, yielding the core between tests, for up to
      // kSpin: a rendezvous takes several handshakes, each needing a test on both sides, and a
      // sleep is at least the timer slack (50 us) — a 1 MiB all-gather took 4x MPI's time when
      // every poll slept. Past kSpin (the peer is computing) poll and sleep instead of spinning in
      // MPI_Waitall, which would hold a core that another rank's compute may need (ranks >= cores
      // here).
      constexpr auto kSpin = std::chrono::microseconds(200);
      while (!advance_locked()) {
        const auto now = Clock::now();
        if (past(tw)) timed_out(what(), tw);
        lk.unlock();
        if (now - tw < kSpin)
          std::this_thread::yield();
        else
          std::this_thread::sleep_for(std::chrono::microseconds(20));
        lk.lock();
      }
    }
    while (!mpi_done_) {
      wait_all(reqs_, what, tw);
      finish_current();
    }
    lk.unlock();
    std::this_thread::sleep_until(deadline_);  // the emulated link: sleep, do not spin
    lk.lock();
    complete();
    lk.unlock();
    const auto t1 = Clock::now();
    g_blocked_s += std::chrono::duration<double>(t1 - tw).count();
    if (Trace::get().on() && t1 - tw > std::chrono::microseconds(2)) {
      Trace& tr = Trace::get();
      const double now = tr.now_us();
      tr.span(std::string("wait ").append(name()), 0,
              now - std::chrono::duration<double, std::micro>(t1 - tw).count(), now);
    }
  }

 private:
  std::string name() const {
    const CommRecord& r = comm_->records()[rec_];
    return op_context(r.cat, r.where, r.phase);
  }
  void start_next() {
    reqs_.clear();
    if (cur_ == stages_.size()) {
      mpi_done_ = true;
      --g_pending;
      return;
    }
    stages_[cur_].post(reqs_);
  }
  void finish_current() {
    if (stages_[cur_].finish) stages_[cur_].finish();
    ++cur_;
    start_next();
  }
  void complete() {
    if (done_) return;
    done_ = true;
    const auto t1 = Clock::now();
    comm_->set_seconds(rec_, std::chrono::duration<double>(t1 - t0_).count());
    if (Trace::get().on()) {
      Trace& tr = Trace::get();
      const double now = tr.now_us();
      tr.span(name(), 1, now - std::chrono::duration<double, std::micro>(t1 - t0_).count(), now,
              comm_->records()[rec_].bytes);
    }
  }
  Comm* comm_;
  size_t rec_;
  std::vector<Stage> stages_;
  size_t cur_ = 0;
  bool mpi_done_ = false, done_ = false;
  std::vector<MPI_Request> reqs_;
  Clock::time_point t0_, deadline_;
};

void progress_locked() {
  // test_locked() never destroys an operation, so the registry is stable during the loop.
  for (StagedOp* op : g_live) op->test_locked();
}
void progress_all() {
  // If the progress thread is inside MPI right now, the transfers are being moved: do not queue
  // behind it.
  std::unique_lock lk(g_mu, std::try_to_lock);
  if (lk) progress_locked();
}

}  // namespace

void set_emulated_link(double gbps, double latency_us) {
  std::lock_guard lk(g_mu);
  g_link.bytes_per_s = gbps * 1e9;
  g_link.latency_s = latency_us * 1e-6;
}

bool set_progress_thread(double interval_us) {
  if (g_progress.joinable()) {
    {
      std::lock_guard lk(g_mu);
      g_progress_stop = true;
    }
    g_cv.notify_all();
    g_progress.join();
    g_progress_on = false;
    g_progress_stop = false;
  }
  int init = 0;
  MPI_Initialized(&init);
  if (!(interval_us > 0) || !init) return false;
  int level = 0;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE) {
    static bool warned = false;
    if (!warned)
      std::fprintf(stderr,
                   "origami: note: MPI provides no MPI_THREAD_MULTIPLE; the progress thread is "
                   "off\n");
    warned = true;
    return false;
  }
  const auto dt = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::micro>(interval_us));
  g_progress_on = true;
  g_progress = std::thread([dt] {
    while (!g_progress_stop) {
      {
        std::unique_lock lk(g_mu);
        g_cv.wait(lk, [] { return g_progress_stop || g_pending > 0; });
        progress_locked();
      }
      std::this_thread::sleep_for(dt);
    }
  });
  return true;
}
double comm_blocked_seconds() {
  return g_blocked_s;
}

class MpiComm : public Comm {
 public:
  explicit MpiComm(MPI_Comm base) {
    int init = 0;
    MPI_Initialized(&init);
    if (!init) fail("internal: MPI communicator created before MPI_Init");
    MPI_Comm_rank(base, &rank_);
    MPI_Comm_size(base, &size_);
    for (auto& c : comms_) MPI_Comm_dup(base, &c);
  }
  ~MpiComm() override {
    for (auto& c : comms_) MPI_Comm_free(&c);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Request isend(const void* buf, int64_t bytes, int dst, int tag, Traffic t) override {
    check_tag(tag);
    return staged(t, 0,
                  {{[=, this](std::vector<MPI_Request>& r) {
                      r.emplace_back();
                      MPI_Isend(buf, icount(bytes), MPI_BYTE, dst, tag, c(t), &r.back());
                    },
                    nullptr}});
  }
  Request irecv(void* buf, int64_t bytes, int src, int tag, Traffic t) override {
    check_tag(tag);
    return staged(t, direct::recv(rank_, src, bytes),
                  {{[=, this](std::vector<MPI_Request>& r) {
                      r.emplace_back();
                      MPI_Irecv(buf, icount(bytes), MPI_BYTE, src, tag, c(t), &r.back());
                    },
                    nullptr}},
                  src);
  }
  Request ibcast(void* buf, int64_t bytes, int root, Traffic t) override {
    return staged(t, direct::bcast(rank_, root, bytes),
                  {{[=, this](std::vector<MPI_Request>& r) {
                      r.emplace_back();
                      MPI_Ibcast(buf, icount(bytes), MPI_BYTE, root, c(t), &r.back());
                    },
                    nullptr}});
  }
  Request iallgather(const void* send, void* recv, int64_t bytes, Traffic t) override {
    const int64_t received = direct::allgather(size_, bytes);
    char* own = static_cast<char*>(recv) + rank_ * bytes;
    const void* src = send == own ? MPI_IN_PLACE : send;
    return staged(t, received,
                  {{[=, this](std::vector<MPI_Request>& r) {
                      r.emplace_back();
                      MPI_Iallgather(src, icount(bytes), MPI_BYTE, recv, icount(bytes), MPI_BYTE,
                                     c(t), &r.back());
                    },
                    nullptr}});
  }
  Request ialltoallv(const void* send, const int64_t* sb, const int64_t* so, void* recv,
                     const int64_t* rb, const int64_t* ro, Traffic t) override {
    const int64_t in = direct::alltoallv(size_, rank_, rb);
    auto v = std::make_shared<std::array<std::vector<int>, 4>>();
    for (int i = 0; i < size_; ++i) {
      (*v)[0].push_back(icount(sb[i]));
      (*v)[1].push_back(icount(so[i]));
      (*v)[2].push_back(icount(rb[i]));
      (*v)[3].push_back(icount(ro[i]));
    }
    return staged(t, in,
                  {{[=, this](std::vector<MPI_Request>& r) {
                      r.emplace_back();
                      MPI_Ialltoallv(send, (*v)[0].data(), (*v)[1].data(), MPI_BYTE, recv,
                                     (*v)[2].data(), (*v)[3].data(), MPI_BYTE, c(t), &r.back());
                    },
                    [v] {}}});
  }

  Request ireduce_scatter(const float* send, float* recv, int64_t n, Traffic t) override {
    return staged(t, direct::reduce_scatter(size_, n * 4),
                  {reduce_blocks<float>([send, n](int q) { return send + q * n; }, recv, n,
                                        [n](int) { return n; }, t, next_tag(t))});
  }

  Request ireduce(const float* send, float* recv, int64_t n, int root, Traffic t) override {
    const int64_t received = direct::reduce(size_, rank_, root, n * 4);
    const int tag = next_tag(t);
    auto tmp = std::make_shared<Tensor>();
    for (auto& shape : direct::reduce_scratch(size_, rank_, root, n))
      *tmp = Tensor::empty_host(shape, DType::f32, Cat::comm);
    return staged(t, received,
                  {{[=, this](std::vector<MPI_Request>& r) {
                      if (rank_ != root) {
                        r.emplace_back();
                        MPI_Isend(send, icount(n * 4), MPI_BYTE, root, tag, c(t), &r.back());
                        return;
                      }
                      for (int i = 0, k = 0; i < size_; ++i) {
                        if (i == root) continue;
                        r.emplace_back();
                        MPI_Irecv(tmp->data<float>() + (k++) * n, icount(n * 4), MPI_BYTE, i, tag,
                                  c(t), &r.back());
                      }
                    },
                    [=, this] {
                      if (rank_ != root) return;
                      sum_in_rank_order<float>(recv, send, tmp.get(), n, n, root);
                    }}});
  }

  Request iallreduce(float* buf, int64_t n, Traffic t) override {
    return allreduce<float>(buf, n, t);
  }
  Request iallreduce(double* buf, int64_t n, Traffic t) override {
    return allreduce<double>(buf, n, t);
  }
  Request iallreduce(int64_t* buf, int64_t n, Traffic t) override {
    return allreduce<int64_t>(buf, n, t);
  }

  void progress() override { progress_all(); }
  void barrier() override { bounded_barrier(comms_[static_cast<int>(Traffic::other)]); }

 private:
  MPI_Comm c(Traffic t) const { return comms_[static_cast<int>(t)]; }
  static void check_tag(int tag) {
    if (tag < 0 || tag >= kCollTag0) fail("internal: point-to-point tag ", tag, " out of range");
  }
  int next_tag(Traffic t) {
    int& k = tags_[static_cast<int>(t)];
    k = (k + 1) % 30000;
    return kCollTag0 + k;
  }
  // Records the operation (`received` bytes at this rank, in the current context) and starts it;
  // under the lock, since the progress thread reads the records and the live operations.
  Request staged(Traffic t, int64_t received, std::vector<StagedOp::Stage> st, int peer = -1) {
    std::lock_guard lk(g_mu);
    const size_t rec = record(t, received, peer);
    return Request(std::make_shared<StagedOp>(this, rec, std::move(st)));
  }

  // dst[i] = sum over ranks q in order 0..D-1 of (q == own ? own_src[i] : tmp[k(q) * row + i]),
  // i < n: per element the same additions in the same order as one scalar loop, run in blocks so
  // that they vectorise. Every source is read before dst's block is written: dst may alias
  // own_src.
  template <class T>
  void sum_in_rank_order(T* dst, const T* own_src, const Tensor* tmp, int64_t n, int64_t row,
                         int own) {
    const T* t0 = tmp->defined() ? static_cast<const T*>(tmp->raw()) : nullptr;
    constexpr int64_t kBlock = 1024;
    T acc[kBlock];
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      const int64_t b = std::min(kBlock, n - i0);
      for (int q = 0, k = 0; q < size_; ++q) {
        const T* s = (q == own ? own_src : t0 + (k++) * row) + i0;
        if (q == 0)
          std::copy(s, s + b, acc);
        else
          for (int64_t j = 0; j < b; ++j) acc[j] += s[j];
      }
      std::copy(acc, acc + b, dst + i0);
    }
  }

  // Each rank sends block q of the payload (len(q) elements at from(q)) to rank q and sums the D
  // contributions to its own block, in rank order, into recv (len(rank) elements; recv may be the
  // own block). The received blocks go to scratch rows of m >= len(q) elements.
  template <class T, class From, class Len>
  StagedOp::Stage reduce_blocks(From from, T* recv, int64_t m, Len len, Traffic t, int tag) {
    auto tmp = std::make_shared<Tensor>();
    for (auto& shape : direct::reduce_scatter_scratch(size_, m))
      *tmp = Tensor::empty_host(shape, dtype_of<T>(), Cat::comm);
    return {
        [=, this](std::vector<MPI_Request>& r) {
          for (int q = 0, k = 0; q < size_; ++q) {
            if (q == rank_) continue;
            r.emplace_back();
            MPI_Isend(from(q), icount(len(q) * sizeof(T)), MPI_BYTE, q, tag, c(t), &r.back());
            r.emplace_back();
            MPI_Irecv(static_cast<T*>(tmp->raw()) + (k++) * m, icount(len(rank_) * sizeof(T)),
                      MPI_BYTE, q, tag, c(t), &r.back());
          }
        },
        [=, this] { sum_in_rank_order<T>(recv, from(rank_), tmp.get(), len(rank_), m, rank_); }};
  }

  // In place: a reduce-scatter of D blocks of m = ceil(n / D) elements (the last ones shorter,
  // possibly empty), each rank's block summed into buf itself, then an all-gather of the reduced
  // blocks straight into buf. Scratch: the reduce-scatter's received blocks only
  // (direct::allreduce_scratch).
  template <class T>
  Request allreduce(T* buf, int64_t n, Traffic t) {
    const int64_t received = direct::allreduce(size_, n * static_cast<int64_t>(sizeof(T)));
    if (size_ == 1) return staged(t, received, {});
    const int64_t m = direct::allreduce_block(size_, n);
    const auto len = [n, m](int q) { return std::clamp<int64_t>(n - q * m, 0, m); };
    const auto block = [buf, n, m](int q) { return buf + std::min<int64_t>(q * m, n); };
    const int tag1 = next_tag(t), tag2 = next_tag(t);
    std::vector<StagedOp::Stage> st;
    st.push_back(reduce_blocks<T>(block, block(rank_), m, len, t, tag1));
    st.push_back({[=, this](std::vector<MPI_Request>& r) {
                    for (int q = 0; q < size_; ++q) {
                      if (q == rank_) continue;
                      r.emplace_back();
                      MPI_Isend(block(rank_), icount(len(rank_) * sizeof(T)), MPI_BYTE, q, tag2,
                                c(t), &r.back());
                      r.emplace_back();
                      MPI_Irecv(block(q), icount(len(q) * sizeof(T)), MPI_BYTE, q, tag2, c(t),
                                &r.back());
                    }
                  },
                  nullptr});
    return staged(t, received, std::move(st));
  }

  static constexpr int kCollTag0 = 1000;
  int rank_ = 0, size_ = 1;
  std::array<MPI_Comm, kNumTraffic> comms_{};
  std::array<int, kNumTraffic> tags_{};
};

std::unique_ptr<Comm> make_mpi_comm() {
  return std::make_unique<MpiComm>(MPI_COMM_WORLD);
}

Mesh make_mesh(int M, int T, CommMaker make) {
  Mesh m;
  int init = 0;
  MPI_Initialized(&init);
  if (!init) {
    m.model = make_self_comm();
    m.dp = make_self_comm();
    m.tp = make_self_comm();
    m.sp = make_self_comm();
    return m;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &m.world_rank);
  const int w = m.world_rank, replica = w / M, i = w % M;
  auto split = [&](int color, int key) {
    MPI_Comm c;
    MPI_Comm_split(MPI_COMM_WORLD, color, key, &c);
    int n = 1;
    MPI_Comm_size(c, &n);
    // A one-rank axis of another kind needs no library communicator (NCCL's would cost a
    // context of its own per traffic class).
    std::unique_ptr<Comm> comm = !make    ? std::make_unique<MpiComm>(c)
                                 : n == 1 ? make_self_comm()
                                          : make(c);
    MPI_Comm_free(&c);
    return comm;
  };
  m.model = split(replica, i);
  m.dp = split(i, replica);
  m.tp = split(w / T, i % T);
  m.sp = split(replica * T + i % T, i / T);
  return m;
}

int mpi_world_size() {
  int init = 0, world = 1;
  MPI_Initialized(&init);
  if (init) MPI_Comm_size(MPI_COMM_WORLD, &world);
  return world;
}

void set_comm_timeout(double seconds) {
  g_timeout_s = seconds;
}

double comm_timeout() {
  return g_timeout_s;
}

void comm_abort(const std::string& message) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "origami: error on rank %d: %s; ending the job\n", rank, message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 3);
  std::abort();
}

void comm_timed_out(const std::string& what, double waited_s) {
  char how[160];
  std::snprintf(how, sizeof how,
                " has not completed after %.0f s (--timeout=%g): a rank stopped, died or lost "
                "its link",
                waited_s, g_timeout_s);
  comm_abort(what + how);
}

void bounded_barrier(MPI_Comm c) {
  std::vector<MPI_Request> r(1);
  MPI_Ibarrier(c, r.data());
  wait_all(
      r, [] { return std::string("a barrier"); }, Clock::now());
}

bool any_rank(bool flag) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return flag;
  static MPI_Comm control = [] {
    MPI_Comm c;
    MPI_Comm_dup(MPI_COMM_WORLD, &c);
    return c;
  }();
  int v = flag ? 1 : 0;
  std::vector<MPI_Request> r(1);
  MPI_Iallreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, control, r.data());
  wait_all(
      r, [] { return std::string("the stop-request agreement"); }, Clock::now());
  return v != 0;
}

}  // namespace origami
