/* bfloat16 gradient all-reduce (dg_ddp_opts.bf16_compress, DG_COMM_BF16):
 *  - dg_comm_allreduce on DG_COMM_BF16: SUM and AVG of values every rank
 *    knows, bit for bit against the rule written out here for 1 and 2
 *    ranks (round each addend, add in float, round; AVG divides in float
 *    and rounds), within W - 1 roundings of the float sum beyond; MAX and
 *    MIN are refused with a message naming bfloat16;
 *  - DDP with bf16_compress: at every step the reduced gradient is the
 *    bf16 average of the ranks' own fp32 gradients (computed separately
 *    with no-sync and gathered), bit for bit at 1 and 2 ranks and within
 *    the rounding bound at more; every value is a bfloat16; the replicas
 *    agree bit for bit after the optimizer step; half the bytes per step.
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

enum { IN = 12, HID = 16, OUT = 5, B = 7, STEPS = 6, NV = 1000 };


/* The rule, written out: float -> bf16 to nearest even, and back. */
static uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);   /* finite inputs only */
}
static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
static bool is_bf16(float x) { return from_bf16(to_bf16(x)) == x; }

static float value(int r, int i) { return sinf(0.37f * (float)i + 1.1f * (float)r) * (1.0f + (float)(i % 13)); }

static void comm_bf16(dg_comm *comm) {
    int N = dg_comm_size(comm), r = dg_comm_rank(comm);
    uint16_t sum[NV], avg[NV];
    for (int i = 0; i < NV; i++) sum[i] = avg[i] = to_bf16(value(r, i));
    CHECK(dg_comm_allreduce(comm, sum, NV, DG_COMM_BF16, DG_COMM_SUM) == DG_OK, "%s", dg_last_error());
    CHECK(dg_comm_allreduce(comm, avg, NV, DG_COMM_BF16, DG_COMM_AVG) == DG_OK, "%s", dg_last_error());
    double worst = 0;
    for (int i = 0; i < NV; i++) {
        float exact = 0, mag = 0;
        for (int k = 0; k < N; k++) {
            exact += from_bf16(to_bf16(value(k, i)));
            mag += fabsf(from_bf16(to_bf16(value(k, i))));
        }
        if (N <= 2) {
            uint16_t want = to_bf16(exact);   /* one addition, one rounding */
            CHECK(sum[i] == want, "SUM[%d] = %a, want %a", i, (double)from_bf16(sum[i]), (double)from_bf16(want));
            CHECK(avg[i] == to_bf16(from_bf16(want) / (float)N), "AVG[%d] = %a", i, (double)from_bf16(avg[i]));
        }
        double err = fabs((double)from_bf16(sum[i]) - exact) / (mag + 1e-30);
        if (err > worst) worst = err;
    }
    CHECK(worst <= (N > 1 ? N - 1 : 1) * 0x1p-8, "SUM off the float sum by %.3g of the magnitude", worst);
    uint16_t one = to_bf16(1.0f);
    dg_clear_error();
    CHECK(dg_comm_allreduce(comm, &one, 1, DG_COMM_BF16, DG_COMM_MAX) == DG_ERR &&
              strstr(dg_last_error(), "bfloat16 reduces with SUM or AVG only, not MAX"),
          "MAX on bf16: %s", dg_last_error());
    dg_clear_error();
    if (g_rank == 0) printf("ok: DG_COMM_BF16 SUM/AVG of %d values over %d ranks (worst %.3g)\n", NV, N, worst);
}

typedef struct {
    dg_ctx *ctx;
    dg_module *net;
    dg_optim *opt;
} net;

static net net_new(void) {
    net n;
    n.ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(n.ctx, 5);
    dg_module *m[3] = { dg_nn_linear(n.ctx, IN, HID, true), dg_nn_relu(n.ctx), dg_nn_linear(n.ctx, HID, OUT, true) };
    n.net = dg_nn_sequential(n.ctx, 3, m);
    int np;
    dg_tensor **p = dg_ctx_params(n.ctx, &np);
    n.opt = dg_optim_adam(p, np, dg_adam_defaults());
    return n;
}

static dg_tensor *loss_of(net *n, int s, int r) {
    float x[B * IN];
    int32_t y[B];
    for (int i = 0; i < B * IN; i++) x[i] = value(r + 3 * s, i);
    for (int i = 0; i < B; i++) y[i] = (int32_t)((unsigned)(s + i + r) % OUT);
    int64_t xs[2] = { B, IN }, ys[1] = { B };
    return dg_cross_entropy(dg_module_forward(n->net, dg_tensor_from(n->ctx, DG_F32, 2, xs, x)),
                            dg_tensor_from(n->ctx, DG_I32, 1, ys, y));
}

