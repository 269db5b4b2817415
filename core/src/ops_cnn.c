/* ops_cnn.c - conv2d, max/avg pooling, dropout and batch norm: shape
 * checks, autograd records and backward rules. The kernels are the
 * backend's (the slots from im2col to bn_bwd in impl.h).
 *
 * conv2d is im2col + one GEMM per group over a chunk of n images (the
 * whole batch on a GPU, what fits in cache on the CPU):
 *   col [C*KH*KW, n*P] (P = OH*OW), out^T [OC, n*P] = W [OC, C*KH*KW] col,
 * then out^T is transposed to [n, OC, P]. */
#include "impl.h"
#include "amp-impl.h"

#include <stdio.h>
#include <string.h>

#define BE(t) ((t)->ctx->be)

static const char *shp(const dg_tensor *t, char *buf) { return dg_shape_str(t, buf, 96); }

static bool check_in(const char *op, const dg_tensor *x, const dg_tensor *t, const char *what) {
    if (!t) return true;
    if (t->ctx != x->ctx) {
        dg_set_error("%s: %s belongs to a different context than the input", op, what);
        return false;
    }
    if (t->dtype != DG_F32 && !(t->dtype == DG_BF16 && dg__autocast_bf16(x->ctx))) {
        dg_set_error("%s: expected a float32 %s, got %s", op, what, dg_dtype_name(t->dtype));
        return false;
    }
    return true;
}

