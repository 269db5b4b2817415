#!/usr/bin/env python3
"""Merge per-rank dgrad timelines (Chrome trace JSON) into one trace.

  scripts/merge_timeline.py FILE              merges FILE.rank0, FILE.rank1, ... into FILE
  scripts/merge_timeline.py -o OUT IN [IN...]  merges the given files into OUT

Each rank's file (dg_timeline, or examples/mnist_mlp --timeline FILE under
mpirun) holds that rank's events with pid = rank and wall-clock timestamps
in microseconds. The merge keeps every event and shifts all timestamps by
the earliest one, so the trace starts at 0. Open the result in
https://ui.perfetto.dev or chrome://tracing. Only the standard library.
"""
import argparse
import glob
import json
import re
import sys


def rank_files(base):
    files = glob.glob(glob.escape(base) + ".rank*")
    ranked = []
    for f in files:
        m = re.fullmatch(re.escape(base) + r"\.rank(\d+)", f)
        if m:
            ranked.append((int(m.group(1)), f))
    return [f for _, f in sorted(ranked)]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", help="merged trace (default: FILE when given one FILE)")
    ap.add_argument("inputs", nargs="+", help="FILE (then FILE.rank*) or the per-rank files")
    a = ap.parse_args(argv)
    if a.output:
        inputs, out = a.inputs, a.output
    elif len(a.inputs) == 1:
        out = a.inputs[0]
        inputs = rank_files(out)
        if not inputs:
            sys.exit(f"merge_timeline: no {out}.rank<N> files")
    else:
        sys.exit("merge_timeline: several inputs need -o OUT")

    events = []
    for path in inputs:
        try:
            with open(path) as f:
                trace = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"merge_timeline: {path}: {e}")
        evs = trace["traceEvents"] if isinstance(trace, dict) else trace
        events.extend(evs)
    ts = [e["ts"] for e in events if "ts" in e]
    t0 = min(ts) if ts else 0
    for e in events:
        if "ts" in e:
            e["ts"] -= t0
    # metadata first, then events by time
    events.sort(key=lambda e: (e.get("ph") != "M", e.get("ts", 0)))
    with open(out, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms",
                   "otherData": {"merged_from": inputs, "start_unix_us": t0}}, f, separators=(",", ":"))
    print(f"merge_timeline: {len(inputs)} file(s), {len(events)} events -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
