"""origami across "hosts" (tools/cluster.sh: network namespaces joined by veth links through a
bridge, mpirun over TCP only, the daemons started in each namespace by an rsh agent):
- the quick start's model (configs/small.json on the corpus) trained under tsp=2 with one rank on
  each of 2 hosts gives the single-host run's losses bit for bit;
- tsp=4 as 2 hosts x 2 ranks gives them too;
- so does tsp=2 over a link with a 1 ms one-way delay and 2% random loss (TCP retransmits; the
  shaping by netfilter and tools/netdelay.c, where iptables is present);
- cutting host 2's link mid-run ends the job within --timeout + 15 s, with the message of the
  rank whose transfer stalled.
Exits 77 (skipped) where network namespaces cannot be made (not root, no `ip`).
Usage: test_cluster.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import MPI_ENV, ROOT, mpi, run, with_fault  # noqa: E402

BIN, WORK = os.path.abspath(sys.argv[1]), sys.argv[2]  # the remote daemons start elsewhere
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
P = lambda n: os.path.join(WORK, n)  # noqa: E731
CL = os.path.join(ROOT, "tools/cluster.sh")
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def cluster(*args, **kw):
    return subprocess.run([CL] + [str(a) for a in args], capture_output=True, text=True,
                          env=MPI_ENV, cwd=ROOT, **kw)


cluster("down")
if cluster("up", 2).returncode != 0:
    cluster("down")
    print("SKIPPED: cannot make network namespaces here")
    sys.exit(77)
try:
    TRAIN = ["train", "--config", os.path.join(ROOT, "configs/small.json"), "--data",
             os.path.join(ROOT, "data/moby_dick.txt"), "--tokenizer",
             os.path.join(ROOT, "data/tokenizer.model"), "--seq", "128", "--micro-batch", "2",
             "--steps", "3", "--eval-every", "0", "--log-every", "0", "--quiet"]
    for L, per in (("tsp=2", 1), ("tsp=4", 2)):
        n = 2 * per
        one = P(f"one_{L}.json")
        run(mpi(n, [BIN] + TRAIN + ["--layout", L, "--report", one]))
        two = P(f"two_{L}.json")
        r = cluster("run", 2, per, BIN, *TRAIN, "--layout", L, "--report", two, timeout=300)
        same = r.returncode == 0 and json.load(open(two))["losses"] == json.load(open(one))["losses"]
        check(same, f"{L} across 2 hosts ({per} rank(s) each, TCP): the single-host losses bit for "
              f"bit (exit {r.returncode}{': ' + r.stderr[-300:] if r.returncode else ''})")
    # The same over a delayed, lossy link.
    cluster("down")
    if shutil.which("iptables") is None:
        print("(no iptables here: the delayed, lossy link is not tried)")
    elif (u := cluster("up", 2, "", "1ms", "2%")).returncode != 0:
        check(False, f"cluster.sh up 2 '' 1ms 2%: {u.stderr[-300:]}")
    else:
        two = P("two_lossy.json")
        r = cluster("run", 2, 1, BIN, *TRAIN, "--layout", "tsp=2", "--report", two, timeout=300)
        same = r.returncode == 0 and json.load(open(two))["losses"] == \
            json.load(open(P("one_tsp=2.json")))["losses"]
        check(same, f"tsp=2 across 2 hosts over a 1 ms, 2% loss link: the single-host losses bit for "
              f"bit (exit {r.returncode}{': ' + r.stderr[-300:] if r.returncode else ''})")
    cluster("down")
    cluster("up", 2)
    # A host's link cut mid-run.
    rc, out, err, dt = with_fault(
        [CL, "run", "2", "1", BIN, "train", "--config", os.path.join(ROOT, "configs/tiny.json"),
         "--synthetic", "--seq", "64", "--micro-batch", "2", "--steps", "100000", "--eval-every",
         "0", "--log-every", "0", "--layout", "tsp=2", "--timeout", "5"], 2,
        lambda pid: cluster("cut", 2))
    msg = [x for x in err.splitlines() if "has not completed after" in x]
    check(rc != 0 and msg and dt < 5 + 15,
          f"host 2's link cut: the job ends after {dt:.1f} s (--timeout 5), exit {rc}: {msg[:1]}")
finally:
    cluster("down")  # also kills what still runs in the namespaces (a cut host's rank)

if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print("all cluster checks passed")
