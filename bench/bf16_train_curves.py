#!/usr/bin/python3
"""The same training run in fp32 and in bf16 (issue 18): `origami train` on the corpus with
--dtype fp32 and --dtype bf16 (same config, seed, data order and schedule), both loss curves and
held-out evaluations on one plot (gnuplot PNG), and a table of the held-out losses.
usage: bench/bf16_train_curves.py [--config configs/small.json] [--steps 300] [--seq 256]
       [--micro-batch 4] [--eval-every 25] [--plot docs/img/bf16_train_small.png]
       [--logs FP32_LOG BF16_LOG]   (plot logs of runs made before, with the same flags)"""
import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_bench import ROOT, machine  # noqa: E402


def parse(log):
    steps, evals = [], []
    for line in open(log):
        m = re.match(r"step (\d+)/\d+ \| loss ([0-9.]+)", line)
        if m:
            steps.append((int(m.group(1)), float(m.group(2))))
        m = re.match(r"eval step (\d+) \| held-out loss ([0-9.]+)", line)
        if m:
            evals.append((int(m.group(1)), float(m.group(2))))
    return steps, evals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/small.json")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--plot", default="build/bench/bf16_train.png")
    ap.add_argument("--logs", nargs=2)
    a = ap.parse_args()
    logs = a.logs
    if not logs:
        logs = []
        for dt in ("fp32", "bf16"):
            log = os.path.join(ROOT, "build", "bench", f"train_{dt}.log")
            os.makedirs(os.path.dirname(log), exist_ok=True)
            with open(log, "w") as f:
                subprocess.run([os.path.join(ROOT, "build/origami"), "train", "--config", a.config,
                                "--steps", str(a.steps), "--seq", str(a.seq), "--micro-batch",
                                str(a.micro_batch), "--eval-every", str(a.eval_every), "--log-every",
                                "1", "--dtype", dt], stdout=f, stderr=subprocess.STDOUT, check=True,
                               cwd=ROOT)
            logs.append(log)
    (s32, e32), (s16, e16) = parse(logs[0]), parse(logs[1])
    print(f"machine: {machine()}\nconfig {a.config}, {a.steps} steps, S={a.seq}, micro-batch "
          f"{a.micro_batch}, the corpus; logs {logs[0]}, {logs[1]}\n")
    print("| step | held-out fp32 | held-out bf16 | bf16 / fp32 − 1 |\n|---|---|---|---|")
    for (st, x), (_, y) in zip(e32, e16):
        print(f"| {st} | {x:.6f} | {y:.6f} | {y / x - 1:+.2%} |")
    data = os.path.join(ROOT, "build", "bench", "bf16_train.dat")
    os.makedirs(os.path.dirname(data), exist_ok=True)
    with open(data, "w") as f:
        for block in (s32, s16, e32, e16):
            for st, v in block:
                f.write(f"{st} {v}\n")
            f.write("\n\n")
    gp = f"""set terminal pngcairo size 900,520
set output '{a.plot}'
set title 'origami train {os.path.basename(a.config)}: fp32 and bf16 (S={a.seq}, B={a.micro_batch})'
set xlabel 'step'
set ylabel 'loss'
set grid
plot '{data}' index 0 with lines lw 1 lc rgb '#1f77b4' title 'train fp32', \\
     '{data}' index 1 with lines lw 1 lc rgb '#d62728' title 'train bf16', \\
     '{data}' index 2 with linespoints pt 7 lc rgb '#1f77b4' title 'held-out fp32', \\
     '{data}' index 3 with linespoints pt 5 lc rgb '#d62728' title 'held-out bf16'
"""
    subprocess.run(["gnuplot"], input=gp, text=True, check=True)
    print(f"\nplot: {a.plot}")


if __name__ == "__main__":
    main()
