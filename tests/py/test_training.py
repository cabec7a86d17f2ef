"""End-to-end training properties on the bundled corpus (tiny config):
  * training lowers the loss (train and held-out);
  * --grad-accum 2 equals --micro-batch 2B within 1e-6 relative per step, clipping active;
  * --recompute full gives bit-identical losses to --recompute none;
  * a run resumed from a checkpoint continues with bit-identical losses and weights.
Usage: test_training.py ORIGAMI_BINARY WORKDIR"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import train as run_train  # noqa: E402


def train(binary, work, name, *args):
    return run_train(binary, work, name, args)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    failures = []

    # 1. learning
    rep, out = train(binary, work, "learn", "--steps", "60", "--seq", "64", "--micro-batch", "8",
                     "--lr", "3e-3", "--eval-every", "20", "--eval-batches", "4")
    L = rep["losses"]
    first, last = sum(L[:5]) / 5, sum(L[-5:]) / 5
    ev = [e["loss"] for e in rep["eval"]]
    print(f"learning: train loss {first:.3f} -> {last:.3f}; held-out {ev}")
    if not (last < first - 1.0 and ev[-1] < ev[0]):
        failures.append("training did not lower the loss")
    if "peak memory" not in out or rep["tokens_per_s"] <= 0:
        failures.append("memory / throughput not reported")

    # 2. gradient accumulation == bigger micro-batch (same global batch), clipping active
    common = ["--steps", "6", "--seq", "48", "--lr", "2e-3", "--clip", "0.3", "--eval-every", "0"]
    a, _ = train(binary, work, "accum", "--micro-batch", "3", "--grad-accum", "2", *common)
    b, _ = train(binary, work, "big", "--micro-batch", "6", "--grad-accum", "1", *common)
    worst = max(abs(x - y) / abs(y) for x, y in zip(a["losses"], b["losses"]))
    print(f"grad-accum 2 x B=3 vs B=6: worst per-step loss rel diff {worst:.2e}")
    if worst > 1e-6:
        failures.append(f"grad accumulation differs from the big micro-batch: {worst:.2e}")

    # 3. recompute full == none, bitwise
    n, _ = train(binary, work, "rc_none", "--steps", "4", "--seq", "64", "--micro-batch", "2", "--eval-every", "0")
    f, _ = train(binary, work, "rc_full", "--steps", "4", "--seq", "64", "--micro-batch", "2", "--eval-every", "0",
                 "--recompute", "full")
    print(f"recompute none {n['losses']}\nrecompute full {f['losses']}")
    if n["losses"] != f["losses"]:
        failures.append("--recompute full changed the losses")
    if not f["ranks"][0]["peak_bytes"]["activations"] < n["ranks"][0]["peak_bytes"]["activations"]:
        failures.append("--recompute full did not lower the activation peak")

    # 4. resume is bit-identical
    ck = os.path.join(work, "ckpt")
    args = ["--steps", "10", "--seq", "64", "--micro-batch", "2", "--eval-every", "0", "--save-dir"]
    full, _ = train(binary, work, "whole", *args, ck, "--save-every", "5")
    ck2 = os.path.join(work, "ckpt2")
    res, out = train(binary, work, "resumed", *args, ck2, "--resume", os.path.join(ck, "step_5"))
    print(f"uninterrupted steps 6-10 {full['losses'][5:]}\nresumed       steps 6-10 {res['losses']}")
    if res["losses"] != full["losses"][5:]:
        failures.append("resumed losses differ from the uninterrupted run")
    for fname in ("model.safetensors", "optimizer.safetensors"):
        with open(os.path.join(ck, "step_10", fname), "rb") as x, open(os.path.join(ck2, "step_10", fname), "rb") as y:
            if x.read() != y.read():
                failures.append(f"resumed {fname} differs at step 10")
    leftovers = [p for p in os.listdir(ck) if p.endswith(".tmp")]
    if leftovers:
        failures.append(f"temporary checkpoint directories left: {leftovers}")

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
