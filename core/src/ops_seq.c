/* ops_seq.c - sequence and attention ops: shape and index checks, autograd
 * records and backward rules. The kernels are the backend's seq family
 * (backend-impl.h); concat, stack and attention are built from the math
 * family and the ops here. */
#include "seq-impl.h"
#include "amp-impl.h"
#include "dgrad/ops_seq.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BE(t) ((t)->ctx->be)

/* ---- helpers ------------------------------------------------------------- */

static const char *shp(const dg_tensor *t, char *buf) { return dg_shape_str(t, buf, 96); }

static const char *shape_str(int nd, const int64_t *s, char *buf) {
    size_t k = (size_t)snprintf(buf, 96, "[");
    for (int d = 0; d < nd && k < 96; d++)
        k += (size_t)snprintf(buf + k, 96 - k, d ? ", %lld" : "%lld", (long long)s[d]);
    if (k < 96) snprintf(buf + k, 96 - k, "]");
    return buf;
}

bool dg__seq_has(const dg_ctx *ctx, const char *op, const void *slot) {
    if (slot) return true;
    dg_set_error("%s: not implemented on %s", op, ctx->be->name);
    return false;
}

static bool check_float(const char *op, const char *what, const dg_tensor *t) {
    if (t->dtype == DG_F32) return true;
    dg_set_error("%s: expected a float32 %s, got %s", op, what, dg_dtype_name(t->dtype));
    return false;
}

static bool check_ctx(const char *op, const char *what, const dg_tensor *x, const dg_tensor *t) {
    if (!t || t->ctx == x->ctx) return true;
    dg_set_error("%s: %s belongs to a different context", op, what);
    return false;
}

static bool check_mask_dtype(const char *op, const char *what, const dg_tensor *m) {
    if (m->dtype == DG_I32 || m->dtype == DG_U8) return true;
    dg_set_error("%s: %s must be int32 or uint8, got %s", op, what, dg_dtype_name(m->dtype));
    return false;
}

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= s[i];
    return p;
}

static int norm_dim(const char *op, int nd, int dim, const dg_tensor *t) {
    if (dim < -nd || dim >= nd) {
        char b[96];
        dg_set_error("%s: dim %d out of range for a tensor of shape %s", op, dim, shp(t, b));
        return -1;
    }
    return dim < 0 ? dim + nd : dim;
}

/* Broadcast shape of n tensors; false (no message) if they do not fit. */
static bool broadcast(int n, dg_tensor *const *ts, int *ndim, int64_t *shape) {
    int nd = 0;
    for (int i = 0; i < n; i++) nd = ts[i]->ndim > nd ? ts[i]->ndim : nd;
    for (int d = 0; d < nd; d++) {
        int64_t s = 1;
        for (int i = 0; i < n; i++) {
            int k = d - (nd - ts[i]->ndim);
            int64_t v = k >= 0 ? ts[i]->shape[k] : 1;
            if (v == 1) continue;
            if (s != 1 && s != v) return false;
            s = v;
        }
        shape[d] = s;
    }
    *ndim = nd;
    return true;
}

/* dst (contiguous) (+)= the n contiguous floats at src. */
static void add_flat(dg_tensor *dst, const void *src, bool acc) {
    dg_tensor d = *dst, s = *dst;
    d.ndim = s.ndim = 1;
    d.shape[0] = s.shape[0] = dg_numel(dst);
    d.stride[0] = s.stride[0] = 1;
    s.data = (void *)src;
    BE(dst)->math.binary(DG_BIN_COPY, &d, &s, &s, 1.0f, acc);
}

/* Add full (contiguous, the broadcast shape of an op's output) into t's
 * gradient, summing over the dims where t was broadcast. Runs in backward,
 * where grad mode is off, so dg_sum_dims records nothing. */
static void grad_from_full(dg_tensor *t, dg_tensor *full) {
    bool acc;
    dg_tensor *g = dg__grad_slot(t, &acc);
    if (!g) return;
    dg_tensor *src = full;
    if (dg_numel(full) != dg_numel(t)) {
        int dims[DG_MAX_DIMS], nr = 0, off = full->ndim - t->ndim;
        for (int d = 0; d < full->ndim; d++)
            if (d < off || (t->shape[d - off] == 1 && full->shape[d] != 1)) dims[nr++] = d;
        src = dg_sum_dims(full, nr, dims, true);
        DG_ASSERT(src && dg_numel(src) == dg_numel(t));
    }
    add_flat(g, src->data, acc);
}

/* The index values of idx (int32), read on the host, must lie in [0, lim). */
static bool check_index(const char *op, const char *what, const dg_tensor *idx, int64_t lim) {
    int64_t n = dg_numel(idx);
    int32_t *h = malloc((size_t)(n ? n : 1) * sizeof *h);
    DG_ASSERT(h != NULL);
    dg_tensor_to_host(idx, h);
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        if (h[i] < 0 || h[i] >= lim) {
            dg_set_error("%s: %s[%lld] = %d is out of range (valid: [0, %lld))", op, what,
                         (long long)i, (int)h[i], (long long)lim);
            ok = false;
        }
    }
    free(h);
    return ok;
}

/* ---- activations ------------------------------------------------------------ */

static void act_backward(dg_node *n) {
    dg_tensor *x = n->in[0];
    bool acc;
    dg_tensor *g = dg__grad_slot(x, &acc);
    if (g)
        BE(x)->seq.act_bwd((dg_act)n->i[0], g->data, n->out->grad->data, x->data, n->out->data,
                           dg_numel(x), acc);
}

