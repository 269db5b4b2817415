/* test_gradcheck.c - finite-difference checks of every differentiable op,
 * and checks of autograd semantics and steady-state memory.
 *
 * Gradient check: for loss = sum(out * w) with fixed random w, the gradient
 * from dg_backward is compared with central differences
 * (L(x + eps) - L(x - eps)) / (x+eps - (x-eps)), L summed in double from the
 * float32 forward, eps = 1e-2 (1e-3 where stated). Inputs stay away from relu
 * kinks and from log/div singularities. Tolerance:
 * |numeric - analytic| <= GC_ATOL + GC_RTOL * max(|numeric|, |analytic|).
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

#define GC_ATOL 1e-4
#define GC_RTOL 2e-3

/* ---- deterministic test RNG (independent of the engine's) ---------------- */

static dgt_rng g_rng = { 0x9E3779B97F4A7C15ull };

/* ---- the cases --------------------------------------------------------------- */

typedef enum {
    OP_ADD, OP_SUB, OP_MUL, OP_DIV,
    OP_ADD_SCALAR, OP_MUL_SCALAR, OP_NEG, OP_RELU, OP_EXP, OP_LOG,
    OP_MATMUL, OP_LINEAR, OP_SUM, OP_MEAN, OP_SUM_DIMS, OP_MEAN_DIMS,
    OP_SOFTMAX, OP_LOG_SOFTMAX, OP_CE, OP_CE_EX,
    OP_RESHAPE, OP_FLATTEN, OP_TRANSPOSE, OP_PERMUTE, OP_SLICE, OP_CONTIGUOUS_T,
    /* compositions: views feeding ops, tensors used twice */
    OP_T_ADD, OP_T_MUL, OP_T_MATMUL, OP_T_SOFTMAX, OP_P_SUM_DIMS, OP_SLICE_EXP, OP_T_RESHAPE,
    OP_SLICE_LINEAR, OP_SLICE_RESHAPE, OP_LINEAR_TW, OP_SLICE_SUM_DIMS,
    OP_X_MUL_X, OP_X_ADD_X, OP_X_DIV_X, OP_MATMUL_SELF, OP_LINEAR_SHARED,
    OP_TWO_USES, OP_RESIDUAL, OP_RESIDUAL_VIEW, OP_H_ADD_H, OP_MLP,
} gc_op;

typedef struct {
    char name[48];
    gc_op op;
    const char *shape[4];   /* NULL: no such input; "": 0-dim */
    dgt_vkind kind[4];
    int a[6];               /* op arguments, see gc_forward */
    const char *s;          /* reshape target, "4,-1" */
    double eps;             /* 0: 1e-2 */
} gc_case;

static const int32_t k_targets[3][5] = {
    {0, 3, 1, 2, 3},
    {0, DG_IGNORE_INDEX, 1, DG_IGNORE_INDEX, 2},
    {0, 1, 2, 1, 3},
};

static dg_tensor *gc_forward(const gc_case *c, dg_ctx *ctx, dg_tensor **p) {
    const int *a = c->a;
    int64_t shp[DG_MAX_DIMS];
    int nshp = dgt_parse_shape(c->s, shp);
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
    case OP_LINEAR: return dg_linear(p[0], p[1], p[2]);
    case OP_SUM: return dg_sum(p[0]);
    case OP_MEAN: return dg_mean(p[0]);
    case OP_SUM_DIMS: return dg_sum_dims(p[0], a[0], dims, a[4]);
    case OP_MEAN_DIMS: return dg_mean_dims(p[0], a[0], dims, a[4]);
    case OP_SOFTMAX: return dg_softmax(p[0], a[0]);
    case OP_LOG_SOFTMAX: return dg_log_softmax(p[0], a[0]);
    case OP_CE:
    case OP_CE_EX: {
        int64_t n = p[0]->shape[0];
        dg_tensor *t = dg_tensor_from(ctx, DG_I32, 1, &n, k_targets[a[0]]);
        return c->op == OP_CE ? dg_cross_entropy(p[0], t)
                              : dg_cross_entropy_ex(p[0], t, a[1]);
    }
    case OP_RESHAPE: return dg_reshape(p[0], nshp, shp);
    case OP_FLATTEN: return dg_flatten(p[0], a[0], a[1]);
    case OP_TRANSPOSE: return dg_transpose(p[0], a[0], a[1]);
    case OP_PERMUTE: return dg_permute(p[0], a);
    case OP_SLICE: return dg_slice(p[0], a[0], a[1], a[2]);
    case OP_CONTIGUOUS_T: return dg_contiguous(dg_transpose(p[0], a[0], a[1]));
    case OP_T_ADD: return dg_add(dg_transpose(p[0], a[0], a[1]), p[1]);
    case OP_T_MUL: return dg_mul(p[0], dg_transpose(p[1], a[0], a[1]));
    case OP_T_MATMUL:
        return dg_matmul(dg_transpose(p[0], a[0], a[1]), dg_transpose(p[1], a[2], a[3]));
    case OP_T_SOFTMAX: return dg_log_softmax(dg_transpose(p[0], a[0], a[1]), a[2]);
    case OP_P_SUM_DIMS: {
        int d[1] = {a[3]};
        return dg_sum_dims(dg_permute(p[0], a), 1, d, false);
    }
    case OP_SLICE_EXP: return dg_exp(dg_slice(p[0], a[0], a[1], a[2]));
    case OP_T_RESHAPE: return dg_reshape(dg_transpose(p[0], a[0], a[1]), nshp, shp);
    case OP_SLICE_LINEAR: return dg_linear(dg_slice(p[0], a[0], a[1], a[2]), p[1], p[2]);
    case OP_SLICE_RESHAPE: return dg_reshape(dg_slice(p[0], a[0], a[1], a[2]), nshp, shp);
    case OP_LINEAR_TW: return dg_linear(p[0], dg_transpose(p[1], 0, 1), p[2]);
    case OP_SLICE_SUM_DIMS: {
        int d[1] = {a[3]};
        return dg_sum_dims(dg_slice(p[0], a[0], a[1], a[2]), 1, d, a[4]);
    }
    case OP_X_MUL_X: return dg_mul(p[0], p[0]);
    case OP_X_ADD_X: return dg_add(p[0], p[0]);
    case OP_X_DIV_X: return dg_div(dg_add_scalar(p[0], 3.0f), p[0]);
    case OP_MATMUL_SELF: return dg_matmul(p[0], p[0]);
    case OP_LINEAR_SHARED: return dg_linear(dg_exp(dg_linear(p[0], p[1], p[2])), p[1], NULL);
    case OP_TWO_USES: {
        dg_tensor *h = dg_mul_scalar(p[0], 0.5f);
        return dg_add(dg_mul(h, p[1]), dg_exp(dg_mul(h, h)));
    }
    /* an add whose first input is an intermediate with no gradient yet takes
     * the add's gradient buffer itself (no copy); its other uses then add
     * into that buffer */
    case OP_RESIDUAL: {   /* h + h * w, as x + f(x) */
        dg_tensor *h = dg_exp(dg_mul_scalar(p[0], 0.5f));
        return dg_add(h, dg_mul(h, p[1]));
    }
    case OP_RESIDUAL_VIEW: {   /* through reshapes, which share the buffer on */
        int64_t s34[2] = {3, 4};
        dg_tensor *h = dg_exp(dg_mul_scalar(p[0], 0.5f));
        return dg_add(dg_reshape(h, 2, s34), dg_reshape(dg_mul(h, p[1]), 2, s34));
    }
    case OP_H_ADD_H: {
        dg_tensor *h = dg_exp(dg_mul_scalar(p[0], 0.5f));
        return dg_add(h, h);
    }
    case OP_MLP: {
        /* cross_entropy(linear(relu(linear(x, W1, b1)), W2, b2), t) */
        int64_t xs[2] = {5, 4};
        float xv[20];
        for (int i = 0; i < 20; i++) xv[i] = (float)sin(0.7 * i + 0.3);
        dg_tensor *x = dg_tensor_from(ctx, DG_F32, 2, xs, xv);
        int64_t n = 5;
        dg_tensor *t = dg_tensor_from(ctx, DG_I32, 1, &n, k_targets[0]);
        dg_tensor *h = dg_relu(dg_linear(x, p[0], p[1]));
        return dg_cross_entropy(dg_linear(h, p[2], p[3]), t);
    }
    }
    return NULL;
}

