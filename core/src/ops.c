/* ops.c - differentiable ops: shape checks, autograd records and backward
 * rules. The arithmetic itself is in the device backend (backend_*.c). */
#include "impl.h"
#include "amp-impl.h"

#include <stdio.h>
#include <string.h>

#define BE(t) ((t)->ctx->be)

/* ---- helpers ------------------------------------------------------------- */

static const char *shp(const dg_tensor *t, char *buf) { return dg_shape_str(t, buf, 96); }

static bool check_float(const char *op, const dg_tensor *t) {
    if (t->dtype == DG_F32) return true;
    dg_set_error("%s: expected a float32 tensor, got %s", op, dg_dtype_name(t->dtype));
    return false;
}

/* check_float, but bfloat16 too inside autocast (dg_matmul, dg_linear). */
static bool check_float_amp(const char *op, const dg_tensor *t) {
    return (t->dtype == DG_BF16 && dg__autocast_bf16(t->ctx)) || check_float(op, t);
}

static bool check_same_ctx(const char *op, const dg_tensor *a, const dg_tensor *b) {
    if (a->ctx == b->ctx) return true;
    dg_set_error("%s: tensors belong to different contexts", op);
    return false;
}

static int norm_dim(const char *op, const dg_tensor *t, int dim) {
    int nd = t->ndim ? t->ndim : 1;
    if (dim < -nd || dim >= nd) {
        char b[96];
        dg_set_error("%s: dim %d out of range for a tensor of shape %s", op, dim, shp(t, b));
        return -1;
    }
    return dim < 0 ? dim + nd : dim;
}

/* A zero-filled gradient slot (for ops that write only part of it). */
static dg_tensor *grad_slot_zeroed(dg_tensor *t) {
    bool acc;
    dg_tensor *g = dg__grad_slot(t, &acc);
    if (g && !acc) BE(t)->mem.memset0(g->data, (size_t)dg_numel(g) * sizeof(float));
    return g;
}

/* A stack copy of t viewed with ndim dims and shape, right-aligned, with
 * stride 0 along broadcast dims. */
dg_tensor dg__expand(const dg_tensor *t, int ndim, const int64_t *shape) {
    dg_tensor e = *t;
    int off = ndim - t->ndim;
    DG_ASSERT(off >= 0);
    e.ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        int s = d - off;
        e.shape[d] = shape[d];
        e.stride[d] = (s < 0 || t->shape[s] == 1) ? 0 : t->stride[s];
    }
    return e;
}

static bool broadcast_shapes(const char *op, const dg_tensor *a, const dg_tensor *b,
                             int *ndim, int64_t *shape) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < nd; d++) {
        int ia = d - (nd - a->ndim), ib = d - (nd - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char b1[96], b2[96];
            dg_set_error("%s: shapes %s and %s cannot be broadcast together (dim %d: %lld vs %lld)",
                         op, shp(a, b1), shp(b, b2), d, (long long)sa, (long long)sb);
            return false;
        }
        shape[d] = sa == 1 ? sb : sa;
    }
    *ndim = nd;
    return true;
}

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= s[i];
    return p;
}

/* Sum contiguous `in` (ndim, shape) over the dims marked in red, writing the
 * contiguous result (same layout with those dims = 1) to out as
 * out (+)= scale * sum. Adjacent reduced dims are reduced in one pass. */
static void reduce_dims(dg_ctx *ctx, float *out, const float *in, int ndim, const int64_t *shape_in,
                        const bool *red, float scale, bool acc) {
    int64_t shape[DG_MAX_DIMS];
    memcpy(shape, shape_in, sizeof(int64_t) * (size_t)ndim);
    int runs[DG_MAX_DIMS][2], nruns = 0;
    for (int d = 0; d < ndim;) {
        if (!red[d] || shape[d] == 1) { d++; continue; }
        int e = d;
        while (e + 1 < ndim && red[e + 1]) e++;
        runs[nruns][0] = d;
        runs[nruns][1] = e;
        nruns++;
        d = e + 1;
    }
    if (nruns == 0) {
        ctx->be->math.reduce_sum(out, in, prod(shape, 0, ndim), 1, 1, scale, acc);
        return;
    }
    const float *src = in;
    for (int r = nruns - 1; r >= 0; r--) {
        int s = runs[r][0], e = runs[r][1];
        int64_t outer = prod(shape, 0, s), n = prod(shape, s, e + 1), inner = prod(shape, e + 1, ndim);
        float *dst = r == 0 ? out : dg_arena_alloc(&ctx->data, (size_t)(outer * inner) * sizeof(float));
        ctx->be->math.reduce_sum(dst, src, outer, n, inner, r == 0 ? scale : 1.0f, r == 0 ? acc : false);
        for (int d = s; d <= e; d++) shape[d] = 1;
        src = dst;
    }
}

/* Add alpha * op(x, y), computed over shape (ndim, shape), into t's
 * gradient, summing over the dims where t was broadcast. */
