/* test_cnn_ref.c - conv2d, pooling, batch norm, schedulers and gradient
 * clipping against PyTorch 1.13 numbers (tests/fixtures/cnn.txt, made by
 * make_cnn_fixtures.py); dropout's exact cases (p = 0, p = 1, eval) and its
 * statistics; and the one-line errors for inputs that do not fit.
 * Tolerances: forward and gradients 1e-4 abs + 1e-4 rel (float32 sums in a
 * different order than PyTorch's); schedules 1e-7 rel. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/sched.h"
#include "dgrad/tensor.h"
#include "test_util.h"

#define REF_ATOL 1e-4
#define REF_RTOL 1e-4

#include "fixture.h"


/* ---- helpers ------------------------------------------------------------- */

static dg_tensor *mk(dg_ctx *ctx, const fx_tensor *t, bool grad) {
    dg_tensor *x = dg_tensor_from(ctx, DG_F32, t->ndim, t->shape, t->f);
    if (grad) x->requires_grad = true;
    return x;
}

static void cmp(const char *cs, const char *what, const dg_tensor *got, const fx_tensor *ref) {
    if (!got || !ref) {
        dgt_fail(__FILE__, __LINE__, "%s: %s missing (got %p, ref %p)", cs, what, (void *)got,
                 (const void *)ref);
        return;
    }
    if (dg_numel(got) != ref->n) {
        dgt_fail(__FILE__, __LINE__, "%s: %s has %lld elements, expected %lld", cs, what,
                 (long long)dg_numel(got), (long long)ref->n);
        return;
    }
    float *h = malloc(sizeof(float) * (size_t)(ref->n ? ref->n : 1));
    dg_tensor_to_host(got, h);
    dgt_cmp c = dgt_compare(h, ref->f, ref->n, REF_ATOL, REF_RTOL);
    if (c.bad)
        dgt_fail(__FILE__, __LINE__, "%s: %s: %lld values off (max abs %.3g, worst at %lld: %.9g vs %.9g)",
                 cs, what, (long long)c.bad, c.max_abs, (long long)c.worst, h[c.worst],
                 ref->f[c.worst]);
    free(h);
}

/* loss = sum(out * w), backward, compare out and gK. */
static void check_loss(dg_ctx *ctx, const fx_case *c, dg_tensor *out, dg_tensor **in, int nin) {
    cmp(c->name, "out", out, fx_get(c, "out"));
    if (!out) return;
    dg_tensor *loss = dg_sum(dg_mul(out, mk(ctx, fx_get(c, "w"), false)));
    CHECK(dg_backward(loss) == DG_OK);
    for (int i = 0; i < nin; i++) {
        char k[8];
        snprintf(k, sizeof k, "g%d", i);
        if (in[i]) cmp(c->name, k, in[i]->grad, fx_get(c, k));
    }
}

