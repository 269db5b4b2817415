/* train.c - the training program around a user's model (dgrad/train.h):
 * the flag table, data, DDP, the loop, evaluation, checkpoints, logging. */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/train.h"

#include "dgrad/amp.h"
#include "dgrad/dist_checkpoint.h"
#include "dgrad/data.h"
#include "dgrad/ddp.h"
#include "dgrad/graph.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/progress.h"
#include "dgrad/sched.h"
#include "dgrad/zero.h"
#include "dgrad/summary.h"
#include "dgrad/timeline.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

dg_train_opts dg_train_default_opts(void) {
    return (dg_train_opts){ .data = "data/mnist", .epochs = 1, .batch_size = 64, .lr = 1e-3f,
                            .optimizer = "adam", .sched = "none", .device = "cpu", .overlap = true,
                            .bucket_cap_mb = 25.0, .log_every = 10, .keep = 3, .pct_start = 0.3,
                            .div_factor = 25.0, .preempt_signals = "TERM,USR1", .on_ckpt_error = "stop",
                            .on_nonfinite = "stop", .amp = "none" };
}

dg_train_program dg_train_program_defaults(const char *prog,
                                           dg_module *(*build)(dg_ctx *ctx, const dg_train_opts *o,
                                                               void *user)) {
    return (dg_train_program){ .prog = prog, .model = prog, .build = build,
                               .defaults = dg_train_default_opts() };
}

/* ---- the built-in flags ------------------------------------------------- */
static const char *const optimizers[] = { "adam", "adamw", "sgd", NULL };
static const char *const scheds[] = { "none", "onecycle", NULL };
static const char *const devices[] = { "cpu", "cuda", NULL };
static const char *const ckpt_errors[] = { "stop", "continue", NULL };
static const char *const nonfinites[] = { "stop", "skip", NULL };
static const char *const amps[] = { "none", "bf16", NULL };

#define OPT(f) offsetof(dg_train_opts, f)
#define POS "an integer >= 1"
static const dg_flag builtin_flags[] = {
    { "--data", DG_FLAG_PATH, OPT(data), "DIR", "MNIST IDX files (.gz or plain), the default datasets", 0, 0, NULL, NULL },
    { "--epochs", DG_FLAG_INT, OPT(epochs), "N", "epochs", 1, 100000, NULL, POS },
    { "--batch-size", DG_FLAG_INT, OPT(batch_size), "N", "samples per step (per rank)", 1, 1 << 20, NULL, POS },
    { "--lr", DG_FLAG_FLOAT, OPT(lr), "X", "learning rate (OneCycle: the maximum)", 0, 1e6, NULL, NULL },
    { "--optimizer", DG_FLAG_CHOICE, OPT(optimizer), "NAME", "optimizer (sgd: momentum 0.9 with --sched onecycle)", 0, 0, optimizers, NULL },
    { "--sched", DG_FLAG_CHOICE, OPT(sched), "NAME", "none (a constant lr) or onecycle (OneCycleLR over all steps,\n"
      "cycling Adam's beta1 / SGD's momentum)", 0, 0, scheds, NULL },
    { "--pct-start", DG_FLAG_DOUBLE, OPT(pct_start), "X", "OneCycle: fraction of the steps spent warming up", 0,
      0.9999999999999999, NULL, "a number in (0, 1)" },
    { "--div-factor", DG_FLAG_DOUBLE, OPT(div_factor), "X", "OneCycle: initial lr = max lr / X", 0, 1e6, NULL, NULL },
    { "--seed", DG_FLAG_U64, OPT(seed), "N", "seed for initialization, shuffling and dropout", 0, 9.2e18, NULL, NULL },
    { "--threads", DG_FLAG_INT, OPT(threads), "N", "BLAS threads (default: the BLAS library's choice)", 1, 1024, NULL, POS },
    { "--json", DG_FLAG_SET, OPT(json), NULL, "print a JSON summary as the last line", 0, 0, NULL, NULL },
    { "--device", DG_FLAG_CHOICE, OPT(device), "NAME", "cpu or cuda (gradients reduced with NCCL when dgrad has it;\n"
      "DG_COMM_BACKEND=mpi|local stages them through the host)", 0, 0, devices, NULL },
    { "--limit-train", DG_FLAG_I64, OPT(limit_train), "N", "train on the first N training samples only (default: all)", 1, 9.2e18, NULL, POS },
    { "--normalize", DG_FLAG_SET, OPT(normalize), NULL, "uint8 inputs (pixel/255 - 0.1307) / 0.3081, as torchvision's\n"
      "Normalize; else pixel/255, as ToTensor", 0, 0, NULL, NULL },
    { "--train-accuracy", DG_FLAG_SET, OPT(train_accuracy), NULL, "also evaluate on the training set after each epoch", 0, 0, NULL, NULL },
    { "--no-train-accuracy", DG_FLAG_CLEAR, OPT(train_accuracy), NULL, "do not", 0, 0, NULL, NULL },
    { "--bucket-cap-mb", DG_FLAG_DOUBLE, OPT(bucket_cap_mb), "X", "DDP gradient bucket size in MiB", 0, 1e6, NULL, NULL },
    { "--no-overlap", DG_FLAG_CLEAR, OPT(overlap), NULL, "reduce gradients after backward instead of during it", 0, 0, NULL, NULL },
    { "--bf16-allreduce", DG_FLAG_SET, OPT(bf16_allreduce), NULL, "all-reduce gradients as bfloat16 (half the bytes, as\n"
      "PyTorch's bf16_compress_hook; CPU only)", 0, 0, NULL, NULL },
    { "--zero", DG_FLAG_SET, OPT(zero), NULL, "ZeRO-1: shard the optimizer state over the ranks (reduce-scatter,\n"
      "update a shard, all-gather; PyTorch's ZeroRedundancyOptimizer);\n"
      "with --sched none", 0, 0, NULL, NULL },
    { "--logdir", DG_FLAG_PATH, OPT(logdir), "DIR", "TensorBoard event files in DIR (rank 0): train/loss every\n"
      "--log-every steps, per epoch the mean loss, accuracies, lr, samples/s,\n"
      "all-reduce seconds, histograms of parameters and gradients", 0, 0, NULL, NULL },
    { "--logdir-per-rank", DG_FLAG_SET, OPT(logdir_per_rank), NULL, "every rank writes DIR/rank<N> instead", 0, 0, NULL, NULL },
    { "--log-every", DG_FLAG_INT, OPT(log_every), "N", "steps between train/loss scalars", 1, 1000000000, NULL, POS },
    { "--timeline", DG_FLAG_PATH, OPT(timeline), "FILE", "Chrome trace (Perfetto) of forward, backward, all-reduces,\n"
      "optimizer and data; under mpirun each rank writes FILE.rank<N>\n"
      "(merge with scripts/merge_timeline.py FILE)", 0, 0, NULL, NULL },
    { "--quiet", DG_FLAG_SET, OPT(quiet), NULL, "print nothing but errors (and --json's line)", 0, 0, NULL, NULL },
    { "--checkpoint-dir", DG_FLAG_PATH, OPT(ckpt_dir), "DIR", "checkpoints DIR/ckpt-<step>.dgck (written by rank 0)", 0, 0, NULL, NULL },
    { "--checkpoint-every", DG_FLAG_I64, OPT(ckpt_every), "N", "write one every N global steps (and at --max-steps)", 1, 9.2e18, NULL, POS },
    { "--keep", DG_FLAG_INT, OPT(keep), "N", "checkpoints kept in DIR (0 = all)", 0, 1000000, NULL, "an integer >= 0" },
    { "--resume", DG_FLAG_SET, OPT(resume), NULL, "continue from DIR's newest valid checkpoint, mid-epoch if need be\n"
      "(bitwise identical with the same world and batch size; another world\n"
      "size continues at the next global batch); from scratch if DIR has none", 0, 0, NULL, NULL },
    { "--max-steps", DG_FLAG_I64, OPT(max_steps), "N", "stop after N global steps (with a checkpoint under --checkpoint-dir; default: no limit)", 1, 9.2e18, NULL, POS },
    { "--cuda-graph", DG_FLAG_SET, OPT(cuda_graph), NULL, "with --device cuda in one process and --sched none: after 3 eager\n"
      "steps, capture a whole training step in a CUDA graph and replay it", 0, 0, NULL, NULL },
    { "--preempt-signals", DG_FLAG_STRING, OPT(preempt_signals), "LIST", "signals that make every rank checkpoint at\n"
      "the next step and exit 75 (TERM, USR1, USR2, INT, HUP, comma-separated; none)", 0, 0, NULL, NULL },
    { "--on-checkpoint-error", DG_FLAG_CHOICE, OPT(on_ckpt_error), "WHAT", "a checkpoint that cannot be written:\n"
      "stop the run, or continue and retry at the next interval", 0, 0, ckpt_errors, NULL },
    { "--on-nonfinite", DG_FLAG_CHOICE, OPT(on_nonfinite), "WHAT", "a NaN or infinite loss or gradient: stop (keeping\n"
      "the last good checkpoint), or skip the step as a grad scaler does", 0, 0, nonfinites, NULL },
    { "--amp", DG_FLAG_CHOICE, OPT(amp), "MODE", "none, or bf16: each training step's forward and loss under\n"
      "bfloat16 autocast (dgrad/amp.h; CPU only; evaluation stays float32)", 0, 0, amps, NULL },
};
#undef OPT
#undef POS

