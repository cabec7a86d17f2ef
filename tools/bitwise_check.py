#!/usr/bin/python3
"""A fixed list of origami commands whose outputs a refactor must leave bit for bit as they are.

  tools/bitwise_check.py record BIN OUTDIR    run every command with BIN, keep its outputs in OUTDIR
  tools/bitwise_check.py compare DIR_A DIR_B  every output of A equal to B's, byte for byte

Covered: `grad` of every layout (single, tsp, fsdp_sp, tp with and without sequence parallelism,
sp, tp+sp, dp and the dp compositions) under --recompute none and full, head buckets, kept
attention packets, the fused MLP recompute, --no-overlap, tied embeddings, D = 4, and the emulated
device (gradient files and the per-rank report: bytes per category/phase/layer, peak bytes per
category); `train` (losses, gradient norms, evaluations, every checkpoint file, the per-rank
report) for the main layouts, a resume, and the corpus; `generate` (ids and logits) under single,
tsp, tp, sp; `plan --json` (the predicted memory and bytes) for the small model and the paper's
7B setting. Time-dependent fields (seconds, tokens/s, RSS) are left out of the comparison; every
byte count is in it. Usage as in the first lines; the record step takes a few minutes on 2 cores.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "py"))
import st  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
# Fields whose values are times or process sizes: they differ between any two runs.
VOLATILE = {"seconds", "time_s", "tokens_per_s", "step_time_median_s", "rss_bytes", "comm_wall_s"}


def ranks_of(layout):
    n = 1
    for p in layout.split(",") if layout else []:
        n *= int(p.split("=")[1])
    return n if n > 1 else 0


def run(bin_, args, layout="", check=True):
    ranks = ranks_of(layout)
    cmd = ([bin_] if not ranks else
           ["mpirun", "-np", str(ranks), "--bind-to", "none", bin_]) + args
    if layout:
        cmd += ["--layout", layout]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, stdin=subprocess.DEVNULL)
    if check and r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def model(bin_, out, name, tied):
    cfg = dict(hidden_size=128, intermediate_size=320, num_attention_heads=8,
               num_key_value_heads=4, num_hidden_layers=2, vocab_size=211,
               max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
               tie_word_embeddings=tied)
    P = lambda n: os.path.join(out, n)  # noqa: E731
    json.dump(cfg, open(P(name + ".json"), "w"))
    run(bin_, ["init", "--config", P(name + ".json"), "--seed", "5", "--out",
               P(name + ".safetensors")])
    rng = np.random.default_rng(5)
    W = st.load(P(name + ".safetensors"))
    W = {n: (1 + 0.1 * rng.standard_normal(w.shape) if w.ndim == 1
             else w / 0.02 / np.sqrt(w.shape[1])).astype(np.float32) for n, w in W.items()}
    st.save(P(name + ".safetensors"), W)


GRAD_LAYOUTS = ["", "tsp=2", "fsdp_sp=2", "tp=2", "sp=2", "tp=2,sp=2", "dp=2", "tsp=2,dp=2",
                "fsdp_sp=2,dp=2", "tp=2,dp=2", "sp=2,dp=2"]
GRAD_EXTRA = [("tsp=4", []), ("fsdp_sp=4", []), ("tp=4", []), ("sp=4", []), ("tsp=1", []),
              ("tsp=2", ["--attn-buckets", "2"]), ("fsdp_sp=2", ["--attn-buckets", "2"]),
              ("sp=2", ["--attn-buckets", "2"]), ("tp=2,sp=2", ["--attn-buckets", "2"]),
              ("tsp=2", ["--no-overlap"]), ("tp=2,sp=2", ["--no-overlap"]),
              ("sp=2", ["--no-overlap"]), ("fsdp_sp=2", ["--no-overlap"]),
              ("tsp=2", ["--recompute", "full", "--fused-mlp-recompute"]),
              ("fsdp_sp=2", ["--recompute", "full", "--fused-mlp-recompute"]),
              ("tsp=2", ["--recompute", "full", "--keep-attn-weights"]),
              ("tsp=4", ["--recompute", "full", "--keep-attn-weights", "--fused-mlp-recompute"]),
              ("tp=2", ["--tp-sequence-parallel", "off"]),
              ("tp=2,sp=2", ["--tp-sequence-parallel", "off"])]
TIED = ["", "tsp=2", "tp=2,sp=2", "tp=2", "fsdp_sp=2"]
EMU = [("", []), ("tsp=2", []), ("fsdp_sp=2", []), ("tp=2,sp=2", []), ("sp=2", []),
       ("tsp=2", ["--recompute", "full", "--keep-attn-weights"])]
TRAIN = [("", []), ("tsp=2", []), ("fsdp_sp=2", []), ("tp=2", []), ("sp=2", []),
         ("tp=2,sp=2", []), ("dp=2", []), ("tsp=2,dp=2", []),
         ("tsp=2", ["--recompute", "full", "--keep-attn-weights", "--fused-mlp-recompute"]),
         ("tsp=2", ["--grad-accum", "2"])]
GEN = ["", "tsp=2", "tp=2", "sp=2", "tsp=4"]
PLAN_SMALL = ["--config", "configs/small.json", "--seq", "512", "--seq", "4096", "--micro-batch",
              "2", "--layout", "tsp=4", "--layout", "fsdp_sp=4", "--layout", "tp=4", "--layout",
              "sp=4", "--layout", "tp=2,sp=2", "--layout", "dp=2,tsp=2", "--layout", "dp=4",
              "--tp-sequence-parallel", "both"]
PLAN_7B = ["--config", "configs/llama7b-paper.json", "--dtype", "bf16", "--micro-batch", "1",
           "--seq", "16384", "--seq", "32768", "--seq", "65536", "--seq", "131072", "--layout",
           "tsp=8", "--layout", "tp=8", "--layout", "tp=4,sp=2", "--layout", "tp=2,sp=4",
           "--layout", "fsdp_sp=8", "--tp-sequence-parallel", "both", "--device-memory", "80"]


def slug(*parts):
    s = "_".join(p for p in parts if p)
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s) or "single"


def record(bin_, out):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    P = lambda n: os.path.join(out, n)  # noqa: E731
    model(bin_, out, "m", False)
    model(bin_, out, "tied", True)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 211, (2, 97))
    labels = ids.copy()
    labels[rng.random(ids.shape) < 0.2] = -100
    st.save(P("t.safetensors"), {"input_ids": ids.astype(np.int64),
                                 "labels": labels.astype(np.int64)})

    def grad(layout, extra, m="m", device="cpu"):
        name = slug("grad", device, m, layout, *extra)
        run(bin_, ["grad", "--config", P(m + ".json"), "--weights", P(m + ".safetensors"),
                   "--tokens", P("t.safetensors"), "--out", P(name + ".safetensors"), "--report",
                   P(name + ".report.json"), "--device", device] + extra, layout)

    for rc in ("none", "full"):
        for L in GRAD_LAYOUTS:
            grad(L, ["--recompute", rc])
    for L, extra in GRAD_EXTRA:
        grad(L, extra)
    for L in TIED:
        grad(L, [], "tied")
    for L, extra in EMU:
        grad(L, extra, "m", "emu")

    for L, extra in TRAIN:
        name = slug("train", L, *extra)
        ck = P(name + ".ck")
        args = ["train", "--config", P("m.json"), "--synthetic", "--steps", "3", "--seq", "64",
                "--micro-batch", "2", "--eval-every", "2", "--eval-batches", "1", "--warmup", "1",
                "--save-dir", ck, "--save-every", "2", "--quiet"] + extra
        run(bin_, args + ["--report", P(name + ".report.json")], L)
        run(bin_, args + ["--report", P(name + ".resume.report.json"), "--resume",
                          os.path.join(ck, "step_2"), "--save-dir", P(name + ".resumed.ck")], L)
    for L in ("", "tsp=2"):
        name = slug("corpus", L)
        run(bin_, ["train", "--config", "configs/tiny.json", "--steps", "3", "--seq", "64",
                   "--eval-every", "3", "--eval-batches", "1", "--quiet", "--save-dir",
                   P(name + ".ck"), "--save-every", "3", "--report", P(name + ".report.json")], L)

    prompt = np.random.default_rng(1).integers(0, 211, (2, 13)).astype(np.int64)
    st.save(P("prompt.safetensors"), {"input_ids": prompt})
    for dev in ("cpu", "emu"):
        for L in GEN if dev == "cpu" else ["tsp=2"]:
            name = slug("gen", dev, L)
            run(bin_, ["generate", "--config", P("m.json"), "--weights", P("m.safetensors"),
                       "--tokens", P("prompt.safetensors"), "--max-new-tokens", "6", "--device",
                       dev, "--out", P(name + ".safetensors"), "--dump-logits",
                       P(name + ".logits.safetensors"), "--quiet"], L)
    for rc in ("none", "full"):
        for name, args in ((f"plan_small_{rc}", PLAN_SMALL + ["--new-tokens", "64"]),
                           (f"plan_7b_{rc}", PLAN_7B)):
            for fmt in ("json", "txt"):
                r = run(bin_, ["plan"] + args + ["--recompute", rc]
                        + (["--json"] if fmt == "json" else []))
                open(P(f"{name}.{fmt}"), "w").write(r.stdout)
    n = sum(len(fs) for _, _, fs in os.walk(out))
    print(f"recorded {n} files in {out}")


def strip(j):
    if isinstance(j, dict):
        return {k: strip(v) for k, v in j.items() if k not in VOLATILE}
    if isinstance(j, list):
        return [strip(v) for v in j]
    return j


def common(a, b, where, notes):
    """a and b without the dict keys only one of them has (a field added since the recording:
    noted, not compared)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) ^ set(b):
            notes.add(f"{where}: '{k}' only in {'A' if k in a else 'B'} (not compared)")
        keys = set(a) & set(b)
        return ({k: common(a[k], b[k], where, notes)[0] for k in keys},
                {k: common(a[k], b[k], where, notes)[1] for k in keys})
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = [common(x, y, where, notes) for x, y in zip(a, b)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return a, b


def files(root):
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = p
    return out


def compare(a, b):
    fa, fb = files(a), files(b)
    bad = sorted(set(fa) ^ set(fb))
    for f in bad:
        print(f"only in {'A' if f in fa else 'B'}: {f}")
    same = 0
    notes = set()
    for f in sorted(set(fa) & set(fb)):
        if f.endswith(".json"):
            ja, jb = (strip(json.load(open(x))) for x in (fa[f], fb[f]))
            ja, jb = common(ja, jb, f, notes)
            ok = ja == jb
        else:
            ok = open(fa[f], "rb").read() == open(fb[f], "rb").read()
        if ok:
            same += 1
        else:
            bad.append(f)
            print(f"DIFFERS: {f}")
    for n in sorted({x.split(": ", 1)[1] for x in notes}):
        print(f"note: {n}")
    print(f"{same} files equal, {len(bad)} differ or are missing")
    return not bad


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "record":
        bin_, out = os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
        os.chdir(os.path.join(HERE, ".."))  # configs/ and data/ are relative to the repository
        record(bin_, out)
        sys.exit(0)
        record(os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(0 if compare(sys.argv[2], sys.argv[3]) else 1)
    else:
        sys.exit(__doc__)
