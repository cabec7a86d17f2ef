"""--trace, --emulate-link and the time accounting (issue 6), on 2 ranks under tsp=2 and tp=2:
  * an emulated link changes no result: losses bit-identical to the run without it;
  * the trace is valid Chrome-trace JSON with a process per rank and a compute and a
    communication track; the bytes of its communication spans add up to the bytes the run report
    records for that rank;
  * the progress thread changes no result: --progress-thread 0 and 1 give the same losses bit for
    bit as the default;
  * every transfer's span lasts at least latency + bytes/bandwidth (the emulation's promise);
  * tools/trace_plot.py renders a window of the trace to a PNG (headless, gnuplot);
  * the report splits each rank's step into compute, exposed communication and skew;
  * `origami bench` runs two layouts (with the link, overlapped and blocking, each three times with
    --repeat 3) into one table.
Usage: test_trace.py ORIGAMI_BINARY WORKDIR"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

GBPS, LAT_US = 0.5, 20.0


def total_bytes(rank_report):
    return sum(v for ph in rank_report["comm_bytes"].values() for v in ph.values())


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    fails = []
    args = ["--steps", "3", "--seq", "64", "--micro-batch", "2", "--eval-every", "0", "--lr", "1e-3"]
    for layout in ("tsp=2", "tp=2"):
        plain, _ = harness.train(binary, work, layout + "plain", args, ranks=2, layout=layout)
        trace = os.path.join(work, layout + ".trace.json")
        link, _ = harness.train(binary, work, layout + "link",
                                args + ["--emulate-link", f"{GBPS},{LAT_US}", "--trace", trace], ranks=2,
                                layout=layout)
        same = plain["losses"] == link["losses"]
        for pt in ("0", "1"):
            other, _ = harness.train(binary, work, layout + "pt" + pt, args + ["--progress-thread", pt],
                                     ranks=2, layout=layout)
            print(f"{layout}: --progress-thread {pt} losses bit-identical: {other['losses'] == plain['losses']}")
            if other["losses"] != plain["losses"]:
                fails.append(f"{layout} --progress-thread {pt}")
        ev = json.load(open(trace))["traceEvents"]
        spans = [e for e in ev if e["ph"] == "X"]
        pids = {e["pid"] for e in spans}
        tids = {e["tid"] for e in spans}
        sums = {p: sum(e["args"]["bytes"] for e in spans if e["pid"] == p and e["tid"] == 1) for p in pids}
        want = {r["rank"]: total_bytes(r) for r in link["ranks"]}
        short = [e for e in spans if e["tid"] == 1 and e["args"]["bytes"] > 0
                 and e["dur"] + 1 < LAT_US + e["args"]["bytes"] / (GBPS * 1e3)]
        times = all(set(r["time_s"]) == {"step_median", "compute", "comm_exposed", "skew"}
                    and r["time_s"]["comm_exposed"] is not None for r in link["ranks"])
        print(f"{layout}: losses bit-identical with the emulated link {same}; trace ranks {sorted(pids)} "
              f"tracks {sorted(tids)}; comm span bytes {sums} = report {want}: {sums == want}; "
              f"spans shorter than latency + bytes/bandwidth: {len(short)}; time split reported: {times}")
        if not (same and pids == {0, 1} and tids == {0, 1} and sums == want and not short and times):
            fails.append(layout)
        png = os.path.join(work, layout + ".trace.png")
        tool = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "trace_plot.py")
        harness.run([sys.executable, tool, trace, "--out", png, "--window", "L0 fwd", "--occurrence", "2"])
        drawn = os.path.exists(png) and os.path.getsize(png) > 10000
        print(f"{layout}: trace_plot.py drew {png}: {drawn}")
        if not drawn:
            fails.append(layout + " trace_plot")
    # origami bench runs each layout as its own mpirun job and tabulates them (no timing checked)
    png = os.path.join(work, "bench.png")
    r = harness.run([binary, "bench", "--config", "configs/tiny.json", "--layout", "tsp=2", "--layout", "tp=2",
                     "--seq", "64", "--global-batch", "2", "--steps", "2", "--emulate-link", "1",
                     "--repeat", "3", "--out", os.path.join(work, "bench"), "--plot", png])
    rows = [line for line in r.stdout.splitlines() if line.startswith("| tsp=2 |") or line.startswith("| tp=2 |")]
    reports = [f for f in os.listdir(os.path.join(work, "bench")) if f.endswith(".json")]
    ok = (len(rows) == 2 and all(len(line.split("|")) == 14 for line in rows) and os.path.exists(png)
          and len(reports) == 2 * 3 * 3 and "median of 3 run(s)" in r.stdout)
    print(f"origami bench: {len(rows)} layout rows with every column, {len(reports)} reports (2 layouts x 3 "
          f"variants x --repeat 3), plot written: {ok}")
    if not ok:
        fails.append("origami bench")
    if fails:
        print("FAILED: " + ", ".join(fails))
        sys.exit(1)


if __name__ == "__main__":
    main()
