/* test_cnn_cuda.c - the CUDA kernels of convolutional nets against the CPU
 * backend: conv2d (stride, padding, dilation, groups), max and average
 * pooling, dropout (the same counter-based mask on both devices, so exact),
 * batch norm train (with the running stats) and eval, forward and backward
 * through the public API from the same host values, loss sum(out * w).
 * |cuda - cpu| <= 1e-4 + 1e-4 |cpu|. Then a small CNN (conv, batch norm,
 * pool, dropout, linear) takes 20 Adam steps on both devices: losses within
 * 1e-3 relative.
 *
 * Usage: test_cnn_cuda   (exit 77 = skipped: no GPU)
 *        test_cnn_cuda --self-check   the same comparisons CPU against CPU
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/tensor.h"
#include "test_util.h"

#define TOL 1e-4

static dg_device g_dev = DG_CUDA;
static dgt_rng g_rng = { 0x243F6A8885A308D3ull };

static float rnd(void) { return (float)(dgt_uniform(&g_rng) * 2.0 - 1.0); }   /* [-1, 1) */

typedef dg_tensor *(*fn_t)(dg_tensor **in, dg_tensor **bufs, const void *arg);

typedef struct {
    const char *name;
    fn_t fn;
    const void *arg;
    int nin;
    int ndim[3];
    int64_t shape[3][4];
    int nbufs;            /* batch norm running stats: [C] each */
    int64_t buf_c;
} op_case;

static void compare(const char *cs, const char *what, const dg_tensor *a, const dg_tensor *b) {
    if (!a || !b) {
        dgt_fail(__FILE__, __LINE__, "%s: %s missing", cs, what);
        return;
    }
    int64_t n = dg_numel(a);
    float *ha = malloc(sizeof(float) * (size_t)n), *hb = malloc(sizeof(float) * (size_t)n);
    dg_tensor_to_host(a, ha);
    dg_tensor_to_host(b, hb);
    dgt_cmp c = dgt_compare(hb, ha, n, TOL, TOL);
    if (c.bad)
        dgt_fail(__FILE__, __LINE__, "%s: %s: %lld of %lld values off (max abs %.3g; at %lld cpu %.9g dev %.9g)",
                 cs, what, (long long)c.bad, (long long)n, c.max_abs, (long long)c.worst, ha[c.worst],
                 hb[c.worst]);
    free(ha);
    free(hb);
}

static void run_case(const op_case *c) {
    dg_ctx *ctx[2] = { dg_ctx_new(DG_CPU), dg_ctx_new(g_dev) };
    float *vals[3];
    for (int k = 0; k < c->nin; k++) {
        int64_t n = 1;
        for (int d = 0; d < c->ndim[k]; d++) n *= c->shape[k][d];
        vals[k] = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++) vals[k][i] = rnd();
    }
    dg_tensor *in[2][3], *bufs[2][2], *out[2];
    float *w = NULL;
    for (int d = 0; d < 2; d++) {
        dg_manual_seed(ctx[d], 5);
        for (int k = 0; k < c->nin; k++) {
            in[d][k] = dg_param_new(ctx[d], "in", c->ndim[k], c->shape[k]);
            dg_tensor_copy_from_host(in[d][k], vals[k]);
        }
        for (int b = 0; b < c->nbufs; b++) {
            bufs[d][b] = dg_tensor_persistent(ctx[d], DG_F32, 1, &c->buf_c);
            float init[64];
            for (int64_t i = 0; i < c->buf_c; i++) init[i] = b ? 0.5f + 0.1f * (float)i : 0.1f * (float)i;
            dg_tensor_copy_from_host(bufs[d][b], init);
        }
        out[d] = c->fn(in[d], bufs[d], c->arg);
        CHECK_NOT_NULL(out[d]);
        if (!out[d]) goto done;
        if (!w) {
            w = malloc(sizeof(float) * (size_t)dg_numel(out[d]));
            for (int64_t i = 0; i < dg_numel(out[d]); i++) w[i] = rnd();
        }
        dg_tensor *wt = dg_tensor_from(ctx[d], DG_F32, out[d]->ndim, out[d]->shape, w);
        CHECK(dg_backward(dg_sum(dg_mul(out[d], wt))) == DG_OK);
    }
    compare(c->name, "forward", out[0], out[1]);
    for (int k = 0; k < c->nin; k++) compare(c->name, "gradient", in[0][k]->grad, in[1][k]->grad);
    for (int b = 0; b < c->nbufs; b++) compare(c->name, "running stat", bufs[0][b], bufs[1][b]);
    printf("%-24s compared\n", c->name);
