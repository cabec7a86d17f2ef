// TSP as a training engine: each rank owns 1/D of every weight (and its AdamW state) and 1/D of the
// tokens. Loss rules (tsp-spec §6): N is all-reduced before the first backward; the clipping norm
// sums the owned shards over ranks and counts each replicated (norm) parameter once; every rank
// updates only what it owns, the replicated norms identically everywhere.
#include <mpi.h>

#include <cmath>

#include "comm/accounting.h"
#include "parallel/layout.h"
#include "parallel/tsp.h"
#include "train/engine.h"
#include "train/optimizer.h"

namespace origami {

namespace {
class TspTrainEngine : public Engine {
 public:
  TspTrainEngine(const ModelConfig& c, Mesh mesh, TspOptions o)
      : cfg_(c),
        world_rank_(mesh.world_rank),
        comm_(std::move(mesh.model)),
        dp_(std::move(mesh.dp)),
        eng_(c, *comm_, o),
        fsdp_(o.fsdp),
        t_(eng_.dims()),
        p_(TspParams::zeros(c, comm_->size(), Cat::weights)),
        g_(TspParams::zeros(c, comm_->size(), Cat::grads)),
        m_(TspParams::zeros(c, comm_->size(), Cat::optimizer)),
        v_(TspParams::zeros(c, comm_->size(), Cat::optimizer)) {}
  int rank() const override { return world_rank_; }
  int world() const override { return comm_->size() * dp_->size(); }
  int dp_rank() const override { return dp_->rank(); }
  int dp_size() const override { return dp_->size(); }
  std::string layout() const override {
    return (dp_->size() > 1 ? "dp=" + std::to_string(dp_->size()) + "," : std::string()) +
           (fsdp_ ? "fsdp_sp=" : "tsp=") + std::to_string(comm_->size());
  }
  void load_state(const FullState& s, bool with_moments) override {
    full_to_shard(s.params, p_, t_, comm_->rank());
    if (with_moments) {
      full_to_shard(s.exp_avg, m_, t_, comm_->rank());
      full_to_shard(s.exp_avg_sq, v_, t_, comm_->rank());
    }
  }
  void save_checkpoint(const std::string& dir, const TrainerState& st) override {
    if (dp_->rank() == 0)  // replica 0 writes; every replica holds the same shards
      save_checkpoint_sharded(
          dir, st, cfg_, comm_->rank(), [this] { comm_->barrier(); },
          [this](ModelParams& P, ModelParams& M, ModelParams& V) {
            shard_to_full(p_, P, t_, comm_->rank());
            shard_to_full(m_, M, t_, comm_->rank());
            shard_to_full(v_, V, t_, comm_->rank());
          });
    dp_->barrier();
  }
  int64_t global_targets(const std::vector<Batch>& micro) override {
    int64_t n = 0;
    for (const auto& b : micro) n += eng_.shard_batch(b).num_targets();
    comm_->set_context(kWhereStep, Phase::fwd);
    comm_->iallreduce(&n, 1, Traffic::other).wait();
    dp_->set_context(kWhereStep, Phase::fwd);
    dp_->iallreduce(&n, 1, Traffic::other).wait();
    return n;
  }
  void zero_grads() override { g_.zero(); }
  double forward_backward(const Batch& b, double inv_n) override {
    return eng_.forward_backward(p_, g_, eng_.shard_batch(b), inv_n);
  }
  double clip_grads(double clip) override {
    eng_.finish_grads(g_);
    const auto gs = list(g_);
    dp_sum_grads(*dp_, gs);  // replicas now hold identical gradients: counted once below
    double owned = 0, replicated = 0;
    g_.for_each([&](Tensor& t, bool rep) {
      (rep ? replicated : owned) += cpu::sum_squares(t.data<float>(), t.numel());
    });
    comm_->set_context(kWhereStep, Phase::bwd);
    comm_->iallreduce(&owned, 1, Traffic::other).wait();
    const double norm = std::sqrt(owned + replicated);  // replicated counted once
    clip_to(gs, norm, clip);
    return norm;
  }
  void adamw(const cpu::AdamW& h, int64_t step) override {
    std::vector<bool> decay;  // every packed shard is 2-D weights; the replicated norms are not
    p_.for_each([&](Tensor&, bool rep) { decay.push_back(!rep); });
    adamw_tensors(list(p_), list(g_), list(m_), list(v_), decay, h, step);
  }
  double sum_over_ranks(double x) override {
    comm_->set_context(kWhereStep, Phase::fwd);
    comm_->iallreduce(&x, 1, Traffic::other).wait();
    dp_->set_context(kWhereStep, Phase::fwd);
    dp_->iallreduce(&x, 1, Traffic::other).wait();
    return x;
  }
  double eval_sum(const Batch& b) override {
    return sum_over_ranks(eng_.forward_loss(p_, eng_.shard_batch(b)));
  }
  nlohmann::json rank_report() override {
    std::vector<CommRecord> all = comm_->records();
    all.insert(all.end(), dp_->records().begin(), dp_->records().end());
    return comm_summary(all, static_cast<int>(cfg_.num_hidden_layers));
  }

 private:
  static std::vector<Tensor*> list(TspParams& p) {
    std::vector<Tensor*> v;
    p.for_each([&](Tensor& t, bool) { v.push_back(&t); });
    return v;
  }
  ModelConfig cfg_;
  int world_rank_;
  std::unique_ptr<Comm> comm_, dp_;
  TspEngine eng_;
  bool fsdp_;
  TspDims t_;
  TspParams p_, g_, m_, v_;
};
}  // namespace

std::unique_ptr<Engine> make_tsp_engine(const ModelConfig& c, int D, TspOptions o) {
  return std::make_unique<TspTrainEngine>(c, make_mesh(D), o);
}

}  // namespace origami
