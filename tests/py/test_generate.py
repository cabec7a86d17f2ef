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
- --dtype bf16 (weights and KV cache in bf16, fp32 residual stream, statistics and partial
  attention results): the single-rank logits within 3e-2 of the float64 PyTorch recompute along
  its own tokens, and measurably less exact than fp32 (so bf16 really computes in bf16); under
  tsp, tp and sp with D = 2 and 4 exactly the single rank's bf16 tokens and logits within 1e-5;
  every rank's KV cache exactly half of fp32's; decode bytes per step equal the formula in bf16
  elements; `plan --dtype bf16 --new-tokens` predicts the measured cache and step bytes;
- prompts of different lengths (input_ids left-padded, attention_mask): under single, tsp=2, 4,
  tp=2, 4 and sp=2, 4 (allgather, p2p, a2a) each sequence generates exactly its prompt's tokens
  alone, logits within 1e-5 — the padding is a document of its own that nothing attends to;
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

# the SP decoder's prefill by ring attention and by Ulysses (CFG: 4 KV heads; sp=4 splits them)
for comm in ("p2p", "a2a"):
    for D in (2, 4):
        outD, zD, repD = generate(f"sp{D}_{comm}", D, ["--sp-comm", comm], axis="sp")
        check((outD == out1).all() and relnorm(zD, z1) <= 1e-5,
              f"sp={D} --sp-comm {comm}: the single-rank tokens exactly, logits within "
              f"{relnorm(zD, z1):.1e} <= 1e-5")
bad_comm = generate("tsp_a2a", 2, ["--sp-comm", "a2a"], check_rc=False)
check(bad_comm.returncode != 0 and "--sp-comm a2a needs --layout sp=N" in bad_comm.stderr,
      "generate --sp-comm a2a under tsp=2 is refused")

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


def check_tsp_steps(D, rep, e, tag=""):
    """Every rank's bytes in every decode step of a tsp=D run against docs/inference.md's formula:
    q, the new k and v in e-byte elements; partial (o, lse), logits and all-reduces in fp32."""
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
        for rr in rep["ranks"]:
            r = rr["rank"]
            layer = ((D - 1) * Bq * qw * e + (r == o) * (D - 1) * Bq * 2 * kw * e
                     + (D - 1) * (Bq * qw + nq * Bq) * 4 + 2 * ar)
            want = ar + L * layer + (D - 1) * Bq * Vr * 4
            if rr["decode_step_bytes"][t] != want:
                ok = False
                print(f"  tsp={D} step {t} rank {r}: {rr['decode_step_bytes'][t]} B, formula {want}")
    check(ok, f"tsp={D}{tag}: every rank's bytes in all {NEW - 1} decode steps equal the formula")
    check(all(rr["decode_weight_bytes"] == 0 for rr in rep["ranks"]),
          f"tsp={D}{tag}: no weight bytes move during decode")


