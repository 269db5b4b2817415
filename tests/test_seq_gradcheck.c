/* test_seq_gradcheck.c - finite-difference checks of every sequence op
 * (dgrad/ops_seq.h) and of the recurrent layer op (dg__rnn_layer,
 * seq-impl.h), in test_gradcheck.c's style.
 *
 * For loss = sum(out * w) with fixed random w, the gradient from
 * dg_backward is compared with central differences
 * (L(x + h) - L(x - h)) / (x+h - (x-h)), L summed in double from the
 * float32 forward, h = 1e-2. embedding with padding_idx 3: row 3's gradient
 * must be exactly 0 (PyTorch's rule, not the derivative). Tolerance:
 * |numeric - analytic| <= GC_ATOL + GC_RTOL * max(|numeric|, |analytic|).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/ops.h"
#include "dgrad/ops_seq.h"
#include "dgrad/tensor.h"
#include "seq-impl.h"
#include "test_util.h"

#define GC_ATOL 1e-4
#define GC_RTOL 2e-3

static dgt_rng g_rng = { 0x243F6A8885A308D3ull };

typedef enum {
    S_TANH, S_SIGMOID, S_GELU, S_LN, S_LN2, S_LN_NOAFF, S_EMB, S_EMB_PAD, S_GATHER, S_INDEX_SELECT,
    S_CONCAT, S_STACK, S_MASKED_FILL, S_WHERE, S_SDPA, S_SDPA_CAUSAL_KPM, S_SDPA3_KPM, S_SDPA_SELF, S_ATTN_PACKED, S_LSTM, S_GRU,
    S_GRU_NOBIAS,
} sop;

typedef struct {
    const char *name;
    sop op;
    const char *shape[4];   /* NULL: no such input */
    double h;
} scase;

static dg_tensor *ints(dg_ctx *ctx, int nd, const int64_t *s, const int32_t *v) {
    return dg_tensor_from(ctx, DG_I32, nd, s, v);
}

/* LSTM / GRU layer: t = 3, b = 3, h = 2, lengths {3, 1, 2}; p[0] xp [9, g],
 * p[1] w_hh [g, 2], p[2] aux (h0, c0, b_hh). */
static dg_tensor *rnn(dg_ctx *ctx, dg_tensor **p, bool gru, bool bias) {
    static const int32_t len[3] = {3, 1, 2};
    int64_t b = 3;
    return dg__rnn_layer("dg_lstm", gru, p[0], p[1], p[2], ints(ctx, 1, &b, len), 3, 3, 2, bias);
}

static dg_tensor *forward(const scase *c, dg_ctx *ctx, dg_tensor **p) {
    static const int32_t idx[6] = {0, 3, 3, 4, 1, 0};
    static const int32_t gidx[12] = {2, 0, 1, 1, 0, 0, 2, 1, 1, 2, 0, 2};
    static const int32_t mask[12] = {1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 0};
    static const int32_t kpm[8] = {0, 0, 1, 1, 1, 0, 0, 0};
    static const int32_t kpm_c[8] = {0, 1, 1, 0, 0, 0, 0, 1}; /* key 0 kept: no causal row all masked */
    int64_t s23[2] = {2, 3}, s34[2] = {3, 4}, s6 = 3, s24[2] = {2, 4}, s231[3] = {2, 3, 1};
    switch (c->op) {
    case S_TANH: return dg_tanh(p[0]);
    case S_SIGMOID: return dg_sigmoid(p[0]);
    case S_GELU: return dg_gelu(p[0]);
    case S_LN: return dg_layer_norm(p[0], 1, p[1], p[2], 1e-5f);
    case S_LN2: return dg_layer_norm(p[0], 2, p[1], p[2], 1e-5f);
    case S_LN_NOAFF: return dg_layer_norm(p[0], 1, NULL, NULL, 1e-3f);
    case S_EMB: return dg_embedding(p[0], ints(ctx, 2, s23, idx), DG_NO_PADDING_IDX);
    case S_EMB_PAD: return dg_embedding(p[0], ints(ctx, 2, s23, idx), 3);
    case S_GATHER: {   /* x [3, 4], index [3, 4] along dim 0 */
        return dg_gather(p[0], 0, ints(ctx, 2, s34, gidx));
    }
    case S_INDEX_SELECT: return dg_index_select(p[0], 1, ints(ctx, 1, &s6, gidx + 3));
    case S_CONCAT: return dg_concat(3, p, 1);
    case S_STACK: return dg_stack(3, p, 1);
    case S_MASKED_FILL: return dg_masked_fill(p[0], ints(ctx, 2, s34, mask), -1.5f);
    case S_WHERE: return dg_where(ints(ctx, 3, s231, mask + 4), p[0], p[1]);
    case S_SDPA: return dg_scaled_dot_product_attention(p[0], p[1], p[2], NULL, false);
    case S_SDPA_CAUSAL_KPM:
        return dg_scaled_dot_product_attention(p[0], p[1], p[2], ints(ctx, 2, s24, kpm_c), true);
    case S_SDPA3_KPM:
        return dg_scaled_dot_product_attention(p[0], p[1], p[2], ints(ctx, 2, s24, kpm), false);
    case S_SDPA_SELF: return dg_scaled_dot_product_attention(p[0], p[0], p[0], NULL, true);
    case S_ATTN_PACKED:   /* qkv [2, 4, 3E], 2 heads of E / 2 */
        return dg__attention_packed("packed", p[0], 2, ints(ctx, 2, s24, kpm_c), true);
    case S_LSTM: return rnn(ctx, p, false, true);
    case S_GRU: return rnn(ctx, p, true, true);
    case S_GRU_NOBIAS: return rnn(ctx, p, true, false);
    }
    return NULL;
}

