/* amp.c - bfloat16 tensors and autocast (dgrad/amp.h): conversions,
 * dg_astype, the autocast switch, and dg_linear under autocast. dg_matmul
 * (ops.c) and dg_conv2d (ops_cnn.c) read the switch themselves. The
 * kernels are the backend's (family lowp in backend-impl.h). */
#include "impl.h"
#include "amp-impl.h"
#include "dgrad/amp.h"

#include <string.h>

#define BE(t) ((t)->ctx->be)

uint16_t dg_f32_to_bf16(float x) { return dg__bf16_round(x); }

float dg_bf16_to_f32(uint16_t h) { return dg__bf16_widen(h); }

static bool have_lowp(const char *op, const dg_ctx *ctx) {
    const dg_backend_lowp *l = &ctx->be->lowp;
    if (l->f32_to_bf16 && l->bf16_to_f32 && l->gemm_bf16) return true;
    dg_set_error("%s: bfloat16 is not implemented on the %s backend", op, ctx->be->name);
    return false;
}

/* ---- autocast switch -------------------------------------------------------- */

dg_status dg_autocast_begin(dg_ctx *ctx, dg_dtype dtype) {
    if (!ctx) return dg_set_error("dg_autocast_begin: NULL context");
    if ((int)dtype < 0 || dtype >= DG_DTYPE_COUNT)
        return dg_set_error("dg_autocast_begin: bad dtype %d", (int)dtype);
    if (dtype != DG_BF16)
        return dg_set_error("dg_autocast_begin: dtype %s is not supported (only bfloat16)",
                            dg_dtype_name(dtype));
    if (ctx->autocast != DG_F32)
        return dg_set_error("dg_autocast_begin: the context is already in autocast (%s)",
                            dg_dtype_name(ctx->autocast));
    if (!have_lowp("dg_autocast_begin", ctx)) return DG_ERR;
    ctx->autocast = dtype;
    return DG_OK;
}

void dg_autocast_end(dg_ctx *ctx) {
    if (ctx) ctx->autocast = DG_F32;
}

dg_dtype dg_autocast_dtype(const dg_ctx *ctx) { return ctx->autocast; }

bool dg__autocast_bf16(const dg_ctx *ctx) { return ctx->autocast == DG_BF16; }

/* ---- internal helpers --------------------------------------------------------- */

dg_tensor *dg__to_bf16(const char *op, dg_tensor *t) {
    dg_ctx *ctx = t->ctx;
    if (!have_lowp(op, ctx)) return NULL;
    if (t->dtype == DG_BF16) {
        if (dg_is_contiguous(t)) return t;
        bool prev = dg_set_grad_enabled(ctx, false);
        dg_tensor *c = dg_contiguous(t);
        dg_set_grad_enabled(ctx, prev);
        return c;
    }
    if (t->dtype != DG_F32) {
        dg_set_error("%s: expected a float32 or bfloat16 tensor, got %s", op, dg_dtype_name(t->dtype));
        return NULL;
    }
    const dg_tensor *x = t;
    if (!dg_is_contiguous(t)) {
        dg_tensor *c = dg__tensor_alloc(ctx, DG_F32, t->ndim, t->shape);
        ctx->be->math.binary(DG_BIN_COPY, c, t, t, 1.0f, false);
        x = c;
    }
    dg_tensor *out = dg__tensor_alloc(ctx, DG_BF16, t->ndim, t->shape);
    ctx->be->lowp.f32_to_bf16(out->data, x->data, dg_numel(t));
    return out;
}

/* One workspace per context, grown geometrically (the old blocks stay in
 * the persistent list until dg_ctx_free, at most the size of the last).
 * Slots run in stream order, so one buffer serves every product. */
void dg__gemm_bf16(dg_ctx *ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                   const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                   float *c, int64_t ldc) {
    size_t need = DG_GEMM_BF16_WORK(m, n, k);
    if (need > ctx->amp_work_bytes) {
        size_t sz = ctx->amp_work_bytes * 2 > need ? ctx->amp_work_bytes * 2 : need;
        ctx->amp_work = dg__persist_alloc(ctx, sz);
        ctx->amp_work_bytes = sz;
    }
    ctx->be->lowp.gemm_bf16(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ctx->amp_work);
}

/* ---- dg_astype ------------------------------------------------------------------ */

static void astype_backward(dg_node *n) {
    dg_tensor *a = n->in[0], *go = n->out->grad;
    bool acc;
    dg_tensor *g = dg__grad_slot(a, &acc);
    if (g) BE(a)->math.binary(DG_BIN_COPY, g, go, go, 1.0f, acc);
}

