"""The whole model against PyTorch float64: `origami grad` on the same safetensors weights and
tokens must give the loss and every gradient to <= 1e-5 norm-wise relative per tensor.

The same cases under --dtype bf16 (bf16 weights and activations, fp32 accumulation, statistics and
gradients): the loss within 2e-3 relative and every gradient within 6e-2 norm-wise relative of the
float64 oracle; the worst gradient error of a case no more than 1.5x that of PyTorch's own bf16
(torch.autocast("cpu", bfloat16) on the same fp32 weights and tokens, measured here: bf16's
rounding of activations is what both pay); and above 1e-3 — fp32's errors are ~1e-6, so a bf16 run
that silently computed in fp32 fails.
Usage: test_oracle.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402
from llama_ref import forward_loss, param_shapes  # noqa: E402

TOL = 1e-5
BF16_LOSS, BF16_GRAD, BF16_VS_TORCH, BF16_ABOVE = 2e-3, 6e-2, 1.5, 1e-3
CASES = [
    # name, config overrides, B, S, recompute[, packed documents: lengths per sequence]
    ("gqa_untied", dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                        num_hidden_layers=2, vocab_size=61, tie_word_embeddings=False), 2, 24, "none"),
    ("mha_tied", dict(hidden_size=32, intermediate_size=40, num_attention_heads=2, num_key_value_heads=2,
                      num_hidden_layers=2, vocab_size=50, tie_word_embeddings=True), 2, 17, "none"),
    ("mqa_long_tiles_recompute", dict(hidden_size=48, intermediate_size=64, num_attention_heads=4,
                                      num_key_value_heads=1, num_hidden_layers=3, vocab_size=40,
                                      tie_word_embeddings=False, rope_theta=500.0), 1, 150, "full"),
    # packed documents (position_ids, block-diagonal causal mask): one-token documents, documents
    # crossing the kernels' 64-row tiles, a tile wholly before a query tile's document (skipped)
    ("packed_gqa", dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                        num_hidden_layers=2, vocab_size=61, tie_word_embeddings=False), 2, 24, "none",
     [[1, 10, 3, 1, 10], [(12, 40), 13]]),  # row 2: a document longer than S, continued from 40
    ("packed_mqa_tiles_recompute", dict(hidden_size=48, intermediate_size=64, num_attention_heads=4,
                                        num_key_value_heads=1, num_hidden_layers=3, vocab_size=40,
                                        tie_word_embeddings=True, rope_theta=500.0), 2, 150, "full",
     [[1, 66, 1, 70, 13], [130, 2, 1, 18]]),
]


def positions_of(docs):
    """position_ids [B, S+1] of documents of the given lengths (each row's lengths sum to S+1); an
    entry (n, p0) is the continuation of a document longer than S, its positions from p0."""
    def pos(d):
        n, p0 = d if isinstance(d, tuple) else (d, 0)
        return range(p0, p0 + n)
    return torch.tensor([[p for d in row for p in pos(d)] for row in docs], dtype=torch.int64)


def make_case(work, name, over, B, S, seed, docs=None):
    gen = torch.Generator().manual_seed(seed)
    cfg = dict(model_type="llama", hidden_act="silu", max_position_embeddings=256, rms_norm_eps=1e-5,
               rope_theta=10000.0)
    cfg.update(over)
    V = cfg["vocab_size"]
    shapes = param_shapes(cfg)
    W = {}
    for n, s in shapes.items():
        if len(s) == 1:  # norm weights around 1, not exactly 1, so their gradients matter
            W[n] = (1.0 + 0.1 * torch.randn(s, generator=gen, dtype=torch.float64)).float().numpy()
        else:
            W[n] = (torch.randn(s, generator=gen, dtype=torch.float64) / np.sqrt(s[1])).float().numpy()
    ids = torch.randint(0, V, (B, S + 1), generator=gen)
    labels = ids.clone()
    labels[torch.rand(B, S + 1, generator=gen) < 0.2] = -100
    paths = {k: os.path.join(work, f"{name}.{k}") for k in ("config.json", "weights.safetensors",
                                                            "tokens.safetensors", "grads.safetensors")}
    with open(paths["config.json"], "w") as f:
        json.dump(cfg, f)
    st.save(paths["weights.safetensors"], W)
    tokens = {"input_ids": ids.numpy().astype(np.int64), "labels": labels.numpy().astype(np.int32)}
    pos = None
    if docs:
        pos = positions_of(docs)
        labels[:, 1:][pos[:, 1:] == 0] = -100  # the prediction across a boundary does not count
        tokens.update(labels=labels.numpy().astype(np.int32), position_ids=pos.numpy())
    st.save(paths["tokens.safetensors"], tokens)
    return cfg, W, ids, labels, paths, pos


def run_grad(binary, cfgp, wp, tokens, out, extra=()):
    subprocess.run([binary, "grad", "--config", cfgp, "--weights", wp, "--tokens", tokens, "--out", out]
                   + list(extra), check=True, capture_output=True)
    return st.load(out)


def documents_one_at_a_time(binary, work, name, paths, ids, labels, pos, packed_loss):
    """A packed batch's CE sum equals the sum of its documents' CE sums, each document run alone
    as its own sequence (no position_ids) — so a kernel that ignored the document mask (or RoPE
    positions that did not restart) fails here, independently of the PyTorch model."""
    n_packed = int((labels[:, 1:] != -100).sum())
    total, docs = 0.0, 0
    for b in range(ids.shape[0]):
        starts = [p for p in range(ids.shape[1]) if p == 0 or pos[b, p] == 0] + [ids.shape[1]]
        for s0, s1 in zip(starts[:-1], starts[1:]):
            lab = labels[b:b + 1, s0:s1]
            n = int((lab[:, 1:] != -100).sum())
            if s1 - s0 < 2 or n == 0:
                continue  # no target in this document
            tp = os.path.join(work, f"{name}.doc{b}_{s0}.safetensors")
            # its own positions (a continuation of a document longer than S keeps them)
            st.save(tp, {"input_ids": ids[b:b + 1, s0:s1].numpy(), "labels": lab.numpy(),
                         "position_ids": pos[b:b + 1, s0:s1].numpy()})
            got = run_grad(binary, paths["config.json"], paths["weights.safetensors"], tp, tp + ".grads")
            total += float(got["loss"][0]) * n
            docs += 1
    packed_sum = packed_loss * n_packed
    e = abs(packed_sum - total) / abs(total)
    print(f"{name:28s} packed CE sum {packed_sum:.6f} = sum over {docs} documents run alone "
          f"{total:.6f}: rel {e:.1e}")
    return e


def relerr(a, ref):
    nref = np.linalg.norm(ref)
    if nref == 0:
        return float(np.linalg.norm(a))
    return float(np.linalg.norm(a - ref) / nref)


def torch_bf16_worst(cfg, W, ids, labels, ref, pos=None):
    """Worst per-tensor gradient error of PyTorch's autocast bf16 against the float64 grads."""
    P = {n: torch.tensor(w, dtype=torch.float32, requires_grad=True) for n, w in W.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = forward_loss(cfg, P, ids, labels, pos)
    loss.backward()
    return max(relerr(P[n].grad.double().numpy(), ref[n]) for n in P)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    worst, failures = 0.0, []
    worst_bf16 = 0.0
    for i, (name, over, B, S, rc, *docs) in enumerate(CASES):
        cfg, W, ids, labels, paths, pos = make_case(work, name, over, B, S, seed=1234 + i,
                                                    docs=docs[0] if docs else None)
        P = {n: torch.tensor(w, dtype=torch.float64, requires_grad=True) for n, w in W.items()}
        loss = forward_loss(cfg, P, ids, labels, pos)
        if pos is not None:
            # the mask matters: without it the oracle's loss is another number
            unmasked = forward_loss(cfg, P, ids, labels).item()
            print(f"{name:28s} oracle loss packed {loss.item():.6f}, same tokens unmasked {unmasked:.6f}")
            if abs(unmasked - loss.item()) < 1e-4 * abs(loss.item()):
                failures.append(f"{name}: the document mask does not change the oracle's loss")
        loss.backward()
        ref = {n: p.grad.numpy() for n, p in P.items()}
        torch_worst = torch_bf16_worst(cfg, W, ids, labels, ref, pos)
        for dtype in ("fp32", "bf16"):
            subprocess.run([binary, "grad", "--config", paths["config.json"], "--weights",
                            paths["weights.safetensors"], "--tokens", paths["tokens.safetensors"],
                            "--out", paths["grads.safetensors"], "--recompute", rc, "--dtype", dtype],
                           check=True)
            got = st.load(paths["grads.safetensors"])
            expect_names = set(W) | {"loss"}
            if set(got) != expect_names:
                failures.append(f"{name} {dtype}: tensor names differ: {sorted(set(got) ^ expect_names)}")
            e = abs(float(got["loss"][0]) - loss.item()) / abs(loss.item())
            print(f"{name:28s} {dtype} loss  {float(got['loss'][0]):.8f} ref {loss.item():.8f} rel {e:.2e}")
            if e > (TOL if dtype == "fp32" else BF16_LOSS):
                failures.append(f"{name} {dtype}: loss rel err {e:.2e}")
            case_worst = 0.0
            for n in P:
                r = relerr(got[n].astype(np.float64), ref[n])
                case_worst = max(case_worst, r)
                if r > (TOL if dtype == "fp32" else BF16_GRAD):
                    failures.append(f"{name} {dtype}: {n} rel err {r:.2e}")
            if dtype == "fp32":
                print(f"{name:28s} fp32 worst gradient rel err {case_worst:.2e}")
                worst = max(worst, e, case_worst)
                if pos is not None:
                    d = documents_one_at_a_time(binary, work, name, paths, ids, labels, pos,
                                                float(got["loss"][0]))
                    if d > TOL:
                        failures.append(f"{name}: packed CE sum differs from its documents' by {d:.1e}")
                continue
            print(f"{name:28s} bf16 worst gradient rel err {case_worst:.2e} "
                  f"(PyTorch autocast bf16: {torch_worst:.2e})")
            worst_bf16 = max(worst_bf16, case_worst)
            if case_worst > BF16_VS_TORCH * torch_worst:
                failures.append(f"{name} bf16: worst gradient error {case_worst:.2e} is over "
                                f"{BF16_VS_TORCH}x PyTorch bf16's {torch_worst:.2e}")
            if case_worst < BF16_ABOVE:
                failures.append(f"{name} bf16: worst gradient error {case_worst:.2e} is below "
                                f"{BF16_ABOVE:.0e}: is --dtype bf16 computing in fp32?")
    # HF's usual checkpoints are bf16 (torch_dtype bfloat16): the same weights written as BF16 give
    # the gradients of their fp32 widening, bit for bit, in fp32 and in bf16 runs
    cfg, W, ids, labels, paths, _ = make_case(work, "bf16_file", CASES[0][1], 2, 24, seed=77)
    w16, w32 = os.path.join(work, "bf16_file.w16.safetensors"), os.path.join(work, "bf16_file.w32.safetensors")
    st.save(w16, {n: st.BF16(w) for n, w in W.items()})
    st.save(w32, {n: st.BF16(w).f32 for n, w in W.items()})
    for dtype in ("fp32", "bf16"):
        outs = []
        for wp in (w16, w32):
            out = wp + "." + dtype + ".grads"
            subprocess.run([binary, "grad", "--config", paths["config.json"], "--weights", wp, "--tokens",
                            paths["tokens.safetensors"], "--out", out, "--dtype", dtype], check=True)
            outs.append(open(out, "rb").read())
        ok = outs[0] == outs[1]
        print(f"bf16_file {dtype}: a BF16 weight file equals its fp32 widening bitwise: {ok}")
        if not ok:
            failures.append(f"BF16 weights file under {dtype}")
    # HF's sharded layout: the bf16 weights split over model-0000K-of-00002.safetensors with a
    # model.safetensors.index.json; --weights the index or its directory gives the one-file result
    shard_dir = os.path.join(work, "bf16_sharded")
    os.makedirs(shard_dir, exist_ok=True)
    names = list(W)
    parts = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for k, part in enumerate(parts):
        fname = f"model-{k + 1:05d}-of-{len(parts):05d}.safetensors"
        st.save(os.path.join(shard_dir, fname), {n: st.BF16(W[n]) for n in part})
        weight_map.update({n: fname for n in part})
    index = os.path.join(shard_dir, "model.safetensors.index.json")
    json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, open(index, "w"))
    one = open(w16 + ".bf16.grads", "rb").read()
    for src in (index, shard_dir):
        out = os.path.join(work, "sharded.grads")
        subprocess.run([binary, "grad", "--config", paths["config.json"], "--weights", src, "--tokens",
                        paths["tokens.safetensors"], "--out", out, "--dtype", "bf16"], check=True)
        ok = open(out, "rb").read() == one
        print(f"sharded checkpoint ({os.path.basename(src)}): equal to the one-file run bitwise: {ok}")
        if not ok:
            failures.append(f"sharded checkpoint via {src}")
    # an index that puts a tensor in the wrong file is refused, naming both
    bad = dict(weight_map)
    first = names[0]
    bad[first] = f"model-00002-of-{len(parts):05d}.safetensors"
    bad_index = os.path.join(shard_dir, "bad.index.json")
    json.dump({"weight_map": bad}, open(bad_index, "w"))
    r = subprocess.run([binary, "grad", "--config", paths["config.json"], "--weights", bad_index, "--tokens",
                        paths["tokens.safetensors"], "--out", os.path.join(work, "x.grads")],
                       capture_output=True, text=True)
    want = f"weight_map puts '{first}' in model-00002-of-00002.safetensors, which does not hold it"
    if r.returncode == 0 or want not in r.stderr:
        failures.append(f"bad index: exit {r.returncode}, stderr {r.stderr!r}")
    else:
        print("a wrong weight_map is refused:", r.stderr.strip().splitlines()[-1])
    # N = 0 (every label ignored): loss and gradients exactly 0, a warning, no NaN
    cfg, W, ids, labels, paths, _ = make_case(work, "all_ignored", CASES[0][1], 1, 8, seed=99)
    st.save(paths["tokens.safetensors"], {"input_ids": ids.numpy(), "labels": np.full(ids.shape, -100)})
    r = subprocess.run([binary, "grad", "--config", paths["config.json"], "--weights", paths["weights.safetensors"],
                        "--tokens", paths["tokens.safetensors"], "--out", paths["grads.safetensors"]],
                       capture_output=True, text=True)
    got = st.load(paths["grads.safetensors"]) if r.returncode == 0 else {}
    if r.returncode != 0 or "no non-ignored targets" not in r.stderr or \
            any(np.any(v != 0) for v in got.values()) or not got:
        failures.append(f"all-ignored batch: exit {r.returncode}, stderr {r.stderr!r}")
    else:
        print("all_ignored                  loss 0 and all gradients 0, warning printed")
    print(f"worst relative error over all cases: fp32 {worst:.2e} (tolerance {TOL:.0e}), "
          f"bf16 {worst_bf16:.2e} (tolerance {BF16_GRAD:.0e})")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
