/* The ViT of examples/mnist_vit with LayerDrop under DDP (issue: DDP over a
 * changing graph). Each step every rank skips the blocks its own (seed,
 * step, rank) draw says (p 0.5 here, so the ranks' graphs differ in most
 * steps), and with no flag set:
 *  - the all-reduced gradient equals the average of the ranks' gradients,
 *    each computed separately (no-sync), within 1e-5;
 *  - a block no rank ran in a step has a zero gradient;
 *  - after AdamW's step the replicas agree bit for bit (replicas_agree).
 * Run under mpirun with any N (and as a plain process). */
#include "../../examples/vit.h"

#include "dgrad/ddp.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "rank_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 4, STEPS = 8, LAYERS = 4 };


static dg_tensor *loss_of(dg_ctx *ctx, dg_module *m, int s, int r) {
    static float x[B * 28 * 28];
    int32_t y[B];
    unsigned k = (unsigned)(s * 131 + r * 7 + 1) * 2654435761u;
    for (int i = 0; i < B * 28 * 28; i++) {
        k = k * 1103515245u + 12345u;
        x[i] = (float)((k >> 8) & 0xffff) / 65536.0f;
    }
    for (int i = 0; i < B; i++) y[i] = (int32_t)((unsigned)(s + 3 * i + r) % 10);
    int64_t xs[4] = { B, 1, 28, 28 }, ys[1] = { B };
    return dg_cross_entropy(dg_module_forward(m, dg_tensor_from(ctx, DG_F32, 4, xs, x)),
                            dg_tensor_from(ctx, DG_I32, 1, ys, y));
}

int main(void) {
    dg_comm *comm;
    if (dg_comm_init(&comm, NULL)) {
        fprintf(stderr, "dg_comm_init: %s\n", dg_last_error());
        return 1;
    }
    int N = dg_comm_size(comm), r = g_rank = dg_comm_rank(comm);
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 5);
    vit_cfg cfg = { .width = 32, .layers = LAYERS, .heads = 4, .mlp = 64, .layerdrop = 0.5, .seed = 11 };
    dg_module *m = vit_build(ctx, &cfg);
    CHECK(m != NULL, "vit_build: %s", dg_last_error());
    if (!m) return 1;
    dg_module_train(m, true);
    int np;
    dg_tensor **params = dg_ctx_params(ctx, &np);
    dg_optim *opt = dg_optim_adamw(params, np, dg_adamw_defaults());
    dg_ddp *ddp;
    dg_ddp_opts o = dg_ddp_defaults();
    o.bucket_cap_bytes = o.first_bucket_cap_bytes = 4096;   /* several buckets */
    CHECK(dg_ddp_new(&ddp, ctx, comm, o) == DG_OK, "dg_ddp_new: %s", dg_last_error());
    if (g_fail) return 1;
    size_t ng, npar;
    float *g = dg_ctx_grad_buffer(ctx, &ng);
    float *p = dg_ctx_param_buffer(ctx, &npar);
    float *want = malloc(ng * sizeof *want), *lo = malloc(npar * sizeof *lo), *hi = malloc(npar * sizeof *hi);
    int differing = 0, none_ran = 0;
    for (int s = 0; s < STEPS && !g_fail; s++) {
        vit_begin_step(&cfg, s, r);
        /* which blocks ran on any rank this step */
        int ran[LAYERS];
        for (int l = 0; l < LAYERS; l++) ran[l] = !cfg.drop[l];
        int mine[LAYERS];
        memcpy(mine, ran, sizeof mine);
        dg_comm_allreduce(comm, ran, LAYERS, DG_COMM_I32, DG_COMM_SUM);
        for (int l = 0; l < LAYERS; l++) {
            differing += ran[l] != 0 && ran[l] != N;
            none_ran += ran[l] == 0;
        }
        dg_optim_zero_grad(opt);
        dg_ddp_set_no_sync(ddp, true);
        CHECK(dg_ddp_backward(ddp, loss_of(ctx, m, s, r)) == DG_OK, "no-sync backward: %s", dg_last_error());
        dg_ctx_reset_step(ctx);
        memcpy(want, g, ng * sizeof *want);
        dg_comm_allreduce(comm, want, ng, DG_COMM_F32, DG_COMM_SUM);
        for (size_t i = 0; i < ng; i++) want[i] /= (float)N;
        dg_optim_zero_grad(opt);
        dg_ddp_set_no_sync(ddp, false);
        CHECK(dg_ddp_backward(ddp, loss_of(ctx, m, s, r)) == DG_OK, "step %d: %s", s, dg_last_error());
        double worst = 0;
        for (size_t i = 0; i < ng; i++) {
            double d = fabs((double)g[i] - want[i]) / (1.0 + fabs((double)want[i]));
            if (d > worst) worst = d;
        }
        CHECK(worst <= 1e-5, "step %d (blocks run here: %d%d%d%d): gradient off the average by %.3g", s, mine[0],
              mine[1], mine[2], mine[3], worst);
        for (int l = 0; l < LAYERS; l++) {
            if (ran[l]) continue;
            dg_tensor **bp;
            int nb = dg_module_parameters(dg_module_child(m, 2 + l), &bp);
            for (int j = 0; j < nb; j++) {
                size_t off = dg_param_offset(bp[j]);
                for (int64_t i = 0; i < dg_numel(bp[j]); i++)
                    CHECK(g[off + i] == 0.0f, "step %d: block %d ran nowhere but has a gradient", s, l);
            }
        }
        dg_optim_step(opt);
        dg_ctx_reset_step(ctx);
        memcpy(lo, p, npar * sizeof *lo);
        memcpy(hi, p, npar * sizeof *hi);
        dg_comm_allreduce(comm, lo, npar, DG_COMM_F32, DG_COMM_MIN);
        dg_comm_allreduce(comm, hi, npar, DG_COMM_F32, DG_COMM_MAX);
        CHECK(memcmp(lo, hi, npar * sizeof *lo) == 0, "step %d: the replicas disagree", s);
    }
    /* the test means something only if the graphs differed across ranks */
    if (N > 1) CHECK(differing > 0, "no step had blocks run on some ranks only");
    int fail = g_fail;
    dg_comm_allreduce(comm, &fail, 1, DG_COMM_I32, DG_COMM_MAX);
    if (r == 0)
        printf("%s on %d ranks: %d (step, block) pairs ran on some ranks only, %d on none\n",
               fail ? "FAILED" : "passed", N, differing, none_ran);
    free(want);
    free(lo);
    free(hi);
    dg_ddp_free(ddp);
    dg_optim_free(opt);
    dg_ctx_free(ctx);
    dg_comm_free(comm);
    return fail;
}
