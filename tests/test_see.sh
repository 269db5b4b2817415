#!/usr/bin/env bash
# Watching training with examples/mnist_mlp: progress display, --logdir,
# --timeline, and scripts/plot.sh. One mode per CTest test:
#   test_see.sh progress MNIST_MLP MNIST_DIR
#       plain lines off a terminal, the bar with DG_PROGRESS=bar (\r frames,
#       ETA, at most ~10 frames a second), --quiet, --quiet --json
#   test_see.sh logdir MNIST_MLP MNIST_DIR PYTHON3
#       --logdir: the scalars read back with scripts/tb_scalars.py
#   test_see.sh timeline MNIST_MLP MNIST_DIR PYTHON3 MPIRUN...
#       2 ranks with --timeline, several DDP buckets and --logdir-per-rank:
#       the merged trace parses, has the expected events on both ranks, and
#       a bucket's all-reduce overlaps backward on each rank
#   test_see.sh plot TEST_SUMMARY PYTHON3
#       scripts/plot.sh draws both charts as PNG files
set -eu
mode=$1
shift
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
die() { echo "FAIL: $*"; exit 1; }

case $mode in
progress)
  bin=$1 data=$2
  run=("$bin" --data "$data" --epochs 1 --threads 1)
  DG_PROGRESS= "${run[@]}" >"$tmp/plain" </dev/null
  grep -q $'\r' "$tmp/plain" && die "plain output has carriage returns"
  grep -Eq '^epoch 1/1  loss [0-9.]+  train acc [0-9.]+%  test acc [0-9.]+%  [0-9]+ samples/s$' "$tmp/plain" ||
    { cat "$tmp/plain"; die "no epoch line in plain output"; }
  echo "ok: plain lines: $(tail -n 1 "$tmp/plain")"

  start=$(date +%s.%N)
  DG_PROGRESS=bar "${run[@]}" >"$tmp/bar"
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
  frames=$(grep -o $'\repoch 1/1 \[' "$tmp/bar" | wc -l)
  [ "$frames" -ge 2 ] || die "$frames bar frames"
  awk -v f="$frames" -v s="$secs" 'BEGIN { exit !(f <= 10 * s + 2) }' || die "$frames frames in $secs s (max 10/s)"
  grep -Eq $'\repoch 1/1 \[#{20}\] 938/938  loss [0-9.]+  [0-9]+ samples/s  ETA 0:00' "$tmp/bar" ||
    die "no final frame: $(tr '\r' '\n' <"$tmp/bar" | tail -n 3)"
  grep -Eq $'\repoch 1/1  loss [0-9.]+  train acc' "$tmp/bar" || die "the epoch line does not replace the bar"
  tr '\r' '\n' <"$tmp/bar" | grep -Eq 'ETA [0-9]+:[0-5][0-9]$' || die "no ETA m:ss"
  echo "ok: bar: $frames frames in ${secs}s, e.g. $(tr '\r' '\n' <"$tmp/bar" | grep -m1 ETA)"

  DG_PROGRESS=bar "${run[@]}" --quiet >"$tmp/quiet" 2>"$tmp/quiet.err"
  [ -s "$tmp/quiet" ] && die "--quiet printed: $(head -c 200 "$tmp/quiet")"
  [ -s "$tmp/quiet.err" ] && die "--quiet printed on stderr: $(cat "$tmp/quiet.err")"
  "${run[@]}" --quiet --json >"$tmp/json"
  [ "$(wc -l <"$tmp/json")" -eq 1 ] && grep -q '^{"model": "mlp".*"params_hash"' "$tmp/json" ||
    die "--quiet --json: $(cat "$tmp/json")"
  echo "ok: --quiet prints nothing, --quiet --json one line"
  ;;

