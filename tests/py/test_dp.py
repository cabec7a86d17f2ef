"""DP composition (tsp-spec §6, §9): `dp=N` alone and with `tsp=D`, rank = dp_i·D + i.
  * origami grad under dp=2 (2 ranks), dp=2,tsp=2 and dp=4 (4 ranks) equals the single rank:
    loss <= 1e-6, gradients <= 1e-5 relative per tensor; the DP term recorded on each rank equals
    2·f_dp·(this rank's weight elements)·4 bytes (grads, once per step);
  * training under dp=2 and dp=2,tsp=2 with micro-batch B follows one rank with micro-batch 2B
    (same global batch) within 1e-6 relative, held-out losses included (same windows evaluated).
Usage: test_dp.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402
import test_tsp_grad as tg  # noqa: E402
from harness import mpi, run  # noqa: E402


def main():
    binary, work = sys.argv[1], sys.argv[2]
    tg.BIN = binary
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    fails = []
    D = 2
    cfgp, wp, tp = tg.make(work, "dp", D, False, False, seed=5)
    # a batch of 4 sequences so that dp=4 has one each
    rng = np.random.default_rng(6)
    cfg = json.load(open(cfgp))
    ids = rng.integers(0, cfg["vocab_size"], (4, 6 * D + 1))
    labels = ids.copy()
    labels[rng.random(ids.shape) < 0.2] = -100
    st.save(tp, {"input_ids": ids, "labels": labels})
    ref = tg.grad(cfgp, wp, tp, os.path.join(work, "ref.safetensors"))
    h, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kvd = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    full = 2 * h * h + 2 * h * kvd + 3 * h * I + 2 * h  # per layer incl. norms
    full = cfg["num_hidden_layers"] * full + 2 * V * h + h
    for n, layout, model in ((2, "dp=2", 1), (4, "dp=2,tsp=2", 2), (4, "dp=4", 1)):
        out = os.path.join(work, layout + ".safetensors")
        run(mpi(n, [binary, "grad", "--config", cfgp, "--weights", wp, "--tokens", tp, "--out", out,
                    "--layout", layout, "--report", out + ".json"]))
        le, ge, where = tg.compare(ref, st.load(out))
        dp = n // model
        rep = json.load(open(out + ".json"))
        # this rank's weight elements: full / model for the sharded matrices (vocab padded), norms whole
        if model == 1:
            elems = full
        else:
            Vp = -(-V // model) * model
            elems = (cfg["num_hidden_layers"] * ((2 * h * h + 2 * h * kvd + 3 * h * I) // model + 2 * h)
                     + 2 * Vp * h // model + h)
        want = 2 * (dp - 1) * elems * 4 // dp
        got = [r["comm_bytes_step"]["grads"]["bwd"] for r in rep["ranks"]]
        ok = le <= 1e-6 and ge <= 1e-5 and all(g == want for g in got)
        print(f"{layout:12s} loss rel {le:.1e} worst grad rel {ge:.1e} ({where}); DP bytes {got[0]} "
              f"(formula {want}) {'ok' if ok else 'FAIL'}")
        if not ok:
            fails.append(layout)

    base = [binary, "train", "--config", "configs/tiny.json", "--seq", "64", "--steps", "10", "--grad-accum", "2",
            "--lr", "1e-3", "--warmup", "3", "--clip", "0.5", "--log-every", "0", "--eval-every", "5",
            "--eval-batches", "2"]
    one = os.path.join(work, "one.json")
    run(base + ["--micro-batch", "4", "--report", one])
    L1, E1 = (json.load(open(one))[k] for k in ("losses", "eval"))
    for n, layout in ((2, "dp=2"), (4, "dp=2,tsp=2")):
        rp = os.path.join(work, layout + ".train.json")
        run(mpi(n, base + ["--micro-batch", "2", "--layout", layout, "--report", rp]))
        L, E = (json.load(open(rp))[k] for k in ("losses", "eval"))
        e = max(abs(a - b) / abs(b) for a, b in zip(L, L1))
        ee = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(E, E1))
        print(f"train {layout:12s} (micro-batch 2) vs one rank (micro-batch 4): worst loss rel diff {e:.1e}, "
              f"held-out {ee:.1e}")
        if e > 1e-6 or ee > 1e-6 or len(E) != len(E1):
            fails.append("train " + layout)
    if fails:
        print("FAILED: " + ", ".join(fails))
        sys.exit(1)


if __name__ == "__main__":
    main()