static void grad_bcast(dg_tensor *t, dg_binop op, const dg_tensor *x, const dg_tensor *y,
                       float alpha, int ndim, const int64_t *shape) {
    bool acc;
    dg_tensor *g = dg__grad_slot(t, &acc);
    if (!g) return;
    dg_tensor ex = dg__expand(x, ndim, shape);
    dg_tensor ey = y ? dg__expand(y, ndim, shape) : ex;
    if (prod(shape, 0, ndim) == dg_numel(t) && t->ndim <= ndim) {
        dg_tensor eg = dg__expand(g, ndim, shape);   /* same numel: no broadcast */
        BE(t)->math.binary(op, &eg, &ex, &ey, alpha, acc);
        return;
    }
    dg_tensor *full = dg__tensor_alloc(t->ctx, DG_F32, ndim, shape);
    BE(t)->math.binary(op, full, &ex, &ey, alpha, false);
    bool red[DG_MAX_DIMS];
    int off = ndim - t->ndim;
    for (int d = 0; d < ndim; d++) red[d] = d < off || t->shape[d - off] == 1;
    reduce_dims(t->ctx, g->data, full->data, ndim, shape, red, 1.0f, acc);
}

/* Give t the gradient go itself, as a view of t's shape, when t has no
 * gradient yet (a first contribution would be a copy of go). go belongs
 * to a node whose backward has run: no one reads it after this, so later
 * additions into t's gradient (t's other uses) change nothing else. At
 * most one input of a node may take go this way. */
static bool grad_share(dg_tensor *t, dg_tensor *go) {
    if (!t || !t->requires_grad || t->grad || !dg_is_contiguous(go) || dg_numel(t) != dg_numel(go))
        return false;
    int64_t st[DG_MAX_DIMS];
    dg__contiguous_strides(t->ndim, t->shape, st);
    t->grad = dg__view(go, t->ndim, t->shape, st, go->data);
    t->grad_gen = t->ctx->bw_gen;
    return true;
}

/* ---- elementwise binary -------------------------------------------------- */

static void binary_backward(dg_node *n) {
    dg_tensor *a = n->in[0], *b = n->in[1], *go = n->out->grad, *out = n->out;
    int nd = out->ndim;
    const int64_t *s = out->shape;
    switch ((dg_binop)n->i[0]) {
    case DG_BIN_ADD:   /* a residual add: one of the two copies of go is saved */
        if (!grad_share(a, go))   /* a broadcast a (fewer elements) is summed */
            grad_bcast(a, DG_BIN_COPY, go, NULL, 1.0f, nd, s);
        grad_bcast(b, DG_BIN_COPY, go, NULL, 1.0f, nd, s);
        break;
    case DG_BIN_SUB:
        grad_bcast(a, DG_BIN_COPY, go, NULL, 1.0f, nd, s);
        grad_bcast(b, DG_BIN_COPY, go, NULL, -1.0f, nd, s);
        break;
    case DG_BIN_MUL:
        grad_bcast(a, DG_BIN_MUL, go, b, 1.0f, nd, s);
        grad_bcast(b, DG_BIN_MUL, go, a, 1.0f, nd, s);
        break;
    case DG_BIN_DIV:
        grad_bcast(a, DG_BIN_DIV, go, b, 1.0f, nd, s);
        if (b->requires_grad) {   /* d(a/b)/db = -out / b */
            dg_tensor *t = dg__tensor_alloc(out->ctx, DG_F32, nd, s);
            BE(out)->math.binary(DG_BIN_MUL, t, go, out, 1.0f, false);
            grad_bcast(b, DG_BIN_DIV, t, b, -1.0f, nd, s);
        }
        break;
    default:
        DG_ASSERT(!"binary_backward: bad op");
    }
}

static dg_tensor *binary_op(const char *name, dg_binop op, dg_tensor *a, dg_tensor *b) {
    if (!a || !b) return NULL;
    if (!check_same_ctx(name, a, b) || !check_float(name, a) || !check_float(name, b)) return NULL;
    int nd;
    int64_t shape[DG_MAX_DIMS];
    if (!broadcast_shapes(name, a, b, &nd, shape)) return NULL;
    dg_tensor *out = dg__tensor_alloc(a->ctx, DG_F32, nd, shape);
    dg_tensor ea = dg__expand(a, nd, shape), eb = dg__expand(b, nd, shape);
    BE(a)->math.binary(op, out, &ea, &eb, 1.0f, false);
    dg_tensor *in[2] = { a, b };
    if (dg__needs_grad(a->ctx, 2, in)) {
        dg_node *n = dg__record(a->ctx, name, binary_backward, out, 2, in);
        n->i[0] = op;
    }
    return out;
}

dg_tensor *dg_add(dg_tensor *a, dg_tensor *b) { return binary_op("dg_add", DG_BIN_ADD, a, b); }
dg_tensor *dg_sub(dg_tensor *a, dg_tensor *b) { return binary_op("dg_sub", DG_BIN_SUB, a, b); }
dg_tensor *dg_mul(dg_tensor *a, dg_tensor *b) { return binary_op("dg_mul", DG_BIN_MUL, a, b); }
dg_tensor *dg_div(dg_tensor *a, dg_tensor *b) { return binary_op("dg_div", DG_BIN_DIV, a, b); }

/* ---- contiguous, and elementwise unary ------------------------------------- */

static void copy_backward(dg_node *n) {
    dg_tensor *a = n->in[0];
    grad_bcast(a, DG_BIN_COPY, n->out->grad, NULL, 1.0f, a->ndim, a->shape);
}

