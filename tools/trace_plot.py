#!/usr/bin/python3
"""Render a window of an origami --trace file (Chrome trace JSON) as a PNG timeline, headless.

One band per rank: the compute track (nested spans stacked: layer, ring step, GEMM) above the
communication track (each transfer from post to completion; overlapping transfers get lanes).
Colours follow the traffic category in the span name; waits are black.

  tools/trace_plot.py trace.json --out ring.png --window "L1 fwd" [--occurrence 2] [--rank 0]
                      [--length MS]

--window picks the N-th span of that name on --rank's compute track and draws every rank over its
time range (plus --pad of its length on each side). Uses only the standard library and gnuplot.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

COMPUTE = [  # compute track: (substring of the span name, colour, legend)
    ("wait", "#000000", "wait (exposed communication)"),
    ("GEMM", "#fdd0a2", "MLP GEMM"),
    ("attention", "#9ecae1", "attention head group"),
]
COLOURS = [  # communication track, by traffic category
    ("mlp_weights", "#e6550d", "MLP weight shards"),
    ("attn_weights", "#3182bd", "attention weights"),
    ("kv", "#31a354", "K/V"),
    ("grads", "#d62728", "gradients"),
    ("embed_head", "#756bb1", "embedding / head"),
    ("acts", "#8c564b", "activations (TP)"),
]
DEFAULT = ("#d9d9d9", "other compute (layer, ring step, ...)")


def colour(name, tid):
    for key, col, _ in (COMPUTE if tid == 0 else COLOURS):
        if key in name:
            return col
    return DEFAULT[0]


def lanes(spans, nested):
    """Assign each (t0, t1, ...) a lane: nesting depth for compute, first free lane for comm."""
    out, ends = [], []
    for s in sorted(spans, key=lambda s: (s[0], -s[1])):
        if nested:
            while ends and ends[-1] <= s[0]:
                ends.pop()
            out.append((len(ends), s))
            ends.append(s[1])
        else:
            for i, e in enumerate(ends):
                if e <= s[0]:
                    ends[i] = s[1]
                    out.append((i, s))
                    break
            else:
                ends.append(s[1])
                out.append((len(ends) - 1, s))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--window", required=True, help='compute span name, e.g. "L1 fwd"')
    ap.add_argument("--occurrence", type=int, default=1, help="which occurrence (1 = first)")
    ap.add_argument("--rank", type=int, default=0, help="rank whose span sets the window")
    ap.add_argument("--length", type=float, default=0,
                    help="window length in ms from the span's start (default: the span's own)")
    ap.add_argument("--pad", type=float, default=0.02, help="margin, fraction of the window")
    ap.add_argument("--title", default="")
    a = ap.parse_args()

    with open(a.trace) as f:
        ev = json.load(f)
    ev = ev["traceEvents"] if isinstance(ev, dict) else ev
    ev = [e for e in ev if e.get("ph") == "X"]
    hits = sorted(e["ts"] for e in ev
                  if e["pid"] == a.rank and e["tid"] == 0 and e["name"] == a.window)
    if len(hits) < a.occurrence:
        sys.exit(f"trace_plot: span '{a.window}' occurs {len(hits)} times on rank {a.rank}")
    w = next(e for e in ev if e["pid"] == a.rank and e["tid"] == 0 and e["name"] == a.window
             and e["ts"] == hits[a.occurrence - 1])
    dur = a.length * 1e3 if a.length > 0 else w["dur"]
    pad = a.pad * dur
    t0, t1 = w["ts"] - pad, w["ts"] + dur + pad
    ranks = sorted({e["pid"] for e in ev})

    rects, yt, y = [], [], 0.0
    for r in reversed(ranks):
        for tid, label in ((1, "comm"), (0, "compute")):
            spans = [(max(e["ts"], t0), min(e["ts"] + e["dur"], t1), e["name"], e)
                     for e in ev if e["pid"] == r and e["tid"] == tid
                     and e["ts"] < t1 and e["ts"] + e["dur"] > t0]
            placed = lanes(spans, nested=(tid == 0))
            n = 1 + max((l for l, _ in placed), default=0)
            for l, (s0, s1, name, e) in placed:
                yy = y + (n - 1 - l if tid == 0 else l)
                rects.append((s0 - t0, s1 - t0, yy + 0.08, yy + 0.92, colour(name, tid)))
            yt.append((y + n / 2, f"rank {r} {label}"))
            y += n + (0.6 if tid == 1 else 1.2)

    ms = 1e-3
    with tempfile.TemporaryDirectory() as d:
        gp = os.path.join(d, "plot.gp")
        with open(gp, "w") as g:
            g.write("set terminal pngcairo size 1400,%d noenhanced font ',10'\n" % (120 + 28 * y))
            g.write(f"set output '{a.out}'\n")
            g.write(f"set xrange [0:{(t1 - t0) * ms}]\nset yrange [0:{y}]\n")
            g.write("set xlabel 'ms from the start of the window'\nunset ytics\n")
            g.write("set ytics (" + ", ".join(f"'{n}' {p}" for p, n in yt) + ")\n")
            g.write("set title '" + (a.title or f"{a.window} (rank {a.rank}, occurrence "
                                     f"{a.occurrence})").replace("'", "") + "'\n")
            for i, (x0, x1, y0, y1, c) in enumerate(rects, 1):
                g.write(f"set object {i} rect from {x0 * ms},{y0} to {x1 * ms},{y1} "
                        f"fc rgb '{c}' fs solid 0.9 border lc rgb '#ffffff' lw 0.3\n")
            g.write("set key outside right top\n")
            keys = COMPUTE + [(None,) + DEFAULT] + COLOURS
            g.write("plot " + ", ".join(
                f"NaN with boxes fs solid fc rgb '{k[1]}' title '{k[2]}'" for k in keys) + "\n")
        subprocess.run(["gnuplot", gp], check=True)
    print(f"trace_plot: {a.out} ({len(rects)} spans, {(t1 - t0) * ms:.1f} ms)")


if __name__ == "__main__":
    main()
