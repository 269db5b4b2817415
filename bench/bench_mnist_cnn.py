#!/usr/bin/env python3
"""dgrad's examples/mnist_cnn against the same training in PyTorch, side by side.

Runs both on this machine, alternating dgrad and PyTorch runs to spread noise, with the
same model (conv 5x5x24, BatchNorm, maxpool, relu, conv 5x5x32, BatchNorm, maxpool, relu,
fc 256, fc 10; --no-bn without batch norm), data, batch size (256), epochs (1), Adam with
OneCycle (max_lr --lr, pct_start 0.2, div_factor 10: both programs' defaults), threads and
environment, and prints a markdown table:
median (min-max) training samples/s, test accuracy, peak RSS and whole-process CPU
seconds (user+sys, including start-up, data loading and evaluation; from /usr/bin/time -v),
the ratios dgrad/torch for throughput and torch/dgrad for RSS, and the time to 99%: the
median training seconds of the runs whose test accuracy reached 99% after the epoch
(with how many of the runs did).

Both frameworks get the same environment: OMP_NUM_THREADS and OPENBLAS_NUM_THREADS are
set to --threads (Debian's PyTorch calls OpenBLAS, and torch.set_num_threads does not
reach OpenBLAS's own thread pool), and OPENBLAS_CORETYPE is removed unless
--openblas-coretype sets it, for both.

usage: bench/bench_mnist_cnn.py [--build DIR] [--data DIR] [--threads N] [--runs N]
           [--epochs N] [--batch-size N] [--lr X] [--no-bn] [--limit-train N]
           [--python PATH] [--python2 PATH] [--openblas-coretype NAME] [--raw FILE]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TIME = "/usr/bin/time"


def run_one(name, cmd, env):
    """Runs cmd under /usr/bin/time -v; returns the JSON summary plus peak RSS in MiB."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.run([TIME, "-v", "-o", tf.name] + cmd, env=env, capture_output=True, text=True)
        timing = tf.read()
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr + timing)
        raise SystemExit(f"bench: {name} failed (exit {p.returncode}): {' '.join(cmd)}")
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise SystemExit(f"bench: {name} printed no JSON line:\n{p.stdout}{p.stderr}")
    res = json.loads(lines[-1])
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing)
    res["peak_rss_mib"] = int(m.group(1)) / 1024.0 if m else float("nan")
    cpu = [re.search(rf"{k} time \(seconds\): ([\d.]+)", timing) for k in ("User", "System")]
    res["cpu_seconds"] = sum(float(m.group(1)) for m in cpu) if all(cpu) else float("nan")
    res["loadavg"] = os.getloadavg()[0]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build", help="dgrad build dir (default build)")
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", default="3e-2")
    ap.add_argument("--no-bn", action="store_true")
    ap.add_argument("--limit-train", type=int, default=0, help="train on the first N images only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--python", default="/usr/bin/python3", help="PyTorch interpreter (default /usr/bin/python3)")
    ap.add_argument("--python2", help="a second PyTorch interpreter (e.g. a venv with PyTorch 2.x): adds a row")
    ap.add_argument("--openblas-coretype", help="set OPENBLAS_CORETYPE for both frameworks (default: unset)")
    ap.add_argument("--raw", help="append every run's JSON summary to this file")
    o = ap.parse_args()

    if not os.access(TIME, os.X_OK):
        raise SystemExit(f"bench: {TIME} not found (Debian: apt-get install time)")
    exe = os.path.join(o.build, "examples", "mnist_cnn")
    if not os.access(exe, os.X_OK):
        raise SystemExit(f"bench: {exe} not found; build it: cmake --build {o.build} --target mnist_cnn")
    script = os.path.join(HERE, "torch_mnist_cnn.py")

    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    if o.openblas_coretype:
        env["OPENBLAS_CORETYPE"] = o.openblas_coretype
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(o.threads)

    common = ["--data", o.data, "--epochs", str(o.epochs), "--batch-size", str(o.batch_size),
              "--seed", str(o.seed), "--threads", str(o.threads), "--lr", o.lr, "--json"]
    if o.no_bn:
        common.append("--no-bn")
    if o.limit_train:
        common += ["--limit-train", str(o.limit_train)]
    contenders = [("dgrad", [exe] + common), ("pytorch", [o.python, script] + common)]
    if o.python2:
        contenders.append(("pytorch2", [o.python2, script] + common))

    results = {name: [] for name, _ in contenders}
    raw = open(o.raw, "a") if o.raw else None
    for r in range(o.runs):
        for name, cmd in contenders:
            res = run_one(name, cmd, env)
            res["run"], res["bench_name"] = r, name
            results[name].append(res)
            print(f"run {r + 1}/{o.runs} {name:8s} {res['train_samples_per_sec']:>10.1f} samples/s  "
                  f"test acc {res['test_accuracy']:.4f}  rss {res['peak_rss_mib']:.1f} MiB  "
                  f"cpu {res['cpu_seconds']:.2f} s  load {res['loadavg']:.2f}", file=sys.stderr, flush=True)
            if raw:
                raw.write(json.dumps(res) + "\n")
                raw.flush()

    def to99(rs):
        ok = [r["train_seconds"] for r in rs if r["test_accuracy"] >= 0.99]
        return f"{statistics.median(ok):.1f} s ({len(ok)}/{len(rs)})" if ok else f"not reached (0/{len(rs)})"

    def label(name):
        rs = results[name]
        if name == "dgrad":
            return "dgrad"
        return f"PyTorch {rs[0].get('torch_version', '?')}"

    med = {n: statistics.median(r["train_samples_per_sec"] for r in rs) for n, rs in results.items()}
    rss = {n: statistics.median(r["peak_rss_mib"] for r in rs) for n, rs in results.items()}
    loads = [r["loadavg"] for rs in results.values() for r in rs]
    print(f"\nMNIST CNN{' (no BN)' if o.no_bn else ' with BN'}, Adam + OneCycle max_lr {o.lr}, batch {o.batch_size}, "
          f"{o.epochs} epoch(s){f', first {o.limit_train} images' if o.limit_train else ''}, "
          f"{o.runs} runs each (alternating), OPENBLAS_CORETYPE={o.openblas_coretype or 'unset'}, "
          f"OMP_NUM_THREADS=OPENBLAS_NUM_THREADS={o.threads}, {os.cpu_count()} CPUs, "
          f"1-min load average {min(loads):.2f}-{max(loads):.2f} during the runs\n")
    print("| framework | threads | samples/s median (min-max) | test acc (median) | peak RSS MiB (median) "
          "| process CPU s (median) | dgrad/torch throughput | torch/dgrad RSS | time to 99% (runs >= 99%) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _ in contenders:
        rs = results[name]
        sps = [r["train_samples_per_sec"] for r in rs]
        acc = statistics.median(r["test_accuracy"] for r in rs)
        cpu = statistics.median(r["cpu_seconds"] for r in rs)
        ratio_t = ratio_m = "-"
        if name != "dgrad":
            ratio_t = f"{med['dgrad'] / med[name]:.2f}x"
            ratio_m = f"{rss[name] / rss['dgrad']:.2f}x"
        print(f"| {label(name)} | {o.threads} | {med[name]:.0f} ({min(sps):.0f}-{max(sps):.0f}) "
              f"| {acc:.4f} | {rss[name]:.1f} | {cpu:.2f} | {ratio_t} | {ratio_m} | {to99(rs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
