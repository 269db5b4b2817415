#!/usr/bin/env python3
"""Reads dgrad's TensorBoard event files with TensorBoard's own readers.

Usage: test_summary_tb.py TEST_SUMMARY_BINARY

Runs `TEST_SUMMARY_BINARY --write DIR` (see tests/test_summary.c for the
events it writes), then reads DIR with
  - TensorBoard's record reader, which checks every CRC (DataLossError);
  - EventAccumulator (scalars and raw histograms);
  - plugin_event_accumulator, what the TensorBoard server uses (values
    migrated to tensors, as the Scalars and Histograms dashboards read them),
and checks tags, steps and values. Needs the `tensorboard` pip package.
"""
import math
import os
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
from tensorboard.util import tensor_util

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def f32(x):
    import numpy as np
    return float(np.float32(x))


def tf_limits():
    pos, v = [], 1e-12
    while v < 1e20:
        pos.append(v)
        v *= 1.1
    return [-sys.float_info.max] + [-x for x in reversed(pos)] + [0.0] + pos + [sys.float_info.max]


def check_histo(h, step, what):
    # 1000 values (the NaN is skipped) of magnitudes 1e-4 .. 1e4 * (1 + 12/7)
    check(h.num == 1000, f"{what}: num {h.num}")
    top = 1e4 * (1 + 12 / 7) * (step + 1)
    check(-top * 1.0001 <= h.min < 0 < h.max <= top * 1.0001, f"{what}: min {h.min} max {h.max}")
    check(len(h.bucket) == len(h.bucket_limit), f"{what}: bucket counts")
    check(sum(h.bucket) == 1000, f"{what}: buckets sum to {sum(h.bucket)}")
    lim = set(tf_limits())
    check(all(x in lim for x in h.bucket_limit), f"{what}: limits are TensorFlow's")
    check(list(h.bucket_limit) == sorted(h.bucket_limit), f"{what}: limits increase")
    # the 9 * 13 magnitudes at 1e-4..1e4 land in buckets around 0
    zero = list(h.bucket_limit).index(1e-12) if 1e-12 in h.bucket_limit else -1
    check(zero >= 0 and h.bucket[zero] >= 10, f"{what}: zeros in [0, 1e-12)")


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        logdir = os.path.join(d, "run")
        path = subprocess.run([binary, "--write", logdir], check=True, capture_output=True,
                              text=True).stdout.strip()
        check(os.path.basename(path).startswith("events.out.tfevents."), f"file name {path}")

        # 1. every record through TensorBoard's CRC-checking reader
        reader = PyRecordReader_New(path)
        n = 0
        try:
            while True:
                reader.GetNext()
                n += 1
        except errors.OutOfRangeError:
            pass
        check(n == 26, f"records: {n}, want 26")

        # 2. EventAccumulator
        acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0})
        acc.Reload()
        tags = acc.Tags()
        check(sorted(tags["scalars"]) == ["train/loss", "train/lr"], f"scalar tags {tags['scalars']}")
        check(sorted(tags["histograms"]) == ["empty", "weights/w"], f"histogram tags {tags['histograms']}")
        loss = acc.Scalars("train/loss")
        check([e.step for e in loss] == list(range(20)), f"loss steps {[e.step for e in loss]}")
        check(all(e.value == f32(f32(1.0) / f32(s + 1)) for s, e in enumerate(loss)),
              f"loss values {[e.value for e in loss]}")
        lr = acc.Scalars("train/lr")
        check([(e.step, e.value) for e in lr] == [(0, 0.25), (10, 0.125)], f"lr {lr}")
        hs = acc.Histograms("weights/w")
        check([e.step for e in hs] == [0, 1], f"histogram steps {[e.step for e in hs]}")
        for e in hs:
            check_histo(e.histogram_value, e.step, f"weights/w step {e.step}")
        empty = acc.Histograms("empty")
        check(len(empty) == 1 and empty[0].step == 3 and empty[0].histogram_value.num == 0,
              f"empty histogram {empty}")
        check(abs(loss[0].wall_time - __import__("time").time()) < 600, "wall_time is now")

        # 3. what the TensorBoard server sees
        pacc = pea.EventAccumulator(logdir, size_guidance={pea.TENSORS: 0})
        pacc.Reload()
        ttags = pacc.Tags()["tensors"]
        check(sorted(ttags) == ["empty", "train/loss", "train/lr", "weights/w"], f"tensor tags {ttags}")
        meta = pacc.SummaryMetadata("train/loss")
        check(meta.plugin_data.plugin_name == "scalars", f"loss plugin {meta.plugin_data.plugin_name}")
        meta = pacc.SummaryMetadata("weights/w")
        check(meta.plugin_data.plugin_name == "histograms", f"histo plugin {meta.plugin_data.plugin_name}")
        vals = [(t.step, float(tensor_util.make_ndarray(t.tensor_proto))) for t in pacc.Tensors("train/loss")]
        check(vals == [(s, f32(f32(1.0) / f32(s + 1))) for s in range(20)], f"loss tensors {vals}")
        for t in pacc.Tensors("weights/w"):
            arr = tensor_util.make_ndarray(t.tensor_proto)   # [k, 3]: left, right, count
            check(arr.ndim == 2 and arr.shape[1] == 3, f"histogram tensor shape {arr.shape}")
            check(arr[:, 2].sum() == 1000, f"histogram tensor count {arr[:, 2].sum()}")
            check(all(math.isfinite(x) for x in arr[:, :2].ravel()), "histogram tensor edges finite")
    if failures:
        print(f"test_summary_tb: {failures} check(s) FAILED")
        return 1
    print("test_summary_tb: TensorBoard read every tag, step and value back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
