#include "cuda/nccl_comm.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "comm/mpi_comm.h"
#include "comm/mpi_wait.h"
#include "core/error.h"
#include "cuda/runtime.h"

namespace origami::cuda {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("NCCL ", what, " failed: ", ncclGetErrorString(r));
}

std::string nccl_version() {
  int v = 0;
  ncclGetVersion(&v);
  return cat(v / 10000, ".", v / 100 % 100, ".", v % 100);
}

namespace {
// The ranks of `comm` on this node, in `comm`'s order; the caller frees it.
MPI_Comm node_comm(MPI_Comm comm) {
  MPI_Comm node;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  return node;
}
}  // namespace

DeviceCensus device_census(MPI_Comm comm) {
  MPI_Comm node = node_comm(comm);
  int node_size = 1;
  MPI_Comm_size(node, &node_size);
  MPI_Comm_free(&node);
  const int n = device_count();
  int mine[2] = {n, n >= node_size ? 1 : 0}, all[2] = {0, 0};
  MPI_Allreduce(mine, all, 2, MPI_INT, MPI_MIN, comm);
  DeviceCensus c;
  c.min_devices = all[0];
  c.all_have_device = all[0] > 0;
  c.one_per_rank = all[1] == 1;
  return c;
}

ncclUniqueId bootstrap_id(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  int ok = 1;
  if (rank == 0) ok = ncclGetUniqueId(&id) == ncclSuccess;
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  ORIGAMI_CHECK(ok, "NCCL: rank 0 could not make a unique id (ncclGetUniqueId)");
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm);
  return id;
}

NcclComm::NcclComm(MPI_Comm comm) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
  const int n = device_count();
  ORIGAMI_CHECK(n > 0, "NCCL communicator on rank ", rank_, ": no CUDA device");
  // The device of this process: its rank among the node's ranks of the world (the same for
  // every communicator it belongs to), modulo the node's devices.
  MPI_Comm node = node_comm(MPI_COMM_WORLD);
  int local = 0;
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  ORIGAMI_CUDA_CHECK(cudaSetDevice(local % n));
  const ncclUniqueId id = bootstrap_id(comm);
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  check_nccl(ncclCommInitRankConfig(&c_, size_, id, rank_, &cfg), "ncclCommInitRankConfig");
}

NcclComm::~NcclComm() {
  if (c_) ncclCommDestroy(c_);
}

}  // namespace origami::cuda

// ---- origami::Comm over NCCL
// ---------------------------------------------------------------------

namespace origami::cuda {
namespace {

class EventOp : public Request::Op {
 public:
  explicit EventOp(cudaEvent_t e) : e_(e) {}
  ~EventOp() override { cudaEventDestroy(e_); }
  bool test() override {
    const cudaError_t r = cudaEventQuery(e_);
    if (r == cudaErrorNotReady) return false;
    ORIGAMI_CUDA_CHECK(r);
    return true;
  }
  void wait() override { ORIGAMI_CUDA_CHECK(cudaStreamWaitEvent(current_stream(), e_, 0)); }
  void sync() { ORIGAMI_CUDA_CHECK(cudaEventSynchronize(e_)); }

 private:
  cudaEvent_t e_;
};

// A host buffer among an operation's arguments: NCCL takes device memory only, so it travels
// through a device copy (made before the operation; copied back after it when it is an output).
struct HostStage {
  void* host;
  void* dev;
  size_t bytes;
  bool out;
};

// An operation with host buffers: complete once the copies back are on the host, so a waiter
// may read them at once (this one blocks the host, unlike EventOp; the engines pass only small
// host arrays: counts, token ids, loss sums).
class HostStagedOp : public Request::Op {
 public:
  HostStagedOp(std::shared_ptr<EventOp> op, cudaStream_t s, std::vector<HostStage> st)
      : op_(std::move(op)), s_(s), st_(std::move(st)) {}
  bool test() override {
    std::lock_guard<std::mutex> g(m_);
    if (!done_ && op_->test()) finish();
    return done_;
  }
  void wait() override {
    std::lock_guard<std::mutex> g(m_);
    if (done_) return;
    op_->sync();
    finish();
  }

