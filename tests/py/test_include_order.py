"""The folders of src/ depend one way (docs/design.md, "Layout of the tree"): every `#include
"folder/..."` of a file in src/A/ names A itself or a folder of a lower level. A folder-level
cycle is an arrow against the order on one of its edges, so this finds cycles too. Also: the
communicator interface (comm/comm.h) does not include <mpi.h>, and every folder of src/ has a
level (a new folder must be placed in the order, here and in the docs).
Usage: test_include_order.py SRC_DIR"""
import os
import re
import sys

# Lower levels first; folders of one level are siblings and may not include each other.
LEVELS = [["core"], ["kernels"], ["comm"], ["cuda", "runtime"], ["model"], ["io"], ["parallel"],
          ["train", "infer"], ["plan"], ["cli"]]
LEVEL = {f: i for i, group in enumerate(LEVELS) for f in group}

src = sys.argv[1]
bad = []
folders = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))
for d in folders:
    if d not in LEVEL:
        bad.append(f"src/{d}/ has no place in the dependency order")
edges = {}
for d in folders:
    for root, _, files in os.walk(os.path.join(src, d)):
        for f in files:
            if not f.endswith((".h", ".cpp", ".cu", ".cuh")):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)
            for n, line in enumerate(open(path, encoding="utf-8"), 1):
                m = re.match(r'\s*#\s*include\s+"([a-z_]+)/', line)
                if m and m.group(1) != d:
                    t = m.group(1)
                    edges.setdefault((d, t), []).append(f"{rel}:{n}")
                    if t not in LEVEL:
                        bad.append(f"{rel}:{n} includes {t}/, which has no place in the order")
                    elif d in LEVEL and LEVEL[t] >= LEVEL[d]:
                        bad.append(f"{rel}:{n}: {d}/ -> {t}/ points against the order "
                                   f"({' -> '.join('/'.join(g) for g in LEVELS)})")
for line in open(os.path.join(src, "comm", "comm.h"), encoding="utf-8"):
    if re.match(r"\s*#\s*include\s*<mpi\.h>", line):
        bad.append("comm/comm.h includes <mpi.h>: the interface must not name MPI")
for (a, b), where in sorted(edges.items()):
    print(f"{a:>9} -> {b:<9} {len(where):3d} includes")
for b in bad:
    print("FAIL " + b)
if bad:
    sys.exit(f"{len(bad)} include(s) against the dependency order")
print(f"include order: {len(folders)} folders, {len(edges)} folder-level arrows, all downward")