static const scase k_cases[] = {
    {"tanh", S_TANH, {"3,4"}, 0},
    {"sigmoid", S_SIGMOID, {"3,4"}, 0},
    {"gelu", S_GELU, {"3,4"}, 0},
    {"layer_norm last", S_LN, {"2,3,5", "5", "5"}, 0},
    {"layer_norm 2-D", S_LN2, {"2,3,4", "3,4", "3,4"}, 0},
    {"layer_norm d 40 (lanes + tail)", S_LN, {"3,40", "40", "40"}, 0},
    {"layer_norm no affine", S_LN_NOAFF, {"3,6"}, 0},
    {"embedding", S_EMB, {"5,3"}, 0},
    {"embedding padding_idx", S_EMB_PAD, {"5,3"}, 0},
    {"gather dim 0", S_GATHER, {"3,4"}, 0},
    {"index_select dim 1", S_INDEX_SELECT, {"2,4,2"}, 0},
    {"concat dim 1", S_CONCAT, {"2,3", "2,1", "2,2"}, 0},
    {"stack dim 1", S_STACK, {"2,3", "2,3", "2,3"}, 0},
    {"masked_fill", S_MASKED_FILL, {"2,3,4"}, 0},
    {"where", S_WHERE, {"2,3,4", "4"}, 0},
    /* v's width differs from q's: the composed path (matmul, softmax) */
    {"sdpa [B,H,L,D]", S_SDPA, {"2,2,3,4", "2,2,4,4", "2,2,4,3"}, 0},
    {"sdpa causal + kpm", S_SDPA_CAUSAL_KPM, {"2,2,4,3", "2,2,4,3", "2,2,4,2"}, 0},
    {"sdpa [B,L,D] kpm", S_SDPA3_KPM, {"2,3,3", "2,4,3", "2,4,2"}, 0},
    /* the same widths: the fused kernels (seq.attn_fwd / attn_bwd) */
    {"fused sdpa [B,H,L,D]", S_SDPA, {"2,2,3,4", "2,2,5,4", "2,2,5,4"}, 0},
    {"fused sdpa causal + kpm", S_SDPA_CAUSAL_KPM, {"2,2,4,3", "2,2,4,3", "2,2,4,3"}, 0},
    {"fused sdpa [B,L,D] kpm", S_SDPA3_KPM, {"2,3,3", "2,4,3", "2,4,3"}, 0},
    {"fused sdpa q = k = v", S_SDPA_SELF, {"2,2,4,3"}, 0},
    {"fused packed qkv", S_ATTN_PACKED, {"2,4,12"}, 0},
    /* heads of 16: rows read in place, no padded copies */
    {"fused sdpa D 16 causal + kpm", S_SDPA_CAUSAL_KPM, {"2,2,4,16", "2,2,4,16", "2,2,4,16"}, 0},
    {"fused packed qkv D 16", S_ATTN_PACKED, {"2,4,96"}, 0},
    /* more than 16 queries and keys: several lane chunks and their padding */
    {"fused sdpa L 20, D 16", S_SDPA, {"1,2,20,16", "1,2,20,16", "1,2,20,16"}, 2e-2},
    {"fused sdpa Lq 18, Lk 21, D 5", S_SDPA, {"1,1,18,5", "1,1,21,5", "1,1,21,5"}, 0},
    /* exactly 16 queries (the scores are P itself), heads of two 16 x 16 tiles */
    {"fused sdpa L 16, D 32", S_SDPA, {"1,2,16,32", "1,2,16,32", "1,2,16,32"}, 2e-2},
    {"fused sdpa q = k = v causal L 16", S_SDPA_SELF, {"1,2,16,16"}, 2e-2},
    {"lstm layer", S_LSTM, {"9,8", "8,2", "20"}, 0},     /* aux: h0 6, c0 6, b_hh 8 */
    {"gru layer", S_GRU, {"9,6", "6,2", "12"}, 0},       /* aux: h0 6, b_hh 6 */
    {"gru layer no bias", S_GRU_NOBIAS, {"9,6", "6,2", "6"}, 0},
};

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

