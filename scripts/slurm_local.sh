#!/usr/bin/env bash
# A single-node Slurm on this machine, for tests and trying things out:
# munged, slurmctld and slurmd, with a config in a private directory.
#   scripts/slurm_local.sh start DIR   # prints: export SLURM_CONF=DIR/slurm.conf
#   scripts/slurm_local.sh stop DIR
# Needs root and Debian's slurm-wlm and munge.
set -euo pipefail
cmd=${1:-} dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop() {
  for p in slurmd slurmctld munged; do
    [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
  done
  # daemons whose pid file is gone: every one of ours names $dir on its command line
  pkill -f -- "$dir/" 2>/dev/null || true
  sleep 1
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "$0: unknown command '$cmd'" >&2; exit 2; }
for b in munged slurmctld slurmd; do
  command -v $b >/dev/null || { echo "$0: $b not found (apt-get install slurm-wlm munge)" >&2; exit 1; }
done

host=$(hostname -s)
# two free TCP ports, so that other Slurms (or a stale one) cannot clash
free_port() {
  local p
  for _ in $(seq 50); do
    p=$(( 20000 + RANDOM % 20000 ))
    ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo $p; return; }
  done
  echo "$0: no free port found" >&2; return 1
}
ctld_port=$(free_port)
d_port=$(free_port)
[ "$ctld_port" != "$d_port" ] || d_port=$((ctld_port + 1))
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
mkdir -p "$dir/spool/ctld" "$dir/spool/d" "$dir/munge" "$dir/log"

# munge: a private key and socket
if [ ! -f "$dir/munge/munge.key" ]; then
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
fi
munged --force -S "$dir/munge/socket" --key-file="$dir/munge/munge.key" \
       --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"

cat >"$dir/slurm.conf" <<CONF
ClusterName=dgrad-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/socket
CredType=cred/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
InactiveLimit=0
KillWait=5
MinJobAge=30
SlurmctldTimeout=30
SlurmdTimeout=30
Waittime=0
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 30); do
  sinfo -h -o %t 2>/dev/null | grep -Eq "idle|mix|alloc" && break
  sleep 1
done
sinfo -h -o %t | grep -Eq "idle|mix|alloc" || { echo "$0: the node did not come up; see $dir/log" >&2; stop; exit 1; }
echo "export SLURM_CONF=$SLURM_CONF"
