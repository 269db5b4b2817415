/* mnist_cnn - a small convolutional net on MNIST, in dgrad.
 *
 *   (B, 1, 28, 28) -> Conv 5x5x24 -> MaxPool 2 -> ReLU -> Conv 5x5x32
 *   -> MaxPool 2 -> ReLU -> Flatten -> Linear 512->256 -> ReLU -> Linear 10,
 *   cross-entropy, Adam with OneCycleLR (max_lr --lr), batch 256, 1 epoch,
 *   with BatchNorm2d after each convolution (the convolutions then have no
 *   bias). Defaults (tuned): batch norm on, max_lr 3e-2, pct_start 0.2,
 *   div_factor 10 (PyTorch's OneCycle defaults are 0.3 and 25): 99.10% test
 *   accuracy on average over seeds 0-4 after one epoch on the CPU (min
 *   99.06%). --no-bn gives the plain net (--lr 1e-2: 98.8%; with 3e-3, the
 *   PyTorch reference recipe: 98.2%).
 *
 * Data-parallel: run it under mpirun (or srun) and every rank trains on its
 * shard of each epoch; gradients are averaged with DDP, batch-norm buffers
 * are broadcast from rank 0 at the start. --batch-size is per rank.
 */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/data.h"
#include "dgrad/ddp.h"
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    long long limit_train;      /* 0 = the whole training set */
    bool bn;
    bool normalize;
    bool quiet;
    double pct_start, div_factor;   /* OneCycle */
} options;

static const char *usage =
    "usage: mnist_cnn [--data DIR] [--epochs N] [--batch-size N] [--lr X]\n"
    "                 [--optimizer adam|adamw|sgd] [--seed N] [--threads N] [--json]\n"
    "                 [--device cpu|cuda] [--limit-train N] [--no-bn] [--normalize] [--quiet]\n"
    "                 [--pct-start X] [--div-factor X]\n"
    "  --data DIR        MNIST IDX files (.gz or plain), default data/mnist\n"
    "  --epochs N        epochs, default 1\n"
    "  --batch-size N    samples per step, default 256\n"
    "  --lr X            OneCycle max learning rate, default 3e-2\n"
    "  --optimizer NAME  adam (default), adamw or sgd (momentum 0.9)\n"
    "  --seed N          seed for initialization, shuffling and dropout, default 0\n"
    "  --threads N       BLAS threads, default: the BLAS library's choice\n"
    "  --json            print a JSON summary as the last line\n"
    "  --device NAME     cpu (default) or cuda\n"
    "  --limit-train N   train on the first N training images only\n"
    "  --no-bn           no BatchNorm2d after the convolutions (they get a bias)\n"
    "  --normalize       inputs (pixel/255 - 0.1307) / 0.3081, as torchvision's Normalize\n"
    "  --quiet           print nothing but errors (and --json's line)\n"
    "  --pct-start X     OneCycle: fraction of the steps spent warming up, default 0.2\n"
    "  --div-factor X    OneCycle: initial lr = max_lr / X, default 10\n"
    "Under mpirun/srun each rank trains on its shard; --batch-size is per rank.\n";

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

static int bad_flag(const char *flag, const char *value, const char *expect) {
    fprintf(stderr, "mnist_cnn: invalid value '%s' for %s (expected %s)\n", value, flag, expect);
    return 2;
}

