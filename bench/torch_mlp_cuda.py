#!/usr/bin/env python3
"""Training-step throughput of the seed MNIST MLP on a GPU, in PyTorch: the reference for
dgrad's CUDA backend (test_cuda --bench cuda measures dgrad the same way).

784 -> nn.Linear -> 50 -> ReLU -> nn.Linear -> 10, CrossEntropyLoss, Adam(lr=1e-4),
batch 64. Synthetic data (pixels in [0, 1), 80% zeros like MNIST; random labels) that
stays on the GPU, so the numbers measure the training step, not data loading.

Modes:
  eager   forward, loss, zero_grad, backward, Adam step, as written (Adam's default
          implementation for CUDA tensors, foreach).
  graph   the whole step captured once in a CUDA graph (torch.cuda.graph, as in
          PyTorch's "whole network capture" example; Adam(capturable=True)) and replayed.

Timing: warmup steps, then --windows windows of --steps steps each, with
torch.cuda.synchronize() before and after each window; steps/s is the median window.
No loss.item() inside a window. TF32 is off (full FP32 matmuls, as dgrad).
Each result is printed as one line: BENCH {json}.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn


def full_fp32():
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        try:
            m.fp32_precision = "ieee"
            return
        except Exception:
            pass
    m.allow_tf32 = False


def make(batch, capturable, seed=0):
    torch.manual_seed(seed)
    dev = torch.device("cuda")
    model = nn.Sequential(nn.Linear(784, 50), nn.ReLU(), nn.Linear(50, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, capturable=capturable)
    x = torch.rand(batch, 784, device=dev)
    x = torch.where(torch.rand(batch, 784, device=dev) < 0.8, torch.zeros_like(x), x)
    y = torch.randint(0, 10, (batch,), device=dev)
    return model, opt, nn.CrossEntropyLoss(), x, y


def time_windows(step, warmup, steps, windows):
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    rates = []
    for _ in range(windows):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        rates.append(steps / (time.perf_counter() - t0))
    return rates


def bench_eager(args):
    model, opt, loss_fn, x, y = make(args.batch, capturable=False)
    state = {}

    def step():
        out = model(x)
        loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["loss"] = loss

    rates = time_windows(step, args.warmup, args.steps, args.windows)
    return rates, float(state["loss"].item())


def bench_graph(args):
    model, opt, loss_fn, x, y = make(args.batch, capturable=True)
    # warm up on a side stream before capture, as the PyTorch docs require
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        static_loss = loss_fn(model(x), y)
        static_loss.backward()
        opt.step()
    rates = time_windows(g.replay, args.warmup, args.steps, args.windows)
    return rates, float(static_loss.item())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["eager", "graph", "both"], default="both")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--windows", type=int, default=7)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_mlp_cuda: no CUDA device visible to PyTorch", file=sys.stderr)
        return 1
    full_fp32()
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}",
          file=sys.stderr)
    modes = ["eager", "graph"] if args.mode == "both" else [args.mode]
    rc = 0
    for mode in modes:
        try:
            rates, loss = (bench_eager if mode == "eager" else bench_graph)(args)
        except Exception as e:  # report and go on with the other mode
            print(f"torch_mlp_cuda: {mode}: {type(e).__name__}: {e}", file=sys.stderr)
            rc = 1
            continue
        print("BENCH " + json.dumps({
            "impl": "torch-" + ("eager" if mode == "eager" else "cuda-graph"), "device": "cuda",
            "batch": args.batch, "steps_per_s": round(statistics.median(rates), 1),
            "min": round(min(rates), 1), "max": round(max(rates), 1), "final_loss": round(loss, 4),
            "torch": torch.__version__}), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
