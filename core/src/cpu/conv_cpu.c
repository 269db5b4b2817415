/* conv_cpu.c - CPU kernels for convolutional nets: im2col/col2im (the
 * convolution itself is a GEMM), max and average pooling, the dropout mask
 * and batch norm. Plain loops written for auto-vectorization. */
#include "conv_cpu.h"

#include <math.h>
#include <string.h>

/* Output columns ox of one row whose input column ox*sw - pw + kx*dw lies in
 * [0, w): [*lo, *hi). */
static void valid_cols(const dg_conv_geom *g, int64_t kx, int64_t *lo, int64_t *hi) {
    int64_t off = kx * g->dw - g->pw;   /* ix = ox * sw + off */
    int64_t a = off >= 0 ? 0 : (-off + g->sw - 1) / g->sw;
    int64_t b = g->w - off <= 0 ? 0 : (g->w - off + g->sw - 1) / g->sw;
    if (b > g->ow) b = g->ow;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

typedef float dg_v8 __attribute__((vector_size(32)));
typedef float dg_v16 __attribute__((vector_size(64)));

/* Stride 1, no padding, no dilation: every patch row lies inside the image. */
/* no-tree-loop-distribute-patterns: keep the short copies inline rather
 * than turned into memcpy calls */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
DG_HOT static void im2col_s1(float *restrict col, const float *restrict x, const dg_conv_geom *g) {
    const int64_t P = g->oh * g->ow, NP = g->n * P, HW = g->h * g->w, OW = g->ow, W = g->w;
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ky = 0; ky < g->kh; ky++)
            for (int64_t kx = 0; kx < g->kw; kx++) {
                float *row = col + ((c * g->kh + ky) * g->kw + kx) * NP;
                for (int64_t n = 0; n < g->n; n++) {
                    const float *src = x + (n * g->c + c) * HW + ky * W + kx;
                    float *dst = row + n * P;
                    if (OW == 8) {   /* two output rows per 16-float store */
                        int64_t oy = 0;
                        for (; oy + 2 <= g->oh; oy += 2) {
                            dg_v8 a, b;
                            __builtin_memcpy(&a, src + oy * W, sizeof a);
                            __builtin_memcpy(&b, src + (oy + 1) * W, sizeof b);
                            dg_v16 v = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                               11, 12, 13, 14, 15);
                            __builtin_memcpy(dst + oy * 8, &v, sizeof v);
                        }
                        if (oy < g->oh) {
                            dg_v8 a;
                            __builtin_memcpy(&a, src + oy * W, sizeof a);
                            __builtin_memcpy(dst + oy * 8, &a, sizeof a);
                        }
                    } else if (OW % 8 == 0) {   /* 16- and 8-float vectors: no memcpy calls */
                        for (int64_t oy = 0; oy < g->oh; oy++) {
                            int64_t ox = 0;
                            for (; ox + 16 <= OW; ox += 16) {
                                dg_v16 v;
                                __builtin_memcpy(&v, src + oy * W + ox, sizeof v);
                                __builtin_memcpy(dst + oy * OW + ox, &v, sizeof v);
                            }
                            if (ox < OW) {
                                dg_v8 v;
                                __builtin_memcpy(&v, src + oy * W + ox, sizeof v);
                                __builtin_memcpy(dst + oy * OW + ox, &v, sizeof v);
                            }
                        }
                    } else {
                        for (int64_t oy = 0; oy < g->oh; oy++)
                            for (int64_t ox = 0; ox < OW; ox++) dst[oy * OW + ox] = src[oy * W + ox];
                    }
                }
            }
}

/* col [c*kh*kw, n*oh*ow] */
DG_HOT void dg__cpu_im2col(float *col, const float *x, const dg_conv_geom *g) {
    const int64_t P = g->oh * g->ow, NP = g->n * P, HW = g->h * g->w;
    if (g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 && g->dh == 1 && g->dw == 1) {
        im2col_s1(col, x, g);
        return;
    }
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ky = 0; ky < g->kh; ky++)
            for (int64_t kx = 0; kx < g->kw; kx++) {
                float *row = col + ((c * g->kh + ky) * g->kw + kx) * NP;
                int64_t lo, hi;
                valid_cols(g, kx, &lo, &hi);
                int64_t xoff = kx * g->dw - g->pw;
                for (int64_t n = 0; n < g->n; n++) {
                    const float *plane = x + (n * g->c + c) * HW;
                    for (int64_t oy = 0; oy < g->oh; oy++) {
                        float *dst = row + n * P + oy * g->ow;
                        int64_t iy = oy * g->sh - g->ph + ky * g->dh;
                        if (iy < 0 || iy >= g->h) {
                            memset(dst, 0, (size_t)g->ow * sizeof(float));
                            continue;
                        }
                        const float *src = plane + iy * g->w + xoff;
                        for (int64_t ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
                        if (g->sw == 1)   /* short rows: a loop beats memcpy's call */
                            for (int64_t ox = lo; ox < hi; ox++) dst[ox] = src[ox];
                        else
                            for (int64_t ox = lo; ox < hi; ox++) dst[ox] = src[ox * g->sw];
                        for (int64_t ox = hi; ox < g->ow; ox++) dst[ox] = 0.0f;
                    }
                }
            }
}

