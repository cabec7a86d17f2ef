"""Measured peak memory per rank against sequence length on real ranks, every layout that fits,
with the memory model's prediction (origami plan) as lines: one table and one PNG (gnuplot).
Each point is `origami train --synthetic --steps 2` (the worst rank's tracked peak); `single` is
one rank with the same micro-batch, i.e. also the per-rank memory of dp=N.
usage: python3 bench/memory_sweep.py [--config configs/small.json] [--ranks 4]
       [--seq 256 1024 4096] [--micro-batch 1] [--recompute full] [--plot docs/img/F.png]"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_bench import ROOT, machine  # noqa: E402
from layouts import ENV  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/small.json")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--seq", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--recompute", default="full")
    ap.add_argument("--plot", default="build/bench/memory_sweep.png")
    a = ap.parse_args()
    n = a.ranks
    specs = [("single", []), (f"tsp={n}", []), (f"fsdp_sp={n}", []), (f"tp={n}", []),
             (f"tp={n}", ["--tp-sequence-parallel", "off"]), (f"sp={n}", [])]
    if n % 2 == 0 and n > 2:
        specs.append((f"tp=2,sp={n // 2}", []))
    binary = os.path.join(ROOT, "build/origami")
    print(f"machine: {machine()}\nconfig: {a.config}, micro-batch {a.micro_batch}, --recompute {a.recompute}, "
          f"{n} ranks x 1 thread; peak of the worst rank (MiB): measured / predicted\n")
    rows = {}
    rep = os.path.join(ROOT, "build/bench/sweep_report.json")
    os.makedirs(os.path.dirname(rep), exist_ok=True)
    for layout, flags in specs:
        name = layout + (" (SP off)" if flags else "")
        for S in a.seq:
            cmd = [binary, "train", "--config", a.config, "--synthetic", "--steps", "2", "--seq", str(S),
                   "--micro-batch", str(a.micro_batch), "--eval-every", "0", "--log-every", "0", "--quiet",
                   "--recompute", a.recompute, "--report", rep] + flags
            if layout != "single":
                cmd = ["mpirun", "-np", str(n), "--bind-to", "none"] + cmd + ["--layout", layout]
            r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
            if r.returncode != 0:
                print(f"{name} S={S}: does not run ({r.stderr.strip().splitlines()[-1]})")
                continue
            measured = max(k["peak_bytes"]["total"] for k in json.load(open(rep))["ranks"])
            p = subprocess.run([binary, "plan", "--config", a.config, "--seq", str(S), "--micro-batch",
                                str(a.micro_batch), "--recompute", a.recompute, "--layout", layout, "--json"]
                               + flags, capture_output=True, text=True, cwd=ROOT, check=True)
            predicted = json.loads(p.stdout)[0]["peak_bytes"]["total"]
            rows.setdefault(name, []).append((S, measured, predicted))
    print("| layout | " + " | ".join(f"S={S}" for S in a.seq) + " |")
    print("|---" * (len(a.seq) + 1) + "|")
    for name, pts in rows.items():
        cells = {S: f"{m / 2**20:.1f} / {p / 2**20:.1f}" for S, m, p in pts}
        print(f"| {name} | " + " | ".join(cells.get(S, "—") for S in a.seq) + " |")
    lowest = {S: min((m, name) for name, pts in rows.items() for s, m, _ in pts if s == S and name != "single")
              for S in a.seq}
    print("\nlowest measured per rank: " + ", ".join(f"S={S}: {v[1]}" for S, v in lowest.items()))
    dat = os.path.join(ROOT, "build/bench/memory_sweep.dat")
    with open(dat, "w") as f:
        for name, pts in rows.items():
            f.write(f'"{name}"\n' + "".join(f"{S} {m / 2**20} {p / 2**20}\n" for S, m, p in pts) + "\n\n")
    gp = f"""set terminal pngcairo size 1000,560 noenhanced
set output '{os.path.join(ROOT, a.plot)}'
set logscale x 2
set logscale y 2
set xlabel 'sequence length S'
set ylabel 'peak per rank (MiB)'
set key outside right
set grid
set title '{a.config}, micro-batch {a.micro_batch}, --recompute {a.recompute}, {n} ranks: points measured, lines predicted'
plot for [i=0:{len(rows) - 1}] '{dat}' index i using 1:3 with lines lc i+1 notitle, \\
     for [i=0:{len(rows) - 1}] '{dat}' index i using 1:2 with points lc i+1 pt 7 title columnheader(1)
"""
    subprocess.run(["gnuplot"], input=gp, text=True, check=True)
    print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
