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
#include "dgrad/nn_seq.h"
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

/* ---- module cases ------------------------------------------------------------- */

static dg_tensor *param_of(dg_ctx *ctx, const char *name, const fx_tensor *r) {
    return r ? dg_param_new(ctx, name, r->ndim, r->shape) : NULL;
}

/* The module's parameter gradients, flat in its order, vs gp. */
static void compare_param_grads(const char *cname, dg_module *m, const fx_tensor *ref,
                                cmp_acc *acc) {
    dg_tensor **ps = NULL;
    int np = dg_module_parameters(m, &ps);
    int64_t total = 0;
    for (int i = 0; i < np; i++) total += dg_numel(ps[i]);
    if (total != ref->n) {
        dgt_fail(__FILE__, __LINE__, "%s: %lld parameter values, the fixture has %lld", cname,
                 (long long)total, (long long)ref->n);
        acc->ok = false;
        return;
    }
    float *got = calloc((size_t)total, sizeof *got);
    DG_ASSERT(got);
    int64_t off = 0;
    for (int i = 0; i < np; i++) {
        if (ps[i]->grad) dg_tensor_to_host(ps[i]->grad, got + off);
        off += dg_numel(ps[i]);
    }
    compare_host(cname, "parameter grads", got, ref, MOD_ATOL, MOD_RTOL, acc);
    free(got);
}

/* Fills the module's parameters from the flat fixture params. */
static bool load_params(const char *cname, dg_module *m, const fx_tensor *ref) {
    dg_tensor **ps = NULL;
    int np = dg_module_parameters(m, &ps);
    int64_t off = 0;
    for (int i = 0; i < np; i++) {
        if (off + dg_numel(ps[i]) > ref->n) break;
        dg_tensor_copy_from_host(ps[i], ref->f + off);
        off += dg_numel(ps[i]);
    }
    CHECKF(off == ref->n, "%s: the module has other parameter sizes than the fixture (%lld vs %lld)",
           cname, (long long)off, (long long)ref->n);
    return off == ref->n;
}

static int run_module_case(const fx_case *c) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    CHECK_NOT_NULL(ctx);
    if (!ctx) return 0;
    cmp_acc fwd = {0, 0, true}, bwd = {0, 0, true};
    bool is_mha = !strcmp(c->op, "mha"), gru = !strcmp(c->op, "gru");
    dg_module *m;
    dg_tensor *loss = NULL, *out = NULL, *hn = NULL, *cn = NULL;
    dg_tensor *x = NULL, *h0 = NULL, *c0 = NULL, *q = NULL, *k = NULL, *v = NULL;
    if (is_mha) {
        m = dg_nn_multihead_attention(ctx, fx_argi(c, "embed", 0), fx_argi(c, "heads", 1),
                                      fx_argi(c, "bias", 1) != 0);
        bool self = fx_argi(c, "self", 0) != 0;
        q = param_of(ctx, "q", fx_get(c, "q"));
        k = self ? q : param_of(ctx, "k", fx_get(c, "k"));
        v = self ? q : param_of(ctx, "v", fx_get(c, "v"));
        CHECK_NOT_NULL(m);
        if (!m || !q || !k || !v || !load_params(c->name, m, fx_get(c, "params"))) goto done;
        dg_tensor_copy_from_host(q, fx_get(c, "q")->f);
        if (!self) {
            dg_tensor_copy_from_host(k, fx_get(c, "k")->f);
            dg_tensor_copy_from_host(v, fx_get(c, "v")->f);
        }
        out = dg_mha_forward(m, q, k, v, const_of(ctx, fx_get(c, "kpm")),
                             fx_argi(c, "causal", 0) != 0);
        if (self && !fx_get(c, "kpm") && !fx_argi(c, "causal", 0)) {
            dg_tensor *o2 = dg_module_forward(m, q);
            compare_f(c->name, "dg_module_forward", o2, fx_get(c, "out"), MOD_ATOL, MOD_RTOL, &fwd);
        }
        compare_f(c->name, "out", out, fx_get(c, "out"), MOD_ATOL, MOD_RTOL, &fwd);
        if (out) loss = dg_sum(dg_mul(out, const_of(ctx, fx_get(c, "w"))));
    } else {
        m = dg_nn_rnn_ex(ctx, gru, fx_argi(c, "input", 0), fx_argi(c, "hidden", 0),
                         fx_argi(c, "layers", 1), fx_argi(c, "batch_first", 0) != 0,
                         fx_argi(c, "bias", 1) != 0);
        CHECK_NOT_NULL(m);
        x = param_of(ctx, "x", fx_get(c, "x"));
        h0 = param_of(ctx, "h0", fx_get(c, "h0"));
        c0 = param_of(ctx, "c0", fx_get(c, "c0"));
        if (!m || !x || !load_params(c->name, m, fx_get(c, "params"))) goto done;
        dg_tensor_copy_from_host(x, fx_get(c, "x")->f);
        if (h0) dg_tensor_copy_from_host(h0, fx_get(c, "h0")->f);
        if (c0) dg_tensor_copy_from_host(c0, fx_get(c, "c0")->f);
        out = dg_rnn_forward_ex(m, x, fx_get(c, "len")->i, h0, c0, &hn, gru ? NULL : &cn);
        compare_f(c->name, "out", out, fx_get(c, "out"), MOD_ATOL, MOD_RTOL, &fwd);
        compare_f(c->name, "h_n", hn, fx_get(c, "hn"), MOD_ATOL, MOD_RTOL, &fwd);
        if (!gru) compare_f(c->name, "c_n", cn, fx_get(c, "cn"), MOD_ATOL, MOD_RTOL, &fwd);
        if (out && hn) {
            loss = dg_add(dg_sum(dg_mul(out, const_of(ctx, fx_get(c, "wo")))),
                          dg_sum(dg_mul(hn, const_of(ctx, fx_get(c, "wh")))));
            if (!gru && cn) loss = dg_add(loss, dg_sum(dg_mul(cn, const_of(ctx, fx_get(c, "wc")))));
        }
    }
    CHECK_NOT_NULL(loss);
    if (loss && fwd.ok) {
        CHECKF(dg_backward(loss) == DG_OK, "%s: dg_backward failed", c->name);
        if (is_mha) {
            compare_f(c->name, "grad q", q->grad, fx_get(c, "gq"), MOD_ATOL, MOD_RTOL, &bwd);
            if (k != q) {
                compare_f(c->name, "grad k", k->grad, fx_get(c, "gk"), MOD_ATOL, MOD_RTOL, &bwd);
                compare_f(c->name, "grad v", v->grad, fx_get(c, "gv"), MOD_ATOL, MOD_RTOL, &bwd);
            }
        } else {
            compare_f(c->name, "grad x", x->grad, fx_get(c, "gx"), MOD_ATOL, MOD_RTOL, &bwd);
            if (h0) compare_f(c->name, "grad h0", h0->grad, fx_get(c, "gh0"), MOD_ATOL, MOD_RTOL, &bwd);
            if (c0) compare_f(c->name, "grad c0", c0->grad, fx_get(c, "gc0"), MOD_ATOL, MOD_RTOL, &bwd);
        }
        compare_param_grads(c->name, m, fx_get(c, "gp"), &bwd);
    }
