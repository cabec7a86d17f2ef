#!/usr/bin/env bash
# Re-creates data/tokenizer.model (committed) from the bundled corpus with Debian's sentencepiece.
# BPE, 8000 pieces, no BOS/EOS/PAD, <unk> = 0. One thread, so the result is reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."
spm_train --input=data/moby_dick.txt --model_prefix=data/tokenizer --vocab_size=8000 \
  --model_type=bpe --character_coverage=1.0 --num_threads=1 --max_sentence_length=8192 \
  --bos_id=-1 --eos_id=-1 --pad_id=-1 --unk_id=0
