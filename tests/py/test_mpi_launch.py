"""origami under mpirun: one rank trains; bad layouts, non-divisible configs and a world size that
does not match end with the same clear error on every rank, a non-zero exit and no hang (each run
under a timeout).
Usage: test_mpi_launch.py ORIGAMI_BINARY"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import mpi, run  # noqa: E402


def mpirun(n, args):
    return run(mpi(n, args), timeout=120, check=False)


def main():
    binary = sys.argv[1]
    failures = []
    train = [binary, "train", "--config", "configs/tiny.json", "--synthetic", "--steps", "2", "--seq", "32"]
    r = mpirun(1, train)
    if r.returncode != 0 or "step 2/2" not in r.stdout:
        failures.append(f"mpirun -np 1 train failed: {r.stderr}")
    # tiny: 8 query heads, 4 KV heads, intermediate 192
    cases = [
        (2, [], "world size 2 > 1 needs --layout"),
        (2, ["--layout", "tsp=4"], "--layout 'tsp=4' needs 4 ranks but the world size is 2"),
        (4, ["--layout", "tp=2,tsp=2"], "tsp and fsdp_sp combine only with dp"),
        (3, ["--layout", "tp=3"], "num_key_value_heads=4 is not divisible by tp=3"),
        (4, ["--layout", "sp=4", "--seq", "36"], "sequence length 36 is not divisible by 2*sp=8"),
        (4, ["--layout", "tp=4", "--seq", "33", "--micro-batch", "1"],
         "micro-batch x sequence length / sp = 33 tokens are not divisible by tp=4"),
        (2, ["--layout", "sp=2", "--tp-sequence-parallel", "off"],
         "--tp-sequence-parallel needs a tp axis"),
        (2, ["--layout", "tp=2", "--tp-sequence-parallel", "maybe"],
         "--tp-sequence-parallel=maybe is not one of: on, off"),
        (2, ["--layout", "tsp=2,tsp=2"], "axis 'tsp' given twice"),
        (2, ["--layout", "tsq=2"], "unknown axis 'tsq'"),
        (4, ["--layout", "tsp=2,fsdp_sp=2"], "tsp and fsdp_sp combine only with dp"),
        (2, ["--layout", "fsdp_sp=2", "--recompute", "full", "--keep-attn-weights"],
         "--keep-attn-weights needs a TSP layout"),
        (2, ["--layout", "tsp=x"], "tsp=x must be a positive integer"),
        (3, ["--layout", "tsp=3"], "num_key_value_heads=4 is not divisible by tsp=3"),
        (2, ["--layout", "tsp=2", "--seq", "30"], "sequence length 30 is not divisible by 2*tsp=4"),
        (2, ["--layout", "tsp=2", "--attn-buckets", "3"], "--attn-buckets=3 does not divide the 2 KV heads"),
        (2, ["--layout", "tsp=2", "--keep-attn-weights"], "--keep-attn-weights needs --recompute full"),
        (2, ["--layout", "tsp=2", "--fused-mlp-recompute"], "--fused-mlp-recompute needs --recompute full"),
        (2, ["--layout", "tp=2", "--recompute", "full", "--fused-mlp-recompute"],
         "--fused-mlp-recompute needs a tsp or fsdp_sp layout"),
    ]
    for n, extra, expect in cases:
        r = mpirun(n, train + extra)
        count = r.stderr.count(expect)
        ok = r.returncode != 0 and count == n
        print(f"{'ok  ' if ok else 'FAIL'} -np {n} {' '.join(extra):45s} exit {r.returncode}, message on {count}/{n} ranks")
        if not ok:
            failures.append(f"{extra}: expected '{expect}' on {n} ranks; stderr: {r.stderr[-800:]}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
