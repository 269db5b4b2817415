/* seq.c - sequence modules (dgrad/nn_seq.h): LSTM, GRU, MultiheadAttention,
 * LayerNorm, Embedding, GELU, Tanh and user-defined modules, on the ops of
 * dgrad/ops_seq.h and the recurrent layer op (seq-impl.h). */
#include "dgrad/nn_seq.h"
#include "dgrad/ops.h"
#include "dgrad/ops_seq.h"
#include "nn-impl.h"
#include "seq-impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- LSTM / GRU ------------------------------------------------------------- */

typedef struct {
    bool gru, batch_first, bias;
    int layers;
    int64_t in, h;
} rnn_cfg;

static dg_tensor *rnn_module_forward(dg_module *m, dg_tensor *x) {
    return dg_rnn_forward(m, x, NULL, NULL, NULL);
}

dg_module *dg_nn_rnn_ex(dg_ctx *ctx, bool gru, int64_t input_size, int64_t hidden_size,
                        int num_layers, bool batch_first, bool bias) {
    const char *op = gru ? "dg_nn_gru" : "dg_nn_lstm";
    if (!ctx) return NULL;
    if (input_size <= 0 || hidden_size <= 0 || num_layers <= 0) {
        dg_set_error("%s: input_size %lld, hidden_size %lld and num_layers %d must be positive", op,
                     (long long)input_size, (long long)hidden_size, num_layers);
        return NULL;
    }
    dg_module *m = dg__module_new(ctx, rnn_module_forward);
    rnn_cfg *c = dg__ctx_calloc(ctx, sizeof *c);
    *c = (rnn_cfg){ gru, batch_first, bias, num_layers, input_size, hidden_size };
    m->ext = c;
    m->kind = gru ? DG_MODULE_GRU : DG_MODULE_LSTM;
    if (snprintf(m->name, sizeof m->name, "%s(%lld, %lld, num_layers=%d%s%s)", gru ? "GRU" : "LSTM",
                 (long long)input_size, (long long)hidden_size, num_layers,
                 bias ? "" : ", bias=False", batch_first ? ", batch_first=True" : "") < 0)
        m->name[0] = '\0';
    int64_t g = (gru ? 3 : 4) * hidden_size;
    int per = bias ? 4 : 2;
    m->params = dg__ctx_calloc(ctx, (size_t)(per * num_layers) * sizeof *m->params);
    float bound = 1.0f / sqrtf((float)hidden_size);
    for (int l = 0; l < num_layers; l++) {
        char name[32];
        int64_t wi[2] = { g, l ? hidden_size : input_size }, wh[2] = { g, hidden_size };
        snprintf(name, sizeof name, "weight_ih_l%d", l);
        m->params[m->nparams++] = dg_param_new(ctx, name, 2, wi);
        snprintf(name, sizeof name, "weight_hh_l%d", l);
        m->params[m->nparams++] = dg_param_new(ctx, name, 2, wh);
        if (bias) {
            snprintf(name, sizeof name, "bias_ih_l%d", l);
            m->params[m->nparams++] = dg_param_new(ctx, name, 1, &g);
            snprintf(name, sizeof name, "bias_hh_l%d", l);
            m->params[m->nparams++] = dg_param_new(ctx, name, 1, &g);
        }
    }
    for (int i = 0; i < m->nparams; i++) {
        if (!m->params[i]) return NULL;
        dg_init_uniform(m->params[i], -bound, bound);
    }
    return m;
}

dg_module *dg_nn_lstm(dg_ctx *ctx, int64_t input_size, int64_t hidden_size, int num_layers,
                      bool batch_first) {
    return dg_nn_rnn_ex(ctx, false, input_size, hidden_size, num_layers, batch_first, true);
}

dg_module *dg_nn_gru(dg_ctx *ctx, int64_t input_size, int64_t hidden_size, int num_layers,
                     bool batch_first) {
    return dg_nn_rnn_ex(ctx, true, input_size, hidden_size, num_layers, batch_first, true);
}

static bool check_state(const char *op, const char *what, const dg_tensor *s, const rnn_cfg *c,
                        int64_t b) {
    char buf[96];
    if (!s) return true;
    if (s->dtype != DG_F32 || s->ndim != 3 || s->shape[0] != c->layers || s->shape[1] != b ||
        s->shape[2] != c->h) {
        dg_set_error("%s: %s has shape %s, expected [num_layers, B, H] = [%d, %lld, %lld] float32",
                     op, what, dg_shape_str(s, buf, sizeof buf), c->layers, (long long)b,
                     (long long)c->h);
        return false;
    }
    return true;
}

