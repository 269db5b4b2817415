/* test_seq_ref.c - the sequence ops (dgrad/ops_seq.h) and modules
 * (dgrad/nn_seq.h) against numbers PyTorch 1.13 produced.
 *
 * Reads tests/fixtures/seq.txt (make_seq_fixtures.py) from $DG_FIXTURES.
 * Op cases: inputs that have a reference gradient are parameters; the
 * forward output is compared, then backward from sum(out * w) and the
 * input gradients. Module cases (lstm, gru, mha): the module is built, its
 * parameters overwritten with the fixture's, and the outputs, h_n / c_n,
 * the input and initial-state gradients and the parameter gradients
 * compared (variable lengths, pack_padded_sequence semantics).
 * Then bad input: each must give NULL and a message naming the argument
 * and the value.
 *
 * Tolerances (|got - ref| <= atol + rtol * |ref|):
 *   ops, forward and gradients:               atol 1e-6, rtol 1e-5
 *   modules (LSTM, GRU, MHA), all quantities: atol 1e-5, rtol 1e-4
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/ops_seq.h"
#include "dgrad/tensor.h"
#include "test_util.h"

#define OP_ATOL 1e-6
#define OP_RTOL 1e-5
#define MOD_ATOL 1e-5
#define MOD_RTOL 1e-4

#include "fixture.h"

/* ---- comparison ---------------------------------------------------------- */

static bool shape_eq(const dg_tensor *t, const fx_tensor *r) {
    if (t->ndim != r->ndim) return false;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != r->shape[d]) return false;
    return true;
}

typedef struct {
    double max_abs, max_rel;
    bool ok;
} cmp_acc;

/* got: n floats on the host. */
static void compare_host(const char *cname, const char *what, const float *got,
                         const fx_tensor *ref, double atol, double rtol, cmp_acc *acc) {
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
}

static void compare_f(const char *cname, const char *what, const dg_tensor *t,
                      const fx_tensor *ref, double atol, double rtol, cmp_acc *acc) {
    char b1[64];
    if (!ref) {
        dgt_fail(__FILE__, __LINE__, "%s: no reference for %s", cname, what);
        acc->ok = false;
        return;
    }
    if (!t) {
        dgt_fail(__FILE__, __LINE__, "%s: %s is NULL", cname, what);
        acc->ok = false;
        return;
    }
    if (!shape_eq(t, ref) || t->dtype != DG_F32) {
        dgt_fail(__FILE__, __LINE__, "%s: %s has shape %s dtype %s, expected %d dims f32 (%lld values)",
                 cname, what, dg_shape_str(t, b1, sizeof b1), dg_dtype_name(t->dtype), ref->ndim,
                 (long long)ref->n);
        acc->ok = false;
        return;
    }
    float *got = malloc(sizeof(float) * (size_t)(ref->n ? ref->n : 1));
    DG_ASSERT(got);
    dg_tensor_to_host(t, got);
    compare_host(cname, what, got, ref, atol, rtol, acc);
    free(got);
}

static dg_tensor *const_of(dg_ctx *ctx, const fx_tensor *r) {
    if (!r) return NULL;
    return r->is_int ? dg_tensor_from(ctx, DG_I32, r->ndim, r->shape, r->i)
                     : dg_tensor_from(ctx, DG_F32, r->ndim, r->shape, r->f);
}

/* ---- op cases -------------------------------------------------------------- */

static dg_tensor *run_op(const fx_case *c, dg_ctx *ctx, dg_tensor **in) {
    const char *op = c->op;
    int dim = fx_argi(c, "dim", 0);
    if (!strcmp(op, "gelu")) return dg_gelu(in[0]);
    if (!strcmp(op, "tanh")) return dg_tanh(in[0]);
    if (!strcmp(op, "sigmoid")) return dg_sigmoid(in[0]);
    if (!strcmp(op, "layer_norm"))
        return dg_layer_norm(in[0], fx_argi(c, "nnorm", 1), in[1], in[2],
                             (float)fx_argf(c, "eps", 1e-5));
    if (!strcmp(op, "embedding")) {
        int pad = fx_argi(c, "padding_idx", -9999);
        return dg_embedding(in[0], in[1], pad == -9999 ? DG_NO_PADDING_IDX : pad);
    }
    if (!strcmp(op, "concat")) return dg_concat(3, in, dim);
    if (!strcmp(op, "stack")) return dg_stack(3, in, dim);
    if (!strcmp(op, "gather")) return dg_gather(in[0], dim, in[1]);
    if (!strcmp(op, "index_select")) return dg_index_select(in[0], dim, in[1]);
    if (!strcmp(op, "masked_fill")) return dg_masked_fill(in[0], in[1], (float)fx_argf(c, "value", 0));
    if (!strcmp(op, "where")) return dg_where(in[0], in[1], in[2]);
    if (!strcmp(op, "sdpa"))
        return dg_scaled_dot_product_attention(in[0], in[1], in[2], const_of(ctx, fx_get(c, "kpm")),
                                               fx_argi(c, "causal", 0) != 0);
    dgt_fail(__FILE__, __LINE__, "%s: unknown op %s in the fixture", c->name, op);
    return NULL;
}

