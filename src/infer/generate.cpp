#include "infer/generate.h"

#include <sentencepiece_processor.h>

#include <chrono>
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

// input_ids [B, S] (I32/I64) of a token file, checked against the vocabulary.
std::vector<int64_t> load_prompt_ids(const std::string& path, const ModelConfig& c, int64_t* B,
                                     int64_t* S) {
  SafeTensorsReader r(path);
  for (const auto& [name, e] : r.entries())
    if (name != "input_ids") fail(path, ": unknown tensor '", name, "' (expected input_ids)");
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
  return ids;
}

}  // namespace

int run_generate(const GenerateOptions& o) {
  // Everything up to the first collective depends only on the arguments and the files, so every
  // rank reaches the same verdict on bad input.
  const Layout L = Layout::parse(o.layout, mpi_world_size());
  const InferLayout IL = infer_layout(L);
  const ModelConfig cfg = ModelConfig::load(o.config);
  if (o.weights.empty() == o.checkpoint.empty())
    fail("give exactly one of --weights and --checkpoint");
  if (o.prompt.empty() == o.tokens.empty())
    fail("give exactly one of --prompt (text) and --tokens (input_ids [B, S])");
  if (o.max_new_tokens < 1) fail("--max-new-tokens=", o.max_new_tokens, " must be >= 1");
  validate(o.sampling);
  const int D = L.model_degree();
  int64_t B = 1, S = 0;
  std::vector<int64_t> ids;
  sentencepiece::SentencePieceProcessor sp;
  int64_t eos = o.eos_id == -2 ? -1 : o.eos_id;
  if (!o.prompt.empty()) {
    const auto st = sp.Load(o.tokenizer);
    if (!st.ok()) fail(o.tokenizer, ": cannot load the sentencepiece model: ", st.ToString());
    std::vector<int> t;
    if (!sp.Encode(o.prompt, &t).ok()) fail("--prompt: the tokenizer failed");
    if (t.empty()) fail("--prompt: the prompt is empty after tokenisation");
    ids.assign(t.begin(), t.end());
    S = static_cast<int64_t>(ids.size());
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] >= cfg.vocab_size)
        fail("--prompt: token ", i, " has id ", ids[i], " outside the model's vocabulary [0, ",
             cfg.vocab_size, ") (tokenizer and config disagree)");
    if (o.eos_id == -2) eos = sp.eos_id();
  } else {
    ids = load_prompt_ids(o.tokens, cfg, &B, &S);
  }
  if (S + o.max_new_tokens > cfg.max_position_embeddings)
    fail("prompt of ", S, " tokens + --max-new-tokens=", o.max_new_tokens, " = ",
         S + o.max_new_tokens, " exceeds max_position_embeddings=", cfg.max_position_embeddings);
  // TSP and TP own TSP's shards (n_kv, I divisible by D); SP pads the prompt as TSP does.
  if (IL != InferLayout::sp) validate_tsp(cfg, D, (S + 2 * D - 1) / (2 * D) * (2 * D), 1);
  // Memory budget per rank: the weights kept and the KV cache (both exact), before any work.
  const int64_t shard_bytes = weight_bytes(IL, cfg, D);
  const int64_t cache_bytes = kv_cache_bytes(IL, cfg, D, B, S, o.max_new_tokens);
  if (o.max_memory_gib > 0 &&
      static_cast<double>(shard_bytes + cache_bytes) > o.max_memory_gib * 1073741824.0)
    fail("--max-memory=", o.max_memory_gib, " GiB: the weights kept (",
         static_cast<double>(shard_bytes) / 1048576.0, " MiB) and the KV cache (",
         static_cast<double>(cache_bytes) / 1048576.0, " MiB) need more per rank");

  select_device(o.par);
  Mesh mesh = make_layout_mesh(o.par, D);
  Comm& comm = *mesh.model;
  const int rank = comm.rank();
  const bool talk = rank == 0 && !o.quiet;
  // The weights as views of the mapped file: each rank copies only what its layout keeps.
  std::unique_ptr<Decoder> decp;
  if (!o.weights.empty()) {
    SafeTensorsReader r(o.weights);
    decp = make_decoder(IL, cfg, comm, map_params(cfg, r), B, o.max_new_tokens);
  } else {
    read_checkpoint(o.checkpoint, cfg,
                    [&](const ModelParams& P, const ModelParams&, const ModelParams&) {
                      decp = make_decoder(IL, cfg, comm, P, B, o.max_new_tokens);
                    });
  }
  Decoder& dec = *decp;

  std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) out[b].assign(ids.begin() + b * S, ids.begin() + (b + 1) * S);
  std::vector<bool> done(static_cast<size_t>(B), false);
  auto stream = [&](int64_t b, int64_t id) {  // text mode, B = 1: print pieces as they come
    if (!talk || o.prompt.empty() || B != 1) return;
    const std::string raw = sp.IdToPiece(static_cast<int>(id));
    std::string piece;  // U+2581 (the sentencepiece word boundary) as a space
    for (size_t i = 0; i < raw.size(); ++i)
      if (raw.compare(i, 3, "\xe2\x96\x81") == 0)
        piece += ' ', i += 2;
      else
        piece += raw[i];
    std::fputs(piece.c_str(), stdout);
    std::fflush(stdout);
    (void)b;
  };
  if (talk && !o.prompt.empty() && B == 1) {
    std::fputs(o.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  comm.barrier();
  const double t0 = now();
  std::vector<float> z = dec.prefill(ids, S);
  const double t_first = now();
  const int64_t V = cfg.vocab_size;
  std::vector<int64_t> next(static_cast<size_t>(B));
  int64_t generated = 0;
  std::vector<int64_t> step_bytes;  // received per decode step on this rank
  int64_t weight_bytes = 0;
  std::vector<float> dumped;
  for (int64_t t = 0; t < o.max_new_tokens; ++t) {
    if (!o.dump_logits.empty()) dumped.insert(dumped.end(), z.begin(), z.end());
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      next[b] = done[b] ? eos : sample(z.data() + b * V, V, o.sampling, b, t);
      if (!done[b]) stream(b, next[b]);
      out[b].push_back(next[b]);
      if (next[b] == eos && eos >= 0) done[b] = true;
      all_done = all_done && done[b];
    }
    ++generated;
    if (all_done || t + 1 == o.max_new_tokens) break;
    comm.clear_records();
    z = dec.step(next);
    int64_t bytes = 0;
    for (const auto& r : comm.records()) {
      bytes += r.bytes;
      if (r.cat == Traffic::attn_weights || r.cat == Traffic::mlp_weights) weight_bytes += r.bytes;
    }
    step_bytes.push_back(bytes);
  }
  const double t_end = now();
  if (talk && !o.prompt.empty() && B == 1) {
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }

  // Report: throughput, time to first token, per-rank KV-cache and step traffic.
  nlohmann::json mine = {{"rank", rank},
                         {"kv_cache_bytes", dec.cache().bytes()},
                         {"kv_positions", dec.cache().size()},
                         {"decode_step_bytes", step_bytes},
                         {"decode_weight_bytes", weight_bytes},
                         {"peak_bytes", peak_json(MemTracker::get().stats())}};
  const auto ranks = gather_to_root(mine.dump());
  if (rank != 0) return 0;
  const double prefill_s = t_first - t0, decode_s = t_end - t_first;
  const int64_t steps = static_cast<int64_t>(step_bytes.size());
  nlohmann::json rep = {
      {"layout", L.text},
      {"B", B},
      {"prompt_tokens", S},
      {"new_tokens", generated},
      {"time_to_first_token_s", prefill_s},
      {"prefill_tokens_per_s", static_cast<double>(B * S) / prefill_s},
      {"decode_steps", steps},
      {"decode_tokens_per_s", steps ? static_cast<double>(B * steps) / decode_s : 0.0},
      {"ranks", nlohmann::json::array()}};
  for (const auto& r : ranks) rep["ranks"].push_back(nlohmann::json::parse(r));
  if (!o.quiet) {
    if (o.prompt.empty() || B != 1)
      for (int64_t b = 0; b < B; ++b) {
        std::printf("[%ld]", static_cast<long>(b));
        for (int64_t id : out[b]) std::printf(" %ld", static_cast<long>(id));
        std::printf("\n");
      }
    std::fprintf(stderr,
                 "generate %s: B=%ld prompt %ld tokens, %ld new; time to first token %.3f s, "
                 "prefill %.1f tok/s, decode %.1f tok/s\n",
                 L.text.c_str(), static_cast<long>(B), static_cast<long>(S),
                 static_cast<long>(generated), prefill_s, rep["prefill_tokens_per_s"].get<double>(),
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
  if (!o.report.empty()) write_file_atomic(o.report, rep.dump(1) + "\n");
  if (!o.dump_logits.empty()) {
    SafeTensorsWriter w;
    w.add("logits", DType::f32, {generated, B, V}, dumped.data());
    w.write(o.dump_logits);
  }
  if (!o.out.empty()) {
    const int64_t W = static_cast<int64_t>(out[0].size());
    std::vector<int64_t> flat;
    for (const auto& row : out) flat.insert(flat.end(), row.begin(), row.end());
    SafeTensorsWriter w;
    w.add("output_ids", DType::i64, {B, W}, flat.data());
    w.write(o.out);
  }
  return 0;
}

}  // namespace origami::infer
