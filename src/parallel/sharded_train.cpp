// The training engine of every sharded layout (TSP, FSDP+SP, TP+SP; each with DP): a rank owns
// the packed shards its schedule gives it (and their AdamW state) and its share of the tokens.
// Loss rules (tsp-spec §6): N is all-reduced before the first backward; the clipping norm sums
// the distinct shards once (over the shard axis, not over replicas of a shard) and counts each
// replicated (norm) parameter once; every rank updates what it holds. Under --dtype bf16 the
// shards the schedule computes with (and sends) are a bf16 copy of fp32 master shards (category
// optimizer), refreshed after every optimizer step; gradients are fp32.
#include <cmath>

#include "comm/accounting.h"
#include "core/error.h"
#include "kernels/dispatch.h"
#include "model/optimizer.h"
#include "parallel/engine.h"
#include "parallel/layout.h"
#include "parallel/sharded.h"

namespace origami {

namespace {
class ShardedTrainEngine : public Engine {
 public:
  // `make` builds the schedule on the mesh's communicators (they live here, with the engine).
  ShardedTrainEngine(const ModelConfig& c, Mesh mesh, std::string layout, const ScheduleMaker& make)
      : cfg_(c), layout_(std::move(layout)), mesh_(std::move(mesh)) {
    sched_ = make(mesh_);
    const int D = sched_->shard_comm().size();
    t_ = sched_->dims();
    p_ = TspParams::zeros(c, D, Cat::weights, compute_dtype());
    g_ = TspParams::zeros(c, D, Cat::grads);
    if (compute_dtype() != DType::f32) master_ = TspParams::zeros(c, D, Cat::optimizer);
  }
  int rank() const override { return mesh_.world_rank; }
  int world() const override { return mesh_.model->size() * mesh_.dp->size(); }
  int dp_rank() const override { return mesh_.dp->rank(); }
  int dp_size() const override { return mesh_.dp->size(); }
  std::string layout() const override { return layout_; }
  void load_state(const FullState& s, bool with_moments) override {
    const int r = shard().rank();
    full_to_shard(s.params, master(), t_, r);
    refresh();
    if (with_moments) {
      moments();
      full_to_shard(s.exp_avg, m_, t_, r);
      full_to_shard(s.exp_avg_sq, v_, t_, r);
    }
  }
  void init_moments() override { moments(); }
  void save_checkpoint(const std::string& dir, const TrainerState& st) override {
    // One copy of every shard: replica 0, and the ranks the schedule names inside it.
    if (mesh_.dp->rank() == 0 && sched_->writes_shard())
      save_checkpoint_sharded(
          dir, st, cfg_, shard().rank(), [this] { shard().barrier(); },
          [this](ModelParams& P, ModelParams& M, ModelParams& V) {
            moments();
            const int r = shard().rank();
            shard_to_full(master(), P, t_, r);
            shard_to_full(m_, M, t_, r);
            shard_to_full(v_, V, t_, r);
          },
          compute_dtype());
    mesh_.model->barrier();
    mesh_.dp->barrier();
  }
  int64_t global_targets(const std::vector<Batch>& micro) override {
    int64_t n = 0;
    for (const auto& b : micro) n += sched_->owned_targets(sched_->shard_batch(b));
    return sum_all(n);
  }
  void zero_grads() override { g_.zero(); }
  double forward_backward(const Batch& b, double inv_n) override {
    return sched_->forward_backward(p_, g_, sched_->shard_batch(b), inv_n);
  }
  void reduce_grads() override {
    sched_->finish_grads(g_);
    dp_sum_grads(*mesh_.dp, list(g_));  // replicas now hold identical gradients
  }
  double clip_grads(double clip) override {
    double owned = 0, replicated = 0;
    g_.for_each([&](Tensor& t, bool rep) {
      (rep ? replicated : owned) += k::sum_squares<float>(t.data<float>(), t.numel());
    });
    CommScope ctx(shard(), kWhereStep, Phase::bwd);
    shard().iallreduce(&owned, 1, Traffic::other).wait();  // each distinct shard once
    const double norm = std::sqrt(owned + replicated);     // replicated counted once
    clip_to(list(g_), norm, clip);
    return norm;
  }
  void full_grads(ModelParams& out) override { gather_full(shard(), g_, out, t_); }
  void adamw(const k::AdamW& h, int64_t step) override {
    std::vector<bool> decay;  // every packed shard is 2-D weights; the replicated norms are not
    p_.for_each([&](Tensor&, bool rep) { decay.push_back(!rep); });
    moments();
    adamw_tensors(list(master()), list(g_), list(m_), list(v_), decay, h, step);
    refresh();
  }
  double sum_over_ranks(double x) override { return sum_all(x); }
  void barrier() override {
    mesh_.model->barrier();
    mesh_.dp->barrier();
  }
  double eval_sum(const Batch& b) override {
    return sum_all(sched_->forward_loss(p_, sched_->shard_batch(b)));
  }
  nlohmann::json rank_report() override {
    std::vector<CommRecord> all;
    for (Comm* c : {mesh_.model.get(), mesh_.dp.get(), mesh_.tp.get(), mesh_.sp.get()})
      all.insert(all.end(), c->records().begin(), c->records().end());
    return comm_summary(all, static_cast<int>(cfg_.num_hidden_layers));
  }

