/* DDP equivalence: N ranks at per-rank batch B end with the same parameters
 * as one process at batch N*B, for SGD and Adam, with overlap on and off and
 * several bucket sizes; no-sync accumulation equals the summed gradients;
 * a model that differs between ranks is refused on every rank.
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

enum { IN = 12, HID = 16, OUT = 5, B = 3, STEPS = 6 };


/* The same synthetic data on every rank: row i of the global batch of
 * step s. */
static void make_batch(int step, int rows, int row0, float *x, int32_t *y) {
    for (int r = 0; r < rows; r++) {
        unsigned k = (unsigned)(step * 1000 + row0 + r) * 2654435761u;
        for (int j = 0; j < IN; j++) {
            k = k * 1103515245u + 12345u;
            x[r * IN + j] = (float)((k >> 8) & 0xffff) / 65536.0f - 0.5f;
        }
        y[r] = (int32_t)((k >> 20) % OUT);
    }
}

typedef struct {
    dg_ctx *ctx;
    dg_module *model;
    dg_optim *opt;
} net;

static net net_new(bool adam, bool extra_layer) {
    net n;
    n.ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(n.ctx, 1234);
    dg_module *l[5] = { dg_nn_linear(n.ctx, IN, HID, true), dg_nn_relu(n.ctx),
                        dg_nn_linear(n.ctx, HID, HID, true), dg_nn_relu(n.ctx),
                        dg_nn_linear(n.ctx, HID, OUT, true) };
    if (extra_layer) l[4] = dg_nn_linear(n.ctx, HID, OUT + 1, true);
    n.model = dg_nn_sequential(n.ctx, 5, l);
    dg_tensor **p;
    int np = dg_module_parameters(n.model, &p);
    if (adam) {
        dg_adam_opts o = dg_adam_defaults();
        o.lr = 1e-2f;
        n.opt = dg_optim_adam(p, np, o);
    } else {
        dg_sgd_opts o = dg_sgd_defaults(0.1f);
        o.momentum = 0.9f;
        n.opt = dg_optim_sgd(p, np, o);
    }
    return n;
}

static dg_tensor *loss_of(net *n, int step, int rows, int row0) {
    float x[64 * IN];
    int32_t y[64];
    make_batch(step, rows, row0, x, y);
    int64_t xs[2] = { rows, IN }, ys[1] = { rows };
    dg_tensor *tx = dg_tensor_from(n->ctx, DG_F32, 2, xs, x);
    dg_tensor *ty = dg_tensor_from(n->ctx, DG_I32, 1, ys, y);
    return dg_cross_entropy(dg_module_forward(n->model, tx), ty);
}

static double max_rel_diff(net *a, net *b) {
    size_t na, nb;
    const float *pa = dg_ctx_param_buffer(a->ctx, &na), *pb = dg_ctx_param_buffer(b->ctx, &nb);
    DG_ASSERT(na == nb);
    /* relative to the value, with a floor of 0.1 (the scale of these
     * weights) so that values crossing zero do not blow up the ratio */
    double worst = 0;
    for (size_t i = 0; i < na; i++) {
        double d = fabs((double)pa[i] - (double)pb[i]) / fmax(0.1, fabs((double)pb[i]));
        if (d > worst) worst = d;
    }
    return worst;
}

