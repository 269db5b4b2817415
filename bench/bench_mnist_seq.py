#!/usr/bin/env python3
"""dgrad's examples/mnist_lstm or mnist_vit against the same training in PyTorch, side by side.

--model lstm: sequential MNIST of variable length (rows without the blank ones at the top and
bottom), LSTM 128 + Linear 10 (bench/torch_mnist_lstm.py); --model vit: the small vision
transformer with LayerDrop (bench/torch_mnist_vit.py; the same LayerDrop draws in both).
Both programs get the same data, batch size, epochs, optimizer, schedule, threads and
environment, alternating runs; the table is bench/common.py's (median samples/s with min-max,
test accuracy, peak RSS, process CPU seconds and the ratios).

usage: bench/bench_mnist_seq.py --model lstm|vit [--build DIR] [--data DIR] [--threads N]
           [--runs N] [--epochs N] [--batch-size N] [--lr X] [--sched none|onecycle]
           [--limit-train N] [--seed N] [--python PATH] [--python2 PATH] [--raw FILE]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (HERE, bench_env, child_args, contenders, driver_args, example_exe,  # noqa: E402
                    print_table, require_time, run_rounds)

# the examples' own defaults (examples/mnist_lstm.c, examples/mnist_vit.c)
RECIPES = {"lstm": dict(epochs=3, batch=64, optimizer="adam"),
           "vit": dict(epochs=8, batch=128, optimizer="adamw")}


def own_args(ap):
    ap.add_argument("--model", choices=sorted(RECIPES), required=True)
    ap.add_argument("--lr", default="3e-3")
    ap.add_argument("--sched", default="onecycle")
    ap.add_argument("--pct-start", default="0.2")
    ap.add_argument("--div-factor", default="10")
    ap.add_argument("--limit-train", type=int, default=0, help="train on the first N images only")


def main():
    model = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--model=")), None)
    if "--model" in sys.argv[:-1]:
        model = sys.argv[sys.argv.index("--model") + 1]
    r = RECIPES.get(model, RECIPES["lstm"])
    o = driver_args(__doc__, runs=3, epochs=r["epochs"], batch_size=r["batch"], own=own_args)
    require_time()
    exe = example_exe(o.build, f"mnist_{o.model}")
    script = os.path.join(HERE, f"torch_mnist_{o.model}.py")
    env = bench_env(o.threads, o.openblas_coretype)
    args = child_args(o, "--lr", o.lr, "--optimizer", RECIPES[o.model]["optimizer"], "--sched", o.sched,
                      "--pct-start", o.pct_start, "--div-factor", o.div_factor)
    if o.limit_train:
        args += ["--limit-train", str(o.limit_train)]
    cs = contenders(o, exe, script, args)
    results = run_rounds(o, cs, env)
    title = (f"MNIST {o.model.upper()}, {RECIPES[o.model]['optimizer']} lr {o.lr} ({o.sched}), batch {o.batch_size}, "
             f"{o.epochs} epoch(s){f', first {o.limit_train} images' if o.limit_train else ''}")
    print_table(o, title, cs, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