static const char usage_tail[] =
    "On a terminal rank 0 shows a progress bar, except under Open MPI's mpirun\n"
    "(DG_PROGRESS=bar|lines|quiet overrides). Under mpirun/srun each rank trains on\n"
    "its shard; --batch-size is per rank, and batch-norm running statistics are\n"
    "rank 0's, broadcast before every step.";

/* ---- preemption signals ------------------------------------------------- */
enum { MAX_PREEMPT = 5 };
static volatile sig_atomic_t g_preempt_signal;   /* the last one received, or 0 */
static void on_preempt_signal(int sig) { g_preempt_signal = sig; }

/* "TERM,USR1" into signal numbers; -1 on a name it does not know. */
static int parse_signals(const char *list, int *sigs) {
    static const struct { const char *name; int sig; } known[] = {
        { "TERM", SIGTERM }, { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "INT", SIGINT }, { "HUP", SIGHUP },
    };
    if (!strcmp(list, "none")) return 0;
    int n = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *name = len > 3 && !strncmp(p, "SIG", 3) ? p + 3 : p;
        size_t nlen = len - (size_t)(name - p);
        int sig = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            if (strlen(known[k].name) == nlen && !strncmp(name, known[k].name, nlen)) sig = known[k].sig;
        if (!sig || n == MAX_PREEMPT) return -1;
        sigs[n++] = sig;
        p += len + (p[len] == ',');
    }
    return n;
}

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    default: return "a signal";
    }
}

/* Flags that only make sense together. 0 or 2 (after a message). */
static int check_combinations(const dg_train_program *p, const dg_train_opts *o) {
    const char *msg = NULL;
    int sigs[MAX_PREEMPT];
    if (parse_signals(o->preempt_signals, sigs) < 0) {
        fprintf(stderr, "%s: invalid value '%s' for --preempt-signals (expected a comma-separated list of "
                "TERM, USR1, USR2, INT, HUP, or none)\n", p->prog, o->preempt_signals);
        return 2;
    }
    if ((o->resume || o->ckpt_every) && !o->ckpt_dir)
        msg = o->resume ? "--resume needs --checkpoint-dir" : "--checkpoint-every needs --checkpoint-dir";
    else if (o->logdir_per_rank && !o->logdir)
        msg = "--logdir-per-rank needs --logdir";
    else if (o->cuda_graph && strcmp(o->device, "cuda"))
        msg = "--cuda-graph needs --device cuda";
    else if (o->cuda_graph && strcmp(o->sched, "none"))   /* the captured optimizer step keeps its lr */
        msg = "--cuda-graph needs --sched none (a captured step cannot follow a schedule)";
    else if (o->cuda_graph && p->begin_step)   /* the graph changes per step */
        msg = "--cuda-graph cannot replay a model whose graph changes per step (it has a begin_step hook)";
    else if (o->zero && strcmp(o->sched, "none"))   /* dg_sched drives a dg_optim */
        msg = "--zero needs --sched none (the schedulers drive an unsharded optimizer)";
    else if (o->zero && o->cuda_graph)
        msg = "--zero cannot be captured with --cuda-graph";
    else if (o->zero && o->bf16_allreduce)
        msg = "--zero reduce-scatters the gradients in float32: drop --bf16-allreduce";
    if (!msg) return 0;
    fprintf(stderr, "%s: %s\n", p->prog, msg);
    return 2;
}

/* ---- the hooks' defaults -------------------------------------------------- */
static dg_tensor *batch_loss(const dg_train_program *p, dg_tensor *out, dg_tensor *y) {
    if (p->loss) return p->loss(out, y, p->user);
    return dg_cross_entropy(out, y);
}

static dg_status batch_correct(const dg_train_program *p, dg_tensor *out, dg_tensor *y, int64_t *n) {
    if (p->correct) return p->correct(out, y, n, p->user);
    dg_tensor *am = dg_argmax(out, 1, false);
    if (!am) return DG_ERR;
    if (am->ndim != 1 || am->shape[0] != y->shape[0])
        return dg_set_error("model output: argmax over dim 1 has %lld values for a batch of %lld "
                            "(expected an output of shape [B, num_classes])",
                            (long long)dg_numel(am), (long long)y->shape[0]);
    int64_t b = y->shape[0];
    int32_t *pred = malloc(2 * (size_t)b * sizeof *pred);
    if (!pred) return dg_set_error("evaluation: out of memory");
    dg_tensor_to_host(am, pred);
    dg_tensor_to_host(y, pred + b);
    for (int64_t i = 0; i < b; i++) *n += pred[i] == pred[b + i];
    free(pred);
    return DG_OK;
}

/* The model's output on the first batch must be [B, num_classes] for the
 * default loss, so that a mismatch is named before any step. */
static dg_status check_output(const dg_train_program *p, const dg_dataset *ds, dg_tensor *out, int64_t b) {
    if (!out) return DG_ERR;
    if (p->loss) return DG_OK;   /* a custom loss takes any shape */
    if (out->ndim != 2 || out->shape[0] != b || out->shape[1] != ds->num_classes) {
        char shape[96] = "";
        for (int i = 0; i < out->ndim; i++) {
            size_t l = strlen(shape);
            snprintf(shape + l, sizeof shape - l, i ? "x%lld" : "%lld", (long long)out->shape[i]);
        }
        return dg_set_error("model output has shape [%s] for a batch of %lld; the loss needs [%lld x %d] "
                            "(batch x the dataset's num_classes)", shape, (long long)b, (long long)b,
                            ds->num_classes);
    }
    return DG_OK;
}

