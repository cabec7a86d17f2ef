#!/usr/bin/env bash
# Installs every Debian package origami needs (compiler and CMake included), listed with
# pinned versions in tools/packages.txt. Idempotent, non-interactive, as root. If the archive
# has moved on from a pinned version, apt fails loudly rather than building against something
# untested (ORIGAMI_UNPINNED=1 accepts the archive's current candidate instead).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ $(id -u) == 0 ]] || { echo "setup.sh: run as root (it installs Debian packages)" >&2; exit 2; }

mapfile -t lines < <(grep -vE '^\s*(#|$)' "$here/packages.txt")
want=()
for line in "${lines[@]}"; do
  read -r pkg ver <<<"$line"
  have=$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null || true)
  if [[ $ver == "*" || ${ORIGAMI_UNPINNED:-0} == 1 ]]; then
    [[ $have == "install ok installed "* ]] || want+=("$pkg")
  elif [[ $have != "install ok installed $ver" ]]; then
    want+=("$pkg=$ver")
  fi
done

if ((${#want[@]})); then
  echo "setup.sh: installing ${#want[@]} package(s): ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends --allow-downgrades "${want[@]}" >/dev/null
fi

# One OpenMP runtime for everything: BLAS calls made inside our own parallel regions then run
# single-threaded instead of oversubscribing the cores.
update-alternatives --set libblas.so.3-x86_64-linux-gnu \
  /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 >/dev/null 2>&1 || true
update-alternatives --set libopenblas.so.0-x86_64-linux-gnu \
  /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 >/dev/null 2>&1 || true

# The corpus is vendored (data/moby_dick.txt); verify it is intact.
echo "fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240  $here/../data/moby_dick.txt" \
  | sha256sum --check --quiet || { echo "setup.sh: data/moby_dick.txt is corrupt; re-fetch with tools/fetch_corpus.sh" >&2; exit 1; }
echo "setup.sh: all packages present"
