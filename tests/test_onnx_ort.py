#!/usr/bin/env python3
"""test_onnx_ort - dgrad's ONNX files against the ONNX tools.

    test_onnx_ort.py BUILD_DIR MNIST_DIR

For each example net (mnist_mlp, and mnist_cnn with batch norm) it trains
a few steps with a checkpoint (BUILD_DIR/examples), exports the checkpoint
with dgrad-export, and checks that
  - onnx.checker.check_model (full_check) accepts the file;
  - onnxruntime's outputs on the first 1000 MNIST test images are within
    atol 1e-5 + rtol 1e-5 of dgrad's forward of the checkpointed module
    (dgrad-infer --model) and of dgrad's import of the file (dgrad-infer FILE);
  - the same for test_onnx's variant net (strided and padded conv, padded
    AvgPool, Dropout), whose file and outputs test_onnx writes.
onnx, onnxruntime and numpy are installed with pip when missing; the test
is skipped (exit 77) only when that install fails because the package
index cannot be reached.
"""
import gzip
import os
import subprocess
import sys
import tempfile

N = 1000
TOL = 1e-5


def ensure_packages():
    missing = []
    for mod, pkg in (("numpy", "numpy"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if not missing:
        return
    print("test_onnx_ort: installing", " ".join(missing), flush=True)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet"] + missing,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        out = r.stdout.lower()
        unreachable = any(s in out for s in ("connection", "network is unreachable", "name resolution",
                                             "temporary failure", "timed out", "no matching distribution"))
        if unreachable:
            print("test_onnx_ort: SKIP: pip cannot reach the package index to install %s:\n%s"
                  % (" ".join(missing), r.stdout[-800:]))
            sys.exit(77)
        print("test_onnx_ort: FAIL: pip install %s failed:\n%s" % (" ".join(missing), r.stdout[-2000:]))
        sys.exit(1)


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print("test_onnx_ort: FAIL: %s exited %d:\n%s" % (" ".join(cmd), r.returncode, r.stdout))
        sys.exit(1)
    return r.stdout


def main():
    build, mnist = sys.argv[1], sys.argv[2]
    ensure_packages()
    import numpy as np
    import onnx
    import onnxruntime as ort

    raw = gzip.open(os.path.join(mnist, "t10k-images-idx3-ubyte.gz")).read()[16:16 + N * 784]
    images = np.frombuffer(raw, np.uint8).astype(np.float32) / 255.0
    failures = 0

    def compare(what, got, ref):
        nonlocal failures
        d = float(np.abs(got - ref).max())
        ok = np.allclose(got, ref, rtol=TOL, atol=TOL)
        print("test_onnx_ort: %-36s max |diff| %.3g (max |y| %.3g) %s" % (what, d, float(np.abs(ref).max()),
                                                                          "ok" if ok else "FAIL"))
        if not ok:
            failures += 1

    def check_file(path):
        nonlocal failures
        try:
            onnx.checker.check_model(onnx.load(path), full_check=True)
            print("test_onnx_ort: onnx.checker accepts %s" % os.path.basename(path))
        except Exception as e:  # the checker's own exception types vary by version
            print("test_onnx_ort: FAIL: onnx.checker rejects %s: %s" % (path, e))
            failures += 1
        return ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    with tempfile.TemporaryDirectory() as tmp:
        nets = [("mlp", "mnist_mlp", ["--max-steps", "300"], (N, 784)),
                ("cnn", "mnist_cnn", ["--max-steps", "20", "--batch-size", "64"], (N, 1, 28, 28))]
        for name, prog, flags, shape in nets:
            ck = os.path.join(tmp, "ck_" + name)
            run([os.path.join(build, "examples", prog), "--data", mnist, "--checkpoint-dir", ck, "--quiet",
                 "--no-train-accuracy"] + flags)
            path = os.path.join(tmp, name + ".onnx")
            print(run([os.path.join(build, "tools", "dgrad-export"), "--model", name, "--checkpoint", ck, "-o", path]).strip())
            sess = check_file(path)
            y = sess.run(None, {sess.get_inputs()[0].name: images.reshape(shape)})[0]
            infer = os.path.join(build, "tools", "dgrad-infer")
            mod_out, imp_out = os.path.join(tmp, name + "_mod.bin"), os.path.join(tmp, name + "_imp.bin")
            print(run([infer, "--model", name, "--checkpoint", ck, "--data", mnist, "--limit", str(N),
                       "--out", mod_out]).strip())
            print(run([infer, path, "--data", mnist, "--limit", str(N), "--out", imp_out]).strip())
            compare(name + ": onnxruntime vs module forward", y, np.fromfile(mod_out, np.float32).reshape(N, 10))
            compare(name + ": onnxruntime vs dgrad import", y, np.fromfile(imp_out, np.float32).reshape(N, 10))
        # test_onnx's variant net
        r = subprocess.run([os.path.join(build, "tests", "test_onnx"), tmp], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, DG_FIXTURES=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                         "fixtures")))
        if r.returncode not in (0, 77):
            print("test_onnx_ort: FAIL: test_onnx exited %d:\n%s" % (r.returncode, r.stdout))
            sys.exit(1)
        sess = check_file(os.path.join(tmp, "variant.onnx"))
        x = np.fromfile(os.path.join(tmp, "variant_in.bin"), np.float32).reshape(16, 1, 28, 28)
        ref = np.fromfile(os.path.join(tmp, "variant_out.bin"), np.float32).reshape(16, 10)
        compare("variant: onnxruntime vs module", sess.run(None, {"input": x})[0], ref)
    if failures:
        print("test_onnx_ort: %d check(s) FAILED" % failures)
        sys.exit(1)
    print("test_onnx_ort: all checks passed")


if __name__ == "__main__":
    main()
