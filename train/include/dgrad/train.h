/* train.h - the training program shared by the MNIST examples.
 *
 * mnist_mlp and mnist_cnn differ in their model and defaults only; this
 * driver gives both the same flags, output and --json line: data loading
 * (sharded under mpirun/srun), DDP, Adam/AdamW/SGD, an optional OneCycle
 * schedule, evaluation, progress, TensorBoard events (--logdir), a Chrome
 * trace (--timeline), checkpoints with exact resume (--checkpoint-dir,
 * --resume, --max-steps) and whole-step CUDA graphs (--cuda-graph).
 *
 * Batch-norm buffers (running mean and variance) follow PyTorch DDP's
 * broadcast_buffers=True: rank 0's are broadcast before every forward pass
 * (and before evaluation), so every rank normalizes with the same running
 * statistics; checkpoints carry them.
 */
#ifndef DG_EXAMPLES_TRAIN_H
#define DG_EXAMPLES_TRAIN_H

#include "dgrad/nn.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { EX_SCHED_NONE, EX_SCHED_ONECYCLE } ex_sched;

/* The command line, parsed. */
typedef struct {
    const char *data;
    int epochs;
    int batch_size;
    float lr;
    const char *optimizer;
    uint64_t seed;
    int threads;
    bool json;
    const char *device;
    bool overlap;
    double bucket_cap_mb;
    const char *logdir;         /* TensorBoard event files */
    bool logdir_per_rank;
    int log_every;              /* steps between train/loss scalars */
    const char *timeline;       /* Chrome trace */
    bool quiet;
    const char *ckpt_dir;       /* --checkpoint-dir */
    long long ckpt_every;       /* steps between checkpoints, 0 = none */
    int keep;                   /* checkpoints kept */
    bool resume;
    long long max_steps;        /* 0 = no limit */
    bool cuda_graph;            /* --cuda-graph */
    long long limit_train;      /* 0 = the whole training set */
    bool normalize;             /* (pixel/255 - 0.1307) / 0.3081 */
    ex_sched sched;
    double pct_start, div_factor;   /* OneCycle */
    bool train_accuracy;        /* evaluate on the training set each epoch */
    bool bn;                    /* models with batch norm: --bn / --no-bn */
} ex_options;

/* What an example brings: its name, model and defaults. */
typedef struct {
    const char *prog;           /* "mnist_mlp": messages and usage */
    const char *model;          /* "mlp": the --json line's "model" */
    const char *about;          /* one line for --help */
    bool flat_input;            /* images as [B, 784] rather than [B, 1, 28, 28] */
    bool has_bn;                /* takes --bn / --no-bn */
    ex_options defaults;        /* data, epochs, batch_size, lr, optimizer,
                                   sched, pct_start, div_factor,
                                   train_accuracy, bn; the rest is common */
    /* The model (its parameters registered in ctx); NULL on error. */
    dg_module *(*build)(dg_ctx *ctx, const ex_options *o);
} ex_program;

/* The defaults every example shares; an example overrides the model's. */
ex_options ex_default_options(void);

/* Runs the program: parses argv, trains, prints. Returns the exit code
 * (0, 1 on a run-time error, 2 on a bad command line). */
int ex_main(const ex_program *p, int argc, char **argv);

#endif /* DG_EXAMPLES_TRAIN_H */
