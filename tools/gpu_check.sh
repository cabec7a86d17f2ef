#!/bin/bash
# The one-command GPU session (docs/gpu.md): on a machine with an NVIDIA GPU, runs the CUDA
# backend's tests (kernels, GEMM, parity and cuDNN attention, cuDNN planning), the engine on the
# device (origami-cuda grad --device cuda, every layout on the one GPU, against --device cpu),
# NCCL over MPI and the device communicators (nccl, staged; two ranks sharing the GPU),
# compute-sanitizer, the engine in fp32 and bf16 (train --device cuda [--dtype bf16]) against
# PyTorch's bf16 step, the rates (bench_gpu) and PyTorch baselines, and writes OUTDIR/report.json
# (with the card's cuDNN device description, the CI fixture's form) plus 7 logs (8 files: the
# lent machine returns at most 8).
# Binaries come from .gpu/ (tools/gpu_pack.sh, built on a machine with the project's packages) when
# present, else it builds into build-gpu (needs the packages of tools/packages.txt).
# usage: tools/gpu_check.sh OUTDIR [--quick] [--only STEP,STEP...]   (steps: the names run() prints)
set -uo pipefail
OUT=${1:?usage: tools/gpu_check.sh OUTDIR [--quick] [--only STEP,STEP...]}
shift
QUICK= ONLY=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=--quick ;;
    --only) ONLY=,${2:?--only needs a list of steps},; shift ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
t0=$(date +%s)
: > "$OUT/results.txt"

if [ -d .gpu ]; then
  BIN=.gpu/bin
  mkdir -p /tmp/origami-gpu && tar -C /tmp/origami-gpu -xJf .gpu/lib.tar.xz
  export LD_LIBRARY_PATH=/tmp/origami-gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  ldconfig -p | grep -q 'libmpi.so.40 ' || export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/tmp/origami-gpu/lib/mpi
else
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DORIGAMI_CUDA=ON > "$OUT/build.log" 2>&1 &&
    ninja -C build-gpu gpu_check_binaries >> "$OUT/build.log" 2>&1 ||
    { echo "build failed: see $OUT/build.log"; echo "build 1" >> "$OUT/results.txt"; }
  mkdir -p build-gpu/all && cp build-gpu/tests/cuda/test_* build-gpu/bench/bench_gpu \
    build-gpu/origami-cuda build-gpu/all/ 2>/dev/null
  BIN=build-gpu/all
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
# NCCL: the toolkit's when it has one, else PyTorch's wheel (the lent machines' image).
for d in /usr/local/cuda/lib64 /opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib; do
  [ -e $d/libnccl.so.2 ] && { export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; break; }
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nvcc --version | tail -2
  uname -srm
  head -2 /etc/os-release
  ls /usr/lib/x86_64-linux-gnu/libcudnn.so.* /usr/local/cuda/lib64/libcublasLt.so.* 2>/dev/null
  ldconfig -p | grep -E 'libcudnn(_graph)?\.so\.9 '
} > "$OUT/env.txt" 2>&1

# run NAME LOG TIMEOUT COMMAND...: output appended to OUTDIR/LOG, exit code to results.txt
run() {
  local name=$1 log=$2 t=$3
  shift 3
  [ -n "$ONLY" ] && [[ $ONLY != *,$name,* ]] && return 0
  echo "===== $name: $*" >> "$OUT/$log"
  local s=$(date +%s)
  timeout "$t" "$@" >> "$OUT/$log" 2>&1
  local rc=$?
  echo "$name $rc $(( $(date +%s) - s ))" >> "$OUT/results.txt"
  echo "$name: exit $rc ($(( $(date +%s) - s )) s)"
}

run cuda_host tests.log 30 $BIN/test_cuda_host
run gpu_kernels tests.log 90 $BIN/test_gpu_kernels
run gpu_gemm_attention tests.log 90 $BIN/test_gpu_gemm_attention
if [ -x $BIN/test_gpu_sdpa ]; then  # built with cuDNN: the SDPA path, and planning from JSON
  run gpu_sdpa tests.log 120 $BIN/test_gpu_sdpa
  run cudnn_plan tests.log 60 env ORIGAMI_DEVICEPROP_JSON=tests/cuda/data/h100_deviceprop.json:tests/cuda/data/h200_deviceprop.json \
    $BIN/test_cudnn_plan
