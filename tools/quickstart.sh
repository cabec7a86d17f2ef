#!/usr/bin/env bash
# README command 1: install what is needed, build, and run the main job — a small TSP training run
# (2 ranks, --layout tsp=2: each rank holds half of every weight and half of the tokens) under
# mpirun on the bundled corpus (Moby Dick, sentencepiece BPE 8000) with the small config (~21M
# parameters). The book is first prepared as a dataset of its chapters (one document each,
# runs/moby_chapters/), and training packs whole chapters into each sequence of 256 with document
# masks (each chapter attends only to itself, positions restart at its start; longer chapters
# are split). Prints loss, held-out loss, tokens/s and peak memory per category; writes
# checkpoints and the run report (per-rank memory and communication bytes) under runs/main/;
# then generates text from the trained model with TSP inference on the same ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One OpenMP/BLAS thread per rank (two ranks on a two-core machine); --bind-to none lets the OS
# place them. ORIGAMI_RANKS changes the TSP degree (it must divide the 4 KV heads).
ranks=${ORIGAMI_RANKS:-2}
# The tokenizer has no end-of-sequence id: <unk> (0), which the book never produces, ends each
# document.
build/origami data prepare --tokenizer data/tokenizer.model --eos-id 0 --split-at CHAPTER \
  --out runs/moby_chapters data/moby_dick.txt
mpirun -np "$ranks" --bind-to none -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
  build/origami train --layout "tsp=$ranks" --config configs/small.json \
  --dataset runs/moby_chapters --pack documents \
  --steps "${ORIGAMI_STEPS:-150}" --seq 256 --micro-batch 8 --lr 1e-3 --warmup 15 \
  --eval-every 50 --log-every 10 --save-dir runs/main --save-every 50 --report runs/main/report.json
mpirun -np "$ranks" --bind-to none -x OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
  build/origami generate --layout "tsp=$ranks" --config configs/small.json --checkpoint runs/main \
  --prompt "Call me Ishmael. Some years ago" --max-new-tokens 48 --temperature 0.8 --top-k 40