static dg_tensor *act_op(const char *name, dg_act act, dg_tensor *x) {
    if (!x) return NULL;
    if (!check_float(name, "input", x) || !dg__seq_has(x->ctx, name, BE(x)->seq.act_fwd)) return NULL;
    x = dg_contiguous(x);
    dg_tensor *out = dg__tensor_alloc(x->ctx, DG_F32, x->ndim, x->shape);
    BE(x)->seq.act_fwd(act, out->data, x->data, dg_numel(x));
    if (dg__needs_grad(x->ctx, 1, &x)) dg__record(x->ctx, name, act_backward, out, 1, &x)->i[0] = act;
    return out;
}

dg_tensor *dg_tanh(dg_tensor *x) { return act_op("dg_tanh", DG_ACT_TANH, x); }
dg_tensor *dg_sigmoid(dg_tensor *x) { return act_op("dg_sigmoid", DG_ACT_SIGMOID, x); }
dg_tensor *dg_gelu(dg_tensor *x) { return act_op("dg_gelu", DG_ACT_GELU, x); }

/* ---- layer norm -------------------------------------------------------------- */

static void layer_norm_backward(dg_node *n) {
    dg_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    bool ax, aw, ab;
    dg_tensor *gx = dg__grad_slot(x, &ax), *gw = dg__grad_slot(w, &aw), *gb = dg__grad_slot(b, &ab);
    BE(x)->seq.layer_norm_bwd(gx ? gx->data : NULL, gw ? gw->data : NULL, gb ? gb->data : NULL,
                              n->out->grad->data, x->data, n->saved[0]->data, n->saved[1]->data,
                              w ? w->data : NULL, n->i[0], n->i[1], ax, aw, ab);
}

dg_tensor *dg_layer_norm(dg_tensor *x, int nnorm, dg_tensor *weight, dg_tensor *bias, float eps) {
    if (!x) return NULL;
    const char *name = "dg_layer_norm";
    char b1[96], b2[96], b3[96];
    if (!check_float(name, "input", x) || !check_ctx(name, "weight", x, weight) ||
        !check_ctx(name, "bias", x, bias) || (weight && !check_float(name, "weight", weight)) ||
        (bias && !check_float(name, "bias", bias)))
        return NULL;
    if (nnorm < 1 || nnorm > x->ndim) {
        dg_set_error("%s: nnorm %d must be in [1, %d] for an input of shape %s", name, nnorm,
                     x->ndim, shp(x, b1));
        return NULL;
    }
    const int64_t *ns = x->shape + x->ndim - nnorm;
    dg_tensor *wb[2] = { weight, bias };
    for (int k = 0; k < 2; k++) {
        dg_tensor *t = wb[k];
        if (t && (t->ndim != nnorm || memcmp(t->shape, ns, sizeof(int64_t) * (size_t)nnorm))) {
            dg_set_error("%s: %s of shape %s does not fit the normalized shape %s of input %s", name,
                         k ? "bias" : "weight", shp(t, b2), shape_str(nnorm, ns, b3), shp(x, b1));
            return NULL;
        }
    }
    if (!(eps >= 0.0f)) {
        dg_set_error("%s: eps %g must not be negative", name, eps);
        return NULL;
    }
    if (!dg__seq_has(x->ctx, name, BE(x)->seq.layer_norm_fwd)) return NULL;
    x = dg_contiguous(x);
    if (weight) weight = dg_contiguous(weight);
    if (bias) bias = dg_contiguous(bias);
    int64_t d = prod(ns, 0, nnorm), rows = d ? dg_numel(x) / d : 0;
    dg_tensor *out = dg__tensor_alloc(x->ctx, DG_F32, x->ndim, x->shape);
    dg_tensor *mean = dg__tensor_alloc(x->ctx, DG_F32, 1, &rows);
    dg_tensor *rstd = dg__tensor_alloc(x->ctx, DG_F32, 1, &rows);
    BE(x)->seq.layer_norm_fwd(out->data, mean->data, rstd->data, x->data,
                              weight ? weight->data : NULL, bias ? bias->data : NULL, rows, d, eps);
    dg_tensor *in[3] = { x, weight, bias };
    if (dg__needs_grad(x->ctx, 3, in)) {
        dg_node *n = dg__record(x->ctx, name, layer_norm_backward, out, 3, in);
        n->saved[0] = mean;
        n->saved[1] = rstd;
        n->i[0] = rows;
        n->i[1] = d;
    }
    return out;
}

/* ---- embedding, gather, index_select ------------------------------------------- */

/* n->i: outer, nx, ni, inner, per_element, skip */
static void index_backward(dg_node *n) {
    dg_tensor *x = n->in[0], *idx = n->in[1];
    bool acc;
    dg_tensor *g = dg__grad_slot(x, &acc);
    if (!g) return;
    if (!acc) BE(x)->mem.memset0(g->data, (size_t)dg_numel(g) * sizeof(float));
    BE(x)->seq.index_bwd(g->data, n->out->grad->data, idx->data, n->i[0], n->i[1], n->i[2], n->i[3],
                         n->i[4] != 0, n->i[5]);
}