static void run_case(dg_ctx *ctx, const fx_case *c) {
    dg_ctx_reset_step(ctx);
    const char *op = c->op;
    if (strcmp(op, "conv2d") == 0) {
        int64_t st[2], pd[2], dl[2];
        fx_argv_ints(c, "stride", st, 2);
        fx_argv_ints(c, "padding", pd, 2);
        fx_argv_ints(c, "dilation", dl, 2);
        dg_tensor *in[3] = { mk(ctx, fx_get(c, "in0"), true), mk(ctx, fx_get(c, "in1"), true),
                             fx_get(c, "in2") ? mk(ctx, fx_get(c, "in2"), true) : NULL };
        dg_tensor *out = dg_conv2d(in[0], in[1], in[2], st, pd, dl, fx_argi(c, "groups", 1));
        check_loss(ctx, c, out, in, 3);
    } else if (strcmp(op, "max_pool2d") == 0 || strcmp(op, "avg_pool2d") == 0) {
        int64_t k[2], st[2], pd[2];
        fx_argv_ints(c, "kernel", k, 2);
        fx_argv_ints(c, "stride", st, 2);
        fx_argv_ints(c, "padding", pd, 2);
        dg_tensor *in[1] = { mk(ctx, fx_get(c, "in0"), true) };
        dg_tensor *out = op[0] == 'm' ? dg_max_pool2d(in[0], k, st, pd) : dg_avg_pool2d(in[0], k, st, pd);
        check_loss(ctx, c, out, in, 1);
    } else if (strcmp(op, "batch_norm2d") == 0) {
        bool training = fx_argi(c, "training", 0) != 0;
        dg_tensor *in[3] = { mk(ctx, fx_get(c, "in0"), true), mk(ctx, fx_get(c, "in1"), true),
                             mk(ctx, fx_get(c, "in2"), true) };
        const fx_tensor *rm = fx_get(c, "rm"), *rv = fx_get(c, "rv");
        dg_tensor *trm = dg_tensor_persistent(ctx, DG_F32, 1, rm->shape);
        dg_tensor *trv = dg_tensor_persistent(ctx, DG_F32, 1, rv->shape);
        dg_tensor_copy_from_host(trm, rm->f);
        dg_tensor_copy_from_host(trv, rv->f);
        dg_tensor *out = dg_batch_norm2d(in[0], trm, trv, in[1], in[2], training, 0.1f, 1e-5f);
        check_loss(ctx, c, out, in, 3);
        if (training) {
            dg_tensor *x2 = mk(ctx, fx_get(c, "x2"), false);
            CHECK_NOT_NULL(dg_batch_norm2d(x2, trm, trv, in[1], in[2], true, 0.1f, 1e-5f));
            cmp(c->name, "running_mean after 2 steps", trm, fx_get(c, "rm2"));
            cmp(c->name, "running_var after 2 steps", trv, fx_get(c, "rv2"));
        } else {
            cmp(c->name, "running_mean unchanged", trm, rm);
            cmp(c->name, "running_var unchanged", trv, rv);
        }
    } else if (strncmp(op, "sched_", 6) == 0) {
        int64_t one = 1;
        dg_tensor *p = dg_param_new(ctx, "p", 1, &one);
        bool adam = strcmp(op, "sched_onecycle") == 0;
        dg_optim *o = adam ? dg_optim_adam(&p, 1, (dg_adam_opts){ .lr = 0.1f, .beta1 = 0.9f,
                                                                  .beta2 = 0.999f, .eps = 1e-8f })
                           : dg_optim_sgd(&p, 1, dg_sgd_defaults(0.1f));
        dg_sched *s = NULL;
        if (strcmp(op, "sched_step") == 0) {
            s = dg_sched_step_lr(o, fx_argi(c, "step_size", 1), fx_argf(c, "gamma", 0.1));
        } else if (strcmp(op, "sched_cosine") == 0) {
            s = dg_sched_cosine(o, fx_argi(c, "t_max", 1), fx_argf(c, "eta_min", 0));
        } else {
            dg_onecycle_opts oo = dg_onecycle_defaults(fx_argf(c, "max_lr", 0), fx_argi(c, "total", 1));
            oo.anneal_cos = !fx_argi(c, "linear", 0);
            oo.three_phase = fx_argi(c, "three", 0);
            s = dg_sched_onecycle(o, oo);
        }
        CHECK_NOT_NULL(s);
        if (!s) return;
        const fx_tensor *lr = fx_get(c, "lr"), *b1 = fx_get(c, "beta1");
        for (int64_t i = 0; i < lr->n; i++) {
            CHECK_NEAR(dg_optim_get_lr(o), lr->f[i], 1e-12, 1e-6);
            if (b1) CHECK_NEAR(dg_optim_get_momentum(o), b1->f[i], 1e-12, 1e-6);
            dg_optim_step(o);
            CHECK(dg_sched_step(s) == DG_OK);
        }
        if (adam) {   /* one step past the end: PyTorch raises */
            CHECK(dg_sched_step(s) == DG_ERR);
            CHECK_CONTAINS(dg_last_error(), "total steps");
            dg_clear_error();
        }
    } else if (strcmp(op, "clip_grad_norm") == 0) {
        const fx_tensor *g0 = fx_get(c, "g0"), *g1 = fx_get(c, "g1");
        dg_tensor *p[2] = { dg_param_new(ctx, "a", g0->ndim, g0->shape),
                            dg_param_new(ctx, "b", g1->ndim, g1->shape) };
        dg_tensor_copy_from_host(p[0]->grad, g0->f);
        dg_tensor_copy_from_host(p[1]->grad, g1->f);
        float total = dg_clip_grad_norm(p, 2, (float)fx_argf(c, "max_norm", 1));
        CHECK_NEAR(total, fx_get(c, "total")->f[0], 1e-6, 1e-5);
        cmp(c->name, "clipped grad 0", p[0]->grad, fx_get(c, "c0"));
        cmp(c->name, "clipped grad 1", p[1]->grad, fx_get(c, "c1"));
    } else {
        dgt_fail(__FILE__, __LINE__, "%s: unknown op %s", c->name, op);
    }
}

