#include "comm/staged_comm.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/error.h"

namespace origami {
namespace {

// Staging buffers are reused: pinning host memory costs far more than copying through it (the
// runtime's documentation asks for staging areas allocated sparingly, and the programming guide
// lists page-locked allocation among the implicitly synchronising operations, which no overlap
// survives), so a buffer an operation is done with waits here, by power-of-two size class, for
// the next one. Bounded by the most staging ever in flight at once; kept until exit.
class StagingPool {
 public:
  static StagingPool& get() {
    static StagingPool* pool = new StagingPool;  // never destroyed: no frees after CUDA's teardown
    return *pool;
  }
  void* take(size_t bytes, size_t* cls) {
    const DeviceOps* d = device_ops();
    ORIGAMI_CHECK(d, "the staged communicator needs a selected device");
    *cls = 4096;
    while (*cls < bytes) *cls *= 2;
    std::lock_guard<std::mutex> g(m_);
    if (!ops_) ops_ = d;
    ORIGAMI_CHECK(d == ops_, "the staged communicator's staging pool serves one device a process");
    auto& v = free_[*cls];
    if (v.empty()) return d->host_alloc(*cls);
    void* p = v.back();
    v.pop_back();
    return p;
  }
  void give(void* p, size_t cls) {
    std::lock_guard<std::mutex> g(m_);
    free_[cls].push_back(p);
  }

 private:
  std::mutex m_;
  const DeviceOps* ops_ = nullptr;
  std::map<size_t, std::vector<void*>> free_;
};

// Host staging memory of the selected device (pinned for CUDA), back to the pool with the last
// operation that uses it.
struct Pinned {
  explicit Pinned(int64_t bytes) : n(bytes) {
    p = StagingPool::get().take(static_cast<size_t>(bytes > 0 ? bytes : 1), &cls);
  }
  ~Pinned() { StagingPool::get().give(p, cls); }
  Pinned(const Pinned&) = delete;
  Pinned& operator=(const Pinned&) = delete;
  char* data() { return static_cast<char*>(p); }
  void* p = nullptr;
  int64_t n;
  size_t cls = 0;
};

// Either side may be host memory (the engines pass a few host arrays too: token ids, counts);
// copy_bytes returns when the bytes have arrived.
void move(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0) copy_bytes(dst, src, static_cast<size_t>(bytes));
}

// The host request, then the copy of the result back to the device (once).
class StagedOp : public Request::Op {
 public:
  StagedOp(Request host, std::vector<std::shared_ptr<Pinned>> keep, std::function<void()> back)
      : host_(std::move(host)), keep_(std::move(keep)), back_(std::move(back)) {}
  bool test() override {
    if (done_) return true;
    if (!host_.test()) return false;
    finish();
    return true;
  }
  void wait() override {
    if (done_) return;
    host_.wait();
    finish();
  }

 private:
  void finish() {
    if (back_) back_();
    done_ = true;
    keep_.clear();
  }
  Request host_;
  std::vector<std::shared_ptr<Pinned>> keep_;
  std::function<void()> back_;
  bool done_ = false;
};

class StagedComm : public Comm {
 public:
  explicit StagedComm(std::unique_ptr<Comm> host) : h_(std::move(host)) {}
  int rank() const override { return h_->rank(); }
  int size() const override { return h_->size(); }

