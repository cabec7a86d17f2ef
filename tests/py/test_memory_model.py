"""The memory model (`origami plan`, docs/memory-model.md: a dry run of the engines) against the
tracked peaks of real runs: for every layout with 1, 2 and 4 ranks, two sequence lengths and both
recompute modes (plus head buckets, kept attention packets, and --dtype bf16 under every layout),
`origami train --synthetic --steps 2`
reports each rank's peak bytes per category; `origami plan --json` predicts them. Every category
and the total must be exact (the dry run allocates what the engines allocate). Also: the
per-layer bytes plan prints equal the bytes the run recorded; the tracked total explains the
process's resident-set growth (VmHWM - VmRSS before the first tensor within 0.95-1.3x of the
tracked peak, at >= 256 MiB tracked); plan prints the crossovers of tsp-spec §7 for the paper's 7B
(32768 = 8h forward, 24h and 16h per step); plan refuses an impossible layout with train's error.
Usage: test_memory_model.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import mpi, run  # noqa: E402

CONFIG = dict(hidden_size=128, intermediate_size=384, num_attention_heads=8, num_key_value_heads=4,
              num_hidden_layers=2, vocab_size=1000, max_position_embeddings=512, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=False)
LAYOUTS = {1: ["single"],
           2: ["tsp=2", "fsdp_sp=2", "tp=2", "tp=2 off", "sp=2", "dp=2"],
           4: ["tsp=4", "fsdp_sp=4", "tp=4", "tp=4 off", "sp=4", "tp=2,sp=2", "tp=2,sp=2 off", "dp=2,tsp=2",
               "dp=2,tp=2", "dp=4"]}
EXTRA = [("tsp=2", ["--attn-buckets", "2", "--keep-attn-weights"], "full"), ("tp=2,sp=2", ["--attn-buckets", "2"], "none"),
         ("tsp=2", ["--fused-mlp-recompute"], "full"), ("tsp=4", ["--fused-mlp-recompute", "--keep-attn-weights"], "full"),
         ("fsdp_sp=2", ["--fused-mlp-recompute"], "full")]
# --sp-comm a2a (Ulysses): head-sharded q, k, v, O kept; KV heads split (sp=2, n_kv = 4) and
# replicated (sp=8 would; here sp=4 splits them one each)
A2A = ["--sp-comm", "a2a"]
EXTRA += [("sp=2", A2A, "none"), ("sp=4", A2A, "full"), ("dp=2,sp=2", A2A, "none"),
          ("fsdp_sp=2", A2A, "none"), ("fsdp_sp=4", A2A, "full"), ("dp=2,fsdp_sp=2", A2A, "none")]
# --sp-comm p2p (ring attention): two K/V blocks resident, fp32 running output and accumulators
P2P = ["--sp-comm", "p2p"]
EXTRA += [("sp=2", P2P, "none"), ("sp=4", P2P, "full"), ("dp=2,sp=2", P2P, "full")]
# --dtype bf16: the engines allocate bf16 weights, activations and buffers, fp32 master weights,
# gradients, statistics and the residual stream; plan's dry run runs the same engines in bf16
BF16 = ["--dtype", "bf16"]
EXTRA += [(spec, BF16 + extra, rc) for spec, extra, rc in [
    ("single", [], "none"), ("single", [], "full"), ("dp=2", [], "none"), ("tsp=2", [], "none"),
    ("tsp=4", ["--keep-attn-weights"], "full"), ("fsdp_sp=2", [], "full"), ("tp=2", [], "none"),
    ("tp=2 off", [], "full"), ("sp=2", ["--attn-buckets", "2"], "none"), ("tp=2,sp=2", [], "full"),
    ("dp=2,tsp=2", [], "none"), ("sp=2", A2A, "full"), ("sp=4", P2P, "none"),
    ("fsdp_sp=2", A2A, "full")]]


def split(spec):
    layout, _, off = spec.partition(" ")
    flags = ["--tp-sequence-parallel", "off"] if off else []
    n = 1
    if layout != "single":
        for item in layout.split(","):
            n *= int(item.split("=")[1])
    return layout, flags, n


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cfgp = os.path.join(work, "config.json")
    json.dump(CONFIG, open(cfgp, "w"))
    cases = [(spec, [], rc, S) for n in LAYOUTS for spec in LAYOUTS[n] for rc in ("none", "full")
             for S in (64, 256)]
    cases += [(spec, flags, rc, 128) for spec, flags, rc in EXTRA]
    fails, worst = [], (0.0, "")
    B = 2
    for spec, extra, rc, S in cases:
        layout, flags, n = split(spec)
        flags = flags + extra
        dp = int(layout.split(",")[0][3:]) if layout.startswith("dp=") else 1
        rep = os.path.join(work, "r.json")
        cmd = [binary, "train", "--config", cfgp, "--synthetic", "--steps", "2", "--seq", str(S),
               "--micro-batch", str(B), "--eval-every", "0", "--log-every", "0", "--quiet",
               "--recompute", rc, "--report", rep] + flags
        if layout != "single":
            cmd = mpi(n, cmd + ["--layout", layout])
        run(cmd)
        measured = json.load(open(rep))["ranks"]
        pl = run([binary, "plan", "--config", cfgp, "--seq", str(S), "--micro-batch", str(B),
                  "--recompute", rc, "--layout", layout, "--json"] + flags).stdout
        pred = json.loads(pl)[0]
        want = pred["peak_bytes"]
        bad = []
        for cat, p in want.items():
            m = max(r["peak_bytes"][cat] for r in measured)
            err = abs(m - p) / max(m, 1)
            ok = m == p
            if err > worst[0]:
                worst = (err, f"{spec} {' '.join(extra)} S={S} {rc} {cat}")
            if not ok:
                bad.append(f"{cat}: measured {m} predicted {p}")
        # the per-layer bytes of the formulas = the bytes recorded (every rank, every layer)
        for r in measured:
            for got in r.get("comm_bytes_per_layer", []):
                for cat, ph in got.items():
                    for phase, v in ph.items():
                        # the run sums 2 steps; plan gives one micro-step
                        if v != 2 * pred["comm_bytes_per_layer_by_category"][cat][phase]:
                            bad.append(f"rank {r['rank']} {cat} {phase}: recorded {v // 2} per step, "
                                       f"plan {pred['comm_bytes_per_layer_by_category'][cat][phase]}")
        tot = max(r["peak_bytes"]["total"] for r in measured)
        print(f"{spec:16s} {' '.join(extra):32s} S={S:3d} recompute {rc:4s}: measured total {tot / 2**20:7.3f} MiB, "
              f"predicted {want['total'] / 2**20:7.3f} MiB  {'ok' if not bad else 'FAIL'}")
        if bad:
            print("   " + "\n   ".join(bad[:6]))
            fails.append(f"{spec} {extra} S={S} {rc}")
    print(f"worst relative error over all categories and cases: {worst[0]:.2e} ({worst[1]})")
    # the tracked total against the process: (VmHWM - VmRSS before the first tensor) / tracked peak
    rep = os.path.join(work, "rss.json")
    run([binary, "train", "--config", "configs/small.json", "--synthetic", "--seq", "1024", "--micro-batch", "1",
         "--steps", "2", "--eval-every", "0", "--log-every", "0", "--quiet", "--report", rep])
    rk = json.load(open(rep))["ranks"][0]
    tracked, rss = rk["peak_bytes"]["total"], rk["rss_bytes"]["peak"] - rk["rss_bytes"]["baseline"]
    ratio = rss / tracked
    print(f"small.json S=1024: tracked peak {tracked / 2**20:.1f} MiB, process RSS growth {rss / 2**20:.1f} MiB, "
          f"ratio {ratio:.3f} (limits 0.95-1.3)")
    if tracked < 256 * 2**20 or not 0.95 <= ratio <= 1.3:
        fails.append("tracked peak does not explain the process RSS")
    # crossovers of tsp-spec §7 for the paper's 7B (MHA, F = 4): 8h, 24h, 16h tokens in elements;
    # in bf16 bytes (TSP's gradients and dK/dV fp32, TP's reduce-scatters fp32): 4h, 16h, 10h
    for dtype, wants in (("fp32", (32768, 98304, 65536)), ("bf16", (16384, 65536, 40960))):
        out = run([binary, "plan", "--config", "configs/llama7b-paper.json", "--seq", "16384", "--layout", "tsp=8",
                   "--dtype", dtype]).stdout
        for label, want in zip(("forward only", "step, --recompute none", "step, --recompute full "), wants):
            line = next((x for x in out.splitlines() if label in x), "")
            got = [w for w in line.split() if w.isdigit()]
            print(f"plan 7B {dtype} crossover '{label.strip()}': {got[:1]} (want {want})")
            if got[:1] != [str(want)]:
                fails.append(f"{dtype} crossover {label}")
    png = os.path.join(work, "plan.png")
    run([binary, "plan", "--config", cfgp, "--seq", "64", "--seq", "256", "--layout", "tsp=2", "--layout", "tp=2",
         "--tp-sequence-parallel", "both", "--plot", png])
    ok = os.path.exists(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    print(f"plan --plot writes a PNG: {ok}")
    if not ok:
        fails.append("plan --plot")
    r = run([binary, "plan", "--config", cfgp, "--seq", "64", "--layout", "tp=3"], check=False)
    want = "num_key_value_heads=4 is not divisible by tp=3"
    print(f"plan --layout tp=3: exit {r.returncode}, '{want}' in stderr: {want in r.stderr}")
    if r.returncode == 0 or want not in r.stderr:
        fails.append("plan accepted an impossible layout")
    if fails:
        print("FAILED: " + "; ".join(fails))
        sys.exit(1)


if __name__ == "__main__":
    main()
