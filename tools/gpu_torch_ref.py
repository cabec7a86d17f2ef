"""Baselines measured in the same GPU session as bench_gpu: PyTorch's bf16 matmul (8192^3) and its
scaled_dot_product_attention (causal, flash back end where available) at the shapes bench_gpu
times, forward and backward, median of --reps runs after warm-ups (CUDA events).
usage: python3 tools/gpu_torch_ref.py [--json FILE] [--reps N] [--quick]"""
import argparse
import json
import sys
import time


def timed_median_ms(torch, f, reps, warm=2, cpu=False):
    """The median of `reps` runs of f() after `warm` unmeasured ones, in ms: CUDA events on the
    GPU, the wall clock with cpu=True (tools/gpu_torch_step.py's smoke test)."""
    for _ in range(warm):
        f()
    ts = []
    for _ in range(reps):
        if cpu:
            t0 = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t0) * 1e3)
            continue
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        f()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="small shapes only")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"SKIPPED: no torch ({e})")
        return 77
    if not torch.cuda.is_available():
        print("SKIPPED: torch sees no CUDA device")
        return 77

    def median_ms(f):
        return timed_median_ms(torch, f, a.reps)

    rows = []

    def add(group, case, value, unit, ms):
        rows.append(dict(group=group, case=case, value=value, unit=unit, median_ms=ms))
        print(f"{group:<12} {case:<52} {value:10.1f} {unit:<8} {ms:10.3f} ms", flush=True)

    dev = torch.device("cuda")
    n = 2048 if a.quick else 8192
    x = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    y = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    ms = median_ms(lambda: x @ y)
    add("gemm", f"torch bf16 {n}^3", 2 * n**3 / (ms * 1e-3) / 1e12, "TFLOP/s", ms)
    d = 128
    for S, nh in ([(1024, 32), (2048, 32), (2048, 4)] if a.quick else
                  [(4096, 32), (8192, 32), (8192, 4)]):
        q, k, v = (torch.randn(1, nh, S, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        flops = 2.0 * S * S * d * nh
        ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        add("attention", f"torch sdpa bf16 S={S} heads={nh} d=128 fwd", flops / (ms * 1e-3) / 1e12,
            "TFLOP/s", ms)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        g = torch.randn_like(o)
        ms = median_ms(lambda: torch.autograd.grad(o, (q, k, v), g, retain_graph=True))
        add("attention", f"torch sdpa bf16 S={S} heads={nh} d=128 bwd",
            2.5 * flops / (ms * 1e-3) / 1e12, "TFLOP/s", ms)
    info = dict(torch=torch.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(), device=torch.cuda.get_device_name(),
                rows=rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