dg_tensor *dg_rnn_forward_ex(dg_module *m, dg_tensor *x, const int32_t *lengths, dg_tensor *h0,
                             dg_tensor *c0, dg_tensor **h_n, dg_tensor **c_n) {
    const char *op = "dg_rnn_forward";
    if (h_n) *h_n = NULL;
    if (c_n) *c_n = NULL;
    if (!m || !x) return NULL;
    if (m->kind != DG_MODULE_LSTM && m->kind != DG_MODULE_GRU) {
        dg_set_error("%s: module %s is not an LSTM or GRU", op, m->name);
        return NULL;
    }
    const rnn_cfg *c = m->ext;
    char buf[96];
    if (x->dtype != DG_F32 || x->ndim != 3 || x->shape[2] != c->in) {
        dg_set_error("%s: x has shape %s, expected %s with input_size %lld (float32)", op,
                     dg_shape_str(x, buf, sizeof buf), c->batch_first ? "[B, T, in]" : "[T, B, in]",
                     (long long)c->in);
        return NULL;
    }
    if (c->gru && c0) {
        dg_set_error("%s: c0 given to a GRU", op);
        return NULL;
    }
    dg_ctx *ctx = x->ctx;
    int64_t b = c->batch_first ? x->shape[0] : x->shape[1];
    int64_t t = c->batch_first ? x->shape[1] : x->shape[0], h = c->h;
    if (b <= 0 || t <= 0) {
        dg_set_error("%s: x of shape %s is empty", op, dg_shape_str(x, buf, sizeof buf));
        return NULL;
    }
    if (!check_state(op, "h0", h0, c, b) || !check_state(op, "c0", c0, c, b)) return NULL;
    int32_t *len = dg__ctx_calloc(ctx, (size_t)b * sizeof *len);
    for (int64_t i = 0; i < b; i++) {
        len[i] = lengths ? lengths[i] : (int32_t)t;
        if (len[i] < 1 || len[i] > t) {
            dg_set_error("%s: lengths[%lld] = %d is out of range [1, %lld] (the padded length)", op,
                         (long long)i, len[i], (long long)t);
            return NULL;
        }
    }
    dg_tensor *lt = dg_tensor_from(ctx, DG_I32, 1, &b, len);
    dg_tensor *xt = c->batch_first ? dg_contiguous(dg_transpose(x, 0, 1)) : x;   /* [T, B, in] */
    int64_t bh = b * h;
    dg_tensor *zero = (!h0 || (!c->gru && !c0)) ? dg_zeros(ctx, DG_F32, 1, &bh) : NULL;
    dg_tensor *hs[64], *cs[64];
    int per = c->bias ? 4 : 2;
    if (c->layers > 64) {
        dg_set_error("%s: num_layers %d is more than 64", op, c->layers);
        return NULL;
    }
    for (int l = 0; l < c->layers && xt; l++) {
        dg_tensor **p = m->params + per * l;
        int64_t in = xt->shape[2], s2[2] = { t * b, in };
        dg_tensor *xp = dg_linear(dg_reshape(xt, 2, s2), p[0], c->bias ? p[2] : NULL);
        dg_tensor *parts[3];
        int np = 0;
        parts[np++] = h0 ? dg_reshape(dg_slice(h0, 0, l, 1), 1, &bh) : zero;
        if (!c->gru) parts[np++] = c0 ? dg_reshape(dg_slice(c0, 0, l, 1), 1, &bh) : zero;
        if (c->bias) parts[np++] = p[3];
        dg_tensor *aux = dg_concat(np, parts, 0);
        dg_tensor *o = dg__rnn_layer(c->gru ? "dg_gru" : "dg_lstm", c->gru, xp, p[1], aux, lt, t, b,
                                     h, c->bias);
        if (!o) return NULL;
        int64_t ys[3] = { t, b, h }, ss[3] = { 1, b, h };
        xt = dg_reshape(dg_slice(o, 0, 0, t * bh), 3, ys);
        hs[l] = dg_reshape(dg_slice(o, 0, t * bh, bh), 3, ss);
        if (!c->gru) cs[l] = dg_reshape(dg_slice(o, 0, (t + 1) * bh, bh), 3, ss);
    }
    if (!xt) return NULL;
    if (h_n) *h_n = dg_concat(c->layers, hs, 0);
    if (c_n && !c->gru) *c_n = dg_concat(c->layers, cs, 0);
    /* batch_first: a [B, T, H] view of the [T, B, H] output, as ATen returns
     * (no copy when the caller only wants h_n) */
    return c->batch_first ? dg_transpose(xt, 0, 1) : xt;
}

