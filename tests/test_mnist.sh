#!/usr/bin/env bash
# One-epoch MNIST integration test: accuracy, world size and bitwise
# determinism (same seed, same params_hash; another seed, another hash).
# Usage: test_mnist.sh MNIST_MLP MNIST_DIR MIN_ACCURACY WORLD_SIZE [LAUNCHER...]
# DG_TEST_FLAGS: more flags for every run (e.g. --bf16-allreduce).
set -eu
bin=$1 data=$2 min=$3 world=$4
shift 4
run() { "$@" "$bin" --data "$data" --epochs 1 --threads 1 --json $EXTRA ${DG_TEST_FLAGS:-} | tail -n 1; }
field() { sed -E "s/.*\"$1\": \"?([^,\"}]*).*/\1/" <<<"$2"; }

EXTRA="--seed 7"; a=$(run "$@")
echo "$a"
acc=$(field test_accuracy "$a")
awk -v a="$acc" -v m="$min" 'BEGIN { exit !(a >= m) }' || { echo "FAIL: test accuracy $acc < $min after one epoch"; exit 1; }
[ "$(field world_size "$a")" = "$world" ] || { echo "FAIL: world_size $(field world_size "$a"), want $world"; exit 1; }
[ "$(field replicas_agree "$a")" = true ] || { echo "FAIL: the ranks' parameters differ at the end"; exit 1; }

EXTRA="--seed 7"; b=$(run "$@")
[ "$(field params_hash "$a")" = "$(field params_hash "$b")" ] ||
  { echo "FAIL: same seed, different params: $(field params_hash "$a") vs $(field params_hash "$b")"; exit 1; }
EXTRA="--seed 8"; c=$(run "$@")
[ "$(field params_hash "$a")" != "$(field params_hash "$c")" ] || { echo "FAIL: seed has no effect"; exit 1; }
echo "ok: world size $world, test accuracy $acc >= $min, same seed gives the same params_hash, another seed does not"
