"""PyTorch's own bf16 training step of an HF Llama config, timed in the same GPU session as
origami's (tools/gpu_check.sh): fp32 parameters under torch.autocast(bfloat16) (PyTorch's usual
mixed precision), F.scaled_dot_product_attention (causal), forward + backward + AdamW on one
sequence of S random tokens; median step time of --reps steps after warm-ups (CUDA events) and
tokens/s.
usage: python3 tools/gpu_torch_step.py CONFIG --seq S [--seq S ...] [--json FILE] [--reps N]
       [--cpu]   (a smoke test of this script on the CPU, small configs only)"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_torch_ref import timed_median_ms  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--seq", type=int, action="append", required=True)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpu", action="store_true")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"SKIPPED: no torch ({e})")
        return 77
    if not a.cpu and not torch.cuda.is_available():
        print("SKIPPED: torch sees no CUDA device")
        return 77
    c = json.load(open(a.config))
    h, I, nh, nkv = (c["hidden_size"], c["intermediate_size"], c["num_attention_heads"],
                     c["num_key_value_heads"])
    L, V, d, eps = c["num_hidden_layers"], c["vocab_size"], h // nh, c.get("rms_norm_eps", 1e-6)
    dev = torch.device("cpu" if a.cpu else "cuda")
    torch.manual_seed(0)

    def W(*s):
        return torch.nn.Parameter(0.02 * torch.randn(*s, device=dev))

    P = dict(embed=W(V, h), head=W(V, h), norm=torch.nn.Parameter(torch.ones(h, device=dev)))
    layers = [dict(wq=W(nh * d, h), wk=W(nkv * d, h), wv=W(nkv * d, h), wo=W(h, nh * d),
                   wg=W(I, h), wu=W(I, h), wd=W(h, I),
                   n1=torch.nn.Parameter(torch.ones(h, device=dev)),
                   n2=torch.nn.Parameter(torch.ones(h, device=dev))) for _ in range(L)]
    params = list(P.values()) + [p for l in layers for p in l.values()]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def rms(x, w):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype) * w

    def rope(x, S):
        inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, d, 2, device=dev) / d))
        f = torch.outer(torch.arange(S, device=dev).float(), inv)
        cos, sin = torch.cat([f.cos(), f.cos()], -1).to(x.dtype), torch.cat([f.sin(), f.sin()], -1).to(x.dtype)
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def sdpa(q, k, v, S):  # PyTorch >= 2.0's fused attention; the math where it is missing
        if hasattr(F, "scaled_dot_product_attention"):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        s = (q @ k.transpose(-1, -2)) / d ** 0.5
        mask = torch.ones(S, S, dtype=torch.bool, device=dev).tril()
        return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v

    def step(ids, tgt, S):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            x = P["embed"][ids]
            for l in layers:
                y = rms(x, l["n1"])
                q = (y @ l["wq"].T).view(1, S, nh, d).transpose(1, 2)
                k = (y @ l["wk"].T).view(1, S, nkv, d).transpose(1, 2)
                v = (y @ l["wv"].T).view(1, S, nkv, d).transpose(1, 2)
                if nkv != nh:
                    k = k.repeat_interleave(nh // nkv, 1)
                    v = v.repeat_interleave(nh // nkv, 1)
                o = sdpa(rope(q, S), rope(k, S), v, S)
                x = x + o.transpose(1, 2).reshape(1, S, h) @ l["wo"].T
                y = rms(x, l["n2"])
                x = x + (F.silu(y @ l["wg"].T) * (y @ l["wu"].T)) @ l["wd"].T
            z = rms(x, P["norm"]) @ P["head"].T
            loss = F.cross_entropy(z.float().view(-1, V), tgt.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rows = []
    for S in a.seq:
        ids = torch.randint(0, V, (1, S), device=dev)
        tgt = torch.randint(0, V, (1, S), device=dev)
        try:
            t = timed_median_ms(torch, lambda: step(ids, tgt, S), a.reps, cpu=a.cpu) / 1e3
            rows.append(dict(seq=S, step_time_median_s=t, tokens_per_s=S / t,
                             peak_bytes=0 if a.cpu else torch.cuda.max_memory_allocated()))
        except torch.cuda.OutOfMemoryError as e:
            rows.append(dict(seq=S, error=f"out of memory: {e}"))
        print(rows[-1], flush=True)
        if not a.cpu:
            torch.cuda.reset_peak_memory_stats()
    info = dict(torch=torch.__version__, config=a.config, rows=rows,
                device="cpu" if a.cpu else torch.cuda.get_device_name())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