dg_tensor *dg_rnn_forward(dg_module *m, dg_tensor *x, const int32_t *lengths, dg_tensor **h_n,
                          dg_tensor **c_n) {
    return dg_rnn_forward_ex(m, x, lengths, NULL, NULL, h_n, c_n);
}

/* ---- MultiheadAttention -------------------------------------------------------- */

typedef struct {
    int64_t e;
    int heads;
    bool bias;
    dg_tensor *in_w, *in_b, *out_w, *out_b;
} mha_cfg;

static dg_tensor *mha_module_forward(dg_module *m, dg_tensor *x) {
    return dg_mha_forward(m, x, x, x, NULL, false);
}

dg_module *dg_nn_multihead_attention(dg_ctx *ctx, int64_t embed_dim, int num_heads, bool bias) {
    if (!ctx) return NULL;
    if (embed_dim <= 0 || num_heads <= 0 || embed_dim % num_heads) {
        dg_set_error("dg_nn_multihead_attention: embed_dim %lld must be a positive multiple of "
                     "num_heads %d", (long long)embed_dim, num_heads);
        return NULL;
    }
    dg_module *m = dg__module_new(ctx, mha_module_forward);
    mha_cfg *c = dg__ctx_calloc(ctx, sizeof *c);
    c->e = embed_dim;
    c->heads = num_heads;
    c->bias = bias;
    m->ext = c;
    m->kind = DG_MODULE_MULTIHEAD_ATTENTION;
    snprintf(m->name, sizeof m->name, "MultiheadAttention(embed_dim=%lld, num_heads=%d%s)",
             (long long)embed_dim, num_heads, bias ? "" : ", bias=False");
    int64_t e3 = 3 * embed_dim, iw[2] = { e3, embed_dim }, ow[2] = { embed_dim, embed_dim };
    m->params = dg__ctx_calloc(ctx, 4 * sizeof *m->params);
    c->in_w = m->params[m->nparams++] = dg_param_new(ctx, "in_proj_weight", 2, iw);
    if (bias) c->in_b = m->params[m->nparams++] = dg_param_new(ctx, "in_proj_bias", 1, &e3);
    c->out_w = m->params[m->nparams++] = dg_param_new(ctx, "out_proj.weight", 2, ow);
    if (bias) c->out_b = m->params[m->nparams++] = dg_param_new(ctx, "out_proj.bias", 1, &embed_dim);
    for (int i = 0; i < m->nparams; i++)
        if (!m->params[i]) return NULL;
    float xb = sqrtf(6.0f / (float)(embed_dim + e3));   /* xavier_uniform_ of [3E, E] */
    dg_init_uniform(c->in_w, -xb, xb);
    float ob = 1.0f / sqrtf((float)embed_dim);
    dg_init_uniform(c->out_w, -ob, ob);
    m->weight = c->in_w;
    m->bias = c->in_b;
    return m;
}

/* x [B, L, E] -> the projection with rows [i*E, (i+1)*E) of in_proj, as
 * [B, heads, L, E/heads]. */
static dg_tensor *mha_project(const mha_cfg *c, dg_tensor *x, int i) {
    dg_tensor *w = dg_slice(c->in_w, 0, i * c->e, c->e);
    dg_tensor *b = c->in_b ? dg_slice(c->in_b, 0, i * c->e, c->e) : NULL;
    dg_tensor *y = dg_linear(x, w, b);
    if (!y) return NULL;
    int64_t s[4] = { x->shape[0], x->shape[1], c->heads, c->e / c->heads };
    return dg_contiguous(dg_transpose(dg_reshape(y, 4, s), 1, 2));
}

