/* test_torch_ref.c - dgrad against numbers PyTorch produced.
 *
 * Reads tests/fixtures/ops.txt and optim.txt (format: make_fixtures.py) from
 * $DG_FIXTURES. For each op case it builds the same computation with dgrad
 * (inputs whose gradient is checked are parameters, one context per case),
 * compares the forward output, runs backward from sum(out * w) and compares
 * the input gradients. For each optimizer case it trains the same MLP for
 * the same steps and compares the losses and the final parameters.
 *
 * Tolerances (|got - ref| <= atol + rtol * |ref|):
 *   ops, forward and gradients:      atol 1e-6, rtol 1e-5
 *   cross_entropy_big (logits ~30):  atol 1e-5, rtol 1e-5
 *   optimizer losses and parameters: atol 1e-6, rtol 1e-5
 *   argmax: exact.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/tensor.h"
#include "test_util.h"

#define OP_ATOL 1e-6
#define OP_RTOL 1e-5
#define OPT_ATOL 1e-6
#define OPT_RTOL 1e-5

#include "fixture.h"

/* ---- comparison ---------------------------------------------------------- */

static bool shape_eq(const dg_tensor *t, const fx_tensor *r) {
    if (t->ndim != r->ndim) return false;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != r->shape[d]) return false;
    return true;
}

static void shape_str(const fx_tensor *r, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < r->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)r->shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

typedef struct {
    double max_abs, max_rel;
    bool ok;
} cmp_acc;

/* Compares a float tensor with a reference; adds to acc, reports failures. */
static void compare_f(const char *cname, const char *what, const dg_tensor *t,
                      const fx_tensor *ref, double atol, double rtol, cmp_acc *acc) {
    char b1[64], b2[64];
    if (!t) {
        dgt_fail(__FILE__, __LINE__, "%s: %s is NULL", cname, what);
        acc->ok = false;
        return;
    }
    if (!shape_eq(t, ref) || t->dtype != DG_F32) {
        shape_str(ref, b2, sizeof b2);
        dgt_fail(__FILE__, __LINE__, "%s: %s has shape %s dtype %s, expected %s f32", cname,
                 what, dg_shape_str(t, b1, sizeof b1), dg_dtype_name(t->dtype), b2);
        acc->ok = false;
        return;
    }
    float *got = malloc(sizeof(float) * (size_t)(ref->n ? ref->n : 1));
    DG_ASSERT(got);
    dg_tensor_to_host(t, got);
    dgt_cmp c = dgt_compare(got, ref->f, ref->n, atol, rtol);
    if (c.max_abs > acc->max_abs) acc->max_abs = c.max_abs;
    if (c.max_rel > acc->max_rel) acc->max_rel = c.max_rel;
    if (c.bad) {
        dgt_fail(__FILE__, __LINE__,
                 "%s: %s: %lld of %lld values off; worst [%lld] got %.9g expected %.9g "
                 "(max abs %.3g, max rel %.3g)",
                 cname, what, (long long)c.bad, (long long)ref->n, (long long)c.worst,
                 got[c.worst], ref->f[c.worst], c.max_abs, c.max_rel);
        acc->ok = false;
    }
    free(got);
}

static void compare_i(const char *cname, const dg_tensor *t, const fx_tensor *ref,
                      cmp_acc *acc) {
    char b1[64], b2[64];
    if (!t) {
        dgt_fail(__FILE__, __LINE__, "%s: out is NULL", cname);
        acc->ok = false;
        return;
    }
    if (!shape_eq(t, ref) || t->dtype != DG_I32) {
        shape_str(ref, b2, sizeof b2);
        dgt_fail(__FILE__, __LINE__, "%s: out has shape %s dtype %s, expected %s i32", cname,
                 dg_shape_str(t, b1, sizeof b1), dg_dtype_name(t->dtype), b2);
        acc->ok = false;
        return;
    }
    int32_t *got = malloc(sizeof(int32_t) * (size_t)(ref->n ? ref->n : 1));
    DG_ASSERT(got);
    dg_tensor_to_host(t, got);
    for (int64_t k = 0; k < ref->n; k++) {
        if (got[k] != ref->i[k]) {
            dgt_fail(__FILE__, __LINE__, "%s: out[%lld] = %d, expected %d", cname,
                     (long long)k, got[k], ref->i[k]);
            acc->ok = false;
            break;
        }
    }
    free(got);
}