/* col2im_s1: the adjoint of im2col_s1 (rows of 8 added as vectors). */
DG_HOT static void col2im_s1(float *restrict x, const float *restrict col, const dg_conv_geom *g) {
    const int64_t P = g->oh * g->ow, NP = g->n * P, HW = g->h * g->w, OW = g->ow, W = g->w;
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ky = 0; ky < g->kh; ky++)
            for (int64_t kx = 0; kx < g->kw; kx++) {
                const float *row = col + ((c * g->kh + ky) * g->kw + kx) * NP;
                for (int64_t n = 0; n < g->n; n++) {
                    float *dst = x + (n * g->c + c) * HW + ky * W + kx;
                    const float *src = row + n * P;
                    for (int64_t oy = 0; oy < g->oh; oy++) {
                        float *d = dst + oy * W;
                        const float *r = src + oy * OW;
                        int64_t ox = 0;
                        for (; ox + 8 <= OW; ox += 8) {
                            dg_v8 a, b;
                            __builtin_memcpy(&a, d + ox, sizeof a);
                            __builtin_memcpy(&b, r + ox, sizeof b);
                            a += b;
                            __builtin_memcpy(d + ox, &a, sizeof a);
                        }
                        for (; ox < OW; ox++) d[ox] += r[ox];
                    }
                }
            }
}

DG_HOT void dg__cpu_col2im(float *x, const float *col, const dg_conv_geom *g, bool acc) {
    const int64_t P = g->oh * g->ow, NP = g->n * P, HW = g->h * g->w;
    if (!acc) memset(x, 0, (size_t)(g->n * g->c * HW) * sizeof(float));
    if (g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 && g->dh == 1 && g->dw == 1) {
        col2im_s1(x, col, g);
        return;
    }
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ky = 0; ky < g->kh; ky++)
            for (int64_t kx = 0; kx < g->kw; kx++) {
                const float *row = col + ((c * g->kh + ky) * g->kw + kx) * NP;
                int64_t lo, hi;
                valid_cols(g, kx, &lo, &hi);
                int64_t xoff = kx * g->dw - g->pw;
                for (int64_t n = 0; n < g->n; n++) {
                    float *plane = x + (n * g->c + c) * HW;
                    for (int64_t oy = 0; oy < g->oh; oy++) {
                        int64_t iy = oy * g->sh - g->ph + ky * g->dh;
                        if (iy < 0 || iy >= g->h) continue;
                        const float *restrict src = row + n * P + oy * g->ow;
                        float *restrict dst = plane + iy * g->w + xoff;
                        if (g->sw == 1)
                            for (int64_t ox = lo; ox < hi; ox++) dst[ox] += src[ox];
                        else
                            for (int64_t ox = lo; ox < hi; ox++) dst[ox * g->sw] += src[ox];
                    }
                }
            }
}

/* ---- pooling --------------------------------------------------------------- */

/* The common 2x2, stride 2, no padding case: no bounds checks, and no
 * branches on the data (random winners would defeat branch prediction).
 * A value wins its window if it is larger, or NaN where the best so far is
 * not (the rule of the general loop below). A row is done in vectors of L
 * outputs (8, or 4 for narrow rows); a ragged end is redone as the last L,
 * overlapping the block before. */
typedef int32_t dg_v8i __attribute__((vector_size(32)));
typedef float dg_v4 __attribute__((vector_size(16)));
typedef int32_t dg_v4i __attribute__((vector_size(16)));

/* Folds candidate v (indices iv) into the best m (indices im). */
#define DG_POOL_PICK(VI, m, im, v, iv)                            \
    do {                                                          \
        VI t_ = ((v) > (m)) | (((v) != (v)) & ((m) == (m)));      \
        VI mb_, vb_;                                              \
        __builtin_memcpy(&mb_, &(m), sizeof mb_);                 \
        __builtin_memcpy(&vb_, &(v), sizeof vb_);                 \
        mb_ = (t_ & vb_) | (~t_ & mb_);                           \
        __builtin_memcpy(&(m), &mb_, sizeof mb_);                 \
        (im) = (t_ & (iv)) | (~t_ & (im));                        \
    } while (0)