/* out [outer, ni, inner] (shape oshape) picked from x along its middle dim */
static dg_tensor *index_op(const char *name, dg_tensor *x, dg_tensor *idx, int ond,
                           const int64_t *oshape, int64_t outer, int64_t nx, int64_t ni,
                           int64_t inner, bool per_element, int64_t skip) {
    x = dg_contiguous(x);
    idx = dg_contiguous(idx);
    dg_tensor *out = dg__tensor_alloc(x->ctx, DG_F32, ond, oshape);
    BE(x)->seq.index_fwd(out->data, x->data, idx->data, outer, nx, ni, inner, per_element);
    dg_tensor *in[2] = { x, idx };
    if (dg__needs_grad(x->ctx, 1, &x)) {
        dg_node *n = dg__record(x->ctx, name, index_backward, out, 2, in);
        int64_t v[6] = { outer, nx, ni, inner, per_element, skip };
        memcpy(n->i, v, sizeof v);
    }
    return out;
}

static bool check_index_tensor(const char *name, const char *what, const dg_tensor *x,
                               const dg_tensor *idx) {
    if (!check_ctx(name, what, x, idx)) return false;
    if (idx->dtype != DG_I32) {
        dg_set_error("%s: %s must be int32, got %s", name, what, dg_dtype_name(idx->dtype));
        return false;
    }
    return true;
}

dg_tensor *dg_embedding(dg_tensor *weight, dg_tensor *indices, int64_t padding_idx) {
    if (!weight || !indices) return NULL;
    const char *name = "dg_embedding";
    char b1[96], b2[96];
    if (!check_float(name, "weight", weight) || !check_index_tensor(name, "indices", weight, indices))
        return NULL;
    if (weight->ndim != 2) {
        dg_set_error("%s: weight must be 2-D [num_embeddings, embedding_dim], got %s", name,
                     shp(weight, b1));
        return NULL;
    }
    if (indices->ndim >= DG_MAX_DIMS) {
        dg_set_error("%s: indices %s have too many dims (at most %d)", name, shp(indices, b2),
                     DG_MAX_DIMS - 1);
        return NULL;
    }
    int64_t V = weight->shape[0], D = weight->shape[1], skip = -1;
    if (padding_idx != DG_NO_PADDING_IDX) {
        skip = padding_idx < 0 ? padding_idx + V : padding_idx;
        if (skip < 0 || skip >= V) {
            dg_set_error("%s: padding_idx %lld is out of range for %lld embeddings", name,
                         (long long)padding_idx, (long long)V);
            return NULL;
        }
    }
    if (!dg__seq_has(weight->ctx, name, BE(weight)->seq.index_fwd) ||
        !check_index(name, "indices", indices, V))
        return NULL;
    int64_t os[DG_MAX_DIMS];
    memcpy(os, indices->shape, sizeof(int64_t) * (size_t)indices->ndim);
    os[indices->ndim] = D;
    return index_op(name, weight, indices, indices->ndim + 1, os, 1, V, dg_numel(indices), D, false,
                    skip);
}

dg_tensor *dg_gather(dg_tensor *x, int dim, dg_tensor *index) {
    if (!x || !index) return NULL;
    const char *name = "dg_gather";
    char b1[96], b2[96];
    if (!check_float(name, "input", x) || !check_index_tensor(name, "index", x, index)) return NULL;
    int nd = x->ndim ? x->ndim : 1;
    int d = norm_dim(name, nd, dim, x);
    if (d < 0) return NULL;
    bool fits = index->ndim == x->ndim && x->ndim > 0;
    for (int k = 0; fits && k < x->ndim; k++)
        if (k != d && index->shape[k] != x->shape[k]) fits = false;
    if (!fits) {
        dg_set_error("%s: index of shape %s does not fit input %s along dim %d (same dims and "
                     "sizes except along dim)", name, shp(index, b2), shp(x, b1), dim);
        return NULL;
    }
    if (!dg__seq_has(x->ctx, name, BE(x)->seq.index_fwd) ||
        !check_index(name, "index", index, x->shape[d]))
        return NULL;
    return index_op(name, x, index, index->ndim, index->shape, prod(x->shape, 0, d), x->shape[d],
                    index->shape[d], prod(x->shape, d + 1, x->ndim), true, -1);
}

dg_tensor *dg_index_select(dg_tensor *x, int dim, dg_tensor *index) {
    if (!x || !index) return NULL;
    const char *name = "dg_index_select";
    char b2[96];
    if (!check_float(name, "input", x) || !check_index_tensor(name, "index", x, index)) return NULL;
    if (x->ndim == 0) {
        dg_set_error("%s: the input is 0-dim", name);
        return NULL;
    }
    int d = norm_dim(name, x->ndim, dim, x);
    if (d < 0) return NULL;
    if (index->ndim != 1) {
        dg_set_error("%s: index must be 1-D, got %s", name, shp(index, b2));
        return NULL;
    }
    if (!dg__seq_has(x->ctx, name, BE(x)->seq.index_fwd) ||
        !check_index(name, "index", index, x->shape[d]))
        return NULL;
    int64_t os[DG_MAX_DIMS];
    memcpy(os, x->shape, sizeof os);
    os[d] = index->shape[0];
    return index_op(name, x, index, x->ndim, os, prod(x->shape, 0, d), x->shape[d], index->shape[0],
                    prod(x->shape, d + 1, x->ndim), false, -1);
}

/* ---- concat and stack ------------------------------------------------------------ */