/* Builds the case list. */
static int build_cases(gc_case *cs, int max) {
    int n = 0;
#define ADD_CASE(...) do { DG_ASSERT(n < max); cs[n++] = (gc_case){__VA_ARGS__}; } while (0)

    /* Binary ops, every broadcasting pattern, both orders. */
    static const char *bc[][2] = {
        {"2,3", "2,3"},          /* same shape */
        {"3,4", ""}, {"", "3,4"},             /* 0-dim scalar */
        {"3,4", "1"}, {"1", "3,4"},           /* one element */
        {"3,4", "4"}, {"4", "3,4"},           /* row */
        {"3,4", "3,1"}, {"3,1", "3,4"},       /* column */
        {"2,1,4", "2,3,4"}, {"2,3,4", "2,1,4"}, /* middle dim */
        {"1,3,4", "2,3,4"}, {"2,3,4", "3,4"}, /* leading dims */
        {"3,1", "1,4"}, {"2,1,4", "3,1"},     /* both sides */
        {"2,1,3,1", "4,1,5"},                 /* 4-D, both sides */
    };
    static const char *opname[4] = {"add", "sub", "mul", "div"};
    for (int o = 0; o < 4; o++) {
        for (size_t k = 0; k < sizeof bc / sizeof bc[0]; k++) {
            gc_case c = {.op = (gc_op)(OP_ADD + o), .shape = {bc[k][0], bc[k][1]},
                         .kind = {DGT_N, o == 3 ? DGT_AWAY : DGT_N}};
            snprintf(c.name, sizeof c.name, "%s [%s] [%s]", opname[o], bc[k][0], bc[k][1]);
            DG_ASSERT(n < max);
            cs[n++] = c;
        }
    }
    ADD_CASE(.name = "add_scalar", .op = OP_ADD_SCALAR, .shape = {"3,4"}, .kind = {DGT_N});
    ADD_CASE(.name = "mul_scalar", .op = OP_MUL_SCALAR, .shape = {"3,4"}, .kind = {DGT_N});
    ADD_CASE(.name = "neg", .op = OP_NEG, .shape = {"2,3"}, .kind = {DGT_N});
    ADD_CASE(.name = "relu", .op = OP_RELU, .shape = {"4,5"}, .kind = {DGT_KINK});
    ADD_CASE(.name = "exp", .op = OP_EXP, .shape = {"3,4"}, .kind = {DGT_N});
    ADD_CASE(.name = "log", .op = OP_LOG, .shape = {"3,4"}, .kind = {DGT_POS});
    ADD_CASE(.name = "relu 0-dim", .op = OP_RELU, .shape = {""}, .kind = {DGT_KINK});

    static const char *mm[][2] = {
        {"3,4", "4,5"}, {"4", "4,5"}, {"3,4", "4"}, {"4", "4"},
        {"2,3,4", "4,5"}, {"3,4", "2,4,5"}, {"2,3,4", "2,4,5"},
        {"1,3,4", "2,4,2"}, {"2,1,3,4", "3,4,2"}, {"2,3,4", "4"}, {"4", "2,4,5"},
        {"2,1,3,4", "1,2,4,3"},
    };
    for (size_t k = 0; k < sizeof mm / sizeof mm[0]; k++) {
        gc_case c = {.op = OP_MATMUL, .shape = {mm[k][0], mm[k][1]}, .kind = {DGT_N, DGT_N}};
        snprintf(c.name, sizeof c.name, "matmul [%s] [%s]", mm[k][0], mm[k][1]);
        cs[n++] = c;
    }
    ADD_CASE(.name = "linear bias", .op = OP_LINEAR, .shape = {"4,5", "3,5", "3"},
             .kind = {DGT_N, DGT_N, DGT_N});
    ADD_CASE(.name = "linear no bias", .op = OP_LINEAR, .shape = {"4,5", "3,5"},
             .kind = {DGT_N, DGT_N});
    ADD_CASE(.name = "linear 3-D x", .op = OP_LINEAR, .shape = {"2,3,5", "4,5", "4"},
             .kind = {DGT_N, DGT_N, DGT_N});
    ADD_CASE(.name = "linear 1-D x", .op = OP_LINEAR, .shape = {"5", "4,5", "4"},
             .kind = {DGT_N, DGT_N, DGT_N});

    ADD_CASE(.name = "sum", .op = OP_SUM, .shape = {"2,3,4"}, .kind = {DGT_N});
    ADD_CASE(.name = "mean", .op = OP_MEAN, .shape = {"2,3,4"}, .kind = {DGT_N});
    ADD_CASE(.name = "sum 0-dim", .op = OP_SUM, .shape = {""}, .kind = {DGT_N});
    /* a = {ndims, d0, d1, d2, keepdim} */
    ADD_CASE(.name = "sum_dims 1", .op = OP_SUM_DIMS, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {1, 1, 0, 0, 0});
    ADD_CASE(.name = "sum_dims 1 keep", .op = OP_SUM_DIMS, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {1, 1, 0, 0, 1});
    ADD_CASE(.name = "sum_dims -1", .op = OP_SUM_DIMS, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {1, -1, 0, 0, 0});
    ADD_CASE(.name = "sum_dims 0,2 keep", .op = OP_SUM_DIMS, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {2, 0, 2, 0, 1});
    ADD_CASE(.name = "sum_dims 2,0", .op = OP_SUM_DIMS, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {2, 2, 0, 0, 0});
    ADD_CASE(.name = "sum_dims all", .op = OP_SUM_DIMS, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {3, 0, 1, 2, 0});
    ADD_CASE(.name = "mean_dims 0", .op = OP_MEAN_DIMS, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {1, 0, 0, 0, 0});
    ADD_CASE(.name = "mean_dims -2 keep", .op = OP_MEAN_DIMS, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {1, -2, 0, 0, 1});
    ADD_CASE(.name = "mean_dims 0,-1", .op = OP_MEAN_DIMS, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {2, 0, -1, 0, 0});
    ADD_CASE(.name = "mean_dims 1 on 2-D", .op = OP_MEAN_DIMS, .shape = {"4,3"}, .kind = {DGT_N},
             .a = {1, 1, 0, 0, 0});

    static const int sdims[] = {0, 1, -1};
    for (int lg = 0; lg < 2; lg++) {
        for (int k = 0; k < 3; k++) {
            gc_case c = {.op = lg ? OP_LOG_SOFTMAX : OP_SOFTMAX, .shape = {"3,4"},
                         .kind = {DGT_N}, .a = {sdims[k]}};
            snprintf(c.name, sizeof c.name, "%s dim %d [3,4]", lg ? "log_softmax" : "softmax",
                     sdims[k]);
            cs[n++] = c;
            c.shape[0] = "2,3,4";
            snprintf(c.name, sizeof c.name, "%s dim %d [2,3,4]",
                     lg ? "log_softmax" : "softmax", sdims[k]);
            cs[n++] = c;
        }
    }
    ADD_CASE(.name = "cross_entropy", .op = OP_CE, .shape = {"5,4"}, .kind = {DGT_N}, .a = {0});
    ADD_CASE(.name = "cross_entropy ignore -100", .op = OP_CE, .shape = {"5,4"}, .kind = {DGT_N},
             .a = {1});
    ADD_CASE(.name = "cross_entropy_ex ignore 1", .op = OP_CE_EX, .shape = {"5,4"},
             .kind = {DGT_N}, .a = {2, 1});

    ADD_CASE(.name = "reshape view", .op = OP_RESHAPE, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {0}, .s = "4,-1");
    ADD_CASE(.name = "reshape to 0-dim", .op = OP_RESHAPE, .shape = {"1,1"}, .kind = {DGT_N},
             .a = {0}, .s = "");
    ADD_CASE(.name = "flatten 1..2", .op = OP_FLATTEN, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {1, 2});
    ADD_CASE(.name = "flatten all", .op = OP_FLATTEN, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {0, -1});
    ADD_CASE(.name = "transpose 0,2", .op = OP_TRANSPOSE, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {0, 2});
    ADD_CASE(.name = "transpose -1,-2", .op = OP_TRANSPOSE, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {-1, -2});
    ADD_CASE(.name = "permute 2,0,1", .op = OP_PERMUTE, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {2, 0, 1});
    ADD_CASE(.name = "slice dim 1", .op = OP_SLICE, .shape = {"3,5"}, .kind = {DGT_N},
             .a = {1, 1, 3});
    ADD_CASE(.name = "slice dim 0", .op = OP_SLICE, .shape = {"4,3"}, .kind = {DGT_N},
             .a = {0, 2, 2});
    ADD_CASE(.name = "slice dim -1", .op = OP_SLICE, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {-1, 0, 2});
    ADD_CASE(.name = "contiguous(transpose)", .op = OP_CONTIGUOUS_T, .shape = {"3,4"},
             .kind = {DGT_N}, .a = {0, 1});

    ADD_CASE(.name = "transpose + row", .op = OP_T_ADD, .shape = {"4,3", "4"},
             .kind = {DGT_N, DGT_N}, .a = {0, 1});
    ADD_CASE(.name = "transpose + same", .op = OP_T_ADD, .shape = {"2,3,4", "4,3,2"},
             .kind = {DGT_N, DGT_N}, .a = {0, 2});
    ADD_CASE(.name = "x * transpose(col)", .op = OP_T_MUL, .shape = {"3,4", "1,3"},
             .kind = {DGT_N, DGT_N}, .a = {0, 1});
    ADD_CASE(.name = "matmul(t, t)", .op = OP_T_MATMUL, .shape = {"4,3", "5,4"},
             .kind = {DGT_N, DGT_N}, .a = {0, 1, 0, 1});
    ADD_CASE(.name = "matmul(t, t) batched", .op = OP_T_MATMUL, .shape = {"2,4,3", "2,5,4"},
             .kind = {DGT_N, DGT_N}, .a = {1, 2, 1, 2});
    ADD_CASE(.name = "log_softmax(transpose)", .op = OP_T_SOFTMAX, .shape = {"4,3"},
             .kind = {DGT_N}, .a = {0, 1, 1});
    ADD_CASE(.name = "sum_dims(permute)", .op = OP_P_SUM_DIMS, .shape = {"2,3,4"},
             .kind = {DGT_N}, .a = {2, 0, 1, 1});
    ADD_CASE(.name = "exp(slice)", .op = OP_SLICE_EXP, .shape = {"3,6"}, .kind = {DGT_N},
             .a = {1, 2, 3});
    ADD_CASE(.name = "reshape(transpose) copy", .op = OP_T_RESHAPE, .shape = {"3,4"},
             .kind = {DGT_N}, .a = {0, 1}, .s = "2,6");
    ADD_CASE(.name = "linear(slice)", .op = OP_SLICE_LINEAR, .shape = {"4,7", "3,5", "3"},
             .kind = {DGT_N, DGT_N, DGT_N}, .a = {1, 1, 5});

    ADD_CASE(.name = "x * x", .op = OP_X_MUL_X, .shape = {"3,4"}, .kind = {DGT_N});
    ADD_CASE(.name = "x + x", .op = OP_X_ADD_X, .shape = {"3,4"}, .kind = {DGT_N});
    ADD_CASE(.name = "(x + 3) / x", .op = OP_X_DIV_X, .shape = {"3,4"}, .kind = {DGT_AWAY});
    ADD_CASE(.name = "matmul(x, x)", .op = OP_MATMUL_SELF, .shape = {"3,3"}, .kind = {DGT_N});
    ADD_CASE(.name = "shared linear weight", .op = OP_LINEAR_SHARED,
             .shape = {"2,4", "4,4", "4"}, .kind = {DGT_N, DGT_N, DGT_N});
    ADD_CASE(.name = "intermediate used twice", .op = OP_TWO_USES, .shape = {"3,4", "3,4"},
             .kind = {DGT_N, DGT_N});
    ADD_CASE(.name = "residual h + h w", .op = OP_RESIDUAL, .shape = {"3,4", "3,4"},
             .kind = {DGT_N, DGT_N});
    ADD_CASE(.name = "residual through reshapes", .op = OP_RESIDUAL_VIEW, .shape = {"2,6", "2,6"},
             .kind = {DGT_N, DGT_N});
    ADD_CASE(.name = "intermediate h + h", .op = OP_H_ADD_H, .shape = {"3,4"}, .kind = {DGT_N});
    ADD_CASE(.name = "reshape(slice) copy", .op = OP_SLICE_RESHAPE, .shape = {"3,6"},
             .kind = {DGT_N}, .a = {1, 1, 4}, .s = "-1");
    ADD_CASE(.name = "linear(x, transpose(W))", .op = OP_LINEAR_TW,
             .shape = {"4,5", "5,3", "3"}, .kind = {DGT_N, DGT_N, DGT_N});
    ADD_CASE(.name = "sum_dims(slice) keep", .op = OP_SLICE_SUM_DIMS, .shape = {"4,5,3"},
             .kind = {DGT_N}, .a = {1, 1, 3, 0, 1});
    ADD_CASE(.name = "permute -1,0,-2", .op = OP_PERMUTE, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {-1, 0, -2});
    ADD_CASE(.name = "flatten -2..-1", .op = OP_FLATTEN, .shape = {"2,3,4"}, .kind = {DGT_N},
             .a = {-2, -1});
    ADD_CASE(.name = "add 6-D broadcast", .op = OP_ADD, .shape = {"2,1,2,1,2,1", "2,1,2,1,2"},
             .kind = {DGT_N, DGT_N});
    ADD_CASE(.name = "mul 6-D broadcast", .op = OP_MUL, .shape = {"1,2,1,2,1,3", "2,1,2,1,2,1"},
             .kind = {DGT_N, DGT_N});
    ADD_CASE(.name = "matmul 5-D broadcast", .op = OP_MATMUL,
             .shape = {"2,1,2,2,3", "1,2,1,3,2"}, .kind = {DGT_N, DGT_N});
    ADD_CASE(.name = "matmul 6-D", .op = OP_MATMUL, .shape = {"2,1,2,1,2,3", "1,2,1,2,3,2"},
             .kind = {DGT_N, DGT_N});
    ADD_CASE(.name = "softmax 6-D dim 3", .op = OP_SOFTMAX, .shape = {"2,1,2,3,1,2"},
             .kind = {DGT_N}, .a = {3});
    ADD_CASE(.name = "mlp cross_entropy", .op = OP_MLP, .shape = {"6,4", "6", "4,6", "4"},
             .kind = {DGT_N, DGT_N, DGT_N, DGT_N});
#undef ADD_CASE
    return n;
}

