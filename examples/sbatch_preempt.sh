#!/usr/bin/env bash
# A preemptible, requeueable training job: the whole pattern.
#   sbatch examples/sbatch_preempt.sh [MNIST_MLP] [ARGS...]
# - --signal=B:USR1@90: 90 s before the time limit (or on preemption with
#   PreemptMode=REQUEUE), Slurm sends SIGUSR1 to this batch shell only;
#   dgrun, started with exec so that it *is* the batch shell, forwards it
#   to every rank. Without B: Slurm signals every step, and the ranks get
#   it directly; both work. scancel --signal=USR1 JOBID works the same way.
# - every rank stops at the same step, one checkpoint is written, and the
#   program exits 75; dgrun sees it and, since the job allows requeueing
#   (--requeue), runs `scontrol requeue`: the job goes back to the queue.
# - the requeued job runs this script again: --resume continues from the
#   newest checkpoint (and starts from scratch the first time, when the
#   directory is empty), so one script serves every attempt.
#SBATCH --job-name=dgrad-preemptible
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=dgrad-preemptible-%j.out
set -eu
bin=${1:-$SLURM_SUBMIT_DIR/build/examples/mnist_mlp}
[ $# -eq 0 ] || shift
[ $# -gt 0 ] || set -- --epochs 3 --json
dgrun=${DGRUN:-$SLURM_SUBMIT_DIR/launcher/dgrun}
[ -x "$dgrun" ] || dgrun=$(command -v dgrun) || { echo "dgrun not found: set DGRUN" >&2; exit 1; }
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
ckpt=${CKPT_DIR:-$SLURM_SUBMIT_DIR/ckpt-$SLURM_JOB_ID}
echo "attempt ${SLURM_RESTART_COUNT:-0} of job $SLURM_JOB_ID, checkpoints in $ckpt"
exec "$dgrun" -n "$SLURM_NTASKS" "$bin" "$@" --checkpoint-dir "$ckpt" --checkpoint-every 500 --resume
