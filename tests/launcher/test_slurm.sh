#!/usr/bin/env bash
# dgrun under Slurm: start a private single-node Slurm and submit
# examples/sbatch_mnist_dgrun.sh (mnist_mlp on 2 ranks) with sbatch.
#   submit  one epoch with `sbatch --wait`: the job's JSON line says
#           world_size 2 and a sane test accuracy
#   kill    3 epochs with checkpoints; once the first checkpoint is written,
#           SIGKILL one rank: srun ends the step, dgrun (--max-restarts 1 in
#           the batch script) starts a new one with --resume inside the same
#           allocation, and the job ends with the params_hash of a run
#           without a fault (mpirun, same flags)
#   preempt examples/sbatch_preempt.sh (--requeue), 30 epochs; once the
#           first checkpoint is written, scancel --signal=USR1 --batch: dgrun
#           forwards it, the ranks checkpoint and exit 75, dgrun requeues the
#           job, the requeued job resumes, and it ends with the params_hash
#           of a run without the signal (mpirun, same flags)
#   timelimit the same script with --time=2 --signal=USR1@90 (no B:, so
#           Slurm signals the job's steps: the ranks get SIGUSR1 directly);
#           the ranks sleep 20 ms a step (DG_TEST_SLOW_RANK) so that the run
#           outlasts the signal: each attempt is signalled before its time
#           limit, checkpoints and is requeued (then the test raises the
#           limit, so the next attempt can finish), and the last attempt
#           ends with the params_hash of a run without any signal
# Usage: test_slurm.sh submit|kill|preempt|timelimit MNIST_MLP MNIST_DIR SRCDIR
set -eu
mode=$1 bin=$2 data=$3 src=$4
dir=$(mktemp -d)
trap '"$src/scripts/slurm_local.sh" stop "$dir/slurm" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
. "$(dirname "$0")/common.sh"

if [ "$mode" != submit ]; then   # the reference first, before Slurm is up
  args=(--data "$data" --epochs 3 --batch-size 32 --threads 1 --json --seed 3 --checkpoint-every 100)
  [ "$mode" != preempt ] || args=(--data "$data" --epochs 30 --threads 1 --json --seed 3 --checkpoint-every 500)
  [ "$mode" != timelimit ] ||
    args=(--data "$data" --epochs 16 --limit-train 12800 --batch-size 32 --threads 1 --json --seed 3 --checkpoint-every 500)
  timeout 300 env SLURM_JOB_ID= "$src/launcher/dgrun" -n 2 "$bin" "${args[@]}" \
    --checkpoint-dir "$dir/ck_ref" >"$dir/ref.out" 2>&1 || { cat "$dir/ref.out"; echo "FAIL: reference run"; exit 1; }
  ref=$(field params_hash "$(json "$dir/ref.out")")
  echo "reference (mpirun, no fault): params_hash $ref"
fi

env_line=$("$src/scripts/slurm_local.sh" start "$dir/slurm") || { echo "FAIL: could not start Slurm"; exit 1; }
eval "$env_line"
cd "$dir"
submit() {   # sbatch --wait ARGS..., output in $dir/job.out
  timeout 400 sbatch --wait --chdir="$dir" --output="$dir/job.out" \
    --export=ALL,DGRUN="$src/launcher/dgrun" "$src/examples/sbatch_mnist_dgrun.sh" "$bin" "$@"
}

if [ "$mode" = submit ]; then
  rc=0
  submit --data "$data" --epochs 1 --threads 1 --json --seed 3 || rc=$?
  echo "--- job output"; cat "$dir/job.out" 2>/dev/null || true; echo "---"
  [ $rc -eq 0 ] || { echo "FAIL: sbatch --wait exited $rc"; exit 1; }
  line=$(json "$dir/job.out")
  [ -n "$line" ] || { echo "FAIL: no JSON line in the job output"; exit 1; }
  ws=$(field world_size "$line") acc=$(field test_accuracy "$line")
  [ "$ws" = 2 ] || { echo "FAIL: world_size $ws, want 2"; exit 1; }
  awk -v a="$acc" 'BEGIN { exit !(a >= 0.75) }' || { echo "FAIL: test_accuracy $acc < 0.75"; exit 1; }
  echo "ok: sbatch + dgrun: world_size 2, test_accuracy $acc"
  exit 0
fi

