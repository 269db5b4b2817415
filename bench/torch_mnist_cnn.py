#!/usr/bin/env python3
"""examples/mnist_cnn's recipe in PyTorch: the reference it is measured against.

(B, 1, 28, 28) -> Conv2d 5x5x24 [-> BatchNorm2d] -> MaxPool 2 -> ReLU -> Conv2d 5x5x32
[-> BatchNorm2d] -> MaxPool 2 -> ReLU -> Flatten -> Linear 256 -> ReLU -> Linear 10,
CrossEntropyLoss, Adam with OneCycleLR(max_lr=--lr, total_steps=steps per epoch * epochs,
pct_start=--pct-start, div_factor=--div-factor; the rest PyTorch's defaults: cos, final div
1e4, beta1 cycled 0.95-0.85), batch 256, 1 epoch; the defaults are mnist_cnn's (max_lr 3e-2,
pct_start 0.2, div_factor 10). Batch norm is on by default (the convolutions then have no bias), as
in mnist_cnn; --no-bn gives the plain net. Pixels / 255 as ToTensor (--normalize: then
(x - 0.1307) / 0.3081).

Data as in torch_mnist_mlp.py: the training set as one float tensor indexed by a fresh
randperm each epoch (untimed). Timed per epoch: forward, loss, zero_grad, backward, step,
scheduler step and loss.item(). Test accuracy after each epoch under no_grad, untimed.
With --json the last stdout line is a JSON summary with the same keys as dgrad's.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mnist_mlp import load_mnist  # noqa: E402


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / len(x)


def build(bn):
    layers = [nn.Conv2d(1, 24, 5, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(24))
    layers += [nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(24, 32, 5, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(32))
    layers += [nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)]
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-2)
    ap.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--pct-start", type=float, default=0.2)
    ap.add_argument("--div-factor", type=float, default=10.0)
    ap.add_argument("--no-bn", action="store_true")
    ap.add_argument("--normalize", action="store_true")
    ap.add_argument("--limit-train", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    o = ap.parse_args()

    if o.threads:
        torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    xtr, ytr = load_mnist(o.data, True)
    xte, yte = load_mnist(o.data, False)
    if o.limit_train:
        xtr, ytr = xtr[:o.limit_train], ytr[:o.limit_train]
    xtr, xte = xtr.reshape(-1, 1, 28, 28), xte.reshape(-1, 1, 28, 28)
    if o.normalize:
        xtr, xte = (xtr - 0.1307) / 0.3081, (xte - 0.1307) / 0.3081

    model = build(not o.no_bn)
    loss_fn = nn.CrossEntropyLoss()
    if o.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=0.9)
    else:
        opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.optimizer](model.parameters(), lr=o.lr)
    n, bs = len(xtr), o.batch_size
    steps_per_epoch = (n + bs - 1) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, o.lr, total_steps=steps_per_epoch * o.epochs,
                                                pct_start=o.pct_start, div_factor=o.div_factor)
    gen = torch.Generator().manual_seed(o.seed)

    train_time = train_samples = 0
    final_loss = test_acc = 0.0
    for epoch in range(o.epochs):
        perm = torch.randperm(n, generator=gen)
        batches = ((xtr[idx], ytr[idx]) for idx in perm.split(bs))
        t0 = time.perf_counter()
        loss_sum, steps, samples = 0.0, 0, 0
        for x, y in batches:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
            steps += 1
            samples += len(x)
        dt = time.perf_counter() - t0
        train_time += dt
        train_samples += samples
        final_loss = loss_sum / steps
        test_acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1}/{o.epochs}  loss {final_loss:.4f}  test acc {100 * test_acc:.2f}%  "
              f"{samples / dt:.0f} samples/s", flush=True)
    if o.json:
        print(json.dumps({
            "model": "cnn", "epochs": o.epochs, "world_size": 1, "batch_size": bs, "optimizer": o.optimizer,
            "lr": o.lr, "seed": o.seed, "bn": not o.no_bn, "normalize": o.normalize, "train_images": n,
            "final_loss": round(final_loss, 6), "test_accuracy": round(test_acc, 6),
            "train_samples_per_sec": round(train_samples / train_time, 1),
            "train_seconds": round(train_time, 3), "framework": "pytorch",
            "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
