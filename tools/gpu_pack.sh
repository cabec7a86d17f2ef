#!/bin/bash
# Builds the CUDA backend here (Release, sm_90a) and packs what a lent GPU machine needs into .gpu/
# (git-ignored): the GPU test and bench binaries, and the shared libraries they load that such a
# machine lacks (oneDNN, OpenBLAS and their runtime; not glibc, libstdc++ or CUDA's own, which it
# has), as one xz archive. tools/gpu_check.sh uses .gpu/ when present, else builds there.
# usage: tools/gpu_pack.sh            (then carry .gpu to the GPU machine)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build-cuda}
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DORIGAMI_CUDA=ON >/dev/null
ninja -C "$B" gpu_check_binaries
rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib .gpu/lib/mpi
cp "$B"/tests/cuda/test_* "$B"/bench/bench_gpu "$B"/origami-cuda .gpu/bin/
# OpenMPI's libraries go apart (lib/mpi): gpu_check.sh uses them only where the machine has no
# libmpi.so.40 of its own, since they must match that machine's mpirun.
MPI_RE='/(libmpi|libmpi_cxx|libopen-pal|libopen-rte|libhwloc|libevent[^/]*|libudev|libz)\.so'
for b in .gpu/bin/*; do ldd "$b"; done | awk '/=>/ {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so|/usr/local/cuda' |
  while read -r lib; do
    if [[ $lib =~ $MPI_RE ]]; then cp -L "$lib" .gpu/lib/mpi/; else cp -L "$lib" .gpu/lib/; fi
  done
tar -C .gpu -cf - lib | xz -T0 -6 > .gpu/lib.tar.xz
rm -rf .gpu/lib
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
du -sh .gpu/bin .gpu/lib.tar.xz