/* ---- op cases -------------------------------------------------------------- */

static dg_tensor *run_op(const fx_case *c, dg_tensor **in) {
    const char *op = c->op;
    int64_t v[DG_MAX_DIMS];
    int perm[DG_MAX_DIMS], dims[DG_MAX_DIMS];
    int nv = fx_argv_ints(c, fx_arg(c, "shape") ? "shape"
                            : fx_arg(c, "perm") ? "perm" : "dims", v, DG_MAX_DIMS);
    for (int k = 0; k < nv; k++) perm[k] = dims[k] = (int)v[k];
    int d0 = fx_argi(c, "dim0", 0), d1 = fx_argi(c, "dim1", 1);
    int dim = fx_argi(c, "dim", 0);
    bool keep = fx_argi(c, "keepdim", 0) != 0;

    if (!strcmp(op, "add")) return dg_add(in[0], in[1]);
    if (!strcmp(op, "sub")) return dg_sub(in[0], in[1]);
    if (!strcmp(op, "mul")) return dg_mul(in[0], in[1]);
    if (!strcmp(op, "div")) return dg_div(in[0], in[1]);
    if (!strcmp(op, "add_scalar")) return dg_add_scalar(in[0], (float)fx_argf(c, "s", 0));
    if (!strcmp(op, "mul_scalar")) return dg_mul_scalar(in[0], (float)fx_argf(c, "s", 0));
    if (!strcmp(op, "neg")) return dg_neg(in[0]);
    if (!strcmp(op, "relu")) return dg_relu(in[0]);
    if (!strcmp(op, "exp")) return dg_exp(in[0]);
    if (!strcmp(op, "log")) return dg_log(in[0]);
    if (!strcmp(op, "matmul")) return dg_matmul(in[0], in[1]);
    if (!strcmp(op, "linear")) return dg_linear(in[0], in[1], in[2]);
    if (!strcmp(op, "sum")) return dg_sum(in[0]);
    if (!strcmp(op, "mean")) return dg_mean(in[0]);
    if (!strcmp(op, "sum_dims")) return dg_sum_dims(in[0], nv, dims, keep);
    if (!strcmp(op, "mean_dims")) return dg_mean_dims(in[0], nv, dims, keep);
    if (!strcmp(op, "softmax")) return dg_softmax(in[0], dim);
    if (!strcmp(op, "log_softmax")) return dg_log_softmax(in[0], dim);
    if (!strcmp(op, "cross_entropy")) return dg_cross_entropy(in[0], in[1]);
    if (!strcmp(op, "cross_entropy_ex"))
        return dg_cross_entropy_ex(in[0], in[1], fx_argi(c, "ignore_index", DG_IGNORE_INDEX));
    if (!strcmp(op, "argmax")) return dg_argmax(in[0], dim, keep);
    if (!strcmp(op, "transpose_mul")) return dg_mul(dg_transpose(in[0], d0, d1), in[1]);
    if (!strcmp(op, "permute_mul")) return dg_mul(dg_permute(in[0], perm), in[1]);
    if (!strcmp(op, "reshape_mul")) return dg_mul(dg_reshape(in[0], nv, v), in[1]);
    if (!strcmp(op, "transpose_reshape_mul"))
        return dg_mul(dg_reshape(dg_transpose(in[0], d0, d1), nv, v), in[1]);
    if (!strcmp(op, "flatten_mul"))
        return dg_mul(dg_flatten(in[0], fx_argi(c, "start", 0), fx_argi(c, "end", -1)), in[1]);
    if (!strcmp(op, "slice_mul"))
        return dg_mul(dg_slice(in[0], dim, fx_argi(c, "start", 0), fx_argi(c, "len", 1)),
                      in[1]);
    if (!strcmp(op, "slice_twice_add")) {
        int len = fx_argi(c, "len", 1);
        return dg_add(dg_slice(in[0], dim, 0, len), dg_slice(in[0], dim, len, len));
    }
    if (!strcmp(op, "transpose_matmul")) return dg_matmul(dg_transpose(in[0], d0, d1), in[1]);
    if (!strcmp(op, "slice_matmul"))
        return dg_matmul(dg_slice(in[0], dim, fx_argi(c, "start", 0), fx_argi(c, "len", 1)),
                         in[1]);
    if (!strcmp(op, "transpose_contiguous_exp"))
        return dg_exp(dg_contiguous(dg_transpose(in[0], d0, d1)));
    if (!strcmp(op, "permute_softmax")) return dg_softmax(dg_permute(in[0], perm), dim);
    if (!strcmp(op, "transpose_sum_dims")) {
        int64_t dv[DG_MAX_DIMS];
        int nd = fx_argv_ints(c, "dims", dv, DG_MAX_DIMS);
        for (int k = 0; k < nd; k++) dims[k] = (int)dv[k];
        return dg_sum_dims(dg_transpose(in[0], d0, d1), nd, dims, keep);
    }
    dgt_fail(__FILE__, __LINE__, "%s: unknown op %s in the fixture", c->name, op);
    return NULL;
}