/* k steps: DDP at per-rank batch B vs one process at batch N*B. */
static void equivalence(dg_comm *comm, bool adam, bool overlap, size_t cap, bool accumulate) {
    int N = dg_comm_size(comm), rank = dg_comm_rank(comm);
    net ref = net_new(adam, false), dp = net_new(adam, false);
    /* give the ranks different initial values: DDP must broadcast rank 0's */
    if (rank > 0) dg_init_uniform(dg_ctx_params(dp.ctx, NULL)[0], -1, 1);
    dg_ddp_opts o = dg_ddp_defaults();
    o.overlap = overlap;
    o.bucket_cap_bytes = o.first_bucket_cap_bytes = cap;
    dg_ddp *ddp;
    CHECK(dg_ddp_new(&ddp, dp.ctx, comm, o) == DG_OK, "dg_ddp_new: %s", dg_last_error());
    if (g_fail) return;
    int micro = accumulate ? 2 : 1;
    for (int s = 0; s < STEPS; s++) {
        dg_optim_zero_grad(ref.opt);
        dg_optim_zero_grad(dp.opt);
        for (int m = 0; m < micro; m++) {
            int step = s * micro + m;
            CHECK(dg_backward(loss_of(&ref, step, N * B, 0)) == DG_OK, "%s", dg_last_error());
            dg_ddp_set_no_sync(ddp, m + 1 < micro);
            CHECK(dg_ddp_backward(ddp, loss_of(&dp, step, B, rank * B)) == DG_OK, "%s", dg_last_error());
        }
        dg_optim_step(ref.opt);
        dg_optim_step(dp.opt);
        dg_ctx_reset_step(ref.ctx);
        dg_ctx_reset_step(dp.ctx);
    }
    double d = max_rel_diff(&dp, &ref);
    dg_ddp_stats st;
    dg_ddp_get_stats(ddp, &st);
    CHECK(d < 1e-5, "%s overlap=%d cap=%zu accumulate=%d: max relative difference %g", adam ? "adam" : "sgd",
          overlap, cap, accumulate, d);
    /* with overlap, every bucket but the last (holding the first layer)
     * starts during backward; without, none does */
    int64_t want = overlap ? (int64_t)(st.num_buckets - 1) * STEPS : 0;
    CHECK(st.overlapped_buckets >= want && (overlap || st.overlapped_buckets == 0),
          "overlap=%d: %lld bucket reductions started during backward, want %s%lld", overlap,
          (long long)st.overlapped_buckets, overlap ? ">= " : "", (long long)want);
    CHECK(st.synced_steps == STEPS, "synced %lld steps, want %d", (long long)st.synced_steps, STEPS);
    if (rank == 0)
        printf("ok: %s overlap=%d cap=%zu accumulate=%d buckets=%d: max rel diff %.2g\n",
               adam ? "adam" : "sgd", overlap, cap, accumulate, st.num_buckets, d);
    dg_ddp_free(ddp);
    dg_ctx_free(ref.ctx);
    dg_ctx_free(dp.ctx);
}

static void mismatch(dg_comm *comm) {
    int rank = dg_comm_rank(comm);
    if (dg_comm_size(comm) < 2) return;
    net n = net_new(false, rank == 1);
    dg_ddp *ddp = NULL;
    dg_clear_error();
    dg_status st = dg_ddp_new(&ddp, n.ctx, comm, dg_ddp_defaults());
    CHECK(st == DG_ERR && strstr(dg_last_error(), "differ"), "mismatch not detected: '%s'", dg_last_error());
    if (rank == 0) printf("ok: mismatch detected on every rank: %s\n", dg_last_error());
    dg_clear_error();
    dg_ddp_free(ddp);
    dg_ctx_free(n.ctx);
}

int main(void) {
    dg_comm *comm;
    if (dg_comm_init(&comm, NULL)) {
        fprintf(stderr, "test_ddp: %s\n", dg_last_error());
        return 1;
    }
    g_rank = dg_comm_rank(comm);
    size_t caps[3] = { 64, 1200, 25u << 20 };   /* per parameter, a few, one bucket */
    for (int adam = 0; adam < 2; adam++)
        for (int overlap = 0; overlap < 2; overlap++)
            for (int c = 0; c < 3; c++) equivalence(comm, adam, overlap, caps[c], false);
    equivalence(comm, true, true, 1200, true);
    equivalence(comm, false, true, 64, true);
    mismatch(comm);
    int fail = rank_check_finish(comm);
    dg_comm_free(comm);
    return fail;
}