/* One output row: o[ox], id[ox] for ox < OW (OW >= L) from input rows r0,
 * r1 (= r0 + W); base is the plane index of r0[0]. EVEN and ODD are the
 * shuffle indices that split 2L inputs into window columns. */
#define DG_POOL_ROW(VF, VI, L, EVEN, ODD, LANE2)                                       \
    for (int64_t b_ = 0; b_ < OW; b_ += L) {                                           \
        int64_t ox = b_ + L <= OW ? b_ : OW - L;                                       \
        VF l0, h0, l1, h1;                                                             \
        __builtin_memcpy(&l0, r0 + 2 * ox, sizeof l0);                                 \
        __builtin_memcpy(&h0, r0 + 2 * ox + L, sizeof h0);                             \
        __builtin_memcpy(&l1, r1 + 2 * ox, sizeof l1);                                 \
        __builtin_memcpy(&h1, r1 + 2 * ox + L, sizeof h1);                             \
        if (aff) { /* batch norm first: pool y = x * sc + sh */                        \
            l0 = l0 * sc + sh;                                                         \
            h0 = h0 * sc + sh;                                                         \
            l1 = l1 * sc + sh;                                                         \
            h1 = h1 * sc + sh;                                                         \
        }                                                                              \
        VF m = __builtin_shufflevector(l0, h0, EVEN), b = __builtin_shufflevector(l0, h0, ODD); \
        VF c = __builtin_shufflevector(l1, h1, EVEN), d = __builtin_shufflevector(l1, h1, ODD); \
        VI i0 = LANE2 + (base + (int32_t)(2 * ox));                                    \
        VI im = i0;                                                                    \
        DG_POOL_PICK(VI, m, im, b, i0 + 1);                                            \
        DG_POOL_PICK(VI, m, im, c, i0 + (int32_t)W);                                   \
        DG_POOL_PICK(VI, m, im, d, i0 + (int32_t)(W + 1));                             \
        __builtin_memcpy(o + ox, &m, sizeof m);                                        \
        __builtin_memcpy(id + ox, &im, sizeof im);                                     \
    }

#define DG_EVEN8 0, 2, 4, 6, 8, 10, 12, 14
#define DG_ODD8 1, 3, 5, 7, 9, 11, 13, 15
#define DG_EVEN4 0, 2, 4, 6
#define DG_ODD4 1, 3, 5, 7

/* The output rows of one plane (oh x OW from rows of W floats). aff: pool
 * the batch-norm output x * sc + sh instead of x (computed as bn_fwd does,
 * so the same values win). */
static inline __attribute__((always_inline)) void pool2x2_plane(float *out, int32_t *idx,
                                                                const float *x, int64_t oh,
                                                                int64_t OW, int64_t W, bool aff,
                                                                float sc, float sh) {
    const dg_v8i lane8 = { 0, 2, 4, 6, 8, 10, 12, 14 };
    const dg_v4i lane4 = { 0, 2, 4, 6 };
    for (int64_t oy = 0; oy < oh; oy++) {
        const float *r0 = x + 2 * oy * W, *r1 = r0 + W;
        float *o = out + oy * OW;
        int32_t *id = idx + oy * OW;
        const int32_t base = (int32_t)(2 * oy * W);
        if (OW >= 8) {
            DG_POOL_ROW(dg_v8, dg_v8i, 8, DG_EVEN8, DG_ODD8, lane8)
        } else if (OW >= 4) {
            DG_POOL_ROW(dg_v4, dg_v4i, 4, DG_EVEN4, DG_ODD4, lane4)
        } else {
            for (int64_t ox = 0; ox < OW; ox++) {   /* rows narrower than 4 */
                float v[4] = { r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1] };
                if (aff)
                    for (int k = 0; k < 4; k++) v[k] = v[k] * sc + sh;
                int32_t i0 = base + (int32_t)(2 * ox), iv[4] = { i0, i0 + 1, i0 + (int32_t)W,
                                                                 i0 + (int32_t)W + 1 };
                float m = v[0];
                int32_t im = i0;
                for (int k = 1; k < 4; k++)
                    if (v[k] > m || (v[k] != v[k] && m == m)) {
                        m = v[k];
                        im = iv[k];
                    }
                o[ox] = m;
                id[ox] = im;
            }
        }
    }
}

