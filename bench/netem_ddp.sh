#!/usr/bin/env bash
# What DDP bucketing and overlap buy on a slow network: mnist_mlp on 2 ranks,
# one in each of two network namespaces (scripts/netns_hosts.sh) whose veth
# link is slowed with tc netem, started by launcher/dgrun over Open MPI/TCP.
# Prints a markdown table, median of REPS runs of one epoch each.
#   bench/netem_ddp.sh MNIST_MLP [MNIST_DIR] [REPS]
#   QDISC="netem delay 1ms rate 10gbit" (default) is put on both ends of the
#   link; QDISC=none measures the bare veth. Kernels without sch_netem (some
#   VMs) get FALLBACK="tbf rate 1gbit burst 64kb latency 100ms" instead: a
#   slower link, but no added delay. Needs root, iproute2 and tc.
#   CONFIGS="yes 25 fp32;no 25 fp32;..." picks the rows: overlap (yes|no),
#   bucket cap in MiB, and the gradients' all-reduce dtype (fp32|bf16,
#   bf16 = --bf16-allreduce); the default is the four fp32 rows below.
set -eu
bin=$(realpath "$1") data=${2:-data/mnist} reps=${3:-3}
qdisc=${QDISC:-netem delay 1ms rate 10gbit}
fallback=${FALLBACK:-tbf rate 1gbit burst 64kb latency 100ms}
src=$(cd "$(dirname "$0")/.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SLURM_JOB_ID=
# dgns1/dgns2 are machine-wide: one user at a time (other build trees'
# ctest runs too), else one's `netns_hosts.sh up` kills the other's ranks.
exec 9>"${TMPDIR:-/tmp}/dgrad-netns.lock"
flock -w 900 9 || { echo "FAIL: the namespaces stayed in use for 900 s"; exit 1; }
dir=$(mktemp -d)
trap '"$src/scripts/netns_hosts.sh" down; rm -rf "$dir"' EXIT
"$src/scripts/netns_hosts.sh" up >/dev/null
if [ "$qdisc" != none ]; then
  if ! ip netns exec dgns1 tc qdisc add dev dgveth1 root $qdisc 2>/dev/null; then
    echo "note: this kernel refused '$qdisc' (no sch_netem?); using '$fallback'" >&2
    qdisc=$fallback
    ip netns exec dgns1 tc qdisc add dev dgveth1 root $qdisc
  fi
  ip netns exec dgns2 tc qdisc add dev dgveth2 root $qdisc
fi
printf '#!/bin/sh\nexec "%s" rsh "$@"\n' "$src/scripts/netns_hosts.sh" >"$dir/rsh"
chmod +x "$dir/rsh"
net="--mca plm_rsh_agent $dir/rsh --mca btl tcp,self --mca btl_tcp_if_include 10.213.0.0/24"
net+=" --mca oob_tcp_if_include 10.213.0.0/24"
field() { sed -E "s/.*\"$1\": \"?([^,\"}]*).*/\1/" <<<"$2"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "mnist_mlp, 1 epoch, 2 ranks in 2 network namespaces (Open MPI TCP over veth), qdisc: $qdisc,"
echo "median of $reps runs per row (rows interleaved, so that drifting load hits them alike)"
echo
IFS=';' read -r -a configs <<<"${CONFIGS:-yes 25 fp32;no 25 fp32;yes 0.05 fp32;no 0.05 fp32}"
for rep in $(seq "$reps"); do
  for c in "${configs[@]}"; do
    read -r ov cap dt <<<"$c"
    flags=(--bucket-cap-mb "$cap"); [ "$ov" = yes ] || flags+=(--no-overlap)
    [ "${dt:-fp32}" = bf16 ] && flags+=(--bf16-allreduce)
    line=$(ip netns exec dgns1 timeout 300 "$src/launcher/dgrun" -n 2 --hosts 10.213.0.1:1,10.213.0.2:1 \
             --mpirun-args "$net" "$bin" --data "$data" --epochs 1 --threads 1 --json --seed 3 \
             "${flags[@]}" 2>/dev/null | grep '^{' | tail -n 1)
    [ -n "$line" ] || { echo "run failed: overlap=$ov cap=$cap dtype=${dt:-fp32}" >&2; exit 1; }
    key="$ov-$cap-${dt:-fp32}"
    field train_seconds "$line" >>"$dir/t.$key"
    field train_samples_per_sec "$line" >>"$dir/s.$key"
    field allreduce_seconds "$line" >>"$dir/w.$key"
    field buckets "$line" >"$dir/b.$key"
  done
done
echo "| overlap | bucket cap (MiB) | all-reduce dtype | buckets | train s | samples/s | allreduce wait s |"
echo "|---|---|---|---|---|---|---|"
for c in "${configs[@]}"; do
  read -r ov cap dt <<<"$c"
  key="$ov-$cap-${dt:-fp32}"
  printf '| %s | %s | %s | %s | %.2f | %.0f | %.2f |\n' "$ov" "$cap" "${dt:-fp32}" "$(cat "$dir/b.$key")" \
    "$(median <"$dir/t.$key")" "$(median <"$dir/s.$key")" "$(median <"$dir/w.$key")"
done
