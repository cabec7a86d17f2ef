#include "infer/generate.h"

#include <sentencepiece_processor.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "comm/accounting.h"
#include "comm/comm.h"
#include "comm/mpi_comm.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/safetensors.h"
#include "infer/decoder.h"
#include "io/checkpoint.h"
#include "io/report.h"
#include "model/params.h"
#include "parallel/layout.h"

namespace origami::infer {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// input_ids [B, S] (I32/I64) of a token file, checked against the vocabulary; with an
// attention_mask [B, S] (HF's left padding: 0s, then 1s), each sequence's padding.
std::vector<int64_t> load_prompt_ids(const std::string& path, const ModelConfig& c, int64_t* B,
                                     int64_t* S, Padding* pad) {
  SafeTensorsReader r(path);
  for (const auto& [name, e] : r.entries())
    if (name != "input_ids" && name != "attention_mask")
      fail(path, ": unknown tensor '", name,
           "' (expected input_ids and optionally attention_mask)");
  std::vector<int64_t> shape;
  auto ids = r.load_ints("input_ids", &shape);
  if (shape.size() != 2 || shape[0] < 1)
    fail(path, ": input_ids has shape ", shape_str(shape), ", expected [B, S] with B >= 1");
  if (shape[1] < 1) fail(path, ": input_ids is empty (S = 0): nothing to prefill");
  *B = shape[0], *S = shape[1];
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= c.vocab_size)
      fail(path, ": input_ids[", static_cast<int64_t>(i) / *S, ", ", static_cast<int64_t>(i) % *S,
           "]=", ids[i], " is outside the vocabulary [0, ", c.vocab_size, ")");
  if (r.has("attention_mask")) {  // prompts of different lengths, left-padded
    std::vector<int64_t> mshape;
    const auto m = r.load_ints("attention_mask", &mshape);
    if (mshape != shape)
      fail(path, ": attention_mask has shape ", shape_str(mshape), ", expected input_ids' shape ",
           shape_str(shape));
    pad->pads.assign(static_cast<size_t>(*B), 0);
    for (int64_t b = 0; b < *B; ++b) {
      int64_t n = 0;
      while (n < *S && m[static_cast<size_t>(b * *S + n)] == 0) ++n;
      if (n == *S) fail(path, ": attention_mask[", b, "] is all 0: sequence ", b, " has no prompt");
      for (int64_t s = n; s < *S; ++s)
        if (m[static_cast<size_t>(b * *S + s)] != 1)
          fail(path, ": attention_mask[", b, ", ", s, "]=", m[static_cast<size_t>(b * *S + s)],
               ": expected left padding (0s, then 1s to the end)");
      pad->pads[static_cast<size_t>(b)] = n;
    }
  }
  return ids;
}

}  // namespace

namespace {

// One `origami generate` run, in named steps: the prompt and the checks every rank makes before
// its first collective, the decoder of the layout, prefill and decode, and the report.
class GenerateRun {
 public:
  explicit GenerateRun(const GenerateOptions& o)
      : o_(o),
        L_(Layout::parse(o.layout, mpi_world_size())),
        IL_(infer_layout(L_)),
        cfg_(ModelConfig::load(o.config)),
        D_(L_.model_degree()),
        eos_(o.eos_id == -2 ? -1 : o.eos_id) {}

  int run() {
    check_inputs();
    select_device(o_.par);
    mesh_ = make_layout_mesh(o_.par, D_);
    comm_ = mesh_.model.get();
    talk_ = comm_->rank() == 0 && !o_.quiet;
    load_decoder();
    decode();
    report();
    return 0;
  }

