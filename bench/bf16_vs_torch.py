#!/usr/bin/python3
"""A few optimizer steps of origami in bf16 against PyTorch's own bf16 on the same weights and
tokens (issue 18). Each step: the gradients of one fixed batch from `origami grad --dtype D`
(D = fp32, bf16) or from PyTorch (float64, and torch.autocast("cpu", bfloat16) with fp32 weights);
then the same AdamW update (numpy, float64 state) for all four. Prints the loss of every step per
variant, and each variant's weights after the last step against the float64 trajectory's (norm-wise
relative over all parameters). Usage: bench/bf16_vs_torch.py [ORIGAMI_BINARY] [--steps N]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "py"))
import st  # noqa: E402
from llama_ref import forward_loss, param_shapes  # noqa: E402

CFG = dict(model_type="llama", hidden_act="silu", hidden_size=128, intermediate_size=352,
           num_attention_heads=8, num_key_value_heads=4, num_hidden_layers=4, vocab_size=512,
           max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
B, S = 4, 128


def adamw(W, G, m, v, t, lr=1e-3, b1=0.9, b2=0.95, eps=1e-8, wd=0.1):
    for n in W:
        g = G[n].astype(np.float64)
        m[n] = b1 * m[n] + (1 - b1) * g
        v[n] = b2 * v[n] + (1 - b2) * g * g
        if W[n].ndim == 2:
            W[n] *= 1 - lr * wd
        W[n] -= lr / (1 - b1 ** t) * m[n] / (np.sqrt(v[n] / (1 - b2 ** t)) + eps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default=os.path.join(HERE, "..", "build", "origami"))
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bf16_vs_torch.")
    cfgp, tokp = os.path.join(work, "c.json"), os.path.join(work, "t.safetensors")
    json.dump(CFG, open(cfgp, "w"))
    gen = torch.Generator().manual_seed(7)
    W0 = {}
    for n, s in param_shapes(CFG).items():
        W0[n] = (1.0 + 0.1 * torch.randn(s, generator=gen, dtype=torch.float64) if len(s) == 1 else
                 torch.randn(s, generator=gen, dtype=torch.float64) / np.sqrt(s[1])).numpy()
    ids = torch.randint(0, CFG["vocab_size"], (B, S + 1), generator=gen)
    st.save(tokp, {"input_ids": ids.numpy().astype(np.int64), "labels": ids.numpy().astype(np.int64)})

    def origami(dtype):
        def step(W):
            wp, out = os.path.join(work, "w.safetensors"), os.path.join(work, "g.safetensors")
            st.save(wp, {n: w.astype(np.float32) for n, w in W.items()})
            subprocess.run([a.binary, "grad", "--config", cfgp, "--weights", wp, "--tokens", tokp,
                            "--out", out, "--dtype", dtype], check=True)
            g = st.load(out)
            return float(g.pop("loss")[0]), g
        return step

    def torch_step(autocast):
        def step(W):
            P = {n: torch.tensor(w, dtype=torch.float32 if autocast else torch.float64, requires_grad=True)
                 for n, w in W.items()}
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = forward_loss(CFG, P, ids, ids)
            loss.backward()
            return loss.item(), {n: p.grad.double().numpy() for n, p in P.items()}
        return step

    variants = {"torch fp64": torch_step(False), "origami fp32": origami("fp32"),
                "origami bf16": origami("bf16"), "torch autocast bf16": torch_step(True)}
    losses, final = {}, {}
    for name, step in variants.items():
        W = {n: w.astype(np.float32).astype(np.float64) for n, w in W0.items()}  # the same start
        m = {n: np.zeros_like(w) for n, w in W.items()}
        v = {n: np.zeros_like(w) for n, w in W.items()}
        losses[name] = []
        for t in range(1, a.steps + 1):
            loss, G = step(W)
            losses[name].append(loss)
            adamw(W, G, m, v, t)
        final[name] = W
    ref = final["torch fp64"]
    num = lambda X: np.sqrt(sum(np.sum((X[n] - ref[n]) ** 2) for n in ref))  # noqa: E731
    den = np.sqrt(sum(np.sum(ref[n] ** 2) for n in ref))
    print(f"config h={CFG['hidden_size']} L={CFG['num_hidden_layers']} V={CFG['vocab_size']}, "
          f"B={B} S={S}, {a.steps} AdamW steps (lr 1e-3) on one fixed batch\n")
    print("| step | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for t in range(a.steps):
        print(f"| {t + 1} | " + " | ".join(f"{losses[n][t]:.6f}" for n in variants) + " |")
    print("| weights after the last step vs torch fp64 (rel) | "
          + " | ".join(f"{num(final[n]) / den:.2e}" for n in variants) + " |")


if __name__ == "__main__":
    main()
