"""`origami grad --layout tsp=D` under mpirun equals the single-rank file: loss <= 1e-6 relative,
every gradient <= 1e-5 norm-wise relative per tensor. One invocation per world size D loops over
the cases: GQA, B = 2, tied and untied, head buckets, --recompute none/full, --keep-attn-weights,
--fused-mlp-recompute (also bitwise equal to the unfused recompute),
labels masked differently on different ranks (rank 0's targets all ignored), overlap on/off
(bit-identical) and reruns (bit-identical).
Under --dtype bf16 (cases bf16_*): the layout against the single rank in bf16, loss <= 3e-4 and
every gradient <= 1e-2 relative. The residual stream and every sum of partial products are fp32,
so the layouts differ only in fp32 summation order, not in where bf16 rounds: with the same
summation structure they agree to ~1e-7 (bf16_untied); with attention buckets W_o's partial
products are summed in another order, and the last-bit differences flip a few bf16 roundings of
the next layer's normalised input, which this test's large weights amplify to ~4e-3 in the
gradients (bf16 against fp32 is ~3e-2 on the same models). Also overlap on/off and reruns
bitwise, and the bytes with bf16 elements where bf16 travels (weights, K/V forward, the vocabulary
ring's weights, embedding rows) and fp32 where gradients do (weight gradients, dK/dV).
It also checks the bytes every rank records per layer, phase and category against the formulas of
tsp-spec §7 (and, for the embedding, the bytes computed from the ids).
--mlp-transport biring and broadcast (tsp only): the same results and bytes per category, and
the bytes by the peer they came from: ring takes all of the MLP's weights and accumulators from
rank r-1, biring half from each neighbour (D > 2), broadcast none point-to-point (collectives).
The same checks run for FSDP+SP on one axis (AXIS = fsdp_sp): TSP's ownership map with whole layers
gathered, so the same results and the same bytes per phase (no kept packets there).
Usage: test_tsp_grad.py ORIGAMI_BINARY WORKDIR D [AXIS]"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402
from harness import mpi, run  # noqa: E402

AXIS = "tsp"


def config(D, tied):
    # n_kv = 2D (two KV heads per rank, so two buckets exist), g = 2, d = 16, V odd (padding)
    return dict(hidden_size=64 * D, intermediate_size=24 * D, num_attention_heads=4 * D,
                num_key_value_heads=2 * D, num_hidden_layers=2, vocab_size=61, max_position_embeddings=512,
                rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied)


def zigzag_positions(S, D, r):
    c = S // (2 * D)
    return list(range(r * c, (r + 1) * c)) + list(range((2 * D - 1 - r) * c, (2 * D - r) * c))


def make(work, name, D, tied, mask_rank0, seed):
    rng = np.random.default_rng(seed)
    cfg = config(D, tied)
    h = cfg["hidden_size"]
    with open(os.path.join(work, name + ".json"), "w") as f:
        json.dump(cfg, f)
    cfgp, wp, tp = (os.path.join(work, name + x) for x in (".json", ".w.safetensors", ".t.safetensors"))
    run([BIN, "init", "--config", cfgp, "--seed", str(seed), "--out", wp])
    W = st.load(wp)
    # larger-than-init weights so every path carries signal; norms perturbed around 1
    W = {n: (1 + 0.1 * rng.standard_normal(w.shape) if w.ndim == 1 else w / 0.02 / np.sqrt(w.shape[1]))
         .astype(np.float32) for n, w in W.items()}
    st.save(wp, W)
    B, S = 2, 6 * D
    ids = rng.integers(0, cfg["vocab_size"], (B, S + 1))
    labels = ids.copy()
    labels[rng.random((B, S + 1)) < 0.15] = -100
    if mask_rank0:  # every target held by rank 0 ignored; target s is labels[:, s + 1]
        for s in zigzag_positions(S, D, 0):
            labels[:, s + 1] = -100
    st.save(tp, {"input_ids": ids.astype(np.int64), "labels": labels.astype(np.int64)})
    return cfgp, wp, tp


def grad(cfgp, wp, tp, out, D=None, extra=()):
    cmd = [BIN, "grad", "--config", cfgp, "--weights", wp, "--tokens", tp, "--out", out] + list(extra)
    if D is not None:
        cmd = mpi(D, cmd + ["--layout", f"{AXIS}={D}", "--report", out + ".report.json"])
    run(cmd, timeout=300)
    return st.load(out)


def expected_bytes(cfg, D, r, ids, recompute_full, keep, fused=False, es=4, owners=None):
    """Per-rank bytes received, from tsp-spec §7: elements x 4, or under bf16 (es = 2) x 2 for what
    travels in bf16 (weights, K/V forward, embedding rows forward) and x 4 for gradients."""
    h, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    g = cfg["num_attention_heads"] // cfg["num_key_value_heads"]
    B, S = ids.shape[0], ids.shape[1] - 1
    f = (D - 1) / D
    Wa, Wm, K = (2 + 2 / g) * h * h, 3 * I * h, 2 * B * S * h / g
    Vp = -(-V // D) * D
    fwd = {"attn_weights": f * Wa, "mlp_weights": f * Wm, "kv": f * K}
    layer = {c: {"fwd": fwd.get(c, 0), "recompute": fwd.get(c, 0) if recompute_full else 0, "bwd": 0}
             for c in ("attn_weights", "mlp_weights", "kv", "grads", "embed_head", "acts", "other")}
    if fused:  # the recompute skips the MLP ring
        layer["mlp_weights"]["recompute"] = 0
    layer["attn_weights"]["bwd"] = 0 if keep else f * Wa
    layer["mlp_weights"]["bwd"] = f * Wm
    layer["kv"]["bwd"] = f * K * (es + 4) / es  # K/V re-gathered (es); dK/dV return in fp32
    layer["grads"]["bwd"] = (f * Wa + f * Wm) * 4 / es  # weight gradients: fp32
    layer = {c: {p: int(round(es * v)) for p, v in ph.items()} for c, ph in layer.items()}
    # the vocabulary ring: weights (es) forward; weights again and the fp32 accumulator backward
    head = {"fwd": int(round(es * f * Vp * h)), "bwd": int(round((es + 4) * f * Vp * h))}
    # embedding: ids all-gather + one row per distinct id needed from each other owner
    Vr = Vp // D
    def positions(q):  # zigzag, or the chunks --balance documents dealt (owners: 2D entries)
        if owners is None:
            return zigzag_positions(S, D, q)
        c = S // (2 * D)
        return [owners[2 * q + k] * c + i for k in (0, 1) for i in range(c)]
    toks = [ids[:, :-1][:, positions(q)].ravel() for q in range(D)]
    def rows(q, o):
        return len({int(t) for t in toks[q] if t // Vr == o})
    emb_fwd = (D - 1) * B * S // D * 4 + sum(rows(r, o) for o in range(D) if o != r) * h * es
    emb_bwd = sum(rows(q, r) for q in range(D) if q != r) * h * 4
    return layer, head, {"fwd": emb_fwd, "bwd": emb_bwd}


def check_bytes(report, cfg, D, ids, recompute_full, keep, fused=False, es=4):
    bad = []
    for rk in report["ranks"]:
        r = rk["rank"]
        layer, head, emb = expected_bytes(cfg, D, r, ids, recompute_full, keep, fused, es)
        for l, got in enumerate(rk["comm_bytes_per_layer"]):
            if got != layer:
                bad.append(f"rank {r} layer {l}: got {got} want {layer}")
        hg = rk["comm_bytes_head"]["embed_head"]
        if hg["fwd"] != head["fwd"] or hg["bwd"] != head["bwd"]:
            bad.append(f"rank {r} head: got {hg} want {head}")
        eg = rk["comm_bytes_embed"]["embed_head"]
        if eg["fwd"] != emb["fwd"] or eg["bwd"] != emb["bwd"]:
            bad.append(f"rank {r} embedding: got {eg} want {emb}")
    return bad


def check_links(report, cfg, D, transport):
    """The MLP's point-to-point bytes by the peer they came from: its weights (every pass) and its
    gradient accumulators (L·(D-1)/D·3·I·h·4 bytes; the attention's gradients return by
    collectives): ring all from r-1, biring half from r-1 and half from r+1, broadcast none (its
    gathers and reduce-scatters are collectives)."""
    bad = []
    L, I, h = cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["hidden_size"]
    for rk in report["ranks"]:
        r = rk["rank"]
        totals = {"mlp_weights": sum(rk["comm_bytes"]["mlp_weights"].values()),
                  "grads": L * (D - 1) * 3 * I * h * 4 // D}
        for cat, total in totals.items():
            got = {int(k): v for k, v in rk["comm_bytes_from_peer"].get(cat, {}).items()}
            prev, nxt = (r - 1) % D, (r + 1) % D
            if transport == "broadcast" or D == 1:
                want = {}
            elif transport == "ring" or prev == nxt:
                want = {prev: total}
            else:
                want = {prev: total // 2, nxt: total // 2}
            if got != want:
                bad.append(f"rank {r} {cat} ({transport}): by peer {got}, want {want}")
    return bad


def compare(ref, got):
    lr = abs(float(ref["loss"][0]))  # 0 when every target is ignored (D = 1, rank 0 masked)
    le = abs(float(got["loss"][0]) - float(ref["loss"][0])) / (lr if lr else 1.0)
    worst, name = 0.0, ""
    for n, g in ref.items():
        if n == "loss":
            continue
        nr = np.linalg.norm(g.astype(np.float64))
        e = np.linalg.norm(got[n].astype(np.float64) - g) / nr if nr else np.linalg.norm(got[n])
        if e > worst:
            worst, name = e, n
    if set(ref) != set(got):
        return le, float("inf"), f"names differ {set(ref) ^ set(got)}"
    return le, worst, name


def main():
    global BIN, AXIS
    BIN, work, D = sys.argv[1], sys.argv[2], int(sys.argv[3])
    AXIS = sys.argv[4] if len(sys.argv) > 4 else "tsp"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cases = [  # name, tied, mask rank 0, flags
        ("untied", False, False, ["--recompute", "none"]),
        ("tied_buckets_full", True, False, ["--recompute", "full", "--attn-buckets", "2"]),
        ("keep_weights", False, False, ["--recompute", "full", "--keep-attn-weights"]),
        ("rank0_all_ignored", True, True, ["--attn-buckets", "2"]),
        ("fused_mlp", False, False, ["--recompute", "full", "--fused-mlp-recompute", "--keep-attn-weights"]),
        ("bf16_untied", False, False, ["--recompute", "none", "--dtype", "bf16"]),
        ("bf16_tied_buckets_full", True, False, ["--recompute", "full", "--attn-buckets", "2", "--dtype",
                                                 "bf16"]),
    ]
    if AXIS == "tsp":
        cases += [
            ("biring", False, False, ["--recompute", "none", "--mlp-transport", "biring"]),
            ("biring_fused_bf16", True, False, ["--recompute", "full", "--fused-mlp-recompute",
                                                "--mlp-transport", "biring", "--dtype", "bf16"]),
            ("broadcast", False, False, ["--recompute", "full", "--mlp-transport", "broadcast"]),
        ]
    failures = []
    for i, (name, tied, mask0, flags) in enumerate(cases):
        if AXIS != "tsp":  # kept packets are a TSP option
            flags = [f for f in flags if f != "--keep-attn-weights"]
        cfgp, wp, tp = make(work, name, D, tied, mask0, seed=10 + i)
        bf16 = "bf16" in flags
        ref = grad(cfgp, wp, tp, os.path.join(work, name + ".ref.safetensors"), None,  # same precision
                   ["--dtype", "bf16"] if bf16 else [])
        got = grad(cfgp, wp, tp, os.path.join(work, name + ".tsp.safetensors"), D, flags)
        le, ge, where = compare(ref, got)
        # bf16 loss: 3e-4. The layouts round to bf16 where the single rank does, but the last-bit
        # fp32 differences of another summation order flip a few roundings (docstring); how many
        # depends on the machine's bf16 GEMM: biring_fused_bf16 at D = 3 reads 1.4e-4 on the AMD
        # Zen 5 machine (AVX512-BF16), at 29d1708 as since, under 1e-4 on the Intel one; its
        # weights and tokens under tsp=3 give the same 1.41e-4 with every transport and recompute
        # (ring or biring, none, full or fused), so it is this data's roundings, not a path. The
        # bf16 single rank's own loss is 2.2-2.5e-4 from float64 (test_oracle).
        tol_l, tol_g = (3e-4, 1e-2) if bf16 else (1e-6, 1e-5)
        ok = le <= tol_l and ge <= tol_g and all(np.all(np.isfinite(v)) for v in got.values())
        print(f"{AXIS}={D} {name:18s} loss rel {le:.1e}  worst grad rel {ge:.1e} ({where})  {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(name)
        with open(os.path.join(work, name + ".tsp.safetensors.report.json")) as f:
            rep = json.load(f)
        with open(cfgp) as f:
            cfg = json.load(f)
        ids = st.load(tp)["input_ids"]
        bad = check_bytes(rep, cfg, D, ids, "full" in flags, "--keep-attn-weights" in flags,
                          "--fused-mlp-recompute" in flags, 2 if bf16 else 4)
        print(f"{AXIS}={D} {name:18s} bytes per layer/phase/category/rank == tsp-spec §7: {not bad}")
        if bad:
            print("\n".join(bad[:6]))
            failures.append(name + " bytes")
        if AXIS == "tsp":
            bad = check_links(rep, cfg, D,
                              next((f for f in ("biring", "broadcast") if f in flags), "ring"))
            print(f"{AXIS}={D} {name:18s} MLP bytes by peer as the transport sends them: {not bad}")
            if bad:
                print("\n".join(bad[:4]))
                failures.append(name + " links")
        if name == "fused_mlp":  # the same gradients as recomputing the MLP in its own ring
            unfused = [x for x in flags if x != "--fused-mlp-recompute"]
            out = os.path.join(work, name + ".unfused.safetensors")
            grad(cfgp, wp, tp, out, D, unfused)
            same = open(out, "rb").read() == open(os.path.join(work, name + ".tsp.safetensors"), "rb").read()
            print(f"{AXIS}={D} --fused-mlp-recompute bitwise equal to the separate recompute ring: {same}")
            if not same:
                failures.append("fused bitwise")
        if name in ("keep_weights", "bf16_untied", "biring"):  # overlap off and a rerun: bit-identical
            a = open(os.path.join(work, name + ".tsp.safetensors"), "rb").read()
            grad(cfgp, wp, tp, os.path.join(work, name + ".noov.safetensors"), D, flags + ["--no-overlap"])
            grad(cfgp, wp, tp, os.path.join(work, name + ".rerun.safetensors"), D, flags)
            same_noov = a == open(os.path.join(work, name + ".noov.safetensors"), "rb").read()
            same_rerun = a == open(os.path.join(work, name + ".rerun.safetensors"), "rb").read()
            print(f"{AXIS}={D} overlap on == off bitwise: {same_noov}; rerun bitwise: {same_rerun}")
            if not (same_noov and same_rerun):
                failures.append("determinism")
    if failures:
        print("FAILED: " + ", ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