if [ "$mode" = preempt ]; then
  mkdir -p "$dir/ck"
  timeout 400 sbatch --wait --chdir="$dir" --output="$dir/job.out" --export=ALL,DGRUN="$src/launcher/dgrun",CKPT_DIR="$dir/ck" \
    "$src/examples/sbatch_preempt.sh" "$bin" "${args[@]:0:${#args[@]}-2}" >"$dir/sbatch.out" 2>&1 &
  waiter=$!
  for _ in $(seq 300); do grep -q "Submitted batch job" "$dir/sbatch.out" 2>/dev/null && break; sleep 0.1; done
  jobid=$(grep -o '[0-9]*$' "$dir/sbatch.out" | head -n 1)
  [ -n "$jobid" ] || { cat "$dir/sbatch.out"; echo "FAIL: no job id"; exit 1; }
  wait_first_checkpoint "$dir/ck" $waiter 900 || { cat "$dir/job.out"; exit 1; }
  scancel --signal=USR1 --batch "$jobid" && echo "sent SIGUSR1 to the batch shell of job $jobid"
  rc=0
  wait $waiter || rc=$?
  echo "--- job output"; cat "$dir/job.out"; echo "---"
  [ $rc -eq 0 ] || { echo "FAIL: sbatch --wait exited $rc"; exit 1; }
  grep -q "preempted by SIGUSR1" "$dir/job.out" || { echo "FAIL: no preemption line"; exit 1; }
  grep -q "requeueing Slurm job" "$dir/job.out" || { echo "FAIL: the job was not requeued"; exit 1; }
  got=$(field params_hash "$(json "$dir/job.out")")
  [ "$got" = "$ref" ] || { echo "FAIL: after the requeue params_hash $got, want $ref"; exit 1; }
  echo "ok: preempt: SIGUSR1 to the batch shell, checkpoint, requeue, resume: params_hash $ref"
  exit 0
fi

if [ "$mode" = timelimit ]; then
  # 3200 steps at 20 ms: about 64 s of training, more than one attempt gets
  # before its signal (Slurm sends it up to a minute early).
  # Once the first attempt is requeued, the time limit is raised to 10
  # minutes: Slurm may signal a requeued attempt as soon as it starts (seen
  # here: three attempts in a row stopped two steps after their resume),
  # so later attempts would not finish; the signal under test is the first.
  mkdir -p "$dir/ck"
  rc=0
  timeout 560 sbatch --wait --time=2 --signal=USR1@90 --chdir="$dir" --output="$dir/job.out" \
    --export=ALL,DGRUN="$src/launcher/dgrun",CKPT_DIR="$dir/ck",DG_TEST_SLOW_RANK=1:20 \
    "$src/examples/sbatch_preempt.sh" "$bin" "${args[@]:0:${#args[@]}-2}" >"$dir/sbatch.out" 2>&1 &
  job=$!
  for _ in $(seq 1 400); do
    grep -q "requeueing Slurm job" "$dir/job.out" 2>/dev/null && break
    kill -0 $job 2>/dev/null || break
    sleep 1
  done
  jobid=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' "$dir/sbatch.out")
  [ -n "$jobid" ] || jobid=$(squeue -h -o %i 2>/dev/null | head -n 1)   # sbatch's line may sit in its buffer
  if [ -n "$jobid" ] && grep -q "requeueing Slurm job" "$dir/job.out" 2>/dev/null; then
    scontrol update JobId="$jobid" TimeLimit=10 || echo "warning: could not raise the time limit of job $jobid"
  fi
  wait $job || rc=$?
  echo "--- job output"; cat "$dir/job.out"; echo "---"
  [ $rc -eq 0 ] || { cat "$dir/sbatch.out"; echo "FAIL: sbatch --wait exited $rc"; exit 1; }
  n=$(grep -c "preempted by SIGUSR1" "$dir/job.out" || true)
  [ "$n" -ge 1 ] || { echo "FAIL: no attempt was stopped by the time limit's SIGUSR1"; exit 1; }
  grep -q "requeueing Slurm job" "$dir/job.out" || { echo "FAIL: the job was not requeued"; exit 1; }
  grep -q "DUE TO TIME LIMIT" "$dir/job.out" && { echo "FAIL: an attempt was killed at its time limit"; exit 1; }
  got=$(field params_hash "$(json "$dir/job.out")")
  [ "$got" = "$ref" ] || { echo "FAIL: after $n time-limit signals params_hash $got, want $ref"; exit 1; }
  echo "ok: timelimit: $n attempts signalled before their time limit, checkpointed and requeued;" \
       "the last one ends with params_hash $ref"
  exit 0
fi

mkdir -p "$dir/ck"
submit "${args[@]}" --checkpoint-dir "$dir/ck" &
job=$!
wait_first_checkpoint "$dir/ck" $job 900 || { cat "$dir/job.out"; kill $job 2>/dev/null; exit 1; }
victim=$(rank_pids "--checkpoint-dir $dir/ck\$" "$bin" | tail -n 1)   # a rank, not srun
[ -n "$victim" ] || { echo "FAIL: no rank process found"; kill $job; exit 1; }
kill -9 "$victim" && echo "killed rank pid $victim"
t0=$SECONDS
rc=0
wait $job || rc=$?
echo "--- job output"; cat "$dir/job.out"; echo "---"
[ $rc -eq 0 ] || { echo "FAIL: sbatch --wait exited $rc"; exit 1; }
grep -q "dgrun: attempt 1 of 2 failed" "$dir/job.out" || { echo "FAIL: no failed first attempt"; exit 1; }
grep -q -- "--resume" "$dir/job.out" || { echo "FAIL: the restart did not resume"; exit 1; }
got=$(field params_hash "$(json "$dir/job.out")")
[ "$got" = "$ref" ] || { echo "FAIL: after the restart params_hash $got, want $ref"; exit 1; }
echo "ok: kill: srun ended the step, dgrun resumed in the allocation $((SECONDS - t0)) s later" \
     "and the job ended with params_hash $ref"
