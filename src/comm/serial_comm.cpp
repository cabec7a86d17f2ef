#include "comm/serial_comm.h"

#include <cstddef>
#include <vector>

namespace origami {

namespace {
class SerialComm : public Comm {
 public:
  explicit SerialComm(std::unique_ptr<Comm> inner) : in_(std::move(inner)) {}
  int rank() const override { return in_->rank(); }
  int size() const override { return in_->size(); }
  Request isend(const void* buf, int64_t bytes, int dst, int tag, Traffic t) override {
    ctx();
    return done(in_->isend(buf, bytes, dst, tag, t));
  }
  Request irecv(void* buf, int64_t bytes, int src, int tag, Traffic t) override {
    ctx();
    return done(in_->irecv(buf, bytes, src, tag, t));
  }
  Request ibcast(void* buf, int64_t bytes, int root, Traffic t) override {
    ctx();
    return done(in_->ibcast(buf, bytes, root, t));
  }
  Request iallgather(const void* send, void* recv, int64_t bytes, Traffic t) override {
    ctx();
    return done(in_->iallgather(send, recv, bytes, t));
  }
  Request ireduce_scatter(const float* send, float* recv, int64_t n, Traffic t) override {
    ctx();
    return done(in_->ireduce_scatter(send, recv, n, t));
  }
  Request ireduce(const float* send, float* recv, int64_t n, int root, Traffic t) override {
    ctx();
    return done(in_->ireduce(send, recv, n, root, t));
  }
  Request iallreduce(float* buf, int64_t n, Traffic t) override {
    ctx();
    return done(in_->iallreduce(buf, n, t));
  }
  Request iallreduce(double* buf, int64_t n, Traffic t) override {
    ctx();
    return done(in_->iallreduce(buf, n, t));
  }
  Request iallreduce(int64_t* buf, int64_t n, Traffic t) override {
    ctx();
    return done(in_->iallreduce(buf, n, t));
  }
  Request ialltoallv(const void* send, const int64_t* sb, const int64_t* so, void* recv,
                     const int64_t* rb, const int64_t* ro, Traffic t) override {
    ctx();
    return done(in_->ialltoallv(send, sb, so, recv, rb, ro, t));
  }
  void progress() override { in_->progress(); }
  void begin_group() override {
    in_->begin_group();
    grouped_ = true;
  }
  void end_group() override {
    in_->end_group();
    grouped_ = false;
    for (auto& r : group_) r.wait();
    group_.clear();
    take_records();
  }
  void barrier() override { in_->barrier(); }

 private:
  // The inner communicator accounts under our caller's context.
  void ctx() { in_->set_context(where(), phase()); }
  Request done(Request r) {
    if (grouped_) {
      group_.push_back(std::move(r));
      return Request();
    }
    r.wait();
    take_records();
    return Request();
  }
  void take_records() {  // after the waits: the records carry their times
    const auto& rec = in_->records();
    records_.insert(records_.end(), rec.begin() + static_cast<std::ptrdiff_t>(taken_), rec.end());
    taken_ = rec.size();
  }
  std::unique_ptr<Comm> in_;
  bool grouped_ = false;
  std::vector<Request> group_;
  size_t taken_ = 0;
};
}  // namespace

std::unique_ptr<Comm> make_serial_comm(std::unique_ptr<Comm> inner) {
  return std::make_unique<SerialComm>(std::move(inner));
}

}  // namespace origami
