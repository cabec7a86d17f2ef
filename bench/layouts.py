"""Every layout side by side on one config, in one run: per-rank communication per layer (bytes
received, by category, forward and backward), the DP bytes per step, the per-rank peak memory by
category (worst rank) and the median step time, against TSP measured in the same run (and the
single-rank run of the same global batch for reference). All layouts use the same world size, one
thread per rank; with more ranks than cores the times include oversubscription.
Prints the machine and a markdown table; writes the raw reports (JSON lines) next to it.
usage: python3 bench/layouts.py [--config configs/small.json] [--ranks 4] [--seq 1024]
       [--batch 4] [--steps 3] [--recompute none|full]"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_bench import ROOT, machine  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


def layouts(n):
    out = [("single", None, [])]
    out += [(f"dp={n}", f"dp={n}", []), (f"tsp={n}", f"tsp={n}", []), (f"fsdp_sp={n}", f"fsdp_sp={n}", []),
            (f"tp={n}", f"tp={n}", []), (f"tp={n} (SP off)", f"tp={n}", ["--tp-sequence-parallel", "off"]),
            (f"sp={n}", f"sp={n}", [])]
    if n % 2 == 0 and n > 2:
        out += [(f"tp=2,sp={n // 2}", f"tp=2,sp={n // 2}", []), (f"dp=2,tsp={n // 2}", f"dp=2,tsp={n // 2}", []),
                (f"dp=2,tp={n // 2}", f"dp=2,tp={n // 2}", [])]
    return out


def mib(b):
    return b / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/small.json")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4, help="global batch (sequences per step)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--recompute", default="none")
    ap.add_argument("--out", default="build/bench/layouts.jsonl")
    a = ap.parse_args()
    print(f"machine: {machine()}\nconfig: {a.config}, S={a.seq}, global batch {a.batch}, "
          f"--recompute {a.recompute}, {a.ranks} ranks x 1 thread (single: 1 rank x "
          f"{os.cpu_count()} threads), {a.steps} steps, median step time; bytes received by rank 0 per "
          f"layer and step, memory of the worst rank\n")
    rows = []
    os.makedirs(os.path.join(ROOT, os.path.dirname(a.out)), exist_ok=True)
    for name, layout, extra in layouts(a.ranks):
        dp = int(layout.split(",")[0][3:]) if layout and layout.startswith("dp=") else 1
        rep = os.path.join(ROOT, "build/bench", "layout_report.json")
        cmd = [os.path.join(ROOT, "build/origami"), "train", "--config", a.config, "--synthetic",
               "--seq", str(a.seq), "--micro-batch", str(a.batch // dp), "--steps", str(a.steps),
               "--eval-every", "0", "--log-every", "0", "--recompute", a.recompute, "--report", rep] + extra
        if layout:
            cmd = ["mpirun", "-np", str(a.ranks), "--bind-to", "none"] + cmd + ["--layout", layout]
        env = ENV if layout else dict(ENV, OMP_NUM_THREADS=str(os.cpu_count()))
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
        j = json.load(open(rep))
        j["name"] = name
        rows.append(j)
    with open(os.path.join(ROOT, a.out), "w") as f:
        for j in rows:
            f.write(json.dumps(j) + "\n")
    cats = ("attn_weights", "mlp_weights", "kv", "acts", "grads")
    print("| layout | " + " | ".join(f"{c} fwd/bwd (KiB/layer)" for c in cats)
          + " | DP/step (MiB) | peak weights+grads+optim (MiB) | peak activations (MiB) | peak total (MiB) "
          "| step (s) | step / tsp |")
    print("|---" * (len(cats) + 7) + "|")
    base = next(j["step_time_median_s"] for j in rows if j["name"].startswith("tsp="))
    for j in rows:
        n = j["steps"]  # the report sums the bytes of every step
        r0 = j["ranks"][0]
        layer = r0.get("comm_bytes_per_layer", [{}])
        cells = []
        for c in cats:
            t = layer[0].get(c, {"fwd": 0, "bwd": 0}) if layer else {"fwd": 0, "bwd": 0}
            cells.append(f"{t['fwd'] / 1024 / n:.0f} / {t['bwd'] / 1024 / n:.0f}")
        dpb = max(rk.get("comm_bytes_step", {}).get("grads", {}).get("bwd", 0) for rk in j["ranks"]) / n
        peak = {k: max(rk["peak_bytes"][k] for rk in j["ranks"]) for k in j["ranks"][0]["peak_bytes"]}
        state = peak["weights"] + peak["grads"] + peak["optimizer"]
        print(f"| {j['name']} | " + " | ".join(cells) + f" | {mib(dpb):.1f} | {mib(state):.1f} | "
              f"{mib(peak['activations']):.1f} | {mib(peak['total']):.1f} | {j['step_time_median_s']:.3f} | "
              f"{j['step_time_median_s'] / base:.2f} |")


if __name__ == "__main__":
    main()
