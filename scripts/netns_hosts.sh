#!/usr/bin/env bash
# Two "hosts" on this machine for multi-host tests: network namespaces
# dgns1 and dgns2 joined by a veth pair on a private test subnet,
# 10.213.0.1/24 (dgveth1, in dgns1) and 10.213.0.2/24 (dgveth2, in dgns2).
# Only these two addresses are ever used. Needs root and iproute2.
# The names are machine-wide: `up` and `down` kill whatever runs in them, so
# users serialize on a lock (tests/launcher/test_multihost.sh, bench/netem_ddp.sh:
# flock ${TMPDIR:-/tmp}/dgrad-netns.lock).
#   scripts/netns_hosts.sh up       # create them (replacing stale ones)
#   scripts/netns_hosts.sh down     # remove them
#   scripts/netns_hosts.sh rsh HOST CMD...
#       run CMD in HOST's namespace, HOST = dgns1|dgns2|10.213.0.1|10.213.0.2;
#       Open MPI's remote-shell agent, through a one-line wrapper script
#       (exec scripts/netns_hosts.sh rsh "$@"):
#       ip netns exec dgns1 mpirun --mca plm_rsh_agent WRAPPER --host 10.213.0.1,10.213.0.2 ...
set -euo pipefail
NS1=dgns1 NS2=dgns2 IP1=10.213.0.1 IP2=10.213.0.2

down() {
  for ns in $NS1 $NS2; do
    ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del $ns 2>/dev/null || true
  done
  ip link del dgveth1 2>/dev/null || true
}

case ${1:-} in
  up)
    down
    ip netns add $NS1
    ip netns add $NS2
    ip link add dgveth1 type veth peer name dgveth2
    ip link set dgveth1 netns $NS1
    ip link set dgveth2 netns $NS2
    ip -n $NS1 addr add $IP1/24 dev dgveth1
    ip -n $NS2 addr add $IP2/24 dev dgveth2
    for ns in $NS1 $NS2; do ip -n $ns link set lo up; done
    ip -n $NS1 link set dgveth1 up
    ip -n $NS2 link set dgveth2 up
    ip -n $NS2 -br link show dgveth2 | grep -q "UP" || { echo "$0: dgveth2 is not up" >&2; exit 1; }
    echo "$NS1 $IP1 <-> $NS2 $IP2 (dgveth1/dgveth2)"
    ;;
  down) down ;;
  rsh)
    host=${2:-}; shift 2 || true
    case $host in
      "$NS1"|"$IP1") ns=$NS1 ;;
      "$NS2"|"$IP2") ns=$NS2 ;;
      *) echo "$0 rsh: unknown host '$host' (want $NS1, $NS2, $IP1 or $IP2)" >&2; exit 255 ;;
    esac
    exec ip netns exec "$ns" sh -c "$*"
    ;;
  *) echo "usage: $0 up|down|rsh HOST CMD..." >&2; exit 2 ;;
esac