dg_tensor *dg_contiguous(dg_tensor *a) {
    if (!a) return NULL;
    if (dg_is_contiguous(a)) return a;
    dg_tensor *out = dg__tensor_alloc(a->ctx, a->dtype, a->ndim, a->shape);
    if (a->dtype == DG_F32) {
        BE(a)->math.binary(DG_BIN_COPY, out, a, a, 1.0f, false);
    } else {   /* integer views: rare, go element by element through the host */
        DG_ASSERT(a->device == DG_CPU);
        size_t es = dg_dtype_size(a->dtype);
        int64_t n = dg_numel(a), idx[DG_MAX_DIMS] = { 0 };
        for (int64_t i = 0; i < n; i++) {
            int64_t off = 0;
            for (int d = 0; d < a->ndim; d++) off += idx[d] * a->stride[d];
            memcpy((char *)out->data + i * (int64_t)es, (char *)a->data + off * (int64_t)es, es);
            for (int d = a->ndim - 1; d >= 0; d--) {
                if (++idx[d] < a->shape[d]) break;
                idx[d] = 0;
            }
        }
    }
    if (dg__needs_grad(a->ctx, 1, &a)) dg__record(a->ctx, "dg_contiguous", copy_backward, out, 1, &a);
    return out;
}

static void unary_backward(dg_node *n) {
    dg_tensor *a = n->in[0], *out = n->out, *go = out->grad;
    int nd = a->ndim;
    const int64_t *s = a->shape;
    switch ((dg_unop)n->i[0]) {
    case DG_UN_RELU: grad_bcast(a, DG_BIN_RELU_BWD, go, out, 1.0f, nd, s); break;
    case DG_UN_EXP: grad_bcast(a, DG_BIN_MUL, go, out, 1.0f, nd, s); break;
    case DG_UN_LOG: grad_bcast(a, DG_BIN_DIV, go, a, 1.0f, nd, s); break;
    case DG_UN_SCALE: grad_bcast(a, DG_BIN_COPY, go, NULL, n->f, nd, s); break;
    case DG_UN_ADD_SCALAR: grad_bcast(a, DG_BIN_COPY, go, NULL, 1.0f, nd, s); break;
    default: DG_ASSERT(!"unary_backward: bad op");
    }
}

static dg_tensor *unary_op(const char *name, dg_unop op, dg_tensor *a, float alpha) {
    if (!a || !check_float(name, a)) return NULL;
    dg_tensor *x = dg_contiguous(a);
    dg_tensor *out = dg__tensor_alloc(a->ctx, DG_F32, a->ndim, a->shape);
    BE(a)->math.unary(op, out->data, x->data, dg_numel(a), alpha);
    if (dg__needs_grad(a->ctx, 1, &x)) {
        dg_node *n = dg__record(a->ctx, name, unary_backward, out, 1, &x);
        n->i[0] = op;
        n->f = alpha;
    }
    return out;
}

dg_tensor *dg_relu(dg_tensor *a) { return unary_op("dg_relu", DG_UN_RELU, a, 0); }
dg_tensor *dg_exp(dg_tensor *a) { return unary_op("dg_exp", DG_UN_EXP, a, 0); }
dg_tensor *dg_log(dg_tensor *a) { return unary_op("dg_log", DG_UN_LOG, a, 0); }
dg_tensor *dg_mul_scalar(dg_tensor *a, float s) { return unary_op("dg_mul_scalar", DG_UN_SCALE, a, s); }
dg_tensor *dg_neg(dg_tensor *a) { return unary_op("dg_neg", DG_UN_SCALE, a, -1.0f); }
dg_tensor *dg_add_scalar(dg_tensor *a, float s) {
    return unary_op("dg_add_scalar", DG_UN_ADD_SCALAR, a, s);
}

/* ---- matmul ---------------------------------------------------------------- */

typedef struct {
    bool trans;
    int64_t ld;
} gemm_op;

/* How BLAS sees the trailing 2-D block of t (rows x cols): row-major with
 * leading dimension ld, or transposed. False if neither fits. */
static bool gemm_layout(const dg_tensor *t, gemm_op *o) {
    int nd = t->ndim;
    int64_t rows = t->shape[nd - 2], cols = t->shape[nd - 1];
    int64_t s0 = t->stride[nd - 2], s1 = t->stride[nd - 1];
    int64_t mc = cols > 1 ? cols : 1, mr = rows > 1 ? rows : 1;
    if (rows == 0 || cols == 0) {   /* empty: any layout; BLAS wants ld >= cols */
        o->trans = false;
        o->ld = mc;
        return true;
    }
    if ((s1 == 1 || cols == 1) && (s0 >= mc || rows == 1)) {
        o->trans = false;
        o->ld = rows == 1 ? mc : s0;
        return true;
    }
    if ((s0 == 1 || rows == 1) && (s1 >= mr || cols == 1)) {
        o->trans = true;
        o->ld = cols == 1 ? mr : s1;
        return true;
    }
    return false;
}

/* Batched C[b] (+)= alpha * op(A[b]) op(B[b]) over the broadcast batch
 * dims: a, b and c have nb batch dims (strides 0 where broadcast) followed
 * by their 2-D blocks; ta/tb transpose A and B blocks first. */
