"""`origami generate` (inference with TSP, tsp-spec §11, and the TP and SP baselines) on a
random-weight GQA model:
- greedy generation (B = 2, 32 new tokens, a prompt that is not a multiple of 2D, so the prefill
  pads) under tsp=2, tsp=4, tp=2, tp=4, sp=2 and sp=4 gives exactly the single-rank tokens, and
  logits within 1e-5;
- the single-rank logits behind every generated token equal a full recompute of the whole
  sequence by the independent PyTorch model (float64) within 1e-5 norm-wise relative;
- every rank's KV cache holds 1/D of the positions ±1 after the prefill and after decoding;
- the bytes every rank receives in each decode step equal the formula of docs/inference.md, and
  no weight byte moves during decode;
- sampling with a seed is reproducible and the same under tsp=2; another seed differs;
- a text prompt gives the same text single and under tsp=2;
- bad input (too long, empty, ids outside the vocabulary, a cache over --max-memory, a layout
  the config cannot take) fails before any work with a message naming the problem.
Usage: test_generate.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402
from harness import ROOT, mpi, run  # noqa: E402
from llama_ref import forward_logits  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
P = lambda n: os.path.join(WORK, n)  # noqa: E731

CFG = dict(hidden_size=64, intermediate_size=96, num_attention_heads=8, num_key_value_heads=4,
           num_hidden_layers=2, vocab_size=97, max_position_embeddings=96, rms_norm_eps=1e-5,
           rope_theta=10000.0, tie_word_embeddings=False)
B, S, NEW = 2, 14, 32
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


with open(P("cfg.json"), "w") as f:
    json.dump(CFG, f)
run([BIN, "init", "--config", P("cfg.json"), "--seed", "3", "--out", P("w.safetensors")])
rng = np.random.default_rng(3)
W = st.load(P("w.safetensors"))
# Larger than init so the logits are far apart (greedy ties would make the comparison luck).
W = {n: (1 + 0.1 * rng.standard_normal(w.shape) if w.ndim == 1 else w / 0.02 / np.sqrt(w.shape[1]))
     .astype(np.float32) for n, w in W.items()}
st.save(P("w.safetensors"), W)
prompt = rng.integers(0, CFG["vocab_size"], (B, S))
st.save(P("prompt.safetensors"), {"input_ids": prompt.astype(np.int64)})


def generate(name, ranks=0, extra=(), check_rc=True, tokens=None, axis="tsp"):
    cmd = [BIN, "generate", "--config", P("cfg.json"), "--weights", P("w.safetensors"),
           "--tokens", tokens or P("prompt.safetensors"), "--max-new-tokens", str(NEW),
           "--out", P(name + ".out"), "--report", P(name + ".json"), "--dump-logits",
           P(name + ".logits")] + list(extra)
    if ranks:
        cmd += ["--layout", f"{axis}={ranks}"]
    r = run(mpi(ranks, cmd) if ranks else cmd, check=check_rc)
    if not check_rc:
        return r
    out = st.load(P(name + ".out"))["output_ids"]
    rep = json.load(open(P(name + ".json")))
    return out, st.load(P(name + ".logits"))["logits"], rep


def relnorm(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---- greedy: single against PyTorch, tsp=2 and tsp=4 against single -------------------------
out1, z1, rep1 = generate("single")
check(out1.shape == (B, S + NEW) and (out1[:, :S] == prompt).all(), "single: output_ids [B, S+new]")
Pt = {n: torch.tensor(w, dtype=torch.float64) for n, w in W.items()}
with torch.no_grad():
    ref = forward_logits(CFG, Pt, torch.tensor(out1[:, : S + NEW - 1])).numpy()
worst = max(relnorm(z1[t], ref[:, S - 1 + t]) for t in range(NEW))
check(worst <= 1e-5, f"single-rank logits at all {NEW} steps vs a full PyTorch recompute: {worst:.2e} <= 1e-5")
check((out1[:, S:] == ref[:, S - 1:].argmax(-1)).all(), "single-rank tokens are the reference argmax")

D_BYTES, BASE = {}, {}
for axis in ("tsp", "tp", "sp"):
    for D in (2, 4):
        outD, zD, repD = generate(f"{axis}{D}", D, axis=axis)
        check((outD == out1).all(), f"{axis}={D}: the single-rank tokens exactly")
        check(relnorm(zD, z1) <= 1e-5, f"{axis}={D}: logits within 1e-5 of single ({relnorm(zD, z1):.1e})")
        (D_BYTES if axis == "tsp" else BASE)[(axis, D) if axis != "tsp" else D] = repD

# ---- KV cache balance after the prefill (no decode step) and after decoding -----------------
for axis in ("tsp", "sp"):
    for D in (2, 4):
        r = generate(f"prefill_{axis}{D}", D, ["--max-new-tokens", "1"], axis=axis)[2]
        n = [x["kv_positions"] for x in r["ranks"]]
        check(sum(n) == S and max(n) - min(n) <= 1,
              f"{axis}={D} after prefill: positions per rank {n} (1/D ±1)")
        rep_ = D_BYTES[D] if axis == "tsp" else BASE[(axis, D)]
        n = [x["kv_positions"] for x in rep_["ranks"]]
        check(sum(n) == S + NEW - 1 and max(n) - min(n) <= 1,
              f"{axis}={D} after decode: positions per rank {n}")
        b = [x["kv_cache_bytes"] for x in rep_["ranks"]]
        check(max(b) <= -(-(S + NEW) // D) * 2 * CFG["num_hidden_layers"] * B * 32 * 4,
              f"{axis}={D}: cache bytes per rank {b} hold about 1/D of the positions")
for D in (2, 4):  # tp: every position, the own kv heads
    b = [x["kv_cache_bytes"] for x in BASE[("tp", D)]["ranks"]]
    check(max(b) == (S + NEW) * 2 * CFG["num_hidden_layers"] * B * (32 // D) * 4,
          f"tp={D}: cache bytes per rank {b} = all positions x 1/D of the kv heads")


# ---- decode bytes per step against the formula -------------------------------------------------
def prefill_counts(S, D):
    Sp = -(-S // (2 * D)) * 2 * D
    c = Sp // (2 * D)
    return [min(max(S - r * c, 0), c) + min(max(S - (2 * D - 1 - r) * c, 0), c) for r in range(D)]


def balanced(n):
    D, tot = len(n), sum(n)
    order = sorted(range(D), key=lambda r: -n[r])  # stable: ties by rank
    t = [tot // D] * D
    for i in range(tot % D):
        t[order[i]] += 1
    return t


def owner(n, p):
    D = len(n)
    best = None
    for i in range(D):
        r = (p + i) % D
        if best is None or n[r] < n[best]:
            best = r
    return best


for D in (2, 4):
    h, L, Bq = CFG["hidden_size"], CFG["num_hidden_layers"], B
    qw = h // D
    kw = h // CFG["num_attention_heads"] * CFG["num_key_value_heads"] // D
    nq = CFG["num_attention_heads"] // D
    Vr = -(-CFG["vocab_size"] // D)
    ar = 2 * (D - 1) * Bq * h * 4 // D
    n = balanced(prefill_counts(S, D))
    ok = True
    for t in range(NEW - 1):
        o = owner(n, S + t)
        n[o] += 1
        for rr in D_BYTES[D]["ranks"]:
            r = rr["rank"]
            layer = ((D - 1) * Bq * qw * 4 + (r == o) * (D - 1) * Bq * 2 * kw * 4
                     + (D - 1) * (Bq * qw + nq * Bq) * 4 + 2 * ar)
            want = ar + L * layer + (D - 1) * Bq * Vr * 4
            if rr["decode_step_bytes"][t] != want:
                ok = False
                print(f"  tsp={D} step {t} rank {r}: {rr['decode_step_bytes'][t]} B, formula {want}")
    check(ok, f"tsp={D}: every rank's bytes in all {NEW - 1} decode steps equal the formula")
    check(all(rr["decode_weight_bytes"] == 0 for rr in D_BYTES[D]["ranks"]),
          f"tsp={D}: no weight bytes move during decode")

for D in (2, 4):  # the baselines: tp two all-reduces per layer; sp an all-gather of partials
    h, L, nh = CFG["hidden_size"], CFG["num_hidden_layers"], CFG["num_attention_heads"]
    ar = 2 * (D - 1) * B * h * 4 // D
    want = {"tp": ar + L * 2 * ar + (D - 1) * B * (-(-CFG["vocab_size"] // D)) * 4,
            "sp": L * (D - 1) * (B * h + nh * B) * 4}
    for axis in ("tp", "sp"):
        got = {b for rr in BASE[(axis, D)]["ranks"] for b in rr["decode_step_bytes"]}
        check(got == {want[axis]}, f"{axis}={D}: every decode step {sorted(got)} B = formula {want[axis]}")
        check(all(rr["decode_weight_bytes"] == 0 for rr in BASE[(axis, D)]["ranks"]),
              f"{axis}={D}: no weight bytes move during decode")

# ---- origami plan --new-tokens predicts what the runs measured -------------------------------
plan = json.loads(run([BIN, "plan", "--config", P("cfg.json"), "--seq", str(S), "--micro-batch",
                       str(B), "--new-tokens", str(NEW), "--json", "--layout", "single"]
                      + [x for a in ("tsp", "tp", "sp") for D in (2, 4)
                         for x in ("--layout", f"{a}={D}")]).stdout)
for row in plan:
    axis, D = (row["layout"].split("=") + ["1"])[:2] if "=" in row["layout"] else ("single", 1)
    D = int(D)
    rep_ = rep1 if axis == "single" else D_BYTES[D] if axis == "tsp" else BASE[(axis, D)]
    cache = max(x["kv_cache_bytes"] for x in rep_["ranks"])
    step = max((b for x in rep_["ranks"] for b in x["decode_step_bytes"]), default=0)
    inf = row["inference"]
    check(inf["kv_cache_bytes"] == cache and inf["decode_step_bytes"] == step,
          f"plan {row['layout']}: KV cache {inf['kv_cache_bytes']} B and decode step "
          f"{inf['decode_step_bytes']} B = measured {cache}, {step}")

# ---- sampling ---------------------------------------------------------------------------------
samp = ["--temperature", "0.9", "--top-k", "10", "--top-p", "0.95", "--seed", "5"]
a = generate("s1", 0, samp)[0]
b = generate("s2", 0, samp)[0]
c = generate("s3", 2, samp)[0]
d = generate("s4", 0, samp[:-1] + ["6"])[0]
check((a == b).all(), "sampling with a seed is reproducible")
check((a == c).all(), "sampling gives the same tokens under tsp=2")
check(not (a == d).all(), "another seed gives other tokens")
check(not (a == out1).all(), "sampling differs from greedy")

# ---- text prompt ------------------------------------------------------------------------------
text = ["--config", os.path.join(ROOT, "configs/tiny.json"), "--tokenizer",
        os.path.join(ROOT, "data/tokenizer.model"), "--prompt", "Call me Ishmael.",
        "--max-new-tokens", "8"]
run([BIN, "init", "--config", os.path.join(ROOT, "configs/tiny.json"), "--out", P("tiny.safetensors")])
t1 = run([BIN, "generate", "--weights", P("tiny.safetensors")] + text).stdout
t2 = run(mpi(2, [BIN, "generate", "--weights", P("tiny.safetensors"), "--layout", "tsp=2"] + text)).stdout
check(t1.startswith("Call me Ishmael.") and len(t1) > len("Call me Ishmael.") and t1 == t2,
      f"text prompt: the same text single and tsp=2 ({t1.strip()!r})")


# ---- bad input: a clear error before any work, nothing written --------------------------------
def bad(name, extra, want, ranks=0, tokens=None):
    r = generate(name, ranks, extra, check_rc=False, tokens=tokens)
    msg = r.stderr
    ok = r.returncode != 0 and want in msg and not os.path.exists(P(name + ".out"))
    check(ok, f"error: {name}: {msg.strip().splitlines()[-1] if msg.strip() else '(no message)'}")


bad("too_long", ["--max-new-tokens", "90"], "exceeds max_position_embeddings=96")
st.save(P("empty.safetensors"), {"input_ids": np.zeros((2, 0), np.int64)})
bad("empty", [], "input_ids is empty", tokens=P("empty.safetensors"))
oov = prompt.copy()
oov[1, 3] = 97
st.save(P("oov.safetensors"), {"input_ids": oov.astype(np.int64)})
bad("outside_vocab", [], "input_ids[1, 3]=97 is outside the vocabulary [0, 97)", tokens=P("oov.safetensors"))
bad("max_memory", ["--max-memory", "0.0001"], "--max-memory=0.0001 GiB", ranks=2)
bad("layout", [], "num_key_value_heads=4 is not divisible by tsp=3", ranks=3)

if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print("all generate checks passed")
