#!/usr/bin/env bash
# A checkpoint write killed by SIGKILL half-way leaves the previous one intact:
# the newest valid checkpoint is still the previous one, and it loads.
# usage: test_checkpoint_kill.sh CKPT_WRITER
set -u
W=$1
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
fail() { echo "test_checkpoint_kill: FAIL: $*" >&2; exit 1; }

"$W" big "$D" 1 16 || fail "first save"
# 16 MiB in 1 MiB chunks, 200 ms after each: the write takes about 3 s
DG_CKPT_TEST_SLOW_WRITE=200 "$W" big "$D" 2 16 &
pid=$!
for _ in $(seq 100); do
  ls "$D"/.ckpt-2.dgck.tmp.* >/dev/null 2>&1 && break
  sleep 0.05
done
ls "$D"/.ckpt-2.dgck.tmp.* >/dev/null 2>&1 || { kill -9 $pid; fail "the temporary file never appeared"; }
sleep 0.5
kill -9 $pid
wait $pid 2>/dev/null
ls -la "$D"
[ -e "$D/ckpt-2.dgck" ] && fail "ckpt-2.dgck exists after the writer was killed"
tmpsize=$(stat -c %s "$D"/.ckpt-2.dgck.tmp.*)
echo "killed writer left a temporary file of $tmpsize bytes"
"$W" check "$D" 1 16 || fail "the previous checkpoint does not load"
# and the next save succeeds and removes the stale temporary file
"$W" big "$D" 3 1 || fail "save after the kill"
ls "$D"/.ckpt-*.tmp.* >/dev/null 2>&1 && fail "stale temporary file not removed"
echo "test_checkpoint_kill: OK"