static float *fbuf(dg_ctx *ctx, int64_t n) {
    return dg_arena_alloc(&ctx->data, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

/* dst [a, b, p] (contiguous) = src viewed as [b, a, p] (contiguous). */
static void swap01(dg_ctx *ctx, float *dst, const float *src, int64_t a, int64_t b, int64_t p) {
    dg_tensor o = { .ctx = ctx, .dtype = DG_F32, .device = ctx->device, .ndim = 3,
                    .shape = { a, b, p }, .stride = { b * p, p, 1 }, .data = dst };
    dg_tensor i = o;
    i.stride[0] = p;
    i.stride[1] = a * p;
    i.data = (void *)src;
    ctx->be->math.binary(DG_BIN_COPY, &o, &i, &i, 1.0f, false);
}

/* ---- conv2d ------------------------------------------------------------------- */

/* math.gemm with alpha 1, or under autocast (amp) the bfloat16 GEMM: a and
 * b then point to bfloat16 values; aoff and boff count elements. */
static void conv_mm(dg_ctx *ctx, bool amp, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                    const void *a, int64_t aoff, int64_t lda, const void *b, int64_t boff,
                    int64_t ldb, float beta, float *c, int64_t ldc) {
    if (amp)
        dg__gemm_bf16(ctx, ta, tb, m, n, k, 1.0f, (const uint16_t *)a + aoff, lda,
                      (const uint16_t *)b + boff, ldb, beta, c, ldc);
    else
        ctx->be->math.gemm(ta, tb, m, n, k, 1.0f, (const float *)a + aoff, lda,
                           (const float *)b + boff, ldb, beta, c, ldc);
}

/* A bfloat16 arena buffer of n values (autocast's copies of col, gout). */
static uint16_t *hbuf(dg_ctx *ctx, int64_t n) {
    return dg_arena_alloc(&ctx->data, (size_t)(n > 0 ? n : 1) * sizeof(uint16_t));
}

static dg_conv_geom conv_geom(const dg_tensor *x, const dg_tensor *w, const int64_t *p) {
    dg_conv_geom g = { .n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
                       .kh = w->shape[2], .kw = w->shape[3], .sh = p[0], .sw = p[1],
                       .ph = p[2], .pw = p[3], .dh = p[4], .dw = p[5] };
    g.oh = (g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
    g.ow = (g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
    return g;
}

/* Images per im2col chunk. On the CPU the patches of a chunk should stay
 * in cache (about 1 MiB) between im2col and the GEMMs that read them; a
 * GPU takes the whole batch at once. */
#define DG_CONV_CHUNK_BYTES (1 << 20)

static int64_t conv_chunk(const dg_ctx *ctx, const dg_conv_geom *g, int64_t rows) {
    if (ctx->device != DG_CPU) return g->n;
    if (g->oh * g->ow >= 256) return 1;   /* big images: one GEMM each, no transposes */
    int64_t per = rows * g->oh * g->ow * (int64_t)sizeof(float);
    int64_t nc = DG_CONV_CHUNK_BYTES / (per > 0 ? per : 1);
    return nc < 1 ? 1 : nc > g->n ? g->n : nc;
}

/* n->i: stride h/w, padding h/w, dilation h/w, groups. The backward redoes
 * im2col chunk by chunk rather than keep the patches of the whole batch. */
static void conv2d_backward(dg_node *n) {
    dg_tensor *x = n->in[0], *w = n->in[1], *b = n->nin > 2 ? n->in[2] : NULL;
    dg_tensor *go = n->out->grad;
    dg_ctx *ctx = x->ctx;
    const dg_backend *be = ctx->be;
    DG_ASSERT(dg_is_contiguous(go));
    dg_conv_geom g = conv_geom(x, w, n->i);
    int64_t G = n->i[6], OC = w->shape[0], OCg = OC / G, P = g.oh * g.ow;
    int64_t Kg = w->shape[1] * g.kh * g.kw, K = Kg * G;   /* rows of col: per group, all */
    bool aw, ab, ax;
    dg_tensor *gw = dg__grad_slot(w, &aw), *gb = dg__grad_slot(b, &ab), *gx = dg__grad_slot(x, &ax);
    int64_t nc = conv_chunk(ctx, &g, K);
    float *col = fbuf(ctx, K * nc * P), *goT = fbuf(ctx, OC * nc * P);
    float *dcol = gx ? fbuf(ctx, K * nc * P) : NULL;
    /* autocast (i[7]): the products take bfloat16 copies; saved[0] = W's */
    const bool amp = n->i[7] != 0;
    uint16_t *col16 = amp && gw ? hbuf(ctx, K * nc * P) : NULL, *gT16 = amp ? hbuf(ctx, OC * nc * P) : NULL;
    const void *wsrc = amp ? n->saved[0]->data : w->data;
    for (int64_t n0 = 0; n0 < g.n; n0 += nc) {
        dg_conv_geom gc = g;
        gc.n = n0 + nc <= g.n ? nc : g.n - n0;
        int64_t NP = gc.n * P;
        const float *xc = (const float *)x->data + n0 * g.c * g.h * g.w;
        const float *goc = (const float *)go->data + n0 * OC * P;
        const float *gT = goc;
        if (gc.n > 1) {
            swap01(ctx, goT, goc, OC, gc.n, P);
            gT = goT;
        }
        bool first = n0 == 0;
        const void *gsrc = gT, *csrc = col;
        if (amp && (gw || gx)) {
            be->lowp.f32_to_bf16(gT16, gT, OC * NP);
            gsrc = gT16;
        }
        if (gw) {
            be->cnn.im2col(col, xc, &gc);
            if (amp) {
                be->lowp.f32_to_bf16(col16, col, K * NP);
                csrc = col16;
            }
            for (int64_t k = 0; k < G; k++)
                conv_mm(ctx, amp, false, true, OCg, Kg, NP, gsrc, k * OCg * NP, NP, csrc, k * Kg * NP, NP,
                        (aw || !first) ? 1.0f : 0.0f, (float *)gw->data + k * OCg * Kg, Kg);
        }
        if (gb) be->math.reduce_sum(gb->data, gT, OC, NP, 1, 1.0f, ab || !first);
        if (gx) {
            for (int64_t k = 0; k < G; k++)
                conv_mm(ctx, amp, true, false, Kg, NP, OCg, wsrc, k * OCg * Kg, Kg, gsrc, k * OCg * NP, NP,
                        0.0f, dcol + k * Kg * NP, NP);
            be->cnn.col2im((float *)gx->data + n0 * g.c * g.h * g.w, dcol, &gc, ax);
        }
    }
}

dg_tensor *dg_conv2d(dg_tensor *x, dg_tensor *w, dg_tensor *b, const int64_t *stride,
                     const int64_t *padding, const int64_t *dilation, int64_t groups) {
    if (!x || !w) return NULL;
    const char *name = "dg_conv2d";
    char b1[96], b2[96], b3[96];
    if (!check_in(name, x, x, "input") || !check_in(name, x, w, "weight") ||
        !check_in(name, x, b, "bias"))
        return NULL;
    if (x->ndim != 4 || w->ndim != 4) {
        dg_set_error("%s: expected a 4-D input [N, C, H, W] and a 4-D weight [OC, C/groups, KH, KW], "
                     "got %s and %s", name, shp(x, b1), shp(w, b2));
        return NULL;
    }
    int64_t p[7] = { stride ? stride[0] : 1, stride ? stride[1] : 1, padding ? padding[0] : 0,
                     padding ? padding[1] : 0, dilation ? dilation[0] : 1,
                     dilation ? dilation[1] : 1, groups };
    if (p[0] <= 0 || p[1] <= 0 || p[2] < 0 || p[3] < 0 || p[4] <= 0 || p[5] <= 0 || groups <= 0) {
        dg_set_error("%s: bad stride (%lld, %lld), padding (%lld, %lld), dilation (%lld, %lld) or "
                     "groups %lld: stride, dilation and groups must be positive, padding not negative",
                     name, (long long)p[0], (long long)p[1], (long long)p[2], (long long)p[3],
                     (long long)p[4], (long long)p[5], (long long)groups);
        return NULL;
    }
    if (x->shape[1] != w->shape[1] * groups || w->shape[0] % groups != 0) {
        dg_set_error("%s: input %s does not fit weight %s with groups=%lld (need %lld input channels "
                     "and output channels divisible by groups)", name, shp(x, b1), shp(w, b2),
                     (long long)groups, (long long)(w->shape[1] * groups));
        return NULL;
    }
    int64_t ekh = p[4] * (w->shape[2] - 1) + 1, ekw = p[5] * (w->shape[3] - 1) + 1;
    if (ekh > x->shape[2] + 2 * p[2] || ekw > x->shape[3] + 2 * p[3] || w->shape[2] <= 0 ||
        w->shape[3] <= 0) {
        dg_set_error("%s: kernel %lldx%lld (dilated %lldx%lld) of weight %s is larger than the padded "
                     "input %lldx%lld of %s", name, (long long)w->shape[2], (long long)w->shape[3],
                     (long long)ekh, (long long)ekw, shp(w, b2), (long long)(x->shape[2] + 2 * p[2]),
                     (long long)(x->shape[3] + 2 * p[3]), shp(x, b1));
        return NULL;
    }
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0])) {
        dg_set_error("%s: bias %s does not fit weight %s (need [%lld])", name, shp(b, b3), shp(w, b2),
                     (long long)w->shape[0]);
        return NULL;
    }
    /* autocast: bfloat16 operands are widened (exactly) for im2col */
    if (x->dtype == DG_BF16) x = dg_astype(x, DG_F32);
    if (w->dtype == DG_BF16) w = dg_astype(w, DG_F32);
    if (b && b->dtype == DG_BF16) b = dg_astype(b, DG_F32);
    if (!x || !w || (b && b->dtype != DG_F32)) return NULL;
    x = dg_contiguous(x);
    w = dg_contiguous(w);
    if (b) b = dg_contiguous(b);
    dg_ctx *ctx = x->ctx;
    const dg_backend *be = ctx->be;
    const bool amp = dg__autocast_bf16(ctx);
    dg_tensor *w16 = amp ? dg__to_bf16(name, w) : NULL;
    if (amp && !w16) return NULL;
    dg_conv_geom g = conv_geom(x, w, p);
    int64_t OC = w->shape[0], OCg = OC / groups, P = g.oh * g.ow;
    int64_t Kg = w->shape[1] * g.kh * g.kw, K = Kg * groups;
    int64_t os[4] = { g.n, OC, g.oh, g.ow };
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, 4, os);
    int64_t nc = conv_chunk(ctx, &g, K);
    /* CPU: one GEMM per image of the chunk, straight into out (its columns
     * of col are a slice with ld n*P); a GPU: one GEMM for the chunk, then
     * a transpose */
    const bool per_image = ctx->device == DG_CPU;
    float *col = fbuf(ctx, K * nc * P);
    uint16_t *col16 = amp ? hbuf(ctx, K * nc * P) : NULL;
    const void *wsrc = amp ? w16->data : w->data, *csrc = amp ? (const void *)col16 : col;
    float *outT = nc > 1 && !per_image ? fbuf(ctx, OC * nc * P) : NULL;
    for (int64_t n0 = 0; n0 < g.n; n0 += nc) {
        dg_conv_geom gc = g;
        gc.n = n0 + nc <= g.n ? nc : g.n - n0;
        int64_t NP = gc.n * P;
        be->cnn.im2col(col, (const float *)x->data + n0 * g.c * g.h * g.w, &gc);
        if (amp) be->lowp.f32_to_bf16(col16, col, K * NP);
        const bool transpose = gc.n > 1 && !per_image;
        /* blocks: per image [OC, P] of out, or the chunk's [OC, NP] of outT */
        const int64_t nb = transpose ? 1 : gc.n, cols = transpose ? NP : P;
        for (int64_t i = 0; i < nb; i++) {
            float *dst = transpose ? outT : (float *)out->data + (n0 + i) * OC * P;
            if (b) {   /* dst rows = bias, then dst += W col */
                dg_tensor o = { .ctx = ctx, .dtype = DG_F32, .device = ctx->device, .ndim = 2,
                                .shape = { OC, cols }, .stride = { cols, 1 }, .data = dst };
                dg_tensor eb = o;
                eb.stride[0] = 1;
                eb.stride[1] = 0;
                eb.data = b->data;
                be->math.binary(DG_BIN_COPY, &o, &eb, &eb, 1.0f, false);
            }
            for (int64_t k = 0; k < groups; k++)
                conv_mm(ctx, amp, false, false, OCg, cols, Kg, wsrc, k * OCg * Kg, Kg, csrc,
                        k * Kg * NP + i * P, NP, b ? 1.0f : 0.0f, dst + k * OCg * cols, cols);
        }
        if (transpose) swap01(ctx, (float *)out->data + n0 * OC * P, outT, gc.n, OC, P);
    }
    dg_tensor *in[3] = { x, w, b };
    if (dg__needs_grad(ctx, 3, in)) {
        dg_node *n = dg__record(ctx, name, conv2d_backward, out, b ? 3 : 2, in);
        memcpy(n->i, p, sizeof p);
        n->i[7] = amp;
        n->saved[0] = w16;
    }
    return out;
}

