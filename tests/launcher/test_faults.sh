#!/usr/bin/env bash
# Surviving what a cluster does to a job (dgrad/train.h, "Preemption" and
# "Faults"), with real processes:
#   preempt    SIGTERM to dgrun mid-run (2 ranks under mpirun): every rank
#              checkpoints at the same step and exits 75; --resume then ends
#              with the params_hash of an uninterrupted run, bit for bit
#   preempt1   SIGUSR1 to a single process: the same
#   full       --checkpoint-dir on a 64 KiB tmpfs: a one-line error naming
#              the directory, exit 1 (stop), the previous checkpoint intact;
#              with --on-checkpoint-error continue the run ends with exit 0
#   readonly   a read-only checkpoint directory: error naming it, exit 1
#   nonfinite  a NaN loss on rank 1 at step 50 (DG_TEST_NAN_STEP, 2 ranks):
#              every rank stops before the update, with one line naming the
#              step, the rank and a parameter; --on-nonfinite skip finishes,
#              counts the step in the JSON and the replicas agree
#   removed    the checkpoint directory removed mid-run: the next interval
#              makes it again and the run ends with a loadable checkpoint;
#              replaced by a file: a one-line error naming it, exit 1 (stop),
#              or with --on-checkpoint-error continue, exit 0 and the misses
#              counted
#   logfail    --logdir whose directory is removed mid-run: a warning, exit 0
#   slow       DG_TEST_SLOW_RANK=1:5 at 2 ranks: rank 0 warns that rank 1 is slow
# usage: test_faults.sh MODE MNIST_MLP MNIST_DIR SRCDIR
set -u
mode=$1 bin=$2 data=$3 src=$4
dir=$(mktemp -d)
trap 'umount "$dir/mnt" 2>/dev/null; rm -rf "$dir"' EXIT
. "$(dirname "$0")/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SLURM_JOB_ID=
dgrun=$src/launcher/dgrun
args=(--data "$data" --threads 1 --seed 2 --json --quiet)
die() { echo "FAIL: $*"; [ -f "$dir/err" ] && cat "$dir/err"; exit 1; }

case $mode in
preempt|preempt1)
  if [ "$mode" = preempt ]; then run=("$dgrun" -n 2 "$bin"); sig=TERM; else run=("$bin"); sig=USR1; fi
  a=("${args[@]}" --epochs 30 --checkpoint-every 500)
  "${run[@]}" "${a[@]}" --checkpoint-dir "$dir/ref" >"$dir/ref.out" 2>&1 || die "reference run"
  ref=$(field params_hash "$(json "$dir/ref.out")")
  "${run[@]}" "${a[@]}" --checkpoint-dir "$dir/ck" >"$dir/out" 2>"$dir/err" &
  pid=$!
  wait_first_checkpoint "$dir/ck" $pid 600 || exit 1
  kill -$sig $pid
  wait $pid; rc=$?
  [ $rc -eq 75 ] || die "after SIG$sig: exit $rc, want 75"
  grep -q "preempted by SIG" "$dir/err" || die "no preemption line"
  [ -z "$(json "$dir/out")" ] || die "a preempted run printed its result line"
  "${run[@]}" "${a[@]}" --checkpoint-dir "$dir/ck" --resume >"$dir/out2" 2>&1 || die "resume"
  got=$(field params_hash "$(json "$dir/out2")")
  [ "$got" = "$ref" ] || die "resumed params_hash $got, want $ref"
  echo "ok: $mode: SIG$sig -> exit 75 ($(grep -o 'at step [0-9]*' "$dir/err" | head -1)), resumed to params_hash $ref" ;;
full)
  mkdir -p "$dir/mnt"
  mount -t tmpfs -o size=64k tmpfs "$dir/mnt" 2>/dev/null || { echo "skip: cannot mount a tmpfs"; exit 77; }
  # one checkpoint of the MLP is ~160 KiB: the first write fails, nothing is left behind
  "$bin" "${args[@]}" --epochs 1 --checkpoint-every 100 --checkpoint-dir "$dir/mnt/ck" >/dev/null 2>"$dir/err"
  rc=$?
  [ $rc -eq 1 ] || die "full disk: exit $rc, want 1"
  grep -q "$dir/mnt/ck" "$dir/err" || die "the error does not name the directory"
  [ -z "$(ls -A "$dir/mnt/ck" 2>/dev/null)" ] || die "a partial file was left: $(ls -A "$dir/mnt/ck")"
  # a good checkpoint first, then the disk fills: the good one stays loadable
  umount "$dir/mnt"; mount -t tmpfs -o size=1200k tmpfs "$dir/mnt"   # one checkpoint is ~480 KiB
  "$bin" "${args[@]}" --epochs 1 --max-steps 100 --checkpoint-dir "$dir/mnt/ck" >/dev/null 2>&1 || die "first checkpoint"
  dd if=/dev/zero of="$dir/mnt/fill" bs=1k count=600 status=none 2>/dev/null
  "$bin" "${args[@]}" --epochs 1 --checkpoint-every 100 --checkpoint-dir "$dir/mnt/ck" --resume \
       >/dev/null 2>"$dir/err"
  [ $? -eq 1 ] || die "full disk after a good checkpoint: want exit 1"
  [ -f "$dir/mnt/ck/ckpt-100.dgck" ] || die "the previous checkpoint is gone"
  "$bin" "${args[@]}" --epochs 1 --max-steps 100 --checkpoint-dir "$dir/mnt/ck" --resume >/dev/null 2>"$dir/err2" ||
    die "the previous checkpoint does not load: $(cat "$dir/err2")"
  out=$("$bin" "${args[@]}" --epochs 1 --checkpoint-every 100 --checkpoint-dir "$dir/mnt/ck" --resume \
        --on-checkpoint-error continue 2>"$dir/err")
  [ $? -eq 0 ] || die "--on-checkpoint-error continue: the run did not finish"
  nf=$(field checkpoint_failures "$(json <(echo "$out"))")
  [ "$nf" -gt 0 ] || die "checkpoint_failures $nf, want > 0"
  echo "ok: full: error names $dir/mnt/ck, nothing partial left, the previous checkpoint loads;" \
       "continue finished with $nf failed checkpoints" ;;
