"""origami under mpirun: one rank trains; two ranks without a layout are refused with the same
clear error on every rank, a non-zero exit and no hang.
Usage: test_mpi_launch.py ORIGAMI_BINARY"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


def mpirun(n, args):
    return subprocess.run(["mpirun", "-np", str(n)] + args, capture_output=True, text=True, env=ENV,
                          timeout=120, cwd=ROOT)


def main():
    binary = sys.argv[1]
    failures = []
    r = mpirun(1, [binary, "train", "--config", "configs/tiny.json", "--synthetic", "--steps", "2", "--seq", "32"])
    print(r.stdout)
    if r.returncode != 0 or "step 2/2" not in r.stdout:
        failures.append(f"mpirun -np 1 train failed: {r.stderr}")
    r = mpirun(2, [binary, "train", "--config", "configs/tiny.json", "--synthetic", "--steps", "2", "--seq", "32"])
    n_err = r.stderr.count("world size 2 > 1")
    print(f"mpirun -np 2: exit {r.returncode}, error printed by {n_err} rank(s)")
    if r.returncode == 0 or n_err != 2:
        failures.append(f"two ranks without a layout: exit {r.returncode}, stderr {r.stderr}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
