#!/usr/bin/python3
"""`origami plan --time` against measured runs on this machine (issue 19). Calibrates a hardware
profile per world size (`mpirun -np N origami calibrate`: all ranks measure at once, as the runs'
ranks share the cores), then for every (layout, S[, link]) trains a few steps with --synthetic
(--repeat runs per cell, the median run; each run's median step without the warm-up) and predicts the same step with
`plan --time`; prints predicted against measured step time and exposed-communication share, the
median and worst absolute errors, and whether the measured order of the layouts is kept, and
writes a plot (gnuplot) of predicted against measured.
The calibration (`calibrate --seq S... --layout L...`: the GEMM shapes those runs issue, the median
of --rounds rounds) is taken once per world size; --reuse-calibration predicts a second config
from the profiles already in --out (a config the calibration never saw).
--calibrate-each calibrates right before every cell instead (its world size, S and layout; with
--bracket also right after it, predicting from both), so that a prediction meets the shared host
as the run does; --calibrate-config calibrates on another config's shapes (to predict a config the
calibration never saw). Runs and calibrations bind their ranks to the same cores (--bind).
usage: bench/plan_validate.py [--config configs/small-long.json] [--seq 1024 4096 8192]
                              [--steps 4] [--link 1,20] [--rounds 5] [--out DIR]
                              [--reuse-calibration | --calibrate-each [--bracket]
                               [--calibrate-config C]] [--layouts L ...]"""
import argparse
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("ORIGAMI_BIN", os.path.join(ROOT, "build/origami"))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
LAYOUTS = [("single", 1), ("tsp=2", 2), ("fsdp_sp=2", 2), ("tp=2", 2), ("tp=2 off", 2), ("sp=2", 2),
           ("tsp=4", 4), ("tp=2,sp=2", 4)]


def sh(cmd):
    r = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r.stdout


def layout_flags(name):
    lay, *rest = name.split()
    f = [] if lay == "single" else ["--layout", lay]
    if rest == ["off"]:
        f += ["--tp-sequence-parallel", "off"]
    return f


def predict(config, S, name, lk, profile):
    """plan --time's training step (s) and exposed share for one cell."""
    out = sh([BIN, "plan", "--config", config, "--seq", str(S), "--time", "--hardware", profile,
              "--json", "--layout", name.split()[0]]
             + (["--tp-sequence-parallel", "off"] if name.endswith("off") else []) + lk)
    p = json.loads(out)[0]["predicted_seconds"]
    return p["train_step"], p["train_step_exposed"] / p["train_step"]


def predict_mean(config, S, name, lk, profs):
    """The mean of the predictions from several profiles (a cell bracketed by calibrations)."""
    p = [predict(config, S, name, lk, x) for x in profs]
    return sum(x[0] for x in p) / len(p), sum(x[1] for x in p) / len(p)


