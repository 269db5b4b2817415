#!/usr/bin/env bash
# test_serve_load - dgserve under load from wrk (32 connections, 2 threads,
# 4 s), with a mix of requests: KServe v2 and TF Serving bodies that must
# answer 200, and bad ones (not JSON, a wrong shape, a non-number) that
# must answer 400. CTest runs it in every build, so in the ASan build it is
# the load test under AddressSanitizer and LeakSanitizer: any error there
# kills the server or fails its exit status.
# Checks: no socket errors; every answer 200 or 400, in the mix's share;
# /metrics counts agree with wrk; after the load a request still gives
# dgrad-infer's outputs; SIGTERM exits 0.
#   usage: test_serve_load.sh BUILD_DIR MNIST_DIR
set -euo pipefail
B=$1
mnist=$2
command -v wrk >/dev/null || { echo "test_serve_load: wrk not found (scripts/install_deps.sh installs it)"; exit 77; }
tmp=$(mktemp -d)
spid=
trap '[ -n "$spid" ] && kill -9 "$spid" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "test_serve_load: FAIL $*"; exit 1; }

"$B/tools/dgrad-export" --model mlp --untrained --seed 1 -o "$tmp/m.onnx" > /dev/null
"$B/tools/dgrad-infer" "$tmp/m.onnx" --data "$mnist" --limit 1 --out "$tmp/ref.bin" > /dev/null
python3 - "$mnist" "$tmp" <<'PYEOF'
import gzip, json, sys
mnist, tmp = sys.argv[1], sys.argv[2]
img = [b / 255.0 for b in gzip.open(mnist + "/t10k-images-idx3-ubyte.gz").read()[16:16 + 784]]
v2 = {"id": "load", "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": img}]}
bodies = {
    "v2": json.dumps(v2),
    "v1": json.dumps({"instances": [img]}),
    "notjson": json.dumps(v2)[:-40],
    "shape": json.dumps(dict(v2, inputs=[dict(v2["inputs"][0], shape=[1, 783])])),
    "nan": json.dumps(v2).replace(str(img[300]), "\"x\"", 1) if img[300] else json.dumps(v2).replace("0.0,", "null,", 1),
}
for k, v in bodies.items():
    open("%s/%s.json" % (tmp, k), "w").write(v)
PYEOF
# 6 requests a cycle: v2, v1, v2, not JSON, wrong shape, non-number -> 3 of 6 are 400
cat > "$tmp/mix.lua" <<LUAEOF
local function body(name)
  local f = io.open("$tmp/" .. name .. ".json", "r")
  local s = f:read("*a")
  f:close()
  return s
end
local h = { ["Content-Type"] = "application/json" }
local reqs = {
  wrk.format("POST", "/v2/models/mnist/infer", h, body("v2")),
  wrk.format("POST", "/v1/models/mnist:predict", h, body("v1")),
  wrk.format("POST", "/v2/models/mnist/infer", h, body("v2")),
  wrk.format("POST", "/v2/models/mnist/infer", h, body("notjson")),
  wrk.format("POST", "/v2/models/mnist/infer", h, body("shape")),
  wrk.format("POST", "/v2/models/mnist/infer", h, body("nan")),
}
local i = 0
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
LUAEOF

"$B/serve/dgserve" --model "$tmp/m.onnx" --name mnist --port 0 --workers 2 --max-batch 16 --max-delay-ms 1 \
  --queue 4096 > "$tmp/log" 2>&1 &
spid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\) .*|\1|p' "$tmp/log" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || fail "dgserve did not start: $(cat "$tmp/log")"
url=http://127.0.0.1:$port
wrk -t2 -c32 -d4s -s "$tmp/mix.lua" "$url/v2/models/mnist/infer" > "$tmp/wrk.out" 2>&1 || fail "wrk: $(cat "$tmp/wrk.out")"
cat "$tmp/wrk.out"
kill -0 "$spid" 2>/dev/null || fail "dgserve died under load: $(tail -30 "$tmp/log")"
grep -q "Socket errors" "$tmp/wrk.out" && fail "socket errors under load"
total=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$tmp/wrk.out")
non2xx=${non2xx:-0}
curl -s "$url/metrics" > "$tmp/metrics"
ok=$(awk -F'} ' '/^dgserve_requests_total\{endpoint="(infer|predict)",code="200"\}/ {s += $2} END {print s + 0}' "$tmp/metrics")
bad=$(awk -F'} ' '/^dgserve_requests_total\{endpoint="infer",code="400"\}/ {s += $2} END {print s + 0}' "$tmp/metrics")
other=$(awk -F'} ' '/^dgserve_requests_total\{/ && !/code="(200|400)"/ {s += $2} END {print s + 0}' "$tmp/metrics")
echo "test_serve_load: wrk $total answers, $non2xx non-2xx; dgserve counted $ok 200, $bad 400, $other other"
[ "$total" -gt 1000 ] || fail "only $total answers in 4 s"
[ "$other" -eq 0 ] || fail "$other answers neither 200 nor 400: $(grep '^dgserve_requests_total' "$tmp/metrics")"
# wrk stops with requests in flight: dgserve may count up to 32 more than wrk saw
[ $((ok + bad)) -ge "$total" ] && [ $((ok + bad)) -le $((total + 32)) ] || fail "counts: wrk $total, dgserve $((ok + bad))"
awk -v b="$bad" -v t="$((ok + bad))" 'BEGIN {r = b / t; exit !(r > 0.45 && r < 0.55)}' || fail "400 share $bad/$((ok + bad)), want 1/2"
[ $((non2xx - bad)) -le 32 ] && [ $((bad - non2xx)) -le 32 ] || fail "non-2xx: wrk $non2xx, dgserve 400s $bad"
curl -s -X POST -H 'Content-Type: application/json' --data-binary @"$tmp/v2.json" "$url/v2/models/mnist/infer" > "$tmp/after.json"
python3 - "$tmp/after.json" "$tmp/ref.bin" <<'PYEOF' || fail "after the load: outputs differ from dgrad-infer's: $(cat "$tmp/after.json")"
import json, struct, sys
got = json.load(open(sys.argv[1]))["outputs"][0]["data"]
ref = struct.unpack("<10f", open(sys.argv[2], "rb").read())
sys.exit(0 if len(got) == 10 and all(abs(a - b) <= 1e-6 + 1e-6 * abs(b) for a, b in zip(got, ref)) else 1)
PYEOF
kill -TERM "$spid"
rc=0
wait "$spid" || rc=$?
spid=
[ "$rc" -eq 0 ] || fail "SIGTERM: exit status $rc: $(tail -30 "$tmp/log")"
echo "test_serve_load: ok"
