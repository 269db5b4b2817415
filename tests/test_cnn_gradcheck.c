/* test_cnn_gradcheck.c - finite-difference checks of conv2d, max/avg
 * pooling, dropout and batch norm (train and eval), alone and chained.
 *
 * For loss = sum(out * w) with fixed random w, each input element's
 * analytic gradient is compared with (L(x + eps) - L(x - eps)) / 2eps, L
 * summed in double from the float32 forward. Max pooling gets distinct
 * values spaced by more than 2 eps, so no window changes its argmax; the
 * dropout cases reseed the context before every forward, so the mask is
 * fixed. Tolerance: |num - ana| <= 2e-3 + 1e-2 * max(|num|, |ana|). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/ops.h"
#include "dgrad/tensor.h"
#include "test_util.h"

#define GC_ATOL 2e-3
#define GC_RTOL 1e-2

static dgt_rng g_rng = { 0x2545F4914F6CDD1Dull };

static double rnd(void) { return dgt_uniform(&g_rng); }   /* [0, 1) */

typedef dg_tensor *(*gc_fn)(dg_tensor **in, const void *arg);

typedef struct {
    const char *name;
    gc_fn fn;
    const void *arg;
    int nin;
    int ndim[3];
    int64_t shape[3][4];
    bool distinct;      /* inputs: a shuffled ramp (max pooling) */
    double eps;
} gc_case;

static double loss_of(dg_tensor *out, const float *w) {
    double s = 0;
    for (int64_t i = 0; i < dg_numel(out); i++) s += (double)dg_item_at(out, i) * w[i];
    return s;
}

static void run(const gc_case *c) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    float *vals[3];
    int64_t n[3];
    for (int k = 0; k < c->nin; k++) {
        n[k] = 1;
        for (int d = 0; d < c->ndim[k]; d++) n[k] *= c->shape[k][d];
        vals[k] = malloc(sizeof(float) * (size_t)n[k]);
        for (int64_t i = 0; i < n[k]; i++) vals[k][i] = (float)(rnd() * 2 - 1);
        if (c->distinct) {
            for (int64_t i = 0; i < n[k]; i++) vals[k][i] = (float)(0.05 * (double)(i - n[k] / 2));
            for (int64_t i = n[k] - 1; i > 0; i--) {
                int64_t j = (int64_t)(rnd() * (double)(i + 1));
                float t = vals[k][i];
                vals[k][i] = vals[k][j];
                vals[k][j] = t;
            }
        }
    }
    /* analytic */
    dg_tensor *in[3];
    for (int k = 0; k < c->nin; k++) {
        in[k] = dg_tensor_from(ctx, DG_F32, c->ndim[k], c->shape[k], vals[k]);
        in[k]->requires_grad = true;
    }
    dg_manual_seed(ctx, 42);
    dg_tensor *out = c->fn(in, c->arg);
    CHECK_NOT_NULL(out);
    if (!out) return;
    int64_t no = dg_numel(out);
    float *w = malloc(sizeof(float) * (size_t)no);
    for (int64_t i = 0; i < no; i++) w[i] = (float)(rnd() * 2 - 1);
    dg_tensor *wt = dg_tensor_from(ctx, DG_F32, out->ndim, out->shape, w);
    CHECK(dg_backward(dg_sum(dg_mul(out, wt))) == DG_OK);
    float *ana[3];
    for (int k = 0; k < c->nin; k++) {
        ana[k] = malloc(sizeof(float) * (size_t)n[k]);
        dg_tensor_to_host(in[k]->grad, ana[k]);
    }
    /* numeric */
    bool mode = dg_set_grad_enabled(ctx, false);
    int bad = 0;
    double worst = 0;
    for (int k = 0; k < c->nin; k++)
        for (int64_t i = 0; i < n[k]; i++) {
            double lp = 0, lm = 0;
            float v = vals[k][i];
            for (int s = 0; s < 2; s++) {
                dg_ctx_reset_step(ctx);
                vals[k][i] = s ? v - (float)c->eps : v + (float)c->eps;
                dg_tensor *tin[3];
                for (int q = 0; q < c->nin; q++)
                    tin[q] = dg_tensor_from(ctx, DG_F32, c->ndim[q], c->shape[q], vals[q]);
                dg_manual_seed(ctx, 42);
                double l = loss_of(c->fn(tin, c->arg), w);
                if (s) lm = l; else lp = l;
            }
            float hi = v + (float)c->eps, lo = v - (float)c->eps;
            vals[k][i] = v;
            double num = (lp - lm) / ((double)hi - (double)lo), a = ana[k][i];
            double err = fabs(num - a) - (GC_ATOL + GC_RTOL * fmax(fabs(num), fabs(a)));
            if (err > 0) {
                if (bad < 5)
                    fprintf(stderr, "  %s: input %d [%lld]: numeric %.6g analytic %.6g\n", c->name, k,
                            (long long)i, num, a);
                bad++;
            }
            if (err > worst) worst = err;
        }
    dg_set_grad_enabled(ctx, mode);
    CHECKF(bad == 0, "%s: %d gradient values off", c->name, bad);
    printf("%-28s ok=%d\n", c->name, bad == 0);
    for (int k = 0; k < c->nin; k++) {
        free(vals[k]);
        free(ana[k]);
    }
    free(w);
    dg_ctx_free(ctx);
}

/* ---- the functions ------------------------------------------------------- */

typedef struct { int64_t st[2], pd[2], dl[2], groups; bool bias; } conv_arg;

