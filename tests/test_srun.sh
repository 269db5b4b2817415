#!/usr/bin/env bash
# mnist_mlp under Slurm: start a private single-node Slurm, run one epoch
# with `srun --mpi=pmix -n 2`, and check it ends with the same parameters
# (bitwise) as `mpirun -n 2`. Usage: test_srun.sh MNIST_MLP MNIST_DIR SRCDIR MPIEXEC
set -eu
bin=$1 data=$2 src=$3 mpiexec=$4
dir=$(mktemp -d)
trap '"$src/scripts/slurm_local.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
env_line=$("$src/scripts/slurm_local.sh" start "$dir/slurm") || { echo "FAIL: could not start Slurm"; exit 1; }
eval "$env_line"
field() { sed -E "s/.*\"$1\": \"?([^,\"}]*).*/\1/" <<<"$2"; }
args=(--data "$data" --epochs 1 --threads 1 --json --seed 3)

a=$(timeout 300 srun --mpi=pmix -n 2 "$bin" "${args[@]}" | tail -n 1)
echo "srun:   $a"
b=$(timeout 300 "$mpiexec" --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader -n 2 "$bin" "${args[@]}" | tail -n 1)
echo "mpirun: $b"
[ "$(field world_size "$a")" = 2 ] || { echo "FAIL: srun world_size $(field world_size "$a")"; exit 1; }
[ "$(field params_hash "$a")" = "$(field params_hash "$b")" ] || { echo "FAIL: srun and mpirun differ"; exit 1; }
echo "ok: srun --mpi=pmix -n 2 and mpirun -n 2 end with the same params_hash"