/* Returns 0 on success, -1 after --help, else the exit code. */
static int parse_args(const dg_train_program *p, int argc, char **argv, dg_train_opts *o) {
    *o = p->defaults;
    dg_flag_table tables[2] = {
        { builtin_flags, (int)(sizeof builtin_flags / sizeof builtin_flags[0]), o, &p->defaults },
        { p->extra_flags, p->num_extra_flags, p->extra_target, NULL },
    };
    char head[512];
    snprintf(head, sizeof head, "%s\n\n%s", p->about ? p->about : "", usage_tail);
    int rc = dg_flags_parse(tables, p->extra_flags && p->extra_target ? 2 : 1, argc, argv, p->prog, head);
    return rc ? rc : check_combinations(p, o);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* FNV-1a over the bytes of tensors, so two runs (or two ranks) compare
 * exactly. */
static uint64_t fnv1a(uint64_t h, dg_tensor **t, int n) {
    int64_t most = 1;
    for (int i = 0; i < n; i++) {
        int64_t b = dg_numel(t[i]) * (int64_t)dg_dtype_size(t[i]->dtype);
        most = b > most ? b : most;
    }
    unsigned char *host = malloc((size_t)most);
    DG_ASSERT(host != NULL);
    for (int i = 0; i < n; i++) {
        dg_tensor_to_host(t[i], host);
        size_t bytes = (size_t)dg_numel(t[i]) * dg_dtype_size(t[i]->dtype);
        for (size_t k = 0; k < bytes; k++) {
            h ^= host[k];
            h *= 1099511628211ULL;
        }
    }
    free(host);
    return h;
}

#define FNV_START 1469598103934665603ULL

/* Whether every rank holds the same parameters and buffers (collective). */
static dg_status replicas_agree(dg_comm *comm, uint64_t params, dg_tensor **bufs, int nb, bool *agree) {
    uint64_t h = fnv1a(params, bufs, nb);
    int64_t lo[2] = { (int64_t)(h >> 32), (int64_t)(h & 0xffffffffu) }, hi[2] = { lo[0], lo[1] };
    if (dg_comm_allreduce(comm, lo, 2, DG_COMM_I64, DG_COMM_MIN) ||
        dg_comm_allreduce(comm, hi, 2, DG_COMM_I64, DG_COMM_MAX))
        return DG_ERR;
    *agree = lo[0] == hi[0] && lo[1] == hi[1];
    return DG_OK;
}

/* --normalize: MNIST's mean and std, as transforms.Normalize((0.1307,), (0.3081,)) */
static void set_normalize(dg_loader *l, bool on) {
    if (!on) return;
    l->scale = 1.0f / (255.0f * 0.3081f);
    l->shift = -0.1307f / 0.3081f;
}

/* Rank 0's buffers (batch-norm running statistics) to every rank. */
static dg_status sync_buffers(dg_ddp *ddp, dg_tensor **bufs, int nb, int world) {
    if (world < 2) return DG_OK;
    for (int i = 0; i < nb; i++)
        if (dg_ddp_broadcast_tensor(ddp, bufs[i])) return DG_ERR;
    return DG_OK;
}

/* Accuracy over a whole dataset, in eval mode without autograd. Each rank
 * takes its shard; the counts are summed, so every sample counts once. */
static double evaluate(dg_ctx *ctx, dg_comm *comm, dg_module *model, const dg_dataset *ds,
                       const dg_train_program *p, const dg_train_opts *o) {
    dg_sampler s;
    dg_loader l;
    if (dg_sampler_init_eval(&s, ds->n, dg_comm_rank(comm), dg_comm_size(comm)) ||
        dg_loader_init(&l, ds, &s, 1000, false))
        return -1.0;
    set_normalize(&l, o->normalize);
    bool prev = dg_set_grad_enabled(ctx, false);
    dg_module_train(model, false);
    dg_loader_start_epoch(&l, 0);
    int64_t counts[2] = { 0, 0 }, b;   /* correct, seen */
    dg_tensor *x, *y;
    while ((b = dg_loader_next(&l, ctx, p->flat_input, &x, &y)) > 0) {
        dg_tensor *out = dg_module_forward(model, x);
        if (!out || batch_correct(p, out, y, &counts[0])) {
            b = -1;
            break;
        }
        counts[1] += b;
        dg_ctx_reset_step(ctx);
    }
    dg_module_train(model, true);
    dg_set_grad_enabled(ctx, prev);
    dg_loader_free(&l);
    dg_sampler_free(&s);
    if (b < 0 || dg_comm_allreduce(comm, counts, 2, DG_COMM_I64, DG_COMM_SUM)) return -1.0;
    DG_ASSERT(counts[1] == ds->n);
    return (double)counts[0] / (double)counts[1];
}


/* ---- watching training: progress, TensorBoard (--logdir), --timeline ---- */
typedef struct {
    dg_progress *progress;      /* rank 0 prints, other ranks are quiet */
    dg_summary_writer *tb;      /* rank 0, or every rank with --logdir-per-rank */
    dg_timeline *tl;            /* every rank with --timeline */
    int64_t step;               /* steps so far: the scalars' x axis */
    double allreduce_seconds;   /* dg_ddp_stats.wait_seconds at the last epoch's end */
} observers;

/* before any collective: a --logdir that is a file fails on every rank */
static int check_logdir(const dg_train_program *p, const char *dir) {
    struct stat sb;
    if (dir && stat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "%s: --logdir '%s' exists and is not a directory\n", p->prog, dir);
        return 1;
    }
    return 0;
}

static dg_status open_observers(observers *ob, const dg_train_opts *o, int rank, int world) {
    *ob = (observers){ 0 };
    /* every rank reads DG_PROGRESS, so that a bad value fails everywhere */
    if (dg_progress_new(&ob->progress, stdout, o->quiet ? DG_PROGRESS_QUIET : DG_PROGRESS_AUTO))
        goto fail;
    if (rank != 0) {
        dg_progress_free(ob->progress);
        if (dg_progress_new(&ob->progress, stdout, DG_PROGRESS_QUIET)) goto fail;
    }
    char path[4096];
    if (o->logdir && (rank == 0 || o->logdir_per_rank)) {
        int n = o->logdir_per_rank ? snprintf(path, sizeof path, "%s/rank%d", o->logdir, rank)
                                   : snprintf(path, sizeof path, "%s", o->logdir);
        if (n < 0 || (size_t)n >= sizeof path) {
            dg_set_error("--logdir: path too long");
            goto fail;
        }
        if (dg_summary_writer_open(&ob->tb, path)) goto fail;
    }
    if (o->timeline) {
        int n = world > 1 ? snprintf(path, sizeof path, "%s.rank%d", o->timeline, rank)
                          : snprintf(path, sizeof path, "%s", o->timeline);
        if (n < 0 || (size_t)n >= sizeof path) {
            dg_set_error("--timeline: path too long");
            goto fail;
        }
        if (dg_timeline_open(&ob->tl, path, rank)) goto fail;
    }
    return DG_OK;
fail:   /* release what was opened; the first error stays recorded */
    dg_summary_close(ob->tb);
    dg_progress_free(ob->progress);
    *ob = (observers){ 0 };
    return DG_ERR;
}

/* ---- --cuda-graph: one whole step captured, then replayed --------------- */
typedef struct {
    bool on;
    int warmup;                 /* eager steps still to run before the capture */
    dg_tensor *x, *y;           /* the graph's fixed inputs (persistent) */
    dg_graph *g;
    dg_tensor *loss;            /* the last replay's loss */
    dg_tensor *loss_sum;        /* replays' losses since the last flush */
    int64_t pending;            /* replays since the last flush */
    double last_loss;           /* the last loss read, for the progress bar */
} graph_step;

/* One training step on the full batch (x, y) by replaying the captured
 * step, captured first if need be. One process: nothing to reduce, so the
 * DDP is in no-sync mode and the step calls dg_ddp_backward for its timeline. */
static dg_status graph_train_step(graph_step *gs, const dg_train_program *p, dg_ctx *ctx, dg_module *model, dg_optim *opt,
                                  dg_ddp *ddp, dg_tensor *x, dg_tensor *y) {
    if (gs->g) {
        if (dg_tensor_copy(gs->x, x) || dg_tensor_copy(gs->y, y)) return DG_ERR;
    } else {
        gs->x = dg_tensor_persistent(ctx, DG_F32, x->ndim, x->shape);
        gs->y = dg_tensor_persistent(ctx, DG_I32, y->ndim, y->shape);
        if (!gs->x || !gs->y || dg_tensor_copy(gs->x, x) || dg_tensor_copy(gs->y, y) ||
            dg_graph_begin_capture(ctx))
            return DG_ERR;
        dg_tensor *out = dg_module_forward(model, gs->x);
        dg_tensor *loss = out ? batch_loss(p, out, gs->y) : NULL;
        if (loss) {
            dg_optim_zero_grad(opt);
            if (dg_ddp_backward(ddp, loss)) loss = NULL;
            else dg_optim_step(opt);
        }
        dg_status st = dg_graph_end_capture(ctx, &gs->g);
        if (st == DG_OK && !loss) {
            dg_graph_free(gs->g);
            gs->g = NULL;
            st = DG_ERR;
        }
        if (st == DG_OK) {
            gs->loss = dg_graph_output(gs->g, loss);
            gs->loss_sum = dg_graph_output_sum(gs->g, loss);
        }
        dg_ctx_reset_step(ctx);
        if (st) return DG_ERR;
    }
    gs->pending++;
    return dg_graph_replay(gs->g);
}

/* Add the replays' losses to sums (loss sum, steps) and restart the sum. */
static void graph_flush(graph_step *gs, double sums[2]) {
    if (!gs->g || !gs->pending) return;
    sums[0] += dg_item(gs->loss_sum);
    sums[1] += (double)gs->pending;
    dg_init_constant(gs->loss_sum, 0.0f);
    gs->pending = 0;
}

static int64_t timed_next(dg_loader *l, dg_ctx *ctx, bool flat, dg_tensor **x, dg_tensor **y,
                          dg_timeline *tl) {
    dg_timeline_begin(tl, "data", DG_TIMELINE_DATA);
    int64_t b = dg_loader_next(l, ctx, flat, x, y);
    dg_timeline_end(tl, DG_TIMELINE_DATA);
    return b;
}

