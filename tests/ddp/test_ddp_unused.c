/* DDP over a graph that changes per step and per rank (define-by-run), with
 * no flag to set (PyTorch needs find_unused_parameters=True):
 *  - a branch used on some ranks only (as LayerDrop skips a block), or on
 *    none, in a given step; a layer that no rank ever uses; and a layer
 *    applied a rank-dependent number of times (uneven work, as sequences of
 *    different lengths give);
 *  - every step, the all-reduced gradient equals the average of the ranks'
 *    own gradients (each computed separately with no-sync) within 1e-6,
 *    the step never hangs (DG_COMM_TIMEOUT bounds it), the unused layer's
 *    gradient stays zero, and after the optimizer step the replicas agree
 *    bit for bit;
 *  - PyTorch's set_to_none rule: a parameter that no rank reached has no
 *    gradient (dg_param_has_grad) and the optimizer leaves it, and its
 *    momentum, alone (the branch in a step every rank skips, the layer no
 *    rank uses); one reached on any rank has a gradient on every rank; the
 *    per-parameter step counts count the steps each had one;
 *  - with overlap on and off, and buckets small enough that the unused
 *    parameters sit in buckets of their own.
 * Run under mpirun with any N (and as a plain process). */
#include "dgrad/ddp.h"
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "rank_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { IN = 8, OUT = 4, B = 5, STEPS = 8 };


typedef struct {
    dg_ctx *ctx;
    dg_module *a, *head, *never;   /* branch, classifier, a layer no rank uses */
    dg_optim *opt;
} net;

static net net_new(void) {
    net n;
    n.ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(n.ctx, 77);
    n.a = dg_nn_linear(n.ctx, IN, IN, true);
    n.never = dg_nn_linear(n.ctx, IN, OUT, true);
    n.head = dg_nn_linear(n.ctx, IN, OUT, true);
    int np;
    dg_tensor **p = dg_ctx_params(n.ctx, &np);
    dg_sgd_opts o = dg_sgd_defaults(0.05f);
    o.momentum = 0.9f;
    n.opt = dg_optim_sgd(p, np, o);
    return n;
}

/* How often rank r applies the branch in step s: 0 (skipped), 1, 2 or 3.
 * Step 3 skips it on every rank. */
static int uses(int s, int r) { return s == 3 ? 0 : (s + 2 * r) % 4; }
static bool any_uses(int s, int N) {
    for (int r = 0; r < N; r++)
        if (uses(s, r)) return true;
    return false;
}