DG_HOT static void maxpool_2x2(float *out, int32_t *idx, const float *x, const dg_conv_geom *g) {
    const int64_t HW = g->h * g->w, P = g->oh * g->ow;
    for (int64_t pl = 0; pl < g->n * g->c; pl++)
        pool2x2_plane(out + pl * P, idx + pl * P, x + pl * HW, g->oh, g->ow, g->w, false, 1.0f, 0.0f);
}

DG_HOT void dg__cpu_maxpool_fwd(float *out, int32_t *idx, const float *x, const dg_conv_geom *g) {
    const int64_t HW = g->h * g->w, P = g->oh * g->ow;
    if (g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0 &&
        g->dh == 1 && g->dw == 1) {
        maxpool_2x2(out, idx, x, g);
        return;
    }
    for (int64_t pl = 0; pl < g->n * g->c; pl++) {
        const float *src = x + pl * HW;
        for (int64_t oy = 0; oy < g->oh; oy++)
            for (int64_t ox = 0; ox < g->ow; ox++) {
                float best = -INFINITY;
                int64_t bi = -1;
                for (int64_t ky = 0; ky < g->kh; ky++) {
                    int64_t iy = oy * g->sh - g->ph + ky * g->dh;
                    if (iy < 0 || iy >= g->h) continue;
                    for (int64_t kx = 0; kx < g->kw; kx++) {
                        int64_t ix = ox * g->sw - g->pw + kx * g->dw;
                        if (ix < 0 || ix >= g->w) continue;
                        float v = src[iy * g->w + ix];
                        if (bi < 0 || v > best || (isnan(v) && !isnan(best))) {
                            best = v;
                            bi = iy * g->w + ix;
                        }
                    }
                }
                out[pl * P + oy * g->ow + ox] = best;
                idx[pl * P + oy * g->ow + ox] = (int32_t)bi;
            }
    }
}

/* 2x2 windows tiling the plane exactly, dx overwritten: each input gets
 * its window's gradient or 0 in one pass (no memset, no scatter), in
 * vectors of L outputs as in the forward pass. */
#define DG_POOL_BWD_ROW(VF, VI, L, LO, HI, LANE2)                                       \
    for (int64_t b_ = 0; b_ < OW; b_ += L) {                                            \
        int64_t ox = b_ + L <= OW ? b_ : OW - L;                                        \
        VF v;                                                                           \
        VI k;                                                                           \
        __builtin_memcpy(&v, go + ox, sizeof v);                                        \
        __builtin_memcpy(&k, id + ox, sizeof k);                                        \
        k -= LANE2 + (base + (int32_t)(2 * ox));   /* 0, 1, W or W + 1 */               \
        VI vb, a, b, c, d;                                                              \
        __builtin_memcpy(&vb, &v, sizeof vb);                                           \
        a = (k == 0) & vb;                                                              \
        b = (k == 1) & vb;                                                              \
        c = (k == (int32_t)W) & vb;                                                     \
        d = (k == (int32_t)(W + 1)) & vb;                                               \
        VI s0 = __builtin_shufflevector(a, b, LO), s1 = __builtin_shufflevector(a, b, HI); \
        VI s2 = __builtin_shufflevector(c, d, LO), s3 = __builtin_shufflevector(c, d, HI); \
        if (aff) { /* batch norm's backward: dx = kk * (dy - k0 - x * kx) */            \
            VF y[4], xv[4];                                                             \
            __builtin_memcpy(&y[0], &s0, sizeof s0);                                    \
            __builtin_memcpy(&y[1], &s1, sizeof s1);                                    \
            __builtin_memcpy(&y[2], &s2, sizeof s2);                                    \
            __builtin_memcpy(&y[3], &s3, sizeof s3);                                    \
            __builtin_memcpy(&xv[0], x0 + 2 * ox, sizeof xv[0]);                        \
            __builtin_memcpy(&xv[1], x0 + 2 * ox + L, sizeof xv[1]);                    \
            __builtin_memcpy(&xv[2], x1 + 2 * ox, sizeof xv[2]);                        \
            __builtin_memcpy(&xv[3], x1 + 2 * ox + L, sizeof xv[3]);                    \
            for (int q_ = 0; q_ < 4; q_++) y[q_] = kk * (y[q_] - k0 - xv[q_] * kx);     \
            __builtin_memcpy(&s0, &y[0], sizeof s0);                                    \
            __builtin_memcpy(&s1, &y[1], sizeof s1);                                    \
            __builtin_memcpy(&s2, &y[2], sizeof s2);                                    \
            __builtin_memcpy(&s3, &y[3], sizeof s3);                                    \
        }                                                                               \
        __builtin_memcpy(d0 + 2 * ox, &s0, sizeof s0);                                  \
        __builtin_memcpy(d0 + 2 * ox + L, &s1, sizeof s1);                              \
        __builtin_memcpy(d1 + 2 * ox, &s2, sizeof s2);                                  \
        __builtin_memcpy(d1 + 2 * ox + L, &s3, sizeof s3);                              \
    }

