"""Code the benchmark scripts in bench/ share; not a program of its own.

Driver side (bench_mnist_cnn.py, bench_mnist_mlp.py, bench_ddp.py; standard library only):
the drivers' common flags, one environment for both frameworks, a run under /usr/bin/time -v
with its JSON line, peak RSS and CPU seconds, the alternating rounds and the markdown table.

PyTorch side (torch_mnist_cnn.py, torch_mnist_mlp.py, torch_ddp_mnist_mlp.py): the MNIST
IDX reader, the common flags, the optimizer, the timed training loop, the evaluation, the
per-epoch line and the --json summary. These functions import numpy and torch when called,
so that the drivers, which run without PyTorch, can import this module.

The scripts import it by putting their own directory first on sys.path, so that it is found
from any working directory and with any interpreter.
"""
import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TIME = "/usr/bin/time"


# ---------------------------------------------------------------- drivers (no torch)

def driver_args(doc, runs, epochs, batch_size, own=None):
    """Parses bench_mnist_*.py's flags: the shared ones with these defaults, and after
    --batch-size those that own(ap) adds."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--build", default="build", help="dgrad build dir (default build)")
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    if own:
        own(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--python", default="/usr/bin/python3", help="PyTorch interpreter (default /usr/bin/python3)")
    ap.add_argument("--python2", help="a second PyTorch interpreter (e.g. a venv with PyTorch 2.x): adds a row")
    ap.add_argument("--openblas-coretype", help="set OPENBLAS_CORETYPE for both frameworks (default: unset)")
    ap.add_argument("--raw", help="append every run's JSON summary to this file")
    return ap.parse_args()


def require_time():
    if not os.access(TIME, os.X_OK):
        raise SystemExit(f"bench: {TIME} not found (Debian: apt-get install time)")


def example_exe(build, name):
    """build/examples/name, or an exit that says how to build it."""
    exe = os.path.join(build, "examples", name)
    if not os.access(exe, os.X_OK):
        raise SystemExit(f"bench: {exe} not found; build it: cmake --build {build} --target {name}")
    return exe


def bench_env(threads, openblas_coretype):
    """This process's environment with OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = threads, and
    OPENBLAS_CORETYPE removed unless openblas_coretype sets it."""
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    if openblas_coretype:
        env["OPENBLAS_CORETYPE"] = openblas_coretype
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
    return env


def child_args(o, *extra):
    """The flags both frameworks' programs get from the driver's: data, epochs, batch size,
    seed, threads, then extra, then --json."""
    return ["--data", o.data, "--epochs", str(o.epochs), "--batch-size", str(o.batch_size),
            "--seed", str(o.seed), "--threads", str(o.threads), *extra, "--json"]


def contenders(o, exe, script, args):
    """[(name, command)]: dgrad's exe, the PyTorch script under --python and, with --python2,
    under that one too; all with args."""
    cs = [("dgrad", [exe] + args), ("pytorch", [o.python, script] + args)]
    if o.python2:
        cs.append(("pytorch2", [o.python2, script] + args))
    return cs


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


def run_rounds(o, cs, env):
    """--runs rounds of every contender in turn (run_one); a progress line per run on stderr,
    every summary appended to --raw. Returns {name: [summary, ...]}."""
    results = {name: [] for name, _ in cs}
    raw = open(o.raw, "a") if o.raw else None
    for r in range(o.runs):
        for name, cmd in cs:
            res = run_one(name, cmd, env)
            res["run"], res["bench_name"] = r, name
            results[name].append(res)
            print(f"run {r + 1}/{o.runs} {name:8s} {res['train_samples_per_sec']:>10.1f} samples/s  "
                  f"test acc {res['test_accuracy']:.4f}  rss {res['peak_rss_mib']:.1f} MiB  "
                  f"cpu {res['cpu_seconds']:.2f} s  load {res['loadavg']:.2f}", file=sys.stderr, flush=True)
            if raw:
                raw.write(json.dumps(res) + "\n")
                raw.flush()
    if raw:
        raw.close()
    return results


def conditions(o, loads):
    """The end of a table's title: runs, environment, CPUs and the load average seen."""
    return (f"{o.runs} runs each (alternating), OPENBLAS_CORETYPE={o.openblas_coretype or 'unset'}, "
            f"OMP_NUM_THREADS=OPENBLAS_NUM_THREADS={o.threads}, {os.cpu_count()} CPUs, "
            f"1-min load average {min(loads):.2f}-{max(loads):.2f} during the runs")