done:
    for (int k = 0; k < c->nin; k++) free(vals[k]);
    free(w);
    dg_ctx_free(ctx[0]);
    dg_ctx_free(ctx[1]);
}

typedef struct { int64_t st[2], pd[2], dl[2], groups; } conv_arg;
typedef struct { int64_t k[2], st[2], pd[2]; } pool_arg;

static dg_tensor *f_conv(dg_tensor **in, dg_tensor **b, const void *arg) {
    const conv_arg *a = arg;
    (void)b;
    return dg_conv2d(in[0], in[1], in[2], a->st, a->pd, a->dl, a->groups);
}
static dg_tensor *f_max(dg_tensor **in, dg_tensor **b, const void *arg) {
    const pool_arg *a = arg;
    (void)b;
    return dg_max_pool2d(in[0], a->k, a->st, a->pd);
}
static dg_tensor *f_avg(dg_tensor **in, dg_tensor **b, const void *arg) {
    const pool_arg *a = arg;
    (void)b;
    return dg_avg_pool2d(in[0], a->k, a->st, a->pd);
}
static dg_tensor *f_dropout(dg_tensor **in, dg_tensor **b, const void *arg) {
    (void)b;
    (void)arg;
    return dg_dropout(in[0], 0.3f, true);
}
static dg_tensor *f_bn(dg_tensor **in, dg_tensor **b, const void *arg) {
    bool training = arg != NULL;
    dg_tensor *y = dg_batch_norm2d(in[0], b[0], b[1], in[1], in[2], training, 0.1f, 1e-5f);
    if (training) y = dg_batch_norm2d(y, b[0], b[1], in[1], in[2], true, 0.1f, 1e-5f);   /* 2 steps */
    return y;
}