static void observe_step(observers *ob, const dg_train_opts *o, double loss, int64_t global_samples) {
    dg_progress_step(ob->progress, loss, global_samples);
    if (ob->tb && ob->step % o->log_every == 0)
        dg_summary_add_scalar(ob->tb, "train/loss", (float)loss, ob->step);
    ob->step++;
}

/* Write errors are sticky: close_observers reports them. train_acc < 0:
 * not measured. */
static void observe_epoch(observers *ob, dg_ctx *ctx, dg_ddp *ddp, float lr, double loss,
                          double train_acc, double test_acc, double samples_per_sec) {
    dg_ddp_stats st;
    dg_ddp_get_stats(ddp, &st);
    double allreduce = st.wait_seconds - ob->allreduce_seconds;
    ob->allreduce_seconds = st.wait_seconds;
    if (!ob->tb) return;
    int64_t s = ob->step;
    dg_summary_add_scalar(ob->tb, "epoch/loss", (float)loss, s);
    if (train_acc >= 0) dg_summary_add_scalar(ob->tb, "epoch/train_accuracy", (float)train_acc, s);
    dg_summary_add_scalar(ob->tb, "epoch/test_accuracy", (float)test_acc, s);
    dg_summary_add_scalar(ob->tb, "train/lr", lr, s);
    dg_summary_add_scalar(ob->tb, "train/samples_per_sec", (float)samples_per_sec, s);
    dg_summary_add_scalar(ob->tb, "ddp/allreduce_seconds", (float)allreduce, s);
    int np;
    dg_tensor **p = dg_ctx_params(ctx, &np);
    int64_t most = 0;
    for (int i = 0; i < np; i++) most = dg_numel(p[i]) > most ? dg_numel(p[i]) : most;
    float *host = malloc(sizeof(float) * (size_t)(most ? most : 1));
    DG_ASSERT(host != NULL);
    char tag[128];
    for (int i = 0; i < np; i++) {
        const char *name = p[i]->name ? p[i]->name : "param";
        dg_tensor_to_host(p[i], host);
        snprintf(tag, sizeof tag, "params/%d.%s", i, name);
        dg_summary_add_histogram(ob->tb, tag, host, (size_t)dg_numel(p[i]), s);
        if (!p[i]->grad) continue;
        dg_tensor_to_host(p[i]->grad, host);
        snprintf(tag, sizeof tag, "grads/%d.%s", i, name);
        dg_summary_add_histogram(ob->tb, tag, host, (size_t)dg_numel(p[i]), s);
    }
    free(host);
    dg_summary_flush(ob->tb);
}

/* Writes the timeline and closes the event file. A write that failed
 * mid-run (a full or removed directory) is a warning: the training it
 * watched is not affected, and neither is the exit status. */
static void close_observers(const dg_train_program *p, observers *ob, const dg_train_opts *o, int rank,
                            int world) {
    dg_clear_error();
    if (dg_summary_close(ob->tb))
        fprintf(stderr, "%s: rank %d: warning: --logdir: %s (training was not affected)\n", p->prog, rank,
                dg_last_error());
    dg_clear_error();
    if (dg_timeline_close(ob->tl))
        fprintf(stderr, "%s: rank %d: warning: --timeline: %s (training was not affected)\n", p->prog, rank,
                dg_last_error());
    if (o->timeline && world > 1 && rank == 0)
        dg_progress_log(ob->progress, "timeline: %s.rank<N> for each rank; merge with "
                        "scripts/merge_timeline.py %s", o->timeline, o->timeline);
    dg_progress_free(ob->progress);
}

/* ---- checkpoints (--checkpoint-dir, --resume) ------------------------- */
/* Collective. Every rank returns the same status; rank 0 prints the error. */
static int save_checkpoint(const dg_train_program *p, const dg_train_opts *o, dg_ctx *ctx, dg_optim *opt,
                           dg_zero *zero, dg_comm *comm, dg_train_state *ts, dg_progress *progress) {
    dg_clear_error();
    if (zero ? dg_zero_checkpoint_save(o->ckpt_dir, zero, ts, o->keep)
             : dg_checkpoint_save(o->ckpt_dir, ctx, opt, ts, comm, o->keep)) {
        if (dg_comm_rank(comm) == 0) fprintf(stderr, "%s: checkpoint: %s\n", p->prog, dg_last_error());
        return 1;
    }
    if (dg_comm_rank(comm) == 0)
        dg_progress_log(progress, "checkpoint: %s/ckpt-%lld.dgck", o->ckpt_dir, (long long)ts->step);
    return 0;
}

/* --resume: 0 and *resumed on success (false when DIR holds no checkpoint),
 * else 1 on every rank (rank 0 prints the one-line error). */
static int resume_checkpoint(const dg_train_program *p, const dg_train_opts *o, dg_ctx *ctx, dg_optim *opt,
                             dg_zero *zero, dg_comm *comm, dg_train_state *ts, dg_progress *progress,
                             bool *resumed) {
    char path[4096] = "";
    int32_t found[2] = { 0, 0 };   /* status, found */
    dg_clear_error();
    if (dg_comm_rank(comm) == 0) {
        found[0] = dg_checkpoint_latest(o->ckpt_dir, path, sizeof path) ? 1 : 0;
        found[1] = path[0] != '\0';
        if (found[0]) fprintf(stderr, "%s: --resume: %s\n", p->prog, dg_last_error());
    }
    if (dg_comm_broadcast(comm, found, 2, DG_COMM_I32, 0)) {
        fprintf(stderr, "%s: --resume: %s\n", p->prog, dg_last_error());
        return 1;
    }
    if (found[0]) return 1;
    *resumed = found[1];
    if (!found[1]) {
        if (dg_comm_rank(comm) == 0)
            dg_progress_log(progress, "resume: no checkpoint in %s, starting from scratch", o->ckpt_dir);
        return 0;
    }
    if (zero ? dg_zero_checkpoint_load(o->ckpt_dir, zero, ts, path, sizeof path)
             : dg_checkpoint_load(o->ckpt_dir, ctx, opt, ts, comm, path, sizeof path)) {
        if (dg_comm_rank(comm) == 0) fprintf(stderr, "%s: --resume: %s\n", p->prog, dg_last_error());
        return 1;
    }
    if (dg_comm_rank(comm) == 0)
        dg_progress_log(progress, "resumed from %s: step %lld, epoch %lld, %lld samples into it%s", path,
                        (long long)ts->step, (long long)ts->epoch + 1, (long long)ts->epoch_samples,
                        ts->saved_world_size != dg_comm_size(comm) ? " (saved with another world size)" : "");
    return 0;
}


/* The datasets; on DG_ERR *what says which part failed (for the message). */
static dg_status load_datasets(const dg_train_program *p, const dg_train_opts *o, dg_dataset *train,
                               dg_dataset *test, const char **what) {
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    dg_status s;
    *what = "";
    if (p->load_data) {
        s = p->load_data(o, train, test, p->user);
        if (!s && (s = dg_dataset_check(train))) *what = "training set: ";
        if (!s && (s = dg_dataset_check(test))) *what = "test set: ";
    } else {
        s = dg_dataset_load_mnist(o->data, true, train);
        if (!s) s = dg_dataset_load_mnist(o->data, false, test);
    }
    if (s) {
        if (!dg_has_error()) dg_set_error("load_data failed without a message");
        dg_dataset_free(train);
        dg_dataset_free(test);
    }
    return s;
}

/* ---- the trainer's state ------------------------------------------------ */
typedef struct {
    const dg_train_program *p;
    dg_train_opts o;
    dg_dataset train, test;
    dg_comm *comm;
    int rank, world;
    dg_ctx *ctx;
    dg_module *model;
    dg_tensor **params, **bufs;
    int np, nb;
    dg_optim *opt;              /* NULL with --zero */
    dg_zero *zero;              /* --zero, else NULL */
    dg_ddp *ddp;                /* with --zero only for its broadcasts: always no-sync */
    observers ob;
    bool ob_open;
    graph_step gs;
    dg_sampler sampler;
    dg_loader loader;
    dg_sched *sched;
    dg_train_state ts;
    bool resumed, stop, checked_output, failed;
    int64_t gstep;
    /* preemption: the signals, the handlers they replaced, the flag's
     * all-reduce in flight, and the signal every rank agreed on */
    int sigs[MAX_PREEMPT], nsigs;
    struct sigaction old_sa[MAX_PREEMPT];
    int32_t pflag;
    dg_comm_request *preq;
    int preempted_by;
    int64_t skipped_steps, ckpt_failures;
    /* slow ranks: marks of the last check; which ranks were named this epoch */
    double slow_t0, slow_wait0;
    int64_t slow_step0;
    unsigned char *slow_named;
    int slow_rank, slow_ms;     /* DG_TEST_SLOW_RANK */
    int64_t nan_step;           /* DG_TEST_NAN_STEP: the loss of this step is NaN */
    int nan_rank;               /* ... on this rank (-1: every rank) */
    double train_time, final_loss, first_loss, train_acc, test_acc;
    int64_t train_samples;
} trainer;

