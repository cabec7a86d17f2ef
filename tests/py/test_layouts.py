"""Every layout of tsp-spec §9 under `origami grad` with N ranks (one mpirun job per case, one test
per world size), against the single-rank file of the same weights and tokens: loss <= 1e-6 and
every gradient <= 1e-5 norm-wise relative, GQA (g = 2), masked labels, tied and untied, head
buckets, --recompute none/full, Megatron sequence parallelism on and off, and the sp axis's three
methods (--sp-comm allgather, p2p, a2a; a2a with KV heads split and replicated).
Cases with --dtype bf16 compare with the single rank in bf16 (loss <= 1e-4, gradients <= 1e-2, as
test_tsp_grad.py states why) and check the bytes with bf16 where bf16 travels (weights, K/V
forward, the gathered normalised rows and input gradients of TP) and fp32 where sums do (the
reduce-scatters and all-reduces of partial outputs and of gradients).
The bytes every rank records per layer, phase and category must equal tsp-spec §7 (TP, SP, TP+SP,
FSDP+SP, TSP; the dp term 2·f_dp·(this rank's weight elements) per step), and those of the
embedding and LM head the formulas of docs/layouts.md.
Usage: test_layouts.py ORIGAMI_BINARY WORKDIR N"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402
import test_tsp_grad as tg  # noqa: E402
from harness import mpi, run  # noqa: E402

OFF = ["--tp-sequence-parallel", "off"]
FULL = ["--recompute", "full"]
BUCKETS = ["--attn-buckets", "2"]
CASES = {  # layout, flags, tied
    2: [("tp=2", [], False), ("tp=2", OFF + FULL, True), ("sp=2", BUCKETS, False),
        ("sp=2", FULL, True)],
    4: [("tp=4", [], False), ("tp=4", OFF, True), ("sp=4", FULL + BUCKETS, False),
        ("tp=2,sp=2", [], False), ("tp=2,sp=2", OFF + FULL, True), ("dp=2,tp=2", BUCKETS, False),
        ("dp=2,sp=2", [], True), ("dp=2,fsdp_sp=2", FULL, False)],
    8: [("tp=8", [], False), ("sp=8", [], True), ("tp=2,sp=4", FULL, False),
        ("tp=4,sp=2", OFF, False), ("dp=2,tp=2,sp=2", [], True),
        ("dp=2,tp=2,sp=2", OFF + FULL, False), ("dp=2,tsp=4", FULL + ["--keep-attn-weights"], True),
        ("dp=4,fsdp_sp=2", [], False), ("dp=8", [], True)],
}
BF16 = ["--dtype", "bf16"]
CASES[2] += [("tp=2", BF16, False), ("sp=2", BF16 + FULL, True)]
CASES[4] += [("tp=2,sp=2", BF16, False), ("tp=4", BF16 + OFF, True), ("dp=2,tsp=2", BF16 + BUCKETS, False)]
CASES[8] += [("dp=2,tp=2,sp=2", BF16 + FULL, True), ("dp=8", BF16, False)]
# --sp-comm a2a (Ulysses): the test model's n_kv = 2N KV heads split over the ranks; "kvrep" cases
# use a model with n_kv = N/2 (1 at N = 2), each KV head replicated on 2 ranks at sp = N.
A2A = ["--sp-comm", "a2a"]
CASES[2] += [("sp=2", A2A, False), ("sp=2", A2A + FULL, True, "kvrep")]
CASES[4] += [("sp=4", A2A, True), ("sp=4", A2A + FULL, False, "kvrep"), ("dp=2,sp=2", A2A, False),
             ("sp=4", A2A + BF16, False, "kvrep")]
CASES[8] += [("sp=8", A2A, False), ("sp=8", A2A, True, "kvrep"), ("dp=2,sp=4", A2A + FULL, False)]
# FSDP+Ulysses (fsdp_sp --sp-comm a2a)
CASES[2] += [("fsdp_sp=2", A2A, False), ("fsdp_sp=2", A2A + FULL + ["--fused-mlp-recompute"], True)]
CASES[4] += [("fsdp_sp=4", A2A, True), ("dp=2,fsdp_sp=2", A2A + FULL, False), ("fsdp_sp=4", A2A + BF16, False)]
CASES[8] += [("fsdp_sp=8", A2A + FULL, False), ("dp=2,fsdp_sp=4", A2A, True)]
# --sp-comm p2p (ring attention): K/V blocks around the sp ring; the all-gather schedule's bytes
P2P = ["--sp-comm", "p2p"]
CASES[2] += [("sp=2", P2P, False), ("sp=2", P2P + FULL + BF16, True)]
CASES[4] += [("sp=4", P2P, True), ("sp=4", P2P + FULL, False, "kvrep"), ("dp=2,sp=2", P2P, False),
             ("sp=4", P2P + BF16, False)]
CASES[8] += [("sp=8", P2P, False), ("dp=2,sp=4", P2P + FULL, True)]
# Packed documents (`position_ids`, document masks): documents crossing rank and chunk boundaries,
# one-token documents; every layout family against the single rank's packed run (itself checked
# against PyTorch's block-diagonal mask in test_oracle.py).
PK = "packed"
CASES[2] += [("tsp=2", [], False, PK), ("tp=2", [], True, PK), ("sp=2", P2P, False, PK),
             ("fsdp_sp=2", A2A, True, PK), ("sp=2", FULL, False, PK)]
CASES[4] += [("tsp=4", FULL, False, PK), ("tp=2,sp=2", [], True, PK), ("sp=4", A2A, False, PK),
             ("dp=2,tsp=2", [], True, PK), ("fsdp_sp=4", BF16, False, PK), ("sp=4", P2P, True, PK)]
CASES[8] += [("tsp=8", [], True, PK), ("dp=2,tp=2,sp=2", FULL, False, PK), ("sp=8", P2P, False, PK),
             ("dp=2,fsdp_sp=4", A2A, False, PK)]
# --balance documents: the chunks dealt by their attention work under the document masks (the
# test checks that the deal differs from zigzag's for these batches, so the cases can fail).
BAL = ["--balance", "documents"]
CASES[2] += [("tsp=2", BAL, False, PK), ("sp=2", BAL + A2A, False, PK)]
CASES[4] += [("tsp=4", BAL + FULL, True, PK), ("tp=2,sp=2", BAL, False, PK), ("sp=4", BAL + P2P, False, PK),
             ("fsdp_sp=4", BAL, True, PK), ("dp=2,sp=2", BAL, False, PK)]
CASES[8] += [("tsp=8", BAL, False, PK), ("sp=8", BAL + A2A, True, PK), ("dp=2,tp=2,sp=2", BAL, False, PK)]
CATS = ("attn_weights", "mlp_weights", "kv", "grads", "embed_head", "acts", "other")


def axes(layout):
    a = {"dp": 1, "tsp": 1, "fsdp_sp": 1, "tp": 1, "sp": 1}
    for item in layout.split(","):
        k, v = item.split("=")
        a[k] = int(v)
    return a


def table(unit=4, **cells):
    """{category: {phase: bytes}} from cells like kv=(fwd, recompute, bwd) in elements of `unit`
    bytes (fp32), or in bytes with unit=1."""
    t = {c: {"fwd": 0, "recompute": 0, "bwd": 0} for c in CATS}
    for c, (f, r, b) in cells.items():
        t[c] = {"fwd": int(round(unit * f)), "recompute": int(round(unit * r)), "bwd": int(round(unit * b))}
    return t


def tpsp_bytes(cfg, T, Sg, seqp, B, S, full, tied, es=4, sp_comm="allgather"):
    """tsp-spec §7 for TP+SP (per layer), and our embedding/head formulas (docs/layouts.md), in
    bytes: es per element of what travels in the element type, 4 for the fp32 sums. sp_comm a2a
    (T = 1): each all-to-all receives (Σ-1)/Σ of what a rank holds after it — q and o forward, dO
    (es) and dQ (4) backward as acts; k, v forward, dK, dV (4) backward as kv, a rank's KV block
    kh·d wide (kh = max(n_kv/Σ, 1))."""
    h, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    d = h // cfg["num_attention_heads"]
    kvd = d * cfg["num_key_value_heads"]
    seqp = seqp and T > 1
    Ts, fT, fS = B * S / Sg, (T - 1) / T, (Sg - 1) / Sg
    W = (2 * h * h + 2 * h * kvd + 3 * I * h) / T  # one layer's weights on this rank
    # per layer and direction: two gathers (normalised rows / input gradients, es) and two
    # reduce-scatters (fp32) under sequence parallelism, else two fp32 all-reduces
    acts = fT * Ts * h * (2 * es + 2 * 4) if seqp else 4 * fT * Ts * h * 4
    kv = fS * 2 * B * S * kvd / T
    layer = table(1, acts=(acts, acts if full else 0, acts),
                  kv=(es * kv, es * kv if full else 0, (es + 4) * kv), grads=(0, 0, 4 * 2 * fS * W))
    if sp_comm == "a2a" and Sg > 1:
        kw = max(cfg["num_key_value_heads"] // Sg, 1) * d
        qo, kv = fS * Ts * h, 2 * (Sg - 1) * Ts * kw
        layer = table(1, acts=(2 * es * qo, 2 * es * qo if full else 0, (es + 4) * qo),
                      kv=(es * kv, es * kv if full else 0, 4 * kv), grads=(0, 0, 4 * 2 * fS * W))
    Vr = -(-V // T)
    gather = fT * Ts * h if seqp else 0
    embed = table(embed_head=(gather if seqp else 2 * fT * Ts * h, 0, gather),
                  grads=(0, 0, 2 * fS * Vr * h))
    head = table(1, embed_head=(es * gather + 4 * (T - 1) * 3 * Ts, 0,
                                4 * (gather if seqp else 2 * fT * Ts * h)),
                 grads=(0, 0, 0 if tied else 4 * 2 * fS * Vr * h))
    return layer, embed, head


def weight_elems(cfg, D):
    """Elements of the parameters a rank holds with shard degree D (vocabulary padded), norms whole."""
    h, I, V, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    kvd = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    Vp = -(-V // D) * D
    n_vocab = 1 if cfg["tie_word_embeddings"] else 2
    return L * ((2 * h * h + 2 * h * kvd + 3 * I * h) // D + 2 * h) + n_vocab * Vp * h // D + h


def packed_positions(rng, B, W):
    """position_ids [B, W] of packed documents: lengths drawn from 1..9 (one-token documents
    included), so documents cross the zigzag chunks (3 tokens a chunk at 6N positions) and ranks;
    the last sequence's first document continues one longer than S (positions from 20)."""
    pos = np.zeros((B, W), dtype=np.int64)
    for b in range(B):
        p = 0
        while p < W:
            n = int(rng.choice([1, 2, 4, 7, 9]))
            pos[b, p:p + n] = np.arange(min(n, W - p))
            p += n
    first = next((p for p in range(1, W) if pos[B - 1, p] == 0), W)
    pos[B - 1, :first] += 20  # the last sequence opens with a document longer than S, continued
    return pos


