"""Every layout on a device, against the CPU. grad: `grad --device DEVICE --layout L` for the
single-device model and each parallel layout (tsp, fsdp_sp, tp with and without sequence
parallelism, sp, tp+sp, dp, tsp+dp), with GQA, B = 2, ignored labels, --recompute none and full.
train: 3 steps of `train --device DEVICE --layout L` (held-out evaluation, a checkpoint at step 2
and at the end), and a resume on the device from step 2 bitwise equal to the uninterrupted run.
generate: greedy decoding under single, tsp, tp, sp, from weights and from the train checkpoint.

DEVICE cuda (origami-cuda on a GPU; the ranks share the one GPU through the staged communicator):
each run against the single-rank --device cpu run of the same binary, weights and tokens — loss
within 1e-6 and every gradient within 1e-5 norm-wise relative (fp32 on both sides) — and reruns on
the device bitwise equal; training's losses within 1e-5 and final weights within 1e-4 norm-wise
of the CPU's (AdamW's first steps are sign-like, so a tiny gradient may round the other way);
generated ids equal to the CPU's and their logits within 1e-5; the same over NCCL; under --dtype
bf16 every layout's loss within 1e-3 and gradients within 1e-2 of the CPU's bf16 single rank, and
generate's first logits within 1e-2. Exits 77 (Skipped) when the binary finds no CUDA device.

DEVICE emu (the emulated device, kernels/emu.h: tensor memory that faults on any host access, the
CPU kernels behind it): each run (grad, train's checkpoints and losses, generate's ids and
logits) bitwise equal to the same layout with --device cpu, so no engine
touches tensor memory except through the device seam, and the seam changes no arithmetic. Runs in
the default suite (no GPU needed); also covers the tied-embedding, --attn-buckets, --no-overlap,
--fused-mlp-recompute and --keep-attn-weights paths, and grad under --dtype bf16 for every layout
and generate under --dtype bf16 (the bf16 kernel table behind the seam).
Usage: test_device.py ORIGAMI_BINARY WORKDIR cuda|emu"""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402

BIN, WORK, DEVICE = sys.argv[1], sys.argv[2], sys.argv[3]
assert DEVICE in ("cuda", "emu"), DEVICE
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
P = lambda n: os.path.join(WORK, n)  # noqa: E731


MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


def ranks_of(layout):  # 0: one process without mpirun (its communicators are one-rank ones)
    n = math.prod(int(p.split("=")[1]) for p in layout.split(",")) if layout else 0
    return n if n > 1 else 0


def run(args, ranks=0, share_gpu=True):
    mpi = ["mpirun", "-np", str(ranks), "--bind-to", "none", "-x", "LD_LIBRARY_PATH"]
    if not ranks:
        cmd = [BIN] + args
    elif "nccl" in args and share_gpu:
        # NCCL refuses two ranks on one GPU unless each claims its own host (docs/gpu.md)
        cmd = mpi + ["-x", "ORIGAMI_NCCL_SHARE_GPU=1", "bash", "-c",
                     'NCCL_HOSTID=origami$OMPI_COMM_WORLD_RANK exec "$0" "$@"', BIN] + args
    else:
        cmd = mpi + [BIN] + args
    return subprocess.run(cmd, capture_output=True, text=True, env=MPI_ENV,
                          stdin=subprocess.DEVNULL)


def model(name, tied):
    cfg = dict(hidden_size=128, intermediate_size=320, num_attention_heads=8,
               num_key_value_heads=4, num_hidden_layers=2, vocab_size=211,
               max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
               tie_word_embeddings=tied)
    json.dump(cfg, open(P(name + ".json"), "w"))
    r = run(["init", "--config", P(name + ".json"), "--seed", "5", "--out",
             P(name + ".safetensors")])
    if r.returncode:
        raise SystemExit(r.stderr)
    rng = np.random.default_rng(5)
    W = st.load(P(name + ".safetensors"))
    W = {n: (1 + 0.1 * rng.standard_normal(w.shape) if w.ndim == 1
             else w / 0.02 / np.sqrt(w.shape[1])).astype(np.float32) for n, w in W.items()}
    st.save(P(name + ".safetensors"), W)