/* ---- pooling ------------------------------------------------------------------ */

static bool pool_geom(const char *name, const dg_tensor *x, const int64_t *kernel,
                      const int64_t *stride, const int64_t *padding, dg_conv_geom *g) {
    char b1[96];
    if (x->ndim != 4) {
        dg_set_error("%s: expected a 4-D input [N, C, H, W], got %s", name, shp(x, b1));
        return false;
    }
    if (!kernel) {
        dg_set_error("%s: no kernel size", name);
        return false;
    }
    *g = (dg_conv_geom){ .n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
                         .kh = kernel[0], .kw = kernel[1], .sh = stride ? stride[0] : kernel[0],
                         .sw = stride ? stride[1] : kernel[1], .ph = padding ? padding[0] : 0,
                         .pw = padding ? padding[1] : 0, .dh = 1, .dw = 1 };
    if (g->kh <= 0 || g->kw <= 0 || g->sh <= 0 || g->sw <= 0 || g->ph < 0 || g->pw < 0 ||
        2 * g->ph > g->kh || 2 * g->pw > g->kw) {
        dg_set_error("%s: bad kernel (%lld, %lld), stride (%lld, %lld) or padding (%lld, %lld): kernel "
                     "and stride must be positive, padding at most half the kernel", name,
                     (long long)g->kh, (long long)g->kw, (long long)g->sh, (long long)g->sw,
                     (long long)g->ph, (long long)g->pw);
        return false;
    }
    if (g->kh > g->h + 2 * g->ph || g->kw > g->w + 2 * g->pw) {
        dg_set_error("%s: kernel %lldx%lld is larger than the padded input %lldx%lld of %s", name,
                     (long long)g->kh, (long long)g->kw, (long long)(g->h + 2 * g->ph),
                     (long long)(g->w + 2 * g->pw), shp(x, b1));
        return false;
    }
    g->oh = (g->h + 2 * g->ph - g->kh) / g->sh + 1;
    g->ow = (g->w + 2 * g->pw - g->kw) / g->sw + 1;
    return true;
}

