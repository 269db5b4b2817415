/* test_cuda.c - the CUDA backend against the CPU backend.
 *
 * Every op, forward and backward, is built through the public API on a
 * DG_CPU context and on a DG_CUDA context from the same host values (inputs
 * are parameters, copied in with dg_tensor_copy_from_host; the loss is
 * sum(out * w) with a fixed random w). Outputs, the loss and every input
 * gradient must agree within |cuda - cpu| <= atol + rtol * |cpu|, with
 * rtol 1e-4 and atol 1e-5 unless a case states more (long reductions and
 * large matmuls: atol 1e-4, as summation order differs). Argmax must match
 * exactly. Then SGD and Adam variants take 5 steps on both devices (params
 * within rtol 1e-5, atol 1e-6), a bad label must give the same error, the
 * arena must stop allocating device memory after the first steps, and the
 * MNIST MLP (784-50-10, Adam lr 1e-4, batch 64; real MNIST from DG_MNIST_DIR
 * if set, else synthetic) trains 300 steps on both devices: every step's
 * loss within 5e-4 + 5e-4 * |cpu| (float rounding differences grow slowly
 * through training; --self-check measures that growth on the CPU alone).
 *
 * Usage: test_cuda                 the test (exit 77 = skipped: no GPU)
 *        test_cuda --expect-no-device   passes when dg_ctx_new(DG_CUDA)
 *                                       fails cleanly (no GPU, or no CUDA build)
 *        test_cuda --self-check    the same comparisons CPU against CPU, and
 *                                  the MLP against a 1-ulp perturbed start
 *        test_cuda --ops-only      ops, bad labels and optimizers, no MLP
 *                                  training (quick, for compute-sanitizer)
 *        test_cuda --bench [cpu|cuda|cuda-graph|cuda-readback]   steps/s of the MLP training
 *                                       step (batch 64, synthetic data on device);
 *                                       cuda-graph: the step captured once after
 *                                       the warm-up and replayed (dgrad/graph.h);
 *                                       cuda-readback: labels of unknown range,
 *                                       read back from the GPU each step
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dgrad/data.h"
#include "dgrad/graph.h"
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/tensor.h"
#include "test_util.h"

#define RTOL 1e-4
#define ATOL 1e-5

static dg_device g_ref = DG_CPU, g_dev = DG_CUDA;
static bool g_perturb;   /* --self-check: perturb the MLP's start by 1 ulp */

/* ---- deterministic host values ------------------------------------------------- */

static dgt_rng g_rng = { 0x243F6A8885A308D3ull };

static dg_ctx *ctx_new(dg_device dev) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(dev);
    DG_ASSERT(ctx != NULL);
    return ctx;
}

static void compare(const char *what, const char *name, const float *got, const float *ref,
                    int64_t n, double atol, double rtol) {
    dgt_cmp c = dgt_compare(got, ref, n, atol, rtol);
    CHECKF(c.bad == 0, "%s %s: %lld of %lld values differ (worst [%lld]: %.9g vs %.9g; "
           "max abs %.3g, max rel %.3g; atol %g rtol %g)", name, what, (long long)c.bad,
           (long long)n, (long long)c.worst, c.worst >= 0 ? got[c.worst] : 0.0,
           c.worst >= 0 ? ref[c.worst] : 0.0, c.max_abs, c.max_rel, atol, rtol);
}

/* ---- op cases ---------------------------------------------------------------------- */

typedef enum {
    OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_ADD_SCALAR, OP_MUL_SCALAR, OP_NEG,
    OP_RELU, OP_EXP, OP_LOG, OP_MATMUL, OP_T_MATMUL, OP_LINEAR, OP_SUM, OP_MEAN,
    OP_SUM_DIMS, OP_MEAN_DIMS, OP_SOFTMAX, OP_LOG_SOFTMAX, OP_CE, OP_CE_IGNORE, OP_ARGMAX,
    OP_RESHAPE, OP_FLATTEN, OP_TRANSPOSE, OP_PERMUTE, OP_SLICE, OP_CONTIG_T, OP_SLICE_EXP,
    OP_MLP,
} op_kind;

typedef struct {
    const char *name;
    op_kind op;
    const char *shape[4];   /* NULL: no such input; "": 0-dim */
    dgt_vkind kind[4];
    int a[6];               /* op arguments */
    double atol;            /* 0: ATOL */
} op_case;

