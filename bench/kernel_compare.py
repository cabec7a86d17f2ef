#!/usr/bin/python3
"""Where `plan --time` is off, kernel by kernel: trains a few steps with --profile-kernels (every
kernel call timed; seconds per step without the warm-up step) and predicts the same step with
`plan --time --trace` (the simulated clock's kernel spans of rank 0), then prints seconds per step
by kernel class — GEMMs, attention forward, attention backward, cross-entropy, the other
memory-bound kernels — measured against predicted, and the step's time outside kernels.
usage: bench/kernel_compare.py --hardware PROFILE [--config configs/small-long.json] [--seq 1024]
                               [--layout single] [--steps 4]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("ORIGAMI_BIN", os.path.join(ROOT, "build/origami"))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
CLASSES = [("GEMMs", ("gemm", "linear_fwd", "linear_bwd_x", "linear_bwd_w")),
           ("attention fwd", ("flash_attn_fwd",)), ("attention bwd", ("flash_attn_bwd",)),
           ("cross-entropy", ("ce_init", "ce_update", "ce_finish", "ce_bwd")),
           ("AdamW, norms, clipping", ("adamw", "sum_squares", "scale_inplace")),
           ("zero, copy", ("zero", "copy"))]


def classify(name):
    for c, names in CLASSES:
        if name in names:
            return c
    return "other memory-bound"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hardware", required=True)
    ap.add_argument("--config", default="configs/small-long.json")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--layout", default="single")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--by-kernel", action="store_true",
                    help="also a row per kernel name (measured against predicted)")
    a = ap.parse_args()
    n = 1
    if a.layout != "single":
        for part in a.layout.split(","):
            n *= int(part.split("=")[1])
    tmp = tempfile.mkdtemp()
    rep, tr = os.path.join(tmp, "r.json"), os.path.join(tmp, "t.json")
    cmd = [BIN, "train", "--config", a.config, "--synthetic", "--seq", str(a.seq), "--micro-batch",
           "1", "--steps", str(a.steps), "--eval-every", "0", "--log-every", "0", "--quiet",
           "--profile-kernels", "--report", rep] + ([] if n == 1 else ["--layout", a.layout])
    if n > 1:
        cmd = ["mpirun", "-np", str(n), "--bind-to", "core:overload-allowed"] + cmd
    r = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr[-2000:])
    j = json.load(open(rep))
    r0 = next(x for x in j["ranks"] if x["rank"] == 0)
    meas, step, meas_k = {}, j["step_time_median_s"], {}
    for name, e in r0["kernel_seconds_per_step"].items():
        meas[classify(name)] = meas.get(classify(name), 0) + e["seconds"]
        meas_k[name] = e["seconds"]
    r = subprocess.run([BIN, "plan", "--config", a.config, "--seq", str(a.seq), "--layout", a.layout,
                        "--time", "--hardware", a.hardware, "--trace", tr, "--json"],
                       env=ENV, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr[-2000:])
    pstep = json.loads(r.stdout)[0]["predicted_seconds"]["train_step"]
    pred, pred_k = {}, {}
    for e in json.load(open(tr))["traceEvents"]:
        if e.get("ph") == "X" and e.get("pid") == 0 and e.get("tid") == 0:
            c = classify(e["name"])
            pred[c] = pred.get(c, 0) + e["dur"] * 1e-6
            pred_k[e["name"]] = pred_k.get(e["name"], 0) + e["dur"] * 1e-6
    print(f"{a.layout} S={a.seq} {a.config}, rank 0, seconds per training step "
          f"(measured: the mean of steps 2-{a.steps}; predicted: {a.hardware})\n")
    print("| kernels | measured (s) | predicted (s) | predicted / measured |")
    print("|---|---|---|---|")
    for c in [x for x, _ in CLASSES] + ["other memory-bound"]:
        m, p = meas.get(c, 0), pred.get(c, 0)
        print(f"| {c} | {m:.3f} | {p:.3f} | {p / m if m else float('nan'):.2f} |")
    mk, pk = sum(meas.values()), sum(pred.values())
    print(f"| all kernels | {mk:.3f} | {pk:.3f} | {pk / mk:.2f} |")
    print(f"| the step (kernels, waits, the rest) | {step:.3f} | {pstep:.3f} | {pstep / step:.2f} |")
    if a.by_kernel:
        print("\n| kernel | measured (s) | predicted (s) | predicted / measured |")
        print("|---|---|---|---|")
        for k in sorted(set(meas_k) | set(pred_k), key=lambda k: -meas_k.get(k, 0)):
            m, p = meas_k.get(k, 0), pred_k.get(k, 0)
            print(f"| {k} | {m:.4f} | {p:.4f} | {p / m if m else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
