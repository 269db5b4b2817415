/* dgrad/train.h - a training program around your model (libdgrad_train).
 *
 * You write the model (a build function), and optionally the loss, the
 * metric, the datasets and flags of your own; dg_train_main gives the rest,
 * as PyTorch Lightning's Trainer does: the command line (every flag below,
 * --help generated from one table), data loading sharded across ranks
 * (DistributedSampler), DDP under mpirun/srun/dgrun, Adam/AdamW/SGD, an
 * optional OneCycle schedule, evaluation each epoch, a progress bar,
 * TensorBoard events (--logdir), a Chrome trace (--timeline), checkpoints
 * with exact resume (--checkpoint-dir, --resume, --max-steps), whole-step
 * CUDA graphs (--cuda-graph) and a --json result line.
 *
 *   static dg_module *build(dg_ctx *ctx, const dg_train_opts *o, void *user) {
 *       dg_module *m[3] = { dg_nn_linear(ctx, 784, 50, true), dg_nn_relu(ctx),
 *                           dg_nn_linear(ctx, 50, 10, true) };
 *       return dg_nn_sequential(ctx, 3, m);
 *   }
 *   int main(int argc, char **argv) {
 *       dg_train_program p = dg_train_program_defaults("my_mlp", build);
 *       p.defaults.epochs = 3;
 *       return dg_train_main(&p, argc, argv);
 *   }
 *
 * Preemption: a signal of --preempt-signals (SIGTERM and SIGUSR1 by default)
 * on any rank makes every rank stop at the same step boundary: the flag
 * travels in a one-int non-blocking all-reduce started after each step and
 * read after the next (no blocking collective per step), then the ranks
 * write one checkpoint (with --checkpoint-dir), rank 0 prints a line naming
 * the signal and the step, and every rank exits DG_TRAIN_EXIT_PREEMPTED.
 * dgrun forwards SIGTERM (as SIGUSR1, since mpirun kills ranks on SIGTERM),
 * SIGUSR1 and SIGUSR2 to the ranks, and under Slurm requeues the job.
 *
 * Faults: a checkpoint that cannot be written (a full, read-only or removed
 * directory) is a one-line error naming it, and the previous checkpoint
 * stays intact; --on-checkpoint-error stop (default) ends the run (exit 1),
 * continue trains on and tries again at the next interval. A TensorBoard or
 * timeline write that fails mid-run is a warning: training goes on and the
 * exit status is not changed. A non-finite loss (on any rank) or gradient
 * is caught before the optimizer step on every rank (a rank whose loss is
 * not finite makes its gradients NaN, so the all-reduce tells every rank):
 * --on-nonfinite stop (default) ends the run (exit 1) with a line naming
 * the step, the rank and the first parameter whose gradient is not finite,
 * keeping the last good checkpoint; skip drops such steps, as a grad
 * scaler does, and counts them ("skipped_steps" in --json, TensorBoard
 * train/skipped_steps). Slow ranks: every 100 steps the ranks share their
 * time busy (not waiting in the all-reduce); rank 0 warns, once an epoch,
 * about a rank busy 1.5 times the median and at least 0.5 ms a step more,
 * which the others wait for, with its wait times, and logs
 * ranks/busy_ms and ranks/wait_ms per rank to TensorBoard.
 * For tests, DG_TEST_SLOW_RANK=R:MS makes rank R sleep MS ms each step.
 *
 * Batch-norm buffers (dg_module_buffers: running mean and variance)
 * follow PyTorch DDP's broadcast_buffers=True: rank 0's are broadcast
 * before every forward pass (and before evaluation), so every rank
 * normalizes with the same running statistics; checkpoints carry them.
 */
#ifndef DGRAD_TRAIN_H
#define DGRAD_TRAIN_H

#include "dgrad/data.h"
#include "dgrad/nn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- flags: one table gives parsing, checking and --help ---------------- */

typedef enum {
    DG_FLAG_SET,      /* bool field = true, takes no value */
    DG_FLAG_CLEAR,    /* bool field = false, takes no value ("--no-x") */
    DG_FLAG_INT,      /* int field, an integer in [lo, hi] */
    DG_FLAG_I64,      /* int64_t field, an integer in [lo, hi] */
    DG_FLAG_U64,      /* uint64_t field, an integer in [lo, hi] (lo >= 0) */
    DG_FLAG_FLOAT,    /* float field, a number in (lo, hi] (lo excluded) */
    DG_FLAG_DOUBLE,   /* double field, a number in (lo, hi] */
    DG_FLAG_PATH,     /* const char * field (argv's string), not empty */
    DG_FLAG_STRING,   /* const char * field (argv's string), any */
    DG_FLAG_CHOICE,   /* const char * field, one of choices (NULL-terminated) */
} dg_flag_kind;

typedef struct {
    const char *name;            /* "--epochs" */
    dg_flag_kind kind;
    size_t offset;               /* offsetof(your struct, field) */
    const char *metavar;         /* "N" in "--epochs N"; NULL: none */
    const char *help;            /* one or more lines; the default is appended */
    double lo, hi;               /* range of numeric kinds */
    const char *const *choices;  /* DG_FLAG_CHOICE */
    const char *expect;          /* optional: the "expected ..." text of errors */
} dg_flag;

/* A table of flags and the struct they write into. */
typedef struct {
    const dg_flag *flags;
    int count;
    void *target;                /* parsed values go here */
    const void *defaults;        /* shown by --help; may be target */
} dg_flag_table;

/* Parses argv[1..argc) against the tables. Returns 0 when every argument
 * is known and valid, -1 after printing --help (-h) to stdout, or 2 after
 * printing a one-line error naming the flag to stderr ("prog: unknown flag
 * '--x' (see --help)", "prog: invalid value 'abc' for --epochs (expected
 * an integer >= 1)", "prog: flag --data needs a value"). */