static const op_case k_cases[] = {
    {"add bcast", OP_ADD, {"4,3,5", "3,1"}, {DGT_N, DGT_N}, {0}, 0},
    {"add scalar tensor", OP_ADD, {"2,3", ""}, {DGT_N, DGT_N}, {0}, 0},
    {"sub row", OP_SUB, {"3,4", "4"}, {DGT_N, DGT_N}, {0}, 0},
    {"sub row first", OP_SUB, {"4", "3,4"}, {DGT_N, DGT_N}, {0}, 0},
    {"mul bcast both", OP_MUL, {"4,1,5", "3,5"}, {DGT_N, DGT_N}, {0}, 0},
    {"mul large", OP_MUL, {"300,257", "257"}, {DGT_N, DGT_N}, {0}, 1e-4},
    {"div col", OP_DIV, {"3,4", "3,1"}, {DGT_N, DGT_AWAY}, {0}, 0},
    {"div scalar", OP_DIV, {"6", ""}, {DGT_N, DGT_AWAY}, {0}, 0},
    {"add_scalar", OP_ADD_SCALAR, {"3,4"}, {DGT_N}, {0}, 0},
    {"mul_scalar", OP_MUL_SCALAR, {"3,4"}, {DGT_N}, {0}, 0},
    {"neg", OP_NEG, {"5"}, {DGT_N}, {0}, 0},
    {"relu", OP_RELU, {"4,6"}, {DGT_KINK}, {0}, 0},
    {"exp", OP_EXP, {"4,6"}, {DGT_N}, {0}, 0},
    {"log", OP_LOG, {"4,6"}, {DGT_POS}, {0}, 0},
    {"matmul 2d", OP_MATMUL, {"5,7", "7,3"}, {DGT_N, DGT_N}, {0}, 0},
    {"matmul batched", OP_MATMUL, {"2,5,7", "7,3"}, {DGT_N, DGT_N}, {0}, 0},
    {"matmul bcast batch", OP_MATMUL, {"2,1,4,6", "3,6,2"}, {DGT_N, DGT_N}, {0}, 0},
    {"matmul vec left", OP_MATMUL, {"7", "7,3"}, {DGT_N, DGT_N}, {0}, 0},
    {"matmul vec right", OP_MATMUL, {"5,7", "7"}, {DGT_N, DGT_N}, {0}, 0},
    {"matmul large", OP_MATMUL, {"96,300", "300,70"}, {DGT_N, DGT_N}, {0}, 1e-4},
    {"matmul transposed", OP_T_MATMUL, {"7,5", "3,7"}, {DGT_N, DGT_N}, {0}, 0},
    {"linear", OP_LINEAR, {"6,8", "4,8", "4"}, {DGT_N, DGT_N, DGT_N}, {0}, 0},
    {"linear 3d", OP_LINEAR, {"2,3,8", "4,8", "4"}, {DGT_N, DGT_N, DGT_N}, {0}, 0},
    {"linear no bias", OP_LINEAR, {"6,8", "4,8"}, {DGT_N, DGT_N}, {0}, 0},
    {"linear mnist", OP_LINEAR, {"64,784", "50,784", "50"}, {DGT_POS, DGT_N, DGT_N}, {0}, 1e-4},
    {"sum", OP_SUM, {"3,4,5"}, {DGT_N}, {0}, 0},
    {"sum long", OP_SUM, {"5000"}, {DGT_N}, {0}, 1e-4},
    {"mean", OP_MEAN, {"3,4,5"}, {DGT_N}, {0}, 0},
    {"sum_dims rows", OP_SUM_DIMS, {"3,1000"}, {DGT_N}, {1, 1, 0, 0, 0}, 1e-4},
    {"sum_dims short rows", OP_SUM_DIMS, {"50,7"}, {DGT_N}, {1, 1, 0, 0, 0}, 0},
    {"sum_dims cols", OP_SUM_DIMS, {"1000,3"}, {DGT_N}, {1, 0, 0, 0, 0}, 1e-4},
    {"sum_dims 0,2 keepdim", OP_SUM_DIMS, {"3,4,5"}, {DGT_N}, {2, 0, 2, 0, 1}, 0},
    {"mean_dims last", OP_MEAN_DIMS, {"4,6"}, {DGT_N}, {1, -1, 0, 0, 0}, 0},
    {"softmax rows", OP_SOFTMAX, {"5,40"}, {DGT_N}, {-1}, 0},
    {"softmax inner", OP_SOFTMAX, {"2,6,3"}, {DGT_N}, {1}, 0},
    {"log_softmax long rows", OP_LOG_SOFTMAX, {"7,1000"}, {DGT_N}, {-1}, 0},
    {"log_softmax dim 0", OP_LOG_SOFTMAX, {"5,4"}, {DGT_N}, {0}, 0},
    {"cross_entropy", OP_CE, {"8,10"}, {DGT_N}, {0}, 0},
    {"cross_entropy 1000 classes", OP_CE, {"4,1000"}, {DGT_N}, {0}, 0},
    {"cross_entropy ignore", OP_CE_IGNORE, {"9,5"}, {DGT_N}, {0}, 0},
    {"argmax dim 1", OP_ARGMAX, {"6,10"}, {DGT_N}, {1}, 0},
    {"argmax dim 0", OP_ARGMAX, {"6,10"}, {DGT_N}, {0}, 0},
    {"reshape", OP_RESHAPE, {"3,4"}, {DGT_N}, {0}, 0},
    {"flatten", OP_FLATTEN, {"2,3,4"}, {DGT_N}, {1, 2}, 0},
    {"transpose", OP_TRANSPOSE, {"3,5"}, {DGT_N}, {0, 1}, 0},
    {"permute", OP_PERMUTE, {"2,3,4"}, {DGT_N}, {2, 0, 1}, 0},
    {"slice", OP_SLICE, {"5,6"}, {DGT_N}, {1, 1, 3}, 0},
    {"contiguous of transpose", OP_CONTIG_T, {"4,6"}, {DGT_N}, {0, 1}, 0},
    {"exp of slice", OP_SLICE_EXP, {"5,6"}, {DGT_N}, {0, 2, 2}, 0},
    {"mlp", OP_MLP, {"16,20", "12,20", "12", "5,12"}, {DGT_N, DGT_N, DGT_N, DGT_N}, {0}, 0},
};

