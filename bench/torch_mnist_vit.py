#!/usr/bin/env python3
"""examples/mnist_vit's recipe in PyTorch: a small vision transformer with LayerDrop.

7x7 patches (16 tokens) -> Linear(49, 64) + nn.Embedding(16, 64) positions -> 4 pre-norm
blocks (x + MultiheadAttention(LN(x)), x + Linear(128, 64)(GELU(Linear(64, 128)(LN(x)))))
-> LayerNorm -> mean over the tokens -> Linear(64, 10); CrossEntropyLoss, AdamW (weight decay
0.01) with OneCycleLR (max_lr 3e-3, pct_start 0.2, div_factor 10), batch 128, 8 epochs. LayerDrop p 0.1: each block skipped in a training
step when splitmix64 of (seed, step, rank 0, block) falls under p, the same draw as
examples/vit.c, so both frameworks skip the same blocks at the same steps.

Data, timing and the --json line as in torch_mnist_cnn.py (bench/common.py).
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (epoch_line, evaluate, json_summary, make_optimizer,  # noqa: E402
                    torch_parser, torch_setup, train_epoch)

M64 = (1 << 64) - 1


def mix(z):
    z = (z + 0x9e3779b97f4a7c15) & M64
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


def drops(seed, step, rank, layers, p):
    """vit_begin_step's choice: which blocks this rank skips in this step."""
    return [((mix(mix(mix(mix(seed) ^ step) ^ rank) ^ l) >> 11) * 2.0 ** -53) < p for l in range(layers)]


class Block(nn.Module):
    def __init__(self, width, heads, mlp):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ViT(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.patch = nn.Linear(49, width)
        self.pos = nn.Embedding(16, width)
        self.blocks = nn.ModuleList(Block(width, heads, 2 * width) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)
        self.drop = [False] * layers

    def forward(self, x):
        b = x.shape[0]
        x = x.reshape(b, 4, 7, 4, 7).permute(0, 1, 3, 2, 4).reshape(b, 16, 49)
        h = self.patch(x) + self.pos.weight
        for blk, d in zip(self.blocks, self.drop):
            if not (self.training and d):
                h = blk(h)
        return self.head(self.norm(h).mean(1))


def main():
    ap = torch_parser(__doc__, epochs=8, batch_size=128, lr=3e-3)
    ap.set_defaults(optimizer="adamw")
    ap.add_argument("--layerdrop", type=float, default=0.1)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
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
    model = ViT(o.width, o.layers, o.heads)
    loss_fn = nn.CrossEntropyLoss()
    opt = make_optimizer(o.optimizer, model.parameters(), o.lr)
    gen = torch.Generator().manual_seed(o.seed)
    n, bs = len(xtr), o.batch_size
    sched = None
    if o.sched == "onecycle":   # as dgrad's --sched onecycle (torch's defaults otherwise)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, o.lr, total_steps=(n + bs - 1) // bs * o.epochs,
                                                    pct_start=o.pct_start, div_factor=o.div_factor)
    step = 0

    def batches(perm):
        nonlocal step
        for idx in perm.split(bs):
            model.drop = drops(o.seed, step, 0, o.layers, o.layerdrop)
            step += 1
            yield xtr[idx], ytr[idx]

    train_time = train_samples = 0
    final_loss = test_acc = 0.0
    for epoch in range(o.epochs):
        dt, loss_sum, steps, samples = train_epoch(model, loss_fn, opt, batches(torch.randperm(n, generator=gen)), sched)
        train_time += dt
        train_samples += samples
        final_loss = loss_sum / steps
        test_acc = evaluate(model, xte, yte)
        print(epoch_line(epoch, o.epochs, final_loss, test_acc, samples / dt), flush=True)
    if o.json:
        print(json_summary(o, "vit", final_loss, test_acc, train_samples, train_time,
                           config={"sched": o.sched, "layerdrop": o.layerdrop, "layers": o.layers, "width": o.width,
                                   "heads": o.heads, "normalize": o.normalize, "train_images": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