static void test_fixtures(void) {
    FILE *f = fx_open("cnn.txt");
    if (!f) {
        dgt_fail(__FILE__, __LINE__, "fixture cnn.txt missing");
        return;
    }
    fx_case c;
    int r, n = 0;
    while ((r = fx_read_case(f, &c)) == 1) {
        dg_ctx *ctx = dg_ctx_new(DG_CPU);   /* one per case: params differ */
        run_case(ctx, &c);
        dg_ctx_free(ctx);
        fx_case_free(&c);
        n++;
    }
    CHECKF(r == 0, "cnn.txt: format error after %d cases", n);
    CHECKF(n >= 30, "cnn.txt: only %d cases", n);
    fclose(f);
}

/* ---- dropout ------------------------------------------------------------- */

static void test_dropout(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 7);
    int64_t s[2] = { 200, 500 };
    dg_tensor *x = dg_full(ctx, 2, s, 2.0f);
    x->requires_grad = true;
    CHECK(dg_dropout(x, 0.0f, true) == x);
    CHECK(dg_dropout(x, 0.5f, false) == x);
    dg_tensor *z = dg_dropout(x, 1.0f, true);
    CHECK_NOT_NULL(z);
    double sz = 0;
    for (int64_t i = 0; i < dg_numel(z); i++) sz += fabs(dg_item_at(z, i));
    CHECK_NEAR(sz, 0.0, 0, 0);
    /* p = 0.3: about 30% zeros, the rest 2 / 0.7; the gradient is the mask */
    dg_tensor *y = dg_dropout(x, 0.3f, true);
    int64_t zeros = 0, n = dg_numel(y);
    bool vals_ok = true;
    for (int64_t i = 0; i < n; i++) {
        float v = dg_item_at(y, i);
        if (v == 0.0f) zeros++;
        else if (fabsf(v - 2.0f / 0.7f) > 1e-5f) vals_ok = false;
    }
    CHECK(vals_ok);
    double frac = (double)zeros / (double)n, sd = sqrt(0.3 * 0.7 / (double)n);
    CHECKF(fabs(frac - 0.3) < 5 * sd, "dropout zero fraction %.4f, expected 0.3 +- %.4f", frac, 5 * sd);
    CHECK(dg_backward(dg_sum(y)) == DG_OK);
    bool grad_ok = true;
    for (int64_t i = 0; i < n; i++) {
        float g = dg_item_at(x->grad, i), v = dg_item_at(y, i);
        if (g != (v == 0.0f ? 0.0f : 1.0f / 0.7f) && fabsf(g - 1.0f / 0.7f) > 1e-6f) grad_ok = false;
    }
    CHECK(grad_ok);
    /* two calls draw different masks; the same seed gives the same mask */
    dg_manual_seed(ctx, 99);
    dg_tensor *a = dg_dropout(x, 0.5f, true), *b = dg_dropout(x, 0.5f, true);
    dg_manual_seed(ctx, 99);
    dg_tensor *a2 = dg_dropout(x, 0.5f, true);
    int64_t diff = 0, same = 0;
    for (int64_t i = 0; i < n; i++) {
        diff += dg_item_at(a, i) != dg_item_at(b, i);
        same += dg_item_at(a, i) == dg_item_at(a2, i);
    }
    CHECK(diff > n / 4);
    CHECK_EQ_INT(same, n);
    dg_clear_error();
    CHECK(dg_dropout(x, 1.5f, true) == NULL);
    CHECK_CONTAINS(dg_last_error(), "dg_dropout");
    dg_clear_error();
    dg_ctx_free(ctx);
}

/* ---- bad input --------------------------------------------------------------- */

static void expect_err(dg_tensor *got, const char *sub1, const char *sub2) {
    CHECK(got == NULL);
    const char *e = dg_last_error();
    CHECK_CONTAINS(e, sub1);
    if (sub2) CHECK_CONTAINS(e, sub2);
    CHECKF(!strchr(e, '\n'), "error is not one line: %s", e);
    dg_clear_error();
}

