#!/usr/bin/env python3
"""test_serve - dgserve over HTTP, with curl against 127.0.0.1 only.

    test_serve.py BUILD_DIR MNIST_DIR

Two MLPs (dgrad-export --untrained, seeds 1 and 2) and dgrad-infer's
outputs for them on the first 8 MNIST test images are the references.
Checks:
  - health, server and model metadata (KServe v2), model status (TF Serving);
  - KServe v2 infer and TF Serving predict (flat and nested instances) give
    dgrad-infer's outputs (atol 1e-6 + rtol 1e-6, JSON has 9 digits);
  - bad requests: 4xx with a JSON error naming the field (inputs,
    inputs[0].datatype, inputs[0].shape, inputs[0].data, inputs[0].data[3],
    body, instances, instances[1], inputs[0].shape[0]), unknown model and
    path (404), wrong method (405), a body over --max-body-mb (413);
  - dynamic batching: 24 concurrent one-image requests all answer right in
    fewer batches than requests (the batch-size histogram of /metrics);
  - SIGHUP reload under load: the file replaced (rename) by the second
    model, no request fails and each gets one model's answer, later ones the
    new model's; a file that does not load keeps the model served;
  - a full queue answers 503 with Retry-After (one slow worker, queue 2);
  - SIGTERM: requests accepted before it all answer 200, exit status 0;
  - --model-dir: the newest .onnx file is served; one renamed in under
    load, or written in place, is served next with no request failing; a
    broken one is counted as a failed reload and the model stays;
  - slow clients (--client-timeout-s): one trickling its body and one
    stalled in its headers are closed (the first counted as a 408), others
    are served meanwhile;
  - bad flags and files: exit status non-zero, one line naming the flag;
  - --access-log: one JSON line per request (time, method, path, status,
    latency_ms, batch, bytes_in, bytes_out) matching what curl sent and got.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import gzip

FAILS = []


def check(cond, what):
    if cond:
        print("test_serve: ok   %s" % what)
    else:
        print("test_serve: FAIL %s" % what)
        FAILS.append(what)
    return cond


def curl(port, path, body=None, method=None, timeout=30):
    """(status, headers dict lower-case, body text); status 0 if curl failed."""
    cmd = ["curl", "-s", "-i", "--max-time", str(timeout), "-H", "Content-Type: application/json"]
    tmp = None
    if body is not None:
        tmp = tempfile.NamedTemporaryFile("w", delete=False, suffix=".json")
        tmp.write(body if isinstance(body, str) else json.dumps(body))
        tmp.close()
        cmd += ["--data-binary", "@" + tmp.name]
    if method:
        cmd += ["-X", method]
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if tmp:
        os.unlink(tmp.name)
    if r.returncode != 0:
        return 0, {}, r.stderr.decode(errors="replace")
    raw = r.stdout.decode(errors="replace")
    while raw.startswith("HTTP/1.1 100"):
        raw = raw.split("\r\n\r\n", 1)[1]
    head, _, text = raw.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, text


def load_images(mnist, n):
    raw = gzip.open(os.path.join(mnist, "t10k-images-idx3-ubyte.gz")).read()[16:16 + n * 784]
    return [[raw[i * 784 + k] / 255.0 for k in range(784)] for i in range(n)]


def read_floats(path, rows, cols):
    data = open(path, "rb").read()
    v = struct.unpack("<%df" % (rows * cols), data)
    return [list(v[i * cols:(i + 1) * cols]) for i in range(rows)]


def close(a, b, tol=1e-6):
    return len(a) == len(b) and all(abs(x - y) <= tol + tol * abs(y) for x, y in zip(a, b))


def rows_close(got, ref):
    return len(got) == len(ref) and all(close(g, r) for g, r in zip(got, ref))


def start(build, model, extra, log):
    src = list(model) if isinstance(model, (list, tuple)) else ["--model", model]
    p = subprocess.Popen([os.path.join(build, "serve", "dgserve")] + src + ["--name", "mnist",
                          "--host", "127.0.0.1", "--port", "0"] + extra,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = p.stdout.readline()
    log.append(line)
    if "http://127.0.0.1:" not in line:
        print("test_serve: FAIL: dgserve did not start: %s %s" % (line, p.stdout.read() if p.poll() is not None else ""))
        p.kill()
        sys.exit(1)
    port = int(line.split("http://127.0.0.1:")[1].split()[0])
    # the rest of its output, in the background
    threading.Thread(target=lambda: [log.append(l) for l in p.stdout], daemon=True).start()
    return p, port


def stop(p):
    """SIGTERM, and the exit status (None if it did not exit in 30 s)."""
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        return None


def v2_body(images, shape=None):
    flat = [v for img in images for v in img]
    return {"id": "req-1", "inputs": [{"name": "input", "shape": shape or [len(images), 784], "datatype": "FP32",
                                      "data": flat}]}


def v2_outputs(text):
    j = json.loads(text)
    out = j["outputs"][0]
    n, c = out["shape"]
    return [out["data"][i * c:(i + 1) * c] for i in range(n)]


def metric(text, name):
    for l in text.splitlines():
        if l.startswith(name + " "):
            return float(l.split()[1])
    return None


def main():
    build, mnist = sys.argv[1], sys.argv[2]
    if not shutil.which("curl"):
        print("test_serve: FAIL: curl not found")
        return 1
    tmp = tempfile.mkdtemp(prefix="test_serve_")
    try:
        return run(build, mnist, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(build, mnist, tmp):
    exp, inf = os.path.join(build, "tools", "dgrad-export"), os.path.join(build, "tools", "dgrad-infer")
    refs = {}
    for seed in (1, 2):
        path = os.path.join(tmp, "m%d.onnx" % seed)
        subprocess.run([exp, "--model", "mlp", "--untrained", "--seed", str(seed), "-o", path], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([inf, path, "--data", mnist, "--limit", "8", "--out", path + ".bin"], check=True,
                       stdout=subprocess.DEVNULL)
        refs[seed] = read_floats(path + ".bin", 8, 10)
    check(not rows_close(refs[1], refs[2]), "the two reference models differ")
    images = load_images(mnist, 8)
    served = os.path.join(tmp, "model.onnx")
    shutil.copy(os.path.join(tmp, "m1.onnx"), served)

    log = []
    p, port = start(build, served, ["--workers", "2", "--max-batch", "16", "--max-delay-ms", "20", "--queue", "64",
                                    "--max-body-mb", "1", "--max-request-batch", "100",
                                    "--access-log", os.path.join(tmp, "access.log")], log)
    # health and metadata
    s, _, t = curl(port, "/v2/health/live")
    check(s == 200 and json.loads(t) == {"live": True}, "GET /v2/health/live")
    s, _, t = curl(port, "/v2/health/ready")
    check(s == 200 and json.loads(t) == {"ready": True}, "GET /v2/health/ready")
    s, _, t = curl(port, "/v2")
    check(s == 200 and json.loads(t)["name"] == "dgserve", "GET /v2 server metadata")
    s, _, t = curl(port, "/v2/models/mnist")
    meta = json.loads(t) if s == 200 else {}
    check(s == 200 and meta.get("inputs", [{}])[0].get("shape") == [-1, 784] and
          meta.get("outputs", [{}])[0].get("shape") == [-1, 10], "GET /v2/models/mnist metadata: %s" % t)
    s, _, t = curl(port, "/v2/models/mnist/ready")
    check(s == 200 and json.loads(t)["ready"] is True, "GET /v2/models/mnist/ready")
    s, _, t = curl(port, "/v1/models/mnist")
    check(s == 200 and json.loads(t)["model_version_status"][0]["state"] == "AVAILABLE", "GET /v1/models/mnist")

    # inference
    body8 = json.dumps(v2_body(images))
    s, _, t = curl(port, "/v2/models/mnist/infer", body8)
    infer8 = (len(body8), len(t.encode()))
    check(s == 200 and rows_close(v2_outputs(t), refs[1]) and json.loads(t).get("id") == "req-1",
          "v2 infer, 8 images: dgrad-infer's outputs, id echoed")
    nested = [[img[r * 28:(r + 1) * 28] for r in range(28)] for img in images[:3]]
    s, _, t = curl(port, "/v1/models/mnist:predict", {"instances": nested})
    check(s == 200 and rows_close(json.loads(t)["predictions"], refs[1][:3]), "v1 predict, 3 nested instances")
    s, _, t = curl(port, "/v1/models/mnist:predict", {"instances": images[3:5]})
    check(s == 200 and rows_close(json.loads(t)["predictions"], refs[1][3:5]), "v1 predict, 2 flat instances")

    # bad requests: status and the field named
    one = v2_body(images[:1])
    bad = [
        ("/v2/models/mnist/infer", {"foo": 1}, 400, "inputs:"),
        ("/v2/models/mnist/infer", dict(one, inputs=[dict(one["inputs"][0], datatype="INT64")]), 400,
         "inputs[0].datatype"),
        ("/v2/models/mnist/infer", v2_body(images[:1], shape=[1, 785]), 400, "inputs[0].shape"),
        ("/v2/models/mnist/infer", dict(one, inputs=[dict(one["inputs"][0], data=[0.5] * 700)]), 400,
         "inputs[0].data: has 700"),
        ("/v2/models/mnist/infer", dict(one, inputs=[dict(one["inputs"][0], data=[1, 2, 3, "x"] + [0] * 780)]), 400,
         "inputs[0].data[3]"),
        ("/v2/models/mnist/infer", v2_body(images[:1], shape=[101, 784]), 400, "inputs[0].shape[0]"),
        ("/v2/models/mnist/infer", "{not json", 400, "body:"),
        ("/v2/models/mnist/infer", "[1, 2]", 400, "body:"),
        ("/v1/models/mnist:predict", {"inputs": []}, 400, "instances:"),
        ("/v1/models/mnist:predict", {"instances": [images[0], [1, 2]]}, 400, "instances[1]"),
        ("/v2/models/other/infer", one, 404, "model:"),
        ("/v1/models/other:predict", {"instances": [images[0]]}, 404, "model:"),
        ("/nothing/here", None, 404, "no endpoint"),
    ]
    for path, body, want, field in bad:
        s, h, t = curl(port, path, body)
        try:
            err = json.loads(t)["error"]
        except Exception:
            err = None
        check(s == want and err is not None and field in err and h.get("content-type") == "application/json",
              "%s -> %d naming '%s' (got %d: %s)" % (path, want, field, s, t[:120]))
    s, h, t = curl(port, "/v2/models/mnist/infer")
    check(s == 405 and h.get("allow") == "POST" and "method" in json.loads(t)["error"], "GET on infer -> 405, Allow: POST")
    big = '{"inputs": [{"data": [' + ",".join(["0.123456"] * 200000) + "]}]}"
    s, _, t = curl(port, "/v2/models/mnist/infer", big)
    check(s == 413 and "body" in json.loads(t)["error"], "a 1.6 MB body over --max-body-mb 1 -> 413")

    # access log: a line per request so far (6 GETs, 3 infers, the bad ones, 405, 413)
    with open(os.path.join(tmp, "access.log")) as f:
        lines = f.read().splitlines()
    try:
        recs = [json.loads(l) for l in lines]
    except ValueError:
        recs = []
    keys = {"time", "method", "path", "status", "latency_ms", "batch", "bytes_in", "bytes_out"}
    check(len(recs) == 9 + len(bad) + 2 and all(set(r) == keys for r in recs) and
          all(r["latency_ms"] >= 0 and r["time"].endswith("Z") and r["time"][:2] == "20" for r in recs),
          "access log: %d JSON lines with %s (got %d: %s)" % (9 + len(bad) + 2, sorted(keys), len(lines),
                                                            lines[:1]))
    if recs:
        r = recs[6]
        check(r["method"] == "POST" and r["path"] == "/v2/models/mnist/infer" and r["status"] == 200 and
              r["batch"] == 8 and (r["bytes_in"], r["bytes_out"]) == infer8,
              "access log: the 8-image infer, status 200, batch 8, bytes %s (got %s)" % (infer8, r))
        check([r["status"] for r in recs[-2:]] == [405, 413] and recs[-2]["method"] == "GET" and
              recs[-1]["batch"] == 0 and recs[0]["path"] == "/v2/health/live" and recs[0]["status"] == 200,
              "access log: health 200, GET on infer 405, big body 413 (got %s)" % ([recs[0]] + recs[-2:]))

    # dynamic batching
    _, _, m0 = curl(port, "/metrics")
    b0 = metric(m0, "dgserve_batch_size_count")
    results = [None] * 24

    def one_req(i):
        s, _, t = curl(port, "/v2/models/mnist/infer", v2_body([images[i % 8]]))
        results[i] = s == 200 and rows_close(v2_outputs(t), [refs[1][i % 8]])

    th = [threading.Thread(target=one_req, args=(i,)) for i in range(24)]
    [t.start() for t in th]
    [t.join() for t in th]
    _, _, m1 = curl(port, "/metrics")
    b1 = metric(m1, "dgserve_batch_size_count")
    check(all(results), "24 concurrent requests: all 200 with the right outputs")
    check(b0 is not None and b1 is not None and b1 - b0 < 24,
          "24 concurrent requests ran in %s batches (< 24)" % (None if b1 is None else b1 - b0))

    # SIGHUP reload under load
    halt = threading.Event()
    outcomes = []

    def loader():
        while not halt.is_set():
            s, _, t = curl(port, "/v2/models/mnist/infer", v2_body(images[:2]))
            if s != 200:
                outcomes.append("status %d: %s" % (s, t[:100]))
                continue
            got = v2_outputs(t)
            outcomes.append(1 if rows_close(got, refs[1][:2]) else 2 if rows_close(got, refs[2][:2]) else "wrong")

    th = [threading.Thread(target=loader) for _ in range(3)]
    [t.start() for t in th]
    time.sleep(0.3)
    shutil.copy(os.path.join(tmp, "m2.onnx"), served + ".new")
    os.rename(served + ".new", served)
    p.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    halt.set()
    [t.join() for t in th]
    bad_outcomes = [o for o in outcomes if o not in (1, 2)]
    check(len(outcomes) > 10 and not bad_outcomes,
          "reload under load: %d requests, none failed or wrong %s" % (len(outcomes), bad_outcomes[:3]))
    check(outcomes and outcomes[-1] == 2 and 1 in outcomes, "requests before the reload got model 1, after it model 2")
    body8 = json.dumps(v2_body(images))
    s, _, t = curl(port, "/v2/models/mnist/infer", body8)
    infer8 = (len(body8), len(t.encode()))
    check(s == 200 and rows_close(v2_outputs(t), refs[2]) and json.loads(t)["model_version"] == "2",
          "after SIGHUP: the new model, version 2")
    with open(served + ".new", "w") as f:
        f.write("not a model")
    os.rename(served + ".new", served)
    p.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    body8 = json.dumps(v2_body(images))
    s, _, t = curl(port, "/v2/models/mnist/infer", body8)
    infer8 = (len(body8), len(t.encode()))
    check(s == 200 and rows_close(v2_outputs(t), refs[2]), "a SIGHUP with a broken file keeps serving model 2")
    _, _, m2 = curl(port, "/metrics")
    check('dgserve_model_reloads_total{result="ok"} 1' in m2 and 'dgserve_model_reloads_total{result="error"} 1' in m2
          and metric(m2, "dgserve_model_version") == 2, "metrics: reloads ok 1, error 1, model version 2")
    check('dgserve_requests_total{endpoint="infer",code="200"}' in m2 and
          "dgserve_request_duration_seconds_bucket{le=\"+Inf\"}" in m2 and "# TYPE dgserve_batch_size histogram" in m2,
          "metrics: request counters and histograms in Prometheus text format")
    rc = stop(p)
    check(rc == 0, "SIGTERM on an idle server: exit status 0 (got %s)" % rc)

    # --model-dir: the newest file, reloaded when one is renamed or written in
    mdir = os.path.join(tmp, "models")
    os.mkdir(mdir)
    shutil.copy(os.path.join(tmp, "m2.onnx"), os.path.join(mdir, "a-old.onnx"))
    os.utime(os.path.join(mdir, "a-old.onnx"), (time.time() - 100, time.time() - 100))
    shutil.copy(os.path.join(tmp, "m1.onnx"), os.path.join(mdir, "b-1.onnx"))
    p, port = start(build, ("--model-dir", mdir), ["--workers", "2", "--max-batch", "8", "--max-delay-ms", "1",
                                                   "--client-timeout-s", "1"], log)
    s, _, t = curl(port, "/v2/models/mnist/infer", v2_body(images[:2]))
    check(s == 200 and rows_close(v2_outputs(t), refs[1][:2]), "--model-dir serves its newest file (model 1)")
    outcomes = []
    halt = threading.Event()
    th = [threading.Thread(target=loader) for _ in range(3)]
    [t.start() for t in th]
    time.sleep(0.3)
    shutil.copy(os.path.join(tmp, "m2.onnx"), os.path.join(mdir, ".c-2.tmp"))
    os.rename(os.path.join(mdir, ".c-2.tmp"), os.path.join(mdir, "c-2.onnx"))
    for _ in range(50):
        if outcomes and outcomes[-1] == 2:
            break
        time.sleep(0.1)
    time.sleep(0.2)
    halt.set()
    [t.join() for t in th]
    bad_outcomes = [o for o in outcomes if o not in (1, 2)]
    check(len(outcomes) > 10 and not bad_outcomes and 1 in outcomes and outcomes[-1] == 2,
          "--model-dir: a file renamed in under load is served next, %d requests, none failed %s" %
          (len(outcomes), bad_outcomes[:3]))

    def wait_metric(line):
        for _ in range(50):
            _, _, m = curl(port, "/metrics")
            if line in m:
                return True
            time.sleep(0.1)
        return False

    with open(os.path.join(mdir, "d-broken.onnx"), "w") as f:
        f.write("not a model")
    check(wait_metric('dgserve_model_reloads_total{result="error"} 1'), "--model-dir: a broken file written in: a failed reload")
    s, _, t = curl(port, "/v2/models/mnist/infer", v2_body(images[:2]))
    check(s == 200 and rows_close(v2_outputs(t), refs[2][:2]), "--model-dir: after the broken file, model 2 still served")
    with open(os.path.join(mdir, "e-1.onnx"), "wb") as f:   # written in place: loaded when closed
        f.write(open(os.path.join(tmp, "m1.onnx"), "rb").read())
    check(wait_metric('dgserve_model_reloads_total{result="ok"} 2'), "--model-dir: a file written in place: reloaded")
    s, _, t = curl(port, "/v2/models/mnist/infer", v2_body(images[:2]))
    check(s == 200 and rows_close(v2_outputs(t), refs[1][:2]) and json.loads(t)["model_version"] == "3",
          "--model-dir: the file written in place is served, version 3")
    # slow clients (--client-timeout-s 1): one trickles its body, one stalls in its headers
    import socket
    res = {}

    def trickle():
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 5000\r\n\r\n")
        c.settimeout(0.3)
        got, t0 = b"", time.time()
        while time.time() - t0 < 10:
            try:
                c.sendall(b"[" * 20)
                d = c.recv(4096)
                if not d:
                    break
                got += d
            except socket.timeout:
                pass
            except OSError:   # reset: closed
                break
        res["trickle"] = (got.decode(errors="replace"), time.time() - t0)
        c.close()

    def stall():
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n")
        c.settimeout(10)
        t0 = time.time()
        try:
            d = c.recv(4096)
        except OSError:
            d = None
        res["stall"] = (d, time.time() - t0)
        c.close()

    th = [threading.Thread(target=trickle), threading.Thread(target=stall)]
    [t.start() for t in th]
    time.sleep(0.2)
    s, _, t = curl(port, "/v2/models/mnist/infer", v2_body(images[:2]))
    check(s == 200, "a normal request is answered while two slow clients hold connections")
    [t.join() for t in th]
    text, secs = res.get("trickle", (None, 0))
    check(text == "" and 0.9 < secs < 5, "a client trickling its body: closed after %.1f s (got %r)" % (secs, text))
    d, secs = res.get("stall", (None, 0))
    check(d == b"" and secs < 5, "a client stalled in its headers: closed after %.1f s (got %r)" % (secs, d))
    s, _, t = curl(port, "/v2/health/live")
    check(s == 200, "after the slow clients: still serving")
    _, _, m = curl(port, "/metrics")
    check('dgserve_requests_total{endpoint="other",code="408"} 1' in m, "metrics: the trickling client counted as a 408")

    rc = stop(p)
    check(rc == 0, "--model-dir: SIGTERM, exit status 0 (got %s)" % rc)

    # bad flags and files: non-zero exit, the first line names the culprit
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    dgserve = os.path.join(build, "serve", "dgserve")
    cases = [
        ([], "give one of --model"),
        (["--model", served, "--model-dir", mdir], "give one of --model"),
        (["--model-dir", os.path.join(tmp, "nope")], "--model-dir"),
        (["--model-dir", served], "not a directory"),
        (["--model-dir", empty], "no *.onnx file"),
        (["--model", os.path.join(tmp, "nope.onnx")], "nope.onnx"),
        (["--model", served, "--port", "http"], "--port"),
        (["--model", served, "--workers", "0"], "--workers"),
        (["--model", served, "--name", "a\"b"], "--name"),
        (["--model", served, "--host", "example.org"], "--host"),
        (["--model", served, "--access-log", os.path.join(tmp, "nope", "log")], "--access-log"),
        (["--model", served, "--bogus", "1"], "--bogus"),
    ]
    for args, want in cases:
        r = subprocess.run([dgserve] + args + ["--port" if "--port" not in args else "--queue", "0" if "--port" not in args else "4"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        first = r.stderr.splitlines()[0] if r.stderr else ""
        check(r.returncode != 0 and want in first and first.startswith("dgserve: "),
              "dgserve %s: exit %d, '%s'" % (" ".join(args)[-60:], r.returncode, first))

    # back-pressure and drain: one worker, 300 ms per batch, queue of 2
    shutil.copy(os.path.join(tmp, "m1.onnx"), served)
    p, port = start(build, served, ["--workers", "1", "--max-batch", "1", "--max-delay-ms", "0", "--queue", "2",
                                    "--test-slow-ms", "300"], log)
    codes = [None] * 8
    retry = [None] * 8

    def slow_req(i):
        s, h, t = curl(port, "/v2/models/mnist/infer", v2_body([images[0]]))
        codes[i] = s
        retry[i] = h.get("retry-after") if s == 503 else None

    th = [threading.Thread(target=slow_req, args=(i,)) for i in range(8)]
    [t.start() for t in th]
    [t.join() for t in th]
    check(codes.count(503) >= 1 and codes.count(200) >= 1 and set(codes) <= {200, 503} and
          all(retry[i] == "1" for i in range(8) if codes[i] == 503),
          "a full queue: 503 with Retry-After: 1 (codes %s)" % codes)
    codes = [None] * 3
    th = [threading.Thread(target=slow_req, args=(i,)) for i in range(3)]
    th[0].start()
    time.sleep(0.1)    # the worker has taken the first one: the queue has room for two
    th[1].start()
    th[2].start()
    time.sleep(0.15)   # one running, two queued
    p.send_signal(signal.SIGTERM)
    [t.join() for t in th]
    try:
        rc = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = None
    check(codes == [200, 200, 200], "SIGTERM drains: the 3 accepted requests answer 200 (%s)" % codes)
    check(rc == 0, "SIGTERM after draining: exit status 0 (got %s)" % rc)
    if FAILS:
        print("test_serve: %d check(s) FAILED; dgserve's output:\n%s" % (len(FAILS), "".join(log)))
        return 1
    print("test_serve: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