/* Targets for n rows of c classes; every third row ignored if asked. */
static dg_tensor *make_targets(dg_ctx *ctx, int64_t n, int64_t c, bool ignore) {
    int32_t *t = malloc((size_t)n * sizeof *t);
    DG_ASSERT(t != NULL);
    for (int64_t i = 0; i < n; i++)
        t[i] = ignore && i % 3 == 1 ? DG_IGNORE_INDEX : (int32_t)((i * 7 + 3) % c);
    dg_tensor *r = dg_tensor_from(ctx, DG_I32, 1, &n, t);
    free(t);
    return r;
}

static dg_tensor *case_forward(const op_case *c, dg_ctx *ctx, dg_tensor **p) {
    const int *a = c->a;
    int dims[3] = {a[1], a[2], a[3]};
    switch (c->op) {
    case OP_ADD: return dg_add(p[0], p[1]);
    case OP_SUB: return dg_sub(p[0], p[1]);
    case OP_MUL: return dg_mul(p[0], p[1]);
    case OP_DIV: return dg_div(p[0], p[1]);
    case OP_ADD_SCALAR: return dg_add_scalar(p[0], 0.625f);
    case OP_MUL_SCALAR: return dg_mul_scalar(p[0], -1.75f);
    case OP_NEG: return dg_neg(p[0]);
    case OP_RELU: return dg_relu(p[0]);
    case OP_EXP: return dg_exp(p[0]);
    case OP_LOG: return dg_log(p[0]);
    case OP_MATMUL: return dg_matmul(p[0], p[1]);
    case OP_T_MATMUL: return dg_matmul(dg_transpose(p[0], 0, 1), dg_transpose(p[1], 0, 1));
    case OP_LINEAR: return dg_linear(p[0], p[1], p[2]);
    case OP_SUM: return dg_sum(p[0]);
    case OP_MEAN: return dg_mean(p[0]);
    case OP_SUM_DIMS: return dg_sum_dims(p[0], a[0], dims, a[4]);
    case OP_MEAN_DIMS: return dg_mean_dims(p[0], a[0], dims, a[4]);
    case OP_SOFTMAX: return dg_softmax(p[0], a[0]);
    case OP_LOG_SOFTMAX: return dg_log_softmax(p[0], a[0]);
    case OP_CE:
    case OP_CE_IGNORE:
        return dg_cross_entropy(p[0], make_targets(ctx, p[0]->shape[0], p[0]->shape[1],
                                                   c->op == OP_CE_IGNORE));
    case OP_ARGMAX: return dg_argmax(p[0], a[0], false);
    case OP_RESHAPE: {
        int64_t s[2] = {2, -1};
        return dg_reshape(p[0], 2, s);
    }
    case OP_FLATTEN: return dg_flatten(p[0], a[0], a[1]);
    case OP_TRANSPOSE: return dg_transpose(p[0], a[0], a[1]);
    case OP_PERMUTE: return dg_permute(p[0], a);
    case OP_SLICE: return dg_slice(p[0], a[0], a[1], a[2]);
    case OP_CONTIG_T: return dg_contiguous(dg_transpose(p[0], a[0], a[1]));
    case OP_SLICE_EXP: return dg_exp(dg_slice(p[0], a[0], a[1], a[2]));
    case OP_MLP: {   /* cross_entropy(linear(relu(linear(x, W1, b1)), W2), t) */
        dg_tensor *h = dg_relu(dg_linear(p[0], p[1], p[2]));
        return dg_cross_entropy(dg_linear(h, p[3], NULL), make_targets(ctx, 16, 5, false));
    }
    }
    return NULL;
}

/* What one device produced for a case, in host memory. */
typedef struct {
    int64_t nout;
    float *out;            /* F32 outputs */
    int32_t *iout;         /* I32 outputs (argmax) */
    float loss;
    float *grad[4];
    int64_t ngrad[4];
    char err[256];
} case_result;

static void case_result_free(case_result *r) {
    free(r->out);
    free(r->iout);
    for (int i = 0; i < 4; i++) free(r->grad[i]);
}

