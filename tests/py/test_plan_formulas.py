"""docs/memory-model.md's readable formulas against the dry run (`origami plan --json`), which
allocates and records what the engines do (test_memory_model.py checks that against real runs):
the persistent categories (weights E·N_r, grads 4·N_r, optimizer 8·N_r, 12·N_r under bf16), the
bytes per layer of tsp-spec §7 for every layout, phase and category (fp32 and bf16: what travels
in the element type counts E bytes an element, the sums — gradients, dK/dV, TP's partial outputs —
4), recompute none and full, kept attention packets, the fused MLP recompute, and the activations
kept under --recompute none (L layers' saved tensors plus the residual stream x and dx, which are
fp32 under bf16 too), all exact.
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


def per_layer(a, B, S, rc, flags, E):
    """tsp-spec §7, bytes received per layer by (category, phase): E per element of what travels
    in the element type (weights, K/V forward, gathered activations), 4 per element of a sum."""
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
             ("kv", "fwd"): f * K, ("kv", "recompute"): f * K * full, ("kv", "bwd"): f * K * (E + 4) / E,
             ("grads", "bwd"): f * (Wa + Wm) * 4 / E}
        t = {k: E * v for k, v in t.items()}
    T, Sg = a["tp"], a["sp"]
    if T * Sg > 1:
        fT, fS = (T - 1) / T, (Sg - 1) / Sg
        seqp = T > 1 and "off" not in flags
        # two gathers (E) and two reduce-scatters (4) a direction under sequence parallelism, else
        # two all-reduces of 2·fT·Ts·h (4)
        acts = fT * B * S / Sg * h * ((2 * E + 8) if seqp else 16)
        kvb = fS * K / T
        t = {("acts", "fwd"): acts, ("acts", "recompute"): acts * full, ("acts", "bwd"): acts,
             ("kv", "fwd"): E * kvb, ("kv", "recompute"): E * kvb * full, ("kv", "bwd"): (E + 4) * kvb,
             ("grads", "bwd"): 4 * 2 * fS * (Wa + Wm) / T}
    return t


def kept_activations(a, B, S, E):
    """--recompute none, single/DP/TSP/FSDP+SP/SP, bytes: L · T·(4h + E·(2h + 2q + 2kv + 2I)
    + 4·(2 + n_h)) + 4·2Th (x, rstd, lse and the residual stream x, dx in fp32)."""
    T = B * S // (a["tsp"] * a["fsdp_sp"] * a["sp"])
    return L * T * (4 * h + E * (2 * h + 2 * q + 2 * kv + 2 * I) + 4 * (2 + nh)) + 4 * 2 * T * h


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
        check(pk["weights"] == E * N and pk["grads"] == 4 * N and pk["optimizer"] == opt * N,
              f"{name}: weights {pk['weights']}, grads {pk['grads']}, optimizer {pk['optimizer']} = "
              f"{E}, 4, {opt} x N_r {N}")
        want = per_layer(a, B, S, rc, flags, E)
        got = p["comm_bytes_per_layer_by_category"]
        bad = [(c, ph, v, want.get((c, ph), 0)) for c, phs in got.items() for ph, v in phs.items()
               if v != round(want.get((c, ph), 0))]
        check(not bad, f"{name}: bytes per layer = tsp-spec §7" + (f" {bad}" if bad else ""))
        if rc == "none" and a["tp"] == 1:
            ka = kept_activations(a, B, S, E)
            check(pk["activations"] == ka,
                  f"{name}: activations {pk['activations']} = E x kept formula {ka}")
if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print("plan formulas: all checks passed")