 private:
  void finish() {
    for (const HostStage& h : st_) {
      if (h.out)
        ORIGAMI_CUDA_CHECK(cudaMemcpyAsync(h.host, h.dev, h.bytes, cudaMemcpyDeviceToHost, s_));
      ORIGAMI_CUDA_CHECK(cudaFreeAsync(h.dev, s_));
    }
    ORIGAMI_CUDA_CHECK(cudaStreamSynchronize(s_));
    done_ = true;
  }
  std::shared_ptr<EventOp> op_;
  cudaStream_t s_;
  std::vector<HostStage> st_;
  std::mutex m_;
  bool done_ = false;
};

bool is_device_memory(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// The NCCL watchdog (--timeout on NCCL): Request::wait() only orders streams, so a stuck NCCL
// operation (a peer stopped, died or lost its link) would hang the host wherever it next
// synchronises. One thread per process polls every operation posted, and every live NCCL
// communicator's asynchronous error, every 100 ms: an operation not complete after --timeout,
// or an asynchronous error, prints what it was (operation, category, layer, phase, peer) and
// ends the job (comm_timed_out: MPI_Abort, exit 3), as the MPI communicator does in its waits.
class Watchdog {
 public:
  static Watchdog& get() {
    static Watchdog w;
    return w;
  }
  void add_comm(ncclComm_t c) {
    std::lock_guard lk(m_);
    comms_.push_back(c);
    if (!thread_.joinable() && comm_timeout() > 0) {
      int dev = 0;
      ORIGAMI_CUDA_CHECK(cudaGetDevice(&dev));
      stop_ = false;
      thread_ = std::thread([this, dev] { loop(dev); });
    }
  }
  // Stops the thread with the last communicator (before MPI_Finalize, as the comms go).
  void remove_comm(ncclComm_t c) {
    std::unique_lock lk(m_);
    comms_.erase(std::remove(comms_.begin(), comms_.end(), c), comms_.end());
    if (!comms_.empty() || !thread_.joinable()) return;
    stop_ = true;
    cv_.notify_all();
    std::thread t = std::move(thread_);
    lk.unlock();
    t.join();
    std::lock_guard lk2(m_);
    ops_.clear();
  }
  void watch(std::shared_ptr<EventOp> op, std::string what) {
    if (comm_timeout() <= 0) return;
    std::lock_guard lk(m_);
    ops_.push_back({std::move(op), std::move(what), Clock::now()});
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::shared_ptr<EventOp> op;
    std::string what;
    Clock::time_point posted;
  };
  void loop(int dev) {
    cudaSetDevice(dev);
    std::unique_lock lk(m_);
    while (!stop_) {
      cv_.wait_for(lk, std::chrono::milliseconds(100));
      if (stop_) break;
      const auto now = Clock::now();
      for (size_t i = 0; i < ops_.size();) {
        bool done = false;
        try {
          done = ops_[i].op->test();
        } catch (const std::exception& e) {
          comm_abort("NCCL's " + ops_[i].what + " failed: " + e.what());
        }
        if (done) {
          ops_[i] = std::move(ops_.back());
          ops_.pop_back();
          continue;
        }
        const double waited = std::chrono::duration<double>(now - ops_[i].posted).count();
        if (waited > comm_timeout()) comm_timed_out("NCCL's " + ops_[i].what, waited);
        ++i;
      }
      for (ncclComm_t c : comms_) {
        ncclResult_t async = ncclSuccess;
        if (ncclCommGetAsyncError(c, &async) == ncclSuccess && async != ncclSuccess &&
            async != ncclInProgress)
          comm_abort(std::string("an NCCL communicator failed: ") + ncclGetErrorString(async));
      }
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::thread thread_;
  bool stop_ = false;
  std::vector<ncclComm_t> comms_;
  std::vector<Entry> ops_;
};

class NcclDeviceComm : public Comm {
 public:
  explicit NcclDeviceComm(MPI_Comm comm) : mpi_(dup(comm)), base_(comm) {
    rank_ = base_.rank(), size_ = base_.size();
    for (int t = 0; t < kNumTraffic; ++t) {
      ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
      check_nccl(ncclCommSplit(base_.get(), 0, rank_, &comms_[t], &cfg), "ncclCommSplit");
      ORIGAMI_CUDA_CHECK(cudaStreamCreateWithFlags(&streams_[t], cudaStreamNonBlocking));
      Watchdog::get().add_comm(comms_[t]);
    }
  }
  ~NcclDeviceComm() override {
    for (int t = 0; t < kNumTraffic; ++t) {
      cudaStreamSynchronize(streams_[t]);
      Watchdog::get().remove_comm(comms_[t]);
      ncclCommDestroy(comms_[t]);
      cudaStreamDestroy(streams_[t]);
    }
    MPI_Comm_free(&mpi_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Request isend(const void* buf, int64_t bytes, int dst, int, Traffic t) override {
    const void* b = in(buf, bytes, t);
    return op(t, 0, "ncclSend", dst, [&](ncclComm_t c, cudaStream_t s) {
      check_nccl(ncclSend(b, static_cast<size_t>(bytes), ncclChar, dst, c, s), "ncclSend");
    });
  }
  Request irecv(void* buf, int64_t bytes, int src, int, Traffic t) override {
    void* b = out(buf, bytes, false, t);
    return op(t, bytes, "ncclRecv", src, [&](ncclComm_t c, cudaStream_t s) {
      check_nccl(ncclRecv(b, static_cast<size_t>(bytes), ncclChar, src, c, s), "ncclRecv");
    });
  }
  Request ibcast(void* buf, int64_t bytes, int root, Traffic t) override {
    void* b = out(buf, bytes, true, t);
    return op(t, rank_ == root ? 0 : bytes, "ncclBroadcast", root,
              [&](ncclComm_t c, cudaStream_t s) {
                check_nccl(ncclBroadcast(b, b, static_cast<size_t>(bytes), ncclChar, root, c, s),
                           "ncclBroadcast");
              });
  }
  Request iallgather(const void* send, void* recv, int64_t bytes, Traffic t) override {
    // send may be recv's own block (in place): then one device copy holds both
    const bool alias = send == static_cast<const char*>(recv) + rank_ * bytes;
    void* r = out(recv, bytes * size_, alias, t);
    const void* snd = alias ? static_cast<char*>(r) + rank_ * bytes : in(send, bytes, t);
    return op(t, (size_ - 1) * bytes, "ncclAllGather", -1, [&](ncclComm_t c, cudaStream_t s) {
      check_nccl(ncclAllGather(snd, r, static_cast<size_t>(bytes), ncclChar, c, s),
                 "ncclAllGather");
    });
  }
  Request ireduce_scatter(const float* send, float* recv, int64_t n, Traffic t) override {
    const void* snd = in(send, n * size_ * 4, t);
    void* r = out(recv, n * 4, false, t);
    return op(t, (size_ - 1) * n * 4, "ncclReduceScatter", -1, [&](ncclComm_t c, cudaStream_t s) {
      check_nccl(ncclReduceScatter(snd, r, static_cast<size_t>(n), ncclFloat32, ncclSum, c, s),
                 "ncclReduceScatter");
    });
  }
  Request ireduce(const float* send, float* recv, int64_t n, int root, Traffic t) override {
    const void* snd = in(send, n * 4, t);
    void* r = rank_ == root ? out(recv, n * 4, false, t) : recv;
    return op(t, rank_ == root ? (size_ - 1) * n * 4 : 0, "ncclReduce", root,
              [&](ncclComm_t c, cudaStream_t s) {
                check_nccl(
                    ncclReduce(snd, r, static_cast<size_t>(n), ncclFloat32, ncclSum, root, c, s),
                    "ncclReduce");
              });
  }
  Request iallreduce(float* buf, int64_t n, Traffic t) override {
    return allreduce(buf, n, ncclFloat32, 4, t);
  }
  Request iallreduce(double* buf, int64_t n, Traffic t) override {
    return allreduce(buf, n, ncclFloat64, 8, t);
  }
  Request iallreduce(int64_t* buf, int64_t n, Traffic t) override {
    return allreduce(buf, n, ncclInt64, 8, t);
  }
  Request ialltoallv(const void* send, const int64_t* sb, const int64_t* so, void* recv,
                     const int64_t* rb, const int64_t* ro, Traffic t) override {
    int64_t received = 0;
    for (int q = 0; q < size_; ++q)
      if (q != rank_) received += rb[q];
    int64_t sext = 0, rext = 0;  // extents of the send and receive layouts
    for (int q = 0; q < size_; ++q) {
      sext = std::max(sext, so[q] + sb[q]);
      rext = std::max(rext, ro[q] + rb[q]);
    }
    const char* in = static_cast<const char*>(this->in(send, sext, t));
    char* out = static_cast<char*>(this->out(recv, rext, false, t));
    return op(t, received, "all-to-all (ncclSend/ncclRecv)", -1, [&](ncclComm_t c, cudaStream_t s) {
      ORIGAMI_CUDA_CHECK(cudaMemcpyAsync(out + ro[rank_], in + so[rank_],
                                         static_cast<size_t>(rb[rank_]), cudaMemcpyDeviceToDevice,
                                         s));
      check_nccl(ncclGroupStart(), "ncclGroupStart");
      for (int q = 0; q < size_; ++q) {
        if (q == rank_) continue;
        if (sb[q])
          check_nccl(ncclSend(in + so[q], static_cast<size_t>(sb[q]), ncclChar, q, c, s),
                     "ncclSend");
        if (rb[q])
          check_nccl(ncclRecv(out + ro[q], static_cast<size_t>(rb[q]), ncclChar, q, c, s),
                     "ncclRecv");
      }
      check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    });
  }
  void progress() override {}
  void barrier() override {
    for (auto s : streams_) ORIGAMI_CUDA_CHECK(cudaStreamSynchronize(s));
    ORIGAMI_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
    bounded_barrier(mpi_);
  }
  void begin_group() override {
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    ++group_;
  }
  void end_group() override {
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    --group_;
    // Every stream that took an operation in the group gets its completion event now.
    for (Pending& p : pending_) {
      *p.slot = event_after(p.stream);
      Watchdog::get().watch(*p.slot, std::move(p.what));
    }
    pending_.clear();
  }

 private:
  template <class T>
  Request allreduce(T* buf, int64_t n, ncclDataType_t dt, int64_t es, Traffic t) {
    void* b = out(buf, n * es, true, t);
    return op(t, 2 * (size_ - 1) * n * es / size_, "ncclAllReduce", -1,
              [&](ncclComm_t c, cudaStream_t s) {
                check_nccl(ncclAllReduce(b, b, static_cast<size_t>(n), dt, ncclSum, c, s),
                           "ncclAllReduce");
              });
  }
  static MPI_Comm dup(MPI_Comm c) {
    MPI_Comm d;
    MPI_Comm_dup(c, &d);
    return d;
  }
  // p itself when it is device memory, else a device copy of its `bytes` (taken now), freed when
  // the operation completes.
  const void* in(const void* p, int64_t bytes, Traffic t) {
    if (bytes <= 0 || is_device_memory(p)) return p;
    return stage(const_cast<void*>(p), bytes, true, false, t);
  }
  // The same for a buffer the operation writes: copied back to p when it completes (and copied
  // over first when the operation also reads it).
  void* out(void* p, int64_t bytes, bool read_too, Traffic t) {
    if (bytes <= 0 || is_device_memory(p)) return p;
    return stage(p, bytes, read_too, true, t);
  }
  void* stage(void* host, int64_t bytes, bool copy_in, bool copy_out, Traffic t) {
    ORIGAMI_CHECK(group_ == 0, "NCCL: host buffers inside begin_group/end_group");
    const cudaStream_t s = streams_[static_cast<int>(t)];
    void* d = nullptr;
    ORIGAMI_CUDA_CHECK(cudaMallocAsync(&d, static_cast<size_t>(bytes), s));
    if (copy_in) {
      ORIGAMI_CUDA_CHECK(
          cudaMemcpyAsync(d, host, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, s));
      ORIGAMI_CUDA_CHECK(cudaStreamSynchronize(s));  // the caller may reuse host at once
    }
    staged_.push_back({host, d, static_cast<size_t>(bytes), copy_out});
    return d;
  }
  std::shared_ptr<EventOp> event_after(cudaStream_t s) {
    cudaEvent_t e;
    ORIGAMI_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    ORIGAMI_CUDA_CHECK(cudaEventRecord(e, s));
    return std::make_shared<EventOp>(e);
  }
  // Records the bytes, orders the class stream after the caller's stream, runs f there.
  // `name` and `peer` (-1: none) describe it to the watchdog.
  template <class F>
  Request op(Traffic t, int64_t received, const char* name, int peer, F&& f) {
    record(t, received, std::string_view(name) == "ncclRecv" ? peer : -1);
    std::string what = cat(name, " ", op_context(t, where(), phase()));
    if (peer >= 0) what += cat(" with rank ", peer);
    const int k = static_cast<int>(t);
    cudaEvent_t ready;
    ORIGAMI_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    ORIGAMI_CUDA_CHECK(cudaEventRecord(ready, current_stream()));
    ORIGAMI_CUDA_CHECK(cudaStreamWaitEvent(streams_[k], ready, 0));
    ORIGAMI_CUDA_CHECK(cudaEventDestroy(ready));
    f(comms_[k], streams_[k]);
    if (group_ > 0) {  // completes at end_group(): the Request's op is filled in then
      auto slot = std::make_shared<std::shared_ptr<EventOp>>();
      pending_.push_back({slot, streams_[k], std::move(what)});
      return Request(std::make_shared<Deferred>(std::move(slot)));
    }
    auto ev = event_after(streams_[k]);
    Watchdog::get().watch(ev, std::move(what));
    if (!staged_.empty())
      return Request(
          std::make_shared<HostStagedOp>(std::move(ev), streams_[k], std::exchange(staged_, {})));
    return Request(std::move(ev));
  }
  // A grouped operation's request: its event exists once the group has ended.
  struct Deferred : Request::Op {
    explicit Deferred(std::shared_ptr<std::shared_ptr<EventOp>> s) : slot(std::move(s)) {}
    bool test() override { return *slot && (*slot)->test(); }
    void wait() override {
      ORIGAMI_CHECK(*slot != nullptr, "NCCL: a grouped operation waited before end_group()");
      (*slot)->wait();
    }
    std::shared_ptr<std::shared_ptr<EventOp>> slot;
  };

  MPI_Comm mpi_;
  NcclComm base_;
  int rank_ = 0, size_ = 1, group_ = 0;
  ncclComm_t comms_[kNumTraffic]{};
  cudaStream_t streams_[kNumTraffic]{};
  struct Pending {
    std::shared_ptr<std::shared_ptr<EventOp>> slot;
    cudaStream_t stream;
    std::string what;
  };
  std::vector<Pending> pending_;
  std::vector<HostStage> staged_;  // of the operation being posted
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(MPI_Comm comm) {
  return std::make_unique<NcclDeviceComm>(comm);
}

std::unique_ptr<Comm> make_nccl_layout_comm(MPI_Comm comm) {
  static bool checked = false;
  if (!checked) {  // the first axis: every rank of the world is here, so all agree
    checked = true;
    const DeviceCensus c = device_census(MPI_COMM_WORLD);
    if (!c.all_have_device) fail("--comm nccl: a rank sees no CUDA device");
    if (!c.one_per_rank && std::getenv("ORIGAMI_NCCL_SHARE_GPU") == nullptr)
      fail("--comm nccl: ranks of a node would share a GPU (", c.min_devices,
           " device(s) for more ranks), which NCCL refuses; use --comm mpi_staged, or give each "
           "rank its own NCCL_HOSTID and set ORIGAMI_NCCL_SHARE_GPU=1 (docs/gpu.md)");
  }
  return make_nccl_comm(comm);
}

}  // namespace origami::cuda
