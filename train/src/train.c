/* train.c - the training program shared by the MNIST examples (train.h). */
#define _POSIX_C_SOURCE 200809L
#include "train.h"

#include "dgrad/dist_checkpoint.h"
#include "dgrad/data.h"
#include "dgrad/ddp.h"
#include "dgrad/graph.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/progress.h"
#include "dgrad/sched.h"
#include "dgrad/summary.h"
#include "dgrad/timeline.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

ex_options ex_default_options(void) {
    return (ex_options){ .data = "data/mnist", .epochs = 1, .batch_size = 64, .lr = 1e-3f,
                         .optimizer = "adam", .device = "cpu", .overlap = true,
                         .bucket_cap_mb = 25.0, .log_every = 10, .keep = 3,
                         .sched = EX_SCHED_NONE, .pct_start = 0.3, .div_factor = 25.0 };
}

static const char *sched_name(ex_sched s) {
    return s == EX_SCHED_ONECYCLE ? "onecycle" : "none";
}

static void usage(const ex_program *p) {
    const ex_options *d = &p->defaults;
    printf("%s - %s\n\n", p->prog, p->about);
    printf("usage: %s [--data DIR] [--epochs N] [--batch-size N] [--lr X]\n"
           "        [--optimizer adam|adamw|sgd] [--sched none|onecycle [--pct-start X] [--div-factor X]]\n"
           "        [--seed N] [--threads N] [--json] [--device cpu|cuda] [--limit-train N] [--normalize]\n"
           "        [--train-accuracy | --no-train-accuracy]%s\n"
           "        [--bucket-cap-mb X] [--no-overlap]\n"
           "        [--logdir DIR [--logdir-per-rank] [--log-every N]] [--timeline FILE] [--quiet]\n"
           "        [--checkpoint-dir DIR [--checkpoint-every N] [--keep N] [--resume]] [--max-steps N]\n"
           "        [--cuda-graph]\n",
           p->prog, p->has_bn ? " [--bn | --no-bn]" : "");
    printf("  --data DIR        MNIST IDX files (.gz or plain), default %s\n", d->data);
    printf("  --epochs N        epochs, default %d\n", d->epochs);
    printf("  --batch-size N    samples per step (per rank), default %d\n", d->batch_size);
    printf("  --lr X            learning rate (OneCycle: the maximum), default %g\n", (double)d->lr);
    printf("  --optimizer NAME  adam, adamw or sgd (momentum 0.9 with --sched onecycle), default %s\n",
           d->optimizer);
    printf("  --sched NAME      none (a constant lr) or onecycle (OneCycleLR over all steps,\n"
           "                    cycling Adam's beta1 / SGD's momentum), default %s\n", sched_name(d->sched));
    printf("  --pct-start X     OneCycle: fraction of the steps spent warming up, default %g\n", d->pct_start);
    printf("  --div-factor X    OneCycle: initial lr = max lr / X, default %g\n", d->div_factor);
    printf("  --seed N          seed for initialization, shuffling and dropout, default 0\n"
           "  --threads N       BLAS threads, default: the BLAS library's choice\n"
           "  --json            print a JSON summary as the last line\n"
           "  --device NAME     cpu (default) or cuda (gradients reduced with NCCL when dgrad\n"
           "                    has it; DG_COMM_BACKEND=mpi|local stages them through the host)\n"
           "  --limit-train N   train on the first N training images only\n"
           "  --normalize       inputs (pixel/255 - 0.1307) / 0.3081, as torchvision's Normalize;\n"
           "                    default pixel/255, as ToTensor\n");
    printf("  --train-accuracy  also evaluate on the training set after each epoch (default %s;\n"
           "                    --no-train-accuracy: off)\n", d->train_accuracy ? "on" : "off");
    if (p->has_bn)
        printf("  --bn, --no-bn     BatchNorm2d after each convolution (default %s); without it\n"
               "                    the convolutions get a bias\n", d->bn ? "on" : "off");
    printf("  --bucket-cap-mb X DDP gradient bucket size in MiB, default 25\n"
           "  --no-overlap      reduce gradients after backward instead of during it\n"
           "  --logdir DIR      TensorBoard event files in DIR (rank 0): train/loss every\n"
           "                    --log-every steps (rank 0's batch loss), per epoch the mean\n"
           "                    loss, accuracies, lr, samples/s, all-reduce seconds, and\n"
           "                    histograms of parameters and gradients\n"
           "  --logdir-per-rank every rank writes DIR/rank<N> instead\n"
           "  --log-every N     steps between train/loss scalars, default 10\n"
           "  --timeline FILE   Chrome trace (Perfetto, chrome://tracing) of forward, backward,\n"
           "                    all-reduces, optimizer and data; under mpirun each rank\n"
           "                    writes FILE.rank<N>: merge with scripts/merge_timeline.py FILE\n"
           "  --quiet           print nothing but errors (and --json's line)\n"
           "  --checkpoint-dir DIR  checkpoints DIR/ckpt-<step>.dgck (written by rank 0)\n"
           "  --checkpoint-every N  write one every N global steps (and at --max-steps)\n"
           "  --keep N          checkpoints kept in DIR, default 3 (0 = all)\n"
           "  --resume          continue from DIR's newest valid checkpoint, mid-epoch if need be\n"
           "                    (bitwise identical with the same world and batch size; a\n"
           "                    different world size continues at the next global batch);\n"
           "                    starts from scratch if DIR holds no checkpoint\n"
           "  --max-steps N     stop after N global steps (writing a checkpoint with --checkpoint-dir)\n"
           "  --cuda-graph      with --device cuda in one process and --sched none: after 3 eager\n"
           "                    steps, capture a whole training step in a CUDA graph and replay it\n"
           "                    for each full batch; the loss is read back every --log-every steps\n"
           "                    (the epoch's mean loss is summed on the GPU)\n"
           "On a terminal rank 0 shows a progress bar, except under Open MPI's mpirun\n"
           "(DG_PROGRESS=bar|lines|quiet overrides).\n"
           "Under mpirun/srun each rank trains on its shard; --batch-size is per rank, and\n"
           "batch-norm running statistics are rank 0's, broadcast before every step.\n");
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool parse_long(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static int bad_flag(const ex_program *p, const char *flag, const char *value, const char *expect) {
    fprintf(stderr, "%s: invalid value '%s' for %s (expected %s)\n", p->prog, value, flag, expect);
    return 2;
}

static bool one_of(const char *f, const char *const *names) {
    for (; *names; names++)
        if (!strcmp(f, *names)) return true;
    return false;
}

/* Returns 0 on success, -1 after --help, else the exit code. */
static int parse_args(const ex_program *p, int argc, char **argv, ex_options *o) {
    static const char *const valued[] = {
        "--data", "--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--threads",
        "--device", "--bucket-cap-mb", "--logdir", "--timeline", "--log-every", "--checkpoint-dir",
        "--checkpoint-every", "--keep", "--max-steps", "--limit-train", "--sched", "--pct-start",
        "--div-factor", NULL
    };
    *o = p->defaults;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--json")) { o->json = true; continue; }
        if (!strcmp(f, "--no-overlap")) { o->overlap = false; continue; }
        if (!strcmp(f, "--quiet")) { o->quiet = true; continue; }
        if (!strcmp(f, "--logdir-per-rank")) { o->logdir_per_rank = true; continue; }
        if (!strcmp(f, "--resume")) { o->resume = true; continue; }
        if (!strcmp(f, "--cuda-graph")) { o->cuda_graph = true; continue; }
        if (!strcmp(f, "--normalize")) { o->normalize = true; continue; }
        if (!strcmp(f, "--train-accuracy")) { o->train_accuracy = true; continue; }
        if (!strcmp(f, "--no-train-accuracy")) { o->train_accuracy = false; continue; }
        if (p->has_bn && !strcmp(f, "--bn")) { o->bn = true; continue; }
        if (p->has_bn && !strcmp(f, "--no-bn")) { o->bn = false; continue; }
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { usage(p); return -1; }
        if (!one_of(f, valued)) {
            fprintf(stderr, "%s: unknown flag '%s' (see --help)\n", p->prog, f);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: flag %s needs a value\n", p->prog, f);
            return 2;
        }
        const char *v = argv[++i];
        long long n;
        if (!strcmp(f, "--data")) {
            o->data = v;
        } else if (!strcmp(f, "--epochs")) {
            if (!parse_long(v, 1, 100000, &n)) return bad_flag(p, f, v, "an integer >= 1");
            o->epochs = (int)n;
        } else if (!strcmp(f, "--batch-size")) {
            if (!parse_long(v, 1, 1 << 20, &n)) return bad_flag(p, f, v, "an integer >= 1");
            o->batch_size = (int)n;
        } else if (!strcmp(f, "--seed")) {
            if (!parse_long(v, 0, INT64_MAX, &n)) return bad_flag(p, f, v, "an integer >= 0");
            o->seed = (uint64_t)n;
        } else if (!strcmp(f, "--threads")) {
            if (!parse_long(v, 1, 1024, &n)) return bad_flag(p, f, v, "an integer >= 1");
            o->threads = (int)n;
        } else if (!strcmp(f, "--lr") || !strcmp(f, "--bucket-cap-mb") || !strcmp(f, "--pct-start") ||
                   !strcmp(f, "--div-factor")) {
            char *end;
            errno = 0;
            double x = strtod(v, &end);
            if (errno || end == v || *end || !(x > 0.0) || x > 1e6) return bad_flag(p, f, v, "a number > 0");
            if (!strcmp(f, "--pct-start") && x >= 1.0) return bad_flag(p, f, v, "a number in (0, 1)");
            if (!strcmp(f, "--lr")) o->lr = (float)x;
            else if (!strcmp(f, "--bucket-cap-mb")) o->bucket_cap_mb = x;
            else if (!strcmp(f, "--pct-start")) o->pct_start = x;
            else o->div_factor = x;
        } else if (!strcmp(f, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) return bad_flag(p, f, v, "cpu or cuda");
            o->device = v;
        } else if (!strcmp(f, "--optimizer")) {
            if (strcmp(v, "adam") && strcmp(v, "adamw") && strcmp(v, "sgd"))
                return bad_flag(p, f, v, "adam, adamw or sgd");
            o->optimizer = v;
        } else if (!strcmp(f, "--sched")) {
            if (!strcmp(v, "none")) o->sched = EX_SCHED_NONE;
            else if (!strcmp(v, "onecycle")) o->sched = EX_SCHED_ONECYCLE;
            else return bad_flag(p, f, v, "none or onecycle");
        } else if (!strcmp(f, "--logdir") || !strcmp(f, "--timeline") || !strcmp(f, "--checkpoint-dir")) {
            if (!v[0]) return bad_flag(p, f, v, "a path");
            if (!strcmp(f, "--logdir")) o->logdir = v;
            else if (!strcmp(f, "--timeline")) o->timeline = v;
            else o->ckpt_dir = v;
        } else if (!strcmp(f, "--log-every")) {
            if (!parse_long(v, 1, 1000000000, &n)) return bad_flag(p, f, v, "an integer >= 1");
            o->log_every = (int)n;
        } else if (!strcmp(f, "--checkpoint-every") || !strcmp(f, "--max-steps") ||
                   !strcmp(f, "--limit-train")) {
            if (!parse_long(v, 1, INT64_MAX, &n)) return bad_flag(p, f, v, "an integer >= 1");
            if (!strcmp(f, "--max-steps")) o->max_steps = n;
            else if (!strcmp(f, "--limit-train")) o->limit_train = n;
            else o->ckpt_every = n;
        } else if (!strcmp(f, "--keep")) {
            if (!parse_long(v, 0, 1000000, &n)) return bad_flag(p, f, v, "an integer >= 0");
            o->keep = (int)n;
        }
    }
    if ((o->resume || o->ckpt_every) && !o->ckpt_dir) {
        fprintf(stderr, "%s: %s needs --checkpoint-dir\n", p->prog, o->resume ? "--resume" : "--checkpoint-every");
        return 2;
    }
    if (o->logdir_per_rank && !o->logdir) {
        fprintf(stderr, "%s: --logdir-per-rank needs --logdir\n", p->prog);
        return 2;
    }
    if (o->cuda_graph && strcmp(o->device, "cuda")) {
        fprintf(stderr, "%s: --cuda-graph needs --device cuda\n", p->prog);
        return 2;
    }
    if (o->cuda_graph && o->sched != EX_SCHED_NONE) {   /* the captured optimizer step keeps its lr */
        fprintf(stderr, "%s: --cuda-graph needs --sched none (a captured step cannot follow a schedule)\n",
                p->prog);
        return 2;
    }
    return 0;
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
                       const ex_program *p, const ex_options *o) {
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
    int32_t pred[1000], lab[1000];
    while ((b = dg_loader_next(&l, ctx, p->flat_input, &x, &y)) > 0) {
        dg_tensor *am = dg_argmax(dg_module_forward(model, x), 1, false);
        if (!am) {
            b = -1;
            break;
        }
        dg_tensor_to_host(am, pred);
        dg_tensor_to_host(y, lab);
        for (int64_t i = 0; i < b; i++) counts[0] += pred[i] == lab[i];
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

static int fail(const ex_program *p, dg_comm *comm, const char *what) {
    fprintf(stderr, "%s: rank %d: %s%s\n", p->prog, comm ? dg_comm_rank(comm) : 0, what, dg_last_error());
    return 1;
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
static int check_logdir(const ex_program *p, const char *dir) {
    struct stat sb;
    if (dir && stat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "%s: --logdir '%s' exists and is not a directory\n", p->prog, dir);
        return 1;
    }
    return 0;
}

static dg_status open_observers(observers *ob, const ex_options *o, int rank, int world) {
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
static dg_status graph_train_step(graph_step *gs, dg_ctx *ctx, dg_module *model, dg_optim *opt,
                                  dg_ddp *ddp, dg_tensor *x, dg_tensor *y) {
    if (gs->g) {
        if (dg_tensor_copy(gs->x, x) || dg_tensor_copy(gs->y, y)) return DG_ERR;
    } else {
        gs->x = dg_tensor_persistent(ctx, DG_F32, x->ndim, x->shape);
        gs->y = dg_tensor_persistent(ctx, DG_I32, y->ndim, y->shape);
        if (!gs->x || !gs->y || dg_tensor_copy(gs->x, x) || dg_tensor_copy(gs->y, y) ||
            dg_graph_begin_capture(ctx))
            return DG_ERR;
        dg_tensor *loss = dg_cross_entropy(dg_module_forward(model, gs->x), gs->y);
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

static void observe_step(observers *ob, const ex_options *o, double loss, int64_t global_samples) {
    dg_progress_step(ob->progress, loss, global_samples);
    if (ob->tb && ob->step % o->log_every == 0)
        dg_summary_add_scalar(ob->tb, "train/loss", (float)loss, ob->step);
    ob->step++;
}

/* Write errors are sticky: close_observers reports them. train_acc < 0:
 * not measured. */
static void observe_epoch(observers *ob, dg_ctx *ctx, dg_ddp *ddp, dg_optim *opt, double loss,
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
    dg_summary_add_scalar(ob->tb, "train/lr", dg_optim_get_lr(opt), s);
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

/* Writes the timeline and closes the event file; 1 on an error. */
static int close_observers(const ex_program *p, observers *ob, const ex_options *o, int rank,
                           int world) {
    int rc = 0;
    if (dg_summary_close(ob->tb)) {
        fprintf(stderr, "%s: rank %d: --logdir: %s\n", p->prog, rank, dg_last_error());
        rc = 1;
    }
    if (dg_timeline_close(ob->tl)) {
        fprintf(stderr, "%s: rank %d: --timeline: %s\n", p->prog, rank, dg_last_error());
        rc = 1;
    }
    if (o->timeline && world > 1 && rank == 0)
        dg_progress_log(ob->progress, "timeline: %s.rank<N> for each rank; merge with "
                        "scripts/merge_timeline.py %s", o->timeline, o->timeline);
    dg_progress_free(ob->progress);
    return rc;
}

/* ---- checkpoints (--checkpoint-dir, --resume) ------------------------- */
/* Collective. Every rank returns the same status; rank 0 prints the error. */
static int save_checkpoint(const ex_program *p, const ex_options *o, dg_ctx *ctx, dg_optim *opt,
                           dg_comm *comm, dg_train_state *ts, dg_progress *progress) {
    dg_clear_error();
    if (dg_checkpoint_save(o->ckpt_dir, ctx, opt, ts, comm, o->keep)) {
        if (dg_comm_rank(comm) == 0) fprintf(stderr, "%s: checkpoint: %s\n", p->prog, dg_last_error());
        return 1;
    }
    if (dg_comm_rank(comm) == 0)
        dg_progress_log(progress, "checkpoint: %s/ckpt-%lld.dgck", o->ckpt_dir, (long long)ts->step);
    return 0;
}

/* --resume: 0 and *resumed on success (false when DIR holds no checkpoint),
 * else 1 on every rank (rank 0 prints the one-line error). */
static int resume_checkpoint(const ex_program *p, const ex_options *o, dg_ctx *ctx, dg_optim *opt,
                             dg_comm *comm, dg_train_state *ts, dg_progress *progress, bool *resumed) {
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
    if (dg_checkpoint_load(o->ckpt_dir, ctx, opt, ts, comm, path, sizeof path)) {
        if (dg_comm_rank(comm) == 0) fprintf(stderr, "%s: --resume: %s\n", p->prog, dg_last_error());
        return 1;
    }
    if (dg_comm_rank(comm) == 0)
        dg_progress_log(progress, "resumed from %s: step %lld, epoch %lld, %lld samples into it%s", path,
                        (long long)ts->step, (long long)ts->epoch + 1, (long long)ts->epoch_samples,
                        ts->saved_world_size != dg_comm_size(comm) ? " (saved with another world size)" : "");
    return 0;
}

static dg_optim *make_optimizer(const ex_options *o, dg_tensor **params, int np) {
    if (!strcmp(o->optimizer, "sgd")) {
        dg_sgd_opts so = dg_sgd_defaults(o->lr);
        if (o->sched == EX_SCHED_ONECYCLE) so.momentum = 0.9f;   /* OneCycle cycles it */
        return dg_optim_sgd(params, np, so);
    }
    dg_adam_opts ao = !strcmp(o->optimizer, "adamw") ? dg_adamw_defaults() : dg_adam_defaults();
    ao.lr = o->lr;
    return !strcmp(o->optimizer, "adamw") ? dg_optim_adamw(params, np, ao) : dg_optim_adam(params, np, ao);
}

int ex_main(const ex_program *p, int argc, char **argv) {
    ex_options o;
    int rc = parse_args(p, argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    if (check_logdir(p, o.logdir)) return 1;
    if (o.threads) dg_set_num_threads(o.threads);

    dg_dataset train, test;
    if (dg_dataset_load_mnist(o.data, true, &train) || dg_dataset_load_mnist(o.data, false, &test)) {
        fprintf(stderr, "%s: %s (fetch the data with scripts/fetch_mnist.sh)\n", p->prog, dg_last_error());
        dg_dataset_free(&train);
        return 1;
    }
    if (o.limit_train && o.limit_train < train.n) train.n = o.limit_train;   /* the first N */
    dg_comm *comm;
    const char *backend = getenv("DG_COMM_BACKEND");   /* cuda: NCCL unless this says otherwise */
    backend = !strcmp(o.device, "cuda") && !(backend && *backend) && dg_comm_has_backend("nccl") ? "nccl" : NULL;
    if (dg_comm_init(&comm, backend)) {
        fprintf(stderr, "%s: %s\n", p->prog, dg_last_error());
        dg_dataset_free(&train);
        dg_dataset_free(&test);
        return 1;
    }
    int rank = dg_comm_rank(comm), world = dg_comm_size(comm);
    dg_ctx *ctx = NULL;
    if (o.cuda_graph && world > 1)
        fprintf(stderr, "%s: --cuda-graph runs in one process (this job has %d ranks)\n", p->prog, world);
    else if (!(ctx = dg_ctx_new(!strcmp(o.device, "cuda") ? DG_CUDA : DG_CPU)))
        fail(p, comm, "");
    if (!ctx) {   /* free what there is, so that sanitizers see no leak */
        dg_dataset_free(&train);
        dg_dataset_free(&test);
        dg_comm_free(comm);
        return o.cuda_graph && world > 1 ? 2 : 1;
    }
    dg_manual_seed(ctx, o.seed);
    dg_module *model = p->build(ctx, &o);
    if (!model) return fail(p, comm, "model: ");
    dg_tensor **params, **bufs;
    int np = dg_module_parameters(model, &params), nb = dg_module_buffers(model, &bufs);
    dg_optim *opt = make_optimizer(&o, params, np);
    if (!opt) return fail(p, comm, "optimizer: ");

    dg_ddp_opts dopts = dg_ddp_defaults();
    dopts.overlap = o.overlap;
    dopts.bucket_cap_bytes = (size_t)(o.bucket_cap_mb * 1048576.0);
    if (dopts.first_bucket_cap_bytes > dopts.bucket_cap_bytes) dopts.first_bucket_cap_bytes = dopts.bucket_cap_bytes;
    dg_ddp *ddp;
    if (dg_ddp_new(&ddp, ctx, comm, dopts)) return fail(p, comm, "");
    if (sync_buffers(ddp, bufs, nb, world)) return fail(p, comm, "broadcast of buffers: ");
    observers ob;
    if (open_observers(&ob, &o, rank, world)) {
        fail(p, comm, "");
        dg_ddp_free(ddp);
        dg_dataset_free(&train);
        dg_dataset_free(&test);
        dg_ctx_free(ctx);
        dg_comm_free(comm);
        return 1;
    }
    dg_ddp_set_timeline(ddp, ob.tl);
    graph_step gs = { .on = o.cuda_graph, .warmup = 3 };
    if (gs.on) dg_ddp_set_no_sync(ddp, true);   /* one process: nothing to reduce */

    /* DistributedSampler semantics: a shuffle shared by every rank, padded
     * so that each rank gets the same number of samples */
    dg_sampler sampler;
    dg_loader loader;
    if (dg_sampler_init(&sampler, train.n, rank, world, true, o.seed, false) ||
        dg_loader_init(&loader, &train, &sampler, o.batch_size, false))
        return fail(p, comm, "");
    set_normalize(&loader, o.normalize);
    dg_sched *sched = NULL;
    if (o.sched == EX_SCHED_ONECYCLE) {
        dg_onecycle_opts oc = dg_onecycle_defaults(o.lr, dg_loader_num_batches(&loader) * o.epochs);
        oc.pct_start = o.pct_start;
        oc.div_factor = o.div_factor;
        if (!(sched = dg_sched_onecycle(opt, oc))) return fail(p, comm, "scheduler: ");
    }
    if (rank == 0 && world > 1)
        dg_progress_log(ob.progress, "data-parallel over %d ranks (%s), %lld samples per rank per epoch, batch %d per rank",
                        world, dg_comm_backend_name(comm), (long long)sampler.num_samples, o.batch_size);

    /* checkpoint state: the epoch's loss sums are per-rank statistics */
    dg_train_state ts = { .batch_size = o.batch_size, .optimizer = o.optimizer, .sampler = &sampler,
                          .buffers = bufs, .num_buffers = nb };
    bool resumed = false, stop = false;
    int64_t gstep = 0;
    int see_rc = 0;   /* on a checkpoint error every rank cleans up (ckpt_fail) and exits 1 */
    if (o.resume && resume_checkpoint(p, &o, ctx, opt, comm, &ts, ob.progress, &resumed)) goto ckpt_fail;
    if (resumed) gstep = ob.step = ts.step;
    /* the schedule is a function of the step: replay it (the optimizer's lr
     * and betas come back as the uninterrupted run had them) */
    for (int64_t s = 0; sched && s < gstep; s++)
        if (dg_sched_step(sched)) return fail(p, comm, "--resume: scheduler: ");
    int start_epoch = resumed ? (int)ts.epoch : 0;

    double train_time = 0.0, final_loss = 0.0, first_loss = -1.0, train_acc = -1.0, test_acc = 0.0;
    int64_t train_samples = 0;
    for (int epoch = start_epoch; epoch < o.epochs && !(o.max_steps && gstep >= o.max_steps); epoch++) {
        dg_loader_start_epoch(&loader, epoch);
        dg_progress_start_epoch(ob.progress, epoch, o.epochs, dg_loader_num_batches(&loader));
        double t0 = now();
        double sums[2] = { 0.0, 0.0 };   /* loss sum, steps */
        if (resumed && epoch == start_epoch) {   /* skip what the checkpoint consumed */
            loader.pos = ts.pos;
            sums[0] = ts.num_stats == 2 ? ts.stats[0] : 0.0;
            sums[1] = ts.num_stats == 2 ? ts.stats[1] : 0.0;
        }
        int64_t samples = 0, b;
        dg_tensor *x, *y;
        while ((b = timed_next(&loader, ctx, p->flat_input, &x, &y, ob.tl)) > 0) {
            double l;
            if (gs.on && gs.warmup == 0 && b == o.batch_size) {   /* --cuda-graph */
                dg_timeline_begin(ob.tl, "graph_replay", DG_TIMELINE_COMPUTE);
                if (graph_train_step(&gs, ctx, model, opt, ddp, x, y)) return fail(p, comm, "--cuda-graph: ");
                dg_timeline_end(ob.tl, DG_TIMELINE_COMPUTE);
                if (ob.step % o.log_every == 0 || dg_graph_replays(gs.g) == 1) gs.last_loss = dg_item(gs.loss);
                l = gs.last_loss;   /* sums: graph_flush */
            } else {
                if (gs.warmup > 0) gs.warmup--;
                if (sync_buffers(ddp, bufs, nb, world)) return fail(p, comm, "broadcast of buffers: ");
                dg_timeline_begin(ob.tl, "forward", DG_TIMELINE_COMPUTE);
                dg_tensor *loss = dg_cross_entropy(dg_module_forward(model, x), y);
                dg_timeline_end(ob.tl, DG_TIMELINE_COMPUTE);
                if (!loss) return fail(p, comm, "");
                dg_optim_zero_grad(opt);
                if (dg_ddp_backward(ddp, loss)) return fail(p, comm, "");   /* backward, all-reduce */
                dg_timeline_begin(ob.tl, "optimizer_step", DG_TIMELINE_COMPUTE);
                dg_optim_step(opt);
                if (sched && dg_sched_step(sched)) return fail(p, comm, "scheduler: ");
                dg_timeline_end(ob.tl, DG_TIMELINE_COMPUTE);
                l = dg_item(loss);
                sums[0] += l;
                sums[1] += 1.0;
            }
            if (first_loss < 0) first_loss = l;
            samples += b;
            observe_step(&ob, &o, l, b * world);
            dg_ctx_reset_step(ctx);
            gstep++;
            stop = o.max_steps && gstep >= o.max_steps;
            if (o.ckpt_dir && (stop || (o.ckpt_every && gstep % o.ckpt_every == 0))) {
                graph_flush(&gs, sums);
                ts = (dg_train_state){ .step = gstep, .epoch = epoch, .pos = loader.pos, .batch_size = o.batch_size,
                                       .optimizer = o.optimizer, .sampler = &sampler, .num_stats = 2,
                                       .stats = { sums[0], sums[1] }, .buffers = bufs, .num_buffers = nb };
                if (save_checkpoint(p, &o, ctx, opt, comm, &ts, ob.progress)) goto ckpt_fail;
            }
            if (stop) break;
        }
        if (b < 0) return fail(p, comm, "");
        graph_flush(&gs, sums);
        if (stop) break;   /* --max-steps: mid-epoch, no epoch statistics */
        double dt = now() - t0;
        /* global numbers: the slowest rank's time, every rank's samples */
        int64_t gsamples = samples;
        if (dg_comm_allreduce(comm, &dt, 1, DG_COMM_F64, DG_COMM_MAX) ||
            dg_comm_allreduce(comm, &gsamples, 1, DG_COMM_I64, DG_COMM_SUM) ||
            dg_comm_allreduce(comm, sums, 2, DG_COMM_F64, DG_COMM_SUM))
            return fail(p, comm, "");
        train_time += dt;
        train_samples += gsamples;
        final_loss = sums[0] / sums[1];
        dg_timeline_begin(ob.tl, "evaluate", DG_TIMELINE_COMPUTE);
        if (sync_buffers(ddp, bufs, nb, world)) return fail(p, comm, "broadcast of buffers: ");
        if (o.train_accuracy) train_acc = evaluate(ctx, comm, model, &train, p, &o);
        test_acc = evaluate(ctx, comm, model, &test, p, &o);
        dg_timeline_end(ob.tl, DG_TIMELINE_COMPUTE);
        if ((o.train_accuracy && train_acc < 0) || test_acc < 0) return fail(p, comm, "evaluation: ");
        if (rank == 0) {
            char tr[48] = "";
            if (o.train_accuracy) snprintf(tr, sizeof tr, "  train acc %.2f%%", 100.0 * train_acc);
            dg_progress_log(ob.progress, "epoch %d/%d  loss %.4f%s  test acc %.2f%%  %.0f samples/s",
                            epoch + 1, o.epochs, final_loss, tr, 100.0 * test_acc, (double)gsamples / dt);
        }
        observe_epoch(&ob, ctx, ddp, opt, final_loss, train_acc, test_acc, (double)gsamples / dt);
    }
    see_rc = close_observers(p, &ob, &o, rank, world);
    dg_ddp_stats st;
    dg_ddp_get_stats(ddp, &st);
    int np_all;
    dg_tensor **all = dg_ctx_params(ctx, &np_all);
    uint64_t hash = fnv1a(FNV_START, all, np_all);
    bool agree = false;   /* the model every rank ends with: rank 0's buffers too */
    if (sync_buffers(ddp, bufs, nb, world) || replicas_agree(comm, hash, bufs, nb, &agree))
        return fail(p, comm, "");
    if (o.json && rank == 0) {
        char tr[32] = "null";
        if (train_acc >= 0) snprintf(tr, sizeof tr, "%.6f", train_acc);
        printf("{\"model\": \"%s\", \"device\": \"%s\", \"epochs\": %d, \"world_size\": %d, "
               "\"batch_size\": %d, \"optimizer\": \"%s\", \"lr\": %g, \"sched\": \"%s\", \"seed\": %llu, "
               "\"bn\": %s, \"normalize\": %s, \"train_images\": %lld, "
               "\"first_loss\": %.6f, \"final_loss\": %.6f, \"train_accuracy\": %s, \"test_accuracy\": %.6f, "
               "\"train_samples_per_sec\": %.1f, \"train_seconds\": %.3f, \"overlap\": %s, "
               "\"buckets\": %d, \"allreduce_seconds\": %.4f, \"steps\": %lld, \"comm\": \"%s\", "
               "\"cuda_graph\": %s, \"params_hash\": \"%016llx\", \"replicas_agree\": %s}\n",
               p->model, o.device, o.epochs, world, o.batch_size, o.optimizer, o.lr, sched_name(o.sched),
               (unsigned long long)o.seed, p->has_bn && o.bn ? "true" : "false",
               o.normalize ? "true" : "false", (long long)train.n, first_loss, final_loss, tr, test_acc,
               train_time > 0 ? (double)train_samples / train_time : 0.0, train_time,
               o.overlap ? "true" : "false", st.num_buckets, st.wait_seconds, (long long)gstep,
               dg_comm_backend_name(comm), o.cuda_graph ? "true" : "false", (unsigned long long)hash,
               agree ? "true" : "false");
    }
    if (0) {
ckpt_fail:
        close_observers(p, &ob, &o, rank, world);
        see_rc = 1;
    }
    dg_graph_free(gs.g);
    dg_ddp_free(ddp);
    dg_loader_free(&loader);
    dg_sampler_free(&sampler);
    dg_dataset_free(&train);
    dg_dataset_free(&test);
    dg_ctx_free(ctx);
    dg_comm_free(comm);
    return see_rc;
}