static const char *case_shape(const gc_case *c, int k) { return c->shape[k]; }

static double out_dot_w(const dg_tensor *out, const double *w) {
    int64_t n = dg_numel(out);
    float *v = malloc(sizeof(float) * (size_t)n);
    DG_ASSERT(v);
    dg_tensor_to_host(out, v);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)v[i] * w[i];
    free(v);
    return s;
}

typedef struct {
    double max_abs, max_rel, max_tol;   /* max_tol: the largest error / tolerance */
} gc_err;

/* (L(x + h) - L(x - h)) / (2h) for element j of input k, L = sum(out * w),
 * with the forward run without recording. */
static double central_diff(const gc_case *c, dg_ctx *ctx, dg_tensor **p, float *val, int k,
                           int64_t j, double h, const double *w) {
    float x0 = val[j], xp = (float)(x0 + h), xm = (float)(x0 - h);
    double l[2];
    for (int s = 0; s < 2; s++) {
        val[j] = s ? xm : xp;
        dg_tensor_copy_from_host(p[k], val);
        l[s] = out_dot_w(gc_forward(c, ctx, p), w);
        dg_ctx_reset_step(ctx);
    }
    val[j] = x0;
    return (l[0] - l[1]) / ((double)xp - (double)xm);
}

static bool run_gradcheck(const gc_case *c, gc_err *tot) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    CHECK_NOT_NULL(ctx);
    if (!ctx) return false;
    double eps = c->eps > 0 ? c->eps : 1e-2;

    int np = 0;
    dg_tensor *p[4] = {0};
    float *val[4] = {0};
    int64_t pn[4] = {0};
    for (int k = 0; k < 4 && case_shape(c, k); k++, np++) {
        int64_t shape[DG_MAX_DIMS];
        int nd = dgt_parse_shape(case_shape(c, k), shape);
        p[k] = dg_param_new(ctx, NULL, nd, shape);
        CHECK_NOT_NULL(p[k]);
        if (!p[k]) {
            dg_ctx_free(ctx);
            return false;
        }
        pn[k] = dgt_numel(nd, shape);
    }
    for (int k = 0; k < np; k++) {
        val[k] = malloc(sizeof(float) * (size_t)pn[k]);
        DG_ASSERT(val[k]);
        dgt_fill(&g_rng, val[k], pn[k], c->kind[k]);
        dg_tensor_copy_from_host(p[k], val[k]);
    }

    /* Analytic gradients. */
    bool ok = true;
    dg_tensor *out = gc_forward(c, ctx, p);
    CHECKF(out != NULL, "%s: forward returned NULL", c->name);
    if (!out) {
        ok = false;
        goto done;
    }
    int64_t nout = dg_numel(out);
    double *w = malloc(sizeof(double) * (size_t)nout);
    float *wf = malloc(sizeof(float) * (size_t)nout);
    DG_ASSERT(w && wf);
    for (int64_t i = 0; i < nout; i++) wf[i] = (float)dgt_normal(&g_rng), w[i] = wf[i];
    dg_tensor *wt = dg_tensor_from(ctx, DG_F32, out->ndim, out->shape, wf);
    dg_tensor *loss = dg_sum(dg_mul(out, wt));
    CHECK_NOT_NULL(loss);
    if (!loss || dg_backward(loss) != DG_OK) {
        dgt_fail(__FILE__, __LINE__, "%s: backward failed", c->name);
        ok = false;
        free(w);
        free(wf);
        goto done;
    }
    float *ana[4] = {0};
    for (int k = 0; k < np; k++) {
        ana[k] = malloc(sizeof(float) * (size_t)pn[k]);
        DG_ASSERT(ana[k]);
        dg_tensor_to_host(p[k]->grad, ana[k]);
    }
    dg_ctx_reset_step(ctx);

    /* Numeric gradients, no recording. */
    dg_set_grad_enabled(ctx, false);
    gc_err e = {0, 0, 0};
    for (int k = 0; k < np; k++) {
        for (int64_t j = 0; j < pn[k]; j++) {
            /* Richardson extrapolation of two central differences:
             * error O(eps^4) instead of O(eps^2). */
            float x0 = val[k][j];
            double d1 = central_diff(c, ctx, p, val[k], k, j, eps, w);
            double d2 = central_diff(c, ctx, p, val[k], k, j, 2 * eps, w);
            val[k][j] = x0;
            dg_tensor_copy_from_host(p[k], val[k]);
            double num = (4 * d1 - d2) / 3;
            double an = ana[k][j];
            double d = fabs(num - an), scale = fmax(fabs(num), fabs(an));
            double tol = GC_ATOL + GC_RTOL * scale;
            if (d > e.max_abs) e.max_abs = d;
            if (scale > 1e-6 && d / scale > e.max_rel) e.max_rel = d / scale;
            if (d / tol > e.max_tol) e.max_tol = d / tol;
            if (d > tol) {
                if (ok)
                    dgt_fail(__FILE__, __LINE__,
                             "%s: d loss / d input%d[%lld]: analytic %.7g, numeric %.7g",
                             c->name, k, (long long)j, an, num);
                ok = false;
            }
        }
    }
    dg_set_grad_enabled(ctx, true);
    printf("  %-34s max abs err %.2e  max rel err %.2e  %3.0f%% of tol  %s\n", c->name,
           e.max_abs, e.max_rel, 100 * e.max_tol, ok ? "ok" : "FAIL");
    if (e.max_abs > tot->max_abs) tot->max_abs = e.max_abs;
    if (e.max_rel > tot->max_rel) tot->max_rel = e.max_rel;
    if (e.max_tol > tot->max_tol) tot->max_tol = e.max_tol;
    for (int k = 0; k < np; k++) free(ana[k]);
    free(w);
    free(wf);