int dg_flags_parse(const dg_flag_table *tables, int ntables, int argc, char **argv,
                   const char *prog, const char *usage_head);

/* Writes the --help text of the tables: usage_head, then one entry a flag
 * with its help and default. */
void dg_flags_help(FILE *out, const dg_flag_table *tables, int ntables, const char *prog,
                   const char *usage_head);

/* ---- the trainer ---------------------------------------------------------- */

/* The options every program has (the built-in flag table, see --help). */
typedef struct {
    const char *data;           /* --data DIR: MNIST IDX files (the default datasets) */
    int epochs;
    int batch_size;             /* per rank */
    float lr;
    const char *optimizer;      /* "adam", "adamw", "sgd" */
    const char *sched;          /* "none", "onecycle" */
    double pct_start, div_factor;   /* OneCycle */
    uint64_t seed;
    int threads;                /* BLAS threads, 0 = the library's choice */
    bool json;
    const char *device;         /* "cpu", "cuda" */
    bool overlap;
    bool bf16_allreduce;        /* --bf16-allreduce: DDP's bf16_compress */
    bool zero;                  /* --zero: ZeRO-1 (dgrad/zero.h) instead of DDP's all-reduce */
    double bucket_cap_mb;
    const char *logdir;         /* TensorBoard event files */
    bool logdir_per_rank;
    int log_every;              /* steps between train/loss scalars */
    const char *timeline;       /* Chrome trace */
    bool quiet;
    const char *ckpt_dir;       /* --checkpoint-dir */
    int64_t ckpt_every;         /* steps between checkpoints, 0 = none */
    int keep;                   /* checkpoints kept */
    bool resume;
    int64_t max_steps;          /* 0 = no limit */
    bool cuda_graph;            /* --cuda-graph */
    int64_t limit_train;        /* 0 = the whole training set */
    bool normalize;             /* uint8 images: (pixel/255 - 0.1307) / 0.3081 */
    bool train_accuracy;        /* evaluate on the training set each epoch */
    const char *preempt_signals;/* "TERM,USR1" (default): signals that checkpoint
                                   and stop (see "Preemption"); "none" */
    const char *on_ckpt_error;  /* "stop" (default) or "continue" */
    const char *on_nonfinite;   /* "stop" (default) or "skip" */
    const char *amp;            /* --amp: "none" (default) or "bf16": forward and
                                   loss of each training step under
                                   dg_autocast_begin(ctx, DG_BF16) (CPU only) */
} dg_train_opts;

/* Exit status of a run stopped by a preemption signal after its checkpoint
 * (EX_TEMPFAIL: "try again"): resume it with --resume. */
#define DG_TRAIN_EXIT_PREEMPTED 75

/* What a program brings. Only prog and build are required. */
typedef struct {
    const char *prog;           /* "mnist_mlp": messages and usage */
    const char *model;          /* the --json line's "model" (default: prog) */
    const char *about;          /* one line for --help */
    bool flat_input;            /* samples as [B, sample_size] rather than
                                   [B, 1, H, W] for 2-D samples */
    dg_train_opts defaults;     /* start from dg_train_default_opts() */
    void *user;                 /* passed to every hook below */

    /* The model, its parameters registered in ctx; NULL on error (with a
     * message, dg_set_error). Called once, after the seed is set. */
    dg_module *(*build)(dg_ctx *ctx, const dg_train_opts *o, void *user);
    /* Optional: the scalar loss of a batch (default: cross entropy of the
     * model's [B, num_classes] output against the labels). NULL on error. */
    dg_tensor *(*loss)(dg_tensor *out, dg_tensor *y, void *user);
    /* Optional: how many of the batch's predictions are right (default:
     * argmax of out over dim 1 equals y). DG_ERR with a message on error. */
    dg_status (*correct)(dg_tensor *out, dg_tensor *y, int64_t *n_correct, void *user);
    /* Optional: the datasets (default: MNIST from --data). Both must pass
     * dg_dataset_check; dg_train_main frees them with dg_dataset_free.
     * Called on every rank, each rank loads the whole set (the sampler
     * shards it). DG_ERR with a message on error. */
    dg_status (*load_data)(const dg_train_opts *o, dg_dataset *train, dg_dataset *test, void *user);

    /* Optional: called on every rank before each training step's forward
     * pass with the step's index (0-based over the whole run, so a resumed
     * run sees the numbers the uninterrupted one did), the rank and the
     * number of ranks. A model whose graph changes per step (LayerDrop, a
     * branch taken by chance) decides its choice here, from the seed, the
     * step and the rank. Not with --cuda-graph (one captured graph). */
    void (*begin_step)(int64_t step, int rank, int world, void *user);
    /* Optional: flags of the program's own, written into extra_target
     * (the user struct, say). Boolean ones appear in the --json line. */
    const dg_flag *extra_flags;
    int num_extra_flags;
    void *extra_target;
} dg_train_program;

/* The defaults every program starts from (data/mnist, 1 epoch, batch 64,
 * Adam lr 1e-3, no schedule, cpu, overlap on, 25 MiB buckets, ...). */
dg_train_opts dg_train_default_opts(void);

/* A program with prog, build and the default options. */
dg_train_program dg_train_program_defaults(const char *prog,
                                           dg_module *(*build)(dg_ctx *ctx, const dg_train_opts *o,
                                                               void *user));

/* Runs the program: parses argv, loads the data, trains, evaluates,
 * prints. Returns the exit code: 0, 1 on a run-time error (a one-line
 * message on stderr), 2 on a bad command line. A NULL program or build
 * is an error (1), not a crash. */
int dg_train_main(const dg_train_program *p, int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_TRAIN_H */