static int run_op_case(const fx_case *c) {
    double atol = OP_ATOL, rtol = OP_RTOL;
    if (!strcmp(c->name, "cross_entropy_big")) atol = 1e-5;

    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    CHECK_NOT_NULL(ctx);
    if (!ctx) return 0;

    dg_tensor *in[3] = {NULL, NULL, NULL};
    const fx_tensor *ref_in[3] = {NULL, NULL, NULL}, *ref_g[3] = {NULL, NULL, NULL};
    for (int k = 0; k < 3; k++) {
        char key[8];
        snprintf(key, sizeof key, "in%d", k);
        ref_in[k] = fx_get(c, key);
        snprintf(key, sizeof key, "g%d", k);
        ref_g[k] = fx_get(c, key);
    }
    /* Register every parameter before filling any (the flat buffer may move
     * while it grows). */
    for (int k = 0; k < 3; k++) {
        const fx_tensor *r = ref_in[k];
        if (r && ref_g[k]) {
            char name[8];
            snprintf(name, sizeof name, "in%d", k);
            in[k] = dg_param_new(ctx, name, r->ndim, r->shape);
            CHECK_NOT_NULL(in[k]);
        }
    }
    for (int k = 0; k < 3; k++) {
        const fx_tensor *r = ref_in[k];
        if (!r) continue;
        if (ref_g[k]) {
            if (in[k]) dg_tensor_copy_from_host(in[k], r->f);
        } else {
            in[k] = r->is_int ? dg_tensor_from(ctx, DG_I32, r->ndim, r->shape, r->i)
                              : dg_tensor_from(ctx, DG_F32, r->ndim, r->shape, r->f);
            CHECK_NOT_NULL(in[k]);
        }
    }

    cmp_acc fwd = {0, 0, true}, bwd = {0, 0, true};
    const fx_tensor *ref_out = fx_get(c, "out"), *ref_w = fx_get(c, "w");
    dg_tensor *out = run_op(c, in);
    if (!out) {
        dgt_fail(__FILE__, __LINE__, "%s: op %s returned NULL", c->name, c->op);
        dg_ctx_free(ctx);
        return 0;
    }
    if (ref_out->is_int) {
        compare_i(c->name, out, ref_out, &fwd);
    } else {
        compare_f(c->name, "out", out, ref_out, atol, rtol, &fwd);
        CHECKF(out->requires_grad, "%s: output does not require grad", c->name);
        dg_tensor *w = dg_tensor_from(ctx, DG_F32, ref_w->ndim, ref_w->shape, ref_w->f);
        dg_tensor *loss = dg_sum(dg_mul(out, w));
        CHECK_NOT_NULL(loss);
        if (loss && fwd.ok) {
            dg_status st = dg_backward(loss);
            CHECKF(st == DG_OK, "%s: dg_backward failed", c->name);
            for (int k = 0; k < 3; k++) {
                if (!ref_g[k] || !in[k]) continue;
                char what[16];
                snprintf(what, sizeof what, "grad in%d", k);
                compare_f(c->name, what, in[k]->grad, ref_g[k], atol, rtol, &bwd);
            }
        }
    }
    printf("%-28s %-26s fwd max abs %.2e rel %.2e | grad max abs %.2e rel %.2e  %s\n",
           c->name, c->op, fwd.max_abs, fwd.max_rel, bwd.max_abs, bwd.max_rel,
           fwd.ok && bwd.ok ? "ok" : "FAIL");
    dg_ctx_free(ctx);
    return fwd.ok && bwd.ok;
}

