#!/usr/bin/env python3
"""The founding MNIST MLP in PyTorch: the reference that examples/mnist_mlp is measured against.

784 -> nn.Linear -> 50 -> ReLU -> nn.Linear -> 10, CrossEntropyLoss, Adam(lr=1e-4),
batch 64, shuffled every epoch, 3 epochs. Reads the MNIST IDX files (.gz or plain)
itself (no torchvision; the reader is in common.py) and scales pixels by 1/255 as
ToTensor does.

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
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (epoch_line, evaluate, json_summary, make_optimizer, mnist_mlp,  # noqa: E402
                    torch_parser, torch_setup, train_epoch)


def main():
    ap = torch_parser(__doc__, epochs=3, batch_size=64, lr=1e-4)
    ap.add_argument("--loader", choices=["index", "dataloader"], default="index")
    ap.add_argument("--json", action="store_true")
    o = ap.parse_args()

    xtr, ytr, xte, yte = torch_setup(o)

    model = mnist_mlp()
    loss_fn = nn.CrossEntropyLoss()
    opt = make_optimizer(o.optimizer, model.parameters(), o.lr)

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
        dt, loss_sum, steps, samples = train_epoch(model, loss_fn, opt, batches)
        train_time += dt
        train_samples += samples
        final_loss = loss_sum / steps
        train_acc = evaluate(model, xtr, ytr)
        test_acc = evaluate(model, xte, yte)
        print(epoch_line(epoch, o.epochs, final_loss, test_acc, samples / dt, train_acc), flush=True)

    if o.json:
        print(json_summary(o, "mlp", final_loss, test_acc, train_samples, train_time,
                           train_acc=train_acc, loader=o.loader))
    return 0


if __name__ == "__main__":
    sys.exit(main())
