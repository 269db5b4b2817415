#!/usr/bin/env bash
# mnist_mlp under Slurm through dgrun: 2 ranks, restarted from the last
# checkpoint once if the job fails.
#   sbatch examples/sbatch_mnist_dgrun.sh [MNIST_MLP] [ARGS...]
# MNIST_MLP defaults to build/examples/mnist_mlp under the submit directory;
# dgrun is $DGRUN, else launcher/dgrun there, else dgrun on PATH; ARGS default to
# --epochs 1 --json. Output: dgrad-mnist-dgrun-JOBID.out.
# Inside the allocation dgrun runs `srun --mpi=pmix -n $SLURM_NTASKS`.
# For restarts, pass the checkpoint flags, e.g.
#   sbatch examples/sbatch_mnist_dgrun.sh build/examples/mnist_mlp \
#          --epochs 3 --json --checkpoint-dir ckpt --checkpoint-every 200
#SBATCH --job-name=dgrad-mnist-dgrun
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:15:00
#SBATCH --output=dgrad-mnist-dgrun-%j.out
set -eu
bin=${1:-$SLURM_SUBMIT_DIR/build/examples/mnist_mlp}
[ $# -eq 0 ] || shift
[ $# -gt 0 ] || set -- --epochs 1 --json
dgrun=${DGRUN:-$SLURM_SUBMIT_DIR/launcher/dgrun}
[ -x "$dgrun" ] || dgrun=$(command -v dgrun) || { echo "dgrun not found: set DGRUN" >&2; exit 1; }
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
restarts=0    # restart only when there is a checkpoint to resume from
for a in "$@"; do [ "$a" != --checkpoint-dir ] || restarts=1; done
exec "$dgrun" -n "$SLURM_NTASKS" --max-restarts "$restarts" --timeout 60 "$bin" "$@"
