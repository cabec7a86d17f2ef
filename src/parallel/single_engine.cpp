// The single-device engine: the reference every layout is compared with. Under --dtype bf16 it
// keeps fp32 master weights (category optimizer, with the AdamW moments) and computes with their
// bf16 copy (category weights), refreshed after every optimizer step; gradients are fp32.
#include "comm/accounting.h"
#include "model/optimizer.h"
#include "parallel/engine.h"

namespace origami {

namespace {
class SingleEngine : public Engine {
 public:
  SingleEngine(const ModelConfig& c, Recompute rc, std::unique_ptr<Comm> dp)
      : dp_(std::move(dp)),
        model_(c),
        rc_(rc),
        p_(ModelParams::zeros(c, Cat::weights, compute_dtype())),
        g_(ModelParams::zeros(c, Cat::grads)) {
    if (compute_dtype() != DType::f32) master_ = ModelParams::zeros(c, Cat::optimizer);
  }
  int rank() const override { return dp_->rank(); }
  int world() const override { return dp_->size(); }
  int dp_rank() const override { return dp_->rank(); }
  int dp_size() const override { return dp_->size(); }
  std::string layout() const override {
    return dp_->size() > 1 ? "dp=" + std::to_string(dp_->size()) : "single";
  }
  void load_state(const FullState& s, bool with_moments) override {
    copy_params(s.params, master());
    refresh();
    if (with_moments) {
      moments();
      copy_params(s.exp_avg, m_);
      copy_params(s.exp_avg_sq, v_);
    }
  }
  void init_moments() override { moments(); }
  void save_checkpoint(const std::string& dir, const TrainerState& st) override {
    moments();
    if (dp_->rank() == 0)  // under bf16: the bf16 copy as the model file, the master beside AdamW's
      origami::save_checkpoint(dir, st, p_, m_, v_, master_.embed.defined() ? &master_ : nullptr);
    dp_->barrier();
  }
  int64_t global_targets(const std::vector<Batch>& micro) override {
    int64_t n = 0;
    for (const auto& b : micro) n += b.num_targets();
    CommScope ctx(*dp_, kWhereStep, Phase::fwd);
    dp_->iallreduce(&n, 1, Traffic::other).wait();
    return n;
  }
  void zero_grads() override { g_.zero(); }
  double forward_backward(const Batch& b, double inv_n) override {
    return model_.forward_backward(p_, g_, b, inv_n, rc_);
  }
  void reduce_grads() override {
    std::vector<Tensor*> gs;
    g_.for_each([&](const std::string&, Tensor& t) { gs.push_back(&t); });
    dp_sum_grads(*dp_, gs);
  }
  double clip_grads(double clip) override { return clip_grad_norm(g_, clip); }
  void full_grads(ModelParams& out) override { copy_params(g_, out); }
  void adamw(const cpu::AdamW& h, int64_t step) override {
    moments();
    adamw_update(master(), g_, m_, v_, h, step);
    refresh();
  }
  double sum_over_ranks(double x) override {
    CommScope ctx(*dp_, kWhereStep, Phase::fwd);
    dp_->iallreduce(&x, 1, Traffic::other).wait();
    return x;
  }
  void barrier() override { dp_->barrier(); }
  double eval_sum(const Batch& b) override { return sum_over_ranks(model_.forward_loss(p_, b)); }
  nlohmann::json rank_report() override {  // the DP traffic, if any
    return comm_summary(dp_->records(), static_cast<int>(model_.config().num_hidden_layers));
  }

 private:
  void moments() {  // AdamW state exists once an optimizer needs it (not under `origami grad`)
    if (!m_.embed.defined()) {
      m_ = ModelParams::zeros(model_.config(), Cat::optimizer);
      v_ = ModelParams::zeros(model_.config(), Cat::optimizer);
    }
  }
  // The fp32 parameters the optimizer updates: p_ itself, or the master copy under bf16.
  ModelParams& master() { return master_.embed.defined() ? master_ : p_; }
  void refresh() {  // the bf16 compute copy from the master weights
    if (master_.embed.defined()) copy_params(master_, p_);
  }
  std::unique_ptr<Comm> dp_;
  Model model_;
  Recompute rc_;
  ModelParams p_, g_, m_, v_, master_;
};
}  // namespace

std::unique_ptr<Engine> make_single_engine(const ModelConfig& c, Recompute rc,
                                           std::unique_ptr<Comm> dp) {
  return std::make_unique<SingleEngine>(c, rc, std::move(dp));
}

void dp_sum_grads(Comm& dp, const std::vector<Tensor*>& grads) {
  if (dp.size() == 1) return;
  CommScope ctx(dp, kWhereStep, Phase::bwd);
  // One tensor at a time: the reduction scratch of a single tensor is live, not the whole model's.
  for (Tensor* g : grads) dp.iallreduce(g->data<float>(), g->numel(), Traffic::grads).wait();
}

}  // namespace origami