#define DG_ZIP8_LO 0, 8, 1, 9, 2, 10, 3, 11
#define DG_ZIP8_HI 4, 12, 5, 13, 6, 14, 7, 15
#define DG_ZIP4_LO 0, 4, 1, 5
#define DG_ZIP4_HI 2, 6, 3, 7

/* The gradient of one plane from its pooled gradient go and indices id.
 * aff: through batch norm too, dx = kk * (dy - k0 - x * kx) with dy the
 * pooled gradient at the winners and 0 elsewhere (x: the plane's input). */
static inline __attribute__((always_inline)) void pool2x2_bwd_plane(
    float *dx, const float *gop, const int32_t *idp, const float *x, int64_t oh, int64_t OW,
    int64_t W, bool aff, float kk, float k0, float kx) {
    const dg_v8i lane8 = { 0, 2, 4, 6, 8, 10, 12, 14 };
    const dg_v4i lane4 = { 0, 2, 4, 6 };
    for (int64_t oy = 0; oy < oh; oy++) {
        float *d0 = dx + 2 * oy * W, *d1 = d0 + W;
        const float *x0 = aff ? x + 2 * oy * W : NULL, *x1 = aff ? x0 + W : NULL;
        const float *go = gop + oy * OW;
        const int32_t *id = idp + oy * OW;
        const int32_t base = (int32_t)(2 * oy * W);
        if (OW >= 8) {
            DG_POOL_BWD_ROW(dg_v8, dg_v8i, 8, DG_ZIP8_LO, DG_ZIP8_HI, lane8)
        } else if (OW >= 4) {
            DG_POOL_BWD_ROW(dg_v4, dg_v4i, 4, DG_ZIP4_LO, DG_ZIP4_HI, lane4)
        } else {
            for (int64_t ox = 0; ox < OW; ox++) {
                int32_t k = id[ox] - base - (int32_t)(2 * ox);
                float v = go[ox];
                float y[4] = { k == 0 ? v : 0.0f, k == 1 ? v : 0.0f, k == (int32_t)W ? v : 0.0f,
                               k == (int32_t)W + 1 ? v : 0.0f };
                if (aff) {
                    const float xv[4] = { x0[2 * ox], x0[2 * ox + 1], x1[2 * ox], x1[2 * ox + 1] };
                    for (int q = 0; q < 4; q++) y[q] = kk * (y[q] - k0 - xv[q] * kx);
                }
                d0[2 * ox] = y[0];
                d0[2 * ox + 1] = y[1];
                d1[2 * ox] = y[2];
                d1[2 * ox + 1] = y[3];
            }
        }
    }
}

/* 2x2 windows tiling the plane exactly, dx overwritten: each input gets its
 * window's gradient or 0 in one pass (no memset, no scatter). */
DG_HOT static void maxpool_2x2_bwd(float *dx, const float *dout, const int32_t *idx,
                                   const dg_conv_geom *g) {
    const int64_t HW = g->h * g->w, P = g->oh * g->ow;
    for (int64_t pl = 0; pl < g->n * g->c; pl++)
        pool2x2_bwd_plane(dx + pl * HW, dout + pl * P, idx + pl * P, NULL, g->oh, g->ow, g->w, false,
                          0.0f, 0.0f, 0.0f);
}

DG_HOT void dg__cpu_maxpool_bwd(float *dx, const float *dout, const int32_t *idx,
                                const dg_conv_geom *g, bool acc) {
    const int64_t HW = g->h * g->w, P = g->oh * g->ow;
    if (!acc && g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0 &&
        g->dh == 1 && g->dw == 1 && g->h == 2 * g->oh && g->w == 2 * g->ow) {
        maxpool_2x2_bwd(dx, dout, idx, g);
        return;
    }
    if (!acc) memset(dx, 0, (size_t)(g->n * g->c * HW) * sizeof(float));
    for (int64_t pl = 0; pl < g->n * g->c; pl++) {
        float *d = dx + pl * HW;
        const float *go = dout + pl * P;
        const int32_t *id = idx + pl * P;
        for (int64_t i = 0; i < P; i++)
            if (id[i] >= 0) d[id[i]] += go[i];
    }
}