static void run_case(const op_case *c, dg_device dev, float *const *vals, const float *w,
                     case_result *r) {
    memset(r, 0, sizeof *r);
    dg_ctx *ctx = ctx_new(dev);
    dg_tensor *p[4] = {NULL};
    for (int i = 0; i < 4 && c->shape[i]; i++) {
        int64_t shape[DG_MAX_DIMS];
        int nd = dgt_parse_shape(c->shape[i], shape);
        p[i] = dg_param_new(ctx, NULL, nd, shape);
        DG_ASSERT(p[i] != NULL);
        dg_tensor_copy_from_host(p[i], vals[i]);
    }
    dg_tensor *out = case_forward(c, ctx, p);
    if (!out) {
        snprintf(r->err, sizeof r->err, "%s", dg_last_error());
        dg_ctx_free(ctx);
        return;
    }
    r->nout = dg_numel(out);
    size_t nb = (size_t)(r->nout ? r->nout : 1) * 4;
    if (out->dtype == DG_I32) {
        r->iout = malloc(nb);
        DG_ASSERT(r->iout != NULL);
        dg_tensor_to_host(out, r->iout);
        dg_ctx_free(ctx);
        return;
    }
    r->out = malloc(nb);
    DG_ASSERT(r->out != NULL);
    dg_tensor_to_host(out, r->out);
    dg_tensor *wt = dg_tensor_from(ctx, DG_F32, out->ndim, out->shape, w);
    dg_tensor *loss = dg_sum(dg_mul(out, wt));
    DG_ASSERT(loss != NULL && dg_backward(loss) == DG_OK);
    r->loss = dg_item(loss);
    for (int i = 0; i < 4 && p[i]; i++) {
        r->ngrad[i] = dg_numel(p[i]);
        r->grad[i] = malloc((size_t)(r->ngrad[i] ? r->ngrad[i] : 1) * sizeof(float));
        DG_ASSERT(r->grad[i] != NULL);
        dg_tensor_to_host(p[i]->grad, r->grad[i]);
    }
    dg_ctx_free(ctx);
}

static void test_ops(void) {
    int ncases = (int)(sizeof k_cases / sizeof k_cases[0]);
    for (int ci = 0; ci < ncases; ci++) {
        const op_case *c = &k_cases[ci];
        double atol = c->atol > 0 ? c->atol : ATOL;
        float *vals[4] = {NULL};
        for (int i = 0; i < 4 && c->shape[i]; i++) {
            int64_t shape[DG_MAX_DIMS];
            int64_t n = dgt_numel(dgt_parse_shape(c->shape[i], shape), shape);
            vals[i] = malloc((size_t)(n ? n : 1) * sizeof(float));
            DG_ASSERT(vals[i] != NULL);
            dgt_fill(&g_rng, vals[i], n, c->kind[i]);
        }
        float *w = malloc(1 << 20);   /* loss weights, enough for every case */
        DG_ASSERT(w != NULL);
        dgt_fill(&g_rng, w, (1 << 20) / 4, DGT_N);
        case_result ref, got;
        run_case(c, g_ref, vals, w, &ref);
        run_case(c, g_dev, vals, w, &got);
        CHECKF(!ref.err[0] && !got.err[0], "%s: failed: ref '%s', dev '%s'", c->name, ref.err, got.err);
        if (!ref.err[0] && !got.err[0]) {
            CHECK_EQ_INT(got.nout, ref.nout);
            if (ref.iout) {
                for (int64_t i = 0; i < ref.nout; i++)
                    CHECKF(got.iout[i] == ref.iout[i], "%s: argmax[%lld]: %d vs %d", c->name,
                           (long long)i, got.iout[i], ref.iout[i]);
            } else {
                compare("output", c->name, got.out, ref.out, ref.nout, atol, RTOL);
                compare("loss", c->name, &got.loss, &ref.loss, 1, atol, RTOL);
                for (int i = 0; i < 4 && ref.grad[i]; i++) {
                    char what[32];
                    snprintf(what, sizeof what, "grad of input %d", i);
                    compare(what, c->name, got.grad[i], ref.grad[i], ref.ngrad[i], atol, RTOL);
                }
            }
        }
        case_result_free(&ref);
        case_result_free(&got);
        for (int i = 0; i < 4; i++) free(vals[i]);
        free(w);
    }
    printf("ops: %d cases compared\n", ncases);
}

/* ---- bad labels: the same error on both devices --------------------------------------- */

static void bad_label_error(dg_device dev, int32_t bad, char *msg, size_t n) {
    dg_ctx *ctx = ctx_new(dev);
    int64_t shape[2] = {6, 4}, rows = 6;
    float x[24];
    dgt_fill(&g_rng, x, 24, DGT_N);
    int32_t t[6] = {0, 1, 2, 3, bad, bad};
    dg_tensor *l = dg_cross_entropy(dg_tensor_from(ctx, DG_F32, 2, shape, x),
                                    dg_tensor_from(ctx, DG_I32, 1, &rows, t));
    CHECK(l == NULL);
    snprintf(msg, n, "%s", dg_last_error());
    dg_ctx_free(ctx);
}

