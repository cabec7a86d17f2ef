#!/usr/bin/python3
"""Summarise the transfers and waits of an origami --trace file, per rank and traffic category.

  tools/trace_transfers.py trace.json [--skip-steps 1] [--category acts]

For each rank: every transfer (a span on the communication track: post to completion, with its
received bytes) and every wait (a "wait ..." span on the compute track) inside the steps after
the first --skip-steps (warm-up), grouped by category (the span name's first word): count,
median and 90th percentile in ms, the median GB/s of the transfers, and the waits' total per step.
Uses only the standard library.
"""
import argparse
import collections
import json
import sys


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--skip-steps", type=int, default=1, help="leading steps left out (warm-up)")
    ap.add_argument("--category", default="", help="only this category (e.g. acts, kv, grads)")
    a = ap.parse_args()
    j = json.load(open(a.trace))
    ev = [e for e in (j["traceEvents"] if isinstance(j, dict) else j) if e.get("ph") == "X"]
    if not ev:
        sys.exit(f"{a.trace}: no complete spans (is it an origami --trace file?)")
    print(f"{a.trace}: steps after the first {a.skip_steps}; ms (median, p90), GB/s of the median transfer")
    print("| rank | category | transfers | median | p90 | GB/s | waits | wait median | waits per step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pid in sorted({e["pid"] for e in ev}):
        mine = [e for e in ev if e["pid"] == pid]
        steps = sorted((e for e in mine if e["name"].startswith("step ")), key=lambda e: e["ts"])
        kept = steps[a.skip_steps:]
        if not kept:
            sys.exit(f"rank {pid}: {len(steps)} step(s), none left after --skip-steps {a.skip_steps}")
        t0 = kept[0]["ts"]
        t1 = kept[-1]["ts"] + kept[-1]["dur"]
        xfer, xbytes, waits = collections.defaultdict(list), collections.defaultdict(list), collections.defaultdict(list)
        for e in mine:
            if not (t0 <= e["ts"] < t1):
                continue
            name = e["name"]
            if name.startswith("wait "):
                waits[name.split()[1]].append(e["dur"] / 1e3)
            elif "bytes" in e.get("args", {}):
                cat = name.split()[0]
                xfer[cat].append(e["dur"] / 1e3)
                xbytes[cat].append(e["args"]["bytes"])
        for cat in sorted(set(xfer) | set(waits)):
            if a.category and cat != a.category:
                continue
            d, w = xfer.get(cat, []), waits.get(cat, [])
            mb = pct(xbytes.get(cat, []), 0.5)
            md = pct(d, 0.5)
            gbs = f"{mb / (md * 1e-3) / 1e9:.2f}" if md > 0 and mb > 0 else "—"
            print(f"| {pid} | {cat} | {len(d)} | {md:.2f} | {pct(d, 0.9):.2f} | {gbs} | {len(w)} | "
                  f"{pct(w, 0.5):.2f} | {sum(w) / len(kept):.1f} |")


if __name__ == "__main__":
    main()
