#!/usr/bin/env python3
"""Fit the alpha-beta cost of an all-reduce and project data-parallel step
times to 8-256 ranks.

usage: bench/alpha_beta.sh > ab.jsonl
       bench/project_scaling.py ab.jsonl MODEL=PARAMS:STEP_MS [MODEL=PARAMS:STEP_MS ...]

Input: the JSON lines of bench/alpha_beta.sh (2 ranks, one per host; rate,
alg, bytes, median_call_us). For each link rate and algorithm it fits
t = a + b * bytes by least squares on the relative error (weights 1 / t^2,
so the 1 KiB calls weigh as much as the 16 MiB ones and a comes out of the
small messages, b out of the large). a and b are the 2-rank costs; the
projection to p ranks scales them with the schedule of each algorithm:
  ring  t(p, n) = (p - 1) a + 2 (p - 1) / p * n * b
        2 (p - 1) messages of n / p bytes (reduce-scatter, then all-gather);
        at p = 2 it is a + n b, the measurement
  tree  t(p, n) = log2(p) * (a + n * b)
        log2(p) levels, each costing what the 2-rank binomial reduce and
        broadcast of all n bytes cost (libnbc's binomial overlaps the two
        halves at 2 ranks, so its b is not twice the ring's)
The assumptions are printed under the tables (ASSUMPTIONS below).

MODEL=PARAMS:STEP_MS: the model's parameter count (floats; 4 bytes each on
the wire) and its measured one-rank step time in milliseconds.
"""
import json
import math
import sys
from collections import defaultdict


def fit(points):
    """Weighted least squares t = a + b x over (x, t) pairs, weights 1 / t^2."""
    w = [1.0 / (t * t) for _, t in points]
    sw = sum(w)
    sx = sum(wi * x for wi, (x, _) in zip(w, points))
    st = sum(wi * t for wi, (_, t) in zip(w, points))
    sxx = sum(wi * x * x for wi, (x, _) in zip(w, points))
    sxt = sum(wi * x * t for wi, (x, t) in zip(w, points))
    b = (sw * sxt - sx * st) / (sw * sxx - sx * sx)
    a = (st - b * sx) / sw
    return a, b


def allreduce_s(alg, p, nbytes, a, b):
    if alg == "ring":
        return (p - 1) * a + 2 * (p - 1) / p * nbytes * b
    return math.log2(p) * (a + nbytes * b)


ALG_NAME = {"ring": "ring", "binomial": "tree"}
ASSUMPTIONS = ("every rank pair is joined by a link like the measured one (no shared switch, no "
               "congestion, full bisection); the 2-rank a and b scale with the ring's and the tree's "
               "schedules; the per-rank batch, and so the compute per step, stays as at one rank (weak "
               "scaling); the whole gradient is reduced once per step in fp32 (--bf16-allreduce halves "
               "the bytes); 'without overlap' is compute + all-reduce (--no-overlap), 'with perfect "
               "overlap' is max(compute, all-reduce), DDP's buckets lie between; efficiency = compute / "
               "step; the all-reduce's arithmetic and the optimizer step are in the compute.")


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    pts = defaultdict(list)
    with open(argv[1]) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                pts[(r["rate"], r["alg"])].append((r["bytes"], r["median_call_us"] * 1e-6))
    models = []
    for m in argv[2:]:
        try:
            name, rest = m.split("=")
            params, step_ms = rest.split(":")
            models.append((name, int(params), float(step_ms) * 1e-3))
        except ValueError:
            print("project_scaling: '%s' is not MODEL=PARAMS:STEP_MS" % m, file=sys.stderr)
            return 2

    print("Fitted from 2 ranks, one per host (t = a + b * bytes, relative least squares):\n")
    print("| link | algorithm | sizes (bytes) | a (us) | b (ns/byte) | 8 / b (Gbit/s) | largest misfit |")
    print("|---|---|---|---|---|---|---|")
    coef = {}
    for (rate, alg), p in sorted(pts.items()):
        if len(p) < 2:
            print("project_scaling: %s %s: need two message sizes or more, have %d" % (rate, alg, len(p)),
                  file=sys.stderr)
            return 2
        a, b = fit(p)
        coef[(rate, alg)] = (a, b)
        x, t = max(p, key=lambda q: abs(a + b * q[0] - q[1]) / q[1])
        print("| %s | %s | %d-%d | %.1f | %.3f | %.2f | %+.0f%% at %d |" % (
            rate, ALG_NAME.get(alg, alg), min(q[0] for q in p), max(q[0] for q in p), a * 1e6, b * 1e9,
            8 / b / 1e9, 100 * (a + b * x - t) / t, x))
    print()
    ranks = [2, 8, 16, 32, 64, 128, 256]
    for rate in sorted({r for r, _ in coef}):
        print("Link %s: the projected all-reduce of the whole fp32 gradient per step in ms (the faster "
              "algorithm), the step time without overlap (compute + all-reduce, ms), and the scaling "
              "efficiency without overlap / with perfect overlap:\n" % rate)
        print("| model | params | step at 1 rank (ms) | " + " | ".join("%d ranks" % p for p in ranks) + " |")
        print("|---|---|---|" + "---|" * len(ranks))
        for name, params, step in models:
            cells = []
            for p in ranks:
                t, alg = min((allreduce_s(alg, p, params * 4, *coef[(rate, alg)]), alg)
                             for alg in ALG_NAME if (rate, alg) in coef)
                cells.append("%.2f %s, %.2f, %.0f%% / %.0f%%" % (t * 1e3, ALG_NAME[alg], (step + t) * 1e3,
                                                                 100 * step / (step + t),
                                                                 100 * step / max(step, t)))
            print("| %s | %d | %.3f | %s |" % (name, params, step * 1e3, " | ".join(cells)))
        print()
    print("Assumptions: " + ASSUMPTIONS)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