/* i[0] = dim, i[1 + k] = start of input k along dim */
static void concat_backward(dg_node *n) {
    dg_tensor *go = n->out->grad;
    int d = (int)n->i[0];
    for (int k = 0; k < n->nin; k++) {
        dg_tensor *x = n->in[k];
        bool acc;
        dg_tensor *g = dg__grad_slot(x, &acc);
        if (!g) continue;
        dg_tensor v = *go;
        v.shape[d] = x->shape[d];
        v.data = (float *)go->data + n->i[1 + k] * go->stride[d];
        BE(x)->math.binary(DG_BIN_COPY, g, &v, &v, 1.0f, acc);
    }
}

static dg_tensor *concat3(int n, dg_tensor *const *xs, int d) {
    DG_ASSERT(n >= 1 && n <= 3);
    dg_ctx *ctx = xs[0]->ctx;
    int64_t shape[DG_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[d] = 0;
    for (int k = 0; k < n; k++) shape[d] += xs[k]->shape[d];
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, xs[0]->ndim, shape);
    int64_t start[3], at = 0;
    for (int k = 0; k < n; k++) {
        start[k] = at;
        dg_tensor v = *out;
        v.shape[d] = xs[k]->shape[d];
        v.data = (float *)out->data + at * out->stride[d];
        if (dg_numel(&v)) ctx->be->math.binary(DG_BIN_COPY, &v, xs[k], xs[k], 1.0f, false);
        at += xs[k]->shape[d];
    }
    if (dg__needs_grad(ctx, n, xs)) {
        dg_node *nd = dg__record(ctx, "dg_concat", concat_backward, out, n, xs);
        nd->i[0] = d;
        for (int k = 0; k < n; k++) nd->i[1 + k] = start[k];
    }
    return out;
}

/* Inputs beyond the node's three go through a tree of 3-way concats. */
static dg_tensor *concat_tree(int n, dg_tensor *const *xs, int d) {
    if (n <= 3) return concat3(n, xs, d);
    int m = (n + 2) / 3;
    dg_tensor **parts = malloc((size_t)m * sizeof *parts);
    DG_ASSERT(parts != NULL);
    for (int k = 0; k < m; k++) parts[k] = concat3(n - 3 * k < 3 ? n - 3 * k : 3, xs + 3 * k, d);
    dg_tensor *out = concat_tree(m, parts, d);
    free(parts);
    return out;
}

dg_tensor *dg_concat(int n, dg_tensor *const *xs, int dim) {
    const char *name = "dg_concat";
    if (n < 1 || !xs) {
        dg_set_error("%s: need at least one tensor, got %d", name, n);
        return NULL;
    }
    for (int k = 0; k < n; k++)
        if (!xs[k]) return NULL;
    char b1[96], b2[96];
    const dg_tensor *x0 = xs[0];
    if (x0->ndim == 0) {
        dg_set_error("%s: tensor 0 is 0-dim and cannot be concatenated", name);
        return NULL;
    }
    int d = norm_dim(name, x0->ndim, dim, x0);
    if (d < 0) return NULL;
    for (int k = 0; k < n; k++) {
        const dg_tensor *x = xs[k];
        if (!check_ctx(name, "a tensor", x0, x) || !check_float(name, "tensor", x)) return NULL;
        bool fits = x->ndim == x0->ndim;
        for (int e = 0; fits && e < x->ndim; e++)
            if (e != d && x->shape[e] != x0->shape[e]) fits = false;
        if (!fits) {
            dg_set_error("%s: tensor %d of shape %s does not fit tensor 0 of shape %s (same sizes "
                         "except along dim %d)", name, k, shp(x, b1), shp(x0, b2), dim);
            return NULL;
        }
    }
    return concat_tree(n, xs, d);
}

dg_tensor *dg_stack(int n, dg_tensor *const *xs, int dim) {
    const char *name = "dg_stack";
    if (n < 1 || !xs) {
        dg_set_error("%s: need at least one tensor, got %d", name, n);
        return NULL;
    }
    for (int k = 0; k < n; k++)
        if (!xs[k]) return NULL;
    char b1[96], b2[96];
    const dg_tensor *x0 = xs[0];
    int nd = x0->ndim + 1;
    if (nd > DG_MAX_DIMS) {
        dg_set_error("%s: tensors of shape %s have too many dims to stack", name, shp(x0, b1));
        return NULL;
    }
    if (dim < -nd || dim >= nd) {
        dg_set_error("%s: dim %d out of range [%d, %d] for tensors of shape %s", name, dim, -nd,
                     nd - 1, shp(x0, b1));
        return NULL;
    }
    int d = dim < 0 ? dim + nd : dim;
    for (int k = 0; k < n; k++) {
        const dg_tensor *x = xs[k];
        if (!check_ctx(name, "a tensor", x0, x) || !check_float(name, "tensor", x)) return NULL;
        if (x->ndim != x0->ndim || memcmp(x->shape, x0->shape, sizeof(int64_t) * (size_t)x->ndim)) {
            dg_set_error("%s: tensor %d of shape %s differs from tensor 0 of shape %s", name, k,
                         shp(x, b1), shp(x0, b2));
            return NULL;
        }
    }
    int64_t s[DG_MAX_DIMS];
    for (int e = 0, k = 0; e < nd; e++) s[e] = e == d ? 1 : x0->shape[k++];
    dg_tensor **u = malloc((size_t)n * sizeof *u);
    DG_ASSERT(u != NULL);
    for (int k = 0; k < n; k++) u[k] = dg_reshape(xs[k], nd, s);
    dg_tensor *out = concat_tree(n, u, d);
    free(u);
    return out;
}

