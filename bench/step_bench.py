"""One training step of a config at several sequence lengths: origami (oneDNN and OpenBLAS GEMM)
against PyTorch CPU on the same machine, in one run. Prints the machine, a markdown table
(tokens/s, MFU against the GEMM peak measured in the same process, ratio to PyTorch) and writes
the raw JSON lines next to it.
usage: python3 bench/step_bench.py [--config configs/small.json] [--seq 1024 4096] [--reps 3]"""
import argparse
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine():
    model = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = int(open("/proc/meminfo").readline().split()[1]) // (1024 * 1024)
    return f"{model}, {os.cpu_count()} cores, {mem} GiB, {platform.platform()}"


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/small.json")
    ap.add_argument("--seq", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="build/bench/step_bench.jsonl")
    a = ap.parse_args()
    threads = os.cpu_count()
    print(f"machine: {machine()}\nconfig: {a.config}, micro-batch 1, fp32, {threads} threads, median of {a.reps}\n")
    rows = []
    for S in a.seq:
        for backend in ("onednn", "openblas"):
            env = dict(os.environ, ORIGAMI_GEMM=backend, OMP_NUM_THREADS=str(threads))
            j = run([os.path.join(ROOT, "build/bench/bench_step"), a.config, str(S), "1", str(a.reps)], env)
            j["gemm"] = backend
            rows.append(j)
        rows.append(run(["/usr/bin/python3", os.path.join(ROOT, "bench/torch_step.py"), a.config, str(S), "1",
                         str(a.reps), str(threads)]))
    os.makedirs(os.path.dirname(os.path.join(ROOT, a.out)), exist_ok=True)
    with open(os.path.join(ROOT, a.out), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print("| S | engine | GEMM | step (s) | tokens/s | model GFLOP/s | GEMM peak GFLOP/s | MFU | flash fwd / peak "
          "| flash bwd / peak | vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for S in a.seq:
        torch_tps = next(r["tokens_per_s"] for r in rows if r["seq"] == S and r["engine"] == "pytorch")
        for r in rows:
            if r["seq"] != S:
                continue
            if r["engine"] == "pytorch":
                print(f"| {S} | PyTorch {r['torch']} (Debian) | OpenBLAS | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} "
                      f"| | | | | | 1.00 |")
            else:
                print(f"| {S} | origami | {r['gemm']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | "
                      f"{r['model_gflops']:.1f} | {r['gemm_peak_gflops']:.1f} | {100 * r['mfu']:.1f}% | "
                      f"{100 * r['attn_fwd_of_peak']:.0f}% | {100 * r['attn_bwd_of_peak']:.0f}% | "
                      f"{r['tokens_per_s'] / torch_tps:.2f} |")


if __name__ == "__main__":
    main()
