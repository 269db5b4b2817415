#!/usr/bin/env python3
"""dgrad's examples/mnist_mlp against the same training in PyTorch, side by side.

Runs both on this machine, alternating dgrad and PyTorch runs to spread noise, with the
same data, batch size, epochs, threads and environment, and prints a markdown table:
median (min-max) training samples/s, test accuracy, peak RSS and whole-process CPU
seconds (user+sys, including start-up, data loading and evaluation; from /usr/bin/time -v),
and the ratios dgrad/torch for throughput and torch/dgrad for RSS.

Both frameworks get the same environment: OMP_NUM_THREADS and OPENBLAS_NUM_THREADS are
set to --threads (Debian's PyTorch calls OpenBLAS, and torch.set_num_threads does not
reach OpenBLAS's own thread pool), and OPENBLAS_CORETYPE is removed unless
--openblas-coretype sets it, for both.

usage: bench/bench_mnist_mlp.py [--build DIR] [--data DIR] [--threads N] [--runs N]
           [--epochs N] [--batch-size N] [--seed N] [--python PATH] [--python2 PATH]
           [--openblas-coretype NAME] [--raw FILE]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (HERE, bench_env, child_args, contenders, driver_args, example_exe,  # noqa: E402
                    print_table, require_time, run_rounds)


def main():
    o = driver_args(__doc__, runs=5, epochs=3, batch_size=64)
    require_time()
    exe = example_exe(o.build, "mnist_mlp")
    script = os.path.join(HERE, "torch_mnist_mlp.py")
    env = bench_env(o.threads, o.openblas_coretype)

    cs = contenders(o, exe, script, child_args(o))
    results = run_rounds(o, cs, env)

    print_table(o, f"MNIST MLP 784-50-10, Adam lr 1e-4, batch {o.batch_size}, {o.epochs} epochs", cs, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