static void batched_gemm(const dg_backend *be, int nb, const int64_t *bshape,
                         const dg_tensor *a, bool ta, const dg_tensor *b, bool tb,
                         const dg_tensor *c, float alpha, bool acc) {
    gemm_op oa, ob;
    DG_ASSERT(gemm_layout(a, &oa) && gemm_layout(b, &ob));
    DG_ASSERT(a->dtype == b->dtype);
    int nda = a->ndim, ndc = c->ndim;
    int64_t m = c->shape[ndc - 2], n = c->shape[ndc - 1];
    int64_t k = ta ? a->shape[nda - 2] : a->shape[nda - 1];
    int64_t ldc = c->stride[ndc - 2] > 1 ? c->stride[ndc - 2] : (n > 1 ? n : 1);
    int64_t nbatch = prod(bshape, 0, nb), idx[DG_MAX_DIMS] = { 0 };
    for (int64_t i = 0; i < nbatch; i++) {
        int64_t offa = 0, offb = 0, offc = 0;
        for (int d = 0; d < nb; d++) {
            offa += idx[d] * a->stride[d];
            offb += idx[d] * b->stride[d];
            offc += idx[d] * c->stride[d];
        }
        if (a->dtype == DG_BF16)   /* autocast: both bfloat16 (amp.c) */
            dg__gemm_bf16(c->ctx, oa.trans != ta, ob.trans != tb, m, n, k, alpha,
                          (const uint16_t *)a->data + offa, oa.ld, (const uint16_t *)b->data + offb,
                          ob.ld, acc ? 1.0f : 0.0f, (float *)c->data + offc, ldc);
        else
            be->math.gemm(oa.trans != ta, ob.trans != tb, m, n, k, alpha,
                     (const float *)a->data + offa, oa.ld, (const float *)b->data + offb, ob.ld,
                     acc ? 1.0f : 0.0f, (float *)c->data + offc, ldc);
        for (int d = nb - 1; d >= 0; d--) {
            if (++idx[d] < bshape[d]) break;
            idx[d] = 0;
        }
    }
}

/* A view of t as at least 2-D (prepend or append a 1) and expanded to the
 * batch shape. */
static dg_tensor as_batched(const dg_tensor *t, bool is_vec_left, bool is_vec_right, int nb,
                            const int64_t *bshape) {
    dg_tensor v = *t;
    if (is_vec_left) {            /* [K] -> [1, K] */
        v.ndim = 2;
        v.shape[0] = 1; v.shape[1] = t->shape[0];
        v.stride[0] = t->shape[0]; v.stride[1] = t->stride[0];
    } else if (is_vec_right) {    /* [K] -> [K, 1] */
        v.ndim = 2;
        v.shape[0] = t->shape[0]; v.shape[1] = 1;
        v.stride[0] = t->stride[0]; v.stride[1] = 1;
    }
    int64_t shape[DG_MAX_DIMS];
    memcpy(shape, bshape, sizeof(int64_t) * (size_t)nb);
    shape[nb] = v.shape[v.ndim - 2];
    shape[nb + 1] = v.shape[v.ndim - 1];
    return dg__expand(&v, nb + 2, shape);
}

static void matmul_backward(dg_node *n) {
    dg_tensor *a = n->in[0], *b = n->in[1], *go = n->out->grad;
    int nb = (int)n->i[0];
    bool a1 = n->i[1], b1 = n->i[2];
    int64_t bshape[DG_MAX_DIMS];
    for (int d = 0; d < nb; d++) bshape[d] = n->i[3 + d];
    /* autocast: saved holds the bfloat16 operands; the gradient is rounded too */
    bool amp = n->saved[0] != NULL;
    dg_tensor A = as_batched(amp ? n->saved[0] : a, a1, false, nb, bshape);
    dg_tensor B = as_batched(amp ? n->saved[1] : b, false, b1, nb, bshape);
    int64_t m = A.shape[nb], k = A.shape[nb + 1], nn = B.shape[nb + 1];
    DG_ASSERT(dg_is_contiguous(go));
    /* the output gradient, viewed [batch..., m, n] (contiguous) */
    dg_tensor G = amp ? *dg__to_bf16("dg_matmul", go) : *go;
    G.ndim = nb + 2;
    memcpy(G.shape, bshape, sizeof(int64_t) * (size_t)nb);
    G.shape[nb] = m;
    G.shape[nb + 1] = nn;
    dg__contiguous_strides(G.ndim, G.shape, G.stride);

    dg_tensor *targets[2] = { a, b };
    for (int w = 0; w < 2; w++) {
        dg_tensor *t = targets[w];
        if (!t->requires_grad) continue;
        int64_t shape[DG_MAX_DIMS];
        memcpy(shape, bshape, sizeof(int64_t) * (size_t)nb);
        shape[nb] = w == 0 ? m : k;
        shape[nb + 1] = w == 0 ? k : nn;
        bool acc = false;
        dg_tensor *g = dg__grad_slot(t, &acc);
        bool direct = dg_numel(g) == prod(shape, 0, nb + 2);
        dg_tensor *dst;
        dg_tensor view;
        if (direct) {   /* no batch broadcast: write straight into the slot */
            view = *g;
            view.ndim = nb + 2;
            memcpy(view.shape, shape, sizeof(int64_t) * (size_t)(nb + 2));
            dg__contiguous_strides(view.ndim, view.shape, view.stride);
            dst = &view;
        } else {
            dst = dg__tensor_alloc(t->ctx, DG_F32, nb + 2, shape);
        }
        if (w == 0) batched_gemm(BE(t), nb, bshape, &G, false, &B, true, dst, 1.0f, direct && acc);
        else batched_gemm(BE(t), nb, bshape, &A, true, &G, false, dst, 1.0f, direct && acc);
        if (!direct) {
            /* sum over batch dims where t was broadcast or absent */
            int off = nb + 2 - t->ndim - (w == 0 ? a1 : b1);
            bool red[DG_MAX_DIMS] = { false };
            for (int d = 0; d < nb; d++) {
                int s = d - off;
                red[d] = s < 0 || t->shape[s] == 1;
            }
            reduce_dims(t->ctx, g->data, dst->data, nb + 2, shape, red, 1.0f, acc);
        }
    }
}