def check_base_steps(D, axis, rep, tag=""):
    """tp: two fp32 all-reduces per layer; sp: an all-gather of fp32 partials (either dtype)."""
    h, L, nh = CFG["hidden_size"], CFG["num_hidden_layers"], CFG["num_attention_heads"]
    ar = 2 * (D - 1) * B * h * 4 // D
    want = {"tp": ar + L * 2 * ar + (D - 1) * B * (-(-CFG["vocab_size"] // D)) * 4,
            "sp": L * (D - 1) * (B * h + nh * B) * 4}[axis]
    got = {b for rr in rep["ranks"] for b in rr["decode_step_bytes"]}
    check(got == {want}, f"{axis}={D}{tag}: every decode step {sorted(got)} B = formula {want}")
    check(all(rr["decode_weight_bytes"] == 0 for rr in rep["ranks"]),
          f"{axis}={D}{tag}: no weight bytes move during decode")


for D in (2, 4):
    check_tsp_steps(D, D_BYTES[D], 4)
    for axis in ("tp", "sp"):
        check_base_steps(D, axis, BASE[(axis, D)])

# ---- origami plan --new-tokens predicts what the runs measured -------------------------------
def check_plan(dtype, reps):
    """`plan --dtype DTYPE --new-tokens` against the measured KV cache and decode-step bytes of
    reps[(axis, D)] (the worst rank of each run)."""
    plan = json.loads(run([BIN, "plan", "--config", P("cfg.json"), "--seq", str(S), "--micro-batch",
                           str(B), "--new-tokens", str(NEW), "--json", "--dtype", dtype, "--layout",
                           "single"] + [x for a in ("tsp", "tp", "sp") for D in (2, 4)
                                        for x in ("--layout", f"{a}={D}")]).stdout)
    for row in plan:
        lay = row["layout"].split(" ")[0]
        rep_ = reps[("single", 1) if lay == "single" else (lay.split("=")[0], int(lay.split("=")[1]))]
        cache = max(x["kv_cache_bytes"] for x in rep_["ranks"])
        step = max((b for x in rep_["ranks"] for b in x["decode_step_bytes"]), default=0)
        inf = row["inference"]
        check(inf["kv_cache_bytes"] == cache and inf["decode_step_bytes"] == step,
              f"plan --dtype {dtype} {row['layout']}: KV cache {inf['kv_cache_bytes']} B and decode "
              f"step {inf['decode_step_bytes']} B = measured {cache}, {step}")


check_plan("fp32", {("single", 1): rep1, **{("tsp", D): D_BYTES[D] for D in (2, 4)}, **BASE})

# ---- bf16: weights and KV cache in bf16 -------------------------------------------------------
BF = ["--dtype", "bf16"]
outb, zb, repb = generate("bf16_single", 0, BF)
with torch.no_grad():
    refb = forward_logits(CFG, Pt, torch.tensor(outb[:, : S + NEW - 1])).numpy()
errb = [relnorm(zb[t], refb[:, S - 1 + t]) for t in range(NEW)]
check(max(errb) <= 3e-2, f"bf16 single-rank logits at all {NEW} steps vs the float64 recompute "
      f"along its own tokens: worst {max(errb):.2e}, median {np.median(errb):.2e} <= 3e-2")
check(min(errb) > 100 * worst, f"bf16 computes in bf16: its best step ({min(errb):.1e}) is over 100x "
      f"fp32's worst ({worst:.1e})")
agree = float((outb[:, S:] == refb[:, S - 1:].argmax(-1)).mean())
check(agree >= 0.9, f"bf16 tokens are the float64 argmax at {agree:.0%} of the steps (near ties "
      "may round either way)")
kv32 = {r["rank"]: r["kv_cache_bytes"] for r in rep1["ranks"]}
check(all(r["kv_cache_bytes"] * 2 == kv32[r["rank"]] for r in repb["ranks"]),
      f"bf16 single: KV cache {repb['ranks'][0]['kv_cache_bytes']} B = half of fp32's")
BF_REP = {}
for axis in ("tsp", "tp", "sp"):
    for D in (2, 4):
        outD, zD, repD = generate(f"bf16_{axis}{D}", D, BF, axis=axis)
        BF_REP[(axis, D)] = repD
        check((outD == outb).all(), f"bf16 {axis}={D}: the single rank's bf16 tokens exactly")
        check(relnorm(zD, zb) <= 1e-5,
              f"bf16 {axis}={D}: logits within 1e-5 of bf16 single ({relnorm(zD, zb):.1e})")
        f32 = (D_BYTES[D] if axis == "tsp" else BASE[(axis, D)])["ranks"]
        check(all(a["kv_cache_bytes"] * 2 == b["kv_cache_bytes"] for a, b in zip(repD["ranks"], f32)),
              f"bf16 {axis}={D}: every rank's KV cache {[a['kv_cache_bytes'] for a in repD['ranks']]} B "
              "= half of fp32's")
        if axis == "tsp":
            check_tsp_steps(D, repD, 2, " bf16")
        else:
            check_base_steps(D, axis, repD, " bf16")
check_plan("bf16", {("single", 1): repb, **BF_REP})

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


# ---- prompts of different lengths (attention_mask, HF's left padding) -------------------------
# Three prompts of 14, 9 and 4 tokens behind random padding ids: each sequence's tokens and logits
# equal its prompt generated alone (B = 1, no padding) under every decoder; padding that leaked
# into attention or shifted RoPE positions would change them.
LENS = (14, 9, 4)
ragged = rng.integers(0, CFG["vocab_size"], (3, S))
mask = np.zeros((3, S), np.int64)
for b, n in enumerate(LENS):
    mask[b, S - n:] = 1
st.save(P("ragged.safetensors"), {"input_ids": ragged.astype(np.int64), "attention_mask": mask})
alone = []
for b, n in enumerate(LENS):
    st.save(P(f"alone{b}.safetensors"), {"input_ids": ragged[b:b + 1, S - n:].astype(np.int64)})
    o, z, _ = generate(f"alone{b}", tokens=P(f"alone{b}.safetensors"))
    alone.append((o[0, n:], z[:, 0]))
for axis, D, extra in (("tsp", 0, []), ("tsp", 2, []), ("tsp", 4, []), ("tp", 2, []), ("tp", 4, []),
                       ("sp", 2, []), ("sp", 2, ["--sp-comm", "p2p"]), ("sp", 4, ["--sp-comm", "a2a"])):
    o, z, _ = generate(f"ragged_{axis}{D}{''.join(extra)}", D, extra, tokens=P("ragged.safetensors"),
                       axis=axis)
    same = all((o[b, S:] == alone[b][0]).all() for b in range(3))
    e = max(relnorm(z[:, b], alone[b][1]) for b in range(3))
    name = "single" if D == 0 else f"{axis}={D} {' '.join(extra)}"
    check(same and e <= 1e-5, f"prompts of 14, 9, 4 tokens left-padded, {name}: each sequence's tokens "
          f"are its prompt's alone, logits within {e:.1e} <= 1e-5")
st.save(P("badmask.safetensors"), {"input_ids": ragged.astype(np.int64),
                                   "attention_mask": np.ones((3, S), np.int64) - np.eye(3, S, 5, dtype=np.int64)})


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
bad("mask_not_left_padding", [], "attention_mask[0, 5]=0: expected left padding (0s, then 1s to the end)",
    tokens=P("badmask.safetensors"))

if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print("all generate checks passed")
