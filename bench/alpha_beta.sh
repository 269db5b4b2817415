#!/usr/bin/env bash
# The alpha-beta cost of an all-reduce between two hosts: 2 ranks, one in
# each of two network namespaces (scripts/netns_hosts.sh) joined by a veth
# link shaped with tc tbf, Open MPI over TCP, bench/allreduce_raw.c called
# with float counts from 256 to 4M (1 KiB to 16 MiB). Prints one JSON line
# per (rate, algorithm, size): the median time of one call. Feed the lines
# to bench/project_scaling.py, which fits t = a + b * bytes per rate and
# algorithm and projects step times to 8-256 ranks.
#   bench/alpha_beta.sh [RATES] [ITERS]     e.g. bench/alpha_beta.sh "1gbit 10gbit" 30
# Algorithms: "ring" (libnbc's ring, what dgrad's DDP asks for at 2-8 ranks)
# and "binomial" (libnbc's binomial tree), both through MPI_Iallreduce, the
# call DDP makes. The ranks yield when idle (mpi_yield_when_idle): both
# "hosts" share this machine's cores, and two ranks spinning in MPI_Wait
# starve the kernel's softirq work that moves packets across the veth
# pair, which then runs only at the scheduler tick (4 ms medians for 1 KiB
# on a 2-core machine; 33 us with the yield). Needs root, iproute2, tc and
# mpicc.
set -eu
rates=${1:-1gbit 10gbit}
iters=${2:-30}
src=$(cd "$(dirname "$0")/.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SLURM_JOB_ID=
exec 9>"${TMPDIR:-/tmp}/dgrad-netns.lock"   # the namespaces are machine-wide
flock -w 900 9 || { echo "alpha_beta: the namespaces stayed in use for 900 s" >&2; exit 1; }
dir=$(mktemp -d)
trap '"$src/scripts/netns_hosts.sh" down; rm -rf "$dir"' EXIT
mpicc -O2 -o "$dir/allreduce_raw" "$src/bench/allreduce_raw.c"
printf '#!/bin/sh\nexec "%s" rsh "$@"\n' "$src/scripts/netns_hosts.sh" >"$dir/rsh"
chmod +x "$dir/rsh"
net="--mca plm_rsh_agent $dir/rsh --mca btl tcp,self --mca btl_tcp_if_include 10.213.0.0/24"
net+=" --mca oob_tcp_if_include 10.213.0.0/24 --mca mpi_yield_when_idle 1"
for rate in $rates; do
  "$src/scripts/netns_hosts.sh" up >/dev/null
  burst=${BURST:-$(( ${rate%gbit} * 64 ))kb}   # tbf: the bytes that may pass at once
  ip netns exec dgns1 tc qdisc add dev dgveth1 root tbf rate "$rate" burst "$burst" latency 100ms
  ip netns exec dgns2 tc qdisc add dev dgveth2 root tbf rate "$rate" burst "$burst" latency 100ms
  for alg in ring binomial; do
    n=$([ $alg = ring ] && echo 1 || echo 2)
    for count in 256 4096 65536 262144 1048576 4194304; do
      it=$iters; [ "$count" -ge 1048576 ] && it=$(( iters / 3 + 1 ))
      line=$(ip netns exec dgns1 timeout 300 mpirun $net --host 10.213.0.1:1,10.213.0.2:1 -n 2 \
               -x OMPI_MCA_coll_libnbc_iallreduce_algorithm=$n "$dir/allreduce_raw" "$count" "$it" 3 nonblocking \
               2>/dev/null | grep '^{') || { echo "alpha_beta: $rate $alg $count failed" >&2; exit 1; }
      echo "{\"rate\": \"$rate\", \"alg\": \"$alg\", ${line#\{}"
    done
  done
done
