#!/usr/bin/env bash
# README command 1: install what is needed, build, and run the main job — a small training run
# under mpirun on the bundled corpus (Moby Dick, sentencepiece BPE 8000) with the small config
# (~21M parameters). Prints loss, held-out loss, tokens/s and peak memory per category; writes
# checkpoints and the run report under runs/main/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# --bind-to none: the rank's OpenMP/BLAS threads may use every core (mpirun binds to one by default).
mpirun -np 1 --bind-to none build/origami train --config configs/small.json \
  --steps "${ORIGAMI_STEPS:-150}" --seq 256 --micro-batch 8 --lr 1e-3 --warmup 15 \
  --eval-every 50 --log-every 10 --save-dir runs/main --save-every 50 --report runs/main/report.json