model("m", False)
model("tied", True)
rng = np.random.default_rng(5)
ids = rng.integers(0, 211, (2, 97))
labels = ids.copy()
labels[rng.random(ids.shape) < 0.2] = -100
st.save(P("t.safetensors"), {"input_ids": ids.astype(np.int64), "labels": labels.astype(np.int64)})

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


n_runs = 0


def grad(device, layout, extra, m="m"):
    global n_runs
    n_runs += 1
    out = P(f"g{n_runs}.safetensors")
    r = run(["grad", "--config", P(m + ".json"), "--weights", P(m + ".safetensors"), "--tokens",
             P("t.safetensors"), "--out", out, "--device", device]
            + (["--layout", layout] if layout else []) + extra, ranks_of(layout))
    if r.returncode != 0 and "no CUDA device is visible" in r.stderr:
        print("SKIPPED: " + r.stderr.strip().splitlines()[0])
        sys.exit(77)
    if r.returncode != 0:
        raise SystemExit(f"grad --device {device} --layout {layout} {' '.join(extra)} failed "
                         f"({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return st.load(out), open(out, "rb").read()


def compare(name, dev, cpu):
    lrel = abs(float(dev["loss"][0]) - float(cpu["loss"][0])) / abs(float(cpu["loss"][0]))
    check(lrel <= 1e-6, f"{name}: loss {float(dev['loss'][0]):.7f} vs cpu "
          f"{float(cpu['loss'][0]):.7f} ({lrel:.1e})")
    worst = max((float(np.linalg.norm(dev[n] - cpu[n]) / np.linalg.norm(cpu[n])), n)
                for n in cpu if n != "loss")
    check(worst[0] <= 1e-5, f"{name}: worst gradient {worst[1]} {worst[0]:.1e} <= 1e-5")


LAYOUTS = ["", "tsp=2", "fsdp_sp=2", "tp=2", "sp=2", "tp=2,sp=2", "dp=2", "tsp=2,dp=2"]
if DEVICE == "cuda":
    for rc in ("none", "full"):
        cpu, _ = grad("cpu", "", ["--recompute", rc])
        for L in LAYOUTS:
            name = f"{L or 'single'} on the GPU, --recompute {rc}"
            dev, raw = grad("cuda", L, ["--recompute", rc])
            compare(name, dev, cpu)
            if rc == "none" or L in ("", "tsp=2"):
                _, raw2 = grad("cuda", L, ["--recompute", rc])
                check(raw == raw2, f"{name}: a rerun is bitwise equal")
    # the sp axis's other two methods (ring attention's merge kernel, Ulysses' row shuffles)
    for comm in ("p2p", "a2a"):
        compare(f"sp=2 --sp-comm {comm} on the GPU", grad("cuda", "sp=2", ["--sp-comm", comm])[0],
                grad("cpu", "", [])[0])
    dev, _ = grad("cuda", "tp=2", ["--tp-sequence-parallel", "off"])
    compare("tp=2 without sequence parallelism on the GPU", dev, grad("cpu", "", [])[0])
    tcpu, _ = grad("cpu", "", [], "tied")
    for L in ("tsp=2", "tp=2,sp=2"):
        compare(f"{L}, tied embeddings, on the GPU", grad("cuda", L, [], "tied")[0], tcpu)
    # The schedules over NCCL (--comm nccl): ranks sharing the one GPU, each its own NCCL host.
    cpu, _ = grad("cpu", "", [])
    for L in LAYOUTS[1:]:  # one rank without mpirun has no communicator to speak of
        name = f"{L} over NCCL on the GPU"
        dev, raw = grad("cuda", L, ["--comm", "nccl"])
        compare(name, dev, cpu)
        if L in ("tsp=2", "tp=2,sp=2"):
            _, raw2 = grad("cuda", L, ["--comm", "nccl"])
            check(raw == raw2, f"{name}: a rerun is bitwise equal")
    # --dtype bf16 (the bf16 kernel table on the GPU): every layout against the CPU's bf16 single
    # rank within the bound the layouts keep among themselves on the CPU (1e-2 per gradient,
    # test_layouts), reruns bitwise.
    bcpu, _ = grad("cpu", "", ["--dtype", "bf16"])
    for L in LAYOUTS:
        name = f"{L or 'single'} --dtype bf16 on the GPU"
        dev, raw = grad("cuda", L, ["--dtype", "bf16"])
        lrel = abs(float(dev["loss"][0]) - float(bcpu["loss"][0])) / abs(float(bcpu["loss"][0]))
        worst = max((float(np.linalg.norm(dev[n] - bcpu[n]) / np.linalg.norm(bcpu[n])), n)
                    for n in bcpu if n != "loss")
        check(lrel <= 1e-3 and worst[0] <= 1e-2,
              f"{name}: loss within {lrel:.1e} <= 1e-3 of the CPU's bf16, worst gradient "
              f"{worst[1]} {worst[0]:.1e} <= 1e-2")
        if L in ("", "tsp=2"):
            check(raw == grad("cuda", L, ["--dtype", "bf16"])[1], f"{name}: a rerun is bitwise equal")
    # Without a GPU per rank, --comm nccl is refused on every rank with a message (no hang).
    r = run(["grad", "--config", P("m.json"), "--weights", P("m.safetensors"), "--tokens",
             P("t.safetensors"), "--out", P("x.safetensors"), "--device", "cuda", "--comm", "nccl",
             "--layout", "tsp=2"], 2, share_gpu=False)
    check(r.returncode != 0 and r.stderr.count("ranks of a node would share a GPU") == 1,
          f"--comm nccl with two ranks on one GPU refused on both ranks, printed once (exit "
          f"{r.returncode})")
else:
    cases = [(L, ["--recompute", rc], "m") for rc in ("none", "full") for L in LAYOUTS]
    cases += [("tsp=4", [], "m"), ("tsp=1", [], "m"), ("tp=1,sp=1", [], "m"), ("tsp=2", ["--attn-buckets", "2"], "m"),
              ("tsp=2", ["--no-overlap"], "m"),
              ("tsp=2", ["--recompute", "full", "--fused-mlp-recompute"], "m"),
              ("tsp=2", ["--recompute", "full", "--keep-attn-weights"], "m"),
              ("tp=2", ["--tp-sequence-parallel", "off"], "m"), ("sp=2", ["--attn-buckets", "2"], "m"),
              ("tsp=2", [], "tied"), ("tp=2,sp=2", [], "tied"), ("fsdp_sp=2,dp=2", [], "m"),
              ("sp=2", ["--sp-comm", "p2p"], "m"), ("sp=2", ["--sp-comm", "a2a"], "m")]
    # --dtype bf16: the bf16 kernel table behind the same seam (issue 18)
    cases += [(L, ["--dtype", "bf16"] + extra, m) for L, extra, m in [
        ("", [], "m"), ("tsp=2", ["--recompute", "full"], "m"), ("fsdp_sp=2", [], "tied"),
        ("tp=2", [], "m"), ("tp=2", ["--tp-sequence-parallel", "off"], "tied"),
        ("sp=2", ["--attn-buckets", "2"], "m"), ("tp=2,sp=2", [], "m"), ("dp=2", [], "m"),
        ("sp=2", ["--sp-comm", "p2p"], "m")]]
    for L, extra, m in cases:
        _, raw_cpu = grad("cpu", L, extra, m)
        _, raw_emu = grad("emu", L, extra, m)
        check(raw_cpu == raw_emu, f"{L or 'single'} {' '.join(extra)} ({m}): --device emu is "
              "bitwise equal to --device cpu")



def train(device, layout, name, steps=3, resume=None, micro_batch=2, extra=()):
    """Losses, the final checkpoint's files (bytes) and its tensors."""
    out = P("ck_" + name)
    if resume is None:
        shutil.rmtree(out, ignore_errors=True)
    r = run(["train", "--config", P("m.json"), "--synthetic", "--steps", str(steps), "--seq", "64",
             "--micro-batch", str(micro_batch), "--eval-every", "2", "--eval-batches", "1", "--warmup", "1",
             "--save-dir", out, "--save-every", "2", "--report", P(name + ".json"), "--device",
             device, "--quiet"] + (["--layout", layout] if layout else [])
            + (["--resume", resume] if resume else []) + list(extra), ranks_of(layout))
    if r.returncode != 0:
        raise SystemExit(f"train --device {device} --layout {layout} failed ({r.returncode}):\n"
                         f"{r.stdout}\n{r.stderr}")
    rep = json.load(open(P(name + ".json")))
    files = {f: open(os.path.join(out, f"step_{steps}", f), "rb").read()
             for f in ("model.safetensors", "optimizer.safetensors")}
    return rep["losses"], files, st.load(os.path.join(out, f"step_{steps}", "model.safetensors"))


def train_close(what, losses, W, ref):
    """Losses within 1e-5 and every final weight within 1e-4 norm-wise of the CPU run `ref`."""
    lrel = max(abs(a - b) / abs(b) for a, b in zip(losses, ref[0]))
    check(lrel <= 1e-5, f"{what}: losses {losses} vs cpu {ref[0]} ({lrel:.1e})")
    worst = max((float(np.linalg.norm(W[k] - ref[2][k]) / np.linalg.norm(ref[2][k])), k)
                for k in ref[2])
    check(worst[0] <= 1e-4, f"{what}: worst final weight {worst[1]} {worst[0]:.1e} <= 1e-4")


TRAIN_LAYOUTS = ["", "tsp=2", "fsdp_sp=2", "tp=2,sp=2", "dp=2"]
refs = {}
if DEVICE == "cuda":  # one rank; dp=2's global batch is 2 x 2, so its reference takes B = 4
    refs = {1: train("cpu", "", "cpu_single"), 2: train("cpu", "", "cpu_single_b4", micro_batch=4)}
for L in TRAIN_LAYOUTS:
    n = (L or "single").replace("=", "").replace(",", "_")
    losses, files, W = train(DEVICE, L, f"{DEVICE}_{n}")
    if DEVICE == "emu":
        closs, cfiles, _ = train("cpu", L, f"cpu_{n}")
        check(losses == closs and files == cfiles, f"train {L or 'single'}: losses and the final "
              "checkpoint on --device emu bitwise equal to --device cpu")
    else:
        train_close(f"train {L or 'single'} on the GPU", losses, W,
                    refs[2 if L.startswith("dp=") else 1])
    # Resume on the device from the step-2 checkpoint of the same run: bitwise the same end.
    ck = P(f"ck_{DEVICE}_{n}")
    rlosses, rfiles, _ = train(DEVICE, L, f"{DEVICE}_{n}", resume=os.path.join(ck, "step_2"))
    check(rfiles == files and rlosses == losses[2:], f"train {L or 'single'} on {DEVICE}: resumed "
          "from step 2, the final checkpoint and step-3 loss bitwise equal")

if DEVICE == "cuda":
    for L in ("tsp=2", "tp=2,sp=2"):
        losses, _, W = train("cuda", L, "nccl_" + L.replace("=", "").replace(",", "_"),
                             extra=["--comm", "nccl"])
        train_close(f"train {L} over NCCL on the GPU", losses, W, refs[1])

# generate: greedy decoding of 6 tokens after a 13-token prompt (B = 2), from the weights and from
# a train checkpoint; the output ids and the logits behind every generated token.
prompt = np.random.default_rng(1).integers(0, 211, (2, 13)).astype(np.int64)
st.save(P("prompt.safetensors"), {"input_ids": prompt})


def generate(device, layout, name, source, extra=()):
    out, lg = P(f"gen_{name}.safetensors"), P(f"logits_{name}.safetensors")
    src = ["--weights", P("m.safetensors")] if source == "weights" else ["--checkpoint", source]
    r = run(["generate", "--config", P("m.json"), "--tokens", P("prompt.safetensors"),
             "--max-new-tokens", "6", "--device", device, "--out", out, "--dump-logits", lg,
             "--quiet"] + src + (["--layout", layout] if layout else []) + list(extra),
            ranks_of(layout))
    if r.returncode != 0:
        raise SystemExit(f"generate --device {device} --layout {layout} failed ({r.returncode}):"
                         f"\n{r.stdout}\n{r.stderr}")
    return st.load(out)["output_ids"], st.load(lg)["logits"], open(lg, "rb").read()


def gen_close(what, ids, logits, ref):
    """The CPU run `ref`'s ids, and its logits within 1e-5 norm-wise."""
    rel = float(np.linalg.norm(logits - ref[1]) / np.linalg.norm(ref[1]))
    check((ids == ref[0]).all() and rel <= 1e-5,
          f"{what}: ids equal to the CPU's, logits within {rel:.1e} <= 1e-5")


ck = os.path.join(P(f"ck_{DEVICE}_tsp2"), "step_3")
GEN = [("", "weights"), ("tsp=2", "weights"), ("tp=2", "weights"), ("sp=2", "weights"),
       ("tsp=4", "weights"), ("tsp=2", ck)]
gref = {src: generate("cpu", "", "cpu_" + ("w" if src == "weights" else "ck"), src)
        for src in ("weights", ck)}
for i, (L, src) in enumerate(GEN):
    what = f"generate {L or 'single'} from the {'weights' if src == 'weights' else 'checkpoint'}"
    ids, logits, raw = generate(DEVICE, L, f"{DEVICE}_{i}", src)
    if DEVICE == "emu":
        cids, _, craw = generate("cpu", L, f"cpu_{i}", src)
        check((ids == cids).all() and raw == craw,
              f"{what}: ids and logits on --device emu bitwise equal to --device cpu")
    else:
        gen_close(f"{what} on the GPU", ids, logits, gref[src])
if DEVICE == "cuda":
    ids, logits, _ = generate("cuda", "tsp=2", "nccl", "weights", ["--comm", "nccl"])
    gen_close("generate tsp=2 over NCCL on the GPU", ids, logits, gref["weights"])
    # bf16: the prefill's logits (the first token's) within 1e-2 of the CPU's bf16 (later steps
    # follow each run's own tokens, which a near tie may change)
    bref = generate("cpu", "", "cpu_bf16", "weights", ["--dtype", "bf16"])
    for L in ("", "tsp=2", "tp=2", "sp=2"):
        ids, logits, _ = generate("cuda", L, f"cuda_bf16_{L}", "weights", ["--dtype", "bf16"])
        rel = float(np.linalg.norm(logits[0] - bref[1][0]) / np.linalg.norm(bref[1][0]))
        same = float((ids == bref[0]).mean())
        check(rel <= 1e-2, f"generate --dtype bf16 {L or 'single'} on the GPU: first logits within "
              f"{rel:.1e} <= 1e-2 of the CPU's bf16 ({same:.0%} of the ids equal)")
else:  # bf16 decoders and KV cache behind the seam
    for L in ("", "tsp=2", "tp=2", "sp=2"):
        ids, _, raw = generate("emu", L, f"emu_bf16_{L}", "weights", ["--dtype", "bf16"])
        cids, _, craw = generate("cpu", L, f"cpu_bf16_{L}", "weights", ["--dtype", "bf16"])
        check((ids == cids).all() and raw == craw,
              f"generate --dtype bf16 {L or 'single'}: ids and logits on --device emu bitwise "
              "equal to --device cpu")

if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print(f"device ({DEVICE}): all checks passed")