 private:
  // Everything up to the first collective depends only on the arguments and the files, so every
  // rank reaches the same verdict on bad input.
  void check_inputs() {
    if (o_.weights.empty() == o_.checkpoint.empty())
      fail("give exactly one of --weights and --checkpoint");
    if (o_.prompt.empty() == o_.tokens.empty())
      fail("give exactly one of --prompt (text) and --tokens (input_ids [B, S])");
    if (o_.max_new_tokens < 1) fail("--max-new-tokens=", o_.max_new_tokens, " must be >= 1");
    validate(o_.sampling);
    if (!o_.prompt.empty())
      encode_prompt();
    else
      ids_ = load_prompt_ids(o_.tokens, cfg_, &B_, &S_, &pad_);
    if (S_ + o_.max_new_tokens > cfg_.max_position_embeddings)
      fail("prompt of ", S_, " tokens + --max-new-tokens=", o_.max_new_tokens, " = ",
           S_ + o_.max_new_tokens,
           " exceeds max_position_embeddings=", cfg_.max_position_embeddings);
    // TSP and TP own TSP's shards (n_kv, I divisible by D); SP pads the prompt as TSP does.
    if (o_.par.sp_comm != SpComm::allgather) {
      if (IL_ != InferLayout::sp)
        fail("--sp-comm ", sp_comm_name(o_.par.sp_comm),
             " needs --layout sp=N (the SP decoder's "
             "prefill)");
      validate_sp_comm(cfg_, D_, o_.par.sp_comm);
    }
    if (IL_ != InferLayout::sp) validate_tsp(cfg_, D_, (S_ + 2 * D_ - 1) / (2 * D_) * (2 * D_), 1);
    // Memory budget per rank: the weights kept and the KV cache (both exact), before any work.
    const int64_t shard_bytes = weight_bytes(IL_, cfg_, D_, o_.par.dtype);
    const int64_t cache_bytes =
        kv_cache_bytes(IL_, cfg_, D_, B_, S_, o_.max_new_tokens, o_.par.dtype);
    if (o_.max_memory_gib > 0 &&
        static_cast<double>(shard_bytes + cache_bytes) > o_.max_memory_gib * 1073741824.0)
      fail("--max-memory=", o_.max_memory_gib, " GiB: the weights kept (",
           static_cast<double>(shard_bytes) / 1048576.0, " MiB) and the KV cache (",
           static_cast<double>(cache_bytes) / 1048576.0, " MiB) need more per rank");
  }

  void encode_prompt() {
    const auto st = sp_.Load(o_.tokenizer);
    if (!st.ok()) fail(o_.tokenizer, ": cannot load the sentencepiece model: ", st.ToString());
    std::vector<int> t;
    if (!sp_.Encode(o_.prompt, &t).ok()) fail("--prompt: the tokenizer failed");
    if (t.empty()) fail("--prompt: the prompt is empty after tokenisation");
    ids_.assign(t.begin(), t.end());
    S_ = static_cast<int64_t>(ids_.size());
    for (size_t i = 0; i < ids_.size(); ++i)
      if (ids_[i] >= cfg_.vocab_size)
        fail("--prompt: token ", i, " has id ", ids_[i], " outside the model's vocabulary [0, ",
             cfg_.vocab_size, ") (tokenizer and config disagree)");
    if (o_.eos_id == -2) eos_ = sp_.eos_id();
  }

  // The weights as views of the mapped file: each rank copies only what its layout keeps.
  void load_decoder() {
    if (!o_.weights.empty()) {
      SafeTensorsReader r(o_.weights);
      dec_ = make_decoder(IL_, cfg_, *comm_, map_params(cfg_, r), B_, o_.max_new_tokens,
                          o_.par.sp_comm);
      return;
    }
    read_checkpoint(
        o_.checkpoint, cfg_, [&](const ModelParams& P, const ModelParams&, const ModelParams&) {
          dec_ = make_decoder(IL_, cfg_, *comm_, P, B_, o_.max_new_tokens, o_.par.sp_comm);
        });
  }

