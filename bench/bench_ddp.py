#!/usr/bin/env python3
"""Data-parallel scaling of dgrad's examples/mnist_mlp (mpirun, DDP over MPI) against PyTorch
DDP on gloo (bench/torch_ddp_mnist_mlp.py), side by side.

For every rank count N in --ranks, each of --runs rounds runs, alternating: dgrad
(`mpirun -n N mnist_mlp`), PyTorch DDP (N ranks started by torch_ddp_mnist_mlp.py --nproc N),
and for every N >= 2 also dgrad with --no-overlap and bench/allreduce_raw.c (a bare
MPI_Allreduce of the same bytes, built here with mpicc into a temporary directory; and, as a
diagnostic, the same with MPI_Iallreduce + MPI_Wait, the calls dgrad makes). Prints
markdown tables of medians:
  1. framework, ranks, global training samples/s (all ranks' samples over the slowest rank's
     training-loop time), scaling vs 1 rank of the same framework, test accuracy;
  2. dgrad with the all-reduce overlapped with backward (default) vs --no-overlap;
  3. the gradient-reduction cost: dgrad's allreduce_seconds with --no-overlap (the whole
     reduction then happens after backward, so the time blocked in it is the reduction time)
     over the raw MPI_Allreduce time for the same bytes and the same number of calls as
     training steps; the target is <= 1.1x.
--plot FILE.png draws global samples/s against ranks for both frameworks with gnuplot
(bench/plot_scaling.gp; Debian: apt-get install gnuplot-nox).

Every process of both frameworks gets OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = --threads
(default 1); OPENBLAS_CORETYPE is removed from the environment unless --openblas-coretype
sets it, for all of them.

usage: bench/bench_ddp.py [--build DIR] [--data DIR] [--ranks 1,2] [--runs 3] [--epochs N]
           [--batch-size N] [--threads N] [--python PATH] [--openblas-coretype NAME]
           [--plot FILE.png] [--raw FILE]
"""
import argparse
import gzip
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HERE, bench_env, child_args, conditions, example_exe  # noqa: E402

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]

# The model's parameters in dgrad's registration order (Linear: weight, then bias).
PARAM_NUMELS = [784 * 50, 50, 50 * 10, 10]


def dgrad_grad_floats(numels=PARAM_NUMELS, align=16):
    """Floats dgrad's one gradient bucket reduces per step: each parameter starts at a multiple
    of 16 floats in the flat gradient buffer, and a bucket spans from its first parameter's
    start to its last parameter's end (the padding between parameters travels, none after the
    last). The whole 159 KB gradient fits the 1 MiB first bucket, hence one bucket."""
    off = end = 0
    for n in numels:
        off = (end + align - 1) // align * align
        end = off + n
    return end