done:
    for (int k = 0; k < np; k++) free(val[k]);
    dg_ctx_free(ctx);
    return ok;
}

static void test_gradcheck_all(void) {
    static gc_case cases[256];
    int n = build_cases(cases, 256), bad = 0;
    gc_err tot = {0, 0, 0};
    printf("gradient checks (atol %g, rtol %g):\n", GC_ATOL, GC_RTOL);
    for (int i = 0; i < n; i++)
        if (!run_gradcheck(&cases[i], &tot)) bad++;
    printf("gradient checks: %d cases, %d failed, max abs err %.2e, max rel err %.2e, "
           "worst %.0f%% of tolerance\n\n", n, bad, tot.max_abs, tot.max_rel,
           100 * tot.max_tol);
}

/* ---- autograd semantics ---------------------------------------------------- */

static void host_of(const dg_tensor *t, float *dst) { dg_tensor_to_host(t, dst); }

static dg_tensor *param_from(dg_ctx *ctx, int ndim, const int64_t *shape, const float *v) {
    dg_tensor *p = dg_param_new(ctx, NULL, ndim, shape);
    if (p) dg_tensor_copy_from_host(p, v);
    return p;
}

static void test_accumulate(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[2] = {3, 4};
    float v[12], w[12], g[12];
    dgt_fill(&g_rng, v, 12, DGT_N);
    dgt_fill(&g_rng, w, 12, DGT_N);
    dg_tensor *p = param_from(ctx, 2, s, v);
    CHECK_NOT_NULL(p);
    CHECK_NOT_NULL(p->grad);   /* parameter gradients always exist */
    if (!p || !p->grad) goto out;
    host_of(p->grad, g);
    for (int i = 0; i < 12; i++) CHECK_NEAR(g[i], 0, 0, 0);
    for (int rep = 1; rep <= 3; rep++) {
        dg_tensor *loss = dg_sum(dg_mul(p, dg_tensor_from(ctx, DG_F32, 2, s, w)));
        CHECK(dg_backward(loss) == DG_OK);
        if (rep == 2) dg_ctx_reset_step(ctx);   /* grads survive the arena reset */
        host_of(p->grad, g);
        for (int i = 0; i < 12; i++) CHECK_NEAR(g[i], rep * w[i], 1e-6, 1e-6);
    }
    dg_ctx_zero_grad(ctx);
    host_of(p->grad, g);
    for (int i = 0; i < 12; i++) CHECK_NEAR(g[i], 0, 0, 0);
    dg_tensor *loss = dg_sum(dg_mul(p, dg_tensor_from(ctx, DG_F32, 2, s, w)));
    CHECK(dg_backward(loss) == DG_OK);
    host_of(p->grad, g);
    for (int i = 0; i < 12; i++) CHECK_NEAR(g[i], w[i], 1e-6, 1e-6);
    /* A one-element loss that is not 0-dim ([1, 1]) is accepted too. */
    dg_ctx_zero_grad(ctx);
    int dims[2] = {0, 1};
    loss = dg_sum_dims(dg_mul(p, dg_tensor_from(ctx, DG_F32, 2, s, w)), 2, dims, true);
    CHECK(loss && loss->ndim == 2 && loss->shape[0] == 1 && loss->shape[1] == 1);
    CHECK(dg_backward(loss) == DG_OK);
    host_of(p->grad, g);
    for (int i = 0; i < 12; i++) CHECK_NEAR(g[i], w[i], 1e-6, 1e-6);
out:
    dg_ctx_free(ctx);
    printf("accumulate / zero_grad: done\n");
}

static void check_no_record(const char *what, const dg_tensor *t) {
    CHECKF(t != NULL, "no-grad %s returned NULL", what);
    if (!t) return;
    CHECKF(!t->requires_grad, "no-grad %s: requires_grad is true", what);
    CHECKF(t->grad_fn == NULL, "no-grad %s: grad_fn is set", what);
}

static void test_no_grad(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[2] = {3, 4}, ws[2] = {2, 4}, n3 = 3;
    float v[12], wv[8], out[12];
    int32_t tgt[3] = {0, 1, 3};
    dgt_fill(&g_rng, v, 12, DGT_POS);
    dgt_fill(&g_rng, wv, 8, DGT_N);
    dg_tensor *p = param_from(ctx, 2, s, v), *wp = param_from(ctx, 2, ws, wv);
    CHECK(dg_is_grad_enabled(ctx));
    CHECK(dg_set_grad_enabled(ctx, false) == true);
    CHECK(!dg_is_grad_enabled(ctx));
    dg_tensor *y = dg_mul(p, p);
    check_no_record("mul", y);
    if (y) {
        host_of(y, out);
        for (int i = 0; i < 12; i++) CHECK_NEAR(out[i], v[i] * v[i], 1e-6, 1e-6);
    }
    check_no_record("add", dg_add(p, p));
    check_no_record("exp", dg_exp(p));
    check_no_record("log", dg_log(p));
    check_no_record("relu", dg_relu(p));
    check_no_record("matmul", dg_matmul(p, dg_transpose(wp, 0, 1)));
    check_no_record("linear", dg_linear(p, wp, NULL));
    check_no_record("transpose", dg_transpose(p, 0, 1));
    check_no_record("reshape", dg_reshape(p, 1, (int64_t[]){12}));
    check_no_record("slice", dg_slice(p, 1, 1, 2));
    check_no_record("softmax", dg_softmax(p, 1));
    check_no_record("sum", dg_sum(p));
    check_no_record("cross_entropy",
                    dg_cross_entropy(p, dg_tensor_from(ctx, DG_I32, 1, &n3, tgt)));
    dg_clear_error();
    CHECK(dg_backward(dg_sum(y)) == DG_ERR);   /* nothing to differentiate */
    CHECK(dg_has_error());
    CHECK(dg_set_grad_enabled(ctx, true) == false);
    CHECK(dg_is_grad_enabled(ctx));
    /* Grad mode on, but no input requires grad: nothing recorded either. */
    dg_tensor *c = dg_tensor_from(ctx, DG_F32, 2, s, v);
    CHECK(c && !c->requires_grad && c->grad_fn == NULL);
    check_no_record("mul of constants", dg_mul(c, c));
    /* Grad mode back on: recorded again. */
    dg_tensor *z = dg_mul(p, c);
    CHECK(z && z->requires_grad && z->grad_fn != NULL);
    dg_ctx_free(ctx);
    printf("no-grad mode: done\n");
}

static void test_detach(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[1] = {5};
    float v[5], g[5];
    dgt_fill(&g_rng, v, 5, DGT_N);
    dg_tensor *p = param_from(ctx, 1, s, v);
    dg_tensor *y = dg_mul_scalar(p, 2.0f);
    dg_tensor *d = dg_detach(y);
    CHECK_NOT_NULL(d);
    if (d) {
        CHECK(!d->requires_grad);
        CHECK(d->grad_fn == NULL);
        CHECK(d->data == y->data);   /* shares storage */
    }
    /* loss = sum(detach(2p) * p): d loss/dp = 2p, not 4p. */
    CHECK(dg_backward(dg_sum(dg_mul(d, p))) == DG_OK);
    host_of(p->grad, g);
    for (int i = 0; i < 5; i++) CHECK_NEAR(g[i], 2 * v[i], 1e-6, 1e-6);
    dg_tensor *dp = dg_detach(p);
    CHECK(dp && !dp->requires_grad && dp->grad_fn == NULL && dp->data == p->data);
    /* An op on detached tensors only records nothing. */
    dg_tensor *e = dg_exp(dp);
    CHECK(e && !e->requires_grad && e->grad_fn == NULL);
    dg_ctx_free(ctx);
    printf("detach: done\n");
}