DG_HOT void dg__cpu_avgpool_fwd(float *out, const float *x, const dg_conv_geom *g) {
    const int64_t HW = g->h * g->w, P = g->oh * g->ow;
    const float inv = 1.0f / (float)(g->kh * g->kw);
    for (int64_t pl = 0; pl < g->n * g->c; pl++) {
        const float *src = x + pl * HW;
        for (int64_t oy = 0; oy < g->oh; oy++)
            for (int64_t ox = 0; ox < g->ow; ox++) {
                float s = 0.0f;
                for (int64_t ky = 0; ky < g->kh; ky++) {
                    int64_t iy = oy * g->sh - g->ph + ky;
                    if (iy < 0 || iy >= g->h) continue;
                    for (int64_t kx = 0; kx < g->kw; kx++) {
                        int64_t ix = ox * g->sw - g->pw + kx;
                        if (ix >= 0 && ix < g->w) s += src[iy * g->w + ix];
                    }
                }
                out[pl * P + oy * g->ow + ox] = s * inv;
            }
    }
}

DG_HOT void dg__cpu_avgpool_bwd(float *dx, const float *dout, const dg_conv_geom *g, bool acc) {
    const int64_t HW = g->h * g->w, P = g->oh * g->ow;
    const float inv = 1.0f / (float)(g->kh * g->kw);
    if (!acc) memset(dx, 0, (size_t)(g->n * g->c * HW) * sizeof(float));
    for (int64_t pl = 0; pl < g->n * g->c; pl++) {
        float *d = dx + pl * HW;
        for (int64_t oy = 0; oy < g->oh; oy++)
            for (int64_t ox = 0; ox < g->ow; ox++) {
                float v = dout[pl * P + oy * g->ow + ox] * inv;
                for (int64_t ky = 0; ky < g->kh; ky++) {
                    int64_t iy = oy * g->sh - g->ph + ky;
                    if (iy < 0 || iy >= g->h) continue;
                    for (int64_t kx = 0; kx < g->kw; kx++) {
                        int64_t ix = ox * g->sw - g->pw + kx;
                        if (ix >= 0 && ix < g->w) d[iy * g->w + ix] += v;
                    }
                }
            }
    }
}

/* ---- dropout ----------------------------------------------------------------- */

DG_HOT void dg__cpu_dropout_mask(float *mask, int64_t n, float p, uint64_t seed) {
    const float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float u;
        DG_DROPOUT_MIX(seed, i, u);
        mask[i] = u < p ? 0.0f : scale;
    }
}

/* ---- batch norm ---------------------------------------------------------------- */

/* Sums in 16 lanes (the compiler keeps them in vector registers: strict
 * float order forbids it to reorder one running sum), then lane by lane. */
#define LANES 16

static inline float lanes_total(const float *acc) {
    float t = 0.0f;
    for (int k = 0; k < LANES; k++) t += acc[k];
    return t;
}

/* sum(p - mu), sum((p - mu)^2) */
static inline void row_moments(const float *p, int64_t n, float mu, float *sum, float *sq) {
    float a[LANES] = { 0 }, b[LANES] = { 0 };
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int k = 0; k < LANES; k++) {
            float d = p[j + k] - mu;
            a[k] += d;
            b[k] += d * d;
        }
    float ta = lanes_total(a), tb = lanes_total(b);
    for (; j < n; j++) {
        float d = p[j] - mu;
        ta += d;
        tb += d * d;
    }
    *sum = ta;
    *sq = tb;
}

/* sum(g), sum(g * (p - mu)) */
static inline void row_dots(const float *g, const float *p, int64_t n, float mu, float *sg, float *sgx) {
    float a[LANES] = { 0 }, b[LANES] = { 0 };
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int k = 0; k < LANES; k++) {
            a[k] += g[j + k];
            b[k] += g[j + k] * (p[j + k] - mu);
        }
    float ta = lanes_total(a), tb = lanes_total(b);
    for (; j < n; j++) {
        ta += g[j];
        tb += g[j] * (p[j] - mu);
    }
    *sg = ta;
    *sgx = tb;
}

/* Statistics go channel by channel; the backward walks x and dy in memory
 * order, image by image, over a block of up to CB channels (per-channel
 * sums in stack arrays). Each was the faster order in MNIST CNN training
 * (perf shares of a 120-step run: statistics 3.3% against 6.6% in memory
 * order; backward 13.6% against 16.0% channel by channel). */
#define CB 64

/* Mean and invstd of channel ch (two passes over its rows: the second
 * mostly from L2), and the running statistics. */
