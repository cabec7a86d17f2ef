#!/usr/bin/python3
"""The paper's question on the simulated clock (issue 19): the 7B model (configs/llama7b-paper.json:
h 4096, 32 layers, 32/32 heads, SwiGLU 16384), bf16, --recompute full, S = 16K-128K, 1,024 devices
as D = 8 model-parallel groups with DP filling the rest, on the MI300X and H100 node profiles
(configs/hardware/, every number's provenance in the file): forward and training tokens/s for the
whole job per layout and TSP's ratio to each. Prints the assumptions first. Needs build/origami.
usage: bench/paper_question.py [--devices 1024] [--seq 16384 32768 65536 131072]"""
import argparse
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build/origami")
LAYOUTS = [("tsp=8", []), ("tp=8", []), ("tp=8", ["--tp-sequence-parallel", "off"]),
           ("tp=4,sp=2", []), ("tp=2,sp=4", []), ("sp=8", []), ("fsdp_sp=8", [])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1024)
    ap.add_argument("--seq", type=int, nargs="+", default=[16384, 32768, 65536, 131072])
    a = ap.parse_args()
    print(f"Assumptions: configs/llama7b-paper.json, bf16 (fp32 master weights and moments), "
          f"--recompute full, micro-batch 1 sequence per replica, {a.devices} devices = "
          f"{a.devices // 8} replicas x D = 8 (one node each; the replicas' gradient all-reduce "
          f"on the NICs), TSP's MLP weights on the one-neighbour ring (the only transport so "
          f"far), zigzag causal balance, attention on the profiles' flash rates (causal tiles "
          f"skipped). Time from the simulated clock (docs/time-model.md), validated so far only "
          f"on this CPU (docs/results.md).\n")
    for hw in ("mi300x-node", "h100-sxm-node"):
        prof = os.path.join(ROOT, "configs/hardware", hw + ".json")
        name = json.load(open(prof))["name"]
        print(f"## {name}\n")
        print("| S | layout | forward tok/s (job) | training tok/s (job) | TSP forward ratio | "
              "TSP training ratio | peak GiB/rank |")
        print("|---|---|---|---|---|---|---|")
        for S in a.seq:
            res = []
            for lay, extra in LAYOUTS:
                out = subprocess.run(
                    [BIN, "plan", "--config", os.path.join(ROOT, "configs/llama7b-paper.json"),
                     "--dtype", "bf16", "--recompute", "full", "--seq", str(S), "--layout", lay,
                     "--time", "--hardware", prof, "--devices", str(a.devices), "--json"] + extra,
                    capture_output=True, text=True, check=True).stdout
                r = json.loads(out)[0]
                t = r["predicted_seconds"]
                tok = a.devices // 8 * S  # tokens per step of the job
                res.append((lay + (" (SP off)" if extra else ""), tok / t["forward"],
                            tok / t["train_step"], r["peak_bytes"]["total"] / 2**30))
            f0, t0 = res[0][1], res[0][2]
            for n, f, t, pk in res:
                print(f"| {S // 1024}K | {n} | {f / 1e6:.2f}M | {t / 1e6:.2f}M | "
                      f"{f0 / f:.2f} | {t0 / t:.2f} | {pk:.1f} |")
        print()


if __name__ == "__main__":
    main()