static void test_used_twice(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[2] = {2, 3};
    float v[6], a[6], g[6];
    dgt_fill(&g_rng, v, 6, DGT_N);
    dgt_fill(&g_rng, a, 6, DGT_N);
    dg_tensor *p = param_from(ctx, 2, s, v);
    /* x * x */
    CHECK(dg_backward(dg_sum(dg_mul(p, p))) == DG_OK);
    host_of(p->grad, g);
    for (int i = 0; i < 6; i++) CHECK_NEAR(g[i], 2 * v[i], 1e-6, 1e-6);
    /* A parameter used by two ops: sum(p * a) + sum(exp(p)). */
    dg_ctx_zero_grad(ctx);
    dg_tensor *at = dg_tensor_from(ctx, DG_F32, 2, s, a);
    CHECK(dg_backward(dg_add(dg_sum(dg_mul(p, at)), dg_sum(dg_exp(p)))) == DG_OK);
    host_of(p->grad, g);
    for (int i = 0; i < 6; i++) CHECK_NEAR(g[i], a[i] + expf(v[i]), 1e-6, 1e-5);
    /* An intermediate used twice: h = 3p, sum(h * h) -> 18p. */
    dg_ctx_zero_grad(ctx);
    dg_tensor *h = dg_mul_scalar(p, 3.0f);
    CHECK(dg_backward(dg_sum(dg_mul(h, h))) == DG_OK);
    host_of(p->grad, g);
    for (int i = 0; i < 6; i++) CHECK_NEAR(g[i], 18 * v[i], 1e-5, 1e-5);
    dg_ctx_free(ctx);
    printf("tensor used twice: done\n");
}

static void test_backward_errors(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[2] = {3, 4};
    float v[12];
    dgt_fill(&g_rng, v, 12, DGT_N);
    dg_tensor *p = param_from(ctx, 2, s, v);
    dg_clear_error();
    CHECK(dg_backward(dg_mul(p, p)) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "[3, 4]");
    dg_clear_error();
    dg_tensor *c = dg_sum(dg_tensor_from(ctx, DG_F32, 2, s, v));
    CHECK(dg_backward(c) == DG_ERR);
    CHECK(dg_has_error());
    dg_ctx_free(ctx);
    printf("backward errors: done\n");
}

/* The op must return NULL with a message containing each of subs. */
static void expect_error(const char *what, const dg_tensor *t, const char *sub1,
                         const char *sub2) {
    CHECKF(t == NULL, "%s: expected NULL, got a tensor", what);
    CHECKF(dg_has_error(), "%s: no error message", what);
    if (sub1) CHECKF(strstr(dg_last_error(), sub1), "%s: message \"%s\" lacks \"%s\"", what,
                     dg_last_error(), sub1);
    if (sub2) CHECKF(strstr(dg_last_error(), sub2), "%s: message \"%s\" lacks \"%s\"", what,
                     dg_last_error(), sub2);
    printf("  %-34s -> \"%s\"\n", what, dg_last_error());
    dg_clear_error();
}

static dg_tensor *rand_tensor(dg_ctx *ctx, const char *shape) {
    int64_t s[DG_MAX_DIMS];
    int nd = dgt_parse_shape(shape, s);
    float v[256];
    DG_ASSERT(dgt_numel(nd, s) <= 256);
    dgt_fill(&g_rng, v, dgt_numel(nd, s), DGT_N);
    return dg_tensor_from(ctx, DG_F32, nd, s, v);
}

static void test_shape_errors(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    printf("shape errors:\n");
    dg_clear_error();
    expect_error("matmul 2-D", dg_matmul(rand_tensor(ctx, "2,3"), rand_tensor(ctx, "4,5")),
                 "[2, 3]", "[4, 5]");
    expect_error("matmul batch",
                 dg_matmul(rand_tensor(ctx, "2,3,4"), rand_tensor(ctx, "3,4,5")),
                 "[2, 3, 4]", "[3, 4, 5]");
    expect_error("matmul 1-D", dg_matmul(rand_tensor(ctx, "3"), rand_tensor(ctx, "4")),
                 "[3]", "[4]");
    expect_error("add broadcast", dg_add(rand_tensor(ctx, "3,4"), rand_tensor(ctx, "5")),
                 "[3, 4]", "[5]");
    expect_error("mul broadcast", dg_mul(rand_tensor(ctx, "2,3"), rand_tensor(ctx, "3,2")),
                 "[2, 3]", "[3, 2]");
    expect_error("div broadcast 3-D",
                 dg_div(rand_tensor(ctx, "2,3,4"), rand_tensor(ctx, "3,3,1")),
                 "[2, 3, 4]", "[3, 3, 1]");
    expect_error("linear in_features",
                 dg_linear(rand_tensor(ctx, "6,5"), rand_tensor(ctx, "4,3"), NULL),
                 "[6, 5]", "[4, 3]");
    expect_error("linear bias",
                 dg_linear(rand_tensor(ctx, "6,5"), rand_tensor(ctx, "4,5"),
                           rand_tensor(ctx, "3")),
                 "[3]", NULL);
    int64_t n4 = 4, n6 = 6;
    int32_t t4[4] = {0, 1, 2, 3}, t6[6] = {0, 1, 7, 2, 3, 4}, tneg[6] = {0, 1, -3, 2, 3, 4};
    expect_error("cross_entropy target length",
                 dg_cross_entropy(rand_tensor(ctx, "6,5"),
                                  dg_tensor_from(ctx, DG_I32, 1, &n4, t4)),
                 "[6, 5]", "[4]");
    expect_error("cross_entropy label 7 of 5",
                 dg_cross_entropy(rand_tensor(ctx, "6,5"),
                                  dg_tensor_from(ctx, DG_I32, 1, &n6, t6)),
                 "7", NULL);
    expect_error("cross_entropy label -3",
                 dg_cross_entropy(rand_tensor(ctx, "6,5"),
                                  dg_tensor_from(ctx, DG_I32, 1, &n6, tneg)),
                 "-3", NULL);
    expect_error("cross_entropy 1-D logits",
                 dg_cross_entropy(rand_tensor(ctx, "5"),
                                  dg_tensor_from(ctx, DG_I32, 1, &n4, t4)),
                 "[5]", NULL);
    expect_error("reshape numel", dg_reshape(rand_tensor(ctx, "2,3"), 2, (int64_t[]){4, 2}),
                 "[2, 3]", NULL);
    expect_error("softmax dim", dg_softmax(rand_tensor(ctx, "2,3"), 2), NULL, NULL);
    expect_error("sum_dims dim", dg_sum_dims(rand_tensor(ctx, "2,3"), 1, (int[]){-3}, false),
                 NULL, NULL);
    expect_error("transpose dim", dg_transpose(rand_tensor(ctx, "2,3"), 0, 2), NULL, NULL);
    expect_error("slice range", dg_slice(rand_tensor(ctx, "2,3"), 1, 2, 2), NULL, NULL);
    expect_error("permute repeat", dg_permute(rand_tensor(ctx, "2,3"), (int[]){0, 0}), NULL,
                 NULL);

    /* NULL in, NULL out, no new message; and the first message wins. */
    dg_clear_error();
    CHECK(dg_relu(NULL) == NULL);
    CHECK(dg_add(rand_tensor(ctx, "2"), NULL) == NULL);
    CHECK(dg_matmul(NULL, rand_tensor(ctx, "2")) == NULL);
    CHECK(dg_sum(NULL) == NULL);
    CHECKF(!dg_has_error(), "NULL input recorded a message: %s", dg_last_error());
    dg_tensor *bad = dg_matmul(rand_tensor(ctx, "2,3"), rand_tensor(ctx, "4,5"));
    dg_tensor *chain = dg_sum(dg_relu(dg_add(bad, rand_tensor(ctx, "7"))));
    CHECK(chain == NULL);
    CHECK_CONTAINS(dg_last_error(), "[4, 5]");
    dg_clear_error();
    dg_ctx_free(ctx);
    printf("shape errors: done\n");
}

/* grad-ready hook */
typedef struct {
    int count[16];
    float *snap[16];
    int64_t numel[16];
    dg_tensor *watch_zero;   /* must still have a zero gradient when first hooked */
    bool first_seen, watch_was_zero;
    int calls;
} hook_state;