/* Pool geometry in the node: n, c, h, w, kh, kw, sh, sw in i[]; the
 * paddings (both < 4096, checked) packed in f; the rest recomputed. */
static void save_geom(dg_node *n, const dg_conv_geom *g) {
    memcpy(n->i, g, sizeof n->i);
    n->f = (float)(g->ph * 4096 + g->pw);
}

static dg_conv_geom load_geom(const dg_node *n) {
    dg_conv_geom g;
    memcpy(&g, n->i, sizeof n->i);
    int64_t packed = (int64_t)n->f;
    g.ph = packed / 4096;
    g.pw = packed % 4096;
    g.dh = g.dw = 1;
    g.oh = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
    g.ow = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
    return g;
}

static void maxpool_backward(dg_node *n) {
    dg_tensor *x = n->in[0];
    bool acc;
    dg_tensor *gx = dg__grad_slot(x, &acc);
    if (!gx) return;
    dg_conv_geom g = load_geom(n);
    BE(x)->cnn.maxpool_bwd(gx->data, n->out->grad->data, n->saved[0]->data, &g, acc);
}

static void avgpool_backward(dg_node *n) {
    dg_tensor *x = n->in[0];
    bool acc;
    dg_tensor *gx = dg__grad_slot(x, &acc);
    if (!gx) return;
    dg_conv_geom g = load_geom(n);
    BE(x)->cnn.avgpool_bwd(gx->data, n->out->grad->data, &g, acc);
}

