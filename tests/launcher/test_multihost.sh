#!/usr/bin/env bash
# dgrun across two "hosts": network namespaces dgns1/dgns2 joined by a veth
# pair (scripts/netns_hosts.sh), one rank in each, Open MPI over TCP on
# 10.213.0.0/24 only, remote starts through `ip netns exec`.
#   same      one epoch ends with the same params_hash (bitwise) as 2 ranks on one host
#   kill      SIGKILL the rank in dgns2 mid-run
#   linkdown  take the veth link down mid-run (back up once the attempt has failed)
# After a fault the attempt must end with a clear error in bounded time and
# `dgrun --max-restarts 1` must resume from the checkpoint and end with the
# same params_hash as a run without a fault. Needs root and `ip netns`.
# Usage: test_multihost.sh same|kill|linkdown MNIST_MLP MNIST_DIR SRCDIR
set -u
mode=$1 bin=$2 data=$3 src=$4
dgrun=$src/launcher/dgrun
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SLURM_JOB_ID=
comm_timeout=20 kill_after=15

if [ "$mode" != same ] && ! "$bin" --help 2>&1 | grep -q -- --checkpoint-dir; then
  echo "SKIP: mnist_mlp has no --checkpoint-dir/--resume yet; the restart test needs them"
  exit 77
fi

# dgns1/dgns2 are machine-wide: one user at a time (other build trees'
# ctest runs too), else one's `netns_hosts.sh up` kills the other's ranks.
exec 9>"${TMPDIR:-/tmp}/dgrad-netns.lock"
flock -w 900 9 || { echo "FAIL: the namespaces stayed in use for 900 s"; exit 1; }
dir=$(mktemp -d)
cleanup() {
  ip -n dgns1 link set dgveth1 up 2>/dev/null
  "$src/scripts/netns_hosts.sh" down
  rm -rf "$dir"
}
trap cleanup EXIT
"$src/scripts/netns_hosts.sh" up || { echo "FAIL: could not create the namespaces"; exit 1; }
printf '#!/bin/sh\nexec "%s" rsh "$@"\n' "$src/scripts/netns_hosts.sh" >"$dir/rsh"
chmod +x "$dir/rsh"
net="--mca plm_rsh_agent $dir/rsh --mca btl tcp,self --mca btl_tcp_if_include 10.213.0.0/24"
net+=" --mca oob_tcp_if_include 10.213.0.0/24"
two_hosts=(ip netns exec dgns1 "$dgrun" -n 2 --hosts 10.213.0.1:1,10.213.0.2:1 --mpirun-args "$net")
. "$(dirname "$0")/common.sh"

if [ "$mode" = same ]; then
  args=(--data "$data" --epochs 1 --threads 1 --json --seed 3)
  timeout 300 "$dgrun" -n 2 "$bin" "${args[@]}" >"$dir/one.out" 2>&1 || { cat "$dir/one.out"; echo "FAIL: one host"; exit 1; }
  timeout 300 "${two_hosts[@]}" "$bin" "${args[@]}" >"$dir/two.out" 2>&1 || { cat "$dir/two.out"; echo "FAIL: two hosts"; exit 1; }
  a=$(json "$dir/one.out") b=$(json "$dir/two.out")
  echo "one host:  $a"; echo "two hosts: $b"
  [ "$(field world_size "$b")" = 2 ] || { echo "FAIL: world_size $(field world_size "$b")"; exit 1; }
  [ "$(field params_hash "$a")" = "$(field params_hash "$b")" ] || { echo "FAIL: params_hash differs"; exit 1; }
  echo "ok: 2 ranks on 2 hosts end with the same params_hash as on one host"
  exit 0
fi

args=(--data "$data" --epochs 3 --batch-size 32 --threads 1 --json --seed 3 --checkpoint-every 100)
timeout 300 "$dgrun" -n 2 "$bin" "${args[@]}" --checkpoint-dir "$dir/ck_ref" >"$dir/ref.out" 2>&1 ||
  { cat "$dir/ref.out"; echo "FAIL: reference run"; exit 1; }
ref=$(field params_hash "$(json "$dir/ref.out")")
echo "reference (no fault): params_hash $ref"

mkdir -p "$dir/ck"
timeout 400 "${two_hosts[@]}" --max-restarts 1 --restart-delay 5 --timeout $comm_timeout --kill-after $kill_after \
  "$bin" "${args[@]}" --checkpoint-dir "$dir/ck" >"$dir/run.out" 2>&1 &
job=$!
# inject the fault once the first checkpoint is there
wait_first_checkpoint "$dir/ck" $job || { cat "$dir/run.out"; kill $job 2>/dev/null; exit 1; }
t0=$SECONDS
if [ "$mode" = kill ]; then
  for p in $(ip netns pids dgns2); do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = "$(basename "$bin" | cut -c1-15)" ] && kill -9 "$p" && echo "killed rank pid $p in dgns2"
  done
  want="signal 9|Killed|exited on signal"
else
  ip -n dgns1 link set dgveth1 down && echo "dgveth1 down"
  want="timed out after $comm_timeout s"
fi
# bounded: comm timeout + dgrun's kill-after + slack
limit=$((comm_timeout + kill_after + 30))
while ! grep -q "dgrun: attempt 1 of 2 failed" "$dir/run.out"; do
  if [ $((SECONDS - t0)) -gt $limit ] || ! kill -0 $job 2>/dev/null; then
    cat "$dir/run.out"; echo "FAIL: no failed attempt within $limit s of the fault"; kill $job 2>/dev/null; exit 1
  fi
  sleep 0.2
done
echo "attempt 1 failed $((SECONDS - t0)) s after the fault"
[ "$mode" = kill ] || { ip -n dgns1 link set dgveth1 up && echo "dgveth1 up"; }
wait $job; rc=$?
cat "$dir/run.out"
[ $rc -eq 0 ] || { echo "FAIL: dgrun --max-restarts 1 exited $rc"; exit 1; }
grep -Eq "$want" "$dir/run.out" || { echo "FAIL: no clear error matching '$want'"; exit 1; }
got=$(field params_hash "$(json "$dir/run.out")")
[ "$got" = "$ref" ] || { echo "FAIL: after the restart params_hash $got, want $ref"; exit 1; }
echo "ok: $mode: the attempt failed with a clear error, the restart resumed and ended with params_hash $ref"