logdir)
  bin=$1 data=$2 py=$3
  "$bin" --data "$data" --epochs 2 --threads 1 --logdir "$tmp/tb" --log-every 100 --quiet
  ls "$tmp/tb"/events.out.tfevents.* >/dev/null || die "no event file in $tmp/tb"
  "$py" "$src/scripts/tb_scalars.py" "$tmp/tb" >"$tmp/scalars.csv"
  count() { grep -c "^\.,$1," "$tmp/scalars.csv" || true; }
  # 938 steps per epoch, a loss every 100 steps: steps 0, 100, ..., 1800
  [ "$(count train/loss)" -eq 19 ] || die "$(count train/loss) train/loss scalars, want 19"
  for t in epoch/loss epoch/train_accuracy epoch/test_accuracy train/lr train/samples_per_sec ddp/allreduce_seconds; do
    [ "$(count $t)" -eq 2 ] || die "$(count $t) $t scalars, want 2"
  done
  lr=$(grep '^\.,train/lr,938,' "$tmp/scalars.csv" | cut -d, -f5)
  awk -v x="$lr" 'BEGIN { exit !(x > 0.99e-4 && x < 1.01e-4) }' || die "train/lr at step 938: '$lr'"
  acc=$(grep '^\.,epoch/test_accuracy,1876,' "$tmp/scalars.csv" | cut -d, -f5)
  awk -v a="$acc" 'BEGIN { exit !(a > 0.8 && a <= 1) }' || die "test accuracy '$acc' at step 1876"
  echo "ok: --logdir: $(($(wc -l <"$tmp/scalars.csv") - 1)) scalars, test accuracy $acc"
  # a logdir that is a file
  : >"$tmp/file"
  if "$bin" --data "$data" --logdir "$tmp/file" 2>"$tmp/err"; then die "--logdir FILE succeeded"; fi
  grep -q "$tmp/file" "$tmp/err" || die "--logdir FILE: $(cat "$tmp/err")"
  ;;

timeline)
  bin=$1 data=$2 py=$3
  shift 3
  "$@" -n 2 "$bin" --data "$data" --epochs 1 --threads 1 --bucket-cap-mb 0.01 --quiet \
       --timeline "$tmp/trace.json" --logdir "$tmp/tb" --logdir-per-rank
  for r in 0 1; do
    [ -s "$tmp/trace.json.rank$r" ] || die "no $tmp/trace.json.rank$r"
    ls "$tmp/tb/rank$r"/events.out.tfevents.* >/dev/null || die "no event file in $tmp/tb/rank$r"
  done
  "$py" "$src/scripts/merge_timeline.py" "$tmp/trace.json"
  "$py" - "$tmp/trace.json" <<'EOF'
import bisect, json, sys
trace = json.load(open(sys.argv[1]))
ev = [e for e in trace["traceEvents"] if e["ph"] == "X"]
ok = True
want = {"data", "forward", "backward", "allreduce", "allreduce_wait", "optimizer_step", "evaluate"}
for rank in (0, 1):
    mine = [e for e in ev if e["pid"] == rank]
    names = {e["name"] for e in mine}
    if not want <= names:
        print(f"FAIL: rank {rank}: missing events {sorted(want - names)}"); ok = False; continue
    ar = [e for e in mine if e["name"] == "allreduce"]
    lanes = {e["tid"] for e in ar}
    bwd = sorted((e["ts"], e["ts"] + e["dur"]) for e in mine if e["name"] == "backward")
    starts = [b[0] for b in bwd]
    overlapped = 0
    for e in ar:
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i >= 0 and e["ts"] < bwd[i][1]:
            overlapped += 1
    steps = sum(e["name"] == "forward" for e in mine)
    print(f"rank {rank}: {len(mine)} events, {steps} steps, {len(lanes)} bucket lanes, "
          f"{overlapped}/{len(ar)} all-reduces started during backward")
    if len(lanes) < 2 or overlapped == 0 or steps != 469:
        print(f"FAIL: rank {rank}: want >= 2 bucket lanes, 469 steps and an all-reduce during backward"); ok = False
sys.exit(0 if ok else 1)
EOF
  echo "ok: merged timeline of 2 ranks"
  ;;

plot)
  writer=$1 py=$2
  "$writer" --write "$tmp/run" >/dev/null
  printf 'framework,ranks,samples_per_sec\ndgrad,1,52000\ndgrad,2,90000\nPyTorch DDP,2,60000\nPyTorch DDP,1,41000\ndgrad,4,150000\n' >"$tmp/t.csv"
  PATH="$(dirname "$py"):$PATH" bash "$src/scripts/plot.sh" loss "$tmp/run" "$tmp/loss.png"
  bash "$src/scripts/plot.sh" throughput "$tmp/t.csv" "$tmp/tp.png"
  for f in loss tp; do
    [ "$(head -c 8 "$tmp/$f.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || die "$f.png is no PNG"
    [ "$(stat -c %s "$tmp/$f.png")" -gt 5000 ] || die "$f.png is tiny"
  done
  if bash "$src/scripts/plot.sh" loss "$tmp/nowhere" "$tmp/x.png" 2>"$tmp/err"; then die "plot of a missing logdir succeeded"; fi
  grep -q nowhere "$tmp/err" || die "$(cat "$tmp/err")"
  echo "ok: plot.sh drew loss.png and tp.png"
  ;;
*) die "unknown mode $mode" ;;
esac
