#!/usr/bin/python3
"""Tables of `bench/plan_validate.py`'s rows (rows_*.json), as docs/results.md prints them: per
(S, link) a row, per layout "measured step, error (predicted/measured exposed %)", then the median
and worst |error|, the exposed shares' gap, and how many pairs of layouts measured more than 10%
apart keep their order in the prediction. --replace takes the cells of a second rows file over
the first's (the same cells measured again, e.g. after a calibration fix). --noise takes a second
grid's measurements of the same cells (the same engine, another hour) as if they were the
prediction and prints the same statistics: the error a perfect model would still show on this
machine, one run per cell. --within (a grid run with --repeat 2 or more) does the same inside
one grid: each cell's first run as the prediction of its second, minutes apart.
usage: bench/plan_validate_table.py ROWS_JSON [--replace ROWS_JSON] [--noise ROWS_JSON] [--within]"""
import argparse
import json

LAYOUTS = ["single", "tsp=2", "fsdp_sp=2", "tp=2", "tp=2 off", "sp=2", "tsp=4", "tp=2,sp=2"]


def load(path):
    return [tuple(r) for r in json.load(open(path))["rows"]]


def merge(base, repl):
    new = {r[:3]: r for r in repl}
    return [new.get(r[:3], r) for r in base]


def table(rows):
    out = ["| S | link | " + " | ".join(x.replace(" off", " (SP off)") for x in LAYOUTS) + " |",
           "|---|---|" + "---|" * len(LAYOUTS)]
    for S in sorted({r[0] for r in rows}):
        for link in sorted({r[1] for r in rows}):
            cells = []
            for name in LAYOUTS:
                r = [x for x in rows if x[0] == S and x[1] == link and x[2] == name]
                if not r:
                    cells.append("—")
                    continue
                _, _, _, p, m, pe, me = r[0]
                cells.append(f"{m:.2f} s, {100 * (p - m) / m:+.0f}% ({100 * pe:.0f}/{100 * me:.0f})")
            lk = "—" if not link else f"{link.split(',')[0]} GB/s, {link.split(',')[1]} µs"
            out.append(f"| {S} | {lk} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def stats(rows):
    err = sorted(abs(r[3] - r[4]) / r[4] for r in rows)
    gap = sorted(abs(r[5] - r[6]) for r in rows)
    pairs = kept = 0
    for S, link in {(r[0], r[1]) for r in rows}:
        cell = [r for r in rows if r[0] == S and r[1] == link]
        for a in cell:
            for b in cell:
                if a[4] < b[4] / 1.1:
                    pairs += 1
                    kept += a[3] < b[3]
    return (f"{len(rows)} cells: |error| median {100 * err[len(err) // 2]:.1f}%, worst "
            f"{100 * err[-1]:.1f}%; exposed share |predicted − measured| median "
            f"{100 * gap[len(gap) // 2]:.0f} points, worst {100 * gap[-1]:.0f}; measured order "
            f"(pairs > 10% apart) kept in {kept} of {pairs}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rows")
    ap.add_argument("--replace", default=None)
    ap.add_argument("--noise", default=None,
                    help="another grid's rows of the same cells: its measurements as the "
                         "prediction of this one's")
    ap.add_argument("--within", action="store_true",
                    help="each cell's first run as the prediction of its second (--repeat >= 2)")
    a = ap.parse_args()
    rows = load(a.rows)
    if a.replace:
        rows = merge(rows, load(a.replace))
    print(table(rows) + "\n\n" + stats(rows))
    if a.noise:
        again = {r[:3]: r for r in load(a.noise)}
        replay = [(S, link, name, again[(S, link, name)][4], m, again[(S, link, name)][6], me)
                  for S, link, name, _, m, _, me in rows if (S, link, name) in again]
        print(f"\nthe other grid's measurements as the prediction (the machine's own noise): "
              f"{stats(replay)}")
    if a.within:
        runs = json.load(open(a.rows)).get("row_runs", [])
        pairs = [(r[0], r[1], r[2], x[0][0], x[1][0], x[0][1], x[1][1])
                 for r, x in zip(load(a.rows), runs) if len(x) >= 2]
        if not pairs:
            raise SystemExit(f"--within: {a.rows} has no cell with two runs (plan_validate.py "
                             f"--repeat 2 or more records them)")
        print(f"\neach cell's first run as the prediction of its second (the machine's own noise, "
              f"minutes apart): {stats(pairs)}")


if __name__ == "__main__":
    main()