/* Returns 0 on success, -1 after --help, else the exit code. */
static int parse_args(int argc, char **argv, options *o) {
    *o = (options){ .data = "data/mnist", .epochs = 1, .batch_size = 256, .lr = 3e-2f,
                    .optimizer = "adam", .device = "cpu", .bn = true,
                    .pct_start = 0.2, .div_factor = 10.0 };
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--json")) { o->json = true; continue; }
        if (!strcmp(f, "--bn")) { o->bn = true; continue; }
        if (!strcmp(f, "--no-bn")) { o->bn = false; continue; }
        if (!strcmp(f, "--normalize")) { o->normalize = true; continue; }
        if (!strcmp(f, "--quiet")) { o->quiet = true; continue; }
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { fputs(usage, stdout); return -1; }
        bool known = !strcmp(f, "--data") || !strcmp(f, "--epochs") || !strcmp(f, "--batch-size") ||
                     !strcmp(f, "--lr") || !strcmp(f, "--optimizer") || !strcmp(f, "--seed") ||
                     !strcmp(f, "--threads") || !strcmp(f, "--device") || !strcmp(f, "--limit-train") ||
                     !strcmp(f, "--pct-start") || !strcmp(f, "--div-factor");
        if (!known) {
            fprintf(stderr, "mnist_cnn: unknown flag '%s' (see --help)\n", f);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "mnist_cnn: flag %s needs a value\n", f);
            return 2;
        }
        const char *v = argv[++i];
        long long n;
        if (!strcmp(f, "--data")) {
            o->data = v;
        } else if (!strcmp(f, "--epochs")) {
            if (!parse_long(v, 1, 100000, &n)) return bad_flag(f, v, "an integer >= 1");
            o->epochs = (int)n;
        } else if (!strcmp(f, "--batch-size")) {
            if (!parse_long(v, 1, 1 << 20, &n)) return bad_flag(f, v, "an integer >= 1");
            o->batch_size = (int)n;
        } else if (!strcmp(f, "--seed")) {
            if (!parse_long(v, 0, INT64_MAX, &n)) return bad_flag(f, v, "an integer >= 0");
            o->seed = (uint64_t)n;
        } else if (!strcmp(f, "--threads")) {
            if (!parse_long(v, 1, 1024, &n)) return bad_flag(f, v, "an integer >= 1");
            o->threads = (int)n;
        } else if (!strcmp(f, "--limit-train")) {
            if (!parse_long(v, 1, INT64_MAX, &n)) return bad_flag(f, v, "an integer >= 1");
            o->limit_train = n;
        } else if (!strcmp(f, "--lr") || !strcmp(f, "--pct-start") || !strcmp(f, "--div-factor")) {
            char *end;
            errno = 0;
            double x = strtod(v, &end);
            if (errno || end == v || *end || !(x > 0.0) || x > 1e6) return bad_flag(f, v, "a number > 0");
            if (!strcmp(f, "--pct-start") && x >= 1.0) return bad_flag(f, v, "a number in (0, 1)");
            if (!strcmp(f, "--lr")) o->lr = (float)x;
            else if (!strcmp(f, "--pct-start")) o->pct_start = x;
            else o->div_factor = x;
        } else if (!strcmp(f, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) return bad_flag(f, v, "cpu or cuda");
            o->device = v;
        } else if (!strcmp(f, "--optimizer")) {
            if (strcmp(v, "adam") && strcmp(v, "adamw") && strcmp(v, "sgd"))
                return bad_flag(f, v, "adam, adamw or sgd");
            o->optimizer = v;
        }
    }
    return 0;
}

/* The net; NULL on error. */
static dg_module *build_model(dg_ctx *ctx, bool bn) {
    int64_t k5[2] = { 5, 5 }, k2[2] = { 2, 2 };
    dg_module *m[16];
    int n = 0;
    m[n++] = dg_nn_conv2d(ctx, 1, 24, k5, NULL, NULL, NULL, 1, !bn);
    if (bn) m[n++] = dg_nn_batch_norm2d(ctx, 24);
    m[n++] = dg_nn_max_pool2d(ctx, k2, NULL, NULL);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_conv2d(ctx, 24, 32, k5, NULL, NULL, NULL, 1, !bn);
    if (bn) m[n++] = dg_nn_batch_norm2d(ctx, 32);
    m[n++] = dg_nn_max_pool2d(ctx, k2, NULL, NULL);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_flatten(ctx);
    m[n++] = dg_nn_linear(ctx, 32 * 4 * 4, 256, true);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_linear(ctx, 256, 10, true);
    return dg_nn_sequential(ctx, n, m);
}

