#include "cli/flags.h"

#include "core/error.h"

namespace origami {

void schedule_flags(Args& a, bool both) {
  a.flag("recompute", "none",
         "activation checkpointing: none | full (blocks keep only their input; the backward "
         "recomputes the forward, communication included)");
  a.flag("attn-buckets", "1",
         "process each rank's KV heads in N buckets (N divides n_kv/D for tsp and fsdp_sp, "
         "n_kv/T for tp and sp): a smaller gathered K/V buffer");
  a.boolean("keep-attn-weights",
            "TSP, with --recompute full: keep a layer's attention packets from its recompute to "
            "its backward");
  a.boolean("fused-mlp-recompute",
            "tsp, fsdp_sp with --recompute full: do not rerun the MLP in the recompute; the "
            "backward ring recomputes g, u per arriving shard (one weight ring less per layer, "
            "and only one shard's g, u alive)");
  a.flag("mlp-transport", "ring",
         "tsp: how the MLP's weight shards and gradient accumulators travel: ring (one "
         "neighbour, tsp-spec), biring (each shard in two halves, one per direction: both "
         "neighbour links), broadcast (every shard gathered by all at once: every link of a full "
         "mesh, D shards alive)" +
             std::string(both ? "; all = every tsp layout once per transport; other layouts "
                                "keep theirs"
                              : ""));
  a.flag("sp-comm", "allgather",
         "sp (tp=1), and fsdp_sp: how attention sees every token: allgather (K/V all-gathered, "
         "Megatron's all_gather context parallelism), p2p (K/V passed around a ring, one "
         "neighbour's chunk at a time: ring attention), a2a (all-to-all of q, k, v into head "
         "shards and of o back: DeepSpeed Ulysses; KV heads replicated when fewer than the ranks)" +
             std::string(both ? "; all = every such layout once per method" : ""));
  a.flag("tp-sequence-parallel", "on",
         std::string("tp layouts: on = Megatron sequence parallelism (norms and residuals split "
                     "over the TP ranks, all-gather/reduce-scatter), off = plain TP (replicated "
                     "residuals, all-reduce)") +
             (both ? "; both = every tp layout twice, with and without" : ""));
}

ScheduleFlags schedule_options(const Args& a, ParallelOptions& p, bool both) {
  ScheduleFlags s;
  s.recompute = parse_recompute(a.str("recompute"));
  p.attn_buckets = static_cast<int>(a.i64("attn-buckets", 1));
  p.keep_attn_weights = a.on("keep-attn-weights");
  p.fused_mlp_recompute = a.on("fused-mlp-recompute");
  if (both && a.str("mlp-transport") == "all")
    s.mlp_transport_all = true;
  else
    p.mlp_transport = parse_mlp_transport(a.str("mlp-transport"));
  if (both && a.str("sp-comm") == "all")
    s.sp_comm_all = true;
  else
    p.sp_comm = parse_sp_comm(a.str("sp-comm"));
  const std::string sp = a.str("tp-sequence-parallel");
  if (sp != "on" && sp != "off" && !(both && sp == "both"))
    fail("--tp-sequence-parallel=", sp, " is not one of: on, off", both ? ", both" : "");
  p.tp_seq_parallel = sp != "off";
  // plan and bench (`both` declared) apply it to their tp rows only: not a request of every layout
  p.tp_seq_parallel_given = !both && a.given("tp-sequence-parallel");
  s.tp_sp_both = sp == "both";
  return s;
}

std::string schedule_args(const Args& a) {
  std::string s = " --recompute " + a.str("recompute");
  if (a.given("attn-buckets")) s += " --attn-buckets " + a.str("attn-buckets");
  if (a.on("keep-attn-weights")) s += " --keep-attn-weights";
  if (a.on("fused-mlp-recompute")) s += " --fused-mlp-recompute";
  return s;
}

void runtime_flags(Args& a, bool transfers) {
  if (transfers) {
    a.boolean("no-overlap",
              "wait for every transfer right after posting it (same results, bit for bit)");
    a.flag("emulate-link", "",
           "GBPS[,LATENCY_US]: every transfer a rank receives completes no earlier than latency + "
           "bytes/bandwidth after it is posted, on one inbound link per rank (waits sleep): "
           "GPU-like compute-to-link ratios on CPU");
  }
  a.flag("device", "cpu",
         "cpu | cuda | emu: where tensors live and the kernels run. cuda: the GPU (origami-cuda "
         "only; every layout; the ranks' communicators stage through pinned host memory, so "
         "several ranks may share one GPU); emu: an emulated device on the CPU whose memory "
         "faults on any host access (a check that the engines go through the device seam; "
         "bitwise equal to cpu)");
  a.flag("dtype", "fp32",
         "fp32 | bf16: the compute type. bf16: weights (a bf16 copy of fp32 master weights), "
         "activations and their gradients in bf16, GEMMs in bf16 with fp32 accumulation; "
         "RMSNorm statistics, attention softmax and log-sum-exp, logits, the loss, parameter "
         "gradients, the residual stream and every sum of partial products in fp32 "
         "(docs/design.md, Precision). generate: weights and the KV cache in bf16. Every "
         "layout; --device cpu, emu and cuda (cuda: GPU-unverified until a GPU runs "
         "tools/gpu_check.sh)");
  a.flag("comm", "auto",
         "auto | mpi | mpi_staged | nccl: the ranks' communicators. mpi: Open MPI on host memory "
         "(--device cpu); mpi_staged: device buffers through pinned host memory and MPI (any "
         "number of ranks may share a GPU; bitwise the CPU's reduction order); nccl: NCCL on "
         "device memory (origami-cuda built with NCCL; one GPU per rank). auto: mpi on the CPU, "
         "mpi_staged on a device");
  a.flag("timeout", "600",
         "SECONDS: a transfer or barrier that has not completed after this long (a rank stopped, "
         "died or lost its link) prints what it waited for and ends the job (exit 3); 0 = wait "
         "forever");
  if (transfers)
    a.flag("progress-thread", "100",
           "US: a thread tests every outstanding transfer every US microseconds so that it "
           "advances while this rank computes (OpenMPI has no asynchronous progress); 0 = off, "
           "transfers then advance only between compute steps and in waits");
}

void runtime_options(const Args& a, RuntimeOptions& p, bool transfers) {
  p.device = a.str("device");
  p.comm = a.str("comm");
  p.dtype = parse_compute_dtype(a.str("dtype"));
  p.timeout_s = a.f64("timeout", 0, 1e9);
  if (!transfers) return;
  p.overlap = !a.on("no-overlap");
  if (a.given("emulate-link")) parse_emulated_link(a.str("emulate-link"), p);
  p.progress_us = a.f64("progress-thread");
  if (!(p.progress_us >= 0) || p.progress_us > 1e6)
    fail("--progress-thread=", a.str("progress-thread"),
         " is not a poll interval in microseconds between 0 and 1000000");
}

std::string layout_help() {
  // (appends, not operator+: g++ 12 warns falsely on some std::string concatenations)
  std::string s = "parallel layout: single, or axis=size pairs from ";
  s.append(layout_axes())
      .append(
          " (the product must equal the mpirun world size; one layout's axes, each combinable with "
          "dp), e.g. tsp=4, dp=2,tsp=2, tp=2,sp=2. Layouts:");
  for (const LayoutSpec* sp : layout_specs()) {
    s.append(" ");
    if (sp->axes.empty()) s.append(sp->name).append(": ");
    s.append(sp->help).append(";");
  }
  s.back() = '.';
  return s;
}

}  // namespace origami
