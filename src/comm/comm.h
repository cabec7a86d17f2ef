// The communicator interface: a non-blocking form of every operation, returning a Request, and
// per-call accounting of the bytes *this rank receives* under the direct algorithm (tsp-spec §7):
//   broadcast M: M on non-roots, 0 on the root      all-gather block m: (D-1)·m
//   reduce-scatter own block m: (D-1)·m             reduce M: (D-1)·M on the root, 0 elsewhere
//   all-reduce M: 2(D-1)·M/D                        all-to-all-v: sum of counts from other ranks
//   send/recv: the message, at the receiver         self-copies: 0
// Each record carries (where: layer | embed | head | step, phase, category) from the context set
// by the schedule, and the wall time from post to completion. Reductions are numerically
// significant, so they run as fixed-order point-to-point schedules: the result is bit-identical
// across reruns and whether a request is waited at once (no overlap) or later.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace origami {

enum class Phase { fwd, recompute, bwd };
// acts (ours, not in the spec's list): the activation traffic of TP (the all-gathers, reduce-
// scatters or all-reduces of [tokens, h] around the column- and row-parallel GEMMs).
enum class Traffic { attn_weights, mlp_weights, kv, grads, embed_head, acts, other };
constexpr int kNumTraffic = 7;
const char* phase_name(Phase p);
const char* traffic_name(Traffic t);

// where: >= 0 a layer index, or one of these
constexpr int kWhereEmbed = -1, kWhereHead = -2, kWhereStep = -3;
// An operation for messages: "<category> L<layer>|embed|head|step <phase>", e.g. "kv L3 fwd".
std::string op_context(Traffic t, int where, Phase p);

struct CommRecord {
  int where;
  Phase phase;
  Traffic cat;
  int64_t bytes;
  double seconds;
  int peer = -1;  // a point-to-point receive: the rank (in this communicator) it came from
};

// One in-flight operation. wait() completes it (idempotent); test() advances it and says whether
// it is complete. A default-constructed Request is complete.
class Request {
 public:
  struct Op {
    virtual ~Op() = default;
    virtual bool test() = 0;
    virtual void wait() = 0;
  };
  Request() = default;
  explicit Request(std::shared_ptr<Op> op) : op_(std::move(op)) {}
  void wait() {
    if (op_) op_->wait();
  }
  bool test() { return !op_ || op_->test(); }

 private:
  std::shared_ptr<Op> op_;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // The accounting context of the calls that follow.
  void set_context(int where, Phase phase) {
    where_ = where;
    phase_ = phase;
  }
  int where() const { return where_; }
  Phase phase() const { return phase_; }
  const std::vector<CommRecord>& records() const { return records_; }
  void clear_records() { records_.clear(); }

  virtual Request isend(const void* buf, int64_t bytes, int dst, int tag, Traffic t) = 0;
  virtual Request irecv(void* buf, int64_t bytes, int src, int tag, Traffic t) = 0;
  virtual Request ibcast(void* buf, int64_t bytes, int root, Traffic t) = 0;
  // recv holds size() blocks of `bytes`, rank-major; send may alias recv's own block.
  virtual Request iallgather(const void* send, void* recv, int64_t bytes, Traffic t) = 0;
  // send holds size() blocks of n floats; recv (n floats) gets the sum of everyone's block rank().
  virtual Request ireduce_scatter(const float* send, float* recv, int64_t n, Traffic t) = 0;
  // recv (root only) gets the sum of everyone's send (n floats); may alias send on the root.
  virtual Request ireduce(const float* send, float* recv, int64_t n, int root, Traffic t) = 0;
  // In place, identical on every rank. double is used for small scalars (loss sums, norms).
  virtual Request iallreduce(float* buf, int64_t n, Traffic t) = 0;
  virtual Request iallreduce(double* buf, int64_t n, Traffic t) = 0;
  virtual Request iallreduce(int64_t* buf, int64_t n, Traffic t) = 0;
  // Byte counts and displacements per rank.
  virtual Request ialltoallv(const void* send, const int64_t* send_bytes, const int64_t* send_off,
                             void* recv, const int64_t* recv_bytes, const int64_t* recv_off,
                             Traffic t) = 0;
  // Advance every outstanding operation (OpenMPI has no asynchronous progress): call between
  // compute tiles.
  virtual void progress() = 0;
  // The point-to-point operations posted between begin_group() and end_group() start together
  // (a ring step's send and receive; NCCL needs them fused, or both ranks would block in their
  // sends). No-op for MPI, whose non-blocking operations start as they are posted.
  virtual void begin_group() {}
  virtual void end_group() {}
  virtual void barrier() = 0;

  // Called when an operation is posted (the context then is the one that counts); the time is
  // filled in when it completes.
  size_t record(Traffic t, int64_t bytes, int peer = -1) {
    records_.push_back({where_, phase_, t, bytes, 0.0, peer});
    return records_.size() - 1;
  }
  void set_seconds(size_t i, double s) { records_[i].seconds = s; }

 protected:
  int where_ = kWhereStep;
  Phase phase_ = Phase::fwd;
  std::vector<CommRecord> records_;
};

// The accounting context (where, phase) of the operations a layout's communicators post while it
// lives; the previous context is restored when it ends (a prefetch charged to the next layer is a
// nested scope).
class CommScope {
 public:
  CommScope(std::vector<Comm*> comms, int where, Phase phase) {
    for (Comm* c : comms) {
      saved_.push_back({c, c->where(), c->phase()});
      c->set_context(where, phase);
    }
  }
  CommScope(Comm& c, int where, Phase phase) : CommScope(std::vector<Comm*>{&c}, where, phase) {}
  ~CommScope() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it)
      it->c->set_context(it->where, it->phase);
  }
  CommScope(const CommScope&) = delete;
  CommScope& operator=(const CommScope&) = delete;

 private:
  struct Saved {
    Comm* c;
    int where;
    Phase phase;
  };
  std::vector<Saved> saved_;
};

// A communicator of one rank (no MPI needed): every operation is a local copy.
std::unique_ptr<Comm> make_self_comm();

}  // namespace origami