def save(a, rows, profiles, row_profiles, row_runs):
    tag = os.path.splitext(os.path.basename(a.config))[0]
    json.dump({"config": a.config, "seq": a.seq, "link": a.link, "machine": platform.node(),
               "rows": rows, "profiles": {n: p for n, p in profiles.items()},
               "row_profiles": row_profiles, "row_runs": row_runs},
              open(os.path.join(a.out, f"rows_{tag}.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/small-long.json")
    ap.add_argument("--seq", type=int, nargs="+", default=[1024, 4096, 8192])
    ap.add_argument("--rounds", type=int, default=5, help="calibrate --rounds")
    ap.add_argument("--reuse-calibration", action="store_true",
                    help="predict from the profiles already in --out (calibrated on another config)")
    ap.add_argument("--steps", type=int, default=4,
                    help="steps a run trains at least (its median step excludes the first)")
    ap.add_argument("--min-seconds", type=float, default=6.0,
                    help="short steps: train more steps (up to 12), so that the measured steps "
                         "last about this long (chosen from the prediction, before the run)")
    ap.add_argument("--link", default="", help="also with --emulate-link GBPS,LATENCY_US")
    ap.add_argument("--layouts", nargs="+", default=None)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per cell: the median step of each run, then the median over runs")
    ap.add_argument("--out", default="/tmp/plan_validate")
    ap.add_argument("--calibrate-each", action="store_true",
                    help="calibrate again right before every cell (its world size, S and layout, "
                         "fp32, --rounds rounds): the prediction uses the host as it is then")
    ap.add_argument("--bracket", action="store_true",
                    help="with --calibrate-each: calibrate again right after the cell's run and "
                         "predict from both (the mean): the host's drift during the run bracketed")
    ap.add_argument("--calibrate-config", default=None,
                    help="with --calibrate-each: calibrate on this config's shapes instead (to "
                         "predict a config the calibration never saw)")
    ap.add_argument("--bind", default="core:overload-allowed",
                    help="mpirun --bind-to for calibrate and the runs (the same rank on the same "
                         "core in both, so that the profile's rank_slowdown applies); 'none' to "
                         "let the ranks move")
    ap.add_argument("--repredict", default="",
                    help="a rows_*.json this script wrote: predict its measured cells again with "
                         "the current build (the model changed, the measurements did not)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    layouts = [x for x in LAYOUTS if a.layouts is None or x[0] in a.layouts]
    profiles = {}
    for n in ([] if a.repredict or a.calibrate_each else sorted({w for _, w in layouts})):
        p = os.path.join(a.out, f"calibrate_np{n}.json")
        if not a.reuse_calibration:
            lays = sorted({x.split()[0] for x, w in layouts if w == n})
            out = sh(["mpirun", "-np", str(n), "--bind-to", a.bind, BIN, "calibrate", "--config",
                      a.config, "--out", p, "--rounds", str(a.rounds)] +
                     [f for S in a.seq for f in ("--seq", str(S))] +
                     [f for x in lays for f in ("--layout", x)])
            print(out, flush=True)
        elif not os.path.exists(p):
            sys.exit(f"--reuse-calibration: {p} is missing")
        profiles[n] = p
    rows, row_profiles = [], []
    row_runs = []  # per row, every run in the order run: (step s, exposed share)
    if a.repredict:
        j = json.load(open(a.repredict))
        a.config, a.seq, a.link, profiles = j["config"], j["seq"], j["link"], j["profiles"]
        profiles = {int(k): v for k, v in profiles.items()}
        n_of = dict(LAYOUTS)
        for i, (S, link, name, _, meas, _, mexp) in enumerate(j["rows"]):
            lk = ["--emulate-link", link] if link else []
            prof = j["row_profiles"][i] if "row_profiles" in j else profiles[n_of[name]]
            pred, pexp = predict_mean(a.config, S, name, lk, prof if isinstance(prof, list) else [prof])
            rows.append((S, link, name, pred, meas, pexp, mexp))
            print(f"S={S:6d} {link or 'no link':>9s} {name:10s} predicted {pred:8.3f} s measured "
                  f"{meas:8.3f} s  error {100 * (pred - meas) / meas:+6.1f}%")
    for S in ([] if a.repredict else a.seq):
        for link in [""] + ([a.link] if a.link else []):
            for name, n in layouts:
                rep = os.path.join(a.out, "report.json")
                lk = ["--emulate-link", link] if link else []
                def calibrate(tag):
                    out = os.path.join(
                        a.out, f"calibrate_S{S}_{name.replace(' ', '_')}_{len(rows)}{tag}.json")
                    sh(["mpirun", "-np", str(n), "--bind-to", a.bind, BIN, "calibrate", "--config",
                        a.calibrate_config or a.config, "--out", out, "--rounds", str(a.rounds),
                        "--seq", str(S), "--dtype", "fp32", "--layout", name.split()[0]])
                    return out
                if a.calibrate_each:
                    profiles[n] = calibrate("")
                pred, pexp = predict(a.config, S, name, lk, profiles[n])
                steps = max(a.steps, min(12, int(a.min_seconds / pred) + 2))
                runs = []
                for _ in range(a.repeat):
                    sh(["mpirun", "-np", str(n), "--bind-to", a.bind, BIN, "train", "--config",
                        a.config, "--synthetic", "--seq", str(S), "--micro-batch", "1", "--steps",
                        str(steps), "--eval-every", "0", "--log-every", "0", "--quiet", "--report",
                        rep] + layout_flags(name) + lk)
                    j = json.load(open(rep))
                    runs.append((j["step_time_median_s"],
                                 max(r["time_s"]["comm_exposed"] for r in j["ranks"])))
                row_runs.append([(t, e / t) for t, e in runs])
                runs.sort()
                meas, mexp = runs[len(runs) // 2]
                mexp /= meas
                used = [profiles[n]]
                if a.calibrate_each and a.bracket:
                    used.append(calibrate("_after"))
                    pred, pexp = predict_mean(a.config, S, name, lk, used)
                rows.append((S, link, name, pred, meas, pexp, mexp))
                row_profiles.append(used if len(used) > 1 else used[0])
                save(a, rows, profiles, row_profiles, row_runs)
                print(f"S={S:6d} {link or 'no link':>9s} {name:10s} predicted {pred:8.3f} s "
                      f"measured {meas:8.3f} s (runs {', '.join(f'{x[0]:.3f}' for x in runs)})  error {100 * (pred - meas) / meas:+6.1f}%  exposed "
                      f"{100 * pexp:4.0f}% vs {100 * mexp:4.0f}%", flush=True)
    errs = sorted(abs(r[3] - r[4]) / r[4] for r in rows)
    med = errs[len(errs) // 2]
    print(f"\n{platform.node()}: {len(rows)} cells; |error| median {100 * med:.1f}%, worst "
          f"{100 * errs[-1]:.1f}%; exposed share within "
          f"{100 * max(abs(r[5] - r[6]) for r in rows):.0f} points")
    # the measured order of layouts kept where they differ by more than 10%
    bad = []
    for S in a.seq:
        for link in [""] + ([a.link] if a.link else []):
            cell = [r for r in rows if r[0] == S and r[1] == link]
            for x in cell:
                for y in cell:
                    if x[4] < y[4] / 1.1 and not x[3] < y[3]:
                        bad.append(f"S={S} {link}: {x[2]} faster than {y[2]} measured, not predicted")
    print("order kept" if not bad else "order NOT kept:\n  " + "\n  ".join(bad))
    print("\n| S | link | layout | predicted (s) | measured (s) | error | exposed predicted | measured |")
    print("|---|---|---|---|---|---|---|---|")
    for S, link, name, pred, meas, pexp, mexp in rows:
        print(f"| {S} | {link or '—'} | {name} | {pred:.3f} | {meas:.3f} | {100 * (pred - meas) / meas:+.1f}% "
              f"| {100 * pexp:.0f}% | {100 * mexp:.0f}% |")
    tag = os.path.splitext(os.path.basename(a.config))[0]
    dat = os.path.join(a.out, f"points_{tag}.dat")
    with open(dat, "w") as f:
        for r in rows:
            f.write(f"{r[4]} {r[3]}\n")
    png = os.path.join(a.out, f"predicted_vs_measured_{tag}.png")
    gp = (f"set terminal pngcairo size 700,600\nset output '{png}'\nset logscale xy\n"
          f"set xlabel 'measured step (s)'\nset ylabel 'predicted step (s)'\nset grid\n"
          f"set key left top\nplot '{dat}' using 1:2 with points pt 7 title 'cells', x title 'y = x', "
          f"1.1*x dt 2 title '+10%', 0.9*x dt 2 title '-10%'\n")
    subprocess.run(["gnuplot"], input=gp, text=True)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
