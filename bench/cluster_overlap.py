#!/usr/bin/python3
"""TSP over a real, shaped TCP link (issue 20): tsp=4 as 2 hosts x 2 ranks (tools/cluster.sh: network
namespaces, the inter-host link shaped to RATE by tc's token bucket, DELAY one-way and LOSS at random
by netfilter and tools/netdelay.c), configs/small.json, overlap on against
--no-overlap; next to the same layout on one host with --emulate-link at the same bandwidth (every
rank's inbound link emulated: the prediction origami offers without a network). Prints a table of
the median step time and the worst rank's exposed communication; needs root (namespaces).
The emulated link has no loss: with --loss its rows are the same link without it.
usage: bench/cluster_overlap.py [--rate 200mbit] [--delay 500us|1ms] [--loss 1%] [--seq 1024] [--steps 4]"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build/origami")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


def gbps(rate):  # tc's "200mbit" -> 0.2 (GB/s is what --emulate-link takes: bytes)
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for u, f in units.items():
        if rate.endswith(u):
            return float(rate[: -len(u)]) * f / 8 / 1e9
    raise SystemExit(f"rate {rate}: use kbit, mbit or gbit")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", default="200mbit")
    ap.add_argument("--delay", default="")
    ap.add_argument("--loss", default="")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    cl = os.path.join(ROOT, "tools/cluster.sh")
    train = [BIN, "train", "--config", os.path.join(ROOT, "configs/small.json"), "--synthetic",
             "--seq", str(a.seq), "--micro-batch", "1", "--steps", str(a.steps), "--eval-every", "0",
             "--log-every", "0", "--quiet", "--layout", "tsp=4"]
    rows = []

    def one(name, cmd, rep):
        r = subprocess.run(cmd + ["--report", rep], env=ENV, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{name} failed:\n{r.stderr[-2000:]}")
        j = json.load(open(rep))
        exposed = max(x["time_s"]["comm_exposed"] for x in j["ranks"])
        rows.append((name, j["step_time_median_s"], exposed))

    subprocess.run([cl, "down"], env=ENV)
    subprocess.run([cl, "up", "2", a.rate, a.delay, a.loss], env=ENV, check=True)
    try:
        for ov in ([], ["--no-overlap"]):
            one(f"2 hosts, {a.rate} {a.delay} {a.loss} link{' --no-overlap' if ov else ''}".replace("   ", " ").replace("  ", " "),
                [cl, "run", "2", "2"] + train + ov, f"/tmp/cluster_overlap_{len(ov)}.json")
    finally:
        subprocess.run([cl, "down"], env=ENV)
    delay_us = (float(a.delay[:-2]) if a.delay.endswith("us") else float(a.delay[:-2]) * 1e3
                if a.delay.endswith("ms") else 0)
    link = f"{gbps(a.rate):g},{delay_us:g}"
    for ov in ([], ["--no-overlap"]):
        one(f"1 host, --emulate-link {link}{' --no-overlap' if ov else ''}",
            ["mpirun", "-np", "4", "--bind-to", "none"] + train + ["--emulate-link", link] + ov,
            f"/tmp/cluster_overlap_e{len(ov)}.json")
    one("1 host, no link", ["mpirun", "-np", "4", "--bind-to", "none"] + train, "/tmp/cluster_overlap_n.json")
    print(f"tsp=4, configs/small.json, S={a.seq}, {a.steps} steps (median without the first)")
    print("| run | step (s) | exposed, worst rank (s) | exposed share |")
    print("|---|---|---|---|")
    for name, t, e in rows:
        print(f"| {name} | {t:.3f} | {e:.3f} | {100 * e / t:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