done:
    printf("%-24s %-13s fwd max abs %.2e rel %.2e | grad max abs %.2e rel %.2e  %s\n", c->name,
           c->op, fwd.max_abs, fwd.max_rel, bwd.max_abs, bwd.max_rel,
           fwd.ok && bwd.ok && loss ? "ok" : "FAIL");
    dg_ctx_free(ctx);
    return fwd.ok && bwd.ok && loss != NULL;
}

/* ---- the small modules and dg_nn_custom ------------------------------------------ */

typedef struct { int calls; bool saw_training; } custom_state;

/* tanh(linear(layer_norm(x))) through the children. */
static dg_tensor *custom_fwd(dg_module *self, dg_tensor *x, void *state) {
    custom_state *s = state;
    s->calls++;
    s->saw_training = dg_module_is_training(self);
    x = dg_module_forward(dg_module_child(self, 0), x);
    x = dg_module_forward(dg_module_child(self, 1), x);
    return dg_module_forward(dg_module_child(self, 2), x);
}

static void test_small_modules(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 3);
    dg_module *ln = dg_nn_layer_norm(ctx, 4, 1e-5f), *lin = dg_nn_linear(ctx, 4, 3, true);
    dg_module *th = dg_nn_tanh(ctx), *ge = dg_nn_gelu(ctx);
    dg_module *emb = dg_nn_embedding(ctx, 6, 4, -1);
    CHECK(ln && lin && th && ge && emb);
    dg_module_info mi;
    dg_module_get_info(ln, &mi);
    CHECK_EQ_INT(mi.kind, DG_MODULE_LAYER_NORM);
    CHECK(mi.eps == 1e-5f);
    dg_module_get_info(emb, &mi);
    CHECK_EQ_INT(mi.kind, DG_MODULE_EMBEDDING);
    dg_tensor **ps;
    CHECK_EQ_INT(dg_module_parameters(ln, &ps), 2);
    CHECK_EQ_INT(dg_module_parameters(emb, &ps), 1);
    float ew[24];
    dg_tensor_to_host(ps[0], ew);
    CHECKF(ew[20] == 0 && ew[23] == 0 && ew[0] != 0, "embedding padding row 5 is not 0");
    CHECK_CONTAINS(dg_module_name(emb), "padding_idx=5");

    dg_module *kids[3] = {ln, lin, th};
    custom_state st = {0, false};
    dg_module *cm = dg_nn_custom(ctx, "Block()", custom_fwd, &st, 3, kids);
    CHECK_NOT_NULL(cm);
    dg_module_get_info(cm, &mi);
    CHECK_EQ_INT(mi.kind, DG_MODULE_CUSTOM);
    CHECK_EQ_INT(mi.num_children, 3);
    CHECK_EQ_INT(dg_module_parameters(cm, &ps), 4);   /* ln weight, bias, linear weight, bias */
    dg_module_train(cm, false);
    CHECK(!dg_module_is_training(ln) && !dg_module_is_training(lin));
    int32_t idx[6] = {0, 1, 2, 3, 4, 5};
    int64_t is[2] = {2, 3};
    dg_tensor *e = dg_module_forward(emb, dg_tensor_from(ctx, DG_I32, 2, is, idx));   /* [2, 3, 4] */
    dg_tensor *y = dg_module_forward(cm, dg_module_forward(ge, e));
    CHECK_NOT_NULL(y);
    CHECK(st.calls == 1 && !st.saw_training);
    if (y) {
        CHECK(y->ndim == 3 && y->shape[2] == 3);
        dg_tensor *ref = dg_tanh(dg_linear(dg_layer_norm(dg_gelu(e), 1, NULL, NULL, 1e-5f),
                                           ps[2], ps[3]));
        float a[18], b[18];
        dg_tensor_to_host(y, a);
        dg_tensor_to_host(ref, b);
        for (int i = 0; i < 18; i++) CHECK_NEAR(a[i], b[i], 1e-6, 1e-5);
        CHECK(dg_backward(dg_sum(y)) == DG_OK);
        CHECK(ps[0]->grad && ps[2]->grad);
    }
    dg_ctx_free(ctx);
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
    int32_t bad_idx[4] = {0, 3, 9, 1}, neg_idx[4] = {0, -2, 1, 1}, pad_idx[4] = {1, 1, 0, 2};
    expect_error("embedding index 9", dg_embedding(w, dg_tensor_from(ctx, DG_I32, 1, is, bad_idx),
                                                   DG_NO_PADDING_IDX),
                 "indices[2] = 9", "[0, 7)");
    expect_error("embedding index -2", dg_embedding(w, dg_tensor_from(ctx, DG_I32, 1, is, neg_idx),
                                                    DG_NO_PADDING_IDX),
                 "indices[1] = -2", NULL);
    expect_error("embedding padding_idx 7",
                 dg_embedding(w, dg_tensor_from(ctx, DG_I32, 1, is, pad_idx), 7), "padding_idx 7",
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
    /* recurrent modules: lengths of 0 or past the padded length; wrong x */
    dg_module *lstm = dg_nn_lstm(ctx, 4, 3, 1, true);
    dg_module *gru = dg_nn_gru(ctx, 4, 3, 2, false);
    int32_t len0[2] = {3, 0}, len4[2] = {4, 2};
    expect_error("lstm length 0", dg_rnn_forward(lstm, x, len0, NULL, NULL), "lengths[1] = 0",
                 "[1, 3]");
    expect_error("gru length 4", dg_rnn_forward(gru, x, len4, NULL, NULL), "lengths[0] = 4",
                 "[1, 2]");   /* time-major: x [2, 3, 4] is T = 2, B = 3 */
    int32_t len3[3] = {2, 2, 4};
    expect_error("gru length 4 of 2", dg_rnn_forward(gru, x, len3, NULL, NULL), "lengths[2] = 4",
                 NULL);
    int64_t xs5[3] = {2, 3, 5};
    float xv5[30] = {0};
    expect_error("lstm input_size", dg_rnn_forward(lstm, dg_tensor_from(ctx, DG_F32, 3, xs5, xv5),
                                                   NULL, NULL, NULL),
                 "x has shape [2, 3, 5]", "input_size 4");
    expect_error("nn_lstm hidden 0", (dg_tensor *)dg_nn_lstm(ctx, 4, 0, 1, false), "hidden_size 0",
                 NULL);
    dg_module *mha = dg_nn_multihead_attention(ctx, 4, 2, true);
    expect_error("mha mask [2, 5]", dg_mha_forward(mha, x, x, x, m25, false),
                 "key_padding_mask has shape [2, 5]", NULL);
    expect_error("mha heads 3", (dg_tensor *)dg_nn_multihead_attention(ctx, 4, 3, true),
                 "embed_dim 4", "num_heads 3");
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
    CHECKF(nmods == 12, "only %d module cases passed", nmods);
    test_small_modules();
    test_bad_input();
    return dgt_report("test_seq_ref");
}
