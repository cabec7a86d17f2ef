"""`origami-cuda grad --device cuda` against `--device cpu` of the same binary, same weights and
tokens: the single-device model on a GPU (tensors in device memory, the kernels dispatched to the
CUDA ones), and TSP on two ranks sharing the one GPU under mpirun (the staged communicator), each
against the single-rank CPU run: loss within 1e-6 and every gradient within 1e-5 norm-wise
relative (fp32 on both sides), with GQA, B = 2, ignored labels, --recompute none and full; a rerun
on the device is bitwise equal. Exits 77 (Skipped) when the binary finds no CUDA device.
Usage: test_device_grad.py ORIGAMI_CUDA_BINARY WORKDIR"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
P = lambda n: os.path.join(WORK, n)  # noqa: E731


MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


def run(args, check=True, ranks=0):
    cmd = ([ "mpirun", "-np", str(ranks), "--bind-to", "none", "-x", "LD_LIBRARY_PATH"] if ranks else []) + [BIN] + args
    r = subprocess.run(cmd, capture_output=True, text=True, env=MPI_ENV)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


cfg = dict(hidden_size=128, intermediate_size=320, num_attention_heads=8, num_key_value_heads=2,
           num_hidden_layers=2, vocab_size=211, max_position_embeddings=256, rms_norm_eps=1e-5,
           rope_theta=10000.0, tie_word_embeddings=False)
json.dump(cfg, open(P("cfg.json"), "w"))
run(["init", "--config", P("cfg.json"), "--seed", "5", "--out", P("w.safetensors")])
rng = np.random.default_rng(5)
W = st.load(P("w.safetensors"))
W = {n: (1 + 0.1 * rng.standard_normal(w.shape) if w.ndim == 1 else w / 0.02 / np.sqrt(w.shape[1]))
     .astype(np.float32) for n, w in W.items()}
st.save(P("w.safetensors"), W)
ids = rng.integers(0, cfg["vocab_size"], (2, 97))
labels = ids.copy()
labels[rng.random(ids.shape) < 0.2] = -100
st.save(P("t.safetensors"), {"input_ids": ids.astype(np.int64), "labels": labels.astype(np.int64)})

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def grad(name, device, rc="none", layout=None):
    out = P(name + ".safetensors")
    ranks = int(layout.split("=")[1]) if layout else 0
    r = run(["grad", "--config", P("cfg.json"), "--weights", P("w.safetensors"), "--tokens",
             P("t.safetensors"), "--out", out, "--device", device, "--recompute", rc]
            + (["--layout", layout] if layout else []), check=False, ranks=ranks)
    if r.returncode != 0 and "no CUDA device is visible" in r.stderr:
        print("SKIPPED: " + r.stderr.strip())
        sys.exit(77)
    if r.returncode != 0:
        raise SystemExit(f"grad --device {device} failed:\n{r.stderr}")
    return st.load(out), open(out, "rb").read()


def compare(name, dev, cpu):
    lrel = abs(float(dev["loss"][0]) - float(cpu["loss"][0])) / abs(float(cpu["loss"][0]))
    check(lrel <= 1e-6, f"{name}: loss {float(dev['loss'][0]):.7f} vs cpu {float(cpu['loss'][0]):.7f} ({lrel:.1e})")
    worst = max((float(np.linalg.norm(dev[n] - cpu[n]) / np.linalg.norm(cpu[n])), n)
                for n in cpu if n != "loss")
    check(worst[0] <= 1e-5, f"{name}: worst gradient {worst[1]} {worst[0]:.1e} <= 1e-5")


for rc in ("none", "full"):
    cpu, _ = grad(f"cpu_{rc}", "cpu", rc)
    tsp, raw_tsp = grad(f"cuda_tsp2_{rc}", "cuda", rc, "tsp=2")
    compare(f"tsp=2 on one GPU (staged), --recompute {rc}", tsp, cpu)
    _, raw_tsp2 = grad(f"cuda_tsp2_{rc}_rerun", "cuda", rc, "tsp=2")
    check(raw_tsp == raw_tsp2, f"tsp=2 --recompute {rc}: a rerun on the device is bitwise equal")
    dev, raw = grad(f"cuda_{rc}", "cuda", rc)
    compare(f"single on the GPU, --recompute {rc}", dev, cpu)
    _, raw2 = grad(f"cuda_{rc}_rerun", "cuda", rc)
    check(raw == raw2, f"--recompute {rc}: a rerun on the device is bitwise equal")

if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print("device grad: all checks passed")
