#!/usr/bin/env python3
"""The founding MNIST MLP in PyTorch: the reference that examples/mnist_mlp is measured against.

784 -> nn.Linear -> 50 -> ReLU -> nn.Linear -> 10, CrossEntropyLoss, Adam(lr=1e-4),
batch 64, shuffled every epoch, 3 epochs. Reads the MNIST IDX files (.gz or plain)
itself (no torchvision) and scales pixels by 1/255 as ToTensor does.

Data loading: by default (--loader index) the whole training set is converted once to a
float32 tensor, and each epoch indexes it with a fresh torch.randperm, 64 rows at a time
(the last batch is the 32-sample remainder, as with DataLoader(drop_last=False)). This is
the fastest honest PyTorch idiom for an in-memory data set: DataLoader(TensorDataset, ...)
fetches and collates one sample at a time in Python, which costs more than this tiny
model's step, so it would measure the loader rather than PyTorch. dgrad's loader likewise
gathers a whole batch from an in-memory tensor. --loader dataloader runs the
TensorDataset + DataLoader(shuffle=True) variant for comparison.

Timed per epoch, like dgrad: forward, loss, zero_grad, backward, step and loss.item() for
every step. Train and test accuracy are evaluated after each epoch under no_grad, untimed.
With --json the last stdout line is a JSON summary with the same keys as dgrad's.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn


def read_idx(path):
    """An IDX file (gzipped if it ends in .gz) as a numpy array of uint8."""
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


def find(data_dir, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{data_dir}: no {stem}(.gz)")


def load_mnist(data_dir, train):
    prefix = "train" if train else "t10k"
    images = read_idx(find(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(data_dir, f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; default: torch's choice")
    ap.add_argument("--loader", choices=["index", "dataloader"], default="index")
    ap.add_argument("--json", action="store_true")
    o = ap.parse_args()

    if o.threads:
        torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    xtr, ytr = load_mnist(o.data, True)
    xte, yte = load_mnist(o.data, False)

    model = nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[o.optimizer](
        model.parameters(), lr=o.lr)

    n, bs = len(xtr), o.batch_size
    gen = torch.Generator().manual_seed(o.seed)
    if o.loader == "dataloader":
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr),
                                             batch_size=bs, shuffle=True, generator=gen)

    train_time = train_samples = 0
    final_loss = train_acc = test_acc = 0.0
    for epoch in range(o.epochs):
        if o.loader == "index":
            perm = torch.randperm(n, generator=gen)  # shuffling is outside the timed loop, as in dgrad
            batches = ((xtr[idx], ytr[idx]) for idx in perm.split(bs))
        else:
            batches = iter(loader)
        t0 = time.perf_counter()
        loss_sum, steps, samples = 0.0, 0, 0
        for x, y in batches:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            steps += 1
            samples += len(x)
        dt = time.perf_counter() - t0
        train_time += dt
        train_samples += samples
        final_loss = loss_sum / steps
        train_acc = evaluate(model, xtr, ytr)
        test_acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1}/{o.epochs}  loss {final_loss:.4f}  train acc {100 * train_acc:.2f}%  "
              f"test acc {100 * test_acc:.2f}%  {samples / dt:.0f} samples/s", flush=True)

    if o.json:
        print(json.dumps({
            "model": "mlp", "epochs": o.epochs, "world_size": 1, "batch_size": bs,
            "optimizer": o.optimizer, "lr": o.lr, "seed": o.seed,
            "final_loss": round(final_loss, 6), "train_accuracy": round(train_acc, 6),
            "test_accuracy": round(test_acc, 6),
            "train_samples_per_sec": round(train_samples / train_time, 1),
            "train_seconds": round(train_time, 3),
            "framework": "pytorch", "torch_version": torch.__version__,
            "threads": torch.get_num_threads(), "loader": o.loader,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
