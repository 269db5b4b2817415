#!/usr/bin/env bash
# serve_bench - dgserve against onnxruntime behind FastAPI/uvicorn
# (bench/serve_fastapi.py), KServe v2 /infer with one MNIST image per
# request (batch 1), driven by wrk with a lua script posting that body.
# The server gets CPU 0 and wrk CPU 1 (taskset), wrk -t1 -cC for each
# concurrency C, DURATION seconds; RUNS runs each, the median reported.
# Rows (one worker, one BLAS thread): dgserve with dynamic batching
# (--max-batch 32 and --max-delay-ms 2, or 0: run what is queued at once),
# dgserve --max-batch 1, FastAPI+ORT.
# Peak RSS: VmHWM of the server process after all its runs.
#   usage: bench/serve_bench.sh MODEL.onnx [MNIST_DIR]
#   env: BUILD (build), DURATION (10), RUNS (3), CONCS ("1 4 16 64"),
#        PY (python3; onnxruntime fastapi uvicorn installed with pip when missing), PORT (18080),
#        SHAPE (the request shape: "1,784" for the MLP, "1,1,28,28" for the CNN)
# Prints a markdown table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=$1
mnist=${2:-$root/../shared/data/mnist}
B=${BUILD:-$root/build}
dur=${DURATION:-10}
runs=${RUNS:-3}
concs=${CONCS:-1 4 16 64}
PY=${PY:-python3}
port=${PORT:-18080}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null || true' EXIT

# the anchor's packages, from PyPI when missing (Debian's python3 needs
# --break-system-packages for a pip install outside a venv)
if ! "$PY" -c "import onnxruntime, fastapi, uvicorn" 2>/dev/null; then
  echo "serve_bench: installing onnxruntime fastapi uvicorn for $PY" >&2
  "$PY" -m pip install -q onnxruntime fastapi uvicorn 2>/dev/null ||
    "$PY" -m pip install -q --break-system-packages onnxruntime fastapi uvicorn
fi

# the body: the first MNIST test image, scaled to [0, 1]
"$PY" - "$mnist" "$tmp/body.json" "${SHAPE:-1,784}" <<'PYEOF'
import gzip, json, sys
with gzip.open(sys.argv[1] + "/t10k-images-idx3-ubyte.gz") as f:
    raw = f.read()[16:16 + 784]
json.dump({"inputs": [{"name": "input", "shape": [int(d) for d in sys.argv[3].split(",")], "datatype": "FP32",
                       "data": [round(b / 255.0, 6) for b in raw]}]}, open(sys.argv[2], "w"))
PYEOF
cat > "$tmp/post.lua" <<LUAEOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$tmp/body.json", "r")
wrk.body = f:read("*a")
f:close()
LUAEOF

wait_up() {
  for _ in $(seq 100); do
    curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary @"$tmp/body.json" \
      "http://127.0.0.1:$port/v2/models/mnist/infer" && return 0
    sleep 0.1
  done
  echo "serve_bench: server did not come up" >&2; exit 1
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f\n", v}'; }

bench() {   # bench LABEL: runs wrk against the server up at $port (pid $spid)
  local label=$1
  for c in $concs; do
    : > "$tmp/rps"; : > "$tmp/p50"; : > "$tmp/p99"; : > "$tmp/err"
    for _ in $(seq "$runs"); do
      taskset -c 1 wrk -t1 -c"$c" -d"${dur}s" --latency -s "$tmp/post.lua" \
        "http://127.0.0.1:$port/v2/models/mnist/infer" > "$tmp/wrk.out"
      awk '/^Requests\/sec/ {print $2}' "$tmp/wrk.out" >> "$tmp/rps"
      awk '$1 == "50.000%" || $1 == "50%" {print $2}' "$tmp/wrk.out" | to_ms >> "$tmp/p50"
      awk '$1 == "99.000%" || $1 == "99%" {print $2}' "$tmp/wrk.out" | to_ms >> "$tmp/p99"
      { grep -E "Non-2xx|Socket errors" "$tmp/wrk.out" || true; } >> "$tmp/err"
    done
    printf "| %s | %s | %s | %s | %s |" "$label" "$c" "$(median < "$tmp/rps")" "$(median < "$tmp/p50")" \
      "$(median < "$tmp/p99")"
    if [ -s "$tmp/err" ]; then printf " %s" "$(tr '\n' ';' < "$tmp/err")"; fi
    printf "\n"
  done
  echo "| $label | peak RSS | $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$spid/status) | | |"
}

echo "| server | connections | requests/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
for cfg in 32:2 32:0 1:0; do
  mb=${cfg%:*} delay=${cfg#*:}
  taskset -c 0 "$B/serve/dgserve" --model "$model" --name mnist --port "$port" --workers 1 --blas-threads 1 \
    --max-batch "$mb" --max-delay-ms "$delay" --queue 1024 > "$tmp/dgserve.log" 2>&1 &
  spid=$!
  wait_up
  if [ "$mb" = 1 ]; then bench "dgserve --max-batch 1"; else bench "dgserve --max-batch $mb --max-delay-ms $delay"; fi
  kill -TERM "$spid"; wait "$spid" || true; spid=
done
taskset -c 0 "$PY" "$root/bench/serve_fastapi.py" "$model" "$port" mnist > "$tmp/fastapi.log" 2>&1 &
spid=$!
wait_up
bench "FastAPI+onnxruntime"
kill -TERM "$spid"; wait "$spid" || true; spid=
