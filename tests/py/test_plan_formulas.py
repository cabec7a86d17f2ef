"""docs/memory-model.md's readable formulas against the dry run (`origami plan --json`), which
allocates and records what the engines do (test_memory_model.py checks that against real runs):
the persistent categories (weights and grads E·N_r, optimizer 8·N_r, 12·N_r under bf16), the
bytes per layer of tsp-spec §7 for every layout, phase and category (fp32 and bf16, recompute none
and full, kept attention packets, the fused MLP recompute), and the activations kept under
--recompute none (L layers' saved tensors plus the residual stream x and dx), all exact.
Usage: test_plan_formulas.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import shutil
import subprocess
import sys

BIN, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
C = dict(hidden_size=128, intermediate_size=384, num_attention_heads=8, num_key_value_heads=4,
         num_hidden_layers=3, vocab_size=1001, max_position_embeddings=1024, rms_norm_eps=1e-5,
         rope_theta=10000.0, tie_word_embeddings=False)
cfgp = os.path.join(WORK, "config.json")
json.dump(C, open(cfgp, "w"))
h, I, L, V = C["hidden_size"], C["intermediate_size"], C["num_hidden_layers"], C["vocab_size"]
nh, nkv = C["num_attention_heads"], C["num_key_value_heads"]
d = h // nh
q, kv = nh * d, nkv * d
Wa, Wm = 2 * q * h + 2 * kv * h, 3 * I * h  # one layer's attention and MLP weights (elements)


def axes(layout):
    a = dict(dp=1, tsp=1, fsdp_sp=1, tp=1, sp=1)
    for item in layout.split(",") if layout != "single" else []:
        k, v = item.split("=")
        a[k] = int(v)
    return a


def held(a):
    """N_r: the parameters a rank holds (docs/memory-model.md, Persistent)."""
    X = a["tsp"] * a["fsdp_sp"] * a["tp"]
    Vp = -(-V // X) * X  # V' padded to the shard degree
    return L * (Wa + Wm) // X + 2 * L * h + h + 2 * Vp * h // X


def per_layer(a, B, S, rc, flags):
    """tsp-spec §7, elements received per layer by (category, phase)."""
    full, K = rc == "full", 2 * B * S * kv
    t = {}
    D = a["tsp"] * a["fsdp_sp"]
    if D > 1:
        f = (D - 1) / D
        fused, keep = "--fused-mlp-recompute" in flags, "--keep-attn-weights" in flags
        t = {("attn_weights", "fwd"): f * Wa, ("attn_weights", "recompute"): f * Wa * full,
             ("attn_weights", "bwd"): 0 if keep else f * Wa,
             ("mlp_weights", "fwd"): f * Wm, ("mlp_weights", "recompute"): f * Wm * (full and not fused),
             ("mlp_weights", "bwd"): f * Wm,
             ("kv", "fwd"): f * K, ("kv", "recompute"): f * K * full, ("kv", "bwd"): 2 * f * K,
             ("grads", "bwd"): f * (Wa + Wm)}
    T, Sg = a["tp"], a["sp"]
    if T * Sg > 1:
        fT, fS = (T - 1) / T, (Sg - 1) / Sg
        acts, kvb = 4 * fT * B * S / Sg * h, fS * K / T
        t = {("acts", "fwd"): acts, ("acts", "recompute"): acts * full, ("acts", "bwd"): acts,
             ("kv", "fwd"): kvb, ("kv", "recompute"): kvb * full, ("kv", "bwd"): 2 * kvb,
             ("grads", "bwd"): 2 * fS * (Wa + Wm) / T}
    return t


def kept_activations(a, B, S):
    """--recompute none, single/DP/TSP/FSDP+SP/SP: L · T·(3h + 2q + 2kv + 2I + 2 + n_h) + x, dx."""
    T = B * S // (a["tsp"] * a["fsdp_sp"] * a["sp"])
    return L * T * (3 * h + 2 * q + 2 * kv + 2 * I + 2 + nh) + 2 * T * h


failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


B = 2
CASES = [(L_, rc, [], S) for L_ in ("single", "tsp=2", "tsp=4", "fsdp_sp=2", "fsdp_sp=4", "tp=2",
                                      "tp=4", "sp=2", "sp=4", "tp=2,sp=2", "dp=2,tsp=2", "dp=2")
         for rc in ("none", "full") for S in (64, 512)]
CASES += [("tsp=4", "full", ["--keep-attn-weights"], 256), ("tsp=2", "full", ["--fused-mlp-recompute"], 256),
          ("tsp=4", "full", ["--keep-attn-weights", "--fused-mlp-recompute"], 256),
          ("tp=2", "none", ["--tp-sequence-parallel", "off"], 256),
          ("tp=2,sp=2", "full", ["--tp-sequence-parallel", "off"], 256)]
for layout, rc, flags, S in CASES:
    a = axes(layout)
    for dtype, E, opt in (("fp32", 4, 8), ("bf16", 2, 12)):
        r = subprocess.run([BIN, "plan", "--config", cfgp, "--layout", layout, "--seq", str(S),
                            "--micro-batch", str(B), "--recompute", rc, "--dtype", dtype, "--json"]
                           + flags, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"plan failed: {r.stderr}")
        p = json.loads(r.stdout)[0]
        name = f"{layout} {' '.join(flags)} S={S} {rc} {dtype}"
        N = held(a)
        pk = p["peak_bytes"]
        check(pk["weights"] == E * N and pk["grads"] == E * N and pk["optimizer"] == opt * N,
              f"{name}: weights {pk['weights']}, grads {pk['grads']}, optimizer {pk['optimizer']} = "
              f"{E}, {E}, {opt} x N_r {N}")
        want = per_layer(a, B, S, rc, flags)
        got = p["comm_bytes_per_layer_by_category"]
        bad = [(c, ph, v, E * want.get((c, ph), 0)) for c, phs in got.items() for ph, v in phs.items()
               if v != E * want.get((c, ph), 0)]
        check(not bad, f"{name}: bytes per layer = tsp-spec §7" + (f" {bad}" if bad else ""))
        if rc == "none" and a["tp"] == 1:
            ka = E * kept_activations(a, B, S)
            check(pk["activations"] == ka,
                  f"{name}: activations {pk['activations']} = E x kept formula {ka}")
if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print("plan formulas: all checks passed")