dg_tensor *dg_matmul(dg_tensor *a, dg_tensor *b) {
    if (!a || !b) return NULL;
    const char *name = "dg_matmul";
    if (!check_same_ctx(name, a, b) || !check_float_amp(name, a) || !check_float_amp(name, b))
        return NULL;
    char b1[96], b2[96];
    if (a->ndim == 0 || b->ndim == 0) {
        dg_set_error("%s: both arguments need at least 1 dim, got %s and %s", name, shp(a, b1), shp(b, b2));
        return NULL;
    }
    bool a1 = a->ndim == 1, bv = b->ndim == 1;
    int64_t ka = a->shape[a->ndim - 1], kb = bv ? b->shape[0] : b->shape[b->ndim - 2];
    if (ka != kb) {
        dg_set_error("%s: shapes %s and %s do not fit (inner dims %lld != %lld)", name,
                     shp(a, b1), shp(b, b2), (long long)ka, (long long)kb);
        return NULL;
    }
    /* broadcast the batch dims */
    int nba = a->ndim > 2 ? a->ndim - 2 : 0, nbb = b->ndim > 2 ? b->ndim - 2 : 0;
    int nb = nba > nbb ? nba : nbb;
    int64_t bshape[DG_MAX_DIMS];
    for (int d = 0; d < nb; d++) {
        int ia = d - (nb - nba), ib = d - (nb - nbb);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            dg_set_error("%s: batch dims of %s and %s cannot be broadcast", name, shp(a, b1), shp(b, b2));
            return NULL;
        }
        bshape[d] = sa == 1 ? sb : sa;
    }
    gemm_op tmp;
    if (a->ndim >= 2 && !gemm_layout(a, &tmp)) a = dg_contiguous(a);
    if (b->ndim >= 2 && !gemm_layout(b, &tmp)) b = dg_contiguous(b);
    /* autocast: multiply bfloat16 copies (a, b stay the autograd inputs) */
    bool amp = dg__autocast_bf16(a->ctx);
    dg_tensor *a16 = amp ? dg__to_bf16(name, a) : a, *b16 = amp ? dg__to_bf16(name, b) : b;
    if (!a16 || !b16) return NULL;
    dg_tensor A = as_batched(a16, a1, false, nb, bshape), B = as_batched(b16, false, bv, nb, bshape);
    int64_t m = A.shape[nb], n = B.shape[nb + 1];
    int64_t full[DG_MAX_DIMS];
    memcpy(full, bshape, sizeof(int64_t) * (size_t)nb);
    full[nb] = m;
    full[nb + 1] = n;
    dg_tensor *out = dg__tensor_alloc(a->ctx, DG_F32, nb + 2, full);
    batched_gemm(BE(a), nb, bshape, &A, false, &B, false, out, 1.0f, false);
    /* drop the dims that 1-D operands added */
    int ond = 0;
    int64_t oshape[DG_MAX_DIMS];
    for (int d = 0; d < nb; d++) oshape[ond++] = bshape[d];
    if (!a1) oshape[ond++] = m;
    if (!bv) oshape[ond++] = n;
    out->ndim = ond;
    memcpy(out->shape, oshape, sizeof(int64_t) * (size_t)ond);
    dg__contiguous_strides(ond, out->shape, out->stride);
    dg_tensor *in[2] = { a, b };
    if (dg__needs_grad(a->ctx, 2, in)) {
        dg_node *nd = dg__record(a->ctx, name, matmul_backward, out, 2, in);
        nd->i[0] = nb;
        nd->i[1] = a1;
        nd->i[2] = bv;
        for (int d = 0; d < nb; d++) nd->i[3 + d] = bshape[d];
        if (amp) {
            nd->saved[0] = a16;
            nd->saved[1] = b16;
        }
    }
    return out;
}

/* ---- linear ----------------------------------------------------------------- */

static void linear_backward(dg_node *n) {
    dg_tensor *x = n->in[0], *w = n->in[1], *bias = n->in[2], *go = n->out->grad;
    const dg_backend *be = BE(x);
    int64_t in_f = w->shape[1], out_f = w->shape[0], rows = dg_numel(x) / in_f;
    bool acc;
    dg_tensor *g;
    if ((g = dg__grad_slot(x, &acc)))   /* dx = dy W */
        be->math.gemm(false, false, rows, in_f, out_f, 1.0f, go->data, out_f, w->data, in_f,
                 acc ? 1.0f : 0.0f, g->data, in_f);
    if ((g = dg__grad_slot(w, &acc)))   /* dW = dy^T x */
        be->math.gemm(true, false, out_f, in_f, rows, 1.0f, go->data, out_f, x->data, in_f,
                 acc ? 1.0f : 0.0f, g->data, in_f);
    if (bias && (g = dg__grad_slot(bias, &acc)))   /* db = sum_rows dy */
        be->math.reduce_sum(g->data, go->data, 1, rows, out_f, 1.0f, acc);
}