/* A small CNN, 20 Adam steps on synthetic data: the losses agree. */
static void test_training(void) {
    float loss[2][20];
    dgt_rng save = g_rng;
    for (int d = 0; d < 2; d++) {
        g_rng = save;   /* the same batches on both devices */
        dg_ctx *ctx = dg_ctx_new(d ? g_dev : DG_CPU);
        dg_manual_seed(ctx, 11);
        int64_t k3[2] = { 3, 3 }, k2[2] = { 2, 2 }, p1[2] = { 1, 1 };
        dg_module *m[] = { dg_nn_conv2d(ctx, 1, 8, k3, NULL, p1, NULL, 1, false), dg_nn_batch_norm2d(ctx, 8),
                           dg_nn_relu(ctx), dg_nn_max_pool2d(ctx, k2, NULL, NULL),
                           dg_nn_conv2d(ctx, 8, 8, k3, NULL, NULL, NULL, 2, true), dg_nn_relu(ctx),
                           dg_nn_avg_pool2d(ctx, k2, NULL, NULL), dg_nn_flatten(ctx), dg_nn_dropout(ctx, 0.2f),
                           dg_nn_linear(ctx, 8 * 2 * 2, 10, true) };
        dg_module *net = dg_nn_sequential(ctx, 10, m);
        dg_tensor **ps;
        int np = dg_module_parameters(net, &ps);
        dg_optim *opt = dg_optim_adam(ps, np, dg_adam_defaults());
        for (int s = 0; s < 20; s++) {
            float x[32 * 144];
            int32_t y[32];
            for (int i = 0; i < 32 * 144; i++) x[i] = rnd();
            for (int i = 0; i < 32; i++) y[i] = (int32_t)((rnd() + 1.0f) * 4.99f);
            int64_t xs[4] = { 32, 1, 12, 12 }, ys = 32;
            dg_tensor *l = dg_cross_entropy(dg_module_forward(net, dg_tensor_from(ctx, DG_F32, 4, xs, x)),
                                            dg_tensor_from(ctx, DG_I32, 1, &ys, y));
            CHECK_NOT_NULL(l);
            if (!l) break;
            dg_optim_zero_grad(opt);
            CHECK(dg_backward(l) == DG_OK);
            dg_optim_step(opt);
            loss[d][s] = dg_item(l);
            dg_ctx_reset_step(ctx);
        }
        dg_ctx_free(ctx);
    }
    for (int s = 0; s < 20; s++) CHECK_NEAR(loss[1][s], loss[0][s], 1e-4, 1e-3);
    printf("training: loss %.4f -> %.4f on both devices\n", loss[0][0], loss[0][19]);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--self-check")) g_dev = DG_CPU;
    dg_ctx *probe = dg_ctx_new(g_dev);
    if (!probe) {
        printf("test_cnn_cuda: skipped: %s\n", dg_last_error());
        return 77;
    }
    dg_ctx_free(probe);
    static const conv_arg c1 = { { 1, 1 }, { 0, 0 }, { 1, 1 }, 1 }, c2 = { { 2, 1 }, { 1, 2 }, { 1, 1 }, 1 },
                          c3 = { { 1, 2 }, { 2, 1 }, { 2, 2 }, 1 }, c4 = { { 1, 1 }, { 1, 1 }, { 1, 1 }, 2 };
    static const pool_arg p1 = { { 2, 2 }, { 2, 2 }, { 0, 0 } }, p2 = { { 3, 3 }, { 2, 2 }, { 1, 1 } },
                          p3 = { { 3, 2 }, { 1, 2 }, { 1, 0 } };
    static const int yes = 1;
    const op_case cases[] = {
        { "conv2d", f_conv, &c1, 3, { 4, 4, 1 }, { { 4, 3, 12, 11 }, { 8, 3, 3, 3 }, { 8 } }, 0, 0 },
        { "conv2d mnist 5x5", f_conv, &c1, 3, { 4, 4, 1 }, { { 64, 1, 28, 28 }, { 24, 1, 5, 5 }, { 24 } }, 0, 0 },
        { "conv2d stride pad", f_conv, &c2, 3, { 4, 4, 1 }, { { 3, 2, 9, 8 }, { 5, 2, 3, 2 }, { 5 } }, 0, 0 },
        { "conv2d dilation", f_conv, &c3, 3, { 4, 4, 1 }, { { 2, 2, 10, 10 }, { 4, 2, 3, 3 }, { 4 } }, 0, 0 },
        { "conv2d groups", f_conv, &c4, 3, { 4, 4, 1 }, { { 3, 4, 7, 7 }, { 6, 2, 3, 3 }, { 6 } }, 0, 0 },
        { "max_pool2d 2x2", f_max, &p1, 1, { 4 }, { { 4, 3, 10, 9 } }, 0, 0 },
        { "max_pool2d 3x3 s2 p1", f_max, &p2, 1, { 4 }, { { 2, 3, 9, 8 } }, 0, 0 },
        { "max_pool2d 3x2 s(1,2)", f_max, &p3, 1, { 4 }, { { 2, 3, 9, 8 } }, 0, 0 },
        { "avg_pool2d 2x2", f_avg, &p1, 1, { 4 }, { { 4, 3, 10, 9 } }, 0, 0 },
        { "avg_pool2d 3x3 s2 p1", f_avg, &p2, 1, { 4 }, { { 2, 3, 9, 8 } }, 0, 0 },
        { "dropout", f_dropout, NULL, 1, { 4 }, { { 4, 3, 10, 9 } }, 0, 0 },
        { "batch_norm2d train", f_bn, &yes, 3, { 4, 1, 1 }, { { 8, 5, 6, 7 }, { 5 }, { 5 } }, 2, 5 },
        { "batch_norm2d eval", f_bn, NULL, 3, { 4, 1, 1 }, { { 8, 5, 6, 7 }, { 5 }, { 5 } }, 2, 5 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    test_training();
    return dgt_report("test_cnn_cuda");
}