static bool run_case(const scase *c, double *worst) {
    dg_clear_error();
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    double h = c->h > 0 ? c->h : 1e-2;
    dg_tensor *p[4] = {0};
    float *val[4] = {0};
    int64_t pn[4] = {0};
    int np = 0;
    for (int k = 0; k < 4 && c->shape[k]; k++, np++) {
        int64_t s[DG_MAX_DIMS];
        int nd = dgt_parse_shape(c->shape[k], s);
        char name[8];
        snprintf(name, sizeof name, "p%d", k);
        p[k] = dg_param_new(ctx, name, nd, s);
        pn[k] = dgt_numel(nd, s);
    }
    for (int k = 0; k < np; k++) {
        val[k] = malloc(sizeof(float) * (size_t)pn[k]);
        DG_ASSERT(val[k]);
        dgt_fill(&g_rng, val[k], pn[k], DGT_N);
        dg_tensor_copy_from_host(p[k], val[k]);
    }
    dg_tensor *out = forward(c, ctx, p);
    bool ok = out != NULL;
    CHECKF(out, "%s: forward returned NULL", c->name);
    if (!out) goto done;
    int64_t no = dg_numel(out);
    double *w = malloc(sizeof(double) * (size_t)no);
    float *wf = malloc(sizeof(float) * (size_t)no);
    DG_ASSERT(w && wf);
    dgt_fill(&g_rng, wf, no, DGT_N);
    for (int64_t i = 0; i < no; i++) w[i] = wf[i];
    dg_tensor *wt = dg_tensor_from(ctx, DG_F32, out->ndim, out->shape, wf);
    dg_status st = dg_backward(dg_sum(dg_mul(out, wt)));
    CHECKF(st == DG_OK, "%s: backward failed", c->name);
    float *ga[4] = {0};
    for (int k = 0; k < np; k++) {
        ga[k] = calloc((size_t)pn[k], sizeof(float));
        DG_ASSERT(ga[k]);
        if (p[k]->grad) dg_tensor_to_host(p[k]->grad, ga[k]);
    }
    dg_ctx_reset_step(ctx);
    bool prev = dg_set_grad_enabled(ctx, false);
    double cw = 0;
    for (int k = 0; k < np && ok; k++) {
        for (int64_t j = 0; j < pn[k]; j++) {
            float x0 = val[k][j], xp = (float)(x0 + h), xm = (float)(x0 - h);
            double l[2];
            for (int s = 0; s < 2; s++) {
                val[k][j] = s ? xm : xp;
                dg_tensor_copy_from_host(p[k], val[k]);
                l[s] = out_dot_w(forward(c, ctx, p), w);
                dg_ctx_reset_step(ctx);
            }
            val[k][j] = x0;
            dg_tensor_copy_from_host(p[k], val[k]);
            double num = (l[0] - l[1]) / ((double)xp - (double)xm), an = ga[k][j];
            if (c->op == S_EMB_PAD && j / 3 == 3) num = 0;   /* the padding row */
            double tol = GC_ATOL + GC_RTOL * fmax(fabs(num), fabs(an));
            double e = fabs(num - an) / tol;
            if (e > cw) cw = e;
            if (e > 1) {
                dgt_fail(__FILE__, __LINE__, "%s: input %d [%lld]: analytic %.7g numeric %.7g",
                         c->name, k, (long long)j, an, num);
                ok = false;
                break;
            }
        }
    }
    dg_set_grad_enabled(ctx, prev);
    printf("%-24s worst error / tolerance %.3f  %s\n", c->name, cw, ok ? "ok" : "FAIL");
    if (cw > *worst) *worst = cw;
    for (int k = 0; k < np; k++) free(ga[k]);
    free(w);
    free(wf);
done:
    for (int k = 0; k < np; k++) free(val[k]);
    dg_ctx_free(ctx);
    return ok;
}

int main(void) {
    int n = (int)(sizeof k_cases / sizeof k_cases[0]), pass = 0;
    double worst = 0;
    for (int i = 0; i < n; i++) pass += run_case(&k_cases[i], &worst);
    printf("%d of %d gradient checks passed (worst error / tolerance %.3f)\n", pass, n, worst);
    return dgt_report("test_seq_gradcheck");
}