static void test_bad_labels(void) {
    int32_t bads[2] = {4, -3};
    for (int i = 0; i < 2; i++) {
        char ref[256], got[256];
        bad_label_error(g_ref, bads[i], ref, sizeof ref);
        bad_label_error(g_dev, bads[i], got, sizeof got);
        CHECK_CONTAINS(ref, "target[4]");
        CHECKF(!strcmp(ref, got), "bad label %d: '%s' vs '%s'", bads[i], got, ref);
    }
}

/* Labels uploaded from the host carry their range, so that the GPU need not
 * read them back; a write that the range cannot see must still be caught:
 * kind 0, bad labels written through a view after the whole tensor's range
 * was taken; kind 1, copied on the device from a tensor with a bad label;
 * kind 2, valid labels (no error). */
static void label_write_error(dg_device dev, int kind, char *msg, size_t n) {
    dg_ctx *ctx = ctx_new(dev);
    int64_t shape[2] = {6, 4}, rows = 6;
    float x[24];
    dgt_fill(&g_rng, x, 24, DGT_N);
    int32_t good[6] = {0, 1, 2, 3, 0, 1}, bad[6] = {0, 1, 2, 3, 4, 4};
    dg_tensor *t = dg_tensor_from(ctx, DG_I32, 1, &rows, good);
    CHECK(t->range_epoch != 0 && t->range_min == 0 && t->range_max == 3);
    if (kind == 0) {
        dg_tensor *tail = dg_slice(t, 0, 4, 2);
        CHECK(tail->range_epoch == 0);   /* a view: unknown */
        dg_tensor_copy_from_host(tail, bad + 4);
        CHECK(tail->range_epoch > t->range_epoch && tail->range_max == 4);
    } else if (kind == 1) {
        dg_tensor *src = dg_tensor_from(ctx, DG_I32, 1, &rows, bad);
        CHECK(dg_tensor_copy(t, src) == DG_OK);
        CHECK(t->range_epoch > src->range_epoch && t->range_max == 4);
    }
    dg_tensor *xt = dg_tensor_from(ctx, DG_F32, 2, shape, x);
    CHECK(xt->range_epoch == 0);   /* float: no range */
    dg_clear_error();
    dg_tensor *l = dg_cross_entropy(xt, t);
    CHECK((l == NULL) == (kind != 2));
    snprintf(msg, n, "%s", dg_last_error());
    dg_ctx_free(ctx);
}

static void test_label_writes(void) {
    for (int kind = 0; kind < 3; kind++) {
        char ref[256], got[256];
        label_write_error(g_ref, kind, ref, sizeof ref);
        label_write_error(g_dev, kind, got, sizeof got);
        if (kind < 2) CHECK_CONTAINS(ref, "target[4] = 4 is out of range");
        CHECKF(!strcmp(ref, got), "label writes, case %d: '%s' vs '%s'", kind, got, ref);
    }
}

/* ---- optimizers: 5 steps on both devices ------------------------------------------------ */

typedef enum { O_SGD, O_SGD_MOM, O_SGD_NESTEROV, O_ADAM, O_ADAM_AMS_L2, O_ADAMW } opt_kind;

static dg_optim *make_opt(opt_kind k, dg_tensor **p, int n) {
    dg_sgd_opts s = dg_sgd_defaults(0.05f);
    dg_adam_opts a = dg_adam_defaults();
    a.lr = 1e-2f;
    switch (k) {
    case O_SGD: return dg_optim_sgd(p, n, s);
    case O_SGD_MOM:
        s.momentum = 0.9f; s.dampening = 0.1f; s.weight_decay = 1e-2f;
        return dg_optim_sgd(p, n, s);
    case O_SGD_NESTEROV:
        s.momentum = 0.9f; s.nesterov = true; s.weight_decay = 1e-2f;
        return dg_optim_sgd(p, n, s);
    case O_ADAM: return dg_optim_adam(p, n, a);
    case O_ADAM_AMS_L2:
        a.amsgrad = true; a.weight_decay = 1e-2f;
        return dg_optim_adam(p, n, a);
    case O_ADAMW: {
        dg_adam_opts w = dg_adamw_defaults();
        w.lr = 1e-2f;
        return dg_optim_adamw(p, n, w);
    }
    }
    return NULL;
}

/* Params after each of 5 steps of loss = sum(p * p * w0) + sum(p1 * w1),
 * into out[step][...] (37 + 35 floats per step). */