/* ---- where and masked_fill --------------------------------------------------------- */

static void where_backward(dg_node *n) {
    dg_tensor *a = n->in[1], *b = n->in[2], *out = n->out;
    int64_t len = dg_numel(out);
    dg_tensor *ab[2] = { a, b };
    for (int k = 0; k < 2; k++) {
        if (!ab[k]->requires_grad) continue;
        dg_tensor *full = dg__tensor_alloc(out->ctx, DG_F32, out->ndim, out->shape);
        BE(out)->seq.where_bwd(k ? NULL : full->data, k ? full->data : NULL, n->saved[0]->data,
                               out->grad->data, len);
        grad_from_full(ab[k], full);
    }
}

/* a, or a contiguous copy of a expanded to (nd, shape). */
static const float *full_of(dg_tensor *a, int nd, const int64_t *shape) {
    if (dg_is_contiguous(a) && dg_numel(a) == prod(shape, 0, nd)) return a->data;
    dg_tensor *f = dg__tensor_alloc(a->ctx, DG_F32, nd, shape);
    dg_tensor e = dg__expand(a, nd, shape);
    BE(a)->math.binary(DG_BIN_COPY, f, &e, &e, 1.0f, false);
    return f->data;
}

/* out (nd, shape) = cond ? a : b, all three broadcast to shape (checked). */
static dg_tensor *where_impl(const char *name, dg_tensor *cond, dg_tensor *a, dg_tensor *b, int nd,
                             const int64_t *shape) {
    dg_ctx *ctx = a->ctx;
    dg_tensor *m = dg__tensor_alloc(ctx, DG_U8, nd, shape);
    dg_tensor ec = dg__expand(cond, nd, shape);
    ctx->be->seq.mask_from(m->data, &ec);
    const float *af = full_of(a, nd, shape), *bf = full_of(b, nd, shape);
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, nd, shape);
    ctx->be->seq.where(out->data, m->data, af, bf, dg_numel(out));
    dg_tensor *in[3] = { cond, a, b };
    if (dg__needs_grad(ctx, 3, in)) dg__record(ctx, name, where_backward, out, 3, in)->saved[0] = m;
    return out;
}

dg_tensor *dg_where(dg_tensor *cond, dg_tensor *a, dg_tensor *b) {
    if (!cond || !a || !b) return NULL;
    const char *name = "dg_where";
    if (!check_ctx(name, "b", a, b) || !check_ctx(name, "cond", a, cond) ||
        !check_mask_dtype(name, "cond", cond) || !check_float(name, "a", a) ||
        !check_float(name, "b", b))
        return NULL;
    int nd;
    int64_t shape[DG_MAX_DIMS];
    dg_tensor *ts[3] = { cond, a, b };
    if (!broadcast(3, ts, &nd, shape)) {
        char b1[96], b2[96], b3[96];
        dg_set_error("%s: cond %s, a %s and b %s cannot be broadcast together", name, shp(cond, b1),
                     shp(a, b2), shp(b, b3));
        return NULL;
    }
    if (!dg__seq_has(a->ctx, name, BE(a)->seq.where)) return NULL;
    return where_impl(name, cond, a, b, nd, shape);
}

dg_tensor *dg_masked_fill(dg_tensor *x, dg_tensor *mask, float value) {
    if (!x || !mask) return NULL;
    const char *name = "dg_masked_fill";
    if (!check_ctx(name, "mask", x, mask) || !check_float(name, "input", x) ||
        !check_mask_dtype(name, "mask", mask))
        return NULL;
    int nd;
    int64_t shape[DG_MAX_DIMS];
    dg_tensor *ts[2] = { mask, x };
    if (!broadcast(2, ts, &nd, shape) || nd != x->ndim ||
        memcmp(shape, x->shape, sizeof(int64_t) * (size_t)nd)) {
        char b1[96], b2[96];
        dg_set_error("%s: mask of shape %s does not broadcast to the input's shape %s", name,
                     shp(mask, b1), shp(x, b2));
        return NULL;
    }
    if (!dg__seq_has(x->ctx, name, BE(x)->seq.where)) return NULL;
    dg_tensor *fill = dg_full(x->ctx, 0, NULL, value);
    return where_impl(name, mask, fill, x, nd, shape);
}

/* ---- scaled dot-product attention ---------------------------------------------------- */

/* The fused path (seq.attn_fwd / attn_bwd): one node, no score tensor on
 * the tape, no head copies. geom: B, H, Lq, Lk, D, causal, packed. Packed:
 * q, k and v are the column blocks [0, E), [E, 2E), [2E, 3E) of one
 * contiguous projection [B, L, 3E] (E = H D) and the output is [B, L, E],
 * the heads merged; else q, k, v and the output are contiguous
 * [B, H, L, D] (H 1 for 3-D inputs). */
enum { ATTN_B, ATTN_H, ATTN_LQ, ATTN_LK, ATTN_D, ATTN_CAUSAL, ATTN_PACKED, ATTN_NGEOM };

