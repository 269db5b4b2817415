#!/usr/bin/env bash
# mnist_mlp under Slurm with srun directly: 2 ranks, DDP over MPI (PMIx).
#   sbatch examples/sbatch_mnist.sh [MNIST_MLP] [ARGS...]
# MNIST_MLP defaults to build/examples/mnist_mlp under the submit directory;
# ARGS default to --epochs 1 --json. Output: dgrad-mnist-JOBID.out.
#SBATCH --job-name=dgrad-mnist
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:15:00
#SBATCH --output=dgrad-mnist-%j.out
set -eu
bin=${1:-$SLURM_SUBMIT_DIR/build/examples/mnist_mlp}
[ $# -eq 0 ] || shift
[ $# -gt 0 ] || set -- --epochs 1 --json
# one BLAS thread per core that Slurm gave each task
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
# --kill-on-bad-exit: one failed rank ends the step instead of leaving the
# others to wait for it (they would fail after DG_COMM_TIMEOUT anyway).
srun --mpi=pmix --kill-on-bad-exit=1 -n "$SLURM_NTASKS" "$bin" "$@"