static void run_opt(opt_kind k, dg_device dev, const float *init, const float *w, float *out) {
    dg_ctx *ctx = ctx_new(dev);
    int64_t s0 = 37, s1[2] = {5, 7};
    dg_tensor *p[2] = {dg_param_new(ctx, "a", 1, &s0), dg_param_new(ctx, "b", 2, s1)};
    dg_tensor_copy_from_host(p[0], init);
    dg_tensor_copy_from_host(p[1], init + 37);
    dg_optim *o = make_opt(k, p, 2);
    DG_ASSERT(o != NULL);
    for (int step = 0; step < 5; step++) {
        dg_tensor *w0 = dg_tensor_from(ctx, DG_F32, 1, &s0, w);
        dg_tensor *w1 = dg_tensor_from(ctx, DG_F32, 2, s1, w + 37);
        dg_tensor *loss = dg_add(dg_sum(dg_mul(dg_mul(p[0], p[0]), w0)), dg_sum(dg_mul(p[1], w1)));
        dg_optim_zero_grad(o);
        DG_ASSERT(loss != NULL && dg_backward(loss) == DG_OK);
        dg_optim_step(o);
        dg_tensor_to_host(p[0], out + step * 72);
        dg_tensor_to_host(p[1], out + step * 72 + 37);
        dg_ctx_reset_step(ctx);
    }
    dg_optim_free(o);
    dg_ctx_free(ctx);
}

static void test_optimizers(void) {
    static const char *names[] = {"sgd", "sgd momentum", "sgd nesterov", "adam",
                                  "adam amsgrad l2", "adamw"};
    float init[72], w[72], ref[5 * 72], got[5 * 72];
    dgt_fill(&g_rng, init, 72, DGT_N);
    dgt_fill(&g_rng, w, 72, DGT_N);
    for (int k = O_SGD; k <= O_ADAMW; k++) {
        run_opt((opt_kind)k, g_ref, init, w, ref);
        run_opt((opt_kind)k, g_dev, init, w, got);
        compare("params after 5 steps", names[k], got, ref, 5 * 72, 1e-6, 1e-5);
    }
}

/* ---- MNIST MLP ----------------------------------------------------------------------------- */

typedef struct {
    dg_ctx *ctx;
    dg_module *model;
    dg_optim *opt;
} mlp;

static mlp mlp_new(dg_device dev, float lr) {
    mlp m;
    m.ctx = ctx_new(dev);
    dg_manual_seed(m.ctx, 0);
    dg_module *layers[3] = {dg_nn_linear(m.ctx, 784, 50, true), dg_nn_relu(m.ctx),
                            dg_nn_linear(m.ctx, 50, 10, true)};
    m.model = dg_nn_sequential(m.ctx, 3, layers);
    dg_tensor **params;
    int np = dg_module_parameters(m.model, &params);
    dg_adam_opts ao = dg_adam_defaults();
    ao.lr = lr;
    m.opt = dg_optim_adam(params, np, ao);
    DG_ASSERT(m.model != NULL && m.opt != NULL);
    return m;
}

static void mlp_free(mlp *m) {
    dg_optim_free(m->opt);
    dg_ctx_free(m->ctx);
}

/* dst's parameters = src's (through the host); perturb: +1 ulp on each. */
static void mlp_copy_params(mlp *dst, mlp *src, bool perturb) {
    dg_tensor **ps, **pd;
    int ns = dg_module_parameters(src->model, &ps), nd = dg_module_parameters(dst->model, &pd);
    DG_ASSERT(ns == nd);
    for (int i = 0; i < ns; i++) {
        int64_t n = dg_numel(ps[i]);
        float *h = malloc((size_t)n * sizeof *h);
        DG_ASSERT(h != NULL);
        dg_tensor_to_host(ps[i], h);
        if (perturb)
            for (int64_t j = 0; j < n; j++) h[j] = nextafterf(h[j], INFINITY);
        dg_tensor_copy_from_host(pd[i], h);
        free(h);
    }
}

/* One training step on host batch (x, y); returns the loss. */
static float mlp_step(mlp *m, const float *x, const int32_t *y, int64_t b) {
    int64_t xs[2] = {b, 784};
    dg_tensor *xt = dg_tensor_from(m->ctx, DG_F32, 2, xs, x);
    dg_tensor *yt = dg_tensor_from(m->ctx, DG_I32, 1, &b, y);
    dg_tensor *loss = dg_cross_entropy(dg_module_forward(m->model, xt), yt);
    DG_ASSERT(loss != NULL);
    dg_optim_zero_grad(m->opt);
    DG_ASSERT(dg_backward(loss) == DG_OK);
    dg_optim_step(m->opt);
    float l = dg_item(loss);
    dg_ctx_reset_step(m->ctx);
    return l;
}

/* Synthetic MNIST-like data: pixels in [0, 1), labels from a fixed random
 * linear teacher, so the loss decreases. */
static void synthetic_batch(float *x, int32_t *y, int64_t b, const float *teacher) {
    for (int64_t i = 0; i < b; i++) {
        float *xi = x + i * 784;
        for (int j = 0; j < 784; j++) xi[j] = dgt_uniform(&g_rng) < 0.8 ? 0.0f : (float)dgt_uniform(&g_rng);
        int best = 0;
        double bv = -INFINITY;
        for (int k = 0; k < 10; k++) {
            double s = 0;
            for (int j = 0; j < 784; j++) s += xi[j] * teacher[k * 784 + j];
            if (s > bv) { bv = s; best = k; }
        }
        y[i] = best;
    }
}