/* A run-time error: the one-line message (rank, what, the last error).
 * After one, a job of several ranks exits without waiting for the others
 * (they may be gone): see dg_train_main. */
static int fail(trainer *t, const char *what) {
    fprintf(stderr, "%s: rank %d: %s%s\n", t->p->prog, t->comm ? dg_comm_rank(t->comm) : 0, what, dg_last_error());
    t->failed = true;
    return 1;
}


static void install_signals(trainer *t) {
    t->nsigs = parse_signals(t->o.preempt_signals, t->sigs);
    DG_ASSERT(t->nsigs >= 0);   /* checked with the flags */
    g_preempt_signal = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_preempt_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int i = 0; i < t->nsigs; i++) sigaction(t->sigs[i], &sa, &t->old_sa[i]);
}

static void restore_signals(trainer *t) {
    for (int i = 0; i < t->nsigs; i++) sigaction(t->sigs[i], &t->old_sa[i], NULL);
    t->nsigs = 0;
}

/* After each step: 1 when every rank has agreed to stop for a preemption
 * signal, 0 to go on, -1 on a communication error. The flag of step k is
 * all-reduced while step k + 1 runs and read after it, so that no rank
 * blocks on it; every rank reads the same value after the same step. */
static int preempt_poll(trainer *t) {
    if (!t->nsigs) return 0;
    if (t->world == 1) {
        t->preempted_by = g_preempt_signal;
        return t->preempted_by != 0;
    }
    if (t->preq) {
        dg_status s = dg_comm_wait(t->preq);
        t->preq = NULL;
        if (s) return -1;
        if (t->pflag) {
            t->preempted_by = t->pflag;
            return 1;
        }
    }
    t->pflag = g_preempt_signal;
    return dg_comm_iallreduce(t->comm, &t->pflag, 1, DG_COMM_I32, DG_COMM_MAX, &t->preq) ? -1 : 0;
}

/* The flag's last all-reduce, before the collectives of the run's end. */
static dg_status preempt_drain(trainer *t) {
    if (!t->preq) return DG_OK;
    dg_status s = dg_comm_wait(t->preq);
    t->preq = NULL;
    return s;
}

