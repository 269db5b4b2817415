#!/usr/bin/env python3
"""examples/mnist_lstm's recipe in PyTorch: sequential MNIST of variable length.

Each image is the sequence of its rows (28 values a step) with the blank rows at the top and
the bottom removed (a blank row has no pixel above the image's background), padded to the
batch's longest and packed with pack_padded_sequence(enforce_sorted=False); LSTM(28, 128,
batch_first=True), Linear(128, 10) on h_n, CrossEntropyLoss, Adam with OneCycleLR (max_lr 3e-3,
pct_start 0.2, div_factor 10), batch 64, 3 epochs.
Pixels / 255 (--normalize: (x - 0.1307) / 0.3081).

The trimming and packing run inside the model's forward, so they are timed, as dgrad's are.
Data, timing and the --json line as in torch_mnist_cnn.py (bench/common.py).
"""
import os
import sys

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (epoch_line, evaluate, json_summary, make_optimizer,  # noqa: E402
                    torch_parser, torch_setup, train_epoch)


def rows_of(x):
    """x [B, 784] -> the rows without the blank ones at the top and bottom, padded with
    zeros [B, T, 28], and the lengths [B] (int64, on the CPU)."""
    img = x.reshape(-1, 28, 28)
    bg = img.amin((1, 2), keepdim=True)
    used = (img > bg).any(2)                                   # [B, 28]
    some = used.any(1)
    first = torch.where(some, used.float().argmax(1), torch.zeros_like(some, dtype=torch.long))
    last = torch.where(some, 27 - used.flip(1).float().argmax(1), torch.zeros_like(first))
    lengths = last - first + 1
    t = int(lengths.max())
    steps = torch.arange(t)
    idx = (first[:, None] + steps[None, :]).clamp(max=27)       # [B, T]
    rows = img.gather(1, idx[:, :, None].expand(-1, -1, 28))
    rows = rows * (steps[None, :] < lengths[:, None])[:, :, None]
    return rows, lengths


class Net(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.lstm = nn.LSTM(28, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        rows, lengths = rows_of(x)
        _, (h, _) = self.lstm(pack_padded_sequence(rows, lengths, batch_first=True, enforce_sorted=False))
        return self.fc(h[-1])


def main():
    ap = torch_parser(__doc__, epochs=3, batch_size=64, lr=3e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--sched", choices=["none", "onecycle"], default="onecycle")
    ap.add_argument("--pct-start", type=float, default=0.2)
    ap.add_argument("--div-factor", type=float, default=10.0)
    ap.add_argument("--normalize", action="store_true")
    ap.add_argument("--limit-train", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    o = ap.parse_args()

    xtr, ytr, xte, yte = torch_setup(o)
    if o.limit_train:
        xtr, ytr = xtr[:o.limit_train], ytr[:o.limit_train]
    if o.normalize:
        xtr, xte = (xtr - 0.1307) / 0.3081, (xte - 0.1307) / 0.3081
    model = Net(o.hidden)
    loss_fn = nn.CrossEntropyLoss()
    opt = make_optimizer(o.optimizer, model.parameters(), o.lr)
    gen = torch.Generator().manual_seed(o.seed)
    n, bs = len(xtr), o.batch_size
    sched = None
    if o.sched == "onecycle":   # as dgrad's --sched onecycle (torch's defaults otherwise)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, o.lr, total_steps=(n + bs - 1) // bs * o.epochs,
                                                    pct_start=o.pct_start, div_factor=o.div_factor)
    train_time = train_samples = 0
    final_loss = test_acc = 0.0
    for epoch in range(o.epochs):
        perm = torch.randperm(n, generator=gen)
        batches = ((xtr[idx], ytr[idx]) for idx in perm.split(bs))
        dt, loss_sum, steps, samples = train_epoch(model, loss_fn, opt, batches, sched)
        train_time += dt
        train_samples += samples
        final_loss = loss_sum / steps
        test_acc = evaluate(model, xte, yte)
        print(epoch_line(epoch, o.epochs, final_loss, test_acc, samples / dt), flush=True)
    if o.json:
        print(json_summary(o, "lstm", final_loss, test_acc, train_samples, train_time,
                           config={"sched": o.sched, "hidden": o.hidden, "normalize": o.normalize, "train_images": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