static void test_mlp_training(void) {
    enum { STEPS = 300, B = 64 };
    const char *dir = getenv("DG_MNIST_DIR");
    dg_dataset ds;
    dg_sampler s;
    dg_loader l;
    bool real = dir && *dir && dg_dataset_load_mnist(dir, true, &ds) == DG_OK &&
                dg_sampler_init(&s, ds.n, 0, 1, true, 0, false) == DG_OK &&
                dg_loader_init(&l, &ds, &s, B, true) == DG_OK;
    dg_clear_error();
    if (real) dg_loader_start_epoch(&l, 0);
    float *teacher = malloc(10 * 784 * sizeof *teacher);
    float *x = malloc(B * 784 * sizeof *x);
    int32_t y[B];
    DG_ASSERT(teacher && x);
    dgt_fill(&g_rng, teacher, 10 * 784, DGT_N);

    mlp ref = mlp_new(g_ref, 1e-4f), dev = mlp_new(g_dev, 1e-4f);
    mlp_copy_params(&dev, &ref, g_perturb);
    double max_diff = 0.0, first[2] = {0, 0}, last[2] = {0, 0};
    int bad = 0;
    uint64_t mallocs_at_10 = 0;
    for (int step = 0; step < STEPS; step++) {
        int64_t b = B;
        if (real) b = dg_loader_next_host(&l, x, y);
        else synthetic_batch(x, y, B, teacher);
        DG_ASSERT(b == B);
        float lr = mlp_step(&ref, x, y, b), ld = mlp_step(&dev, x, y, b);
        double d = fabs((double)ld - (double)lr);
        if (d > max_diff) max_diff = d;
        if (!dgt_close(ld, lr, 5e-4, 5e-4) && bad++ < 5)
            dgt_fail(__FILE__, __LINE__, "mlp step %d: loss %.7f vs cpu %.7f", step, ld, lr);
        if (step < 20) { first[0] += lr / 20; first[1] += ld / 20; }
        if (step >= STEPS - 20) { last[0] += lr / 20; last[1] += ld / 20; }
        if (step == 10) mallocs_at_10 = dg_ctx_arena_mallocs(dev.ctx);
    }
    printf("mlp (%s data): %d steps, loss first 20 %.4f (ref) %.4f (dev), last 20 %.4f (ref) "
           "%.4f (dev), max |step loss diff| %.3g\n", real ? "MNIST" : "synthetic", STEPS,
           first[0], first[1], last[0], last[1], max_diff);
    CHECKF(last[0] < first[0] - 0.1, "mlp: the loss did not decrease (%.4f -> %.4f)", first[0], last[0]);
    CHECKF(dg_ctx_arena_mallocs(dev.ctx) == mallocs_at_10,
           "arena allocated device memory in steady state: %llu mallocs after step 10, %llu at the end",
           (unsigned long long)mallocs_at_10, (unsigned long long)dg_ctx_arena_mallocs(dev.ctx));
    mlp_free(&ref);
    mlp_free(&dev);
    free(teacher);
    free(x);
    if (real) {
        dg_loader_free(&l);
        dg_sampler_free(&s);
        dg_dataset_free(&ds);
    }
}

/* ---- benchmark: steps/s of the MLP training step ----------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Data stays on the device (persistent tensors), as in the PyTorch
 * benchmark; the loss is read back only at the end of each window.
 * graph: after the warm-up the step is captured and each step is a replay
 * (as PyTorch's CUDA-graph mode). readback: the labels are a view, whose
 * range the engine does not know, so each step's cross entropy reads its
 * label check back from the GPU (the cost that labels from the host avoid). */