fi
# Every layout on the GPU (origami-cuda grad and train --device cuda, ranks sharing it) against --device cpu.
run device_cuda tests.log 400 python3 tests/py/test_device.py $BIN/origami-cuda /tmp/origami-device cuda
run nccl_np1 tests.log 60 mpirun -np 1 --bind-to none -x LD_LIBRARY_PATH $BIN/test_nccl_bootstrap
# Two ranks on the one GPU: NCCL refuses duplicate GPUs unless each rank claims another host
# (NCCL_HOSTID); an experiment, recorded whatever its outcome.
run nccl_np2_hostid_experiment tests.log 60 mpirun -np 2 --bind-to none -x LD_LIBRARY_PATH \
  -x ORIGAMI_NCCL_SHARE_GPU=1 bash -c 'NCCL_HOSTID=origami$OMPI_COMM_WORLD_RANK exec '$BIN'/test_nccl_bootstrap'
SAN="compute-sanitizer --error-exitcode 1 --print-limit 20"
# origami's communicators on device buffers: NCCL (one rank, and two sharing the GPU as above)
# and the host-staged one over MPI (two ranks on the one GPU, no NCCL involved).
run nccl_comm_np1 tests.log 60 mpirun -np 1 --bind-to none -x LD_LIBRARY_PATH \
  $BIN/test_device_comm nccl
run nccl_comm_np2 tests.log 90 mpirun -np 2 --bind-to none -x LD_LIBRARY_PATH \
  -x ORIGAMI_NCCL_SHARE_GPU=1 bash -c 'NCCL_HOSTID=origami$OMPI_COMM_WORLD_RANK exec '$BIN'/test_device_comm nccl'
run staged_comm_np2 tests.log 90 mpirun -np 2 --bind-to none -x LD_LIBRARY_PATH \
  $BIN/test_device_comm staged
run memcheck_kernels sanitizer.log 90 $SAN --tool memcheck $BIN/test_gpu_kernels
run memcheck_gemm_attention sanitizer.log 120 $SAN --tool memcheck $BIN/test_gpu_gemm_attention \
  --gtest_filter='*AllTransposes*:*SmallTiles*'
[ -x $BIN/test_gpu_sdpa ] && run memcheck_sdpa sanitizer.log 120 $SAN --tool memcheck \
  $BIN/test_gpu_sdpa --gtest_filter='*KeySegmentStartsInsideAChunk*'
run racecheck_kernels sanitizer.log 90 $SAN --tool racecheck $BIN/test_gpu_kernels
run initcheck_kernels sanitizer.log 60 $SAN --tool initcheck $BIN/test_gpu_kernels \
  --gtest_filter='*RmsNorm*:*CrossEntropy*'
# The engine itself on the GPU (fp32 storage, the parity attention): train steps of the small
# long-context model, one rank and TSP with two ranks sharing the GPU; tokens/s into the report.
ESEQ=8192; [ -n "$QUICK" ] && ESEQ=2048
for L in single tsp=2; do
  n=1; [ $L = tsp=2 ] && n=2
  run engine_train_${L/=/} bench.log 240 mpirun -np $n --bind-to none -x LD_LIBRARY_PATH \
    $BIN/origami-cuda train --device cuda --layout $L --config configs/small-long.json --synthetic \
    --seq $ESEQ --micro-batch 1 --steps 4 --eval-every 0 --log-every 1 \
    --report /tmp/origami-engine-${L/=/}.json
done
# The engine in bf16 (issue 18) on the paper's layer shapes (configs/paper-2layer.json: h 4096,
# 32 heads, I 16384, 2 layers): train --dtype bf16, one rank and tsp=2 sharing the GPU, against
# PyTorch's own bf16 step of the same model (tools/gpu_torch_step.py) timed in this session.
BSEQS="8192 32768"; [ -n "$QUICK" ] && BSEQS=2048
for S in $BSEQS; do
  for L in single tsp=2; do
    n=1; [ $L = tsp=2 ] && n=2
    run engine_bf16_${L/=/}_S$S bench.log 300 mpirun -np $n --bind-to none -x LD_LIBRARY_PATH \
      $BIN/origami-cuda train --device cuda --dtype bf16 --layout $L \
      --config configs/paper-2layer.json --synthetic --seq $S --micro-batch 1 --steps 3 \
      --eval-every 0 --log-every 1 --report /tmp/origami-engine-bf16-${L/=/}-S$S.json
  done
