"""`origami plan --time` (issue 19): the dry run's simulated clock against formulas it does not
share code with.
- A profile where only GEMMs take time (attention, memory-bound kernels, launches and links free):
  the single rank's training step is 6·P_m·B·S / rate and its forward 2·P_m·B·S / rate exactly
  (P_m: the matmul parameters, tsp-spec §10), tsp=2's and tp=2's forward half of it.
- A profile where only attention takes time: the forward is 4·d·n_h·L·B·S(S+1)/2 / rate (the
  causal pairs of every head and layer), the training step adds 10·d per pair at the backward rate.
- A slow link: TSP's exposed communication is positive and its step longer than with free links;
  predictions are identical across reruns; the link's utilisation (received bytes over the
  bandwidth) doubles when the bandwidth halves.
- AdamW at the profile's update rate is P / rate; the fixed-order sums (RMSNorm's statistics, the
  gradient norm) at its chain rate are (2·(2L+1)·S·h + P) / rate.
- `origami calibrate` writes a profile with a rate for every GEMM shape the engines issue; with
  those shapes' rates set by hand, the step follows the shapes' transposes (forward GEMMs at half
  the rate: forward 4·P_m·S/rate, step 8·P_m·S/rate), and an attention-rate table is interpolated
  in log(pairs per head).
Usage: test_plan_time.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import shutil
import subprocess
import sys

BIN, WORK = sys.argv[1], sys.argv[2]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def profile(name, gemm=1e30, attn=(1e30, 1e30), mem=1e30, link=1e30, latency=0.0):
    p = {"name": name, "gemm_flops": {"fp32": gemm, "bf16": 2 * gemm},
         "attn_fwd_flops": {"fp32": attn[0], "bf16": attn[0]},
         "attn_bwd_flops": {"fp32": attn[1], "bf16": attn[1]},
         "memory_bytes_per_s": mem, "kernel_launch_s": 0, "ranks_per_node": 8,
         "intra_node": {"latency_s": latency, "bytes_per_s": link},
         "inter_node": {"latency_s": latency, "bytes_per_s": link}}
    path = os.path.join(WORK, name + ".json")
    json.dump(p, open(path, "w"))
    return path


def plan(hw, layouts, seq, extra=()):
    cmd = [BIN, "plan", "--config", os.path.join(ROOT, "configs/small.json"), "--seq", str(seq),
           "--time", "--hardware", hw, "--json", *extra]
    for L in layouts:
        cmd += ["--layout", L]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        sys.exit(f"plan failed: {r.stderr}")
    return {x["layout"]: x["predicted_seconds"] for x in json.loads(r.stdout)}, r.stdout


c = json.load(open(os.path.join(ROOT, "configs/small.json")))
h, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
d = h // nh
Pm = L * (2 * h * h + 2 * h * nkv * d + 3 * h * I) + h * V
S, rate = 1024, 1e12
rel = lambda a, b: abs(a - b) / b  # noqa: E731

t, _ = plan(profile("gemm_only", gemm=rate), ["single", "tsp=2", "tp=2"], S)
check(rel(t["single"]["train_step"], 6 * Pm * S / rate) < 1e-9,
      f"single, GEMMs only: step {t['single']['train_step']:.9f} s = 6·P_m·S/rate {6 * Pm * S / rate:.9f}")
check(rel(t["single"]["forward"], 2 * Pm * S / rate) < 1e-9,
      f"single, GEMMs only: forward {t['single']['forward']:.9f} s = 2·P_m·S/rate")
for lay in ("tsp=2", "tp=2"):
    check(rel(t[lay]["forward"], Pm * S / rate) < 1e-9,
          f"{lay}, GEMMs only: forward {t[lay]['forward']:.9f} s = half the single rank's")

fwd_rate, bwd_rate = 1e11, 5e10
t, _ = plan(profile("attn_only", attn=(fwd_rate, bwd_rate)), ["single", "tsp=2"], S)
pairs = L * nh * S * (S + 1) / 2
check(rel(t["single"]["forward"], 4 * d * pairs / fwd_rate) < 1e-9,
      f"single, attention only: forward {t['single']['forward']:.9f} s = 4·d·pairs/rate")
want = 4 * d * pairs / fwd_rate + 10 * d * pairs / bwd_rate
check(rel(t["single"]["train_step"], want) < 1e-9,
      f"single, attention only: step {t['single']['train_step']:.9f} s = (4·d/fwd + 10·d/bwd)·pairs")
check(rel(t["tsp=2"]["forward"], 2 * d * pairs / fwd_rate) < 1e-9,
      f"tsp=2, attention only: forward {t['tsp=2']['forward']:.9f} s = half (zigzag balances the pairs)")

free, _ = plan(profile("free_link", gemm=rate, attn=(fwd_rate, bwd_rate), mem=2e10), ["tsp=2"], S)
slow, out1 = plan(profile("slow_link", gemm=rate, attn=(fwd_rate, bwd_rate), mem=2e10, link=2e8,
                          latency=2e-5), ["tsp=2"], S)
_, out2 = plan(os.path.join(WORK, "slow_link.json"), ["tsp=2"], S)
# (with free links only skew is left: a rank waiting for a peer with more work)
check(slow["tsp=2"]["train_step_exposed"] > 0.1 * slow["tsp=2"]["train_step"]
      and free["tsp=2"]["train_step_exposed"] < 1e-3 * free["tsp=2"]["train_step"],
      f"tsp=2 over a 200 MB/s link: exposed {slow['tsp=2']['train_step_exposed']:.4f} s "
      f"(free link: {free['tsp=2']['train_step_exposed']:.2g} s)")
check(slow["tsp=2"]["train_step"] > free["tsp=2"]["train_step"],
      f"tsp=2: step {slow['tsp=2']['train_step']:.4f} s over the slow link > "
      f"{free['tsp=2']['train_step']:.4f} s over a free one")
check(out1 == out2, "predictions identical across reruns")
# Link utilisation: the busiest rank's received bytes over the bandwidth — half the bandwidth,
# twice the wire time, and never more than the step.
half, _ = plan(profile("half_link", gemm=rate, attn=(fwd_rate, bwd_rate), mem=2e10, link=1e8,
                       latency=2e-5), ["tsp=2"], S)
b1, b2 = slow["tsp=2"]["train_step_link_busy"], half["tsp=2"]["train_step_link_busy"]
check(0 < b1 <= slow["tsp=2"]["train_step"] and rel(b2, 2 * b1) < 1e-9
      and free["tsp=2"]["train_step_link_busy"] < 1e-12,
      f"link busy {b1:.4f} s of a {slow['tsp=2']['train_step']:.4f} s step at 200 MB/s, "
      f"{b2:.4f} s at 100 MB/s (twice), ~0 on a free link")

# --devices: DP fills the rest; its gradient reduction takes the inter-node link's time.
hw = profile("dp_link", gemm=rate, attn=(fwd_rate, bwd_rate), mem=2e10, link=2e8)
d2, _ = plan(hw, ["tsp=2"], S, ["--devices", "2"])
d4, _ = plan(hw, ["tsp=2"], S, ["--devices", "4"])
check(list(d4) == ["dp=2,tsp=2"] and d4["dp=2,tsp=2"]["train_step"] > d2["tsp=2"]["train_step"]
      and rel(d4["dp=2,tsp=2"]["forward"], d2["tsp=2"]["forward"]) < 1e-4,  # (its loss sum only)
      f"--devices 4: dp=2,tsp=2's step {d4['dp=2,tsp=2']['train_step']:.4f} s > tsp=2's "
      f"{d2['tsp=2']['train_step']:.4f} s (the replicas' all-reduce), forward the same")
r = subprocess.run([BIN, "plan", "--config", os.path.join(ROOT, "configs/small.json"), "--seq", str(S),
                    "--layout", "tsp=2", "--layout", "tp=2", "--time", "--hardware", hw, "--recommend"],
                   capture_output=True, text=True, cwd=ROOT)
rec = [x for x in r.stdout.splitlines() if x.startswith(f"S = {S}: ")]
check(r.returncode == 0 and rec and "the next" in rec[0], f"--recommend: {rec[:1]}")

# --trace: a Perfetto trace of the simulated timeline, compute and communication tracks.
tr = os.path.join(WORK, "trace.json")
plan(os.path.join(WORK, "slow_link.json"), ["tsp=2"], S, ["--trace", tr])
ev = json.load(open(tr))["traceEvents"]
spans = [e for e in ev if e["ph"] == "X"]
check({e["tid"] for e in spans} == {0, 1} and {e["pid"] for e in spans} == {0, 1},
      f"--trace: {len(spans)} spans on 2 ranks, compute (tid 0) and communication (tid 1)")

# A copy beside compute (background_copy_bytes_per_s, on_cores): a transfer that completed while
# the rank computed costs the rank its received bytes at that rate, as compute, not as a wait.
# GEMMs only and a link so fast that a transfer is done before its wait unless the wait follows
# its post at once (those copies happen in the wait): the step grows by at most the received
# bytes (the link's utilisation times its bandwidth) over the rate and by most of them, and
# twice that at half the rate (to 1e-4: the slower copies move a few of the ranks' posts, so a
# transfer or two lands after its wait instead).
def bg_profile(name, bg=None):
    pb = json.loads(open(profile(name, gemm=rate, link=1e15)).read())
    for k in ("intra_node", "inter_node"):
        pb[k]["on_cores"] = True
        if bg:
            pb[k]["background_copy_bytes_per_s"] = bg
    json.dump(pb, open(os.path.join(WORK, name + ".json"), "w"))
    return os.path.join(WORK, name + ".json")
t0, _ = plan(bg_profile("bg_none"), ["tsp=2"], S)
t1, _ = plan(bg_profile("bg_fast", 1e10), ["tsp=2"], S)
t2, _ = plan(bg_profile("bg_slow", 5e9), ["tsp=2"], S)
got = [t1["tsp=2"]["train_step"] - t0["tsp=2"]["train_step"],
       t2["tsp=2"]["train_step"] - t0["tsp=2"]["train_step"]]
most = t0["tsp=2"]["train_step_link_busy"] * 1e15 / 1e10  # received bytes / 10 GB/s
check(0.9 * most < got[0] <= most * (1 + 1e-9) and rel(got[1], 2 * got[0]) < 1e-4,
      f"background copies: +{got[0]:.6f} s at 10 GB/s (received bytes / rate: {most:.6f} s), "
      f"+{got[1]:.6f} s at 5 GB/s")

# AdamW at a profile's update rate: the step is every parameter's update, P / rate.
P = V * h * (1 if c.get("tie_word_embeddings") else 2) + h + L * (
    2 * h * h + 2 * h * nkv * d + 3 * h * I + 2 * h)
pa = json.loads(open(profile("adam_only")).read())
pa["update_per_s"] = 1e9
json.dump(pa, open(os.path.join(WORK, "adam_only.json"), "w"))
t, _ = plan(os.path.join(WORK, "adam_only.json"), ["single"], S)
check(rel(t["single"]["train_step"], P / 1e9) < 1e-9,
      f"AdamW at update_per_s: step {t['single']['train_step']:.9f} s = P/rate {P / 1e9:.9f} (P = {P})")

# Fixed-order sums at a profile's chain rate: RMSNorm's row statistics (2L + 1 norms over S rows
# of h, forward and again backward) and the gradient norm over every parameter.
pc = json.loads(open(profile("chain_only")).read())
pc["chain_per_s"] = 1e9
json.dump(pc, open(os.path.join(WORK, "chain_only.json"), "w"))
t, _ = plan(os.path.join(WORK, "chain_only.json"), ["single"], S)
norms = (2 * L + 1) * S * h
check(rel(t["single"]["forward"], norms / 1e9) < 1e-9
      and rel(t["single"]["train_step"], (2 * norms + P) / 1e9) < 1e-9,
      f"fixed-order sums at chain_per_s: forward {t['single']['forward']:.9f} s = (2L+1)·S·h/rate, "
      f"step {t['single']['train_step']:.9f} s = (2·(2L+1)·S·h + P)/rate {(2 * norms + P) / 1e9:.9f}")

# ---- calibrate, and rates by GEMM shape and attention size --------------------------------------
cal = os.path.join(WORK, "calibrated.json")
r = subprocess.run([BIN, "calibrate", "--config", os.path.join(ROOT, "configs/small.json"), "--seq",
                    str(S), "--attn-seq", "256", "--rounds", "2", "--reps", "1", "--out", cal],
                   capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
check(r.returncode == 0 and os.path.exists(cal), f"calibrate ran (exit {r.returncode}) {r.stderr[-300:]}")
prof = json.load(open(cal))
shapes = prof["gemm_shapes"]["fp32"]
check(len(shapes) >= 6 and all(x[5] > 0 for x in shapes) and len(prof["attn_sizes"]["bf16"]) == 1
      and prof["chain_per_s"] > 0 and "chain_per_s" in prof["provenance"]
      and 0 <= prof["spread"]["gemm_median"] and "gemm_shapes" in prof["provenance"],
      f"calibrate: {len(shapes)} fp32 GEMM shapes of single at S={S}, attention at --attn-seq only "
      f"(the calls are longer), spreads recorded")
t, _ = plan(cal, ["single"], S)
check(t["single"]["train_step"] > 0, f"plan --time with the calibrated profile: {t['single']['train_step']:.3f} s")
# Under mpirun: the link between ranks, measured (latency, bandwidth, collectives, sync_skew, and
# the cost of a copy beside compute), and plan predicts tsp=2 from it.
cal2 = os.path.join(WORK, "calibrated_np2.json")
r = subprocess.run(["mpirun", "-np", "2", "--bind-to", "none", BIN, "calibrate", "--config",
                    os.path.join(ROOT, "configs/small.json"), "--seq", str(S), "--layout", "tsp=2",
                    "--attn-seq", "256", "--rounds", "1", "--reps", "3", "--out", cal2],
                   capture_output=True, text=True, cwd=ROOT,
                   env=dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
                            OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                            OMPI_MCA_rmaps_base_oversubscribe="1"))
check(r.returncode == 0 and os.path.exists(cal2), f"calibrate under mpirun -np 2 ran (exit {r.returncode}) {r.stderr[-300:]}")
link = json.load(open(cal2))["intra_node"]
check(link.get("on_cores") is True and link["bytes_per_s"] > 0 and link["sync_skew"] >= 0
      and set(link["collectives"]) == {"allgather", "reduce_scatter", "allreduce", "alltoall"}
      and link.get("background_copy_bytes_per_s", 0) > 0
      and "background_copy_bytes_per_s" in json.load(open(cal2))["provenance"]["intra_node"],
      f"calibrate -np 2: link {link['bytes_per_s'] / 1e9:.1f} GB/s, a copy beside compute "
      f"{link.get('background_copy_bytes_per_s', 0) / 1e9:.1f} GB/s, collectives and sync_skew")
t, _ = plan(cal2, ["tsp=2"], S)
check(t["tsp=2"]["train_step"] > 0, f"plan --time tsp=2 with it: {t['tsp=2']['train_step']:.3f} s")
# The calibrated shapes with rates set by hand: (N, T) GEMMs (the forward's) at rate / 2.
p = json.loads(open(profile("by_shape")).read())
p["gemm_shapes"] = {"fp32": [x[:5] + [rate / 2 if (x[0], x[1]) == (0, 1) else rate] for x in shapes]}
json.dump(p, open(os.path.join(WORK, "by_shape.json"), "w"))
t, _ = plan(os.path.join(WORK, "by_shape.json"), ["single"], S)
check(rel(t["single"]["forward"], 4 * Pm * S / rate) < 1e-9
      and rel(t["single"]["train_step"], 8 * Pm * S / rate) < 1e-9,
      f"rates by shape: forward {t['single']['forward']:.9f} s = 4·P_m·S/rate, step "
      f"{t['single']['train_step']:.9f} s = 8·P_m·S/rate")
pp = S * (S + 1) / 2  # one call per layer: the causal pairs of a head
p = json.loads(open(profile("attn_table", attn=(1.0, 1.0))).read())
p["attn_sizes"] = {"fp32": [[pp / 4, fwd_rate, bwd_rate], [pp * 4, 3 * fwd_rate, 3 * bwd_rate]]}
json.dump(p, open(os.path.join(WORK, "attn_table.json"), "w"))
t, _ = plan(os.path.join(WORK, "attn_table.json"), ["single"], S)
check(rel(t["single"]["forward"], 4 * d * pairs / (2 * fwd_rate)) < 1e-9,
      f"attention by size: forward {t['single']['forward']:.9f} s at the rate halfway (log pairs) "
      f"between the table's rows")

if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print("all plan --time checks passed")