dg_tensor *dg_mha_forward(dg_module *m, dg_tensor *q, dg_tensor *k, dg_tensor *v,
                          dg_tensor *key_padding_mask, bool causal) {
    const char *op = "dg_mha_forward";
    if (!m || !q || !k || !v) return NULL;
    if (m->kind != DG_MODULE_MULTIHEAD_ATTENTION) {
        dg_set_error("%s: module %s is not a MultiheadAttention", op, m->name);
        return NULL;
    }
    const mha_cfg *c = m->ext;
    dg_tensor *ts[3] = { q, k, v };
    static const char *names[3] = { "q", "k", "v" };
    for (int i = 0; i < 3; i++) {
        char buf[96];
        if (ts[i]->ndim != 3 || ts[i]->shape[2] != c->e || ts[i]->shape[0] != q->shape[0] ||
            (i == 2 && v->shape[1] != k->shape[1])) {
            dg_set_error("%s: %s has shape %s, expected [B, L, embed_dim = %lld] (batch_first; k "
                         "and v of the same length)", op, names[i],
                         dg_shape_str(ts[i], buf, sizeof buf), (long long)c->e);
            return NULL;
        }
    }
    if (q == k && k == v && dg__attn_fused_ok(q->ctx)) {
        /* self-attention, PyTorch's fast path: one projection to q, k and v
         * side by side, heads read and written in place */
        dg_tensor *o = dg__attention_packed(op, dg_linear(q, c->in_w, c->in_b), c->heads,
                                            key_padding_mask, causal);
        return dg_linear(o, c->out_w, c->out_b);
    }
    dg_tensor *a = dg_scaled_dot_product_attention(mha_project(c, q, 0), mha_project(c, k, 1),
                                                   mha_project(c, v, 2), key_padding_mask, causal);
    if (!a) return NULL;
    int64_t s[3] = { q->shape[0], q->shape[1], c->e };
    dg_tensor *o = dg_reshape(dg_contiguous(dg_transpose(a, 1, 2)), 3, s);
    return dg_linear(o, c->out_w, c->out_b);
}

/* ---- LayerNorm, Embedding, GELU, Tanh --------------------------------------- */

static dg_tensor *layer_norm_forward(dg_module *m, dg_tensor *x) {
    return dg_layer_norm(x, 1, m->weight, m->bias, m->fcfg[2]);
}

dg_module *dg_nn_layer_norm(dg_ctx *ctx, int64_t dim, float eps) {
    if (!ctx) return NULL;
    if (dim <= 0 || !(eps >= 0.0f)) {
        dg_set_error("dg_nn_layer_norm: dim %lld must be positive and eps %g not negative",
                     (long long)dim, eps);
        return NULL;
    }
    dg_module *m = dg__module_new(ctx, layer_norm_forward);
    m->kind = DG_MODULE_LAYER_NORM;
    m->fcfg[2] = eps;
    snprintf(m->name, sizeof m->name, "LayerNorm((%lld,), eps=%g, elementwise_affine=True)",
             (long long)dim, eps);
    m->weight = dg_param_new(ctx, "weight", 1, &dim);
    m->bias = dg_param_new(ctx, "bias", 1, &dim);
    if (!m->weight || !m->bias) return NULL;
    dg_init_constant(m->weight, 1.0f);
    m->params = dg__ctx_calloc(ctx, 2 * sizeof *m->params);
    m->params[m->nparams++] = m->weight;
    m->params[m->nparams++] = m->bias;
    return m;
}

static dg_tensor *embedding_forward(dg_module *m, dg_tensor *x) {
    return dg_embedding(m->weight, x, m->cfg[0]);
}

