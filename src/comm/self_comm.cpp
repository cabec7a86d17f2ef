// The communicator of a single process: no MPI, every operation completes at once; a reduction
// over one rank is a copy (copy_bytes: the buffers may be device memory; they never overlap
// partly). Records carry zero bytes, as the accounting defines for self-copies.
#include "comm/comm.h"
#include "core/device.h"
#include "core/error.h"

namespace origami {

namespace {
class SelfComm : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Request isend(const void*, int64_t, int, int, Traffic) override {
    fail("internal: send on a one-rank communicator");
  }
  Request irecv(void*, int64_t, int, int, Traffic) override {
    fail("internal: receive on a one-rank communicator");
  }
  Request ibcast(void*, int64_t, int, Traffic t) override { return done(t); }
  Request iallgather(const void* send, void* recv, int64_t bytes, Traffic t) override {
    if (send != recv) copy_bytes(recv, send, static_cast<size_t>(bytes));
    return done(t);
  }
  Request ireduce_scatter(const float* send, float* recv, int64_t n, Traffic t) override {
    if (send != recv) copy_bytes(recv, send, static_cast<size_t>(n) * 4);
    return done(t);
  }
  Request ireduce(const float* send, float* recv, int64_t n, int, Traffic t) override {
    if (send != recv) copy_bytes(recv, send, static_cast<size_t>(n) * 4);
    return done(t);
  }
  Request iallreduce(float*, int64_t, Traffic t) override { return done(t); }
  Request iallreduce(double*, int64_t, Traffic t) override { return done(t); }
  Request iallreduce(int64_t*, int64_t, Traffic t) override { return done(t); }
  Request ialltoallv(const void* send, const int64_t* sb, const int64_t* so, void* recv,
                     const int64_t*, const int64_t* ro, Traffic t) override {
    copy_bytes(static_cast<char*>(recv) + ro[0], static_cast<const char*>(send) + so[0],
               static_cast<size_t>(sb[0]));
    return done(t);
  }
  void progress() override {}
  void barrier() override {}

 private:
  Request done(Traffic t) {
    record(t, 0);
    return Request();
  }
};
}  // namespace

std::unique_ptr<Comm> make_self_comm() {
  return std::make_unique<SelfComm>();
}

}  // namespace origami