static void attn_geom(dg_attn_geom *g, const int64_t *i) {
    int64_t H = i[ATTN_H], Lq = i[ATTN_LQ], Lk = i[ATTN_LK], D = i[ATTN_D];
    *g = (dg_attn_geom){ .b = i[ATTN_B], .h = H, .lq = Lq, .lk = Lk, .d = D,
                         .scale = 1.0f / sqrtf((float)D), .causal = i[ATTN_CAUSAL] != 0 };
    if (i[ATTN_PACKED]) {
        int64_t E = H * D, row[3] = { Lq * 3 * E, D, 3 * E }, orow[3] = { Lq * E, D, E };
        memcpy(g->q, row, sizeof row);
        memcpy(g->k, row, sizeof row);
        memcpy(g->v, row, sizeof row);
        memcpy(g->o, orow, sizeof orow);
    } else {
        int64_t qs[3] = { H * Lq * D, Lq * D, D }, ks[3] = { H * Lk * D, Lk * D, D };
        memcpy(g->q, qs, sizeof qs);
        memcpy(g->k, ks, sizeof ks);
        memcpy(g->v, ks, sizeof ks);
        memcpy(g->o, qs, sizeof qs);
    }
}

bool dg__attn_fused_ok(const dg_ctx *ctx) {
    return ctx->be->seq.attn_fwd && ctx->be->seq.attn_bwd && !dg__autocast_bf16(ctx);
}

static void attn_backward(dg_node *n) {
    dg_attn_geom g;
    attn_geom(&g, n->i);
    dg_tensor *go = n->out->grad;
    DG_ASSERT(dg_is_contiguous(go));
    const float *q, *k, *v;
    float *gq = NULL, *gk = NULL, *gv = NULL;
    bool aq = false, ak = false, av = false;
    if (n->i[ATTN_PACKED]) {
        int64_t e = g.h * g.d;
        dg_tensor *gx = dg__grad_slot(n->in[0], &aq);
        if (!gx) return;
        q = n->in[0]->data;
        k = q + e;
        v = q + 2 * e;
        gq = gx->data;
        gk = gq + e;
        gv = gq + 2 * e;
        ak = av = aq;
    } else {
        q = n->in[0]->data;
        k = n->in[1]->data;
        v = n->in[2]->data;
        dg_tensor *t;   /* the same tensor twice: its second slot adds */
        if ((t = dg__grad_slot(n->in[0], &aq))) gq = t->data;
        if ((t = dg__grad_slot(n->in[1], &ak))) gk = t->data;
        if ((t = dg__grad_slot(n->in[2], &av))) gv = t->data;
    }
    int64_t nw = DG_ATTN_WORK(&g);
    dg_tensor *w = dg__tensor_alloc(n->out->ctx, DG_F32, 1, &nw);
    BE(n->out)->seq.attn_bwd(&g, q, k, v, n->saved[0]->data, go->data, gq, gk, gv, aq, ak, av,
                             w->data);
}

static dg_tensor *attn_fused(const char *name, dg_tensor *const *in, int nin, const int64_t *geom,
                             dg_tensor *kpm, int ond, const int64_t *oshape) {
    dg_ctx *ctx = in[0]->ctx;
    dg_attn_geom g;
    attn_geom(&g, geom);
    const float *q = in[0]->data, *k, *v;
    if (geom[ATTN_PACKED]) {
        k = q + g.h * g.d;
        v = q + 2 * g.h * g.d;
    } else {
        k = in[1]->data;
        v = in[2]->data;
    }
    const uint8_t *pad = NULL;
    if (kpm) {   /* 1 where a key is masked, as a uint8 [B, Lk] */
        int64_t ms[2] = { g.b, g.lk };
        dg_tensor *m = dg__tensor_alloc(ctx, DG_U8, 2, ms);
        dg_tensor e = dg__expand(kpm, 2, ms);
        ctx->be->seq.mask_from(m->data, &e);
        pad = m->data;
    }
    int64_t np = g.b * g.h * g.lq * g.lk, nw = DG_ATTN_WORK(&g);
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, ond, oshape);
    dg_tensor *p = dg__tensor_alloc(ctx, DG_F32, 1, &np);
    dg_tensor *w = dg__tensor_alloc(ctx, DG_F32, 1, &nw);
    ctx->be->seq.attn_fwd(&g, q, k, v, pad, out->data, p->data, w->data);
    if (dg__needs_grad(ctx, nin, in)) {
        dg_node *n = dg__record(ctx, name, attn_backward, out, nin, in);
        n->saved[0] = p;
        memcpy(n->i, geom, ATTN_NGEOM * sizeof *geom);
    }
    return out;
}

static bool check_kpm(const char *name, const dg_tensor *kpm, int64_t B, int64_t Lk) {
    char b1[96];
    if (!kpm) return true;
    if (!check_mask_dtype(name, "key_padding_mask", kpm)) return false;
    if (kpm->ndim != 2 || kpm->shape[0] != B || kpm->shape[1] != Lk) {
        dg_set_error("%s: key_padding_mask has shape %s, expected [B, Lk] = [%lld, %lld]", name,
                     shp(kpm, b1), (long long)B, (long long)Lk);
        return false;
    }
    return true;
}

dg_tensor *dg__attention_packed(const char *name, dg_tensor *qkv, int64_t heads,
                                dg_tensor *key_padding_mask, bool causal) {
    if (!qkv) return NULL;
    DG_ASSERT(qkv->ndim == 3 && heads > 0 && qkv->shape[2] % (3 * heads) == 0);
    DG_ASSERT(dg__attn_fused_ok(qkv->ctx) && dg_is_contiguous(qkv));
    int64_t B = qkv->shape[0], L = qkv->shape[1], E = qkv->shape[2] / 3;
    if (!check_ctx(name, "key_padding_mask", qkv, key_padding_mask) ||
        !check_kpm(name, key_padding_mask, B, L))
        return NULL;
    int64_t geom[ATTN_NGEOM] = { B, heads, L, L, E / heads, causal, 1 }, os[3] = { B, L, E };
    return attn_fused(name, &qkv, 1, geom, key_padding_mask, 3, os);
}

