#!/bin/bash
# libFuzzer runs of the fuzz targets (fuzz/: the safetensors reader, the config parser, grad's
# tokens reader). Builds build-fuzz with Debian's clang (coverage, AddressSanitizer and
# UndefinedBehaviorSanitizer), runs each target for SECONDS on a copy of its seed corpus
# (fuzz/corpus/T; new inputs stay in build-fuzz/corpus-T), and prints per target its exit status
# and libFuzzer's final statistics (executions, coverage). A crash, a sanitizer report, an
# uncaught exception (anything but origami's Error, which the targets expect) or a timeout fails.
# The suite runs the same targets without libFuzzer (fuzz_smoke_*: the corpus and 3000 mutations).
# usage: tools/fuzz.sh [SECONDS] [TARGET...]     (default: 600 s each; safetensors config tokens)
set -uo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
shift $(($# > 0 ? 1 : 0))
TARGETS=${*:-safetensors config tokens}
FLAGS="-O1 -g -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=None -DORIGAMI_CUDA=OFF \
  -DORIGAMI_BENCH=OFF -DBUILD_TESTING=OFF -DORIGAMI_FUZZ=ON -DCMAKE_CXX_FLAGS="$FLAGS" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" > /dev/null &&
  ninja -C build-fuzz $(for t in $TARGETS; do echo fuzz_$t; done) > build-fuzz/build.log 2>&1 ||
  { echo "build failed: see build-fuzz/build.log"; exit 1; }
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
fails=0
for t in $TARGETS; do
  mkdir -p build-fuzz/corpus-$t
  cp -n fuzz/corpus/$t/* build-fuzz/corpus-$t/
  build-fuzz/fuzz_$t -max_total_time=$SECS -print_final_stats=1 -rss_limit_mb=4096 -max_len=65536 \
    -timeout=10 build-fuzz/corpus-$t > build-fuzz/fuzz_$t.log 2>&1
  rc=$?
  [ $rc -eq 0 ] || fails=$((fails + 1))
  echo "$t: exit $rc; $(grep -E '^#[0-9]+' build-fuzz/fuzz_$t.log | tail -1)"
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' build-fuzz/fuzz_$t.log | tr '\n' ' '
  echo
  [ $rc -eq 0 ] || grep -E 'ERROR|==[0-9]+==|terminate called|what\(\)' build-fuzz/fuzz_$t.log | head -5
done
echo "fuzz: $fails target(s) failed"
[ $fails -eq 0 ]