static int bench(dg_device dev, bool graph, bool readback) {
    enum { B = 64, WARMUP = 100, WINDOWS = 7 };
    dg_clear_error();
    dg_ctx *probe = dg_ctx_new(dev);
    if (!probe) {
        fprintf(stderr, "test_cuda --bench: %s\n", dg_last_error());
        return 1;
    }
    dg_ctx_free(probe);
    mlp m = mlp_new(dev, 1e-4f);
    int64_t xs[2] = {B, 784}, ys = B;
    float *teacher = malloc(10 * 784 * sizeof *teacher), *x = malloc(B * 784 * sizeof *x);
    int32_t y[B];
    DG_ASSERT(teacher && x);
    dgt_fill(&g_rng, teacher, 10 * 784, DGT_N);
    synthetic_batch(x, y, B, teacher);
    dg_tensor *xt = dg_tensor_persistent(m.ctx, DG_F32, 2, xs);
    dg_tensor *yt = dg_tensor_persistent(m.ctx, DG_I32, 1, &ys);
    dg_tensor_copy_from_host(xt, x);
    dg_tensor_copy_from_host(yt, y);
    int steps = dev == DG_CUDA ? (graph ? 2000 : 500) : 200;
    double rates[WINDOWS];
    float l = 0;
    dg_graph *g = NULL;
    dg_tensor *gloss = NULL;
    for (int w = -1; w < WINDOWS; w++) {
        int n = w < 0 ? WARMUP : steps;
        if (graph && w == 0) {   /* capture after the eager warm-up */
            dg_status st = dg_graph_begin_capture(m.ctx);
            dg_tensor *loss = st ? NULL : dg_cross_entropy(dg_module_forward(m.model, xt), yt);
            dg_optim_zero_grad(m.opt);
            if (loss && dg_backward(loss) == DG_OK) dg_optim_step(m.opt);
            if (st || dg_graph_end_capture(m.ctx, &g) != DG_OK || !loss) {
                fprintf(stderr, "test_cuda --bench cuda-graph: %s\n", dg_last_error());
                return 1;
            }
            gloss = dg_graph_output(g, loss);
            dg_ctx_reset_step(m.ctx);
        }
        double t0 = now_s();
        if (g) {
            for (int i = 0; i < n; i++) dg_graph_replay(g);   /* DG_ERR only while capturing */
            l = dg_item(gloss);   /* waits for the device */
            rates[w] = n / (now_s() - t0);
            continue;
        }
        for (int i = 0; i < n; i++) {
            /* a view (in the step's arena): its range is unknown */
            dg_tensor *labels = readback ? dg_slice(yt, 0, 0, B) : yt;
            dg_tensor *loss = dg_cross_entropy(dg_module_forward(m.model, xt), labels);
            dg_optim_zero_grad(m.opt);
            DG_ASSERT(loss != NULL && dg_backward(loss) == DG_OK);
            dg_optim_step(m.opt);
            if (i == n - 1) l = dg_item(loss);   /* waits for the device */
            dg_ctx_reset_step(m.ctx);
        }
        if (w >= 0) rates[w] = n / (now_s() - t0);
    }
    qsort(rates, WINDOWS, sizeof rates[0], cmp_double);
    const char *chk = getenv("DG_CUDA_CHECK_LABELS");
    printf("BENCH {\"impl\": \"dgrad\", \"device\": \"%s\", \"label_readback\": %s, \"graph\": %s, "
           "\"batch\": %d, \"steps_per_s\": %.1f, \"min\": %.1f, \"max\": %.1f, \"final_loss\": %.4f}\n",
           dev == DG_CUDA ? "cuda" : "cpu",
           dev == DG_CUDA && !graph && readback && !(chk && !strcmp(chk, "0")) ? "true" : "false",
           graph ? "true" : "false", B, rates[WINDOWS / 2], rates[0], rates[WINDOWS - 1], l);
    dg_graph_free(g);
    mlp_free(&m);
    free(teacher);
    free(x);
    return 0;
}

/* ---- main ---------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--bench"))
        return bench(argc > 2 && !strcmp(argv[2], "cpu") ? DG_CPU : DG_CUDA,
                     argc > 2 && !strcmp(argv[2], "cuda-graph"),
                     argc > 2 && !strcmp(argv[2], "cuda-readback"));
    if (argc > 1 && !strcmp(argv[1], "--expect-no-device")) {
        dg_ctx *ctx = dg_ctx_new(DG_CUDA);
        CHECKF(ctx == NULL, "dg_ctx_new(DG_CUDA) succeeded: this machine has a GPU");
        if (!ctx) {
            printf("dg_ctx_new(DG_CUDA): %s\n", dg_last_error());
            CHECK_CONTAINS(dg_last_error(), "dg_ctx_new: ");
        }
        dg_ctx_free(ctx);
        /* the CPU still works after the failed CUDA init */
        dg_ctx *cpu = ctx_new(DG_CPU);
        int64_t n = 3;
        CHECK_NEAR(dg_item(dg_sum(dg_full(cpu, 1, &n, 2.0f))), 6.0, 0, 0);
        dg_ctx_free(cpu);
        return dgt_report("test_cuda --expect-no-device");
    }
    bool ops_only = false;
    if (argc > 1 && !strcmp(argv[1], "--self-check")) {
        g_dev = DG_CPU;
        g_perturb = true;
    } else if (argc > 1 && !strcmp(argv[1], "--ops-only")) {
        ops_only = true;
    } else if (argc > 1) {
        fprintf(stderr, "usage: test_cuda [--expect-no-device | --self-check | --ops-only | "
                        "--bench [cpu|cuda|cuda-graph|cuda-readback]]\n");
        return 2;
    }
    if (g_dev == DG_CUDA) {
        dg_ctx *ctx = dg_ctx_new(DG_CUDA);
        if (!ctx) {
            printf("test_cuda: skipped: %s\n", dg_last_error());
            return 77;
        }
        CHECK(dg_ctx_device(ctx) == DG_CUDA);
        dg_ctx_free(ctx);
    }
    test_ops();
    test_bad_labels();
    test_label_writes();
    test_optimizers();
    if (!ops_only) test_mlp_training();
    return dgt_report(g_dev == DG_CUDA ? "test_cuda" : "test_cuda --self-check");
}