static dg_tensor *pool_op(const char *name, bool max, dg_tensor *x, const int64_t *kernel,
                          const int64_t *stride, const int64_t *padding) {
    if (!x || !check_in(name, x, x, "input")) return NULL;
    dg_conv_geom g;
    if (!pool_geom(name, x, kernel, stride, padding, &g)) return NULL;
    if (g.ph >= 4096 || g.pw >= 4096) {
        dg_set_error("%s: padding (%lld, %lld) too large", name, (long long)g.ph, (long long)g.pw);
        return NULL;
    }
    x = dg_contiguous(x);
    dg_ctx *ctx = x->ctx;
    int64_t os[4] = { g.n, g.c, g.oh, g.ow };
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, 4, os);
    dg_tensor *idx = NULL;
    if (max) {
        idx = dg__tensor_alloc(ctx, DG_I32, 4, os);
        ctx->be->cnn.maxpool_fwd(out->data, idx->data, x->data, &g);
    } else {
        ctx->be->cnn.avgpool_fwd(out->data, x->data, &g);
    }
    if (dg__needs_grad(ctx, 1, &x)) {
        dg_node *n = dg__record(ctx, name, max ? maxpool_backward : avgpool_backward, out, 1, &x);
        save_geom(n, &g);
        n->saved[0] = idx;
    }
    return out;
}

dg_tensor *dg_max_pool2d(dg_tensor *x, const int64_t *kernel, const int64_t *stride,
                         const int64_t *padding) {
    return pool_op("dg_max_pool2d", true, x, kernel, stride, padding);
}

dg_tensor *dg_avg_pool2d(dg_tensor *x, const int64_t *kernel, const int64_t *stride,
                         const int64_t *padding) {
    return pool_op("dg_avg_pool2d", false, x, kernel, stride, padding);
}

/* ---- dropout ----------------------------------------------------------------- */

static void dropout_backward(dg_node *n) {
    dg_tensor *x = n->in[0];
    bool acc;
    dg_tensor *gx = dg__grad_slot(x, &acc);
    if (!gx) return;
    BE(x)->math.binary(DG_BIN_MUL, gx, n->out->grad, n->saved[0], 1.0f, acc);
}

dg_tensor *dg_dropout(dg_tensor *x, float p, bool training) {
    if (!x || !check_in("dg_dropout", x, x, "input")) return NULL;
    if (!(p >= 0.0f && p <= 1.0f)) {
        dg_set_error("dg_dropout: probability %g is outside [0, 1]", p);
        return NULL;
    }
    if (!training || p == 0.0f) return x;
    x = dg_contiguous(x);
    dg_ctx *ctx = x->ctx;
    dg_tensor *mask = dg__tensor_alloc(ctx, DG_F32, x->ndim, x->shape);
    ctx->be->cnn.dropout_mask(mask->data, dg_numel(x), p, dg_rand_u64(ctx));
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, x->ndim, x->shape);
    ctx->be->math.binary(DG_BIN_MUL, out, x, mask, 1.0f, false);
    if (dg__needs_grad(ctx, 1, &x)) {
        dg_node *n = dg__record(ctx, "dg_dropout", dropout_backward, out, 1, &x);
        n->saved[0] = mask;
    }
    return out;
}