dg_tensor *dg_linear(dg_tensor *x, dg_tensor *weight, dg_tensor *bias) {
    if (!x || !weight) return NULL;
    const char *name = "dg_linear";
    if (!check_same_ctx(name, x, weight) || !check_float_amp(name, x) ||
        !check_float_amp(name, weight))
        return NULL;
    char b1[96], b2[96], b3[96];
    if (weight->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != weight->shape[1]) {
        dg_set_error("%s: input %s does not fit weight %s (need input [..., %lld])", name,
                     shp(x, b1), shp(weight, b2), (long long)(weight->ndim == 2 ? weight->shape[1] : -1));
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != weight->shape[0] || !check_float(name, bias))) {
        dg_set_error("%s: bias %s does not fit weight %s", name, shp(bias, b3), shp(weight, b2));
        return NULL;
    }
    x = dg_contiguous(x);
    weight = dg_contiguous(weight);
    if (bias) bias = dg_contiguous(bias);
    if (dg__autocast_bf16(x->ctx)) return dg__linear_bf16(x, weight, bias);   /* amp.c */
    int64_t in_f = weight->shape[1], out_f = weight->shape[0], rows = dg_numel(x) / in_f;
    int64_t shape[DG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim - 1] = out_f;
    dg_tensor *out = dg__tensor_alloc(x->ctx, DG_F32, x->ndim, shape);
    if (bias && BE(x)->math.gemm_bias) {   /* out = x W^T + bias, in the GEMM */
        BE(x)->math.gemm_bias(false, true, rows, out_f, in_f, 1.0f, x->data, in_f, weight->data,
                              in_f, bias->data, out->data, out_f);
    } else {
        if (bias) {   /* out = bias (each row), then out += x W^T */
            dg_tensor eb = dg__expand(bias, out->ndim, out->shape);
            BE(x)->math.binary(DG_BIN_COPY, out, &eb, &eb, 1.0f, false);
        }
        BE(x)->math.gemm(false, true, rows, out_f, in_f, 1.0f, x->data, in_f, weight->data, in_f,
                         bias ? 1.0f : 0.0f, out->data, out_f);
    }
    dg_tensor *in[3] = { x, weight, bias };
    if (dg__needs_grad(x->ctx, 3, in)) dg__record(x->ctx, name, linear_backward, out, bias ? 3 : 2, in);
    return out;
}

/* ---- reductions --------------------------------------------------------------- */

static void sum_backward(dg_node *n) {
    dg_tensor *a = n->in[0], *go = n->out->grad;
    /* view the output gradient with the reduced dims kept as size 1 */
    dg_tensor g = *go;
    g.ndim = a->ndim;
    for (int d = 0; d < a->ndim; d++) g.shape[d] = (n->i[0] >> d) & 1 ? 1 : a->shape[d];
    dg__contiguous_strides(g.ndim, g.shape, g.stride);
    grad_bcast(a, DG_BIN_COPY, &g, NULL, n->f, a->ndim, a->shape);
}

static dg_tensor *reduce_op(const char *name, dg_tensor *a, int ndims, const int *dims,
                            bool keepdim, bool mean) {
    if (!a || !check_float(name, a)) return NULL;
    bool red[DG_MAX_DIMS] = { false };
    int64_t mask = 0, count = 1;
    if (ndims < 0) {   /* all dims */
        for (int d = 0; d < a->ndim; d++) red[d] = true;
        mask = (1 << a->ndim) - 1;
        count = dg_numel(a);
    } else {
        for (int i = 0; i < ndims; i++) {
            int d = norm_dim(name, a, dims[i]);
            if (d < 0) return NULL;
            if (a->ndim == 0) continue;
            if (red[d]) {
                dg_set_error("%s: dim %d appears more than once", name, dims[i]);
                return NULL;
            }
            red[d] = true;
            mask |= (int64_t)1 << d;
            count *= a->shape[d];
        }
    }
    dg_tensor *x = dg_contiguous(a);
    int64_t shape[DG_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (!red[d]) shape[nd++] = a->shape[d];
        else if (keepdim) shape[nd++] = 1;
    }
    dg_tensor *out = dg__tensor_alloc(a->ctx, DG_F32, nd, shape);
    float scale = mean ? (count ? 1.0f / (float)count : 0.0f / 0.0f) : 1.0f;
    reduce_dims(a->ctx, out->data, x->data, a->ndim, a->shape, red, scale, false);
    if (dg__needs_grad(a->ctx, 1, &x)) {
        dg_node *n = dg__record(a->ctx, name, sum_backward, out, 1, &x);
        n->i[0] = mask;
        n->f = scale;
    }
    return out;
}

dg_tensor *dg_sum(dg_tensor *a) { return reduce_op("dg_sum", a, -1, NULL, false, false); }
dg_tensor *dg_mean(dg_tensor *a) { return reduce_op("dg_mean", a, -1, NULL, false, true); }
dg_tensor *dg_sum_dims(dg_tensor *a, int ndims, const int *dims, bool keepdim) {
    return reduce_op("dg_sum_dims", a, ndims, dims, keepdim, false);
}
dg_tensor *dg_mean_dims(dg_tensor *a, int ndims, const int *dims, bool keepdim) {
    return reduce_op("dg_mean_dims", a, ndims, dims, keepdim, true);
}

dg_tensor *dg_argmax(dg_tensor *a, int dim, bool keepdim) {
    if (!a || !check_float("dg_argmax", a)) return NULL;
    int d = norm_dim("dg_argmax", a, dim);
    if (d < 0) return NULL;
    dg_tensor *x = dg_contiguous(a);
    int64_t shape[DG_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < a->ndim; i++) {
        if (i != d) shape[nd++] = a->shape[i];
        else if (keepdim) shape[nd++] = 1;
    }
    dg_tensor *out = dg__tensor_alloc(a->ctx, DG_I32, nd, shape);
    int64_t D = a->ndim ? a->shape[d] : 1;
    BE(a)->math.argmax(out->data, x->data, prod(a->shape, 0, d), D, prod(a->shape, d + 1, a->ndim));
    return out;
}

