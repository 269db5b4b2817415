#!/usr/bin/env bash
# dgrun under Slurm: start a private single-node Slurm, submit
# examples/sbatch_mnist_dgrun.sh (one epoch of mnist_mlp on 2 ranks) with
# `sbatch --wait`, and check the JSON line of the job's output.
# Usage: test_slurm.sh MNIST_MLP MNIST_DIR SRCDIR
set -eu
bin=$1 data=$2 src=$3
dir=$(mktemp -d)
trap '"$src/scripts/slurm_local.sh" stop "$dir/slurm" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
env_line=$("$src/scripts/slurm_local.sh" start "$dir/slurm") || { echo "FAIL: could not start Slurm"; exit 1; }
eval "$env_line"
field() { sed -E "s/.*\"$1\": \"?([^,\"}]*).*/\1/" <<<"$2"; }

cd "$dir"
rc=0
timeout 300 sbatch --wait --chdir="$dir" --output="$dir/job.out" --export=ALL,DGRUN="$src/launcher/dgrun" \
  "$src/examples/sbatch_mnist_dgrun.sh" "$bin" --data "$data" --epochs 1 --threads 1 --json --seed 3 || rc=$?
echo "--- job output"; cat "$dir/job.out" 2>/dev/null || true; echo "---"
[ $rc -eq 0 ] || { echo "FAIL: sbatch --wait exited $rc"; exit 1; }
line=$(grep '^{' "$dir/job.out" | tail -n 1)
[ -n "$line" ] || { echo "FAIL: no JSON line in the job output"; exit 1; }
ws=$(field world_size "$line") acc=$(field test_accuracy "$line")
[ "$ws" = 2 ] || { echo "FAIL: world_size $ws, want 2"; exit 1; }
awk -v a="$acc" 'BEGIN { exit !(a >= 0.75) }' || { echo "FAIL: test_accuracy $acc < 0.75"; exit 1; }
echo "ok: sbatch + dgrun: world_size 2, test_accuracy $acc"
