"""The whole model against PyTorch float64: `origami grad` on the same safetensors weights and
tokens must give the loss and every gradient to <= 1e-5 norm-wise relative per tensor.
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
CASES = [
    # name, config overrides, B, S, recompute
    ("gqa_untied", dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                        num_hidden_layers=2, vocab_size=61, tie_word_embeddings=False), 2, 24, "none"),
    ("mha_tied", dict(hidden_size=32, intermediate_size=40, num_attention_heads=2, num_key_value_heads=2,
                      num_hidden_layers=2, vocab_size=50, tie_word_embeddings=True), 2, 17, "none"),
    ("mqa_long_tiles_recompute", dict(hidden_size=48, intermediate_size=64, num_attention_heads=4,
                                      num_key_value_heads=1, num_hidden_layers=3, vocab_size=40,
                                      tie_word_embeddings=False, rope_theta=500.0), 1, 150, "full"),
]


def make_case(work, name, over, B, S, seed):
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
    st.save(paths["tokens.safetensors"], {"input_ids": ids.numpy().astype(np.int64),
                                          "labels": labels.numpy().astype(np.int32)})
    return cfg, W, ids, labels, paths


def relerr(a, ref):
    nref = np.linalg.norm(ref)
    if nref == 0:
        return float(np.linalg.norm(a))
    return float(np.linalg.norm(a - ref) / nref)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    worst, failures = 0.0, []
    for i, (name, over, B, S, rc) in enumerate(CASES):
        cfg, W, ids, labels, paths = make_case(work, name, over, B, S, seed=1234 + i)
        subprocess.run([binary, "grad", "--config", paths["config.json"], "--weights", paths["weights.safetensors"],
                        "--tokens", paths["tokens.safetensors"], "--out", paths["grads.safetensors"],
                        "--recompute", rc], check=True)
        got = st.load(paths["grads.safetensors"])
        P = {n: torch.tensor(w, dtype=torch.float64, requires_grad=True) for n, w in W.items()}
        loss = forward_loss(cfg, P, ids, labels)
        loss.backward()
        expect_names = set(W) | {"loss"}
        if set(got) != expect_names:
            failures.append(f"{name}: tensor names differ: {sorted(set(got) ^ expect_names)}")
        e = abs(float(got["loss"][0]) - loss.item()) / abs(loss.item())
        print(f"{name:28s} loss  {float(got['loss'][0]):.8f} ref {loss.item():.8f} rel {e:.2e}")
        worst = max(worst, e)
        if e > TOL:
            failures.append(f"{name}: loss rel err {e:.2e}")
        case_worst = 0.0
        for n, p in P.items():
            r = relerr(got[n].astype(np.float64), p.grad.numpy())
            case_worst = max(case_worst, r)
            if r > TOL:
                failures.append(f"{name}: {n} rel err {r:.2e}")
        print(f"{name:28s} worst gradient rel err {case_worst:.2e}")
        worst = max(worst, case_worst)
    # N = 0 (every label ignored): loss and gradients exactly 0, a warning, no NaN
    cfg, W, ids, labels, paths = make_case(work, "all_ignored", CASES[0][1], 1, 8, seed=99)
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
    print(f"worst relative error over all cases: {worst:.2e} (tolerance {TOL:.0e})")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