done
run torch_step bench.log 300 python3 tools/gpu_torch_step.py configs/paper-2layer.json \
  $(for S in $BSEQS; do printf -- '--seq %s ' $S; done) --json "$OUT/torch_step.json"
run bench_gpu bench.log 240 $BIN/bench_gpu --json "$OUT/bench.json" $QUICK
run torch_ref bench.log 90 python3 tools/gpu_torch_ref.py --json "$OUT/torch.json" $QUICK

python3 - "$OUT" "$t0" <<'PY'
import json, os, sys, time
out, t0 = sys.argv[1], int(sys.argv[2])
def load(n):
    p = os.path.join(out, n)
    return json.load(open(p)) if os.path.exists(p) else None
steps = []
for line in open(os.path.join(out, "results.txt")):
    f = line.split()
    steps.append(dict(step=f[0], exit=int(f[1]), seconds=int(f[2]) if len(f) > 2 else None))
# The device description cuDNN reads on this card (printed by test_gpu_sdpa): the CI fixture.
deviceprop = None
tl = os.path.join(out, "tests.log")
if os.path.exists(tl):
    for line in open(tl, errors="replace"):
        if line.startswith("deviceprop: "):
            deviceprop = line[len("deviceprop: "):].strip()
engine = {}
for L in ("single", "tsp2"):  # the engine's own train runs (tools/gpu_check.sh)
    p = f"/tmp/origami-engine-{L}.json"
    if os.path.exists(p):
        r = json.load(open(p))
        engine[L] = {k: r.get(k) for k in ("layout", "seq", "tokens_per_s", "step_time_median_s",
                                           "losses")}
# bf16 engine rows: tokens/s, MFU against PyTorch's bf16 8192^3 GEMM rate measured in this run,
# and against PyTorch's own bf16 step of the same model at the same S.
torch_ref, torch_step = load("torch.json"), load("torch_step.json")
ceiling = None
for r in (torch_ref or {}).get("rows", []):
    if r["group"] == "gemm":
        ceiling = r["value"] * 1e12
cfg = json.load(open("configs/paper-2layer.json"))
h, I, L_, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
kvd = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
def flops_per_token(S):  # matmuls 6 per weight (fwd + bwd), causal attention 6·S·h per layer
    return 6 * (L_ * (2 * h * h + 2 * h * kvd + 3 * h * I) + V * h) + 6 * L_ * S * h
bf16 = []
for p in sorted(os.listdir("/tmp")):
    if p.startswith("origami-engine-bf16-") and p.endswith(".json"):
        r = json.load(open(os.path.join("/tmp", p)))
        S, tps = r.get("seq"), r.get("tokens_per_s")
        row = dict(run=p[:-5], layout=r.get("layout"), seq=S, tokens_per_s=tps,
                   step_time_median_s=r.get("step_time_median_s"), losses=r.get("losses"))
        if tps and ceiling:
            row["mfu"] = tps * flops_per_token(S) / ceiling
        for t in (torch_step or {}).get("rows", []):
            if t.get("seq") == S and t.get("tokens_per_s") and tps:
                row["vs_torch"] = tps / t["tokens_per_s"]
        bf16.append(row)
rep = dict(env=open(os.path.join(out, "env.txt")).read(), steps=steps, deviceprop=deviceprop,
           engine=engine, engine_bf16=bf16, bf16_ceiling_flops=ceiling, torch_step=torch_step,
           passed=all(s["exit"] == 0 for s in steps if not s["step"].endswith("_experiment")), bench=load("bench.json"),
           torch=load("torch.json"), seconds=int(time.time()) - t0)
json.dump(rep, open(os.path.join(out, "report.json"), "w"), indent=1)
print("report:", os.path.join(out, "report.json"), "passed" if rep["passed"] else "FAILED",
      f"({rep['seconds']} s)")
PY