static void sleep_ms(int ms) {
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* DG_TEST_SLOW_RANK=R:MS: rank R sleeps MS ms in every step (a test's slow
 * rank). 0, or 1 after a message for a malformed value. */
static int parse_slow_rank(trainer *t) {
    const char *v = getenv("DG_TEST_SLOW_RANK");
    t->slow_rank = -1;
    if (!v || !*v) return 0;
    int r, ms;
    char extra;
    if (sscanf(v, "%d:%d%c", &r, &ms, &extra) != 2 || r < 0 || ms < 0 || ms > 60000) {
        fprintf(stderr, "%s: DG_TEST_SLOW_RANK='%s' is not RANK:MS\n", t->p->prog, v);
        return 1;
    }
    t->slow_rank = r;
    t->slow_ms = ms;
    return 0;
}

/* DG_TEST_NAN_STEP=STEP[:RANK]: the loss of global step STEP (1-based) is
 * NaN on RANK (default every rank): a test's diverging run. */
static int parse_nan_step(trainer *t) {
    const char *v = getenv("DG_TEST_NAN_STEP");
    t->nan_rank = -1;
    if (!v || !*v) return 0;
    long long st;
    int r = -1, n;
    char extra;
    n = sscanf(v, "%lld:%d%c", &st, &r, &extra);
    if ((n != 1 && n != 2) || st < 1 || (n == 2 && r < 0)) {
        fprintf(stderr, "%s: DG_TEST_NAN_STEP='%s' is not STEP[:RANK]\n", t->p->prog, v);
        return 1;
    }
    t->nan_step = st;
    t->nan_rank = r;
    return 0;
}

/* Every 100 steps: each rank's time busy (not waiting in the all-reduce)
 * and waiting, per step, gathered; rank 0 names a rank busy 1.5 times the
 * median (once an epoch) and logs both to TensorBoard. */
static int check_slow_ranks(trainer *t, bool epoch_start) {
    enum { EVERY = 100 };
    dg_ddp_stats st;
    dg_ddp_get_stats(t->ddp, &st);
    if (epoch_start) {   /* marks from here: evaluation is not a step */
        if (t->slow_named) memset(t->slow_named, 0, (size_t)t->world);
        t->slow_t0 = now();
        t->slow_wait0 = st.wait_seconds;
        t->slow_step0 = t->gstep;
        return 0;
    }
    if (t->world < 2 || t->gstep - t->slow_step0 < EVERY) return 0;
    double tnow = now(), steps = (double)(t->gstep - t->slow_step0);
    double mine[2] = { (tnow - t->slow_t0 - (st.wait_seconds - t->slow_wait0)) / steps * 1e3,
                       (st.wait_seconds - t->slow_wait0) / steps * 1e3 };
    t->slow_t0 = tnow;
    t->slow_wait0 = st.wait_seconds;
    t->slow_step0 = t->gstep;
    double *all = malloc(2 * (size_t)t->world * sizeof *all), *busy = malloc((size_t)t->world * sizeof *busy);
    if (!t->slow_named) t->slow_named = calloc((size_t)t->world, 1);
    DG_ASSERT(all && busy && t->slow_named);
    memcpy(all + 2 * t->rank, mine, sizeof mine);
    if (dg_comm_allgather(t->comm, NULL, all, 2, DG_COMM_F64)) {
        free(all);
        free(busy);
        return fail(t, "slow-rank check: ");
    }
    for (int r = 0; r < t->world; r++) busy[r] = all[2 * r];
    for (int i = 1; i < t->world; i++)   /* insertion sort: a median of a few ranks */
        for (int j = i; j > 0 && busy[j - 1] > busy[j]; j--) {
            double x = busy[j]; busy[j] = busy[j - 1]; busy[j - 1] = x;
        }
    double median = busy[(t->world - 1) / 2];   /* the lower median: of 2 ranks, the faster */
    for (int r = 0; t->rank == 0 && r < t->world; r++) {
        char tag[64];
        snprintf(tag, sizeof tag, "ranks/busy_ms/rank%d", r);
        if (t->ob.tb) dg_summary_add_scalar(t->ob.tb, tag, (float)all[2 * r], t->gstep);
        snprintf(tag, sizeof tag, "ranks/wait_ms/rank%d", r);
        if (t->ob.tb) dg_summary_add_scalar(t->ob.tb, tag, (float)all[2 * r + 1], t->gstep);
        double others = 0.0;
        for (int k = 0; k < t->world; k++) others += k == r ? 0.0 : all[2 * k + 1];
        double extra = all[2 * r] - median;   /* ms a step more than the median, which the others wait */
        if (all[2 * r] > 1.5 * median && extra > 0.5 && others / (t->world - 1) - all[2 * r + 1] > 0.5 * extra &&
            !t->slow_named[r]) {
            t->slow_named[r] = 1;
            fprintf(stderr, "%s: warning: rank %d is slow: busy %.2f ms per step against a median of "
                            "%.2f ms; it waits %.2f ms per step in the all-reduce, the others %.2f ms on average "
                            "(steps %lld-%lld)\n", t->p->prog, r, all[2 * r], median, all[2 * r + 1],
                            others / (t->world - 1), (long long)(t->gstep - EVERY), (long long)t->gstep);
        }
    }
    free(all);
    free(busy);
    return 0;
}

/* A step whose loss or gradients are not finite (every rank sees it: see
 * dgrad/train.h). 0 to skip the step, or the exit code. */
static int nonfinite_step(trainer *t, bool loss_bad, double loss) {
    int bad = -1;
    dg_grads_finite(t->ctx, &bad);
    int32_t culprit = loss_bad ? t->rank : t->world;   /* the lowest rank whose loss is not finite */
    if (t->world > 1 && dg_comm_allreduce(t->comm, &culprit, 1, DG_COMM_I32, DG_COMM_MIN))
        return fail(t, "non-finite check: ");
    char who[160];
    if (culprit < t->world)
        snprintf(who, sizeof who, "the loss is %s on rank %d", culprit == t->rank ? (isnan(loss) ? "NaN" : "infinite")
                                                                                   : "not finite", (int)culprit);
    else
        snprintf(who, sizeof who, "the losses are finite but a gradient is not");
    const char *pname = bad >= 0 && t->params[bad]->name ? t->params[bad]->name : "?";
    if (!strcmp(t->o.on_nonfinite, "skip")) {
        t->skipped_steps++;
        if (t->rank == 0)
            dg_progress_log(t->ob.progress, "step %lld: %s (first non-finite gradient: parameter %d '%s'); step "
                            "skipped (%lld so far)", (long long)t->gstep + 1, who, bad, pname,
                            (long long)t->skipped_steps);
        if (t->ob.tb) dg_summary_add_scalar(t->ob.tb, "train/skipped_steps", (float)t->skipped_steps, t->gstep);
        if (t->zero) dg_zero_zero_grad(t->zero);
        else dg_optim_zero_grad(t->opt);
        return 0;
    }
    if (t->rank == 0) {
        char last[4096] = "";
        if (t->o.ckpt_dir) dg_checkpoint_latest(t->o.ckpt_dir, last, sizeof last);
        fprintf(stderr, "%s: step %lld: %s (first non-finite gradient: parameter %d '%s'); stopping before the "
                "update%s%s (--on-nonfinite skip drops such steps)\n", t->p->prog, (long long)t->gstep + 1, who,
                bad, pname, last[0] ? ", the last good checkpoint is " : "", last);
    }
    return 1;
}

static void trainer_free(trainer *t) {
    restore_signals(t);
    preempt_drain(t);
    free(t->slow_named);
    if (t->ob_open) close_observers(t->p, &t->ob, &t->o, t->rank, t->world);
    dg_graph_free(t->gs.g);
    dg_zero_free(t->zero);
    dg_ddp_free(t->ddp);
    dg_loader_free(&t->loader);
    dg_sampler_free(&t->sampler);
    dg_dataset_free(&t->train);
    dg_dataset_free(&t->test);
    dg_ctx_free(t->ctx);
    dg_comm_free(t->comm);
}

/* Data, communicator and context. 0, or the exit code after a message. */
static int setup_process(trainer *t) {
    const dg_train_program *p = t->p;
    dg_train_opts *o = &t->o;
    if (check_logdir(p, o->logdir) || parse_slow_rank(t) || parse_nan_step(t)) return 1;
    /* first: a preemption signal that comes while the data loads or MPI
     * starts (Slurm may send it at any time) must not kill the rank */
    install_signals(t);
    if (o->threads) dg_set_num_threads(o->threads);
    const char *what;
    if (load_datasets(p, o, &t->train, &t->test, &what)) {
        fprintf(stderr, "%s: %s%s%s\n", p->prog, what, dg_last_error(),
                p->load_data ? "" : " (fetch the data with scripts/fetch_mnist.sh)");
        return 1;
    }
    if (o->limit_train && o->limit_train < t->train.n) t->train.n = o->limit_train;   /* the first N */
    const char *backend = getenv("DG_COMM_BACKEND");   /* cuda: NCCL unless this says otherwise */
    backend = !strcmp(o->device, "cuda") && !(backend && *backend) && dg_comm_has_backend("nccl") ? "nccl" : NULL;
    if (dg_comm_init(&t->comm, backend)) {
        fprintf(stderr, "%s: %s\n", p->prog, dg_last_error());
        return 1;
    }
    t->rank = dg_comm_rank(t->comm);
    t->world = dg_comm_size(t->comm);
    if (o->cuda_graph && t->world > 1) {
        fprintf(stderr, "%s: --cuda-graph runs in one process (this job has %d ranks)\n", p->prog, t->world);
        return 2;
    }
    if (!(t->ctx = dg_ctx_new(!strcmp(o->device, "cuda") ? DG_CUDA : DG_CPU))) return fail(t, "");
    dg_manual_seed(t->ctx, o->seed);
    return 0;
}

static dg_optim *make_optimizer(const dg_train_opts *o, dg_tensor **params, int np) {
    if (!strcmp(o->optimizer, "sgd")) {
        dg_sgd_opts so = dg_sgd_defaults(o->lr);
        if (!strcmp(o->sched, "onecycle")) so.momentum = 0.9f;   /* OneCycle cycles it */
        return dg_optim_sgd(params, np, so);
    }
    dg_adam_opts ao = !strcmp(o->optimizer, "adamw") ? dg_adamw_defaults() : dg_adam_defaults();
    ao.lr = o->lr;
    return !strcmp(o->optimizer, "adamw") ? dg_optim_adamw(params, np, ao) : dg_optim_adam(params, np, ao);
}

/* Model, optimizer, DDP, observers, sampler, loader, schedule. */
static int setup_training(trainer *t) {
    const dg_train_program *p = t->p;
    const dg_train_opts *o = &t->o;
    dg_clear_error();
    if (!(t->model = p->build(t->ctx, o, p->user))) {
        if (!dg_has_error()) dg_set_error("build returned NULL");
        return fail(t, "model: ");
    }
    t->np = dg_module_parameters(t->model, &t->params);
    t->nb = dg_module_buffers(t->model, &t->bufs);
    if (!o->zero && !(t->opt = make_optimizer(o, t->params, t->np))) return fail(t, "optimizer: ");
    dg_ddp_opts dopts = dg_ddp_defaults();
    dopts.overlap = o->overlap;
    dopts.bf16_compress = o->bf16_allreduce;
    dopts.bucket_cap_bytes = (size_t)(o->bucket_cap_mb * 1048576.0);
    if (dopts.first_bucket_cap_bytes > dopts.bucket_cap_bytes) dopts.first_bucket_cap_bytes = dopts.bucket_cap_bytes;
    if (dg_ddp_new(&t->ddp, t->ctx, t->comm, dopts)) return fail(t, "");
    if (sync_buffers(t->ddp, t->bufs, t->nb, t->world)) return fail(t, "broadcast of buffers: ");
    if (open_observers(&t->ob, o, t->rank, t->world)) return fail(t, "");
    t->ob_open = true;
    dg_ddp_set_timeline(t->ddp, t->ob.tl);
    t->gs = (graph_step){ .on = o->cuda_graph, .warmup = 3 };
    if (t->gs.on) dg_ddp_set_no_sync(t->ddp, true);   /* one process: nothing to reduce */
    if (o->zero) {   /* the gradients go through dg_zero_step instead */
        dg_zero_kind kind;
        if (dg_zero_kind_from_name(o->optimizer, &kind)) return fail(t, "--zero: ");
        dg_zero_opts zo = dg_zero_defaults(kind, o->lr);
        zo.adam.lr = o->lr;
        if (dg_zero_new(&t->zero, t->ctx, t->comm, zo)) return fail(t, "--zero: ");
        dg_ddp_set_no_sync(t->ddp, true);
    }
    /* DistributedSampler semantics: a shuffle shared by every rank, padded
     * so that each rank gets the same number of samples */
    if (dg_sampler_init(&t->sampler, t->train.n, t->rank, t->world, true, o->seed, false) ||
        dg_loader_init(&t->loader, &t->train, &t->sampler, o->batch_size, false))
        return fail(t, "");
    set_normalize(&t->loader, o->normalize);
    if (!strcmp(o->sched, "onecycle")) {
        dg_onecycle_opts oc = dg_onecycle_defaults(o->lr, dg_loader_num_batches(&t->loader) * o->epochs);
        oc.pct_start = o->pct_start;
        oc.div_factor = o->div_factor;
        if (!(t->sched = dg_sched_onecycle(t->opt, oc))) return fail(t, "scheduler: ");
    }
    if (t->rank == 0 && t->world > 1)
        dg_progress_log(t->ob.progress, "data-parallel over %d ranks (%s), %lld samples per rank per epoch, batch %d per rank",
                        t->world, dg_comm_backend_name(t->comm), (long long)t->sampler.num_samples, o->batch_size);
    /* checkpoint state: the epoch's loss sums are per-rank statistics */
    t->ts = (dg_train_state){ .batch_size = o->batch_size, .optimizer = o->optimizer, .sampler = &t->sampler,
                              .buffers = t->bufs, .num_buffers = t->nb };
    if (o->resume && resume_checkpoint(p, o, t->ctx, t->opt, t->zero, t->comm, &t->ts, t->ob.progress, &t->resumed))
        return 1;
    if (t->resumed) t->gstep = t->ob.step = t->ts.step;
    /* the schedule is a function of the step: replay it (the optimizer's lr
     * and betas come back as the uninterrupted run had them) */
    for (int64_t s = 0; t->sched && s < t->gstep; s++)
        if (dg_sched_step(t->sched)) return fail(t, "--resume: scheduler: ");
    return 0;
}

/* One eager step: forward, loss, backward with the all-reduce, update.
 * *l gets the loss; *counted is false for a step skipped as non-finite. */
static int eager_step(trainer *t, dg_tensor *x, dg_tensor *y, int64_t b, double *l, bool *counted) {
    const dg_train_program *p = t->p;
    *counted = true;
    if (t->gs.warmup > 0) t->gs.warmup--;
    if (sync_buffers(t->ddp, t->bufs, t->nb, t->world)) return fail(t, "broadcast of buffers: ");
    if (p->begin_step) p->begin_step(t->gstep, t->rank, t->world, p->user);
    dg_timeline_begin(t->ob.tl, "forward", DG_TIMELINE_COMPUTE);
    bool amp = t->o.amp && !strcmp(t->o.amp, "bf16");   /* --amp bf16 */
    if (amp && dg_autocast_begin(t->ctx, DG_BF16)) return fail(t, "--amp bf16: ");
    dg_tensor *out = dg_module_forward(t->model, x);
    if (!t->checked_output) {
        if (check_output(p, &t->train, out, b)) {
            if (amp) dg_autocast_end(t->ctx);
            return fail(t, "");
        }
        t->checked_output = true;
    }
    dg_tensor *loss = out ? batch_loss(p, out, y) : NULL;
    if (amp) dg_autocast_end(t->ctx);
    dg_timeline_end(t->ob.tl, DG_TIMELINE_COMPUTE);
    if (!loss) return fail(t, "");
    if (dg_numel(loss) != 1) {
        dg_set_error("the loss has %lld values, expected a scalar", (long long)dg_numel(loss));
        return fail(t, "loss: ");
    }
    if (t->nan_step == t->gstep + 1 && (t->nan_rank < 0 || t->nan_rank == t->rank) &&
        !(loss = dg_mul_scalar(loss, NAN)))
        return fail(t, "");
    *l = dg_item(loss);
    bool loss_bad = !isfinite(*l);
    /* a rank whose loss is not finite makes its gradients NaN: the
     * all-reduce then tells every rank, with no collective of its own */
    if (loss_bad && t->world > 1 && !(loss = dg_mul_scalar(loss, NAN))) return fail(t, "");
    if (t->zero) dg_zero_zero_grad(t->zero);
    else dg_optim_zero_grad(t->opt);
    if (dg_ddp_backward(t->ddp, loss)) return fail(t, "");   /* backward, all-reduce (--zero: backward) */
    if (t->slow_rank == t->rank) sleep_ms(t->slow_ms);
    bool bad = loss_bad || !dg_grads_finite(t->ctx, NULL);
    if (t->zero && t->world > 1) {   /* local gradients: the ranks agree on skipping first */
        int32_t any = bad;
        if (dg_comm_allreduce(t->comm, &any, 1, DG_COMM_I32, DG_COMM_MAX)) return fail(t, "non-finite check: ");
        bad = any != 0;
    }
    if (bad) {
        int rc = nonfinite_step(t, loss_bad, *l);
        if (rc) return rc;
        *counted = false;
    } else {
        dg_timeline_begin(t->ob.tl, "optimizer_step", DG_TIMELINE_COMPUTE);
        if (t->zero) {
            if (dg_zero_step(t->zero)) return fail(t, "--zero: ");
        } else {
            dg_optim_step(t->opt);
        }
        dg_timeline_end(t->ob.tl, DG_TIMELINE_COMPUTE);
    }
    if (t->sched && dg_sched_step(t->sched)) return fail(t, "scheduler: ");
    return 0;
}

/* A checkpoint of the position after the step just done. 0, or the exit
 * code; with --on-checkpoint-error continue a failure is a warning unless
 * must (the preemption checkpoint). */
static int checkpoint_now(trainer *t, int epoch, double sums[2], bool must) {
    const dg_train_opts *o = &t->o;
    graph_flush(&t->gs, sums);
    t->ts = (dg_train_state){ .step = t->gstep, .epoch = epoch, .pos = t->loader.pos, .batch_size = o->batch_size,
                              .optimizer = o->optimizer, .sampler = &t->sampler, .num_stats = 2,
                              .stats = { sums[0], sums[1] }, .buffers = t->bufs, .num_buffers = t->nb };
    if (!save_checkpoint(t->p, o, t->ctx, t->opt, t->zero, t->comm, &t->ts, t->ob.progress)) return 0;
    if (must || strcmp(o->on_ckpt_error, "continue")) return 1;
    t->ckpt_failures++;
    if (t->rank == 0)
        dg_progress_log(t->ob.progress, "checkpoint at step %lld failed (above); training goes on and tries again "
                        "at step %lld (--on-checkpoint-error continue)", (long long)t->gstep,
                        (long long)(t->gstep + o->ckpt_every));
    return 0;
}

/* After a preemption signal: the checkpoint, the line, the exit status. */
static int preempted(trainer *t, int epoch, double sums[2], bool saved) {
    int rc = t->o.ckpt_dir && !saved ? checkpoint_now(t, epoch, sums, true) : 0;
    if (rc) return rc;
    if (t->rank == 0) {
        char where[4200] = "no --checkpoint-dir: nothing saved";
        if (t->o.ckpt_dir)
            snprintf(where, sizeof where, "checkpoint %s/ckpt-%lld.dgck written; continue with --resume",
                     t->o.ckpt_dir, (long long)t->gstep);
        fprintf(stderr, "%s: preempted by %s at step %lld: %s (exit %d)\n", t->p->prog,
                signal_name(t->preempted_by), (long long)t->gstep, where, DG_TRAIN_EXIT_PREEMPTED);
    }
    return DG_TRAIN_EXIT_PREEMPTED;
}

/* The batches of one epoch. 0, or the exit code (after a message). */
static int run_batches(trainer *t, int epoch, double sums[2], int64_t *samples) {
    const dg_train_program *p = t->p;
    const dg_train_opts *o = &t->o;
    int64_t b;
    dg_tensor *x, *y;
    while ((b = timed_next(&t->loader, t->ctx, p->flat_input, &x, &y, t->ob.tl)) > 0) {
        double l;
        graph_step *gs = &t->gs;
        if (gs->on && gs->warmup == 0 && b == o->batch_size) {   /* --cuda-graph */
            dg_timeline_begin(t->ob.tl, "graph_replay", DG_TIMELINE_COMPUTE);
            if (graph_train_step(gs, p, t->ctx, t->model, t->opt, t->ddp, x, y)) return fail(t, "--cuda-graph: ");
            dg_timeline_end(t->ob.tl, DG_TIMELINE_COMPUTE);
            if (t->ob.step % o->log_every == 0 || dg_graph_replays(gs->g) == 1) gs->last_loss = dg_item(gs->loss);
            l = gs->last_loss;   /* sums: graph_flush */
        } else {
            bool counted;
            int rc = eager_step(t, x, y, b, &l, &counted);
            if (rc) return rc;
            if (counted) {
                sums[0] += l;
                sums[1] += 1.0;
            }
        }
        if (t->first_loss < 0) t->first_loss = l;
        *samples += b;
        observe_step(&t->ob, o, l, b * t->world);
        dg_ctx_reset_step(t->ctx);
        t->gstep++;
        t->stop = o->max_steps && t->gstep >= o->max_steps;
        bool saved = false;
        if (o->ckpt_dir && (t->stop || (o->ckpt_every && t->gstep % o->ckpt_every == 0))) {
            int rc = checkpoint_now(t, epoch, sums, false);
            if (rc) return rc;
            saved = true;
        }
        int pr = preempt_poll(t);
        if (pr < 0) return fail(t, "preemption flag: ");
        if (pr > 0) return preempted(t, epoch, sums, saved);
        if (check_slow_ranks(t, false)) return 1;
        if (t->stop) break;
    }
    if (b < 0) return fail(t, "");
    graph_flush(&t->gs, sums);
    return 0;
}

/* Epoch statistics, evaluation and the epoch's line. */
static int end_epoch(trainer *t, int epoch, double dt, double sums[2], int64_t samples) {
    const dg_train_program *p = t->p;
    const dg_train_opts *o = &t->o;
    /* global numbers: the slowest rank's time, every rank's samples */
    int64_t gsamples = samples;
    if (dg_comm_allreduce(t->comm, &dt, 1, DG_COMM_F64, DG_COMM_MAX) ||
        dg_comm_allreduce(t->comm, &gsamples, 1, DG_COMM_I64, DG_COMM_SUM) ||
        dg_comm_allreduce(t->comm, sums, 2, DG_COMM_F64, DG_COMM_SUM))
        return fail(t, "");
    t->train_time += dt;
    t->train_samples += gsamples;
    t->final_loss = sums[0] / sums[1];
    dg_timeline_begin(t->ob.tl, "evaluate", DG_TIMELINE_COMPUTE);
    if (sync_buffers(t->ddp, t->bufs, t->nb, t->world)) return fail(t, "broadcast of buffers: ");
    if (o->train_accuracy) t->train_acc = evaluate(t->ctx, t->comm, t->model, &t->train, p, o);
    t->test_acc = evaluate(t->ctx, t->comm, t->model, &t->test, p, o);
    dg_timeline_end(t->ob.tl, DG_TIMELINE_COMPUTE);
    if ((o->train_accuracy && t->train_acc < 0) || t->test_acc < 0) return fail(t, "evaluation: ");
    if (t->rank == 0) {
        char tr[48] = "";
        if (o->train_accuracy) snprintf(tr, sizeof tr, "  train acc %.2f%%", 100.0 * t->train_acc);
        dg_progress_log(t->ob.progress, "epoch %d/%d  loss %.4f%s  test acc %.2f%%  %.0f samples/s", epoch + 1,
                        o->epochs, t->final_loss, tr, 100.0 * t->test_acc, (double)gsamples / dt);
    }
    observe_epoch(&t->ob, t->ctx, t->ddp, t->zero ? dg_zero_get_lr(t->zero) : dg_optim_get_lr(t->opt), t->final_loss, t->train_acc, t->test_acc, (double)gsamples / dt);
    return 0;
}

static int train_epochs(trainer *t) {
    const dg_train_opts *o = &t->o;
    int start_epoch = t->resumed ? (int)t->ts.epoch : 0;
    for (int epoch = start_epoch; epoch < o->epochs && !(o->max_steps && t->gstep >= o->max_steps); epoch++) {
        dg_loader_start_epoch(&t->loader, epoch);
        dg_progress_start_epoch(t->ob.progress, epoch, o->epochs, dg_loader_num_batches(&t->loader));
        check_slow_ranks(t, true);
        double t0 = now();
        double sums[2] = { 0.0, 0.0 };   /* loss sum, steps */
        if (t->resumed && epoch == start_epoch) {   /* skip what the checkpoint consumed */
            t->loader.pos = t->ts.pos;
            sums[0] = t->ts.num_stats == 2 ? t->ts.stats[0] : 0.0;
            sums[1] = t->ts.num_stats == 2 ? t->ts.stats[1] : 0.0;
        }
        int64_t samples = 0;
        int rc = run_batches(t, epoch, sums, &samples);
        if (rc) return rc;
        if (t->stop) break;   /* --max-steps: mid-epoch, no epoch statistics */
        if ((rc = end_epoch(t, epoch, now() - t0, sums, samples))) return rc;
    }
    return 0;
}

/* The booleans of the program's own flags, as JSON fields ("bn": true). */
static void json_extra(FILE *f, const dg_train_program *p) {
    for (int i = 0; p->extra_target && i < p->num_extra_flags; i++) {
        const dg_flag *fl = &p->extra_flags[i];
        if (fl->kind != DG_FLAG_SET) continue;
        const char *n = fl->name + strspn(fl->name, "-");
        fprintf(f, "\"");
        for (; *n; n++) fputc(*n == '-' ? '_' : *n, f);
        fprintf(f, "\": %s, ", *(const bool *)((const char *)p->extra_target + fl->offset) ? "true" : "false");
    }
}

/* Bytes of optimizer state this rank holds (rank 0's goes in the --json
 * line): its shard with --zero, else every parameter's slots. */
static size_t optimizer_state_bytes(const trainer *t) {
    if (t->zero) {
        dg_zero_stats zs;
        dg_zero_get_stats(t->zero, &zs);
        return zs.state_bytes;
    }
    size_t n = 0;
    for (int i = 0; i < t->np; i++)
        for (int k = 0; k < dg_optim_num_slots(t->opt); k++)
            n += (size_t)dg_numel(dg_optim_state(t->opt, i, k)) * sizeof(float);
    return n;
}

/* The run's result: parameters' hash, agreement, the --json line. */
static int report(trainer *t) {
    const dg_train_program *p = t->p;
    const dg_train_opts *o = &t->o;
    if (preempt_drain(t)) return fail(t, "preemption flag: ");
    close_observers(p, &t->ob, o, t->rank, t->world);   /* a logging failure is a warning */
    t->ob_open = false;
    dg_ddp_stats st;
    dg_ddp_get_stats(t->ddp, &st);
    int np_all;
    dg_tensor **all = dg_ctx_params(t->ctx, &np_all);
    uint64_t hash = fnv1a(FNV_START, all, np_all);
    bool agree = false;   /* the model every rank ends with: rank 0's buffers too */
    if (sync_buffers(t->ddp, t->bufs, t->nb, t->world) || replicas_agree(t->comm, hash, t->bufs, t->nb, &agree))
        return fail(t, "");
    if (!o->json || t->rank != 0) return 0;
    char tr[32] = "null";
    if (t->train_acc >= 0) snprintf(tr, sizeof tr, "%.6f", t->train_acc);
    printf("{\"model\": \"%s\", \"device\": \"%s\", \"epochs\": %d, \"world_size\": %d, "
           "\"batch_size\": %d, \"optimizer\": \"%s\", \"lr\": %g, \"sched\": \"%s\", \"seed\": %llu, ",
           p->model ? p->model : p->prog, o->device, o->epochs, t->world, o->batch_size, o->optimizer, o->lr,
           o->sched, (unsigned long long)o->seed);
    json_extra(stdout, p);
    printf("\"normalize\": %s, \"train_images\": %lld, "
           "\"first_loss\": %.6f, \"final_loss\": %.6f, \"train_accuracy\": %s, \"test_accuracy\": %.6f, "
           "\"train_samples_per_sec\": %.1f, \"train_seconds\": %.3f, \"overlap\": %s, "
           "\"buckets\": %d, \"allreduce_seconds\": %.4f, \"steps\": %lld, \"comm\": \"%s\", "
           "\"cuda_graph\": %s, \"skipped_steps\": %lld, \"checkpoint_failures\": %lld, "
           "\"zero\": %s, \"optimizer_state_bytes\": %zu, "
           "\"params_hash\": \"%016llx\", \"replicas_agree\": %s}\n",
           o->normalize ? "true" : "false", (long long)t->train.n, t->first_loss, t->final_loss, tr, t->test_acc,
           t->train_time > 0 ? (double)t->train_samples / t->train_time : 0.0, t->train_time,
           o->overlap ? "true" : "false", st.num_buckets, st.wait_seconds, (long long)t->gstep,
           dg_comm_backend_name(t->comm), o->cuda_graph ? "true" : "false", (long long)t->skipped_steps,
           (long long)t->ckpt_failures, t->zero ? "true" : "false", optimizer_state_bytes(t),
           (unsigned long long)hash, agree ? "true" : "false");
    return 0;
}

int dg_train_main(const dg_train_program *p, int argc, char **argv) {
    if (!p || !p->build || !p->prog) {
        fprintf(stderr, "%s: dg_train_main: %s\n", p && p->prog ? p->prog : "dgrad",
                !p ? "no program (NULL)" : !p->prog ? "the program has no name (prog is NULL)"
                                                    : "the program has no model (build is NULL)");
        return 1;
    }
    dg_clear_error();   /* the first error since this wins (dgrad/base.h) */
    trainer t = { .p = p, .first_loss = -1.0, .train_acc = -1.0 };
    int rc = parse_args(p, argc, argv, &t.o);
    if (rc) return rc < 0 ? 0 : rc;
    rc = setup_process(&t);
    if (!rc) rc = setup_training(&t);
    if (!rc) rc = train_epochs(&t);
    if (!rc) rc = report(&t);
    if (t.failed && t.world > 1) return rc;   /* no collective teardown with ranks in doubt */
    trainer_free(&t);
    return rc;
}
