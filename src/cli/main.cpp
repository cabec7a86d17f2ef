// origami: one entry point with subcommands.
#include <mpi.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/bench.h"
#include "cli/data_cli.h"
#include "cli/flags.h"
#include "comm/comm.h"
#include "core/error.h"
#include "infer/generate.h"
#ifdef ORIGAMI_WITH_CUDA
#include "cuda/backend.h"
#endif
#ifdef ORIGAMI_WITH_NCCL
#include "cuda/nccl_comm.h"
#endif
#include "comm/mpi_comm.h"
#include "model/params.h"
#include "plan/calibrate.h"
#include "plan/plan_cli.h"
#include "train/grad.h"
#include "train/trainer.h"

using namespace origami;

namespace {

const char* kUsage =
    "usage: origami <command> [flags]   (origami <command> --help for its flags)\n\n"
    "commands:\n"
    "  train   train a Llama model on the bundled corpus or on synthetic tokens\n"
    "  grad    loss and full gradients of given weights on given tokens (the oracle interface)\n"
    "  init    write freshly initialised weights (counter-based RNG, layout independent)\n"
    "  plan    predict per-rank memory and bytes per layer for layouts and sequence lengths\n"
    "          (--time: step times on a simulated clock)\n"
    "  calibrate  measure this machine's kernels and MPI link into a hardware profile for plan\n"
    "  bench   run several layouts on the same model and batch (mpirun each) into one table\n"
    "  generate  text or token ids from a model: TSP prefill with a 1/D KV cache, decode that\n"
    "          never moves a weight\n"
    "  data    prepare a tokenized dataset (numpy files, memory-mapped by training) or describe "
    "one\n";

// Started by mpirun (or another PMI launcher)? Then MPI is initialised; a plain `origami ...`
// runs as one process without MPI (OpenMPI's singleton start-up costs seconds on some machines).
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

// The CUDA and NCCL hooks of this binary (origami-cuda has them; main.cpp is built once per
// binary, the library once).
void device_hooks(RuntimeOptions& p) {
#ifdef ORIGAMI_WITH_CUDA
  p.use_cuda = &cuda::use_cuda;
#endif
#ifdef ORIGAMI_WITH_NCCL
  p.make_nccl = &cuda::make_nccl_layout_comm;
#endif
  (void)p;
}

// --layout, the schedule's flags and where the run executes (train and grad).
void parallel_flags(Args& a) {
  a.flag("layout", "", layout_help());
  schedule_flags(a);
  a.flag("balance", "zigzag",
         "layouts with a sequence axis (tsp, fsdp_sp, sp): how its 2D chunks of each batch are "
         "dealt to the ranks: zigzag (rank r takes chunks r and 2D-1-r: equal causal work for one "
         "document a sequence) or documents (the chunks' attention work under the batch's "
         "document masks, sorted; each rank takes one light and one heavy chunk; zigzag itself "
         "without --pack documents). The same result either way");
  runtime_flags(a, true);
}
ParallelOptions parallel_options(const Args& a, Recompute& rc) {
  ParallelOptions p;
  p.layout = a.str("layout");
  rc = schedule_options(a, p).recompute;
  p.balance = parse_balance(a.str("balance"));
  runtime_options(a, p, true);
  device_hooks(p);
  return p;
}

int cmd_train(int argc, char** argv) {
  Args a("train",
         "Train a Llama-style model. Prints loss, held-out loss, tokens/s and peak memory\n"
         "per category; checkpoints are atomic and resume bit-identically.");
  a.flag("config", "", "HF Llama config.json", true);
  a.flag("steps", "100", "optimizer steps in the run (the LR schedule spans them)");
  a.flag("seq", "256", "sequence length S (tokens per sample)");
  a.flag("micro-batch", "4", "sequences per micro-step B");
  a.flag("grad-accum", "1", "micro-steps per optimizer step k (global batch = k*B sequences)");
  a.flag("lr", "3e-4", "peak learning rate");
  a.flag("min-lr", "", "final learning rate of the cosine decay [default: lr/10]");
  a.flag("warmup", "", "linear warmup steps [default: min(100, steps/10)]");
  a.flag("weight-decay", "0.1", "AdamW decoupled weight decay (2-D weights only)");
  a.flag("beta1", "0.9", "AdamW beta1");
  a.flag("beta2", "0.95", "AdamW beta2");
  a.flag("clip", "1.0", "global gradient-norm clipping threshold (0 = off)");
  a.flag("max-skips", "5",
         "a step whose loss or gradient norm is not finite applies no update (logged, listed in "
         "the report's skipped_steps); after N such steps in a row the run stops with an error");
  a.flag("seed", "1", "seed of parameter init and data order");
  a.flag("data", "data/moby_dick.txt", "training corpus (text)");
  a.flag("tokenizer", "data/tokenizer.model", "sentencepiece model");
  a.flag(
      "dataset", "",
      "DIR: train on a prepared dataset (origami data prepare) instead of --data, memory-mapped; "
      "the last 5% of its documents are held out");
  a.flag("pack", "none",
         "none | documents (needs --dataset): none cuts windows of S+1 tokens across documents; "
         "documents fills each sequence with whole documents (shuffled by --seed; one longer "
         "than S is split), RoPE positions restarting at each document, attention causal within "
         "a document only, the prediction across a boundary not counted");
  a.boolean("synthetic",
            "train on random tokens keyed by (seed, sample, position) instead of the corpus");
  a.flag("init", "",
         "start from these weights instead of random init: a .safetensors file (HF names; F32 or "
         "BF16), or HF's sharded layout: a model.safetensors.index.json or the directory holding "
         "it. Memory-mapped: each rank reads only the rows of its own slices (converted to the "
         "fp32 master weights as it copies them)");
  a.flag("eval-every", "50", "held-out evaluation every N steps (0 = off; also at the last step)");
  a.flag("eval-batches", "4", "micro-batches per evaluation");
  a.flag("log-every", "1", "progress line every N steps");
  a.flag("save-dir", "",
         "checkpoint directory (step_N/ and latest); saved at the end and every --save-every");
  a.flag("save-every", "0", "checkpoint every N steps (0 = only at the end)");
  a.flag("keep-last", "0",
         "keep only the N newest checkpoints in --save-dir, deleting older step_* directories "
         "after each save (0 = keep all)");
  a.flag("memory-limit", "auto",
         "GIB | auto | off: before allocating, refuse a run whose per-rank peak as `origami plan` "
         "predicts it (plus what the process already holds) exceeds GIB; auto: this rank's share "
         "of the host's available memory (MemAvailable, or the cgroup's limit; split among the "
         "host's ranks) or of the GPU's free memory");
  a.flag("resume", "",
         "resume from a checkpoint directory (its latest; if that step is missing or corrupt, the "
         "newest complete step, with a warning) or a step_N directory (that step, or an error)");
  a.flag("report", "", "write the run report (JSON, tsp-spec §10) to this file");
  a.flag("trace", "",
         "write a Chrome/Perfetto trace (JSON) of every rank: compute and communication tracks "
         "(open in https://ui.perfetto.dev or chrome://tracing)");
  a.boolean("profile-kernels",
            "time every kernel call (host wall clock; CPU devices) and add each kernel's seconds "
            "per step, without the warm-up step, to the report (kernel_seconds_per_step): the "
            "measured side of bench/kernel_compare.py");
  parallel_flags(a);
  a.boolean("quiet", "print nothing but errors");
  if (!a.parse(argc, argv)) return 0;
  TrainOptions o;
  o.config = a.str("config");
  o.steps = a.i64("steps", 1);
  o.seq = a.i64("seq", 1);
  o.micro_batch = a.i64("micro-batch", 1);
  o.grad_accum = a.i64("grad-accum", 1);
  constexpr double inf = std::numeric_limits<double>::infinity();
  o.lr = a.f64("lr");
  if (!(o.lr > 0)) fail("--lr=", a.str("lr"), " must be positive");
  if (a.given("min-lr")) o.min_lr = a.f64("min-lr", 0, o.lr);
  if (a.given("warmup")) o.warmup = a.i64("warmup", 0);
  o.weight_decay = a.f64("weight-decay", 0, inf);
  o.beta1 = a.f64("beta1", 0, 1, true);
  o.beta2 = a.f64("beta2", 0, 1, true);
  o.clip = a.f64("clip", 0, inf);
  o.seed = static_cast<uint64_t>(a.i64("seed", 0));
  o.data = a.str("data");
  o.tokenizer = a.str("tokenizer");
  o.synthetic = a.on("synthetic");
  o.dataset = a.str("dataset");
  const std::string pack = a.str("pack");
  if (pack != "none" && pack != "documents")
    fail("--pack=", pack, " is not one of none, documents");
  o.pack_documents = pack == "documents";
  if (o.pack_documents && o.dataset.empty())
    fail("--pack=documents needs --dataset DIR (origami data prepare)");
  if (!o.dataset.empty() && o.synthetic) fail("--dataset and --synthetic exclude each other");
  o.init_weights = a.str("init");
  o.eval_every = a.i64("eval-every", 0);
  o.eval_batches = a.i64("eval-batches", 1);
  o.log_every = a.i64("log-every", 0);
  o.save_dir = a.str("save-dir");
  o.save_every = a.i64("save-every", 0);
  o.keep_last = a.i64("keep-last", 0);
  o.max_skips = a.i64("max-skips", 1);
  // --memory-limit: the dry run of this very step (plan/dry_run.h) on the meta device, before
  // select_device; its predicted peak checked against what a rank may use after it.
  if (a.str("memory-limit") != "off") {
    const double limit = a.str("memory-limit") == "auto" ? -1 : a.f64("memory-limit", 0, 1e9);
    o.memory_check = [o, limit](const ModelConfig& cfg, const Layout& L) -> std::function<void()> {
      const plan::Input in{cfg,           L,     o.par,       o.recompute,
                           o.micro_batch, o.seq, o.par.dtype, omp_get_max_threads()};
      return [in, r = plan::dry_run(in), limit, config = o.config] {
        plan::check_fits(in, r, limit, config);
      };
    };
  }
  o.resume = a.str("resume");
  o.report = a.str("report");
  o.trace = a.str("trace");
  o.profile_kernels = a.on("profile-kernels");
  o.quiet = a.on("quiet");
  o.par = parallel_options(a, o.recompute);
  return run_train(o);
}

int cmd_grad(int argc, char** argv) {
  Args a("grad",
         "Mean cross-entropy over the non-ignored targets and the gradient of every\n"
         "parameter, written as safetensors: `loss` [1] and one fp32 tensor per HF name\n"
         "(tied embeddings: only model.embed_tokens.weight).");
  a.flag("config", "", "HF Llama config.json", true);
  a.flag("weights", "",
         "weights: a .safetensors file (HF names; F32 or BF16), or HF's sharded layout: a "
         "model.safetensors.index.json or the directory holding it; memory-mapped, each rank "
         "reads only the rows of its own slices",
         true);
  a.flag("tokens", "",
         "safetensors with input_ids [B, S+1] (I32/I64) and optional labels (-100 = ignored)",
         true);
  a.flag("out", "", "output safetensors (written atomically)", true);
  parallel_flags(a);
  a.flag("report", "",
         "write per-rank communication bytes (per layer, phase, category) and peak memory as JSON");
  if (!a.parse(argc, argv)) return 0;
  GradOptions o;
  o.report = a.str("report");
  o.config = a.str("config");
  o.weights = a.str("weights");
  o.tokens = a.str("tokens");
  o.out = a.str("out");
  o.par = parallel_options(a, o.recompute);
  run_grad(o);
  return 0;
}

int cmd_plan(int argc, char** argv) {
  Args a("plan",
         "Predict per-rank peak memory (by category) and bytes per layer for layouts and\n"
         "sequence lengths by a dry run of the engines (docs/memory-model.md): every rank a\n"
         "thread, tensors without memory, kernels that do nothing, communicators that record\n"
         "what MPI's would; print the TSP-vs-TP crossovers of tsp-spec §7. No MPI, no compute.");
  a.flag("config", "", "HF Llama config.json", true);
  a.repeatable("seq", "", "sequence length S");
  a.repeatable("layout", "",
               "a layout as for train (e.g. tsp=8, tp=8, tp=4,sp=2, fsdp_sp=8, dp=8, single)");
  a.flag("micro-batch", "1", "sequences per replica per micro-step");
  a.flag("dtype", "fp32",
         "fp32, or bf16 (weights, grads, activations and buffers 2 B; AdamW moments and master "
         "weights fp32)");
  a.flag("device-memory", "", "per-device budget in GiB: mark the layouts that fit");
  schedule_flags(a, true);
  a.flag("threads", "1",
         "OpenMP threads per rank (each keeps its own attention tiles, a few hundred KiB)");
  a.flag("new-tokens", "0",
         "N > 0: also predict inference (origami generate with N new tokens after a prompt of "
         "--seq tokens, batch --micro-batch): weights and KV cache per rank, bytes per decode "
         "step");
  a.boolean("json", "print a JSON list, one object per (layout, seq)");
  a.flag("plot", "", "write a PNG of predicted peak per rank against S per layout (gnuplot)");
  a.boolean(
      "time",
      "also predict time: the dry run keeps a simulated clock per rank (each kernel takes the "
      "hardware profile's time for its work, each transfer its link's latency and "
      "bandwidth, each wait advances to the transfer's end); prints the training step and "
      "the forward pass per layout and S, their exposed communication and tokens/s per "
      "device. Needs --hardware");
  a.flag("hardware", "",
         "FILE: the hardware profile for --time (configs/hardware/*.json, or what `origami "
         "calibrate` writes)");
  a.flag("devices", "0",
         "N: with --time, the job's devices: each layout gets a DP axis of N / its model-parallel "
         "ranks (the replicas' gradient reduction on the profile's inter-node link) and the table "
         "adds the whole job's tokens/s");
  a.boolean(
      "recommend",
      "with --time: per S, the layouts whose predicted peak fits the device (--device-memory, "
      "else the profile's device_memory_bytes) ranked by training throughput, and why the "
      "winner wins");
  a.boolean("dense-attention",
            "with --time, a counterfactual: attention charged as a masked dense kernel (every "
            "query-key pair it is given, no causal tile skipped); the engines run causal");
  a.boolean("no-zigzag",
            "with --time, a counterfactual: attention charged as if the sequence were split into "
            "contiguous chunks (rank i: chunks 2i, 2i+1) instead of zigzag; bytes and memory "
            "unchanged");
  a.flag("emulate-link", "",
         "GBPS[,LATENCY_US]: with --time, every link of the profile replaced by this one (what "
         "train --emulate-link GBPS,LATENCY_US runs over)");
  a.flag("trace", "",
         "FILE: with --time, the simulated timeline of the first layout at the first S as a "
         "Chrome/Perfetto trace (the same form as train --trace)");
  if (!a.parse(argc, argv)) return 0;
  plan::PlanOptions o;
  o.config = a.str("config");
  if (a.given("seq")) o.seqs = a.i64_list("seq", 1);
  o.layouts = a.list("layout");
  o.micro_batch = a.i64("micro-batch", 1);
  o.dtype = parse_compute_dtype(a.str("dtype"));
  const ScheduleFlags sf = schedule_options(a, o.par, true);
  o.recompute = sf.recompute;
  o.tp_sp_both = sf.tp_sp_both;
  o.mlp_transport_all = sf.mlp_transport_all;
  o.sp_comm_all = sf.sp_comm_all;
  if (a.given("device-memory")) {
    o.device_gib = a.f64("device-memory");
    if (!(o.device_gib > 0)) fail("--device-memory=", a.str("device-memory"), " must be positive");
  }
  o.json = a.on("json");
  o.new_tokens = a.i64("new-tokens", 0);
  o.threads = static_cast<int>(a.i64("threads", 1));
  o.plot = a.str("plot");
  if (a.on("time") != a.given("hardware"))
    fail(a.on("time") ? "--time needs --hardware FILE" : "--hardware needs --time");
  o.hardware = a.str("hardware");
  o.devices = a.i64("devices", 0);
  o.recommend = a.on("recommend");
  if ((o.devices > 0 || o.recommend) && !a.on("time"))
    fail(o.devices > 0 ? "--devices" : "--recommend", " needs --time");
  o.dense_attention = a.on("dense-attention");
  o.no_zigzag = a.on("no-zigzag");
  if ((o.dense_attention || o.no_zigzag) && !a.on("time"))
    fail(o.dense_attention ? "--dense-attention" : "--no-zigzag", " needs --time");
  if (a.given("emulate-link")) {
    if (!a.on("time")) fail("--emulate-link needs --time");
    parse_emulated_link(a.str("emulate-link"), o.par);
  }
  o.trace = a.str("trace");
  return plan::run_plan(o);
}

int cmd_calibrate(int argc, char** argv) {
  Args a("calibrate",
         "Measure this machine into a hardware profile for `origami plan --time`: the rate of\n"
         "every GEMM shape the engines issue (collected by dry runs of --layout at --seq, fp32\n"
         "and bf16), causal flash attention forward and backward at lengths covering their\n"
         "calls, memory bandwidth, exponentials, a kernel call's fixed cost and under mpirun\n"
         "(2+ ranks) the MPI link between ranks 0 and 1. Each quantity is the median of --rounds\n"
         "interleaved rounds; the profile records their spread. Run it as the runs to predict\n"
         "run (the same ranks per host and OMP_NUM_THREADS): every rank measures at once.");
  a.flag("out", "", "the profile to write (JSON; every number with its provenance)", true);
  a.flag("config", "configs/small.json", "HF Llama config of the runs to predict");
  a.repeatable("seq", "", "a sequence length of the runs to predict (default 1024 and 4096)");
  a.repeatable("layout", "",
               "a layout of the runs to predict (default: single on 1 rank, else tsp, fsdp_sp, "
               "tp, sp over all ranks, and tp=2,sp=2 on 4)");
  a.flag("micro-batch", "1", "sequences per replica per micro-step of the runs to predict");
  a.flag("attn-seq", "4096", "the longest causal attention measured (longer calls take its rate)");
  a.flag("rounds", "5", "interleaved rounds over every measurement (the median is kept)");
  a.flag("dtype", "both",
         "fp32 | bf16 | both: the element types to measure (the other's rates are then copied "
         "from the measured one, and the profile says so)");
  a.flag("reps", "3", "calls per measurement and round, after a warm-up (the median is kept)");
  if (!a.parse(argc, argv)) return 0;
  plan::CalibrateOptions o;
  o.out = a.str("out");
  o.config = a.str("config");
  if (a.given("seq")) o.seqs = a.i64_list("seq", 1);
  o.layouts = a.list("layout");
  o.micro_batch = a.i64("micro-batch", 1);
  o.attn_seq = a.i64("attn-seq", 128);
  o.rounds = static_cast<int>(a.i64("rounds", 1));
  const std::string dt = a.str("dtype");
  if (dt != "fp32" && dt != "bf16" && dt != "both")
    fail("--dtype=", dt, " is not one of: fp32, bf16, both");
  o.fp32 = dt != "bf16";
  o.bf16 = dt != "fp32";
  o.reps = static_cast<int>(a.i64("reps", 1));
  return plan::run_calibrate(o);
}

int cmd_init(int argc, char** argv) {
  Args a("init",
         "Write initialised weights: N(0, 0.02) per element from the counter-based RNG keyed\n"
         "by (seed, HF name, index); norm weights 1.");
  a.flag("config", "", "HF Llama config.json", true);
  a.flag("seed", "1", "seed");
  a.flag("out", "", "output safetensors", true);
  if (!a.parse(argc, argv)) return 0;
  const ModelConfig cfg = ModelConfig::load(a.str("config"));
  ModelParams p = ModelParams::zeros(cfg, Cat::weights);
  init_params(p, static_cast<uint64_t>(a.i64("seed", 0)));
  save_params(p, a.str("out"));
  return 0;
}

int cmd_generate(int argc, char** argv) {
  Args a("generate",
         "Generate tokens from a model. The prompt is prefilled by the TSP forward (each rank\n"
         "keeps K and V of its own tokens: 1/D of the cache) and every new token is decoded\n"
         "without moving a weight (docs/inference.md). Prints the text as it is generated (or\n"
         "the ids), then time to first token, prefill and decode tokens/s, and per rank the\n"
         "KV-cache bytes and the bytes received per decode step.");
  a.flag("config", "", "HF Llama config.json", true);
  a.flag("weights", "",
         "weights: a .safetensors file (HF names; F32 or BF16), or HF's sharded layout: a "
         "model.safetensors.index.json or the directory holding it; memory-mapped, each rank "
         "reads only the rows of its own shards (converted to --dtype as it copies them)");
  a.flag("checkpoint", "", "or a checkpoint directory of train (its latest) or a step_N directory");
  a.flag("prompt", "", "the prompt as text (tokenised with --tokenizer; B = 1)");
  a.flag("tokens", "", "or the prompt as ids: safetensors with input_ids [B, S] (I32/I64)");
  a.flag("tokenizer", "data/tokenizer.model", "sentencepiece model (text prompts)");
  a.flag("max-new-tokens", "32", "tokens to generate per sequence (fewer if all stop at EOS)");
  a.flag("temperature", "0", "0 = greedy (the default); > 0 samples softmax(logits / T)");
  a.flag("top-k", "0", "sample among the k most likely tokens only (0 = all)");
  a.flag("top-p", "1", "sample among the most likely tokens of total probability p (1 = all)");
  a.flag("seed", "1", "sampling seed (same tokens under every layout)");
  a.flag("eos-id", "",
         "stop a sequence at this id [default: the tokenizer's for text prompts, none for ids; "
         "-1 = never]");
  a.flag("layout", "", "single, tsp=D, tp=D or sp=D (under mpirun -np D)");
  a.flag("sp-comm", "allgather",
         "--layout sp=N: the prefill's attention: allgather (K/V all-gathered), p2p (ring "
         "attention: K/V passed one neighbour a step) or a2a (Ulysses: all-to-all into head "
         "shards)");
  a.flag("max-memory", "",
         "per-rank budget in GiB: refuse (before any work) when the weight shards and the KV "
         "cache would not fit");
  a.flag("out", "", "write output_ids [B, S + new] (I64 safetensors)");
  a.flag("report", "", "write the run's numbers (throughput, per-rank cache and bytes) as JSON");
  runtime_flags(a, false);
  a.flag("dump-logits", "",
         "write the logits behind every generated token, logits [new, B, V] (F32 safetensors)");
  a.boolean("quiet", "print nothing but errors");
  if (!a.parse(argc, argv)) return 0;
  infer::GenerateOptions o;
  o.dump_logits = a.str("dump-logits");
  o.config = a.str("config");
  o.weights = a.str("weights");
  o.checkpoint = a.str("checkpoint");
  o.prompt = a.str("prompt");
  o.tokens = a.str("tokens");
  o.tokenizer = a.str("tokenizer");
  o.max_new_tokens = a.i64("max-new-tokens", 1);
  o.sampling.temperature = a.f64("temperature");
  o.sampling.top_k = a.i64("top-k", 0);
  o.sampling.top_p = a.f64("top-p");
  o.sampling.seed = static_cast<uint64_t>(a.i64("seed", 0));
  if (a.given("eos-id")) o.eos_id = a.i64("eos-id", -1);
  o.layout = a.str("layout");
  if (a.given("max-memory")) {
    o.max_memory_gib = a.f64("max-memory");
    if (!(o.max_memory_gib > 0)) fail("--max-memory=", a.str("max-memory"), " must be positive");
  }
  o.out = a.str("out");
  o.report = a.str("report");
  o.quiet = a.on("quiet");
  runtime_options(a, o.par, false);
  o.par.sp_comm = parse_sp_comm(a.str("sp-comm"));
  device_hooks(o.par);
  return infer::run_generate(o);
}

// One rank's error is the job's error. A rank that fails offers to agree on it (a barrier on a
// communicator used for nothing else). If every rank fails — the usual case: a verdict on the
// arguments and files that every rank reaches before its first collective — the barrier completes,
// the messages are gathered to rank 0 and each distinct one is printed once, and every rank exits
// 1. If the others do not fail within a few seconds (they are computing, or waiting in a collective
// this rank will never join), this rank prints its message naming itself and aborts the job
// (MPI_Abort), so a job never hangs on one rank's error.
MPI_Comm g_error_comm = MPI_COMM_NULL;

void report_error(bool mpi, const std::string& msg) {
  int world = 1, rank = 0;
  if (mpi) MPI_Comm_size(g_error_comm, &world), MPI_Comm_rank(g_error_comm, &rank);
  if (world == 1) {
    std::fprintf(stderr, "origami: error: %s\n", msg.c_str());
    return;
  }
  const char* env = std::getenv("ORIGAMI_ERROR_AGREE_S");
  const double wait_s = env ? std::atof(env) : 5.0;
  MPI_Request req;
  MPI_Ibarrier(g_error_comm, &req);
  const double t0 = MPI_Wtime();
  int done = 0;
  while (!done && MPI_Wtime() - t0 < wait_s) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (!done) usleep(1000);
  }
  if (!done) {
    std::fprintf(stderr, "origami: error on rank %d of %d (ending the job): %s\n", rank, world,
                 msg.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  const int len = static_cast<int>(msg.size());
  std::vector<int> lens(static_cast<size_t>(world)), offs(lens.size());
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, g_error_comm);
  int total = 0;
  for (int r = 0; r < world; ++r)
    offs[static_cast<size_t>(r)] = total, total += lens[static_cast<size_t>(r)];
  std::string all(static_cast<size_t>(rank == 0 ? total : 0), '\0');
  MPI_Gatherv(msg.data(), len, MPI_CHAR, all.data(), lens.data(), offs.data(), MPI_CHAR, 0,
              g_error_comm);
  if (rank != 0) return;
  std::vector<std::pair<std::string, std::vector<int>>> distinct;  // message, its ranks
  for (int r = 0; r < world; ++r) {
    const std::string m = all.substr(static_cast<size_t>(offs[static_cast<size_t>(r)]),
                                     static_cast<size_t>(lens[static_cast<size_t>(r)]));
    auto it = std::find_if(distinct.begin(), distinct.end(), [&](auto& d) { return d.first == m; });
    if (it == distinct.end())
      distinct.push_back({m, {r}});
    else
      it->second.push_back(r);
  }
  for (const auto& [m, ranks] : distinct) {
    std::string who;
    for (int r : ranks) who.append(who.empty() ? "" : ",").append(std::to_string(r));
    if (distinct.size() == 1)
      std::fprintf(stderr, "origami: error: %s\n", m.c_str());
    else
      std::fprintf(stderr, "origami: error (ranks %s): %s\n", who.c_str(), m.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool mpi = launched_by_mpi();
  if (mpi) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_dup(MPI_COMM_WORLD, &g_error_comm);
  }
  int rc = 0;
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "train")
      rc = cmd_train(argc - 2, argv + 2);
    else if (cmd == "grad")
      rc = cmd_grad(argc - 2, argv + 2);
    else if (cmd == "init")
      rc = cmd_init(argc - 2, argv + 2);
    else if (cmd == "plan")
      rc = cmd_plan(argc - 2, argv + 2);
    else if (cmd == "calibrate")
      rc = cmd_calibrate(argc - 2, argv + 2);
    else if (cmd == "bench")
      rc = cmd_bench(argc - 2, argv + 2);
    else if (cmd == "generate")
      rc = cmd_generate(argc - 2, argv + 2);
    else if (cmd == "data")
      rc = cmd_data(argc - 2, argv + 2);
    else if (cmd == "--help" || cmd == "-h" || cmd == "help")
      std::fputs(kUsage, stdout);
    else {
      std::fprintf(stderr, "%s%s",
                   cmd.empty() ? "" : ("origami: unknown command '" + cmd + "'\n\n").c_str(),
                   kUsage);
      rc = 2;
    }
  } catch (const std::exception& e) {  // origami's Error and the library's
    report_error(mpi, e.what());
    rc = 1;
  }
  if (mpi) {
    set_progress_thread(0);
    MPI_Comm_free(&g_error_comm);
    MPI_Finalize();
  }
  return rc;
}