dg_tensor *dg_astype(dg_tensor *t, dg_dtype dtype) {
    if (!t) return NULL;
    const char *name = "dg_astype";
    if ((int)dtype < 0 || dtype >= DG_DTYPE_COUNT) {
        dg_set_error("%s: bad dtype %d", name, (int)dtype);
        return NULL;
    }
    if (t->dtype == dtype) return t;
    bool fl_in = t->dtype == DG_F32 || t->dtype == DG_BF16;
    bool fl_out = dtype == DG_F32 || dtype == DG_BF16;
    if (!fl_in || !fl_out) {
        dg_set_error("%s: cannot convert %s to %s (float32 <-> bfloat16 only)", name,
                     dg_dtype_name(t->dtype), dg_dtype_name(dtype));
        return NULL;
    }
    if (!have_lowp(name, t->ctx)) return NULL;
    dg_tensor *x = dg_contiguous(t);
    dg_tensor *out = dg__tensor_alloc(x->ctx, dtype, x->ndim, x->shape);
    if (dtype == DG_BF16) BE(x)->lowp.f32_to_bf16(out->data, x->data, dg_numel(x));
    else BE(x)->lowp.bf16_to_f32(out->data, x->data, dg_numel(x));
    if (dg__needs_grad(x->ctx, 1, &x)) dg__record(x->ctx, name, astype_backward, out, 1, &x);
    return out;
}

/* ---- dg_linear under autocast ----------------------------------------------------- */

/* saved[0], saved[1]: the bfloat16 copies of x and weight. */
static void linear_bf16_backward(dg_node *n) {
    dg_tensor *x = n->in[0], *w = n->in[1], *bias = n->nin > 2 ? n->in[2] : NULL, *go = n->out->grad;
    dg_tensor *x16 = n->saved[0], *w16 = n->saved[1];
    dg_ctx *ctx = x->ctx;
    int64_t in_f = w->shape[1], out_f = w->shape[0], rows = dg_numel(x) / in_f;
    DG_ASSERT(dg_is_contiguous(go));
    dg_tensor *go16 = NULL;
    if (x->requires_grad || w->requires_grad) {
        go16 = dg__to_bf16("dg_linear", go);
        DG_ASSERT(go16 != NULL);   /* the forward ran on this backend */
    }
    bool acc;
    dg_tensor *g;
    if ((g = dg__grad_slot(x, &acc)))   /* dx = dy W */
        dg__gemm_bf16(ctx, false, false, rows, in_f, out_f, 1.0f, go16->data, out_f, w16->data, in_f,
                      acc ? 1.0f : 0.0f, g->data, in_f);
    if ((g = dg__grad_slot(w, &acc)))   /* dW = dy^T x */
        dg__gemm_bf16(ctx, true, false, out_f, in_f, rows, 1.0f, go16->data, out_f, x16->data, in_f,
                      acc ? 1.0f : 0.0f, g->data, in_f);
    if (bias && (g = dg__grad_slot(bias, &acc)))   /* db = sum_rows dy, float32 */
        ctx->be->math.reduce_sum(g->data, go->data, 1, rows, out_f, 1.0f, acc);
}

dg_tensor *dg__linear_bf16(dg_tensor *x, dg_tensor *weight, dg_tensor *bias) {
    const char *name = "dg_linear";
    dg_ctx *ctx = x->ctx;
    dg_tensor *x16 = dg__to_bf16(name, x);
    dg_tensor *w16 = x16 ? dg__to_bf16(name, weight) : NULL;
    if (!w16) return NULL;
    int64_t in_f = weight->shape[1], out_f = weight->shape[0], rows = dg_numel(x) / in_f;
    int64_t shape[DG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim - 1] = out_f;
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, x->ndim, shape);
    if (bias) {   /* every row = bias, then out += x W^T */
        dg_tensor o = { .ctx = ctx, .dtype = DG_F32, .device = ctx->device, .ndim = 2,
                        .shape = { rows, out_f }, .stride = { out_f, 1 }, .data = out->data };
        dg_tensor eb = o;
        eb.stride[0] = 0;
        eb.data = bias->data;
        ctx->be->math.binary(DG_BIN_COPY, &o, &eb, &eb, 1.0f, false);
    }
    dg__gemm_bf16(ctx, false, true, rows, out_f, in_f, 1.0f, x16->data, in_f, w16->data, in_f,
                  bias ? 1.0f : 0.0f, out->data, out_f);
    dg_tensor *in[3] = { x, weight, bias };
    if (dg__needs_grad(ctx, 3, in)) {
        dg_node *n = dg__record(ctx, name, linear_bf16_backward, out, bias ? 3 : 2, in);
        n->saved[0] = x16;
        n->saved[1] = w16;
    }
    return out;
}
