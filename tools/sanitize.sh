#!/bin/bash
# The unit tests and short multi-rank runs under the sanitizers (issue 20):
#   asan: AddressSanitizer + UndefinedBehaviorSanitizer (build-asan): test_core, test_kernels, the
#         collectives on 2 ranks, and origami grad / train (with a checkpoint and a resume) /
#         generate under single, tsp=2 and tp=2,sp=2 on configs/tiny.json;
#   tsan: ThreadSanitizer (build-tsan): the communicator with its progress thread (test_collectives
#         on 2 ranks, and a tsp=2 train), one OpenMP thread per rank (libgomp is not instrumented,
#         so OpenMP regions would only give false reports).
# A finding fails the run (halt_on_error / -fno-sanitize-recover). Suppressions: none for our
# code. Leak checking runs on the unit tests; under mpirun it is off (detect_leaks=0): Open MPI
# keeps ~117 KB in ~3350 allocations from MPI_Init until exit (the same amount whatever origami
# runs: grad, train, generate, the collectives test), and LeakSanitizer cannot attribute those
# frames to the library to suppress them by name (tools/sanitize.supp lists the libraries anyway).
# ThreadSanitizer: tools/tsan.supp names one report inside Open MPI's TCP transport (a lock order
# between its add_procs and del_procs, both in MPI_Init/MPI_Finalize on the main thread), and the
# kernels are built without their AVX-512/AVX2 clones there (kernels/cpu/simd.h).
# usage: tools/sanitize.sh [asan|tsan|all]      (each build takes a few minutes on 2 cores)
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1
fails=0
step() {  # step NAME COMMAND...: runs it, counts a failure
  local name=$1
  shift
  echo "=== $name"
  if "$@" > /tmp/origami-sanitize.log 2>&1; then
    echo "    clean"
  else
    echo "    FAILED (exit $?):"
    tail -40 /tmp/origami-sanitize.log | sed 's/^/    /'
    fails=$((fails + 1))
  fi
}
build() {  # build DIR FLAGS
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=None -DORIGAMI_CUDA=OFF \
    -DORIGAMI_BENCH=OFF -DCMAKE_CXX_FLAGS="-O1 -g1 $2" -DCMAKE_EXE_LINKER_FLAGS="$2" > /dev/null &&
    ninja -C "$1" origami test_core test_kernels test_collectives > "$1/build.log" 2>&1 ||
    { echo "build of $1 failed: see $1/build.log"; exit 1; }
}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
runs() {  # runs BUILD_DIR: the origami commands
  local B=$1/origami
  "$B" init --config configs/tiny.json --out "$W/w.safetensors" > /dev/null &&
    /usr/bin/python3 -c "import numpy as np, sys; sys.path.insert(0, 'tests/py'); import st; \
st.save('$W/t.safetensors', {'input_ids': np.random.default_rng(0).integers(0, 256, (2, 33))}); \
st.save('$W/p.safetensors', {'input_ids': np.random.default_rng(1).integers(0, 256, (2, 13))})"
  for L in single tsp=2 tp=2,sp=2; do
    local n=1; [ $L = single ] || n=$(( $(echo $L | tr -cd '0-9' | sed 's/./&*/g;s/\*$//') ))
    step "grad $L" mpirun -np $n --bind-to none "$B" grad --config configs/tiny.json \
      --weights "$W/w.safetensors" --tokens "$W/t.safetensors" --out "$W/g.safetensors" --layout $L
  done
  step "train tsp=2 (checkpoint)" mpirun -np 2 --bind-to none "$B" train --config configs/tiny.json \
    --synthetic --seq 32 --micro-batch 2 --steps 3 --eval-every 0 --layout tsp=2 \
    --save-dir "$W/ck" --save-every 2 --quiet
  step "train tsp=2 (resume)" mpirun -np 2 --bind-to none "$B" train --config configs/tiny.json \
    --synthetic --seq 32 --micro-batch 2 --steps 4 --eval-every 0 --layout tsp=2 \
    --resume "$W/ck" --quiet
  step "generate tsp=2" mpirun -np 2 --bind-to none "$B" generate --config configs/tiny.json \
    --weights "$W/w.safetensors" --tokens "$W/p.safetensors" --max-new-tokens 4 --layout tsp=2 \
    --quiet
}

if [ "$MODE" = asan ] || [ "$MODE" = all ]; then
  [ -n "${SKIP_BUILD:-}" ] || build build-asan "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
  export ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  export LSAN_OPTIONS=suppressions=$PWD/tools/sanitize.supp:print_suppressions=0
  step "asan test_core" build-asan/tests/test_core
  step "asan test_kernels" build-asan/tests/test_kernels
  export ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0  # under mpirun: Open MPI's own (see above)
  step "asan collectives np=2" mpirun -np 2 --bind-to none build-asan/tests/test_collectives
  runs build-asan
  unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
fi
if [ "$MODE" = tsan ] || [ "$MODE" = all ]; then
  [ -n "${SKIP_BUILD:-}" ] || build build-tsan "-fsanitize=thread -fno-omit-frame-pointer"
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tools/tsan.supp
  step "tsan collectives np=2 (progress thread)" mpirun -np 2 --bind-to none \
    build-tsan/tests/test_collectives
  step "tsan train tsp=2 (progress thread)" mpirun -np 2 --bind-to none build-tsan/origami train \
    --config configs/tiny.json --synthetic --seq 32 --micro-batch 2 --steps 3 --eval-every 0 \
    --layout tsp=2 --progress-thread 50 --quiet
fi
echo "sanitize: $fails failure(s)"
[ $fails -eq 0 ]