dg_module *dg_nn_embedding(dg_ctx *ctx, int64_t num, int64_t dim, int64_t padding_idx) {
    if (!ctx) return NULL;
    if (num <= 0 || dim <= 0) {
        dg_set_error("dg_nn_embedding: num %lld and dim %lld must be positive", (long long)num,
                     (long long)dim);
        return NULL;
    }
    if (padding_idx != DG_NO_PADDING_IDX && (padding_idx >= num || padding_idx < -num)) {
        dg_set_error("dg_nn_embedding: padding_idx %lld is out of range for %lld embeddings",
                     (long long)padding_idx, (long long)num);
        return NULL;
    }
    dg_module *m = dg__module_new(ctx, embedding_forward);
    m->kind = DG_MODULE_EMBEDDING;
    m->cfg[0] = padding_idx;
    if (padding_idx == DG_NO_PADDING_IDX)
        snprintf(m->name, sizeof m->name, "Embedding(%lld, %lld)", (long long)num, (long long)dim);
    else
        snprintf(m->name, sizeof m->name, "Embedding(%lld, %lld, padding_idx=%lld)", (long long)num,
                 (long long)dim, (long long)(padding_idx < 0 ? padding_idx + num : padding_idx));
    int64_t ws[2] = { num, dim };
    m->weight = dg_param_new(ctx, "weight", 2, ws);
    if (!m->weight) return NULL;
    dg_init_normal(m->weight, 0.0f, 1.0f);
    if (padding_idx != DG_NO_PADDING_IDX) {
        int64_t row = padding_idx < 0 ? padding_idx + num : padding_idx;
        float *z = malloc((size_t)(num * dim) * sizeof *z);
        if (!z) {
            dg_set_error("dg_nn_embedding: out of memory for %lld x %lld", (long long)num,
                         (long long)dim);
            return NULL;
        }
        dg_tensor_to_host(m->weight, z);
        memset(z + row * dim, 0, (size_t)dim * sizeof *z);
        dg_tensor_copy_from_host(m->weight, z);
        free(z);
    }
    m->params = dg__ctx_calloc(ctx, sizeof *m->params);
    m->params[m->nparams++] = m->weight;
    return m;
}

static dg_tensor *gelu_forward(dg_module *m, dg_tensor *x) {
    (void)m;
    return dg_gelu(x);
}

static dg_tensor *tanh_forward(dg_module *m, dg_tensor *x) {
    (void)m;
    return dg_tanh(x);
}

dg_module *dg_nn_gelu(dg_ctx *ctx) {
    if (!ctx) return NULL;
    dg_module *m = dg__module_new(ctx, gelu_forward);
    m->kind = DG_MODULE_GELU;
    snprintf(m->name, sizeof m->name, "GELU(approximate='none')");
    return m;
}

dg_module *dg_nn_tanh(dg_ctx *ctx) {
    if (!ctx) return NULL;
    dg_module *m = dg__module_new(ctx, tanh_forward);
    m->kind = DG_MODULE_TANH;
    snprintf(m->name, sizeof m->name, "Tanh()");
    return m;
}

/* ---- user-defined modules ---------------------------------------------------- */

typedef struct {
    dg_tensor *(*forward)(dg_module *self, dg_tensor *x, void *state);
    void *state;
} custom_cfg;

static dg_tensor *custom_forward(dg_module *m, dg_tensor *x) {
    const custom_cfg *c = m->ext;
    return c->forward(m, x, c->state);
}

dg_module *dg_nn_custom(dg_ctx *ctx, const char *name,
                        dg_tensor *(*forward)(dg_module *self, dg_tensor *x, void *state),
                        void *state, int num_children, dg_module **children) {
    const char *op = "dg_nn_custom";
    if (!ctx) return NULL;
    if (!forward) {
        dg_set_error("%s: forward is NULL", op);
        return NULL;
    }
    if (num_children < 0 || (num_children > 0 && !children)) {
        dg_set_error("%s: num_children %d with children %s", op, num_children,
                     children ? "given" : "NULL");
        return NULL;
    }
    int total = 0;
    for (int i = 0; i < num_children; i++) {
        if (!children[i]) {
            dg_set_error("%s: children[%d] is NULL", op, i);
            return NULL;
        }
        if (children[i]->ctx != ctx) {
            dg_set_error("%s: children[%d] belongs to another context", op, i);
            return NULL;
        }
        total += children[i]->nparams;
    }
    dg_module *m = dg__module_new(ctx, custom_forward);
    custom_cfg *c = dg__ctx_calloc(ctx, sizeof *c);
    c->forward = forward;
    c->state = state;
    m->ext = c;
    m->kind = DG_MODULE_CUSTOM;
    snprintf(m->name, sizeof m->name, "%s", name && *name ? name : "Custom");
    m->nchildren = num_children;
    m->children = dg__ctx_calloc(ctx, (size_t)(num_children ? num_children : 1) * sizeof *m->children);
    m->params = dg__ctx_calloc(ctx, (size_t)(total ? total : 1) * sizeof *m->params);
    for (int i = 0; i < num_children; i++) {
        m->children[i] = children[i];
        for (int k = 0; k < children[i]->nparams; k++) m->params[m->nparams++] = children[i]->params[k];
    }
    return m;
}
