/* zero_bench - step time of DDP + dg_optim vs ZeRO-1 (dgrad/zero.h), Adam,
 * synthetic data, batch 64 per rank, for the seed MLP (784-50-10) and a
 * larger one (784-1024-1024-10). Run it under mpirun:
 *
 *   mpirun -n 2 build/tests/zero_bench [--steps 200] [--runs 5] [--warmup 20]
 *
 * Each run times `steps` steps (forward, backward, communication, update)
 * of one mode after `warmup` untimed ones; the modes alternate run by run
 * so that slow drifts of a shared machine hit both. A run's time is the
 * slowest rank's; the table gives the median (min, max) per step over the
 * runs, the optimizer state per rank, and ZeRO's split of its step
 * between reduce-scatter, update and all-gather (medians). */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/ddp.h"
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/zero.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BATCH = 64, IN = 784, OUT = 10, MAX_RUNS = 64 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    dg_ctx *ctx;
    dg_module *model;
    dg_optim *opt;     /* DDP */
    dg_ddp *ddp;
    dg_zero *zero;
    float *x;
    int32_t *y;
} bench_net;

static void die(const char *what) {
    fprintf(stderr, "zero_bench: %s: %s\n", what, dg_last_error());
    exit(1);
}

static bench_net net_new(dg_comm *comm, int nh, const int64_t *hidden, bool zero) {
    bench_net n = { 0 };
    n.ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(n.ctx, 1);
    dg_module *l[16];
    int k = 0;
    int64_t in = IN;
    for (int i = 0; i < nh; i++) {
        l[k++] = dg_nn_linear(n.ctx, in, hidden[i], true);
        l[k++] = dg_nn_relu(n.ctx);
        in = hidden[i];
    }
    l[k++] = dg_nn_linear(n.ctx, in, OUT, true);
    n.model = dg_nn_sequential(n.ctx, k, l);
    dg_adam_opts ao = dg_adam_defaults();
    ao.lr = 1e-4f;
    if (zero) {
        dg_zero_opts zo = dg_zero_defaults(DG_ZERO_ADAM, 0);
        zo.adam = ao;
        if (dg_zero_new(&n.zero, n.ctx, comm, zo)) die("dg_zero_new");
    } else {
        int np;
        dg_tensor **p = dg_ctx_params(n.ctx, &np);
        n.opt = dg_optim_adam(p, np, ao);
        if (!n.opt || dg_ddp_new(&n.ddp, n.ctx, comm, dg_ddp_defaults())) die("dg_ddp_new");
    }
    n.x = malloc(sizeof(float) * BATCH * IN);
    n.y = malloc(sizeof(int32_t) * BATCH);
    unsigned s = 12345u + (unsigned)dg_comm_rank(comm);
    for (int i = 0; i < BATCH * IN; i++) {
        s = s * 1103515245u + 12345u;
        n.x[i] = (float)((s >> 8) & 0xffff) / 65536.0f;
    }
    for (int i = 0; i < BATCH; i++) n.y[i] = i % OUT;
    return n;
}

static void net_free(bench_net *n) {
    dg_ddp_free(n->ddp);
    dg_zero_free(n->zero);
    dg_ctx_free(n->ctx);
    free(n->x);
    free(n->y);
}

static void step(bench_net *n) {
    int64_t xs[2] = { BATCH, IN }, ys[1] = { BATCH };
    dg_tensor *x = dg_tensor_from(n->ctx, DG_F32, 2, xs, n->x);
    dg_tensor *y = dg_tensor_from(n->ctx, DG_I32, 1, ys, n->y);
    dg_tensor *loss = dg_cross_entropy(dg_module_forward(n->model, x), y);
    if (n->zero) {
        dg_zero_zero_grad(n->zero);
        if (dg_backward(loss) || dg_zero_step(n->zero)) die("zero step");
    } else {
        dg_optim_zero_grad(n->opt);
        if (dg_ddp_backward(n->ddp, loss)) die("ddp step");
        dg_optim_step(n->opt);
    }
    dg_ctx_reset_step(n->ctx);
}

/* Seconds per step of one timed run, the slowest rank's. */
static double timed_run(dg_comm *comm, bench_net *n, int warmup, int steps) {
    for (int i = 0; i < warmup; i++) step(n);
    if (dg_comm_barrier(comm)) die("barrier");
    double t0 = now();
    for (int i = 0; i < steps; i++) step(n);
    double t = (now() - t0) / steps;
    if (dg_comm_allreduce(comm, &t, 1, DG_COMM_F64, DG_COMM_MAX)) die("allreduce");
    return t;
}

