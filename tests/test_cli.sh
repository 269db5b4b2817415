#!/usr/bin/env bash
# Bad input to examples/mnist_mlp: each case must exit non-zero with one
# line on stderr that names the culprit. Usage: test_cli.sh MNIST_MLP MNIST_DIR
set -u
bin=$1 data=${2:-}
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect CODE REGEX ARGS...: exit code CODE and stderr matching REGEX
expect() {
  local code=$1 re=$2; shift 2
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$tmp/err")
  if [ "$rc" -ne "$code" ] || ! grep -Eq -- "$re" "$tmp/err" || [ "$lines" -ne 1 ]; then
    echo "FAIL: mnist_mlp $*: exit $rc (want $code), stderr ($lines lines):"; cat "$tmp/err"
    fail=1
  else
    echo "ok: mnist_mlp $* -> $(cat "$tmp/err")"
  fi
}

expect 2 "--epochs" --epochs 0
expect 2 "--epochs" --epochs abc
expect 2 "--batch-size" --batch-size -5
expect 2 "--lr" --lr -1
expect 2 "--lr" --lr nan
expect 2 "--optimizer" --optimizer rmsprop
expect 2 "--threads" --threads 0
expect 2 "--seed" --seed x
expect 2 "--frobnicate" --frobnicate
expect 2 "--data" --data
expect 1 "$tmp/nowhere" --data "$tmp/nowhere"

# a truncated training file: the message names the file
if [ -n "$data" ]; then
  mkdir -p "$tmp/bad"
  cp "$data"/*.gz "$tmp/bad/"
  head -c 1000 "$data/train-images-idx3-ubyte.gz" >"$tmp/bad/train-images-idx3-ubyte.gz"
  expect 1 "train-images-idx3-ubyte" --data "$tmp/bad" --epochs 1
  # labels that disagree in count with the images
  cp "$data/t10k-labels-idx1-ubyte.gz" "$tmp/bad/train-labels-idx1-ubyte.gz"
  cp "$data/train-images-idx3-ubyte.gz" "$tmp/bad/"
  expect 1 "train-labels-idx1-ubyte" --data "$tmp/bad" --epochs 1
fi

# watching training: --logdir, --timeline, --log-every, --quiet, DG_PROGRESS
expect 2 "--log-every" --log-every 0
expect 2 "--logdir-per-rank needs --logdir" --logdir-per-rank
expect 2 "--logdir" --logdir
expect 2 "--timeline" --timeline ""
: >"$tmp/afile"
expect 1 "--logdir '$tmp/afile' exists and is not a directory" --logdir "$tmp/afile"
if [ -n "$data" ]; then
  expect 1 "$tmp/nowhere/trace.json" --data "$data" --epochs 1 --timeline "$tmp/nowhere/trace.json"
  expect 1 "$tmp/afile" --data "$data" --epochs 1 --logdir "$tmp/afile/sub"
  DG_PROGRESS=fancy expect 1 "DG_PROGRESS='fancy'" --data "$data" --epochs 1
fi
# a launcher that announces more ranks than the MPI sees
if [ -n "$data" ]; then
  PMI_SIZE=2 PMI_RANK=0 expect 1 "PMI_SIZE" --data "$data" --epochs 1
fi
exit $fail