def chunk_owners(pos, D):
    """--balance documents' deal (parallel/sharded.h chunk_owners) of a batch's position_ids [B, S]."""
    B, S = pos.shape
    c, n = S // (2 * D), 2 * D
    work = [0.0] * n
    for b in range(B):
        start = 0
        for p in range(S):
            if p == 0 or pos[b, p] == 0:
                start = p
            work[min(p // c, n - 1)] += p - start + 1
    order = sorted(range(n), key=lambda j: (work[j], j))
    return [order[q] if k == 0 else order[n - 1 - q] for q in range(D) for k in (0, 1)]


def expected(cfg, layout, flags, ids, rank, pos=None):
    a = axes(layout)
    full = "full" in flags
    es = 2 if "bf16" in flags else 4
    M = a["tsp"] * a["fsdp_sp"] * a["tp"] * a["sp"]
    dp, i = a["dp"], rank % M
    rows = ids.shape[0] // dp
    rep = ids[(rank // M) * rows:(rank // M + 1) * rows]  # this replica's sequences
    B, S = rep.shape[0], rep.shape[1] - 1
    zero = table()
    if a["tsp"] > 1 or a["fsdp_sp"] > 1:
        D = M
        owners = None
        if "documents" in flags:
            owners = chunk_owners(pos[(rank // M) * rows:(rank // M + 1) * rows, :-1], D)
        lay, hd, em = tg.expected_bytes(cfg, D, i, rep, full, "--keep-attn-weights" in flags,
                                          "--fused-mlp-recompute" in flags, es=es, owners=owners)
        layer = table()
        for c in CATS:
            layer[c] = lay[c]
        if "a2a" in flags:  # FSDP+Ulysses: the all-to-alls of tpsp_bytes' a2a in place of K/V's gathers
            h, d = cfg["hidden_size"], cfg["hidden_size"] // cfg["num_attention_heads"]
            Ts, f = B * S / D, (D - 1) / D
            qo, kv = f * Ts * h, 2 * f * Ts * d * cfg["num_key_value_heads"]
            a2a = table(1, acts=(2 * es * qo, 2 * es * qo if full else 0, (es + 4) * qo),
                        kv=(es * kv, es * kv if full else 0, 4 * kv))
            layer["acts"], layer["kv"] = a2a["acts"], a2a["kv"]
        embed, head = table(), table()
        embed["embed_head"] = {"fwd": em["fwd"], "recompute": 0, "bwd": em["bwd"]}
        head["embed_head"] = {"fwd": hd["fwd"], "recompute": 0, "bwd": hd["bwd"]}
        shard = D
    elif a["tp"] > 1 or a["sp"] > 1:
        sp_comm = flags[flags.index("--sp-comm") + 1] if "--sp-comm" in flags else "allgather"
        layer, embed, head = tpsp_bytes(cfg, a["tp"], a["sp"], "off" not in flags, B, S, full,
                                        cfg["tie_word_embeddings"], es, sp_comm)
        shard = a["tp"]
    else:
        layer, embed, head, shard = zero, zero, zero, 1
    dp_term = int(round(2 * (dp - 1) * weight_elems(cfg, shard) * 4 / dp))
    return layer, embed, head, dp_term


def check_bytes(rep, cfg, layout, flags, ids, pos=None):
    bad = []
    for rk in rep["ranks"]:
        r = rk["rank"]
        layer, embed, head, dp_term = expected(cfg, layout, flags, ids, r, pos)
        for l, got in enumerate(rk["comm_bytes_per_layer"]):
            if got != layer:
                bad.append(f"rank {r} layer {l}: got {got} want {layer}")
        if rk["comm_bytes_embed"] != embed:
            bad.append(f"rank {r} embedding: got {rk['comm_bytes_embed']} want {embed}")
        if rk["comm_bytes_head"] != head:
            bad.append(f"rank {r} head: got {rk['comm_bytes_head']} want {head}")
        got = rk["comm_bytes_step"]["grads"]["bwd"]
        if got != dp_term:
            bad.append(f"rank {r} dp term: got {got} want {dp_term}")
    return bad


def main():
    binary, work, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tg.BIN = binary
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    models = {}
    kinds = [(tied, "") for tied in (False, True)]
    kinds += sorted({(c[2], c[3]) for c in CASES[N] if len(c) > 3})
    for tied, kind in kinds:
        name = ("tied" if tied else "untied") + kind
        config = tg.config
        if kind == "kvrep":  # fewer KV heads than ranks
            tg.config = lambda D, t: dict(config(D, t), num_key_value_heads=max(D // 2, 1))
        try:
            cfgp, wp, tp = tg.make(work, name, N, tied, False, seed=20 + tied)
        finally:
            tg.config = config
        rng = np.random.default_rng(30 + tied)
        cfg = json.load(open(cfgp))
        ids = rng.integers(0, cfg["vocab_size"], (N, 6 * N + 1))  # B = N: every dp degree fits
        labels = ids.copy()
        labels[rng.random(ids.shape) < 0.15] = -100
        tokens = {"input_ids": ids, "labels": labels}
        if kind == PK:  # a document's first token is not a target (the boundary prediction)
            tokens["position_ids"] = packed_positions(rng, *ids.shape)
            labels[:, 1:][tokens["position_ids"][:, 1:] == 0] = -100
        st.save(tp, tokens)
        ref = tg.grad(cfgp, wp, tp, os.path.join(work, name + ".ref.safetensors"))
        ref16 = tg.grad(cfgp, wp, tp, os.path.join(work, name + ".ref16.safetensors"), None,
                        ["--dtype", "bf16"])
        models[tied, kind] = (cfgp, wp, tp, cfg, ids, ref, ref16)
    fails = []
    for k, (layout, flags, tied, *kind) in enumerate(CASES[N]):
        cfgp, wp, tp, cfg, ids, ref32, ref16 = models[tied, kind[0] if kind else ""]
        bf16 = "bf16" in flags
        ref = ref16 if bf16 else ref32
        out = os.path.join(work, f"case{k}.safetensors")
        cmd = [binary, "grad", "--config", cfgp, "--weights", wp, "--tokens", tp, "--out", out,
               "--layout", layout, "--report", out + ".json"] + flags
        run(mpi(N, cmd), timeout=300)
        le, ge, where = tg.compare(ref, st.load(out))
        pos = st.load(tp)["position_ids"] if kind and kind[0] == PK else None
        if "documents" in flags:  # the case can fail only if some replica's deal is not zigzag's
            a = axes(layout)
            D, dp = N // a["dp"] // max(a["tp"], 1), a["dp"]
            rows = pos.shape[0] // dp
            zig = [j for q in range(D) for j in (q, 2 * D - 1 - q)]
            deals = [chunk_owners(pos[r * rows:(r + 1) * rows, :-1], D) for r in range(dp)]
            if all(d == zig for d in deals):
                fails.append(f"{layout} {flags}: every replica's batch is dealt as zigzag (cannot fail)")
        bad = check_bytes(json.load(open(out + ".json")), cfg, layout, flags, ids, pos)
        tol_l, tol_g = (1e-4, 1e-2) if bf16 else (1e-6, 1e-5)
        ok = le <= tol_l and ge <= tol_g and not bad
        desc = f"{layout} {' '.join(flags)}{' tied' if tied else ''}{' ' + kind[0] if kind else ''}"
        print(f"{desc:58s} loss rel {le:.1e}  worst grad rel {ge:.1e} ({where}); bytes == §7: {not bad}"
              f"  {'ok' if ok else 'FAIL'}")
        if bad:
            print("\n".join(bad[:6]))
        if not ok:
            fails.append(desc)
        # overlap off and a rerun: bit-identical
        if k == 0 or (bf16 and k == len(CASES[N]) - 1) or (flags in (A2A, P2P) and "dp" not in layout):
            a = open(out, "rb").read()
            same = []
            for extra in (["--no-overlap"], []):
                o2 = out + ".again"
                run(mpi(N, cmd[:cmd.index("--out") + 1] + [o2] + cmd[cmd.index("--out") + 2:] + extra))
                same.append(a == open(o2, "rb").read())
            print(f"{layout}: --no-overlap bitwise {same[0]}, rerun bitwise {same[1]}")
            if not all(same):
                fails.append(layout + " determinism")
    if fails:
        print("FAILED: " + "; ".join(fails))
        sys.exit(1)


if __name__ == "__main__":
    main()