static int run_op_case(const fx_case *c) {
    double atol = OP_ATOL, rtol = OP_RTOL;
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
    for (int k = 0; k < 3; k++) {   /* register every parameter before filling any */
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
            in[k] = const_of(ctx, r);
            CHECK_NOT_NULL(in[k]);
        }
    }

    cmp_acc fwd = {0, 0, true}, bwd = {0, 0, true};
    const fx_tensor *ref_out = fx_get(c, "out"), *ref_w = fx_get(c, "w");
    dg_tensor *out = run_op(c, ctx, in);
    if (!out) {
        dgt_fail(__FILE__, __LINE__, "%s: op %s returned NULL", c->name, c->op);
        dg_ctx_free(ctx);
        return 0;
    }
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
    printf("%-24s %-13s fwd max abs %.2e rel %.2e | grad max abs %.2e rel %.2e  %s\n", c->name,
           c->op, fwd.max_abs, fwd.max_rel, bwd.max_abs, bwd.max_rel,
           fwd.ok && bwd.ok ? "ok" : "FAIL");
    dg_ctx_free(ctx);
    return fwd.ok && bwd.ok;
}

/* MODULE_CASES */
static int run_module_case(const fx_case *c) {
    printf("%-24s %-13s skipped (modules not built yet)\n", c->name, c->op);
    return 0;
}

/* ---- bad input --------------------------------------------------------------- */

static void expect_error(const char *what, const dg_tensor *t, const char *sub1, const char *sub2) {
    CHECKF(t == NULL, "%s: expected NULL", what);
    const char *e = dg_last_error();
    CHECK_CONTAINS(e, sub1);
    if (sub2) CHECK_CONTAINS(e, sub2);
    dg_clear_error();
}

static void test_bad_input(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t ws[2] = {7, 4}, is[1] = {4};
    float wv[28] = {0};
    dg_tensor *w = dg_tensor_from(ctx, DG_F32, 2, ws, wv);
    int32_t bad_idx[4] = {0, 3, 9, 1}, neg_idx[4] = {0, -2, 1, 1};
    expect_error("embedding index 9", dg_embedding(w, dg_tensor_from(ctx, DG_I32, 1, is, bad_idx),
                                                   DG_NO_PADDING_IDX),
                 "indices[2] = 9", "[0, 7)");
    expect_error("embedding index -2", dg_embedding(w, dg_tensor_from(ctx, DG_I32, 1, is, neg_idx),
                                                    DG_NO_PADDING_IDX),
                 "indices[1] = -2", NULL);
    expect_error("embedding padding_idx 7",
                 dg_embedding(w, dg_tensor_from(ctx, DG_I32, 1, is, neg_idx + 2), 7), "padding_idx 7",
                 NULL);

    int64_t xs[3] = {2, 3, 4}, ms[2] = {2, 5};
    float xv[24] = {0};
    int32_t mv[10] = {0};
    dg_tensor *x = dg_tensor_from(ctx, DG_F32, 3, xs, xv);
    dg_tensor *m25 = dg_tensor_from(ctx, DG_I32, 2, ms, mv);
    expect_error("masked_fill mask [2, 5]", dg_masked_fill(x, m25, 1.0f), "mask of shape [2, 5]",
                 "[2, 3, 4]");
    dg_tensor *fmask = dg_tensor_from(ctx, DG_F32, 3, xs, xv);
    expect_error("masked_fill float mask", dg_masked_fill(x, fmask, 1.0f), "mask", "float32");

    /* sdpa: q [2, 3, 4], k = v [2, 3, 4]: key_padding_mask must be [2, 3] */
    expect_error("sdpa mask [2, 5]", dg_scaled_dot_product_attention(x, x, x, m25, false),
                 "key_padding_mask has shape [2, 5]", "[2, 3]");
    int64_t ms3[3] = {2, 1, 3};
    dg_tensor *m3 = dg_tensor_from(ctx, DG_I32, 3, ms3, mv);
    expect_error("sdpa mask [2, 1, 3]", dg_scaled_dot_product_attention(x, x, x, m3, true),
                 "key_padding_mask has shape [2, 1, 3]", NULL);
    /* gather / index_select index out of range */
    int32_t sel[2] = {0, 3};
    int64_t ss[1] = {2};
    expect_error("index_select 3", dg_index_select(x, 1, dg_tensor_from(ctx, DG_I32, 1, ss, sel)),
                 "= 3", "[0, 3)");
    /* BAD_INPUT_MODULES */
    dg_ctx_free(ctx);
}

int main(void) {
    (void)fx_argv_ints;
    FILE *f = fx_open("seq.txt");
    if (!f) return 1;
    fx_case c;
    int r, nops = 0, nmods = 0;
    while ((r = fx_read_case(f, &c)) == 1) {
        if (!strcmp(c.op, "lstm") || !strcmp(c.op, "gru") || !strcmp(c.op, "mha")) {
            nmods += run_module_case(&c);
        } else {
            nops += run_op_case(&c);
        }
        fx_case_free(&c);
    }
    CHECKF(r == 0, "seq.txt: format error");
    fclose(f);
    printf("%d op cases and %d module cases passed\n", nops, nmods);
    CHECKF(nops == 32, "only %d op cases passed", nops);
    test_bad_input();
    return dgt_report("test_seq_ref");
}