int main(int argc, char **argv) {
    int steps = 200, runs = 5, warmup = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: zero_bench [--steps N] [--runs R] [--warmup W]\n");
            return 2;
        }
    }
    if (steps < 1 || runs < 1 || runs > MAX_RUNS || warmup < 0) {
        fprintf(stderr, "zero_bench: bad --steps, --runs (1..%d) or --warmup\n", MAX_RUNS);
        return 2;
    }
    dg_comm *comm;
    if (dg_comm_init(&comm, NULL)) die("dg_comm_init");
    int rank = dg_comm_rank(comm), world = dg_comm_size(comm);
    static const int64_t seed_h[] = { 50 }, large_h[] = { 1024, 1024 };
    struct { const char *name; int nh; const int64_t *h; } models[] = {
        { "784-50-10", 1, seed_h }, { "784-1024-1024-10", 2, large_h },
    };
    if (rank == 0) {
        printf("zero_bench: %d ranks (%s), Adam, batch %d per rank, %d steps x %d runs (+%d warmup)\n\n", world,
               dg_comm_backend_name(comm), BATCH, steps, runs, warmup);
        printf("| model | floats N | mode | ms/step median (min-max) | optimizer state per rank | "
               "ZeRO rs / update / ag ms |\n|---|---|---|---|---|---|\n");
    }
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        bench_net ddp = net_new(comm, models[m].nh, models[m].h, false);
        bench_net zero = net_new(comm, models[m].nh, models[m].h, true);
        double td[MAX_RUNS], tz[MAX_RUNS], rs[MAX_RUNS], up[MAX_RUNS], ag[MAX_RUNS];
        for (int r = 0; r < runs; r++) {
            bool zfirst = r % 2;
            dg_zero_stats a, b;
            if (zfirst) {
                dg_zero_get_stats(zero.zero, &a);
                tz[r] = timed_run(comm, &zero, warmup, steps);
                td[r] = timed_run(comm, &ddp, warmup, steps);
            } else {
                td[r] = timed_run(comm, &ddp, warmup, steps);
                dg_zero_get_stats(zero.zero, &a);
                tz[r] = timed_run(comm, &zero, warmup, steps);
            }
            dg_zero_get_stats(zero.zero, &b);
            double k = 1e3 / (double)(b.steps - a.steps);   /* warmup included: a per-step mean */
            rs[r] = (b.reduce_scatter_seconds - a.reduce_scatter_seconds) * k;
            up[r] = (b.update_seconds - a.update_seconds) * k;
            ag[r] = (b.allgather_seconds - a.allgather_seconds) * k;
        }
        dg_zero_stats zs;
        dg_zero_get_stats(zero.zero, &zs);
        if (rank == 0) {
            double dmin = td[0], dmax = td[0], zmin = tz[0], zmax = tz[0];
            for (int r = 1; r < runs; r++) {
                dmin = td[r] < dmin ? td[r] : dmin;
                dmax = td[r] > dmax ? td[r] : dmax;
                zmin = tz[r] < zmin ? tz[r] : zmin;
                zmax = tz[r] > zmax ? tz[r] : zmax;
            }
            double dm = median(td, runs), zm = median(tz, runs);
            printf("| %s | %lld | DDP | %.3f (%.3f-%.3f) | %zu B | |\n", models[m].name, (long long)zs.numel,
                   1e3 * dm, 1e3 * dmin, 1e3 * dmax, zs.unsharded_state_bytes);
            printf("| %s | %lld | ZeRO-1 | %.3f (%.3f-%.3f) | %zu B | %.3f / %.3f / %.3f |\n", models[m].name,
                   (long long)zs.numel, 1e3 * zm, 1e3 * zmin, 1e3 * zmax, zs.state_bytes, median(rs, runs),
                   median(up, runs), median(ag, runs));
            printf("| %s | | ZeRO/DDP | %.3f | %.3f | |\n", models[m].name, zm / dm,
                   (double)zs.state_bytes / (double)zs.unsharded_state_bytes);
        }
        net_free(&ddp);
        net_free(&zero);
    }
    dg_comm_free(comm);
    return 0;
}