dg_tensor *dg_scaled_dot_product_attention(dg_tensor *q, dg_tensor *k, dg_tensor *v,
                                           dg_tensor *key_padding_mask, bool causal) {
    if (!q || !k || !v) return NULL;
    const char *name = "dg_scaled_dot_product_attention";
    char b1[96], b2[96], b3[96];
    dg_tensor *kpm = key_padding_mask;
    if (!check_ctx(name, "k", q, k) || !check_ctx(name, "v", q, v) ||
        !check_ctx(name, "key_padding_mask", q, kpm) || !check_float(name, "q", q) ||
        !check_float(name, "k", k) || !check_float(name, "v", v))
        return NULL;
    int nd = q->ndim;
    bool fits = (nd == 3 || nd == 4) && k->ndim == nd && v->ndim == nd;
    for (int d = 0; fits && d < nd - 2; d++)
        fits = k->shape[d] == q->shape[d] && v->shape[d] == q->shape[d];
    if (fits) fits = k->shape[nd - 1] == q->shape[nd - 1] && v->shape[nd - 2] == k->shape[nd - 2];
    if (!fits) {
        dg_set_error("%s: q %s, k %s and v %s do not fit (need [B, (H,) Lq, D], [B, (H,) Lk, D] "
                     "and [B, (H,) Lk, Dv])", name, shp(q, b1), shp(k, b2), shp(v, b3));
        return NULL;
    }
    int64_t B = q->shape[0], Lq = q->shape[nd - 2], Lk = k->shape[nd - 2], D = q->shape[nd - 1];
    if (!check_kpm(name, kpm, B, Lk)) return NULL;
    dg_ctx *ctx = q->ctx;
    if (dg__attn_fused_ok(ctx) && v->shape[nd - 1] == D) {
        dg_tensor *in[3] = { dg_contiguous(q), dg_contiguous(k), dg_contiguous(v) };
        int64_t geom[ATTN_NGEOM] = { B, nd == 4 ? q->shape[1] : 1, Lq, Lk, D, causal, 0 };
        return attn_fused(name, in, 3, geom, kpm, nd, q->shape);
    }
    if ((kpm || causal) && !dg__seq_has(ctx, name, ctx->be->seq.where)) return NULL;
    dg_tensor *s = dg_mul_scalar(dg_matmul(q, dg_transpose(k, -2, -1)), 1.0f / sqrtf((float)D));
    if (!s) return NULL;
    if (kpm || causal) {
        /* the mask [B, (1,) Lq, Lk] on the host; rows with every key masked
         * are left unmasked here and zeroed after the softmax */
        int64_t nm = B * Lq * Lk;
        uint8_t *mask = calloc((size_t)(nm > 0 ? nm : 1) + (size_t)(B * Lq > 0 ? B * Lq : 1), 1);
        int32_t *pad = calloc((size_t)(B * Lk > 0 ? B * Lk : 1), sizeof *pad);
        DG_ASSERT(mask != NULL && pad != NULL);
        uint8_t *dead = mask + nm;
        if (kpm) {
            if (kpm->dtype == DG_I32) {
                dg_tensor_to_host(kpm, pad);
            } else {
                uint8_t *p8 = (uint8_t *)mask;   /* scratch: mask is filled below */
                dg_tensor_to_host(kpm, p8);
                for (int64_t i = B * Lk - 1; i >= 0; i--) pad[i] = p8[i];
            }
        }
        bool any_dead = false;
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < Lq; i++) {
                uint8_t *row = mask + (b * Lq + i) * Lk;
                bool all = true;
                for (int64_t j = 0; j < Lk; j++) {
                    row[j] = (kpm && pad[b * Lk + j] != 0) || (causal && j > i);
                    all = all && row[j];
                }
                if (all && Lk > 0) {
                    memset(row, 0, (size_t)Lk);
                    dead[b * Lq + i] = 1;
                    any_dead = true;
                }
            }
        int64_t ms[4] = { B, 1, Lq, Lk }, *mshape = nd == 4 ? ms : ms + 1;
        if (nd == 3) ms[1] = B;
        dg_tensor *mt = dg_tensor_from(ctx, DG_U8, nd, nd == 4 ? ms : (int64_t[]){ B, Lq, Lk }, mask);
        (void)mshape;
        dg_tensor *ninf = dg_full(ctx, 0, NULL, -INFINITY);
        s = where_impl(name, mt, ninf, s, s->ndim, s->shape);
        dg_tensor *p = dg_softmax(s, -1);
        if (any_dead && p) {
            int64_t ds[4] = { B, 1, Lq, 1 };
            dg_tensor *dt = nd == 4 ? dg_tensor_from(ctx, DG_U8, 4, ds, dead)
                                    : dg_tensor_from(ctx, DG_U8, 3, (int64_t[]){ B, Lq, 1 }, dead);
            p = where_impl(name, dt, dg_full(ctx, 0, NULL, 0.0f), p, p->ndim, p->shape);
        }
        free(mask);
        free(pad);
        return dg_matmul(p, v);
    }
    return dg_matmul(dg_softmax(s, -1), v);
}

/* ---- LSTM and GRU layers ------------------------------------------------------------------ */