/* ---- softmax and cross entropy -------------------------------------------------- */

static void softmax_backward(dg_node *n) {
    dg_tensor *a = n->in[0], *out = n->out;
    bool acc;
    dg_tensor *g = dg__grad_slot(a, &acc);
    if (g)
        BE(a)->math.softmax_bwd(g->data, out->grad->data, out->data, n->i[0], n->i[1], n->i[2],
                           n->i[3], acc);
}

static dg_tensor *softmax_op(const char *name, dg_tensor *a, int dim, bool log) {
    if (!a || !check_float(name, a)) return NULL;
    int d = norm_dim(name, a, dim);
    if (d < 0) return NULL;
    dg_tensor *x = dg_contiguous(a);
    dg_tensor *out = dg__tensor_alloc(a->ctx, DG_F32, a->ndim, a->shape);
    int64_t outer = prod(a->shape, 0, d), D = a->ndim ? a->shape[d] : 1;
    int64_t inner = prod(a->shape, d + 1, a->ndim);
    BE(a)->math.softmax(out->data, x->data, outer, D, inner, log);
    if (dg__needs_grad(a->ctx, 1, &x)) {
        dg_node *n = dg__record(a->ctx, name, softmax_backward, out, 1, &x);
        n->i[0] = outer; n->i[1] = D; n->i[2] = inner; n->i[3] = log;
    }
    return out;
}

dg_tensor *dg_softmax(dg_tensor *a, int dim) { return softmax_op("dg_softmax", a, dim, false); }
dg_tensor *dg_log_softmax(dg_tensor *a, int dim) { return softmax_op("dg_log_softmax", a, dim, true); }

static void cross_entropy_backward(dg_node *n) {
    dg_tensor *x = n->in[0], *t = n->in[1];
    bool acc;
    dg_tensor *g = dg__grad_slot(x, &acc);
    if (g)
        BE(x)->math.cross_entropy_bwd(g->data, n->out->grad->data, n->saved[1]->data, n->saved[0]->data,
                                 x->data, t->data, x->shape[0], x->shape[1], (int)n->i[0], acc);
}

dg_tensor *dg_cross_entropy_ex(dg_tensor *logits, dg_tensor *target, int ignore_index) {
    if (!logits || !target) return NULL;
    const char *name = "dg_cross_entropy";
    char b1[96], b2[96];
    if (!check_same_ctx(name, logits, target) || !check_float(name, logits)) return NULL;
    if (target->dtype != DG_I32) {
        dg_set_error("%s: target must be int32 class indices, got %s", name, dg_dtype_name(target->dtype));
        return NULL;
    }
    if (logits->ndim != 2 || target->ndim != 1 || target->shape[0] != logits->shape[0]) {
        dg_set_error("%s: logits %s and target %s do not fit (need [N, C] and [N])", name,
                     shp(logits, b1), shp(target, b2));
        return NULL;
    }
    dg_tensor *x = dg_contiguous(logits);
    target = dg_contiguous(target);
    int64_t n = x->shape[0], c = x->shape[1], one = 1;
    dg_tensor *loss = dg__tensor_alloc(x->ctx, DG_F32, 0, NULL);
    dg_tensor *count = dg__tensor_alloc(x->ctx, DG_F32, 1, &one);
    dg_tensor *lse = dg__tensor_alloc(x->ctx, DG_F32, 1, &n);
    int64_t bad = BE(x)->math.cross_entropy(loss->data, count->data, lse->data, x->data, target->data,
                                       n, c, ignore_index, dg__values_below(target, c));
    if (bad >= 0) {
        dg_set_error("%s: target[%lld] = %d is out of range for %lld classes", name, (long long)bad,
                     (int)dg_item_at(target, bad), (long long)c);
        return NULL;
    }
    dg_tensor *in[2] = { x, target };
    if (dg__needs_grad(x->ctx, 1, &x)) {
        dg_node *nd = dg__record(x->ctx, name, cross_entropy_backward, loss, 2, in);
        nd->saved[0] = lse;
        nd->saved[1] = count;
        nd->i[0] = ignore_index;
    }
    return loss;
}

dg_tensor *dg_cross_entropy(dg_tensor *logits, dg_tensor *target) {
    return dg_cross_entropy_ex(logits, target, DG_IGNORE_INDEX);
}

/* ---- shape ops ------------------------------------------------------------------ */

static void view_backward(dg_node *n) {   /* reshape of a contiguous tensor */
    dg_tensor *a = n->in[0], *go = n->out->grad;
    if (grad_share(a, go)) return;
    dg_tensor g = *go;
    g.ndim = a->ndim;
    memcpy(g.shape, a->shape, sizeof a->shape);
    dg__contiguous_strides(g.ndim, g.shape, g.stride);
    grad_bcast(a, DG_BIN_COPY, &g, NULL, 1.0f, a->ndim, a->shape);
}