static void on_grad_ready(dg_tensor *param, void *user) {
    hook_state *h = user;
    int i = param->param_index;
    DG_ASSERT(i >= 0 && i < 16);
    h->count[i]++;
    h->calls++;
    if (!h->snap[i]) {
        h->numel[i] = dg_numel(param);
        h->snap[i] = malloc(sizeof(float) * (size_t)h->numel[i]);
        DG_ASSERT(h->snap[i]);
    }
    dg_tensor_to_host(param->grad, h->snap[i]);
    if (!h->first_seen && h->watch_zero) {
        h->first_seen = true;
        int64_t n = dg_numel(h->watch_zero);
        float *g = malloc(sizeof(float) * (size_t)n);
        DG_ASSERT(g);
        dg_tensor_to_host(h->watch_zero->grad, g);
        h->watch_was_zero = true;
        for (int64_t k = 0; k < n; k++)
            if (g[k] != 0) h->watch_was_zero = false;
        free(g);
    }
}

static void test_grad_ready_hook(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    const char *shapes[6] = {"4,5", "4", "4,4", "4", "3,4", "7"};
    dg_tensor *p[6];
    for (int k = 0; k < 6; k++) {
        int64_t s[DG_MAX_DIMS];
        int nd = dgt_parse_shape(shapes[k], s);
        p[k] = dg_param_new(ctx, NULL, nd, s);
        CHECK_NOT_NULL(p[k]);
        if (!p[k]) {
            dg_ctx_free(ctx);
            return;
        }
        CHECK_EQ_INT(p[k]->param_index, k);
    }
    for (int k = 0; k < 6; k++) {
        float v[32];
        dgt_fill(&g_rng, v, dg_numel(p[k]), DGT_N);
        dg_tensor_copy_from_host(p[k], v);
    }
    hook_state hs;
    memset(&hs, 0, sizeof hs);
    hs.watch_zero = p[0];   /* the first layer's grad is the last to be computed */
    dg_ctx_set_grad_ready_hook(ctx, on_grad_ready, &hs);
    int64_t n = 6;
    int32_t tgt[6] = {0, 1, 2, 2, 1, 0};
    for (int rep = 1; rep <= 2; rep++) {
        dg_ctx_zero_grad(ctx);
        hs.first_seen = false;
        dg_tensor *x = rand_tensor(ctx, "6,5");
        /* p2 (4x4) is used twice; p5 is never used. */
        dg_tensor *h = dg_relu(dg_linear(x, p[0], p[1]));
        h = dg_exp(dg_mul_scalar(dg_linear(h, p[2], p[3]), 0.1f));
        h = dg_linear(h, p[2], NULL);
        dg_tensor *loss = dg_cross_entropy(dg_linear(h, p[4], NULL),
                                           dg_tensor_from(ctx, DG_I32, 1, &n, tgt));
        CHECK(dg_backward(loss) == DG_OK);
        for (int k = 0; k < 5; k++) {
            CHECKF(hs.count[k] == rep, "hook for param %d fired %d times after %d backward(s)",
                   k, hs.count[k], rep);
            if (!hs.snap[k]) continue;
            float g[32];
            dg_tensor_to_host(p[k]->grad, g);
            CHECKF(memcmp(g, hs.snap[k], sizeof(float) * (size_t)hs.numel[k]) == 0,
                   "param %d: gradient changed after its grad-ready hook", k);
        }
        CHECKF(hs.watch_was_zero,
               "the first hook call came after the first layer's gradient was computed: "
               "the hook does not fire as soon as a gradient is final");
        dg_ctx_reset_step(ctx);
    }
    printf("grad-ready hook: unused parameter's hook fired %d time(s) in 2 backward passes "
           "(info)\n", hs.count[5]);
    dg_ctx_set_grad_ready_hook(ctx, NULL, NULL);
    int before = hs.calls;
    dg_tensor *loss = dg_sum(dg_mul(p[1], p[1]));
    CHECK(dg_backward(loss) == DG_OK);
    CHECK_EQ_INT(hs.calls, before);
    for (int k = 0; k < 16; k++) free(hs.snap[k]);
    dg_ctx_free(ctx);
    printf("grad-ready hook: done\n");
}

/* Parameters stay valid while the flat buffer grows. */
static void test_param_buffer(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s3 = 3, s100 = 100;
    float v[3] = {1, 2, 3}, got[3];
    dg_tensor *p = param_from(ctx, 1, &s3, v);
    CHECK_NOT_NULL(p);
    if (!p) {
        dg_ctx_free(ctx);
        return;
    }
    for (int k = 0; k < 50; k++) CHECK_NOT_NULL(dg_param_new(ctx, NULL, 1, &s100));
    host_of(p, got);
    for (int i = 0; i < 3; i++) CHECK_NEAR(got[i], v[i], 0, 0);
    size_t numel = 0, gnumel = 0;
    float *pb = dg_ctx_param_buffer(ctx, &numel);
    float *gb = dg_ctx_grad_buffer(ctx, &gnumel);
    CHECK(numel >= 3 + 50 * 100);   /* parameters may be padded for alignment */
    CHECK_EQ_INT(gnumel, numel);
    CHECK_EQ_INT(dg_param_offset(p), 0);
    CHECK((float *)p->data == pb + dg_param_offset(p));
    CHECK(p->grad && (float *)p->grad->data == gb + dg_param_offset(p));
    int np = 0;
    dg_tensor **all = dg_ctx_params(ctx, &np);
    CHECK_EQ_INT(np, 51);
    for (int k = 0; k < np; k++) {   /* registration order, no overlap, inside the buffer */
        size_t off = dg_param_offset(all[k]), end = off + (size_t)dg_numel(all[k]);
        CHECK_EQ_INT(all[k]->param_index, k);
        CHECK(end <= numel);
        CHECK((float *)all[k]->data == pb + off);
        if (k > 0) CHECK(off >= dg_param_offset(all[k - 1]) + (size_t)dg_numel(all[k - 1]));
    }
    CHECK(dg_backward(dg_sum(dg_mul(p, p))) == DG_OK);
    host_of(p->grad, got);
    for (int i = 0; i < 3; i++) CHECK_NEAR(got[i], 2 * v[i], 0, 0);
    dg_ctx_free(ctx);
    printf("flat parameter buffer: done\n");
}

/* 2000 training steps: the arena stops growing after the first steps. */
static void test_memory_steady_state(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 7);
    dg_module *mods[3] = {dg_nn_linear(ctx, 8, 16, true), dg_nn_relu(ctx),
                          dg_nn_linear(ctx, 16, 4, true)};
    dg_module *net = dg_nn_sequential(ctx, 3, mods);
    CHECK_NOT_NULL(net);
    dg_tensor **params = NULL;
    int np = net ? dg_module_parameters(net, &params) : 0;
    dg_optim *opt = dg_optim_adam(params, np, dg_adam_defaults());
    CHECK_NOT_NULL(opt);
    if (!net || !opt) {
        dg_ctx_free(ctx);
        return;
    }
    float xv[16 * 8];
    int32_t yv[16];
    dgt_fill(&g_rng, xv, 16 * 8, DGT_N);
    for (int i = 0; i < 16; i++) yv[i] = (xv[i * 8] > 0) + 2 * (xv[i * 8 + 1] > 0);
    int64_t xs[2] = {16, 8}, ys = 16;
    uint64_t mallocs_ref = 0;
    size_t cap_ref = 0;
    float first_loss = 0, last_loss = 0;
    int steps = 2000;
    for (int s = 0; s < steps; s++) {
        dg_optim_zero_grad(opt);
        dg_tensor *x = dg_tensor_from(ctx, DG_F32, 2, xs, xv);
        dg_tensor *y = dg_tensor_from(ctx, DG_I32, 1, &ys, yv);
        dg_tensor *loss = dg_cross_entropy(dg_module_forward(net, x), y);
        if (!loss) {
            CHECK_NOT_NULL(loss);
            break;
        }
        last_loss = dg_item(loss);
        if (s == 0) first_loss = last_loss;
        CHECK(dg_backward(loss) == DG_OK);
        dg_optim_step(opt);
        if (s % 100 == 0) {   /* an evaluation pass without grad in the same step */
            bool prev = dg_set_grad_enabled(ctx, false);
            dg_tensor *pred = dg_argmax(dg_module_forward(net, x), 1, false);
            CHECK(pred && pred->dtype == DG_I32);
            dg_set_grad_enabled(ctx, prev);
        }
        dg_ctx_reset_step(ctx);
        if (s == 4) {
            mallocs_ref = dg_ctx_arena_mallocs(ctx);
            cap_ref = dg_ctx_arena_capacity(ctx);
        }
        if (s > 4 && (dg_ctx_arena_mallocs(ctx) != mallocs_ref ||
                      dg_ctx_arena_capacity(ctx) != cap_ref)) {
            dgt_fail(__FILE__, __LINE__,
                     "arena grew at step %d: mallocs %llu -> %llu, capacity %zu -> %zu", s,
                     (unsigned long long)mallocs_ref,
                     (unsigned long long)dg_ctx_arena_mallocs(ctx), cap_ref,
                     dg_ctx_arena_capacity(ctx));
            break;
        }
    }
    printf("memory: %d steps, arena mallocs %llu, capacity %zu bytes, loss %.4f -> %.4f\n",
           steps, (unsigned long long)dg_ctx_arena_mallocs(ctx), dg_ctx_arena_capacity(ctx),
           first_loss, last_loss);
    CHECK(cap_ref > 0);
    CHECKF(last_loss < 0.5f * first_loss, "training did not reduce the loss: %g -> %g",
           first_loss, last_loss);
    dg_optim_free(opt);
    dg_ctx_free(ctx);
}