  // Text mode, B = 1: print pieces as they come (U+2581, the sentencepiece word boundary, as a
  // space).
  void stream(int64_t id) {
    if (!text_mode()) return;
    const std::string raw = sp_.IdToPiece(static_cast<int>(id));
    std::string piece;
    for (size_t i = 0; i < raw.size(); ++i)
      if (raw.compare(i, 3, "\xe2\x96\x81") == 0)
        piece += ' ', i += 2;
      else
        piece += raw[i];
    std::fputs(piece.c_str(), stdout);
    std::fflush(stdout);
  }
  bool text_mode() const { return talk_ && !o_.prompt.empty() && B_ == 1; }

  // Prefill, then one decode step per new token until every sequence is done; the bytes each
  // step receives on this rank (and how many of them are weights) are kept for the report.
  void decode() {
    out_.assign(static_cast<size_t>(B_), {});
    for (int64_t b = 0; b < B_; ++b)
      out_[b].assign(ids_.begin() + b * S_, ids_.begin() + (b + 1) * S_);
    std::vector<bool> done(static_cast<size_t>(B_), false);
    if (text_mode()) {
      std::fputs(o_.prompt.c_str(), stdout);
      std::fflush(stdout);
    }
    comm_->barrier();
    t0_ = now();
    std::vector<float> z = dec_->prefill(ids_, S_, pad_);
    t_first_ = now();
    const int64_t V = cfg_.vocab_size;
    std::vector<int64_t> next(static_cast<size_t>(B_));
    for (int64_t t = 0; t < o_.max_new_tokens; ++t) {
      // The same logits on every rank (gathered): every rank reaches this verdict.
      for (size_t i = 0; i < z.size(); ++i)
        if (!std::isfinite(z[i]))
          fail("the logits of new token ", t, " (sequence ", static_cast<int64_t>(i) / V,
               ") are not finite (", z[i], "): do the weights hold NaN or Inf?");
      if (!o_.dump_logits.empty()) dumped_.insert(dumped_.end(), z.begin(), z.end());
      bool all_done = true;
      for (int64_t b = 0; b < B_; ++b) {
        next[b] = done[b] ? eos_ : sample(z.data() + b * V, V, o_.sampling, b, t);
        if (!done[b]) stream(next[b]);
        out_[b].push_back(next[b]);
        if (next[b] == eos_ && eos_ >= 0) done[b] = true;
        all_done = all_done && done[b];
      }
      ++generated_;
      if (all_done || t + 1 == o_.max_new_tokens) break;
      comm_->clear_records();
      z = dec_->step(next);
      int64_t bytes = 0;
      for (const auto& r : comm_->records()) {
        bytes += r.bytes;
        if (r.cat == Traffic::attn_weights || r.cat == Traffic::mlp_weights)
          weight_bytes_ += r.bytes;
      }
      step_bytes_.push_back(bytes);
    }
    t_end_ = now();
    if (text_mode()) {
      std::fputs("\n", stdout);
      std::fflush(stdout);
    }
  }