def print_table(o, title, cs, results, extra=()):
    """Prints the title with the conditions, then the markdown table, a row per contender:
    medians (samples/s with min-max), the ratios against dgrad, and the extra columns, given
    as (header, function of the contender's summaries giving the cell)."""
    med = {n: statistics.median(r["train_samples_per_sec"] for r in rs) for n, rs in results.items()}
    rss = {n: statistics.median(r["peak_rss_mib"] for r in rs) for n, rs in results.items()}
    loads = [r["loadavg"] for rs in results.values() for r in rs]
    print(f"\n{title}, {conditions(o, loads)}\n")
    heads = ["framework", "threads", "samples/s median (min-max)", "test acc (median)",
             "peak RSS MiB (median)", "process CPU s (median)", "dgrad/torch throughput",
             "same-round ratio median (min-max)", "torch/dgrad RSS"] + [h for h, _ in extra]
    print("| " + " | ".join(heads) + " |")
    print("|---" * len(heads) + "|")
    for name, _ in cs:
        rs = results[name]
        label = "dgrad" if name == "dgrad" else f"PyTorch {rs[0].get('torch_version', '?')}"
        sps = [r["train_samples_per_sec"] for r in rs]
        acc = statistics.median(r["test_accuracy"] for r in rs)
        cpu = statistics.median(r["cpu_seconds"] for r in rs)
        ratio_t = ratio_r = ratio_m = "-"
        if name != "dgrad":
            ratio_t = f"{med['dgrad'] / med[name]:.2f}x"
            ratio_m = f"{rss[name] / rss['dgrad']:.2f}x"
            # each round runs dgrad then this contender back to back: their ratio cancels
            # the machine's slower drifts (other tenants, clocks)
            rr = [d["train_samples_per_sec"] / t["train_samples_per_sec"]
                  for d, t in zip(results["dgrad"], rs)]
            ratio_r = f"{statistics.median(rr):.2f}x ({min(rr):.2f}-{max(rr):.2f})"
        cells = [label, str(o.threads), f"{med[name]:.0f} ({min(sps):.0f}-{max(sps):.0f})", f"{acc:.4f}",
                 f"{rss[name]:.1f}", f"{cpu:.2f}", ratio_t, ratio_r, ratio_m] + [cell(rs) for _, cell in extra]
        print("| " + " | ".join(cells) + " |")


# ---------------------------------------------------------------- MNIST files

def find_idx(data_dir, stem):
    """data_dir/stem.gz, else data_dir/stem."""
    for name in (stem + ".gz", stem):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{data_dir}: no {stem}(.gz)")


def read_idx(path):
    """An IDX file (gzipped if it ends in .gz) as a numpy array of uint8."""
    import numpy as np
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=off)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {dims}, found {arr.size} bytes")
    return arr.reshape(dims)


# ---------------------------------------------------------------- PyTorch side

THREADS_HELP = "torch.set_num_threads; default: torch's choice"


def torch_parser(doc, epochs, batch_size, lr, batch_help=None, threads_help=THREADS_HELP):
    """An ArgumentParser with the torch_*.py scripts' shared flags (--data, --epochs,
    --batch-size, --lr, --optimizer, --seed, --threads); the script adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help=threads_help)
    return ap


def load_mnist(data_dir, train):
    """The training (or test) set: images as a float32 (N, 784) tensor of pixels / 255, as
    ToTensor, and labels as int64."""
    import numpy as np
    import torch
    prefix = "train" if train else "t10k"
    images = read_idx(find_idx(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx(data_dir, f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_train_test(data_dir):
    """xtr, ytr, xte, yte (load_mnist)."""
    return load_mnist(data_dir, True) + load_mnist(data_dir, False)


def torch_setup(o):
    """Applies --threads (if set), seeds torch with --seed and loads the data: returns
    xtr, ytr, xte, yte."""
    import torch
    if o.threads:
        torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    return load_train_test(o.data)


def mnist_mlp():
    """The MLP: 784 -> Linear -> 50 -> ReLU -> Linear -> 10."""
    import torch.nn as nn
    return nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10))


def make_optimizer(name, params, lr, momentum=0):
    """--optimizer's adam, adamw or sgd (with momentum) at learning rate lr."""
    import torch
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](params, lr=lr)


def train_epoch(model, loss_fn, opt, batches, sched=None):
    """One timed pass over batches: per step forward, loss, zero_grad, backward, step (then
    sched.step() if given) and loss.item(). Returns (seconds, loss sum, steps, samples).
    zero_grad(set_to_none=True), PyTorch 2's default and dgrad's rule: a parameter that
    backward did not reach (a block LayerDrop skipped) is not updated."""
    t0 = time.perf_counter()
    loss_sum, steps, samples = 0.0, 0, 0
    for x, y in batches:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        loss_sum += loss.item()
        steps += 1
        samples += len(x)
    return time.perf_counter() - t0, loss_sum, steps, samples


def evaluate(model, x, y, batch=1000):
    """Accuracy on (x, y) in eval mode under no_grad, batch rows at a time."""
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / len(x)


def epoch_line(epoch, epochs, loss, test_acc, samples_per_sec, train_acc=None):
    """The line printed after each epoch (epoch counts from 0)."""
    train = f"train acc {100 * train_acc:.2f}%  " if train_acc is not None else ""
    return (f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  {train}test acc {100 * test_acc:.2f}%  "
            f"{samples_per_sec:.0f} samples/s")


def json_summary(o, model, final_loss, test_acc, train_samples, train_time, world_size=1,
                 config=None, train_acc=None, ddp=None, framework="pytorch", backend=None, loader=None):
    """The --json line with dgrad's keys, in this order: model, epochs, world_size, batch_size,
    optimizer, lr, seed (from o), config's keys, the results (train_accuracy if given), ddp's
    keys, framework (and backend if given), torch_version, threads, and loader if given."""
    import torch
    s = {"model": model, "epochs": o.epochs, "world_size": world_size, "batch_size": o.batch_size,
         "optimizer": o.optimizer, "lr": o.lr, "seed": o.seed}
    s.update(config or {})
    s["final_loss"] = round(final_loss, 6)
    if train_acc is not None:
        s["train_accuracy"] = round(train_acc, 6)
    s["test_accuracy"] = round(test_acc, 6)
    s["train_samples_per_sec"] = round(train_samples / train_time, 1)
    s["train_seconds"] = round(train_time, 3)
    s.update(ddp or {})
    s["framework"] = framework
    if backend is not None:
        s["backend"] = backend
    s["torch_version"] = torch.__version__
    s["threads"] = torch.get_num_threads()
    if loader is not None:
        s["loader"] = loader
    return json.dumps(s)
