"""origami under mpirun: one rank trains; bad layouts, non-divisible configs and a world size that
does not match end with the clear error printed once (every rank reaches it; rank 0 prints it), a
non-zero exit and no hang (each run under a timeout). One rank's error is the job's error: an
error only rank 0 meets while the other waits in a collective (--save-dir naming a file) ends the
job within the agreement time, naming the rank, instead of hanging.
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
        (2, ["--layout", "tsp=2", "--sp-comm", "a2a"],
         "--sp-comm a2a needs a sequence-parallel layout (--layout fsdp_sp=N or sp=N)"),
        # the dry run's predicted peak against the memory a rank may use, one verdict for all
        (2, ["--layout", "tsp=2", "--memory-limit", "0.001"], "a rank can use (--memory-limit)"),
    ]
    for n, extra, expect in cases:
        r = mpirun(n, train + extra)
        count = r.stderr.count(expect)
        ok = r.returncode != 0 and count == 1
        print(f"{'ok  ' if ok else 'FAIL'} -np {n} {' '.join(extra):45s} exit {r.returncode}, message {count}x")
        if not ok:
            failures.append(f"{extra}: expected '{expect}' once; stderr: {r.stderr[-800:]}")
    # One rank's error while the other waits in a barrier: the job ends, naming the rank.
    import tempfile
    import time
    with tempfile.TemporaryDirectory() as d:
        afile = os.path.join(d, "a_file")
        open(afile, "w").close()
        t0 = time.time()
        r = run(["mpirun", "-np", "2", "--bind-to", "none", "-x", "ORIGAMI_ERROR_AGREE_S=2", binary,
                 "train", "--config", "configs/tiny.json", "--synthetic", "--steps", "2", "--seq",
                 "64", "--micro-batch", "1", "--layout", "tsp=2", "--eval-every", "0", "--save-dir",
                 os.path.join(afile, "ck"), "--quiet"], timeout=60, check=False)
        dt = time.time() - t0
        ok = (r.returncode != 0 and "origami: error on rank 0 of 2" in r.stderr
              and "Not a directory" in r.stderr and dt < 30)
        print(f"{'ok  ' if ok else 'FAIL'} an error on rank 0 only (--save-dir under a file): exit "
              f"{r.returncode} after {dt:.1f} s")
        if not ok:
            failures.append(f"one rank's error did not end the job: {r.stderr[-800:]}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