static void ddp_bf16(dg_comm *comm, size_t cap) {
    int N = dg_comm_size(comm), r = dg_comm_rank(comm);
    net n = net_new();
    dg_ddp_opts o = dg_ddp_defaults();
    o.bf16_compress = true;
    o.bucket_cap_bytes = o.first_bucket_cap_bytes = cap;
    dg_ddp *ddp;
    CHECK(dg_ddp_new(&ddp, n.ctx, comm, o) == DG_OK, "dg_ddp_new: %s", dg_last_error());
    if (g_fail) return;
    size_t ng, np;
    float *g = dg_ctx_grad_buffer(n.ctx, &ng);
    float *p = dg_ctx_param_buffer(n.ctx, &np);
    float *all = malloc(ng * (size_t)N * sizeof *all), *lo = malloc(np * sizeof *lo), *hi = malloc(np * sizeof *hi);
    for (int s = 0; s < STEPS && !g_fail; s++) {
        dg_optim_zero_grad(n.opt);
        dg_ddp_set_no_sync(ddp, true);
        CHECK(dg_ddp_backward(ddp, loss_of(&n, s, r)) == DG_OK, "no-sync backward: %s", dg_last_error());
        dg_ctx_reset_step(n.ctx);
        CHECK(dg_comm_allgather(comm, g, all, ng, DG_COMM_F32) == DG_OK, "%s", dg_last_error());
        dg_optim_zero_grad(n.opt);
        dg_ddp_set_no_sync(ddp, false);
        CHECK(dg_ddp_backward(ddp, loss_of(&n, s, r)) == DG_OK, "step %d: %s", s, dg_last_error());
        double worst = 0;
        int mismatches = 0, not_bf16 = 0;
        for (size_t i = 0; i < ng; i++) {
            float rounded = 0, mag = 0;   /* sum of the bf16 addends; of their magnitudes */
            double exact = 0;             /* the fp32 gradients' sum */
            for (int k = 0; k < N; k++) {
                rounded += from_bf16(to_bf16(all[(size_t)k * ng + i]));
                mag += fabsf(all[(size_t)k * ng + i]);
                exact += all[(size_t)k * ng + i];
            }
            if (N <= 2 && g[i] != from_bf16(to_bf16(from_bf16(to_bf16(rounded)) / (float)N))) mismatches++;
            not_bf16 += !is_bf16(g[i]);
            double err = fabs((double)g[i] - exact / N) / (mag / N + 1e-30);
            if (err > worst) worst = err;
        }
        CHECK(mismatches == 0, "step %d: %d gradients differ from the bf16 average written out", s, mismatches);
        CHECK(not_bf16 == 0, "step %d: %d gradients are not bfloat16 values", s, not_bf16);
        CHECK(worst <= (N + 1) * 0x1p-8, "step %d: gradient off the fp32 average by %.3g of the magnitude", s,
              worst);
        dg_optim_step(n.opt);
        dg_ctx_reset_step(n.ctx);
        memcpy(lo, p, np * sizeof *lo);
        memcpy(hi, p, np * sizeof *hi);
        dg_comm_allreduce(comm, lo, np, DG_COMM_F32, DG_COMM_MIN);
        dg_comm_allreduce(comm, hi, np, DG_COMM_F32, DG_COMM_MAX);
        CHECK(memcmp(lo, hi, np * sizeof *lo) == 0, "step %d: the replicas disagree", s);
    }
    dg_ddp_stats st;
    dg_ddp_get_stats(ddp, &st);
    CHECK(st.bytes_per_step == ng * 2, "bytes per step %zu, want %zu (bf16)", st.bytes_per_step, ng * 2);
    if (g_rank == 0)
        printf("ok: DDP bf16_compress, %d buckets, %d steps on %d ranks: gradients are the bf16 average\n",
               st.num_buckets, STEPS, N);
    free(all);
    free(lo);
    free(hi);
    dg_ddp_free(ddp);
    dg_ctx_free(n.ctx);
}

int main(void) {
    dg_comm *comm;
    if (dg_comm_init(&comm, NULL)) {
        fprintf(stderr, "dg_comm_init: %s\n", dg_last_error());
        return 1;
    }
    g_rank = dg_comm_rank(comm);
    comm_bf16(comm);
    ddp_bf16(comm, 25u << 20);
    ddp_bf16(comm, 256);   /* several buckets */
    int fail = rank_check_finish(comm);
    dg_comm_free(comm);
    return fail;
}