static inline void bn_channel_stats(float *mean, float *invstd, float *run_mean, float *run_var,
                                    const float *x, int64_t n, int64_t c, int64_t hw, int64_t ch,
                                    float momentum, float eps) {
    /* rows of hw in float (vectorized), rows summed in double */
    double s = 0.0;
    float r, q;
    for (int64_t i = 0; i < n; i++) {
        row_moments(x + (i * c + ch) * hw, hw, 0.0f, &r, &q);
        s += r;
    }
    int64_t m = n * hw;
    double mu = s / (double)m, ss = 0.0;
    float muf = (float)mu;
    for (int64_t i = 0; i < n; i++) {
        row_moments(x + (i * c + ch) * hw, hw, muf, &r, &q);
        ss += q;
    }
    double var = ss / (double)m;
    mean[ch] = muf;
    invstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
    if (run_mean) {
        double unb = m > 1 ? ss / (double)(m - 1) : var;
        run_mean[ch] = (float)((1.0 - momentum) * run_mean[ch] + momentum * mu);
        run_var[ch] = (float)((1.0 - momentum) * run_var[ch] + momentum * unb);
    }
}

DG_HOT void dg__cpu_bn_stats(float *mean, float *invstd, float *run_mean, float *run_var,
                             const float *x, int64_t n, int64_t c, int64_t hw, float momentum,
                             float eps, bool training) {
    for (int64_t ch = 0; ch < c; ch++) {
        if (training) {
            bn_channel_stats(mean, invstd, run_mean, run_var, x, n, c, hw, ch, momentum, eps);
        } else {
            mean[ch] = run_mean[ch];
            invstd[ch] = 1.0f / sqrtf(run_var[ch] + eps);
        }
    }
}

/* Training forward channel by channel: statistics, then a third pass over
 * the channel's rows, from L2 when they fit (MNIST's 256 x 24 x 24: 576
 * KiB a channel), to normalize. */
DG_HOT void dg__cpu_bn_stats_fwd(float *y, float *mean, float *invstd, float *run_mean,
                                 float *run_var, const float *x, const float *w, const float *b,
                                 int64_t n, int64_t c, int64_t hw, float momentum, float eps) {
    for (int64_t ch = 0; ch < c; ch++) {
        bn_channel_stats(mean, invstd, run_mean, run_var, x, n, c, hw, ch, momentum, eps);
        float sc = invstd[ch] * (w ? w[ch] : 1.0f);
        float sh = (b ? b[ch] : 0.0f) - mean[ch] * sc;
        for (int64_t i = 0; i < n; i++) {
            const float *restrict p = x + (i * c + ch) * hw;
            float *restrict q = y + (i * c + ch) * hw;
            for (int64_t j = 0; j < hw; j++) q[j] = p[j] * sc + sh;
        }
    }
}

DG_HOT void dg__cpu_bn_fwd(float *y, const float *x, const float *mean, const float *invstd,
                           const float *w, const float *b, int64_t n, int64_t c, int64_t hw) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t ch = 0; ch < c; ch++) {
            float sc = invstd[ch] * (w ? w[ch] : 1.0f);
            float sh = (b ? b[ch] : 0.0f) - mean[ch] * sc;
            const float *restrict p = x + (i * c + ch) * hw;
            float *restrict q = y + (i * c + ch) * hw;
            for (int64_t j = 0; j < hw; j++) q[j] = p[j] * sc + sh;
        }
}

DG_HOT void dg__cpu_bn_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *mean, const float *invstd, const float *w, int64_t n,
                           int64_t c, int64_t hw, bool training, bool acc_dx, bool acc_dw,
                           bool acc_db) {
    const int64_t m = n * hw;
    for (int64_t c0 = 0; c0 < c; c0 += CB) {
        const int64_t nb = c - c0 < CB ? c - c0 : CB;
        double sdy[CB] = { 0 }, sdyx[CB] = { 0 };
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < nb; k++) {
                const int64_t off = (i * c + c0 + k) * hw;
                float a, bsum;
                row_dots(dy + off, x + off, hw, mean[c0 + k], &a, &bsum);
                sdy[k] += a;
                sdyx[k] += bsum;
            }
        float kk[CB], k0[CB], kx[CB];   /* dx = kk * (dy - k0 - x * kx) */
        for (int64_t k = 0; k < nb; k++) {
            const int64_t ch = c0 + k;
            float is = invstd[ch];
            double sxh = sdyx[k] * is;   /* sum(dy * xhat) */
            if (dw) dw[ch] = (acc_dw ? dw[ch] : 0.0f) + (float)sxh;
            if (db) db[ch] = (acc_db ? db[ch] : 0.0f) + (float)sdy[k];
            float mdy = training ? (float)(sdy[k] / (double)m) : 0.0f;
            float mdyx = training ? (float)(sxh / (double)m) : 0.0f;
            kk[k] = is * (w ? w[ch] : 1.0f);
            kx[k] = is * mdyx;
            k0[k] = mdy - mean[ch] * kx[k];
        }
        if (!dx) continue;
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < nb; k++) {
                const int64_t off = (i * c + c0 + k) * hw;
                const float *restrict p = x + off, *restrict g = dy + off;
                float *restrict q = dx + off;
                const float a = kk[k], b0 = k0[k], bx = kx[k];
                if (acc_dx)
                    for (int64_t j = 0; j < hw; j++) q[j] += a * (g[j] - b0 - p[j] * bx);
                else
                    for (int64_t j = 0; j < hw; j++) q[j] = a * (g[j] - b0 - p[j] * bx);
            }
    }
}