def train_size(data_dir):
    """The number of training samples, from the labels file's IDX header."""
    for name in ("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            with (gzip.open if p.endswith(".gz") else open)(p, "rb") as f:
                head = f.read(8)
            return int.from_bytes(head[4:8], "big")
    raise SystemExit(f"bench: {data_dir}: no train-labels-idx1-ubyte(.gz)")


def run_json(name, cmd, env, timeout=900):
    """Runs cmd in its own session (so that a hung run's ranks can all be killed); returns the
    last JSON line of its stdout, plus the 1-minute load average when it ended."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        sys.stderr.write(out + err)
        raise SystemExit(f"bench: {name} timed out after {timeout} s: {' '.join(cmd)}")
    if p.returncode != 0:
        sys.stderr.write(out + err)
        raise SystemExit(f"bench: {name} failed (exit {p.returncode}): {' '.join(cmd)}")
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        raise SystemExit(f"bench: {name} printed no JSON line:\n{out}{err}")
    res = json.loads(lines[-1])
    res["loadavg"] = os.getloadavg()[0]
    return res


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def plot(path, ranks, series, title):
    """series: {label: {N: [samples/s, ...]}}; writes a PNG with gnuplot."""
    gp = shutil.which("gnuplot")
    if not gp:
        raise SystemExit("bench: --plot needs gnuplot (Debian: apt-get install gnuplot-nox)")
    labels = list(series)
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as f:
        f.write("# ranks " + " ".join(f"{l}_median {l}_min {l}_max" for l in labels) + "\n")
        for n in ranks:
            cols = []
            for l in labels:
                xs = series[l].get(n, [])
                cols += [med(xs), min(xs), max(xs)] if xs else [float("nan")] * 3
            f.write(f"{n} " + " ".join(f"{c:.1f}" for c in cols) + "\n")
        dat = f.name
    try:
        script = os.path.join(HERE, "plot_scaling.gp")
        defs = (f"datafile='{dat}'; outfile='{path}'; plottitle='{title}'; "
                f"label1='{labels[0]}'; label2='{labels[1]}'; maxranks={max(ranks)}")
        p = subprocess.run([gp, "-e", defs, script], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"bench: gnuplot failed:\n{p.stderr}")
    finally:
        os.unlink(dat)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build", help="dgrad build dir (default build)")
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--ranks", default="1,2", help="comma-separated rank counts (default 1,2)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="per rank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="OMP/OPENBLAS threads per process (default 1)")
    ap.add_argument("--python", default="/usr/bin/python3", help="PyTorch interpreter (default /usr/bin/python3)")
    ap.add_argument("--openblas-coretype", help="set OPENBLAS_CORETYPE for every process (default: unset)")
    ap.add_argument("--plot", help="write a PNG of global samples/s against ranks")
    ap.add_argument("--raw", help="append every run's JSON summary to this file")
    o = ap.parse_args()

    ranks = sorted({int(x) for x in o.ranks.split(",") if x.strip()})
    if not ranks or ranks[0] < 1:
        raise SystemExit("bench: --ranks needs rank counts >= 1")
    exe = example_exe(o.build, "mnist_mlp")
    for tool in ("mpirun", "mpicc"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} not found (Debian: apt-get install libopenmpi-dev openmpi-bin)")
    script = os.path.join(HERE, "torch_ddp_mnist_mlp.py")

    env = bench_env(o.threads, o.openblas_coretype)
    env["OMPI_ALLOW_RUN_AS_ROOT"] = env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"

    multi = [n for n in ranks if n >= 2]
    count = dgrad_grad_floats()
    n_train = train_size(o.data)
    steps = {n: o.epochs * math.ceil(math.ceil(n_train / n) / o.batch_size) for n in ranks}

    tmp = tempfile.mkdtemp(prefix="bench_ddp.")
    try:
        raw_exe = os.path.join(tmp, "allreduce_raw")
        if multi:
            subprocess.run(["mpicc", "-O2", "-o", raw_exe, os.path.join(HERE, "allreduce_raw.c")], check=True)

        common = child_args(o)
        jobs = []  # (key, N, cmd); one round runs them all in this order
        for n in ranks:
            jobs.append(("dgrad", n, MPIRUN + ["-n", str(n), exe] + common))
            jobs.append(("pytorch", n, [o.python, script, "--nproc", str(n), "--timeout", "600"] + common))
        for n in multi:
            jobs.append(("dgrad-no-overlap", n, MPIRUN + ["-n", str(n), exe] + common + ["--no-overlap"]))
            jobs.append(("raw", n, MPIRUN + ["-n", str(n), raw_exe, str(count), str(steps[n])]))
            jobs.append(("raw-nonblocking", n,
                         MPIRUN + ["-n", str(n), raw_exe, str(count), str(steps[n]), "20", "nonblocking"]))

        results = {(k, n): [] for k, n, _ in jobs}
        loads = [os.getloadavg()[0]]
        raw = open(o.raw, "a") if o.raw else None
        for r in range(o.runs):
            for key, n, cmd in jobs:
                res = run_json(f"{key} -n {n}", cmd, env)
                res["run"], res["bench_name"], res["bench_ranks"] = r, key, n
                res["openblas_coretype"] = o.openblas_coretype
                results[(key, n)].append(res)
                loads.append(res["loadavg"])
                if key.startswith("raw"):
                    what = f"{res['seconds']:.4f} s for {res['iters']} calls ({res['median_call_us']:.1f} us median)"
                else:
                    ar = res.get("allreduce_seconds")
                    what = (f"{res['train_samples_per_sec']:>10.1f} samples/s  test acc {res['test_accuracy']:.4f}"
                            + (f"  allreduce {ar:.4f} s" if ar is not None else ""))
                print(f"run {r + 1}/{o.runs} {key:16s} -n {n}  {what}  load {res['loadavg']:.2f}",
                      file=sys.stderr, flush=True)
                if raw:
                    raw.write(json.dumps(res) + "\n")
                    raw.flush()
        if raw:
            raw.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def sps(key, n):
        return [x["train_samples_per_sec"] for x in results[(key, n)]]

    torch_version = results[("pytorch", ranks[0])][0].get("torch_version", "?")
    names = {"dgrad": "dgrad (MPI)", "pytorch": f"PyTorch {torch_version} DDP (gloo)"}
    print(f"\nMNIST MLP 784-50-10, Adam lr 1e-4, batch {o.batch_size} per rank, {o.epochs} epochs, "
          f"{conditions(o, loads)}\n")
    print("| framework | ranks | global samples/s median (min-max) | scaling vs 1 rank | test acc (median) |")
    print("|---|---|---|---|---|")
    for key in ("dgrad", "pytorch"):
        base = med(sps(key, 1)) if 1 in ranks else None
        for n in ranks:
            xs = sps(key, n)
            scale = f"{med(xs) / base:.2f}x" if base else "-"
            acc = med([x["test_accuracy"] for x in results[(key, n)]])
            print(f"| {names[key]} | {n} | {med(xs):.0f} ({min(xs):.0f}-{max(xs):.0f}) | {scale} | {acc:.4f} |")

    if multi:
        print("\n| dgrad | ranks | global samples/s median (min-max) | allreduce_seconds median (min-max) "
              "| buckets | test acc (median) |")
        print("|---|---|---|---|---|---|")
        for n in multi:
            for key, label in (("dgrad", "overlap (default)"), ("dgrad-no-overlap", "--no-overlap")):
                rs = results[(key, n)]
                xs, ar = sps(key, n), [x["allreduce_seconds"] for x in rs]
                print(f"| {label} | {n} | {med(xs):.0f} ({min(xs):.0f}-{max(xs):.0f}) "
                      f"| {med(ar):.4f} ({min(ar):.4f}-{max(ar):.4f}) | {rs[0]['buckets']} "
                      f"| {med([x['test_accuracy'] for x in rs]):.4f} |")

        print(f"\nGradient reduction: {count} float32 ({4 * count} bytes) per step, one bucket; "
              f"raw = MPI_Allreduce(MPI_IN_PLACE, MPI_FLOAT, {count}, MPI_SUM) back to back, "
              f"as many calls as training steps (slowest rank's total)\n")
        print("| ranks | steps | dgrad --no-overlap allreduce_seconds median (min-max) "
              "| raw MPI_Allreduce seconds median (min-max) | ratio of medians (target <= 1.1x) | per-run ratios "
              "| raw median call us | raw MPI_Iallreduce+MPI_Wait seconds median (min-max) |")
        print("|---|---|---|---|---|---|---|---|")
        for n in multi:
            d = [x["allreduce_seconds"] for x in results[("dgrad-no-overlap", n)]]
            w = [x["seconds"] for x in results[("raw", n)]]
            nb = [x["seconds"] for x in results[("raw-nonblocking", n)]]
            call = med([x["median_call_us"] for x in results[("raw", n)]])
            pr = ", ".join(f"{a / b:.2f}" for a, b in zip(d, w))
            ratio = med(d) / med(w)
            print(f"| {n} | {steps[n]} | {med(d):.4f} ({min(d):.4f}-{max(d):.4f}) "
                  f"| {med(w):.4f} ({min(w):.4f}-{max(w):.4f}) "
                  f"| {ratio:.2f}x ({'met' if ratio <= 1.1 else 'NOT met'}) | {pr} | {call:.1f} "
                  f"| {med(nb):.4f} ({min(nb):.4f}-{max(nb):.4f}) |")

    if o.plot:
        title = (f"MNIST MLP, batch {o.batch_size}/rank, {os.cpu_count()} CPUs, "
                 f"OPENBLAS_CORETYPE={o.openblas_coretype or 'unset'}")
        plot(o.plot, ranks, {names["dgrad"]: {n: sps("dgrad", n) for n in ranks},
                             names["pytorch"]: {n: sps("pytorch", n) for n in ranks}}, title)
        print(f"\nplot: {o.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
