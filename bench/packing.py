#!/usr/bin/python3
"""Packed documents (issue 21): what document masks save, and what --balance documents evens out.

The bundled book is prepared as a dataset of its chapters (`origami data prepare --split-at
CHAPTER`), then, with the same config, seed and S:
  A. one rank: `train --pack documents` (whole chapters per sequence, document masks: whole
     masked key tiles skipped) against `--pack none` (windows across chapters, one causal mask):
     step time (median over the steps after the first), tokens/s, the flash-attention kernels'
     seconds per step (--profile-kernels), and the attention work the masks leave (`data info`);
  B. the sequence axis (tsp=D): --balance zigzag against --balance documents on the same packed
     batches: step time, and each rank's flash-attention seconds per step (the worst rank over the
     mean), beside `data info`'s predicted worst/mean work of those batches.
Ranks beyond the machine's cores share them (the worst rank's attention is then not the step's
critical path alone); the script says so in its table.
usage: bench/packing.py [--config configs/small-long.json] [--seq 8192] [--steps 4] [--ranks 2,4]
       [--work /tmp/origami_packing]"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_bench import ROOT, machine  # noqa: E402

BIN = os.path.join(ROOT, "build/origami")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def sh(cmd, env=ENV):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def train(a, name, ranks, extra, threads):
    rep = os.path.join(a.work, name + ".json")
    cmd = [BIN, "train", "--config", a.config, "--dataset", a.ds, "--seq", str(a.seq), "--micro-batch", "1",
           "--steps", str(a.steps), "--eval-every", "0", "--log-every", "0", "--profile-kernels",
           "--memory-limit", "off", "--report", rep] + extra
    env = dict(ENV, OMP_NUM_THREADS=str(threads))
    if ranks > 1:
        cmd = ["mpirun", "-np", str(ranks), "--bind-to", "none", "-x", f"OMP_NUM_THREADS={threads}"] + cmd
    sh(cmd, env)
    return json.load(open(rep))


def attn_seconds(rank):
    k = rank.get("kernel_seconds_per_step", {})
    return sum(v["seconds"] for n, v in k.items() if n.startswith("flash_attn"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=os.path.join(ROOT, "configs/small-long.json"))
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--ranks", default="2,4")
    p.add_argument("--work", default="/tmp/origami_packing")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    a.ds = os.path.join(a.work, "chapters")
    sh([BIN, "data", "prepare", "--tokenizer", os.path.join(ROOT, "data/tokenizer.model"), "--eos-id", "0",
        "--split-at", "CHAPTER", "--out", a.ds, os.path.join(ROOT, "data/moby_dick.txt")])
    cores = os.cpu_count()
    ranks = [int(x) for x in a.ranks.split(",")]
    info = sh([BIN, "data", "info", a.ds, "--seq", str(a.seq), "--ranks", a.ranks])
    print(f"machine: {machine()}")
    print(f"config {os.path.relpath(a.config, ROOT)}, S={a.seq}, micro-batch 1, {a.steps} steps "
          f"(median of the last {a.steps - 1})")
    print(info.rstrip())

    print("\nA. one rank, document masks against one causal mask (same shapes, "
          f"{cores} threads)")
    print(f"{'data':28s} {'step s':>8s} {'tok/s':>8s} {'attention s/step':>17s}")
    rows = {}
    for name, extra in (("windows (--pack none)", ["--pack", "none"]),
                        ("packed (--pack documents)", ["--pack", "documents"])):
        r = train(a, "single_" + extra[1], 1, extra, cores)
        rows[name] = (r["step_time_median_s"], attn_seconds(r["ranks"][0]))
        print(f"{name:28s} {r['step_time_median_s']:8.2f} {r['tokens_per_s']:8.0f} {rows[name][1]:17.2f}")
    (w_t, w_a), (p_t, p_a) = rows.values()
    print(f"packed / windows: step {p_t / w_t:.3f}, attention {p_a / w_a:.3f}")

    print(f"\nB. tsp=D on the packed batches, --balance zigzag against documents "
          f"(1 thread a rank; {cores} cores)")
    print(f"{'layout':8s} {'balance':10s} {'step s':>8s} {'attention s/step per rank':>36s} {'worst/mean':>10s}")
    for D in ranks:
        for bal in ("zigzag", "documents"):
            r = train(a, f"tsp{D}_{bal}", D, ["--pack", "documents", "--layout", f"tsp={D}", "--balance", bal], 1)
            att = [attn_seconds(rk) for rk in sorted(r["ranks"], key=lambda x: x["rank"])]
            note = "" if D <= cores else " (ranks share cores)"
            print(f"tsp={D:<4d} {bal:10s} {r['step_time_median_s']:8.2f} "
                  f"{' '.join(f'{x:6.2f}' for x in att):>36s} {max(att) / statistics.mean(att):10.3f}{note}")


if __name__ == "__main__":
    main()