/* --normalize: MNIST's mean and std, as transforms.Normalize((0.1307,), (0.3081,)) */
static void set_normalize(dg_loader *l, bool on) {
    if (!on) return;
    l->scale = 1.0f / (255.0f * 0.3081f);
    l->shift = -0.1307f / 0.3081f;
}

/* Accuracy over a whole dataset, in eval mode without autograd; each rank
 * takes its shard and the counts are summed. */
static double evaluate(dg_ctx *ctx, dg_comm *comm, dg_module *model, const dg_dataset *ds, bool norm) {
    dg_sampler s;
    dg_loader l;
    if (dg_sampler_init_eval(&s, ds->n, dg_comm_rank(comm), dg_comm_size(comm)) ||
        dg_loader_init(&l, ds, &s, 1000, false))
        return -1.0;
    set_normalize(&l, norm);
    bool prev = dg_set_grad_enabled(ctx, false);
    dg_module_train(model, false);
    dg_loader_start_epoch(&l, 0);
    int64_t counts[2] = { 0, 0 }, b;   /* correct, seen */
    dg_tensor *x, *y;
    int32_t pred[1000], lab[1000];
    while ((b = dg_loader_next(&l, ctx, false, &x, &y)) > 0) {
        dg_tensor *am = dg_argmax(dg_module_forward(model, x), 1, false);
        if (!am) return -1.0;
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
    return (double)counts[0] / (double)counts[1];
}

static int fail(dg_comm *comm, const char *what) {
    fprintf(stderr, "mnist_cnn: rank %d: %s%s\n", comm ? dg_comm_rank(comm) : 0, what, dg_last_error());
    return 1;
}

int main(int argc, char **argv) {
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    if (o.threads) dg_set_num_threads(o.threads);

    dg_dataset train, test;
    if (dg_dataset_load_mnist(o.data, true, &train) || dg_dataset_load_mnist(o.data, false, &test)) {
        fprintf(stderr, "mnist_cnn: %s (fetch the data with scripts/fetch_mnist.sh)\n", dg_last_error());
        dg_dataset_free(&train);
        return 1;
    }
    if (o.limit_train && o.limit_train < train.n) train.n = o.limit_train;   /* the first N */
    dg_comm *comm;
    if (dg_comm_init(&comm, NULL)) {
        fprintf(stderr, "mnist_cnn: %s\n", dg_last_error());
        return 1;
    }
    int rank = dg_comm_rank(comm), world = dg_comm_size(comm);

    dg_ctx *ctx = dg_ctx_new(!strcmp(o.device, "cuda") ? DG_CUDA : DG_CPU);
    if (!ctx) return fail(comm, "");
    dg_manual_seed(ctx, o.seed);
    dg_module *model = build_model(ctx, o.bn);
    if (!model) return fail(comm, "model: ");
    dg_tensor **params;
    int np = dg_module_parameters(model, &params);
    dg_optim *opt;
    if (!strcmp(o.optimizer, "sgd")) {
        dg_sgd_opts so = dg_sgd_defaults(o.lr);
        so.momentum = 0.9f;
        opt = dg_optim_sgd(params, np, so);
    } else {
        dg_adam_opts ao = !strcmp(o.optimizer, "adamw") ? dg_adamw_defaults() : dg_adam_defaults();
        ao.lr = o.lr;
        opt = !strcmp(o.optimizer, "adamw") ? dg_optim_adamw(params, np, ao) : dg_optim_adam(params, np, ao);
    }
    if (!opt) return fail(comm, "optimizer: ");

    dg_ddp *ddp;
    if (dg_ddp_new(&ddp, ctx, comm, dg_ddp_defaults())) return fail(comm, "");
    dg_tensor **bufs;
    int nb = dg_module_buffers(model, &bufs);
    for (int i = 0; i < nb; i++)
        if (dg_ddp_broadcast_tensor(ddp, bufs[i])) return fail(comm, "broadcast of buffers: ");

    dg_sampler sampler;
    dg_loader loader;
    if (dg_sampler_init(&sampler, train.n, rank, world, true, o.seed, false) ||
        dg_loader_init(&loader, &train, &sampler, o.batch_size, false))
        return fail(comm, "");
    set_normalize(&loader, o.normalize);
    int64_t steps_per_epoch = dg_loader_num_batches(&loader);
    dg_onecycle_opts oc = dg_onecycle_defaults(o.lr, steps_per_epoch * o.epochs);
    oc.pct_start = o.pct_start;
    oc.div_factor = o.div_factor;
    dg_sched *sched = dg_sched_onecycle(opt, oc);
    if (!sched) return fail(comm, "scheduler: ");
    if (rank == 0 && world > 1 && !o.quiet)
        printf("data-parallel over %d ranks, %lld samples per rank per epoch, batch %d per rank\n", world,
               (long long)sampler.num_samples, o.batch_size);

    double train_time = 0.0, final_loss = 0.0, first_loss = -1.0, test_acc = 0.0;
    int64_t train_samples = 0, gstep = 0;
    for (int epoch = 0; epoch < o.epochs; epoch++) {
        dg_loader_start_epoch(&loader, epoch);
        double t0 = now();
        double sums[2] = { 0.0, 0.0 };   /* loss sum, steps */
        int64_t samples = 0, b;
        dg_tensor *x, *y;
        while ((b = dg_loader_next(&loader, ctx, false, &x, &y)) > 0) {
            dg_tensor *loss = dg_cross_entropy(dg_module_forward(model, x), y);
            if (!loss) return fail(comm, "");
            dg_optim_zero_grad(opt);
            if (dg_ddp_backward(ddp, loss)) return fail(comm, "");
            dg_optim_step(opt);
            if (dg_sched_step(sched)) return fail(comm, "");
            double l = dg_item(loss);
            if (first_loss < 0) first_loss = l;
            sums[0] += l;
            sums[1] += 1.0;
            samples += b;
            gstep++;
            dg_ctx_reset_step(ctx);
        }
        if (b < 0) return fail(comm, "");
        double dt = now() - t0;
        int64_t gsamples = samples;
        if (dg_comm_allreduce(comm, &dt, 1, DG_COMM_F64, DG_COMM_MAX) ||
            dg_comm_allreduce(comm, &gsamples, 1, DG_COMM_I64, DG_COMM_SUM) ||
            dg_comm_allreduce(comm, sums, 2, DG_COMM_F64, DG_COMM_SUM))
            return fail(comm, "");
        train_time += dt;
        train_samples += gsamples;
        final_loss = sums[0] / sums[1];
        test_acc = evaluate(ctx, comm, model, &test, o.normalize);
        if (test_acc < 0) return fail(comm, "evaluation: ");
        if (rank == 0 && !o.quiet)
            printf("epoch %d/%d  loss %.4f  test acc %.2f%%  %.0f samples/s\n", epoch + 1, o.epochs,
                   final_loss, 100.0 * test_acc, (double)gsamples / dt);
    }
    if (o.json && rank == 0)
        printf("{\"model\": \"cnn\", \"device\": \"%s\", \"epochs\": %d, \"world_size\": %d, "
               "\"batch_size\": %d, \"optimizer\": \"%s\", \"lr\": %g, \"seed\": %llu, \"bn\": %s, \"normalize\": %s, "
               "\"train_images\": %lld, \"first_loss\": %.6f, \"final_loss\": %.6f, "
               "\"test_accuracy\": %.6f, \"train_samples_per_sec\": %.1f, \"train_seconds\": %.3f, "
               "\"steps\": %lld}\n",
               o.device, o.epochs, world, o.batch_size, o.optimizer, o.lr, (unsigned long long)o.seed,
               o.bn ? "true" : "false", o.normalize ? "true" : "false", (long long)train.n, first_loss, final_loss, test_acc,
               train_time > 0 ? (double)train_samples / train_time : 0.0, train_time, (long long)gstep);
    dg_ddp_free(ddp);
    dg_loader_free(&loader);
    dg_sampler_free(&sampler);
    dg_dataset_free(&train);
    dg_dataset_free(&test);
    dg_ctx_free(ctx);
    dg_comm_free(comm);
    return 0;
}
