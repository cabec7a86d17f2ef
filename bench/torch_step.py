"""The same training step as bench_step (forward + backward + AdamW, synthetic tokens, fp32) in
PyTorch on CPU, for reference: same config, S, micro-batch and thread count. The model is
tests/py/llama_ref.py run in float32 (plain attention: it materialises S x S scores, as PyTorch
1.13 in Debian 12 has no fused CPU attention). Prints one JSON line.
With DTYPE bf16 the forward runs under torch.autocast("cpu", dtype=torch.bfloat16) (fp32 weights
and optimizer, PyTorch's own mixed precision).
usage: torch_step.py CONFIG SEQ [MICRO_BATCH] [REPS] [THREADS] [DTYPE]"""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py"))
from llama_ref import forward_loss, param_shapes  # noqa: E402


def main():
    cfg = json.load(open(sys.argv[1]))
    S = int(sys.argv[2])
    B = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else os.cpu_count()
    bf16 = len(sys.argv) > 6 and sys.argv[6] == "bf16"
    torch.set_num_threads(threads)
    cfg["tie_word_embeddings"] = False
    V = cfg["vocab_size"]
    shapes = param_shapes(cfg)
    P = {n: (torch.randn(s) * 0.02 if len(s) == 2 else torch.ones(s)).requires_grad_() for n, s in shapes.items()}
    opt = torch.optim.AdamW(P.values(), lr=1e-4)
    ids = torch.randint(0, V, (B, S + 1))

    def step():
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward_loss(cfg, P, ids, ids)
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    t = statistics.median(times)
    print(json.dumps({"engine": "pytorch", "torch": torch.__version__, "dtype": "bf16" if bf16 else "fp32",
                      "seq": S, "micro_batch": B,
                      "threads": torch.get_num_threads(), "step_s": t, "tokens_per_s": B * S / t}))


if __name__ == "__main__":
    main()