/* Two graphs built before either backward. PyTorch gives grad = a + b after
 * both backward calls. dgrad's tape is consumed by a backward, so it may
 * instead refuse the second call with DG_ERR; what it must not do is
 * return DG_OK and silently drop the second loss's gradient. */
static void test_two_graphs(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[1] = {4};
    float v[4], a[4], b[4], g[4];
    dgt_fill(&g_rng, v, 4, DGT_N);
    dgt_fill(&g_rng, a, 4, DGT_N);
    dgt_fill(&g_rng, b, 4, DGT_N);
    dg_tensor *p = param_from(ctx, 1, s, v);
    dg_tensor *l1 = dg_sum(dg_mul(p, dg_tensor_from(ctx, DG_F32, 1, s, a)));
    dg_tensor *l2 = dg_sum(dg_mul(p, dg_tensor_from(ctx, DG_F32, 1, s, b)));
    CHECK(dg_backward(l1) == DG_OK);
    host_of(p->grad, g);
    for (int i = 0; i < 4; i++) CHECK_NEAR(g[i], a[i], 1e-6, 1e-6);
    dg_status st = dg_backward(l2);
    host_of(p->grad, g);
    bool summed = true, unchanged = true;
    for (int i = 0; i < 4; i++) {
        summed = summed && dgt_close(g[i], a[i] + b[i], 1e-6, 1e-6);
        unchanged = unchanged && dgt_close(g[i], a[i], 1e-6, 1e-6);
    }
    CHECKF((st == DG_OK && summed) || (st == DG_ERR && unchanged),
           "backward(loss2) after backward(loss1), both graphs built first: status %s, "
           "grad[0] %g; expected DG_OK with a+b = %g, or DG_ERR with grad unchanged (a = %g)",
           st == DG_OK ? "DG_OK" : "DG_ERR", g[0], a[0] + b[0], a[0]);
    printf("two graphs, two backward calls: %s\n",
           st == DG_OK ? (summed ? "gradients summed" : "DG_OK, gradient lost")
                       : dg_last_error());
    dg_clear_error();
    dg_ctx_free(ctx);
}

/* A parameter used directly as the loss: d p / d p = 1, accumulated. */
static void test_param_as_loss(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    float v = 0.5f, g = 0;
    dg_tensor *p = param_from(ctx, 0, NULL, &v);
    CHECK_NOT_NULL(p);
    if (p) {
        CHECK(dg_backward(p) == DG_OK);
        CHECK(dg_backward(p) == DG_OK);
        host_of(p->grad, &g);
        CHECKF(g == 2.0f, "dg_backward(param) twice: grad %g, expected 2 (accumulated)", g);
    }
    dg_ctx_free(ctx);
    printf("parameter as the loss: done\n");
}

/* Every tensor that requires grad gets .grad, intermediates included; a
 * parameter the loss does not depend on keeps a zero gradient. Calling
 * backward again on a consumed graph must not change any gradient. */
static void test_intermediate_grad(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[2] = {2, 3};
    float v[6], w[6], g[6];
    dgt_fill(&g_rng, v, 6, DGT_N);
    dgt_fill(&g_rng, w, 6, DGT_N);
    dg_tensor *p = param_from(ctx, 2, s, v), *q = param_from(ctx, 2, s, v);
    dg_tensor *h = dg_mul_scalar(p, 2.0f);
    dg_tensor *loss = dg_sum(dg_mul(h, dg_tensor_from(ctx, DG_F32, 2, s, w)));
    dg_tensor *unused = dg_exp(q);   /* recorded, but not part of the loss */
    CHECK(unused && unused->requires_grad);
    CHECK(dg_backward(loss) == DG_OK);
    CHECKF(h->grad != NULL, "intermediate h has no .grad after backward");
    if (h->grad) {
        host_of(h->grad, g);
        for (int i = 0; i < 6; i++) CHECK_NEAR(g[i], w[i], 1e-6, 1e-6);
    }
    host_of(q->grad, g);
    for (int i = 0; i < 6; i++) CHECK_NEAR(g[i], 0, 0, 0);
    dg_status st = dg_backward(loss);   /* the tape is consumed */
    host_of(p->grad, g);
    for (int i = 0; i < 6; i++) CHECK_NEAR(g[i], 2 * w[i], 1e-6, 1e-6);
    printf("backward twice on one graph: status %s (grads unchanged)\n",
           st == DG_OK ? "DG_OK" : "DG_ERR");
    dg_clear_error();
    dg_ctx_free(ctx);
    printf("intermediate gradients: done\n");
}

/* A persistent tensor that requires grad (an input optimized or inspected
 * across steps) gets each pass's gradient in .grad, which is an arena
 * tensor: dg_ctx_reset_step sets it to NULL, and the next step's backward
 * must not write through the released one. The arena is made to grow in
 * between, so a stale pointer would point into freed memory (ASan) or give
 * wrong values. */
static void test_persistent_requires_grad(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t n = 1000;
    float v[1000], g[1000];
    dgt_fill(&g_rng, v, n, DGT_N);
    dg_tensor *x = dg_tensor_persistent(ctx, DG_F32, 1, &n);
    dg_tensor_copy_from_host(x, v);
    x->requires_grad = true;
    for (int step = 0; step < 3; step++) {
        int64_t big = (int64_t)1 << (18 + 2 * step);   /* grows the arena each step */
        CHECK_NOT_NULL(dg_zeros(ctx, DG_F32, 1, &big));
        float k = (float)(step + 1);
        CHECK(dg_backward(dg_sum(dg_mul_scalar(dg_mul(x, x), k))) == DG_OK);
        CHECK_NOT_NULL(x->grad);
        if (!x->grad) break;
        host_of(x->grad, g);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += !dgt_close(g[i], 2.0 * k * v[i], 1e-5, 1e-5);
        CHECKF(bad == 0, "step %d: %d of %lld gradient values wrong", step, bad, (long long)n);
        dg_ctx_reset_step(ctx);
        CHECK(x->grad == NULL);
    }
    dg_ctx_free(ctx);
}

/* Optimizers over parameters registered one after the other update them as
 * one range of the flat buffers (state laid out like the parameters, the
 * alignment padding included); in any other order, one by one. Both must
 * give the same parameters bit for bit, the padding must stay zero, and a
 * parameter registered after the optimizer (the flat buffers move) must not
 * disturb it. Shapes of 7, 33 and 5 floats leave padding after each. */
enum { OPT_NP = 3 };

static void optim_run(int kind, bool reverse, float *out) {
    static const int64_t sizes[OPT_NP] = { 7, 33, 5 };
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_tensor *p[OPT_NP], *q[OPT_NP];
    for (int i = 0; i < OPT_NP; i++) {
        float v[33];
        dgt_fill(&(dgt_rng){ 77u + (uint64_t)i }, v, sizes[i], DGT_N);
        p[i] = param_from(ctx, 1, &sizes[i], v);
        q[OPT_NP - 1 - i] = p[i];
    }
    dg_optim *o;
    if (kind == 0) {
        dg_sgd_opts so = dg_sgd_defaults(0.05f);
        so.momentum = 0.9f;
        so.weight_decay = 0.1f;
        so.nesterov = true;
        o = dg_optim_sgd(reverse ? q : p, OPT_NP, so);
    } else {
        dg_adam_opts ao = kind == 2 ? dg_adamw_defaults() : dg_adam_defaults();
        ao.weight_decay = 0.1f;
        ao.amsgrad = kind == 1;
        o = kind == 2 ? dg_optim_adamw(reverse ? q : p, OPT_NP, ao)
                      : dg_optim_adam(reverse ? q : p, OPT_NP, ao);
    }
    DG_ASSERT(o != NULL);
    if (!reverse) {   /* the flat layout: state i sits where param i does */
        const dg_tensor *s0 = dg_optim_state(o, 0, 0), *s2 = dg_optim_state(o, 2, 0);
        CHECK((float *)s2->data - (float *)s0->data == (float *)p[2]->data - (float *)p[0]->data);
    }
    for (int step = 0; step < 4; step++) {
        if (step == 2) {   /* the flat buffers grow and move */
            int64_t big = 100000;
            CHECK_NOT_NULL(dg_param_new(ctx, "late", 1, &big));
        }
        dg_tensor *loss = NULL;
        for (int i = 0; i < OPT_NP; i++) {
            dg_tensor *t = dg_sum(dg_mul(dg_mul_scalar(p[i], (float)(i + 1)), p[i]));
            loss = loss ? dg_add(loss, t) : t;
        }
        dg_optim_zero_grad(o);
        CHECK(dg_backward(loss) == DG_OK);
        dg_optim_step(o);
        dg_ctx_reset_step(ctx);
    }
    int off = 0;
    for (int i = 0; i < OPT_NP; i++) {
        dg_tensor_to_host(p[i], out + off);
        off += (int)sizes[i];
        if (i + 1 < OPT_NP) {   /* the padding up to the next parameter (CPU: host memory) */
            int bad = 0;
            for (const float *z = (const float *)p[i]->data + sizes[i]; z < (float *)p[i + 1]->data; z++)
                bad += *z != 0.0f;
            for (const float *z = (const float *)p[i]->grad->data + sizes[i];
                 z < (float *)p[i + 1]->grad->data; z++)
                bad += *z != 0.0f;
            CHECKF(bad == 0, "optimizer %d: %d padding values not zero after param %d", kind, bad, i);
        }
    }
    dg_ctx_free(ctx);
}