static void test_errors(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t xs[4] = { 2, 3, 8, 8 }, ws[4] = { 4, 2, 3, 3 }, bigw[4] = { 4, 3, 9, 9 }, ws3[4] = { 4, 3, 3, 3 };
    dg_tensor *x = dg_zeros(ctx, DG_F32, 4, xs);
    expect_err(dg_conv2d(x, dg_zeros(ctx, DG_F32, 4, ws), NULL, NULL, NULL, NULL, 1),
               "[2, 3, 8, 8]", "[4, 2, 3, 3]");
    expect_err(dg_conv2d(x, dg_zeros(ctx, DG_F32, 4, bigw), NULL, NULL, NULL, NULL, 1),
               "larger than the padded input", "[4, 3, 9, 9]");
    int64_t bad_stride[2] = { 0, 1 };
    expect_err(dg_conv2d(x, dg_zeros(ctx, DG_F32, 4, ws3), NULL, bad_stride, NULL, NULL, 1),
               "dg_conv2d", "stride (0, 1)");
    int64_t bs[1] = { 5 };
    expect_err(dg_conv2d(x, dg_zeros(ctx, DG_F32, 4, ws3), dg_zeros(ctx, DG_F32, 1, bs), NULL, NULL,
                         NULL, 1), "bias [5]", "[4, 3, 3, 3]");
    expect_err(dg_conv2d(x, dg_zeros(ctx, DG_F32, 4, ws3), NULL, NULL, NULL, NULL, 2), "groups=2", NULL);
    int64_t s2[2] = { 3, 8 };
    expect_err(dg_conv2d(dg_zeros(ctx, DG_F32, 2, s2), dg_zeros(ctx, DG_F32, 4, ws3), NULL, NULL, NULL,
                         NULL, 1), "4-D input", "[3, 8]");
    int64_t k9[2] = { 9, 9 }, k2[2] = { 2, 2 }, p2[2] = { 2, 2 };
    expect_err(dg_max_pool2d(x, k9, NULL, NULL), "dg_max_pool2d", "larger than the padded input");
    expect_err(dg_avg_pool2d(x, k2, NULL, p2), "dg_avg_pool2d", "padding (2, 2)");
    expect_err(dg_max_pool2d(x, k2, bad_stride, NULL), "stride (0, 1)", NULL);
    int64_t c4[1] = { 4 };
    expect_err(dg_batch_norm2d(x, NULL, NULL, dg_zeros(ctx, DG_F32, 1, c4), NULL, true, 0.1f, 1e-5f),
               "weight [4]", "[2, 3, 8, 8]");
    int64_t one[4] = { 1, 3, 1, 1 };
    expect_err(dg_batch_norm2d(dg_zeros(ctx, DG_F32, 4, one), NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f),
               "more than 1 value per channel", NULL);
    expect_err(dg_batch_norm2d(x, NULL, NULL, NULL, NULL, false, 0.1f, 1e-5f), "eval mode", NULL);
    dg_ctx_free(ctx);
}

/* ---- modules ------------------------------------------------------------- */

static void test_modules(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 3);
    int64_t k5[2] = { 5, 5 }, k2[2] = { 2, 2 };
    dg_module *mods[] = { dg_nn_conv2d(ctx, 1, 6, k5, NULL, NULL, NULL, 1, true),
                          dg_nn_batch_norm2d(ctx, 6), dg_nn_max_pool2d(ctx, k2, NULL, NULL),
                          dg_nn_relu(ctx), dg_nn_dropout(ctx, 0.25f), dg_nn_avg_pool2d(ctx, k2, NULL, NULL),
                          dg_nn_flatten(ctx), dg_nn_linear(ctx, 6 * 2 * 2, 10, true) };
    dg_module *net = dg_nn_sequential(ctx, 8, mods);
    CHECK_NOT_NULL(net);
    dg_tensor **ps, **bs;
    CHECK_EQ_INT(dg_module_parameters(net, &ps), 6);
    CHECK_EQ_INT(dg_module_buffers(net, &bs), 2);
    CHECK_EQ_INT(dg_numel(ps[0]), 6 * 25);
    /* kaiming bound 1/sqrt(25) */
    float mx = 0;
    for (int i = 0; i < 150; i++) mx = fmaxf(mx, fabsf(dg_item_at(ps[0], i)));
    CHECK(mx <= 0.2f && mx > 0.15f);
    CHECK_NEAR(dg_item_at(bs[1], 0), 1.0f, 0, 0);
    int64_t xs[4] = { 4, 1, 12, 12 };
    dg_tensor *x = dg_full(ctx, 4, xs, 0.5f);
    for (int i = 0; i < 4 * 144; i++) ((float *)x->data)[i] = (float)sin(i * 0.37);
    dg_tensor *y = dg_module_forward(net, x);
    CHECK_NOT_NULL(y);
    if (y) CHECK(y->ndim == 2 && y->shape[0] == 4 && y->shape[1] == 10);
    CHECK(dg_item_at(bs[0], 0) != 0.0f);   /* running mean moved */
    float rm = dg_item_at(bs[0], 0);
    dg_module_train(net, false);
    dg_tensor *y1 = dg_module_forward(net, x), *y2 = dg_module_forward(net, x);
    CHECK(y1 && y2);
    CHECK_NEAR(dg_item_at(bs[0], 0), rm, 0, 0);   /* eval: unchanged */
    if (y1 && y2) CHECK_NEAR(dg_item_at(y1, 3), dg_item_at(y2, 3), 0, 0);   /* no dropout */
    CHECK_CONTAINS(dg_module_name(mods[0]), "Conv2d(1, 6, kernel_size=(5, 5)");
    dg_ctx_free(ctx);
}