dg_tensor *dg_reshape(dg_tensor *a, int ndim, const int64_t *shape) {
    if (!a) return NULL;
    const char *name = "dg_reshape";
    char b1[96];
    if (ndim < 0 || ndim > DG_MAX_DIMS) {
        dg_set_error("%s: %d dims, at most %d are supported", name, ndim, DG_MAX_DIMS);
        return NULL;
    }
    int64_t s[DG_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) infer = i;
        else if (s[i] < 0) {
            dg_set_error("%s: invalid size %lld in the new shape", name, (long long)s[i]);
            return NULL;
        } else known *= s[i];
    }
    int64_t n = dg_numel(a);
    if (infer >= 0) s[infer] = known ? n / known : 0;
    if (prod(s, 0, ndim) != n || (infer >= 0 && known == 0)) {
        dg_set_error("%s: shape %s (%lld elements) cannot be viewed with %d dims and %lld elements",
                     name, shp(a, b1), (long long)n, ndim, (long long)prod(s, 0, ndim));
        return NULL;
    }
    dg_tensor *x = dg_contiguous(a);
    int64_t st[DG_MAX_DIMS];
    dg__contiguous_strides(ndim, s, st);
    dg_tensor *out = dg__view(x, ndim, s, st, x->data);
    if (dg__needs_grad(a->ctx, 1, &x)) dg__record(a->ctx, name, view_backward, out, 1, &x);
    return out;
}

dg_tensor *dg_flatten(dg_tensor *a, int start_dim, int end_dim) {
    if (!a) return NULL;
    if (a->ndim == 0) {
        int64_t one = 1;
        return dg_reshape(a, 1, &one);
    }
    int s = norm_dim("dg_flatten", a, start_dim), e = norm_dim("dg_flatten", a, end_dim);
    if (s < 0 || e < 0) return NULL;
    if (s > e) {
        dg_set_error("dg_flatten: start_dim %d comes after end_dim %d", start_dim, end_dim);
        return NULL;
    }
    int64_t shape[DG_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < s; d++) shape[nd++] = a->shape[d];
    shape[nd++] = prod(a->shape, s, e + 1);
    for (int d = e + 1; d < a->ndim; d++) shape[nd++] = a->shape[d];
    return dg_reshape(a, nd, shape);
}

static void permute_backward(dg_node *n) {
    dg_tensor *a = n->in[0], *go = n->out->grad;
    bool acc;
    dg_tensor *g = dg__grad_slot(a, &acc);
    if (!g) return;
    /* write go into g viewed through the same permutation */
    dg_tensor gv = *g;
    for (int d = 0; d < a->ndim; d++) {
        gv.shape[d] = g->shape[n->i[d]];
        gv.stride[d] = g->stride[n->i[d]];
    }
    BE(a)->math.binary(DG_BIN_COPY, &gv, go, go, 1.0f, acc);
}

dg_tensor *dg_permute(dg_tensor *a, const int *perm) {
    if (!a) return NULL;
    bool seen[DG_MAX_DIMS] = { false };
    int p[DG_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) {
        p[d] = norm_dim("dg_permute", a, perm[d]);
        if (p[d] < 0) return NULL;
        if (seen[p[d]]) {
            dg_set_error("dg_permute: dim %d repeats in the permutation", perm[d]);
            return NULL;
        }
        seen[p[d]] = true;
    }
    int64_t shape[DG_MAX_DIMS], stride[DG_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) {
        shape[d] = a->shape[p[d]];
        stride[d] = a->stride[p[d]];
    }
    dg_tensor *out = dg__view(a, a->ndim, shape, stride, a->data);
    if (dg__needs_grad(a->ctx, 1, &a)) {
        dg_node *n = dg__record(a->ctx, "dg_permute", permute_backward, out, 1, &a);
        for (int d = 0; d < a->ndim; d++) n->i[d] = p[d];
    }
    return out;
}

dg_tensor *dg_transpose(dg_tensor *a, int dim0, int dim1) {
    if (!a) return NULL;
    if (a->ndim < 2 && (dim0 == 0 || dim0 == -1) && (dim1 == 0 || dim1 == -1)) return a;
    int d0 = norm_dim("dg_transpose", a, dim0), d1 = norm_dim("dg_transpose", a, dim1);
    if (d0 < 0 || d1 < 0) return NULL;
    int perm[DG_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) perm[d] = d;
    perm[d0] = d1;
    perm[d1] = d0;
    return dg_permute(a, perm);
}

static void slice_backward(dg_node *n) {
    dg_tensor *a = n->in[0], *go = n->out->grad;
    dg_tensor *g = grad_slot_zeroed(a);
    if (!g) return;
    int d = (int)n->i[0];
    dg_tensor gv = *g;
    gv.shape[d] = n->i[2];
    gv.data = (float *)g->data + n->i[1] * g->stride[d];
    BE(a)->math.binary(DG_BIN_COPY, &gv, go, go, 1.0f, true);
}

dg_tensor *dg_slice(dg_tensor *a, int dim, int64_t start, int64_t length) {
    if (!a) return NULL;
    if (a->ndim == 0) {
        dg_set_error("dg_slice: cannot slice a 0-dim tensor");
        return NULL;
    }
    int d = norm_dim("dg_slice", a, dim);
    if (d < 0) return NULL;
    if (start < 0) start += a->shape[d];
    if (start < 0 || length < 0 || start + length > a->shape[d]) {
        char b[96];
        dg_set_error("dg_slice: range [%lld, %lld) is outside dim %d of shape %s", (long long)start,
                     (long long)(start + length), dim, shp(a, b));
        return NULL;
    }
    int64_t shape[DG_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d] = length;
    dg_tensor *out = dg__view(a, a->ndim, shape, a->stride,
                              (char *)a->data + start * a->stride[d] * (int64_t)dg_dtype_size(a->dtype));
    if (dg__needs_grad(a->ctx, 1, &a)) {
        dg_node *n = dg__record(a->ctx, "dg_slice", slice_backward, out, 1, &a);
        n->i[0] = d;
        n->i[1] = start;
        n->i[2] = length;
    }
    return out;
}