 private:
  Comm& shard() { return sched_->shard_comm(); }
  // The fp32 shards the optimizer updates: p_, or the master copy under bf16.
  TspParams& master() { return master_.layers.empty() ? p_ : master_; }
  void refresh() {  // the bf16 compute copy from the master shards
    if (!master_.layers.empty()) convert_params(master_, p_);
  }
  void moments() {  // AdamW state exists once an optimizer needs it (not under `origami grad`)
    if (m_.layers.empty()) {
      m_ = TspParams::zeros(cfg_, shard().size(), Cat::optimizer);
      v_ = TspParams::zeros(cfg_, shard().size(), Cat::optimizer);
    }
  }
  template <class X>
  X sum_all(X x) {  // over the replica, then over the replicas
    CommScope ctx_model(*mesh_.model, kWhereStep, Phase::fwd);
    mesh_.model->iallreduce(&x, 1, Traffic::other).wait();
    CommScope ctx_dp(*mesh_.dp, kWhereStep, Phase::fwd);
    mesh_.dp->iallreduce(&x, 1, Traffic::other).wait();
    return x;
  }
  static std::vector<Tensor*> list(TspParams& p) {
    std::vector<Tensor*> v;
    p.for_each([&](Tensor& t, bool) { v.push_back(&t); });
    return v;
  }
  ModelConfig cfg_;
  std::string layout_;
  Mesh mesh_;
  std::unique_ptr<ShardedSchedule> sched_;
  TspDims t_{};
  TspParams p_, g_, m_, v_, master_;
};

}  // namespace

std::unique_ptr<Engine> make_sharded_engine(const ModelConfig& c, Mesh mesh, std::string name,
                                            const ScheduleMaker& make) {
  return std::make_unique<ShardedTrainEngine>(c, std::move(mesh), std::move(name), make);
}

void validate_engine(const Layout& L, const ModelConfig& c, const ParallelOptions& p, Recompute rc,
                     int64_t B, int64_t S) {
  validate_options(L, p, rc);
  L.spec->validate(L, c, p, B, S);
}

std::unique_ptr<Engine> make_engine(const Layout& L, const ModelConfig& c, const ParallelOptions& p,
                                    Recompute rc, int64_t B, int64_t S) {
  validate_engine(L, c, p, rc, B, S);
  configure_transfers(p, L.world());
  return make_engine_on(L, c, p, rc, make_layout_mesh(p, L.model_degree(), L.tp_degree()));
}

std::unique_ptr<Engine> make_engine_on(const Layout& L, const ModelConfig& c,
                                       const ParallelOptions& p, Recompute rc, Mesh mesh) {
  return L.spec->make_engine(L, c, p, rc, std::move(mesh));
}

}  // namespace origami