/* NaN wins a max-pool window (as in PyTorch), on the vector paths (rows
 * of 8 and 4 outputs) and the scalar one (rows of 3), and the gradient
 * goes to it. */
static void test_maxpool_nan(void) {
    for (int64_t w = 6; w <= 16; w += 2) {
        dg_ctx *ctx = dg_ctx_new(DG_CPU);
        int64_t s[4] = { 1, 1, 2, w }, k2[2] = { 2, 2 };
        dg_tensor *x = dg_tensor_new(ctx, DG_F32, 4, s);
        float v[32];
        for (int i = 0; i < 2 * w; i++) v[i] = (float)((i * 7) % 5);
        int64_t nan_at = w + 5;   /* row 1, column 5: window 2 */
        v[nan_at] = NAN;
        dg_tensor_copy_from_host(x, v);
        x->requires_grad = true;
        dg_tensor *y = dg_max_pool2d(x, k2, NULL, NULL);
        CHECK_NOT_NULL(y);
        for (int64_t o = 0; o < w / 2; o++) {
            float got = dg_item_at(y, o);
            if (o == 2) {
                CHECKF(isnan(got), "width %lld: window 2 gave %g, expected NaN", (long long)w, got);
            } else {
                float want = fmaxf(fmaxf(v[2 * o], v[2 * o + 1]), fmaxf(v[w + 2 * o], v[w + 2 * o + 1]));
                CHECKF(got == want, "width %lld: window %lld gave %g, expected %g", (long long)w,
                       (long long)o, got, want);
            }
        }
        CHECK(dg_backward(dg_sum(y)) == DG_OK);
        CHECK_NEAR(dg_item_at(x->grad, nan_at), 1.0, 0, 0);
        double total = 0;
        for (int64_t i = 0; i < 2 * w; i++) total += dg_item_at(x->grad, i);
        CHECK_NEAR(total, (double)(w / 2), 0, 0);
        dg_ctx_free(ctx);
    }
}

/* Sequential runs BatchNorm2d -> MaxPool2d(2), and the same with a ReLU
 * before or after the pool, as one op on the CPU (dg_grad_fn_name says
 * so): the same outputs and running statistics as the modules run one
 * after the other (bit for bit), and the same gradients (to rounding), for
 * rows of 8+, 4-7 and fewer than 4 outputs, in train and eval mode, with
 * the input used twice (its gradient accumulates).
 * order: 0 BN, pool; 1 BN, ReLU, pool; 2 BN, pool, ReLU. */