/* ---- batch norm, then 2x2 max pooling: fused ----------------------------------- */

/* Sequential's BatchNorm2d -> MaxPool2d(2) (nn.c), with or without a ReLU
 * before or after the pool: the batch-norm output is never stored.
 * Forward: per channel the statistics (as bn_stats), then each plane pooled
 * from x * sc + sh while the channel is in L2 (the same values as bn_fwd,
 * so the same winners and outputs), then relu: it commutes with max.
 * Backward: the sums over the winners only (dy is 0 elsewhere; the caller
 * has applied relu's mask), then dx in one pass. MNIST CNN's first layer:
 * 4 passes over its 14 MB activation instead of 11. */
DG_HOT void dg__cpu_bn_pool_fwd(float *out, int32_t *idx, float *mean, float *invstd,
                                float *run_mean, float *run_var, const float *x, const float *w,
                                const float *b, int64_t n, int64_t c, int64_t h, int64_t wd,
                                float momentum, float eps, bool training, bool relu) {
    const int64_t HW = h * wd, oh = h / 2, ow = wd / 2, P = oh * ow;
    for (int64_t ch = 0; ch < c; ch++) {
        if (training) {
            bn_channel_stats(mean, invstd, run_mean, run_var, x, n, c, HW, ch, momentum, eps);
        } else {
            mean[ch] = run_mean[ch];
            invstd[ch] = 1.0f / sqrtf(run_var[ch] + eps);
        }
        float sc = invstd[ch] * (w ? w[ch] : 1.0f);
        float sh = (b ? b[ch] : 0.0f) - mean[ch] * sc;
        for (int64_t i = 0; i < n; i++) {
            float *restrict o = out + (i * c + ch) * P;
            pool2x2_plane(o, idx + (i * c + ch) * P, x + (i * c + ch) * HW, oh, ow, wd, true, sc, sh);
            if (relu)   /* as the relu op: NaN and -0 stay */
                for (int64_t j = 0; j < P; j++) o[j] = o[j] < 0.0f ? 0.0f : o[j];
        }
    }
}

DG_HOT void dg__cpu_bn_pool_bwd(float *dx, float *dw, float *db, const float *gout,
                                const int32_t *idx, const float *x, const float *mean,
                                const float *invstd, const float *w, int64_t n, int64_t c,
                                int64_t h, int64_t wd, bool training, bool acc_dw, bool acc_db) {
    const int64_t HW = h * wd, oh = h / 2, ow = wd / 2, P = oh * ow, m = n * HW;
    for (int64_t ch = 0; ch < c; ch++) {
        const float mu = mean[ch], is = invstd[ch];
        double sdy = 0.0, sdyx = 0.0;   /* over the winners: dy is 0 elsewhere */
        for (int64_t i = 0; i < n; i++) {
            const float *go = gout + (i * c + ch) * P, *xp = x + (i * c + ch) * HW;
            const int32_t *id = idx + (i * c + ch) * P;
            float a = 0.0f, bs = 0.0f;
            for (int64_t j = 0; j < P; j++) {
                a += go[j];
                bs += go[j] * (xp[id[j]] - mu);
            }
            sdy += a;
            sdyx += bs;
        }
        sdyx *= is;   /* sum(dy * xhat) */
        if (dw) dw[ch] = (acc_dw ? dw[ch] : 0.0f) + (float)sdyx;
        if (db) db[ch] = (acc_db ? db[ch] : 0.0f) + (float)sdy;
        if (!dx) continue;
        const float kk = is * (w ? w[ch] : 1.0f);
        const float mdy = training ? (float)(sdy / (double)m) : 0.0f;
        const float mdyx = training ? (float)(sdyx / (double)m) : 0.0f;
        const float kx = is * mdyx, k0 = mdy - mu * kx;
        for (int64_t i = 0; i < n; i++)
            pool2x2_bwd_plane(dx + (i * c + ch) * HW, gout + (i * c + ch) * P, idx + (i * c + ch) * P,
                              x + (i * c + ch) * HW, oh, ow, wd, true, kk, k0, kx);
    }
}