static dg_tensor *loss_of(net *n, int s, int r) {
    float x[B * IN];
    int32_t y[B];
    unsigned k = (unsigned)(s * 131 + r * 7 + 1) * 2654435761u;
    for (int i = 0; i < B * IN; i++) {
        k = k * 1103515245u + 12345u;
        x[i] = (float)((k >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    for (int i = 0; i < B; i++) y[i] = (int32_t)((unsigned)(s + i + r) % OUT);
    int64_t xs[2] = { B, IN }, ys[1] = { B };
    dg_tensor *h = dg_tensor_from(n->ctx, DG_F32, 2, xs, x);
    for (int t = 0; t < uses(s, r); t++) h = dg_relu(dg_module_forward(n->a, h));
    return dg_cross_entropy(dg_module_forward(n->head, h), dg_tensor_from(n->ctx, DG_I32, 1, ys, y));
}

static void run(dg_comm *comm, bool overlap, size_t cap) {
    int N = dg_comm_size(comm), r = dg_comm_rank(comm);
    net n = net_new();
    dg_ddp_opts o = dg_ddp_defaults();
    o.overlap = overlap;
    o.bucket_cap_bytes = o.first_bucket_cap_bytes = cap;
    dg_ddp *ddp;
    CHECK(dg_ddp_new(&ddp, n.ctx, comm, o) == DG_OK, "dg_ddp_new: %s", dg_last_error());
    if (g_fail) return;
    size_t ng, np;
    float *g = dg_ctx_grad_buffer(n.ctx, &ng);
    float *p = dg_ctx_param_buffer(n.ctx, &np);
    float *want = malloc(ng * sizeof *want), *lo = malloc(np * sizeof *lo), *hi = malloc(np * sizeof *hi);
    dg_module_info info;
    dg_module_get_info(n.never, &info);
    dg_tensor *nw = info.weight;
    size_t never_off = dg_param_offset(nw), never_n = (size_t)dg_numel(nw);
    float never0 = p[never_off];
    dg_module_get_info(n.a, &info);
    dg_tensor *aw = info.weight, *ab = info.bias;
    size_t a_off = dg_param_offset(aw), a_n = (size_t)(dg_numel(aw) + dg_numel(ab));
    float *a_before = malloc(a_n * sizeof *a_before);
    int a_steps = 0;
    for (int s = 0; s < STEPS && !g_fail; s++) {
        /* this rank's own gradient, then the average over the ranks */
        dg_optim_zero_grad(n.opt);
        dg_ddp_set_no_sync(ddp, true);
        CHECK(dg_ddp_backward(ddp, loss_of(&n, s, r)) == DG_OK, "no-sync backward: %s", dg_last_error());
        dg_ctx_reset_step(n.ctx);
        memcpy(want, g, ng * sizeof *want);
        CHECK(dg_comm_allreduce(comm, want, ng, DG_COMM_F32, DG_COMM_SUM) == DG_OK, "%s", dg_last_error());
        for (size_t i = 0; i < ng; i++) want[i] /= (float)N;
        /* the same step through DDP */
        dg_optim_zero_grad(n.opt);
        dg_ddp_set_no_sync(ddp, false);
        CHECK(dg_ddp_backward(ddp, loss_of(&n, s, r)) == DG_OK, "step %d: %s", s, dg_last_error());
        double worst = 0;
        for (size_t i = 0; i < ng; i++) {
            double d = fabs((double)g[i] - want[i]) / (1.0 + fabs((double)want[i]));
            if (d > worst) worst = d;
        }
        CHECK(worst <= 1e-6, "step %d (branch used %d times here): gradient off the average by %.3g", s,
              uses(s, r), worst);
        for (size_t i = 0; i < never_n; i++)
            CHECK(g[never_off + i] == 0.0f, "step %d: the unused layer has a gradient", s);
        bool any = any_uses(s, N);
        CHECK(!dg_param_has_grad(nw), "step %d: the layer no rank uses has a gradient", s);
        CHECK(dg_param_has_grad(aw) == any && dg_param_has_grad(ab) == any,
              "step %d: the branch (used %d times here, on some rank: %d) has_grad %d, want %d", s, uses(s, r), any,
              dg_param_has_grad(aw), any);
        a_steps += any;
        memcpy(a_before, p + a_off, a_n * sizeof *a_before);
        dg_optim_step(n.opt);
        dg_ctx_reset_step(n.ctx);
        if (!any)
            CHECK(memcmp(a_before, p + a_off, a_n * sizeof *a_before) == 0,
                  "step %d: no rank used the branch, but the optimizer moved it (momentum)", s);
        memcpy(lo, p, np * sizeof *lo);
        memcpy(hi, p, np * sizeof *hi);
        dg_comm_allreduce(comm, lo, np, DG_COMM_F32, DG_COMM_MIN);
        dg_comm_allreduce(comm, hi, np, DG_COMM_F32, DG_COMM_MAX);
        CHECK(memcmp(lo, hi, np * sizeof *lo) == 0, "step %d: the replicas disagree", s);
    }
    CHECK(p[never_off] == never0, "the unused layer was updated");
    /* parameters: a.weight a.bias never.weight never.bias head.weight head.bias */
    int64_t want_steps[6] = { a_steps, a_steps, 0, 0, STEPS, STEPS };
    for (int i = 0; i < 6; i++)
        CHECK(dg_optim_param_step_count(n.opt, i) == want_steps[i], "parameter %d took %lld updates, want %lld", i,
              (long long)dg_optim_param_step_count(n.opt, i), (long long)want_steps[i]);
    CHECK(a_steps < STEPS, "the test needs a step where no rank uses the branch");
    free(a_before);
    dg_ddp_stats st;
    dg_ddp_get_stats(ddp, &st);
    CHECK(st.synced_steps == STEPS, "synced %lld steps, want %d", (long long)st.synced_steps, STEPS);
    free(want);
    free(lo);
    free(hi);
    dg_ddp_free(ddp);
    dg_ctx_free(n.ctx);
}

/* Uneven inputs: the last rank runs out of data one step early (a library
 * user's loop; the trainer's sampler gives every rank the same number of
 * steps). The documented behaviour: the ranks left waiting get a one-line
 * error naming the timeout (DG_COMM_TIMEOUT) instead of hanging, and the
 * program can exit. Returns 0 when that is what happens. */
static int uneven(dg_comm *comm) {
    int N = dg_comm_size(comm), r = dg_comm_rank(comm);
    if (N < 2) return 0;
    net n = net_new();
    dg_ddp *ddp;
    if (dg_ddp_new(&ddp, n.ctx, comm, dg_ddp_defaults())) return 1;
    dg_comm_set_timeout(comm, 3.0);
    int steps = r == N - 1 ? 2 : 3, rc = 0;
    for (int s = 0; s < steps; s++) {
        dg_optim_zero_grad(n.opt);
        dg_status st = dg_ddp_backward(ddp, loss_of(&n, s, r));
        dg_ctx_reset_step(n.ctx);
        if (s < 2 && st) {
            fprintf(stderr, "rank %d: FAIL: step %d: %s\n", r, s, dg_last_error());
            rc = 1;
        }
        if (s == 2) {
            const char *e = dg_last_error();
            if (!st || (!strstr(e, "timeout") && !strstr(e, "timed out"))) {
                fprintf(stderr, "rank %d: FAIL: the step the last rank never took %s (%s)\n", r,
                        st ? "failed without naming the timeout" : "succeeded", st ? e : "");
                rc = 1;
            } else {
                printf("rank %d: the step the last rank never took: %s\n", r, e);
            }
        }
    }
    dg_ddp_free(ddp);
    dg_ctx_free(n.ctx);
    return rc;
}

int main(int argc, char **argv) {
    dg_comm *comm;
    if (dg_comm_init(&comm, NULL)) {
        fprintf(stderr, "dg_comm_init: %s\n", dg_last_error());
        return 1;
    }
    g_rank = dg_comm_rank(comm);
    if (argc > 1 && !strcmp(argv[1], "--uneven")) {
        int rc = uneven(comm);
        dg_comm_free(comm);
        return rc;
    }
    run(comm, true, 25u << 20);
    run(comm, true, 64);        /* a bucket per parameter */
    run(comm, false, 64);
    int fail = rank_check_finish(comm);
    dg_comm_free(comm);
    return fail;
}