/* ---- optimizer trajectories ------------------------------------------------ */

static void check_defaults(void) {
    dg_sgd_opts s = dg_sgd_defaults(0.5f);
    CHECK(s.lr == 0.5f && s.momentum == 0 && s.dampening == 0 && s.weight_decay == 0 &&
          !s.nesterov);
    dg_adam_opts a = dg_adam_defaults();
    CHECK(a.lr == 1e-3f && a.beta1 == 0.9f && a.beta2 == 0.999f && a.eps == 1e-8f &&
          a.weight_decay == 0 && !a.amsgrad);
    dg_adam_opts w = dg_adamw_defaults();
    CHECK(w.lr == 1e-3f && w.beta1 == 0.9f && w.beta2 == 0.999f && w.eps == 1e-8f &&
          w.weight_decay == 1e-2f && !w.amsgrad);
}

static int run_optim_case(const fx_case *c) {
    static const char *init_keys[4] = {"w1", "b1", "w2", "b2"};
    static const char *final_keys[4] = {"fw1", "fb1", "fw2", "fb2"};
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    CHECK_NOT_NULL(ctx);
    if (!ctx) return 0;
    dg_manual_seed(ctx, 1);

    dg_module *mods[3] = {dg_nn_linear(ctx, 5, 4, true), dg_nn_relu(ctx),
                          dg_nn_linear(ctx, 4, 3, true)};
    dg_module *net = dg_nn_sequential(ctx, 3, mods);
    CHECK_NOT_NULL(net);
    dg_tensor **params = NULL;
    int np = net ? dg_module_parameters(net, &params) : 0;
    CHECK_EQ_INT(np, 4);
    if (np != 4) {
        dg_ctx_free(ctx);
        return 0;
    }
    for (int k = 0; k < 4; k++) {
        const fx_tensor *r = fx_get(c, init_keys[k]);
        CHECKF(shape_eq(params[k], r), "%s: parameter %d has the wrong shape", c->name, k);
        dg_tensor_copy_from_host(params[k], r->f);
    }

    const char *kind = fx_arg(c, "opt");
    dg_optim *opt = NULL;
    if (!strcmp(kind, "sgd")) {
        dg_sgd_opts o = dg_sgd_defaults((float)fx_argf(c, "lr", 0));
        o.momentum = (float)fx_argf(c, "momentum", 0);
        o.dampening = (float)fx_argf(c, "dampening", 0);
        o.weight_decay = (float)fx_argf(c, "weight_decay", 0);
        o.nesterov = fx_argi(c, "nesterov", 0) != 0;
        opt = dg_optim_sgd(params, np, o);
    } else {
        bool adamw = !strcmp(kind, "adamw");
        dg_adam_opts o = adamw ? dg_adamw_defaults() : dg_adam_defaults();
        o.lr = (float)fx_argf(c, "lr", o.lr);
        o.beta1 = (float)fx_argf(c, "beta1", o.beta1);
        o.beta2 = (float)fx_argf(c, "beta2", o.beta2);
        o.eps = (float)fx_argf(c, "eps", o.eps);
        o.weight_decay = (float)fx_argf(c, "weight_decay", o.weight_decay);
        o.amsgrad = fx_argi(c, "amsgrad", 0) != 0;
        opt = adamw ? dg_optim_adamw(params, np, o) : dg_optim_adam(params, np, o);
    }
    CHECK_NOT_NULL(opt);
    if (!opt) {
        dg_ctx_free(ctx);
        return 0;
    }

    const fx_tensor *x = fx_get(c, "x"), *y = fx_get(c, "y"), *ref_loss = fx_get(c, "loss");
    int steps = fx_argi(c, "steps", 0), skip = fx_argi(c, "skip", 0), b2_steps = 0;
    cmp_acc lacc = {0, 0, true}, pacc = {0, 0, true};
    float *losses = calloc((size_t)steps, sizeof(float));
    DG_ASSERT(losses);
    for (int s = 0; s < steps; s++) {
        dg_optim_zero_grad(opt);
        dg_tensor *xt = dg_tensor_from(ctx, DG_F32, x->ndim, x->shape, x->f);
        dg_tensor *yt = dg_tensor_from(ctx, DG_I32, y->ndim, y->shape, y->i);
        bool left_out = skip >> s & 1;   /* b2 not in this step's graph: no gradient */
        b2_steps += !left_out;
        dg_tensor *out = left_out ? dg_linear(dg_relu(dg_linear(xt, params[0], params[1])), params[2], NULL)
                                  : dg_module_forward(net, xt);
        dg_tensor *loss = dg_cross_entropy(out, yt);
        CHECK_NOT_NULL(loss);
        if (!loss) break;
        losses[s] = dg_item(loss);
        CHECK(dg_backward(loss) == DG_OK);
        CHECKF(dg_param_has_grad(params[3]) == !left_out && dg_param_has_grad(params[0]),
               "%s: step %d: has_grad b2 %d w1 %d", c->name, s, dg_param_has_grad(params[3]),
               dg_param_has_grad(params[0]));
        dg_optim_step(opt);
        dg_ctx_reset_step(ctx);
    }
    CHECK_EQ_INT(dg_optim_step_count(opt), steps);
    CHECK_EQ_INT(dg_optim_param_step_count(opt, 0), steps);
    CHECK_EQ_INT(dg_optim_param_step_count(opt, 3), b2_steps);
    dgt_cmp lc = dgt_compare(losses, ref_loss->f, steps, OPT_ATOL, OPT_RTOL);
    lacc.max_abs = lc.max_abs;
    lacc.max_rel = lc.max_rel;
    if (lc.bad) {
        dgt_fail(__FILE__, __LINE__, "%s: loss at step %lld is %.9g, expected %.9g", c->name,
                 (long long)lc.worst, losses[lc.worst], ref_loss->f[lc.worst]);
        lacc.ok = false;
    }
    for (int k = 0; k < 4; k++)
        compare_f(c->name, final_keys[k], params[k], fx_get(c, final_keys[k]), OPT_ATOL,
                  OPT_RTOL, &pacc);
    printf("%-28s %-6s loss max abs %.2e rel %.2e | params max abs %.2e rel %.2e  %s\n",
           c->name, kind, lacc.max_abs, lacc.max_rel, pacc.max_abs, pacc.max_rel,
           lacc.ok && pacc.ok ? "ok" : "FAIL");
    free(losses);
    dg_optim_free(opt);
    dg_ctx_free(ctx);
    return lacc.ok && pacc.ok;
}

static int run_file(const char *file, int (*fn)(const fx_case *)) {
    FILE *f = fx_open(file);
    if (!f) {
        dgt_fail(__FILE__, __LINE__, "fixture %s missing", file);
        return 0;
    }
    static fx_case c;   /* large; keep it off the stack */
    int ncase = 0, nfail = 0, r;
    while ((r = fx_read_case(f, &c)) == 1) {
        ncase++;
        if (!fn(&c)) nfail++;
        fx_case_free(&c);
    }
    if (r < 0) dgt_fail(__FILE__, __LINE__, "%s: format error after %d cases", file, ncase);
    fx_case_free(&c);
    fclose(f);
    printf("%s: %d cases, %d failed\n\n", file, ncase, nfail);
    CHECKF(ncase > 0, "%s has no cases", file);
    return ncase;
}

int main(void) {
    dg_set_num_threads(1);
    printf("tolerance: ops atol %g rtol %g; optimizers atol %g rtol %g\n\n", OP_ATOL, OP_RTOL,
           OPT_ATOL, OPT_RTOL);
    run_file("ops.txt", run_op_case);
    check_defaults();
    run_file("optim.txt", run_optim_case);
    return dgt_report("test_torch_ref");
}