static void test_optim_flat(void) {
    for (int kind = 0; kind < 3; kind++) {
        float flat[45], each[45];
        optim_run(kind, false, flat);
        optim_run(kind, true, each);
        CHECKF(!memcmp(flat, each, sizeof flat), "optimizer %d: flat and per-parameter differ", kind);
    }
}

static void count_hook(dg_tensor *param, void *user) {
    int *count = user;
    DG_ASSERT(param->param_index >= 0 && param->param_index < 4);
    count[param->param_index]++;
}

/* A parameter whose first use on the tape does not lead to the loss (a
 * logging branch, say) still gets its hook once its gradient is final. */
static void test_hook_unreached_first_use(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[1] = {3};
    float v[3] = {0.5f, -1.0f, 2.0f}, w[3] = {1.0f, 2.0f, 3.0f}, g[3];
    dg_tensor *p = param_from(ctx, 1, s, v);
    int count[4] = {0};
    dg_ctx_set_grad_ready_hook(ctx, count_hook, count);
    dg_tensor *side = dg_sum(dg_exp(p));   /* first use of p: not in the loss */
    CHECK(side != NULL);
    dg_tensor *loss = dg_sum(dg_mul(p, dg_tensor_from(ctx, DG_F32, 1, s, w)));
    CHECK(dg_backward(loss) == DG_OK);
    host_of(p->grad, g);
    for (int i = 0; i < 3; i++) CHECK_NEAR(g[i], w[i], 1e-6, 1e-6);
    CHECKF(count[0] == 1, "grad-ready hook fired %d times for a parameter whose first use "
           "is on a branch the loss does not reach (expected 1)", count[0]);
    dg_ctx_free(ctx);
    printf("grad-ready hook, unreached first use: done\n");
}

/* Large inputs stay finite; argmax takes the first of equal values. */
static void test_numerics(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[2] = {2, 3}, n2 = 2;
    float v[6] = {1000.0f, 0.0f, -1000.0f, 88.0f, 89.0f, 90.0f}, out[6];
    dg_tensor *x = dg_tensor_from(ctx, DG_F32, 2, s, v);
    dg_tensor *sm = dg_softmax(x, 1), *lsm = dg_log_softmax(x, 1);
    CHECK(sm && lsm);
    if (sm && lsm) {
        host_of(sm, out);
        CHECK_NEAR(out[0], 1.0, 1e-6, 0);
        CHECK_NEAR(out[1], 0.0, 1e-6, 0);
        CHECK_NEAR(out[5], 0.66524096, 1e-6, 1e-6);
        host_of(lsm, out);
        CHECK_NEAR(out[0], 0.0, 1e-6, 0);
        CHECK_NEAR(out[2], -2000.0, 0, 1e-6);
        CHECK_NEAR(out[3], -2.40760596, 1e-5, 1e-6);
    }
    int32_t t[2] = {2, 0};
    dg_tensor *ce = dg_cross_entropy(x, dg_tensor_from(ctx, DG_I32, 1, &n2, t));
    CHECK(ce != NULL);
    if (ce) CHECK_NEAR(dg_item(ce), (2000.0 + 2.40760596) / 2, 1e-3, 1e-6);
    float tv[8] = {1, 3, 3, 2, -1, -1, -1, -1};
    int64_t ts[2] = {2, 4};
    dg_tensor *am = dg_argmax(dg_tensor_from(ctx, DG_F32, 2, ts, tv), 1, false);
    CHECK(am != NULL);
    if (am) {
        int32_t idx[2];
        dg_tensor_to_host(am, idx);
        CHECK_EQ_INT(idx[0], 1);
        CHECK_EQ_INT(idx[1], 0);
    }
    /* Every target ignored: PyTorch gives nan (0 / 0). Informational. */
    int32_t ig[2] = {DG_IGNORE_INDEX, DG_IGNORE_INDEX};
    dg_tensor *ce0 = dg_cross_entropy(x, dg_tensor_from(ctx, DG_I32, 1, &n2, ig));
    printf("cross_entropy with every target ignored: %s %g (PyTorch: nan) (info)\n",
           ce0 ? "value" : "NULL", ce0 ? dg_item(ce0) : 0.0);
    dg_clear_error();
    dg_ctx_free(ctx);
    printf("numerics: done\n");
}

/* A tensor larger than an arena chunk: the arena still reaches a steady
 * state after the first step. */
static void test_memory_large(void) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t ws[2] = {64, 1024}, xs[2] = {256, 1024};
    dg_tensor *w = dg_param_new(ctx, "w", 2, ws);
    CHECK_NOT_NULL(w);
    if (!w) {
        dg_ctx_free(ctx);
        return;
    }
    dg_init_constant(w, 0.01f);
    float *xv = malloc(sizeof(float) * 256 * 1024);
    DG_ASSERT(xv);
    for (int i = 0; i < 256 * 1024; i++) xv[i] = (float)((i % 7) - 3) * 0.1f;
    uint64_t m_ref = 0;
    size_t c_ref = 0;
    for (int s = 0; s < 20; s++) {
        dg_tensor *x = dg_tensor_from(ctx, DG_F32, 2, xs, xv);   /* 1 MiB */
        dg_tensor *h = dg_exp(dg_mul_scalar(dg_matmul(x, dg_transpose(w, 0, 1)), 0.1f));
        dg_tensor *loss = dg_mean(h);
        CHECK(loss && dg_backward(loss) == DG_OK);
        dg_ctx_reset_step(ctx);
        if (s == 1) {
            m_ref = dg_ctx_arena_mallocs(ctx);
            c_ref = dg_ctx_arena_capacity(ctx);
        } else if (s > 1) {
            CHECKF(dg_ctx_arena_mallocs(ctx) == m_ref && dg_ctx_arena_capacity(ctx) == c_ref,
                   "large tensors: arena grew at step %d (mallocs %llu -> %llu)", s,
                   (unsigned long long)m_ref, (unsigned long long)dg_ctx_arena_mallocs(ctx));
            if (dg_ctx_arena_mallocs(ctx) != m_ref) break;
        }
    }
    printf("memory with 1 MiB tensors: arena mallocs %llu, capacity %zu bytes\n",
           (unsigned long long)dg_ctx_arena_mallocs(ctx), dg_ctx_arena_capacity(ctx));
    free(xv);
    dg_ctx_free(ctx);
}

/* Matrix products with an empty inner or outer dimension: [3,0]x[0,4] is
 * a [3,4] of zeros (as in PyTorch), [0,5]x[5,2] is [0,2]; backward works. */
static void test_matmul_empty(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s30[2] = { 3, 0 }, s04[2] = { 0, 4 }, s05[2] = { 0, 5 }, s52[2] = { 5, 2 };
    dg_tensor *a = dg_zeros(ctx, DG_F32, 2, s30), *b = dg_zeros(ctx, DG_F32, 2, s04);
    a->requires_grad = b->requires_grad = true;
    dg_tensor *c = dg_matmul(a, b);
    CHECK_NOT_NULL(c);
    if (c) {
        CHECK(c->ndim == 2 && c->shape[0] == 3 && c->shape[1] == 4);
        double s = 0;
        for (int64_t i = 0; i < 12; i++) s += fabs(dg_item_at(c, i));
        CHECK_NEAR(s, 0.0, 0, 0);
        CHECK(dg_backward(dg_sum(c)) == DG_OK);
    }
    dg_tensor *d = dg_matmul(dg_full(ctx, 2, s05, 1.0f), dg_full(ctx, 2, s52, 2.0f));
    CHECK_NOT_NULL(d);
    if (d) CHECK(d->ndim == 2 && d->shape[0] == 0 && d->shape[1] == 2 && dg_numel(d) == 0);
    dg_ctx_free(ctx);
}

int main(void) {
    dg_set_num_threads(1);
    test_gradcheck_all();
    test_accumulate();
    test_no_grad();
    test_detach();
    test_used_twice();
    test_backward_errors();
    test_shape_errors();
    test_grad_ready_hook();
    test_param_buffer();
    test_two_graphs();
    test_param_as_loss();
    test_intermediate_grad();
    test_persistent_requires_grad();
    test_optim_flat();
    test_hook_unreached_first_use();
    test_numerics();
    test_matmul_empty();
    test_memory_steady_state();
    test_memory_large();
    return dgt_report("test_gradcheck");
}