/* ---- batch norm ---------------------------------------------------------------- */

/* saved: mean, invstd; i[0]: training. */
static void bn_backward(dg_node *n) {
    dg_tensor *x = n->in[0], *w = n->nin > 1 ? n->in[1] : NULL, *b = n->nin > 2 ? n->in[2] : NULL;
    int64_t N = x->shape[0], C = x->shape[1], HW = dg_numel(x) / (N * C);
    bool ax, aw, ab;
    dg_tensor *gx = dg__grad_slot(x, &ax), *gw = dg__grad_slot(w, &aw), *gb = dg__grad_slot(b, &ab);
    BE(x)->cnn.bn_bwd(gx ? gx->data : NULL, gw ? gw->data : NULL, gb ? gb->data : NULL,
                  n->out->grad->data, x->data, n->saved[0]->data, n->saved[1]->data,
                  w ? w->data : NULL, N, C, HW, n->i[0] != 0, ax, aw, ab);
}

dg_tensor *dg_batch_norm2d(dg_tensor *x, dg_tensor *running_mean, dg_tensor *running_var,
                           dg_tensor *weight, dg_tensor *bias, bool training, float momentum,
                           float eps) {
    const char *name = "dg_batch_norm2d";
    if (!x) return NULL;
    char b1[96], b2[96];
    if (!check_in(name, x, x, "input") || !check_in(name, x, running_mean, "running_mean") ||
        !check_in(name, x, running_var, "running_var") || !check_in(name, x, weight, "weight") ||
        !check_in(name, x, bias, "bias"))
        return NULL;
    if (x->ndim < 2) {
        dg_set_error("%s: expected an input [N, C, ...], got %s", name, shp(x, b1));
        return NULL;
    }
    int64_t N = x->shape[0], C = x->shape[1], HW = (N != 0 && C != 0) ? dg_numel(x) / (N * C) : 0;
    dg_tensor *vec[4] = { running_mean, running_var, weight, bias };
    const char *vn[4] = { "running_mean", "running_var", "weight", "bias" };
    for (int i = 0; i < 4; i++)
        if (vec[i] && (vec[i]->ndim != 1 || vec[i]->shape[0] != C || !dg_is_contiguous(vec[i]))) {
            dg_set_error("%s: %s %s does not fit input %s (need [%lld])", name, vn[i],
                         shp(vec[i], b2), shp(x, b1), (long long)C);
            return NULL;
        }
    if (!running_mean != !running_var) {
        dg_set_error("%s: give both running_mean and running_var, or neither", name);
        return NULL;
    }
    if (!training && !running_mean) {
        dg_set_error("%s: eval mode needs running_mean and running_var", name);
        return NULL;
    }
    if (training && N * HW <= 1) {
        dg_set_error("%s: expected more than 1 value per channel when training, got input %s", name,
                     shp(x, b1));
        return NULL;
    }
    x = dg_contiguous(x);
    dg_ctx *ctx = x->ctx;
    const dg_backend *be = ctx->be;
    dg_tensor *mean = dg__tensor_alloc(ctx, DG_F32, 1, &C);
    dg_tensor *invstd = dg__tensor_alloc(ctx, DG_F32, 1, &C);
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, x->ndim, x->shape);
    float *rm = running_mean ? running_mean->data : NULL, *rv = running_var ? running_var->data : NULL;
    const float *wd = weight ? weight->data : NULL, *bd = bias ? bias->data : NULL;
    if (training && be->cnn.bn_stats_fwd) {
        be->cnn.bn_stats_fwd(out->data, mean->data, invstd->data, rm, rv, x->data, wd, bd, N, C, HW,
                         momentum, eps);
    } else {
        be->cnn.bn_stats(mean->data, invstd->data, rm, rv, x->data, N, C, HW, momentum, eps, training);
        be->cnn.bn_fwd(out->data, x->data, mean->data, invstd->data, wd, bd, N, C, HW);
    }
    dg_tensor *in[3] = { x, weight, bias };
    if (dg__needs_grad(ctx, 3, in)) {
        int nin = bias ? 3 : weight ? 2 : 1;
        dg_node *n = dg__record(ctx, name, bn_backward, out, nin, in);
        n->saved[0] = mean;
        n->saved[1] = invstd;
        n->i[0] = training;
    }
    return out;
}