static dg_tensor *f_conv(dg_tensor **in, const void *arg) {
    const conv_arg *a = arg;
    return dg_conv2d(in[0], in[1], a->bias ? in[2] : NULL, a->st, a->pd, a->dl, a->groups);
}

typedef struct { int64_t k[2], st[2], pd[2]; } pool_arg;

static dg_tensor *f_max(dg_tensor **in, const void *arg) {
    const pool_arg *a = arg;
    return dg_max_pool2d(in[0], a->k, a->st, a->pd);
}

static dg_tensor *f_avg(dg_tensor **in, const void *arg) {
    const pool_arg *a = arg;
    return dg_avg_pool2d(in[0], a->k, a->st, a->pd);
}

static dg_tensor *f_dropout(dg_tensor **in, const void *arg) {
    (void)arg;
    return dg_dropout(in[0], 0.4f, true);
}

static dg_tensor *f_bn_train(dg_tensor **in, const void *arg) {
    (void)arg;
    return dg_batch_norm2d(in[0], NULL, NULL, in[1], in[2], true, 0.1f, 1e-5f);
}

static dg_tensor *f_bn_eval(dg_tensor **in, const void *arg) {
    (void)arg;
    dg_ctx *ctx = in[0]->ctx;
    int64_t c = in[0]->shape[1];
    float rm[4] = { 0.1f, -0.2f, 0.3f, 0.0f }, rv[4] = { 0.5f, 1.5f, 0.8f, 1.0f };
    dg_tensor *m = dg_tensor_from(ctx, DG_F32, 1, &c, rm), *v = dg_tensor_from(ctx, DG_F32, 1, &c, rv);
    return dg_batch_norm2d(in[0], m, v, in[1], in[2], false, 0.1f, 1e-5f);
}

/* conv -> batch norm (no affine) -> relu -> max pool -> avg pool */
static dg_tensor *f_chain(dg_tensor **in, const void *arg) {
    (void)arg;
    int64_t k2[2] = { 2, 2 }, p1[2] = { 1, 1 }, s1[2] = { 1, 1 };
    dg_tensor *y = dg_conv2d(in[0], in[1], NULL, NULL, p1, NULL, 1);
    y = dg_batch_norm2d(y, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f);
    y = dg_relu(y);
    y = dg_max_pool2d(y, k2, NULL, NULL);
    return dg_avg_pool2d(y, k2, s1, NULL);
}

int main(void) {
    static const conv_arg c1 = { { 1, 1 }, { 0, 0 }, { 1, 1 }, 1, true };
    static const conv_arg c2 = { { 2, 1 }, { 1, 2 }, { 1, 1 }, 1, true };
    static const conv_arg c3 = { { 1, 2 }, { 2, 1 }, { 2, 2 }, 1, false };
    static const conv_arg c4 = { { 1, 1 }, { 1, 1 }, { 1, 1 }, 2, true };
    static const pool_arg p1 = { { 2, 2 }, { 2, 2 }, { 0, 0 } };
    static const pool_arg p2 = { { 3, 3 }, { 2, 2 }, { 1, 1 } };
    static const pool_arg p3 = { { 3, 2 }, { 1, 2 }, { 1, 0 } };
    const gc_case cases[] = {
        { "conv2d", f_conv, &c1, 3, { 4, 4, 1 }, { { 2, 3, 6, 5 }, { 4, 3, 3, 3 }, { 4 } }, false, 1e-2 },
        { "conv2d stride pad", f_conv, &c2, 3, { 4, 4, 1 }, { { 2, 2, 7, 6 }, { 3, 2, 3, 2 }, { 3 } }, false, 1e-2 },
        { "conv2d dilation", f_conv, &c3, 2, { 4, 4 }, { { 1, 2, 8, 8 }, { 2, 2, 3, 3 } }, false, 1e-2 },
        { "conv2d groups", f_conv, &c4, 3, { 4, 4, 1 }, { { 2, 4, 5, 5 }, { 6, 2, 3, 3 }, { 6 } }, false, 1e-2 },
        { "max_pool2d 2x2", f_max, &p1, 1, { 4 }, { { 2, 3, 6, 7 } }, true, 1e-3 },
        { "max_pool2d 3x3 s2 p1", f_max, &p2, 1, { 4 }, { { 2, 2, 7, 6 } }, true, 1e-3 },
        { "avg_pool2d 2x2", f_avg, &p1, 1, { 4 }, { { 2, 3, 6, 7 } }, false, 1e-2 },
        { "avg_pool2d 3x2 s(1,2) p(1,0)", f_avg, &p3, 1, { 4 }, { { 2, 2, 7, 6 } }, false, 1e-2 },
        { "dropout", f_dropout, NULL, 1, { 4 }, { { 2, 3, 4, 5 } }, false, 1e-2 },
        { "batch_norm2d train", f_bn_train, NULL, 3, { 4, 1, 1 }, { { 3, 4, 3, 2 }, { 4 }, { 4 } }, false, 1e-2 },
        { "batch_norm2d eval", f_bn_eval, NULL, 3, { 4, 1, 1 }, { { 3, 4, 3, 2 }, { 4 }, { 4 } }, false, 1e-2 },
        { "conv-bn-relu-pools", f_chain, NULL, 2, { 4, 4 }, { { 2, 2, 6, 6 }, { 3, 2, 3, 3 } }, false, 1e-3 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run(&cases[i]);
    return dgt_report("test_cnn_gradcheck");
}