static int64_t rnn_nstate(bool gru) { return gru ? 1 : 2; }

/* The saved buffers of a layer: hs, cs (LSTM), gates, hhn (GRU), one tensor. */
static void rnn_bufs(dg_rnn_bufs *s, const dg_rnn_geom *g, dg_tensor *xp, dg_tensor *w_hh,
                     dg_tensor *aux, dg_tensor *len, dg_tensor *out, dg_tensor *save, bool has_bias) {
    int64_t BH = g->b * g->h, TBH = g->t * BH;
    float *a = aux->data, *o = out->data, *sv = save->data;
    memset(s, 0, sizeof *s);
    s->xp = xp->data;
    s->w_hh = w_hh->data;
    s->h0 = a;
    s->c0 = g->gru ? NULL : a + BH;
    s->b_hh = has_bias ? a + rnn_nstate(g->gru) * BH : NULL;
    s->len = len->data;
    s->y = o;
    s->hn = o + TBH;
    s->cn = g->gru ? NULL : o + TBH + BH;
    s->hs = sv;
    sv += TBH + BH;
    if (!g->gru) {
        s->cs = sv;
        sv += TBH + BH;
    }
    s->gates = sv;
    sv += g->t * g->b * g->g;
    if (g->gru) s->hhn = sv;
}

static int64_t rnn_save_floats(const dg_rnn_geom *g) {
    int64_t BH = g->b * g->h, TBH = g->t * BH;
    return (TBH + BH) * (g->gru ? 1 : 2) + g->t * g->b * g->g + (g->gru ? TBH : 0);
}

static void rnn_backward(dg_node *n) {
    dg_tensor *xp = n->in[0], *w = n->in[1], *aux = n->in[2], *out = n->out, *go = out->grad;
    dg_ctx *ctx = out->ctx;
    dg_rnn_geom g = { .t = n->i[0], .b = n->i[1], .h = n->i[2], .gru = n->i[3] != 0 };
    g.g = (g.gru ? 3 : 4) * g.h;
    bool has_bias = n->i[4] != 0;
    dg_rnn_bufs s;
    rnn_bufs(&s, &g, xp, w, aux, n->saved[1], out, n->saved[0], has_bias);
    int64_t BH = g.b * g.h, TBH = g.t * BH;
    const float *dy = go->data, *dhn = dy + TBH, *dcn = g.gru ? NULL : dy + TBH + BH;
    bool ax, aw, aa;
    dg_tensor *gx = dg__grad_slot(xp, &ax), *gw = dg__grad_slot(w, &aw), *ga = dg__grad_slot(aux, &aa);
    float *dxp = gx && !ax ? gx->data
                           : dg_arena_alloc(&ctx->data, (size_t)(g.t * g.b * g.g) * sizeof(float));
    float *da = NULL;
    if (ga) da = aa ? dg_arena_alloc(&ctx->data, (size_t)dg_numel(aux) * sizeof(float)) : ga->data;
    float *work = dg_arena_alloc(&ctx->data, (size_t)DG_RNN_BWD_WORK(&g) * sizeof(float));
    ctx->be->seq.rnn_bwd(&g, &s, dy, dhn, dcn, dxp, gw ? gw->data : NULL, aw,
                         da && has_bias ? da + rnn_nstate(g.gru) * BH : NULL, false, da,
                         da && !g.gru ? da + BH : NULL, work);
    if (gx && ax) add_flat(gx, dxp, true);
    if (ga && aa) add_flat(ga, da, true);
}

dg_tensor *dg__rnn_layer(const char *op, bool gru, dg_tensor *xp, dg_tensor *w_hh, dg_tensor *aux,
                         dg_tensor *len, int64_t t, int64_t b, int64_t h, bool has_bias) {
    if (!xp || !w_hh || !aux || !len) return NULL;
    dg_ctx *ctx = xp->ctx;
    if (!dg__seq_has(ctx, op, ctx->be->seq.rnn_fwd)) return NULL;
    dg_rnn_geom g = { .t = t, .b = b, .h = h, .g = (gru ? 3 : 4) * h, .gru = gru };
    DG_ASSERT(dg_numel(xp) == t * b * g.g && w_hh->ndim == 2 && w_hh->shape[0] == g.g &&
              w_hh->shape[1] == h && len->dtype == DG_I32 && dg_numel(len) == b &&
              dg_is_contiguous(len));
    DG_ASSERT(dg_numel(aux) == rnn_nstate(gru) * b * h + (has_bias ? g.g : 0));
    xp = dg_contiguous(xp);
    w_hh = dg_contiguous(w_hh);
    aux = dg_contiguous(aux);
    int64_t no = (t * b + rnn_nstate(gru) * b) * h, ns = rnn_save_floats(&g);
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, 1, &no);
    dg_tensor *save = dg__tensor_alloc(ctx, DG_F32, 1, &ns);
    dg_rnn_bufs s;
    rnn_bufs(&s, &g, xp, w_hh, aux, len, out, save, has_bias);
    ctx->be->seq.rnn_fwd(&g, &s);
    dg_tensor *in[3] = { xp, w_hh, aux };
    if (dg__needs_grad(ctx, 3, in)) {
        dg_node *n = dg__record(ctx, op, rnn_backward, out, 3, in);
        n->saved[0] = save;
        n->saved[1] = len;
        int64_t v[5] = { t, b, h, gru, has_bias };
        memcpy(n->i, v, sizeof v);
    }
    return out;
}
