#!/usr/bin/env python3
"""The MNIST MLP with torch.nn.parallel.DistributedDataParallel on gloo: the reference for
dgrad's data-parallel examples/mnist_mlp under mpirun.

Same model and training as bench/torch_mnist_mlp.py (784 -> Linear -> 50 -> ReLU -> Linear
-> 10, CrossEntropyLoss, Adam(lr=1e-4), 3 epochs), with each rank training on its shard:
DistributedSampler(shuffle=True, seed, drop_last=False) re-shuffled with set_epoch every
epoch, --batch-size samples per rank per step (as in PyTorch DDP and dgrad), gradients
averaged by DDP (default buckets, bucket_cap_mb=25) over the gloo backend.

Data path as torch_mnist_mlp.py's default (--loader index): the training set is converted
once to a float32 tensor, and each epoch the rank's sampler indices are taken (outside the
timed loop, as dgrad shuffles outside it) and the tensor is indexed --batch-size rows at a
time. --loader dataloader uses DataLoader(TensorDataset, sampler=DistributedSampler).

Timing, as dgrad: each rank times its training loop per epoch (forward, loss, zero_grad,
backward with DDP's all-reduce, step, loss.item()); the global samples/s is every rank's
samples over the slowest rank's time. Accuracies are evaluated after each epoch, sharded over
the ranks and summed, untimed. With --json rank 0's last stdout line is a JSON summary with
dgrad's keys; allreduce_seconds is null (DDP does not expose its all-reduce wait).

Start: with --nproc N the script starts N ranks of itself on this host (MASTER_ADDR
127.0.0.1, a free MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), since Debian's torchrun is
broken; without it, it expects those variables to be set (one rank per process).
"""
import os
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (epoch_line, json_summary, load_train_test, make_optimizer, mnist_mlp,  # noqa: E402
                    torch_parser, train_epoch)


def launch(nproc, argv, timeout):
    """Starts nproc ranks of this script; returns the first failing exit code, or 0. When a
    rank fails or the time runs out, the other ranks are killed rather than left waiting."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for r in range(nproc):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                   WORLD_SIZE=str(nproc), LOCAL_RANK=str(r))
        # only rank 0 prints, as with dgrad under mpirun
        out = None if r == 0 else subprocess.DEVNULL
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__)] + argv, env=env, stdout=out))
    deadline = time.monotonic() + timeout
    rc = 0
    while any(p.poll() is None for p in procs):
        bad = [p.returncode for p in procs if p.returncode not in (None, 0)]
        if bad or time.monotonic() > deadline:
            rc = bad[0] if bad else 124
            sys.stderr.write(f"torch_ddp_mnist_mlp: {'a rank failed' if bad else 'timed out'}; "
                             f"killing the other ranks\n")
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.05)
    for p in procs:
        p.wait()
        rc = rc or p.returncode
    return rc


@torch.no_grad()
def evaluate(model, x, y, rank, world, batch=1000):
    """Accuracy over the whole set: each rank counts its shard, the counts are summed."""
    model.eval()
    idx = torch.arange(rank, len(x), world)
    correct = 0
    for i in idx.split(batch):
        correct += (model(x[i]).argmax(1) == y[i]).sum().item()
    model.train()
    counts = torch.tensor([correct, len(idx)], dtype=torch.int64)
    dist.all_reduce(counts)
    assert counts[1].item() == len(x)
    return counts[0].item() / len(x)


def main():
    ap = torch_parser(__doc__, epochs=3, batch_size=64, lr=1e-4, batch_help="samples per rank per step")
    ap.add_argument("--loader", choices=["index", "dataloader"], default="index")
    ap.add_argument("--bucket-cap-mb", type=float, default=25.0)
    ap.add_argument("--nproc", type=int, default=0, help="start this many ranks of this script on this host")
    ap.add_argument("--timeout", type=float, default=1800, help="with --nproc: kill the ranks after this many seconds")
    ap.add_argument("--json", action="store_true")
    o = ap.parse_args()

    if o.nproc:
        argv, skip = [], False
        for a in sys.argv[1:]:  # the same flags, less --nproc
            if skip:
                skip = False
            elif a in ("--nproc", "--timeout"):
                skip = True
            elif not a.startswith(("--nproc=", "--timeout=")):
                argv.append(a)
        return launch(o.nproc, argv, o.timeout)

    if o.threads:
        torch.set_num_threads(o.threads)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(o.seed)  # the same initial model everywhere; DDP also broadcasts rank 0's
    xtr, ytr, xte, yte = load_train_test(o.data)  # the same IDX reader, pixels / 255

    model = DDP(mnist_mlp(), bucket_cap_mb=o.bucket_cap_mb)
    loss_fn = nn.CrossEntropyLoss()
    opt = make_optimizer(o.optimizer, model.parameters(), o.lr)

    bs = o.batch_size
    dataset = torch.utils.data.TensorDataset(xtr, ytr)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=o.seed,
                                 drop_last=False)
    if o.loader == "dataloader":
        loader = torch.utils.data.DataLoader(dataset, batch_size=bs, sampler=sampler)
    if rank == 0 and world > 1:
        print(f"data-parallel over {world} ranks (gloo), {sampler.num_samples} samples per rank per epoch, "
              f"batch {bs} per rank", flush=True)

    train_time = train_samples = 0
    final_loss = train_acc = test_acc = 0.0
    for epoch in range(o.epochs):
        sampler.set_epoch(epoch)
        if o.loader == "index":
            idx = torch.tensor(list(iter(sampler)), dtype=torch.int64)  # outside the timed loop
            batches = ((xtr[i], ytr[i]) for i in idx.split(bs))
        else:
            batches = iter(loader)
        dt, loss_sum, steps, samples = train_epoch(model, loss_fn, opt, batches)
        # global numbers: the slowest rank's time, every rank's samples
        t = torch.tensor([dt], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        sums = torch.tensor([samples, loss_sum, steps], dtype=torch.float64)
        dist.all_reduce(sums)
        dt, gsamples = t.item(), int(sums[0].item())
        train_time += dt
        train_samples += gsamples
        final_loss = sums[1].item() / sums[2].item()
        train_acc = evaluate(model.module, xtr, ytr, rank, world)
        test_acc = evaluate(model.module, xte, yte, rank, world)
        if rank == 0:
            print(epoch_line(epoch, o.epochs, final_loss, test_acc, gsamples / dt, train_acc), flush=True)

    buckets = None
    try:
        info = model._get_ddp_logging_data()
        sizes = info.get("rebuilt_bucket_sizes") or info.get("bucket_sizes")
        buckets = len([b for b in str(sizes).replace(",", " ").split() if b])
    except Exception:  # private API; absent or different in other versions
        pass
    if o.json and rank == 0:
        print(json_summary(o, "mlp", final_loss, test_acc, train_samples, train_time, world_size=world,
                           train_acc=train_acc, ddp={"overlap": True, "buckets": buckets, "allreduce_seconds": None},
                           framework="pytorch-ddp", backend="gloo", loader=o.loader), flush=True)
    # Skip the interpreter's teardown: in PyTorch 1.13 freeing the DDP object at exit can
    # deadlock (~Reducer -> ~ProcessGroupGloo joins a gloo worker thread that waits for the
    # GIL the main thread holds), leaving a rank spinning forever after its work is done.
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