  Request isend(const void* buf, int64_t bytes, int dst, int tag, Traffic t) override {
    auto p = stage(buf, bytes);
    return wrap(h_->isend(p->data(), bytes, dst, tag, t), {p}, nullptr);
  }
  Request irecv(void* buf, int64_t bytes, int src, int tag, Traffic t) override {
    auto p = std::make_shared<Pinned>(bytes);
    return wrap(h_->irecv(p->data(), bytes, src, tag, t), {p}, back(buf, p, 0, bytes));
  }
  Request ibcast(void* buf, int64_t bytes, int root, Traffic t) override {
    auto p = stage(buf, rank() == root ? bytes : 0, bytes);
    return wrap(h_->ibcast(p->data(), bytes, root, t), {p},
                rank() == root ? nullptr : back(buf, p, 0, bytes));
  }
  Request iallgather(const void* send, void* recv, int64_t bytes, Traffic t) override {
    auto all = std::make_shared<Pinned>(bytes * size());
    move(all->data() + rank() * bytes, send, bytes);  // send may alias recv's own block
    return wrap(h_->iallgather(all->data() + rank() * bytes, all->data(), bytes, t), {all},
                back(recv, all, 0, bytes * size()));
  }
  Request ireduce_scatter(const float* send, float* recv, int64_t n, Traffic t) override {
    auto s = stage(send, n * size() * 4);
    auto r = std::make_shared<Pinned>(n * 4);
    return wrap(h_->ireduce_scatter(reinterpret_cast<float*>(s->data()),
                                    reinterpret_cast<float*>(r->data()), n, t),
                {s, r}, back(recv, r, 0, n * 4));
  }
  Request ireduce(const float* send, float* recv, int64_t n, int root, Traffic t) override {
    auto s = stage(send, n * 4);
    auto r = std::make_shared<Pinned>(n * 4);
    return wrap(h_->ireduce(reinterpret_cast<float*>(s->data()),
                            reinterpret_cast<float*>(r->data()), n, root, t),
                {s, r}, rank() == root ? back(recv, r, 0, n * 4) : nullptr);
  }
  Request iallreduce(float* buf, int64_t n, Traffic t) override { return allreduce(buf, n, t); }
  Request iallreduce(double* buf, int64_t n, Traffic t) override { return allreduce(buf, n, t); }
  Request iallreduce(int64_t* buf, int64_t n, Traffic t) override { return allreduce(buf, n, t); }
  Request ialltoallv(const void* send, const int64_t* sb, const int64_t* so, void* recv,
                     const int64_t* rb, const int64_t* ro, Traffic t) override {
    int64_t sext = 0, rext = 0;  // extents of the send and receive layouts
    for (int q = 0; q < size(); ++q) {
      sext = std::max(sext, so[q] + sb[q]);
      rext = std::max(rext, ro[q] + rb[q]);
    }
    auto s = stage(send, sext);
    auto r = std::make_shared<Pinned>(rext);
    return wrap(h_->ialltoallv(s->data(), sb, so, r->data(), rb, ro, t), {s, r},
                back(recv, r, 0, rext));
  }
  void progress() override { h_->progress(); }
  void barrier() override {  // the device's queued work first: a barrier orders ranks in time
    if (const DeviceOps* d = device_ops()) d->sync();
    h_->barrier();
  }

 private:
  template <class T>
  Request allreduce(T* buf, int64_t n, Traffic t) {
    const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
    auto p = stage(buf, bytes);
    return wrap(h_->iallreduce(reinterpret_cast<T*>(p->data()), n, t), {p}, back(buf, p, 0, bytes));
  }
  // Pinned memory of `size` bytes (default: bytes) holding the first `bytes` of device src.
  std::shared_ptr<Pinned> stage(const void* src, int64_t bytes, int64_t size = -1) {
    auto p = std::make_shared<Pinned>(size < 0 ? bytes : size);
    move(p->data(), src, bytes);
    return p;
  }
  static std::function<void()> back(void* dst, const std::shared_ptr<Pinned>& p, int64_t off,
                                    int64_t bytes) {
    return [dst, p, off, bytes] { move(dst, p->data() + off, bytes); };
  }
  // The host communicator's record of the operation becomes ours.
  Request wrap(Request host, std::vector<std::shared_ptr<Pinned>> keep,
               std::function<void()> back) {
    CommRecord rec = h_->records().back();
    rec.where = where(), rec.phase = phase();  // the context our caller set
    records_.push_back(rec);
    return Request(std::make_shared<StagedOp>(std::move(host), std::move(keep), std::move(back)));
  }

  std::unique_ptr<Comm> h_;
};

}  // namespace

std::unique_ptr<Comm> make_staged_comm(std::unique_ptr<Comm> host) {
  return std::make_unique<StagedComm>(std::move(host));
}

}  // namespace origami
