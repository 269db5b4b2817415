#!/usr/bin/python3
"""PyTorch's side of bench/bf16_bench.c: training-step time on the CPU,
float32 against torch.autocast("cpu", dtype=torch.bfloat16), one thread,
the same models, batches and step (forward, cross entropy, backward, SGD
lr 0.01); median over repeats of the mean step time of a run.

    /usr/bin/python3 bench/bf16_torch_bench.py [repeats]
"""
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)


def cnn():
    """examples/mnist_cnn's net (with batch norm), as bench/torch_mnist_cnn.py."""
    return nn.Sequential(nn.Conv2d(1, 24, 5, bias=False), nn.BatchNorm2d(24), nn.MaxPool2d(2), nn.ReLU(),
                         nn.Conv2d(24, 32, 5, bias=False), nn.BatchNorm2d(32), nn.MaxPool2d(2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def bench(model, batch, amp, repeats, steps):
    torch.manual_seed(1)
    if isinstance(model[0], nn.Conv2d):
        x = torch.rand(batch, 1, 28, 28)
    else:
        x = torch.rand(batch, model[0].in_features)
    y = torch.randint(0, model[-1].out_features, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
            last = loss.item()
        if r:
            times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times), last


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    print("PyTorch %s, one thread, mkldnn bf16 %s; median of %d runs" %
          (torch.__version__, torch.backends.mkldnn.is_available(), repeats))
    cases = [("mlp 784-50-10 b64", lambda: nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10)), 64, 200),
             ("linear 1024x1024 b256", lambda: nn.Sequential(nn.Linear(1024, 1024)), 256, 10),
             ("cnn mnist_cnn b256", cnn, 256, 5)]
    for name, make, batch, steps in cases:
        t32, l32 = bench(make(), batch, False, repeats, steps)
        t16, l16 = bench(make(), batch, True, repeats, steps)
        print("%-24s fp32 %9.1f us/step   bf16 autocast %9.1f us/step   speedup %.2fx  (loss after: %.4f / %.4f)"
              % (name, t32 * 1e6, t16 * 1e6, t32 / t16, l32, l16))


if __name__ == "__main__":
    main()
