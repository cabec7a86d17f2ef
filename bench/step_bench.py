"""One training step of a config at several sequence lengths: origami (oneDNN and OpenBLAS GEMM,
fp32; oneDNN in bf16) against PyTorch CPU (fp32, and bf16 under torch.autocast) on the same
machine, in one run. Prints the machine, a markdown table (tokens/s, MFU against the GEMM peak of
the row's precision measured in the same process, ratio to PyTorch fp32 and to origami fp32) and
writes the raw JSON lines next to it.
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
    print(f"machine: {machine()}\nconfig: {a.config}, micro-batch 1, {threads} threads, median of {a.reps}\n")
    rows = []
    for S in a.seq:
        for backend, dtype in (("onednn", "fp32"), ("openblas", "fp32"), ("onednn", "bf16")):
            env = dict(os.environ, ORIGAMI_GEMM=backend, OMP_NUM_THREADS=str(threads))
            j = run([os.path.join(ROOT, "build/bench/bench_step"), a.config, str(S), "1", str(a.reps), "none",
                     dtype], env)
            j["gemm"] = backend
            rows.append(j)
        for dtype in ("fp32", "bf16"):
            rows.append(run(["/usr/bin/python3", os.path.join(ROOT, "bench/torch_step.py"), a.config, str(S), "1",
                             str(a.reps), str(threads), dtype]))
    os.makedirs(os.path.dirname(os.path.join(ROOT, a.out)), exist_ok=True)
    with open(os.path.join(ROOT, a.out), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print("| S | engine | dtype | GEMM | step (s) | tokens/s | model GFLOP/s | GEMM peak GFLOP/s | MFU "
          "| flash fwd / peak | flash bwd / peak | vs PyTorch fp32 | vs origami fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for S in a.seq:
        torch_tps = next(r["tokens_per_s"] for r in rows
                         if r["seq"] == S and r["engine"] == "pytorch" and r["dtype"] == "fp32")
        ours_tps = next(r["tokens_per_s"] for r in rows
                        if r["seq"] == S and r["engine"] == "origami" and r["dtype"] == "fp32" and r["gemm"] == "onednn")
        for r in rows:
            if r["seq"] != S:
                continue
            if r["engine"] == "pytorch":
                print(f"| {S} | PyTorch {r['torch']} (Debian) | {r['dtype']} | OpenBLAS | {r['step_s']:.3f} | "
                      f"{r['tokens_per_s']:.0f} | | | | | | {r['tokens_per_s'] / torch_tps:.2f} | |")
            else:
                print(f"| {S} | origami | {r['dtype']} | {r['gemm']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | "
                      f"{r['model_gflops']:.1f} | {r['gemm_peak_gflops']:.1f} | {100 * r['mfu']:.1f}% | "
                      f"{100 * r['attn_fwd_of_peak']:.0f}% | {100 * r['attn_bwd_of_peak']:.0f}% | "
                      f"{r['tokens_per_s'] / torch_tps:.2f} | {r['tokens_per_s'] / ours_tps:.2f} |")


if __name__ == "__main__":
    main()
