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
           [--epochs N] [--batch-size N] [--lr X] [--no-bn] [--limit-train N] [--seed N]
           [--python PATH] [--python2 PATH] [--openblas-coretype NAME] [--raw FILE]
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (HERE, bench_env, child_args, contenders, driver_args, example_exe,  # noqa: E402
                    print_table, require_time, run_rounds)


def own_args(ap):
    ap.add_argument("--lr", default="3e-2")
    ap.add_argument("--no-bn", action="store_true")
    ap.add_argument("--limit-train", type=int, default=0, help="train on the first N images only")


def to99(rs):
    """Median training seconds of the runs that reached 99% test accuracy, with how many did."""
    ok = [r["train_seconds"] for r in rs if r["test_accuracy"] >= 0.99]
    return f"{statistics.median(ok):.1f} s ({len(ok)}/{len(rs)})" if ok else f"not reached (0/{len(rs)})"


def main():
    o = driver_args(__doc__, runs=3, epochs=1, batch_size=256, own=own_args)
    require_time()
    exe = example_exe(o.build, "mnist_cnn")
    script = os.path.join(HERE, "torch_mnist_cnn.py")
    env = bench_env(o.threads, o.openblas_coretype)

    args = child_args(o, "--lr", o.lr)
    if o.no_bn:
        args.append("--no-bn")
    if o.limit_train:
        args += ["--limit-train", str(o.limit_train)]
    cs = contenders(o, exe, script, args)
    results = run_rounds(o, cs, env)

    title = (f"MNIST CNN{' (no BN)' if o.no_bn else ' with BN'}, Adam + OneCycle max_lr {o.lr}, batch {o.batch_size}, "
             f"{o.epochs} epoch(s){f', first {o.limit_train} images' if o.limit_train else ''}")
    print_table(o, title, cs, results, extra=[("time to 99% (runs >= 99%)", to99)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