  // Throughput, time to first token, per-rank KV cache and step traffic; the output files.
  void report() {
    nlohmann::json mine = {
        {"rank", comm_->rank()},
        {"kv_cache_bytes", dec_->cache().bytes()},
        {"kv_positions", dec_->cache().size()},
        {"decode_step_bytes", step_bytes_},
        {"decode_weight_bytes", weight_bytes_},
        {"peak_bytes", peak_json(MemTracker::get().stats())},
        // the process: tracked tensors, the mapped weight pages it read, code
        {"rss_bytes", {{"baseline", rss0_}, {"peak", proc_status_bytes("VmHWM")}}}};
    const auto ranks = gather_to_root(mine.dump());
    if (comm_->rank() != 0) return;
    const double prefill_s = t_first_ - t0_, decode_s = t_end_ - t_first_;
    const int64_t steps = static_cast<int64_t>(step_bytes_.size());
    nlohmann::json rep = {
        {"layout", L_.text},
        {"B", B_},
        {"prompt_tokens", S_},
        {"new_tokens", generated_},
        {"time_to_first_token_s", prefill_s},
        {"prefill_tokens_per_s", static_cast<double>(B_ * S_) / prefill_s},
        {"decode_steps", steps},
        {"decode_tokens_per_s", steps ? static_cast<double>(B_ * steps) / decode_s : 0.0},
        {"ranks", nlohmann::json::array()}};
    for (const auto& r : ranks) rep["ranks"].push_back(nlohmann::json::parse(r));
    if (!o_.quiet) print(rep, prefill_s);
    if (!o_.report.empty()) write_file_atomic(o_.report, rep.dump(1) + "\n");
    if (!o_.dump_logits.empty()) {
      SafeTensorsWriter w;
      w.add("logits", DType::f32, {generated_, B_, cfg_.vocab_size}, dumped_.data());
      w.write(o_.dump_logits);
    }
    if (!o_.out.empty()) {
      const int64_t W = static_cast<int64_t>(out_[0].size());
      std::vector<int64_t> flat;
      for (const auto& row : out_) flat.insert(flat.end(), row.begin(), row.end());
      SafeTensorsWriter w;
      w.add("output_ids", DType::i64, {B_, W}, flat.data());
      w.write(o_.out);
    }
  }

  void print(const nlohmann::json& rep, double prefill_s) const {
    if (o_.prompt.empty() || B_ != 1)
      for (int64_t b = 0; b < B_; ++b) {
        std::printf("[%ld]", static_cast<long>(b));
        for (int64_t id : out_[b]) std::printf(" %ld", static_cast<long>(id));
        std::printf("\n");
      }
    std::fprintf(stderr,
                 "generate %s: B=%ld prompt %ld tokens, %ld new; time to first token %.3f s, "
                 "prefill %.1f tok/s, decode %.1f tok/s\n",
                 L_.text.c_str(), static_cast<long>(B_), static_cast<long>(S_),
                 static_cast<long>(generated_), prefill_s,
                 rep["prefill_tokens_per_s"].get<double>(),
                 rep["decode_tokens_per_s"].get<double>());
    for (const auto& r : rep["ranks"])
      std::fprintf(stderr,
                   "  rank %d: KV cache %.2f MiB (%ld positions), %ld B received per decode "
                   "step, %ld weight bytes moved in decode\n",
                   r["rank"].get<int>(), r["kv_cache_bytes"].get<double>() / 1048576.0,
                   static_cast<long>(r["kv_positions"].get<int64_t>()),
                   static_cast<long>(r["decode_step_bytes"].empty()
                                         ? 0
                                         : r["decode_step_bytes"].back().get<int64_t>()),
                   static_cast<long>(r["decode_weight_bytes"].get<int64_t>()));
  }

  const int64_t rss0_ = proc_status_bytes("VmRSS");  // before the first tensor
  const GenerateOptions& o_;
  const Layout L_;
  const InferLayout IL_;
  const ModelConfig cfg_;
  const int D_;
  int64_t eos_;
  int64_t B_ = 1, S_ = 0;
  std::vector<int64_t> ids_;
  Padding pad_;  // --tokens with an attention_mask: left padding per sequence
  sentencepiece::SentencePieceProcessor sp_;
  Mesh mesh_;  // before dec_: the decoder keeps a reference to its communicator
  Comm* comm_ = nullptr;
  bool talk_ = false;
  std::unique_ptr<Decoder> dec_;
  std::vector<std::vector<int64_t>> out_;
  double t0_ = 0, t_first_ = 0, t_end_ = 0;
  int64_t generated_ = 0, weight_bytes_ = 0;
  std::vector<int64_t> step_bytes_;  // received per decode step on this rank
  std::vector<float> dumped_;
};

}  // namespace

int run_generate(const GenerateOptions& o) {
  return GenerateRun(o).run();
}

}  // namespace origami::infer