/* ---- batch norm then 2x2 max pooling, fused (nn.c's Sequential) ---------------- */

bool dg__bn_pool_fusable(const dg_tensor *x, const dg_tensor *running_mean, const dg_tensor *weight,
                         bool training) {
    if (!x || x->ndim != 4 || x->dtype != DG_F32 || !x->ctx->be->cnn.bn_pool_fwd) return false;
    if (!dg_is_contiguous(x) || !running_mean) return false;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    if (N <= 0 || H < 2 || W < 2 || H % 2 || W % 2 || running_mean->shape[0] != C) return false;
    if (weight && weight->shape[0] != C) return false;
    return !(training && N * H * W <= 1);
}

static void bn_pool_backward(dg_node *n) {
    dg_tensor *x = n->in[0], *w = n->nin > 1 ? n->in[1] : NULL, *b = n->nin > 2 ? n->in[2] : NULL;
    dg_ctx *ctx = x->ctx;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    bool ax, aw, ab;
    dg_tensor *gx = dg__grad_slot(x, &ax), *gw = dg__grad_slot(w, &aw), *gb = dg__grad_slot(b, &ab);
    float *dx = gx ? (ax ? fbuf(ctx, dg_numel(x)) : gx->data) : NULL;   /* the kernel overwrites */
    const float *st = n->saved[0]->data;   /* mean [C], then invstd [C] */
    const float *gout = n->out->grad->data;
    if (n->i[1]) {   /* relu: the gradient where the output is > 0 */
        dg_tensor g = *n->out->grad;
        g.data = fbuf(ctx, dg_numel(n->out));
        ctx->be->math.binary(DG_BIN_RELU_BWD, &g, n->out->grad, n->out, 1.0f, false);
        gout = g.data;
    }
    ctx->be->cnn.bn_pool_bwd(dx, gw ? gw->data : NULL, gb ? gb->data : NULL, gout,
                         n->saved[1]->data, x->data, st, st + C, w ? w->data : NULL, N, C, H, W,
                         n->i[0] != 0, aw, ab);
    if (gx && ax) {
        dg_tensor t = *gx;
        t.data = dx;
        ctx->be->math.binary(DG_BIN_COPY, gx, &t, &t, 1.0f, true);
    }
}

dg_tensor *dg__batch_norm_max_pool2x2(dg_tensor *x, dg_tensor *running_mean, dg_tensor *running_var,
                                      dg_tensor *weight, dg_tensor *bias, bool training,
                                      float momentum, float eps, bool relu) {
    DG_ASSERT(dg__bn_pool_fusable(x, running_mean, weight, training) && running_var);
    dg_ctx *ctx = x->ctx;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t os[4] = { N, C, H / 2, W / 2 }, two_c = 2 * C;
    dg_tensor *out = dg__tensor_alloc(ctx, DG_F32, 4, os);
    dg_tensor *idx = dg__tensor_alloc(ctx, DG_I32, 4, os);
    dg_tensor *stats = dg__tensor_alloc(ctx, DG_F32, 1, &two_c);
    float *st = stats->data;
    ctx->be->cnn.bn_pool_fwd(out->data, idx->data, st, st + C, running_mean->data, running_var->data,
                         x->data, weight ? weight->data : NULL, bias ? bias->data : NULL, N, C, H,
                         W, momentum, eps, training, relu);
    dg_tensor *in[3] = { x, weight, bias };
    if (dg__needs_grad(ctx, 3, in)) {
        int nin = bias ? 3 : weight ? 2 : 1;
        dg_node *n = dg__record(ctx, relu ? "dg_batch_norm2d+dg_max_pool2d+dg_relu"
                                     : "dg_batch_norm2d+dg_max_pool2d",
                                bn_pool_backward, out, nin, in);
        n->saved[0] = stats;
        n->saved[1] = idx;
        n->i[0] = training;
        n->i[1] = relu;
    }
    return out;
}