static void bn_pool_run(const int64_t *xs, int order, bool fused, bool train, float *out, float *gx,
                        float *gw, float *gb, float *rm) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 11);
    int64_t k2[2] = { 2, 2 }, C = xs[1], n = xs[0] * xs[1] * xs[2] * xs[3];
    dg_module *bn = dg_nn_batch_norm2d(ctx, C), *pool = dg_nn_max_pool2d(ctx, k2, NULL, NULL);
    dg_tensor **ps, **bs;
    dg_module_parameters(bn, &ps);
    dg_module_buffers(bn, &bs);
    dg_init_normal(ps[0], 1.0f, 0.5f);   /* some negative scales: the pool then picks minima of x */
    dg_init_normal(ps[1], 0.0f, 1.0f);
    dg_init_normal(bs[0], 0.0f, 0.3f);
    dg_init_uniform(bs[1], 0.5f, 2.0f);
    dg_tensor *x = dg_tensor_new(ctx, DG_F32, 4, xs);
    dg_init_normal(x, 0.5f, 2.0f);
    x->requires_grad = true;
    dg_module *relu = dg_nn_relu(ctx);
    dg_module *mods[3] = { bn, order == 1 ? relu : pool, order == 1 ? pool : relu };
    int nmods = order ? 3 : 2;
    dg_module *seq = dg_nn_sequential(ctx, nmods, mods);
    dg_module_train(seq, train);
    dg_tensor *y = x;
    if (fused) y = dg_module_forward(seq, x);
    else
        for (int i = 0; i < nmods; i++) y = dg_module_forward(mods[i], y);
    CHECK_NOT_NULL(y);
    if (!y) {
        dg_ctx_free(ctx);
        return;
    }
    static const char *const fused_name[3] = { "dg_batch_norm2d+dg_max_pool2d",
                                               "dg_batch_norm2d+dg_max_pool2d+dg_relu",
                                               "dg_batch_norm2d+dg_max_pool2d+dg_relu" };
    const char *name = dg_grad_fn_name(y), *want = fused ? fused_name[order]
                                                : order == 2 ? "dg_relu" : "dg_max_pool2d";
    CHECKF(name && !strcmp(name, want), "order %d fused %d: grad_fn %s, expected %s", order, fused,
           name ? name : "NULL", want);
    dg_tensor *wt = dg_tensor_new(ctx, DG_F32, y->ndim, y->shape);
    dg_init_normal(wt, 0.0f, 1.0f);
    dg_tensor *loss = dg_add(dg_sum(dg_mul(y, wt)), dg_sum(dg_mul_scalar(x, 0.5f)));
    CHECK(dg_backward(loss) == DG_OK);
    dg_tensor_to_host(y, out);
    dg_tensor_to_host(x->grad, gx);
    dg_tensor_to_host(ps[0]->grad, gw);
    dg_tensor_to_host(ps[1]->grad, gb);
    dg_tensor_to_host(bs[0], rm);
    dg_tensor_to_host(bs[1], rm + C);
    (void)n;
    dg_ctx_free(ctx);
}

static void check_bn_pool(const int64_t *xs, int order, bool train) {
    enum { MAX = 3 * 3 * 6 * 18 + 64 };
    static float o1[MAX], o2[MAX], x1[MAX], x2[MAX], w1[8], w2[8], b1[8], b2[8], r1[8], r2[8];
    int64_t n = xs[0] * xs[1] * xs[2] * xs[3], C = xs[1];
    DG_ASSERT(n <= MAX && C <= 4);
    bn_pool_run(xs, order, false, train, o1, x1, w1, b1, r1);
    bn_pool_run(xs, order, true, train, o2, x2, w2, b2, r2);
    int bad_out = 0, bad_rm = 0, zeros = 0;
    for (int64_t i = 0; i < n / 4; i++) {
        bad_out += memcmp(&o1[i], &o2[i], sizeof o1[i]) != 0;
        zeros += o2[i] == 0.0f;
    }
    /* with a ReLU, about half the outputs are clamped: the mask matters */
    CHECKF(!order || zeros > 0, "order %d: no output clamped", order);
    for (int64_t i = 0; i < 2 * C; i++) bad_rm += r1[i] != r2[i];
    CHECKF(bad_out == 0, "order %d train %d: %d fused outputs differ", order, train, bad_out);
    CHECKF(bad_rm == 0, "order %d train %d: running stats differ", order, train);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(x1[i] - x2[i]) / (1e-3 + fabs(x1[i])));
    for (int64_t i = 0; i < C; i++) {
        worst = fmax(worst, fabs(w1[i] - w2[i]) / (1e-3 + fabs(w1[i])));
        worst = fmax(worst, fabs(b1[i] - b2[i]) / (1e-3 + fabs(b1[i])));
    }
    CHECKF(worst < 1e-4, "order %d train %d shape %lldx%lld: fused gradients off by %.3g (relative)",
           order, train, (long long)xs[2], (long long)xs[3], worst);
}

static void test_bn_pool_fusion(void) {
    static const int64_t shapes[][4] = { { 3, 2, 4, 18 }, { 2, 3, 6, 10 }, { 4, 2, 2, 6 } };
    for (int order = 0; order < 3; order++)
        for (int s = 0; s < 3; s++)
            for (int train = 0; train < 2; train++) check_bn_pool(shapes[s], order, train);
}

int main(void) {
    test_fixtures();
    test_bn_pool_fusion();
    test_maxpool_nan();
    test_dropout();
    test_errors();
    test_modules();
    return dgt_report("test_cnn_ref");
}
