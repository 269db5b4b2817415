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
--device cuda puts the model and the whole data set on the GPU (loss.item() each step
synchronizes, as dgrad's per-step loss read does).
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (epoch_line, evaluate, json_summary, make_optimizer,  # noqa: E402
                    torch_parser, torch_setup, train_epoch)


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
    ap = torch_parser(__doc__, epochs=1, batch_size=256, lr=3e-2, threads_help=None)
    ap.add_argument("--pct-start", type=float, default=0.2)
    ap.add_argument("--div-factor", type=float, default=10.0)
    ap.add_argument("--no-bn", action="store_true")
    ap.add_argument("--normalize", action="store_true")
    ap.add_argument("--limit-train", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: model and data on it")
    o = ap.parse_args()

    xtr, ytr, xte, yte = torch_setup(o)
    if o.limit_train:
        xtr, ytr = xtr[:o.limit_train], ytr[:o.limit_train]
    xtr, xte = xtr.reshape(-1, 1, 28, 28), xte.reshape(-1, 1, 28, 28)
    if o.normalize:
        xtr, xte = (xtr - 0.1307) / 0.3081, (xte - 0.1307) / 0.3081

    dev = torch.device(o.device)
    xtr, ytr, xte, yte = xtr.to(dev), ytr.to(dev), xte.to(dev), yte.to(dev)
    model = build(not o.no_bn).to(dev)
    loss_fn = nn.CrossEntropyLoss()
    opt = make_optimizer(o.optimizer, model.parameters(), o.lr, momentum=0.9)
    n, bs = len(xtr), o.batch_size
    steps_per_epoch = (n + bs - 1) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, o.lr, total_steps=steps_per_epoch * o.epochs,
                                                pct_start=o.pct_start, div_factor=o.div_factor)
    gen = torch.Generator().manual_seed(o.seed)

    train_time = train_samples = 0
    final_loss = test_acc = 0.0
    for epoch in range(o.epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        batches = ((xtr[idx], ytr[idx]) for idx in perm.split(bs))
        dt, loss_sum, steps, samples = train_epoch(model, loss_fn, opt, batches, sched)
        train_time += dt
        train_samples += samples
        final_loss = loss_sum / steps
        test_acc = evaluate(model, xte, yte)
        print(epoch_line(epoch, o.epochs, final_loss, test_acc, samples / dt), flush=True)
    if o.json:
        print(json_summary(o, "cnn", final_loss, test_acc, train_samples, train_time,
                           config={"device": o.device, "bn": not o.no_bn, "normalize": o.normalize,
                                   "train_images": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
