"""Reliability of a training run (issue 20): the numerical guard, checkpoints that survive, and
metadata that is checked. On configs/tiny.json with synthetic data:
- a diverging run (--lr 1e3) skips every update whose loss or gradient norm is not finite (a
  warning naming the step), stops after --max-skips in a row with an error, and every checkpoint
  it wrote holds finite values only; under tsp=2 every rank stops at the same step and the error
  is printed once;
- --keep-last 2 leaves only the two newest steps;
- re-saving an existing step (resuming into the same --save-dir at the checkpoint's step) swaps it
  in place: `latest` names a complete step throughout, and it resumes;
- a corrupt step named by `latest` falls back to the newest complete one with a warning, while the
  corrupt step given directly is refused naming the file;
- SIGTERM to one rank of a tsp=2 run: every rank stops after the same step, writes its checkpoint
  and exits 75; resuming gives the uninterrupted run's losses bit for bit;
- a stopped rank (SIGSTOP): with --timeout 3 the other rank ends the job within 3 + 15 s, naming
  the transfer it waited for;
- a full disk (a 20 MiB tmpfs, mounted where the test may) at a save, single and tsp=2: a clear
  error, the previous step and `latest` intact, no partial step left; the run resumes from it;
- a trainer.json whose step is negative is refused naming the field.
Usage: test_reliability.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402
from harness import ROOT, mpi, run, with_fault  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
P = lambda n: os.path.join(WORK, n)  # noqa: E731
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def train(*extra, check_rc=True):
    return run([BIN, "train", "--config", os.path.join(ROOT, "configs/tiny.json"), "--synthetic",
                "--seq", "32", "--micro-batch", "2", "--eval-every", "0", "--log-every", "0",
                "--warmup", "0"] + list(extra), check=check_rc)


def finite(step_dir):
    return all(np.isfinite(t).all() for f in ("model.safetensors", "optimizer.safetensors")
               for t in st.load(os.path.join(step_dir, f)).values())


# ---- the numerical guard ----------------------------------------------------------------------
r = train("--steps", "30", "--lr", "1e3", "--clip", "0", "--max-skips", "3", "--save-dir",
          P("div"), "--save-every", "1", check_rc=False)
skips = r.stderr.count("the update is skipped")
check(r.returncode != 0 and "3 consecutive steps with a non-finite loss or gradient norm" in r.stderr
      and skips == 3, f"--lr 1e3: {skips} skipped steps warned, then stopped (exit {r.returncode})")
steps = sorted(int(d[5:]) for d in os.listdir(P("div")) if d.startswith("step_") and d[5:].isdigit())
check(steps and all(finite(P(f"div/step_{s}")) for s in steps),
      f"every checkpoint of the diverging run holds finite values only (steps {steps[:3]}…{steps[-1:]})")

r = run(mpi(2, [BIN, "train", "--config", os.path.join(ROOT, "configs/tiny.json"), "--synthetic",
                "--seq", "32", "--micro-batch", "2", "--eval-every", "0", "--log-every", "0",
                "--warmup", "0", "--steps", "30", "--lr", "1e3", "--clip", "0", "--max-skips", "2",
                "--layout", "tsp=2"]), check=False, timeout=300)
check(r.returncode != 0 and r.stderr.count("2 consecutive steps with a non-finite") == 1,
      f"the same under tsp=2: every rank stops at the same step, the error printed once "
      f"(exit {r.returncode})")

# ---- --keep-last ----------------------------------------------------------------------------------
train("--steps", "5", "--save-dir", P("keep"), "--save-every", "1", "--keep-last", "2")
left = sorted(d for d in os.listdir(P("keep")) if d.startswith("step_"))
check(left == ["step_4", "step_5"], f"--keep-last 2 leaves {left}")

# ---- re-saving an existing step, then resuming ----------------------------------------------------
before = open(P("keep/step_5/model.safetensors"), "rb").read()
train("--steps", "5", "--resume", P("keep"), "--save-dir", P("keep"))
after = open(P("keep/step_5/model.safetensors"), "rb").read()
check(open(P("keep/latest")).read().strip() == "step_5" and before == after
      and not [d for d in os.listdir(P("keep")) if d.endswith((".tmp", ".old"))],
      "re-saving step 5 in place: the same bytes, latest = step_5, nothing left over")
r = train("--steps", "6", "--resume", P("keep"), check_rc=False)
check(r.returncode == 0, "the re-saved checkpoint resumes")

# ---- a corrupt latest step: fallback; given directly: refused ---------------------------------------
m = P("keep/step_5/model.safetensors")
b = bytearray(open(m, "rb").read())
b[-1] ^= 0x40
open(m, "wb").write(bytes(b))
rep = P("fallback.json")
r = train("--steps", "6", "--resume", P("keep"), "--report", rep, check_rc=False)
check(r.returncode == 0 and "sha256 mismatch" in r.stderr and "step_4, the newest complete step" in r.stderr
      and json.load(open(rep))["steps"] == 2,
      "latest names a corrupt step: a warning, and the run resumes from step 4 (2 steps to go)")
r = train("--steps", "6", "--resume", P("keep/step_5"), check_rc=False)
check(r.returncode != 0 and "step_5/model.safetensors: sha256 mismatch" in r.stderr,
      "the corrupt step given directly is refused, naming the file")

# ---- preemption: SIGTERM to one rank of tsp=2 -----------------------------------------------------
# Constant LR (--min-lr = --lr, no warmup), so a run's --steps does not change its schedule.
CONST = ["--config", os.path.join(ROOT, "configs/tiny.json"), "--synthetic", "--seq", "64",
         "--micro-batch", "2", "--eval-every", "0", "--log-every", "0", "--warmup", "0", "--lr",
         "1e-3", "--min-lr", "1e-3", "--layout", "tsp=2"]
ranks = []


def signal_one_rank(sig):
    """A fault: `sig` to the last rank mpirun (pid) started (one rank only, as a scheduler may)."""
    def fault(pid):
        ranks[:] = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        if ranks:
            os.kill(int(ranks[-1]), sig)
    return fault


rc, out, err, dt = with_fault(["mpirun", "-np", "2", "--bind-to", "none", BIN, "train"] + CONST +
                              ["--steps", "100000", "--save-dir", P("pre"), "--save-every", "1000000"],
                              2, signal_one_rank(signal.SIGTERM))
latest = open(P("pre/latest")).read().strip() if os.path.exists(P("pre/latest")) else ""
n = int(latest[5:]) if latest.startswith("step_") else 0
check(len(ranks) == 2 and rc == 75 and n > 0 and "stopped by a signal after step" in err,
      f"SIGTERM to one rank: exit {rc} after {dt:.1f} s, checkpoint {latest} written")
if n:
    cont = P("cont.json")
    run(mpi(2, [BIN, "train"] + CONST + ["--steps", str(n + 3), "--resume", P("pre"), "--report", cont]))
    whole = P("whole.json")
    run(mpi(2, [BIN, "train"] + CONST + ["--steps", str(n + 3), "--report", whole]))
    a, b = json.load(open(cont))["losses"], json.load(open(whole))["losses"][n:]
    check(a == b, f"resumed from step {n}: steps {n + 1}-{n + 3} bitwise equal to an uninterrupted run")

# ---- a stopped rank: --timeout ends the job ------------------------------------------------------
rc, out, err, dt = with_fault(["mpirun", "-np", "2", "--bind-to", "none", BIN, "train"] + CONST +
                              ["--steps", "100000", "--timeout", "3"], 2, signal_one_rank(signal.SIGSTOP))
for r in ranks:  # never leave a stopped process behind
    try:
        os.kill(int(r), signal.SIGKILL)
    except ProcessLookupError:
        pass
check(len(ranks) == 2 and rc != 0 and "has not completed after" in err and dt < 3 + 15,
      f"a stopped rank: the other ends the job after {dt:.1f} s (--timeout 3), naming what it "
      f"waited for: {[l for l in err.splitlines() if 'has not completed' in l][:1]}")

# ---- a dead rank (kill -9 mid-step): the job ends within 15 s, naming the rank ---------------------
for L, n in (("tsp=2", 2), ("tp=2,sp=2", 4)):
    cmd = ["mpirun", "-np", str(n), "--bind-to", "none", BIN, "train"] + CONST[:-1] + [L, "--steps", "100000"]
    rc, out, err, dt = with_fault(cmd, 2, signal_one_rank(signal.SIGKILL))
    dead = n - 1  # the last rank mpirun started
    named = [l for l in err.splitlines() if f"rank {dead}" in l and "signal 9" in l]
    check(len(ranks) == n and rc != 0 and dt < 15 and named,
          f"{L}: a rank killed mid-step ends the job after {dt:.1f} s (exit {rc}), naming it: {named[:1]}")

# ---- a full disk (a 20 MiB tmpfs: one checkpoint of tiny fits, two do not) -----------------------
disk = P("disk")
os.makedirs(disk)
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20M", "tmpfs", disk]).returncode != 0:
    print("skip the full disk (cannot mount a tmpfs here)")
else:
    try:
        for L, n in (("single", 0), ("tsp=2", 2)):
            ck = os.path.join(disk, L.replace("=", ""))
            base = [BIN, "train", "--config", os.path.join(ROOT, "configs/tiny.json"), "--synthetic",
                    "--seq", "32", "--micro-batch", "2", "--eval-every", "0", "--log-every", "0",
                    "--steps", "2", "--layout", L]
            cmd = base + ["--save-dir", ck, "--save-every", "1"]
            r = run(mpi(n, cmd) if n else cmd, check=False, timeout=120)
            left = sorted(os.listdir(ck)) if os.path.isdir(ck) else []
            ok = (r.returncode != 0 and "No space left on device" in r.stderr and left == ["latest", "step_1"]
                  and open(os.path.join(ck, "latest")).read().strip() == "step_1")
            check(ok, f"{L}: the disk fills at step 2's save: a clear error (exit {r.returncode}), "
                  f"step_1 and latest intact, nothing half-written ({left})")
            cmd = base + ["--resume", ck]
            r = run(mpi(n, cmd) if n else cmd, check=False, timeout=120)
            check(r.returncode == 0, f"{L}: the run resumes from the intact step_1")
            shutil.rmtree(ck)  # the disk to the next case
    finally:
        subprocess.run(["umount", disk])

# ---- trainer.json metadata -----------------------------------------------------------------------
shutil.copytree(P("keep/step_4"), P("neg/step_4"))
j = json.load(open(P("neg/step_4/trainer.json")))
j["step"] = -5
json.dump(j, open(P("neg/step_4/trainer.json"), "w"))
r = train("--steps", "6", "--resume", P("neg/step_4"), check_rc=False)
check(r.returncode != 0 and "'step' must be a non-negative integer, got -5" in r.stderr,
      "a negative step in trainer.json is refused naming the field")

if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print("all reliability checks passed")