readonly)
  mkdir -p "$dir/ro"; chmod 555 "$dir/ro"
  # root ignores mode bits: a read-only bind mount
  mount --bind "$dir/ro" "$dir/ro" 2>/dev/null && mount -o remount,bind,ro "$dir/ro" 2>/dev/null ||
    { echo "skip: cannot make a read-only mount"; exit 77; }
  "$bin" "${args[@]}" --epochs 1 --checkpoint-every 100 --checkpoint-dir "$dir/ro/ck" >/dev/null 2>"$dir/err"
  rc=$?
  umount "$dir/ro"
  [ $rc -eq 1 ] || die "read-only: exit $rc, want 1"
  grep -q "$dir/ro/ck" "$dir/err" || die "the error does not name the directory"
  echo "ok: readonly: $(head -1 "$dir/err")" ;;
nonfinite)
  DG_TEST_NAN_STEP=50:1 "$dgrun" -n 2 "$bin" "${args[@]}" --epochs 1 --limit-train 20000 >/dev/null 2>"$dir/err"
  rc=$?
  [ $rc -eq 1 ] || die "diverging run: exit $rc, want 1"
  grep -q "step 50: the loss is not finite on rank 1 (first non-finite gradient: parameter 0" "$dir/err" ||
    die "no line naming step 50, rank 1 and a parameter"
  [ "$(grep -c 'step 50' "$dir/err")" -eq 1 ] || die "more than one line"
  out=$(DG_TEST_NAN_STEP=50:1 "$dgrun" -n 2 "$bin" "${args[@]}" --epochs 1 --limit-train 20000 \
        --on-nonfinite skip 2>/dev/null)
  [ $? -eq 0 ] || die "--on-nonfinite skip did not finish"
  n=$(field skipped_steps "$(json <(echo "$out"))") agree=$(field replicas_agree "$(json <(echo "$out"))")
  [ "$n" = 1 ] || die "skipped_steps $n, want 1"
  [ "$agree" = true ] || die "replicas disagree after a skipped step"
  echo "ok: nonfinite: $(cat "$dir/err"); skip: $n steps skipped" ;;
"removed")
  a=("${args[@]}" --epochs 3 --checkpoint-every 100)
  for what in dir file file-continue; do
    extra=(); [ "$what" = file-continue ] && extra=(--on-checkpoint-error continue)
    rm -rf "$dir/ck"
    DG_TEST_SLOW_RANK=0:1 "$bin" "${a[@]}" "${extra[@]}" --checkpoint-dir "$dir/ck" >"$dir/out" 2>"$dir/err" &
    pid=$!
    wait_first_checkpoint "$dir/ck" $pid 300 || exit 1
    rm -rf "$dir/ck"; [ "$what" = dir ] || : >"$dir/ck"
    wait $pid; rc=$?
    case $what in
    dir)
      [ $rc -eq 0 ] || die "removed directory: exit $rc, want 0"
      last=$(ls "$dir/ck" | sort -V | tail -n 1)
      [ -n "$last" ] || die "no checkpoint after the directory was made again"
      "$bin" "${a[@]}" --checkpoint-dir "$dir/ck" --resume >/dev/null 2>"$dir/err2" ||
        die "the newest checkpoint $last does not load: $(cat "$dir/err2")" ;;
    file)
      [ $rc -eq 1 ] || die "directory replaced by a file: exit $rc, want 1"
      [ "$(wc -l <"$dir/err")" -eq 1 ] || die "want one line of error, got: $(cat "$dir/err")"
      grep -q "$dir/ck" "$dir/err" || die "the error does not name the directory" ;;
    file-continue)
      [ $rc -eq 0 ] || die "--on-checkpoint-error continue: exit $rc, want 0"
      nf=$(field checkpoint_failures "$(json "$dir/out")")
      [ "$nf" -gt 0 ] || die "checkpoint_failures $nf, want > 0" ;;
    esac
    rm -rf "$dir/ck"
  done
  echo "ok: removed: made again (resumes from $last); replaced by a file: $(cat "$dir/err" | head -n 1);" \
       "continue: $nf failed checkpoints" ;;
logfail)
  "$bin" "${args[@]}" --epochs 3 --logdir "$dir/tb" >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 100); do [ -d "$dir/tb" ] && break; sleep 0.05; done
  rm -rf "$dir/tb"; mkdir -p "$dir/tb"; chmod 000 "$dir/tb"; rm -rf "$dir/tb"; : >"$dir/tb"
  wait $pid; rc=$?
  [ $rc -eq 0 ] || die "a logging failure ended the run with exit $rc"
  [ -n "$(json "$dir/out")" ] || die "no result line"
  echo "ok: logfail: exit 0; stderr: $(head -1 "$dir/err")" ;;
slow)
  DG_TEST_SLOW_RANK=1:5 "$dgrun" -n 2 "$bin" "${args[@]}" --epochs 1 --limit-train 20000 --quiet >"$dir/out" 2>"$dir/err" ||
    die "slow run"
  grep -q "rank 1 is slow" "$dir/out" "$dir/err" || die "no warning about rank 1: $(cat "$dir/out")"
  echo "ok: slow: $(grep -h 'rank 1 is slow' "$dir/out" "$dir/err" | head -1)" ;;
*) echo "unknown mode $mode"; exit 2 ;;
esac
