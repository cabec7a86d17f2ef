"""Every bad config or input ends with a message naming the field and the constraint, a non-zero
exit, and no output file (nor temporary) left behind.
Usage: test_cli_errors.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402

BASE = dict(hidden_size=16, intermediate_size=24, num_attention_heads=2, num_key_value_heads=1,
            num_hidden_layers=1, vocab_size=30, max_position_embeddings=32)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    P = lambda n: os.path.join(work, n)  # noqa: E731

    def cfg(name, **over):
        c = dict(BASE)
        for k, v in over.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        with open(P(name), "w") as f:
            json.dump(c, f)
        return P(name)

    good_cfg = cfg("good.json")
    subprocess.run([binary, "init", "--config", good_cfg, "--out", P("w.safetensors")], check=True)
    W = st.load(P("w.safetensors"))
    ids = np.arange(2 * 9, dtype=np.int64).reshape(2, 9) % 30
    st.save(P("tok.safetensors"), {"input_ids": ids})

    def weights(name, mutate):
        w = dict(W)
        mutate(w)
        st.save(P(name), w)
        return P(name)

    def tokens(name, **t):
        st.save(P(name), t)
        return P(name)

    def crafted(name, header, data):  # a safetensors file with a hand-written header
        h = json.dumps(header).encode()
        with open(P(name), "wb") as f:
            f.write(len(h).to_bytes(8, "little") + h + data)
        return P(name)

    raw = open(P("w.safetensors"), "rb").read()
    with open(P("trunc.safetensors"), "wb") as f:
        f.write(raw[: len(raw) - 10])
    with open(P("garbage.safetensors"), "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")

    def grad(c=good_cfg, w=P("w.safetensors"), t=P("tok.safetensors")):
        return ["grad", "--config", c, "--weights", w, "--tokens", t, "--out", P("out.safetensors")]

    long_ids = np.zeros((1, 40), dtype=np.int64)
    cases = [
        ("missing field", grad(c=cfg("c1.json", vocab_size=None)), "missing required field 'vocab_size'"),
        ("mistyped field", grad(c=cfg("c2.json", hidden_size="16")), "field 'hidden_size' must be an integer"),
        ("heads", grad(c=cfg("c3.json", num_key_value_heads=3)),
         "num_attention_heads=2 is not divisible by num_key_value_heads=3"),
        ("rope_scaling", grad(c=cfg("c4.json", rope_scaling={"type": "linear", "factor": 2})),
         "'rope_scaling' is not supported"),
        ("head_dim", grad(c=cfg("c5.json", head_dim=4)), "head_dim=4 differs"),
        ("huge size", grad(c=cfg("c7.json", hidden_size=2**62)),
         "field 'hidden_size'=4611686018427387904 exceeds 1048576"),
        ("float size", grad(c=cfg("c8.json", hidden_size=1e12)), "field 'hidden_size' must be an integer"),
        ("too many params", ["plan", "--config", cfg("c9.json", hidden_size=2**20, num_attention_heads=2**10,
                                                     num_key_value_heads=2**10, num_hidden_layers=2**16),
                             "--layout", "single", "--seq", "16"], "more than 1e15 is refused"),
        ("bad json", grad(c=P("w.safetensors")), "not valid JSON"),
        ("seq > max pos", grad(t=tokens("t1.safetensors", input_ids=long_ids)),
         "sequence length 39 exceeds max_position_embeddings=32"),
        ("unknown tensor", grad(w=weights("w1.safetensors", lambda w: w.update(extra=np.zeros(3, np.float32)))),
         "unknown tensor 'extra'"),
        ("missing tensor", grad(w=weights("w2.safetensors", lambda w: w.pop("model.norm.weight"))),
         "missing tensor 'model.norm.weight'"),
        ("wrong shape", grad(w=weights("w3.safetensors", lambda w: w.update(
            {"model.norm.weight": np.ones(15, np.float32)}))), "'model.norm.weight' has shape [15], expected [16]"),
        ("wrong dtype", grad(w=weights("w4.safetensors", lambda w: w.update(
            {"model.norm.weight": np.ones(16, np.float64)}))), "has dtype F64, expected F32"),
        ("tied head present", grad(c=cfg("c6.json", tie_word_embeddings=True)), "tie_word_embeddings=true"),
        ("truncated", grad(w=P("trunc.safetensors")), "outside the data section"),
        ("malformed", grad(w=P("garbage.safetensors")), "not JSON"),
        ("shape overflow", grad(t=crafted("t6.safetensors", {"input_ids": {
            "dtype": "F32", "shape": [4611686018427387905, 4], "data_offsets": [0, 16]}}, bytes(16))),
         "has more elements than a file can hold"),
        ("overlapping tensors", grad(t=crafted("t7.safetensors", {
            "input_ids": {"dtype": "I64", "shape": [1, 3], "data_offsets": [0, 24]},
            "labels": {"dtype": "I64", "shape": [1, 3], "data_offsets": [16, 40]}}, bytes(40))),
         "tensors 'input_ids' and 'labels' overlap in the data section"),
        ("id outside vocab", grad(t=tokens("t2.safetensors", input_ids=np.array([[1, 2, 3, 99, 4]], np.int32))),
         "input_ids[0, 3]=99 is outside the vocabulary [0, 30)"),
        ("bad label", grad(t=tokens("t3.safetensors", input_ids=np.array([[1, 2, 3]], np.int64),
                                    labels=np.array([[1, -5, 3]], np.int64))),
         "labels[0, 1]=-5 is negative and not the ignore index -100"),
        ("label shape", grad(t=tokens("t4.safetensors", input_ids=np.array([[1, 2, 3]], np.int64),
                                      labels=np.array([[1, 2]], np.int64))), "labels has shape [1, 2]"),
        ("float ids", grad(t=tokens("t5.safetensors", input_ids=np.array([[1.0, 2.0]], np.float32))),
         "expected I32 or I64"),
        ("position_ids rule", grad(t=tokens("pos1.safetensors", input_ids=np.array([[1, 2, 3, 4]], np.int64),
                                            position_ids=np.array([[0, 1, 3, 0]], np.int64))),
         "position_ids[0, 2]=3 neither starts a document (0) nor continues one (position_ids[0, 1] + 1 = 2)"),
        ("position_ids shape", grad(t=tokens("pos2.safetensors", input_ids=np.array([[1, 2, 3]], np.int64),
                                             position_ids=np.array([[0, 1]], np.int64))),
         "position_ids has shape [1, 2], expected input_ids' shape [1, 3]"),
        ("position_ids range", grad(t=tokens("pos3.safetensors", input_ids=np.array([[1, 2, 3]], np.int64),
                                             position_ids=np.array([[40, 41, 42]], np.int64))),
         "position_ids[0, 0]=40 is not below max_position_embeddings=32"),
        ("pack without dataset", ["train", "--config", good_cfg, "--pack", "documents"],
         "--pack=documents needs --dataset DIR"),
        ("pack name", ["train", "--config", good_cfg, "--pack", "docs"], "--pack=docs is not one of none, documents"),
        ("missing dataset", ["train", "--config", good_cfg, "--dataset", P("nods"), "--steps", "1", "--seq", "8"],
         "manifest.json"),
        ("data prepare no eos", ["data", "prepare", "--tokenizer", "data/tokenizer.model", "--out", P("ds_x"),
                                 "data/moby_dick.txt"], "defines no end-of-sequence id"),
        ("missing file", grad(w=P("nope.safetensors")), "cannot open"),
        ("unknown flag", ["train", "--config", good_cfg, "--stepz", "3"], "unknown flag --stepz"),
        ("bad int", ["train", "--config", good_cfg, "--steps", "abc"], "--steps=abc is not an integer"),
        ("int overflow", ["train", "--config", good_cfg, "--steps", "99999999999999999999"],
         "--steps=99999999999999999999 is out of range"),
        ("lr inf", ["train", "--config", good_cfg, "--lr", "inf"], "--lr=inf is not a finite number"),
        ("lr nan", ["train", "--config", good_cfg, "--lr", "nan"], "--lr=nan is not a finite number"),
        ("lr negative", ["train", "--config", good_cfg, "--lr", "-1"], "--lr=-1 must be positive"),
        ("min-lr above lr", ["train", "--config", good_cfg, "--lr", "1e-3", "--min-lr", "0.01"],
         "--min-lr=0.01 must be in [0, 0.001]"),
        ("beta1 = 1", ["train", "--config", good_cfg, "--beta1", "1"], "--beta1=1 must be in [0, 1)"),
        ("beta2 > 1", ["train", "--config", good_cfg, "--beta2", "1.5"], "--beta2=1.5 must be in [0, 1)"),
        ("clip < 0", ["train", "--config", good_cfg, "--clip", "-1"], "--clip=-1 must be >= 0"),
        ("weight decay < 0", ["train", "--config", good_cfg, "--weight-decay", "-5"],
         "--weight-decay=-5 must be >= 0"),
        ("memory limit", ["train", "--config", good_cfg, "--synthetic", "--seq", "16", "--steps", "1",
                          "--memory-limit", "0.001"], "more than the 1.0 MiB a rank can use (--memory-limit)"),
        # ~0.5T parameters: the predicted peak (AdamW's state alone ~8 TiB) exceeds any host's memory
        ("predicted peak too big", ["train", "--synthetic", "--seq", "16", "--steps", "1", "--micro-batch", "1",
                                    "--config", cfg("c10.json", hidden_size=16384, num_attention_heads=128,
                                                    num_key_value_heads=8, intermediate_size=65536,
                                                    num_hidden_layers=128, vocab_size=128000)],
         "(hidden_size=16384, intermediate_size=65536, num_hidden_layers=128, vocab_size=128000)"),
        ("memory limit bad", ["train", "--config", good_cfg, "--memory-limit", "-3"], "--memory-limit=-3"),
        ("max-skips 0", ["train", "--config", good_cfg, "--max-skips", "0"], "--max-skips=0 must be >= 1"),
        ("temperature inf", ["generate", "--config", good_cfg, "--weights", P("w.safetensors"), "--tokens",
                             P("tok.safetensors"), "--temperature", "inf"],
         "--temperature=inf is not a finite number"),
        ("NaN weights", ["generate", "--config", good_cfg, "--weights", weights("wnan.safetensors", lambda w: w.update(
            {"model.norm.weight": np.full(16, np.nan, np.float32)})), "--tokens", P("tok.safetensors"),
                         "--max-new-tokens", "2"],
         "are not finite (nan): do the weights hold NaN or Inf?"),
        ("bad recompute", grad() + ["--recompute", "some"], "--recompute=some is not one of: none, full"),
        ("bad device", grad() + ["--device", "tpu"], "--device=tpu is not one of: cpu, cuda, emu"),
        ("cuda in the CPU binary", grad() + ["--device", "cuda"], "this binary has no CUDA backend"),
        ("bad comm", grad() + ["--comm", "gloo"], "--comm=gloo is not one of: auto, mpi, mpi_staged, nccl"),
        ("nccl on the CPU", grad() + ["--comm", "nccl"], "--comm nccl needs --device cuda"),
        ("staged on the CPU", grad() + ["--comm", "mpi_staged"],
         "--comm mpi_staged stages device buffers: it needs --device cuda or emu"),
        ("mpi on a device", ["train", "--config", good_cfg, "--synthetic", "--steps", "1", "--seq", "8",
                             "--device", "emu", "--comm", "mpi"], "cannot read --device emu memory"),
        ("bad dtype", grad() + ["--dtype", "fp16"], "--dtype=fp16 is not one of: fp32, bf16"),
        ("train seq", ["train", "--config", good_cfg, "--synthetic", "--seq", "64", "--steps", "1"],
         "--seq=64 exceeds max_position_embeddings=32"),
        ("train vocab", ["train", "--config", good_cfg, "--steps", "1", "--seq", "16"],
         "vocab_size=30 is smaller than the corpus's token ids"),
        ("missing required flag", ["grad", "--config", good_cfg], "missing required flag"),
        ("plan seq", ["plan", "--config", good_cfg, "--layout", "single", "--seq", "0"], "--seq=0 must be >= 1"),
        ("plan kept packets", ["plan", "--config", good_cfg, "--layout", "tsp=2", "--seq", "16",
                               "--keep-attn-weights"], "--keep-attn-weights needs --recompute full"),
        ("biring odd half", ["plan", "--config", cfg("c_bi.json", num_key_value_heads=2, intermediate_size=18),
                             "--layout", "tsp=2", "--seq", "16", "--mlp-transport", "biring"],
         "--mlp-transport biring splits each MLP shard in two: intermediate_size/2 = 9 must be even"),
        ("transport name", ["plan", "--config", good_cfg, "--layout", "tsp=2", "--seq", "16",
                            "--mlp-transport", "star"],
         "--mlp-transport=star is not one of: ring, biring, broadcast"),
        ("sp-comm name", ["plan", "--config", good_cfg, "--layout", "sp=2", "--seq", "16", "--sp-comm", "ring"],
         "--sp-comm=ring is not one of: allgather, p2p, a2a"),
        ("sp-comm tp", ["plan", "--config", cfg("c_tp2.json", num_key_value_heads=2), "--layout", "tp=2,sp=2",
                        "--seq", "16", "--sp-comm", "a2a"],
         "--sp-comm a2a needs tp=1 (got tp=2): the hierarchical form inside TP groups is not built"),
        ("a2a heads", ["plan", "--config", cfg("c_h3.json", hidden_size=24, num_attention_heads=3,
                                               num_key_value_heads=3), "--layout", "sp=2", "--seq", "16",
                       "--sp-comm", "a2a"], "num_attention_heads=3 is not divisible by sp=2"),
        ("a2a kv heads", ["plan", "--config", cfg("c_kv6.json", hidden_size=48, num_attention_heads=12,
                                                  num_key_value_heads=6), "--layout", "sp=4", "--seq", "16",
                          "--sp-comm", "a2a"],
         "num_key_value_heads=6 and sp=4: --sp-comm a2a needs one to divide the other"),
        ("a2a buckets", ["plan", "--config", cfg("c_b2.json", num_key_value_heads=2), "--layout", "sp=2", "--seq",
                         "16", "--sp-comm", "a2a", "--attn-buckets", "2"],
         "--sp-comm a2a takes no --attn-buckets (got 2)"),
        ("bench seq", ["bench", "--config", good_cfg, "--layout", "tsp=2", "--seq", "x12"],
         "--seq=x12 is not an integer"),
        ("bench link", ["bench", "--config", good_cfg, "--layout", "tsp=2", "--seq", "16", "--emulate-link", "abc",
                        "--out", P("bench")], "--emulate-link=abc is not GBPS[,LATENCY_US]"),
        ("bench repeat", ["bench", "--config", good_cfg, "--layout", "tsp=2", "--seq", "16", "--repeat", "0",
                          "--out", P("bench")], "--repeat=0 must be >= 1"),
    ]
    failures = []
    for name, args, expect in cases:
        r = subprocess.run([binary] + args, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))))
        leftovers = [f for f in os.listdir(work) if f.startswith("out.safetensors")]
        ok = r.returncode != 0 and expect in r.stderr and not leftovers
        print(f"{'ok  ' if ok else 'FAIL'} {name:22s} exit={r.returncode} {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
        if not ok:
            failures.append(f"{name}: expected '{expect}', exit {r.returncode}, leftovers {leftovers}, stderr: {r.stderr}")
    # and the good input works
    r = subprocess.run([binary] + grad(), capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(P("out.safetensors")):
        failures.append(f"good input failed: {r.stderr}")
    if failures:
        print("\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
