/* conv_cpu.c - CPU kernels for convolutional nets: im2col/col2im (the
 * convolution itself is a GEMM), max and average pooling, the dropout mask
 * and batch norm. Plain loops written for auto-vectorization. */
#include "cnn-impl.h"

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
                    if (OW % 8 == 0) {   /* 8-float blocks as vectors: no memcpy calls */
                        for (int64_t oy = 0; oy < g->oh; oy++)
                            for (int64_t ox = 0; ox < OW; ox += 8) {
                                dg_v8 v;
                                __builtin_memcpy(&v, src + oy * W + ox, sizeof v);
                                __builtin_memcpy(dst + oy * OW + ox, &v, sizeof v);
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

DG_HOT void dg__cpu_col2im(float *x, const float *col, const dg_conv_geom *g, bool acc) {
    const int64_t P = g->oh * g->ow, NP = g->n * P, HW = g->h * g->w;
    if (!acc) memset(x, 0, (size_t)(g->n * g->c * HW) * sizeof(float));
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

/* The common 2x2, stride 2, no padding case: no bounds checks. */
DG_HOT static void maxpool_2x2(float *out, int32_t *idx, const float *x, const dg_conv_geom *g) {
    const int64_t HW = g->h * g->w, P = g->oh * g->ow, W = g->w;
    for (int64_t pl = 0; pl < g->n * g->c; pl++)
        for (int64_t oy = 0; oy < g->oh; oy++) {
            const float *restrict r0 = x + pl * HW + 2 * oy * W, *restrict r1 = r0 + W;
            float *restrict o = out + pl * P + oy * g->ow;
            int32_t *restrict id = idx + pl * P + oy * g->ow;
            int32_t base = (int32_t)(2 * oy * W);
            for (int64_t ox = 0; ox < g->ow; ox++) {   /* branch-free: vectorizes */
                float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
                int32_t i0 = base + (int32_t)(2 * ox);
                bool tb = b > a || (b != b && a == a);
                float m = tb ? b : a;
                int32_t im = tb ? i0 + 1 : i0;
                bool tc = c > m || (c != c && m == m);
                m = tc ? c : m;
                im = tc ? i0 + (int32_t)W : im;
                bool td = d > m || (d != d && m == m);
                m = td ? d : m;
                im = td ? i0 + (int32_t)W + 1 : im;
                o[ox] = m;
                id[ox] = im;
            }
        }
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

void dg__cpu_maxpool_bwd(float *dx, const float *dout, const int32_t *idx, const dg_conv_geom *g,
                         bool acc) {
    const int64_t HW = g->h * g->w, P = g->oh * g->ow;
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

/* sum(p), sum((p - mu)^2) */
static inline void row_moments(const float *p, int64_t n, float mu, float *sum, float *sq) {
    float a[LANES] = { 0 }, b[LANES] = { 0 };
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int k = 0; k < LANES; k++) {
            float d = p[j + k] - mu;
            a[k] += p[j + k];
            b[k] += d * d;
        }
    float ta = lanes_total(a), tb = lanes_total(b);
    for (; j < n; j++) {
        float d = p[j] - mu;
        ta += p[j];
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

DG_HOT void dg__cpu_bn_stats(float *mean, float *invstd, float *run_mean, float *run_var,
                             const float *x, int64_t n, int64_t c, int64_t hw, float momentum,
                             float eps, bool training) {
    for (int64_t ch = 0; ch < c; ch++) {
        if (!training) {
            mean[ch] = run_mean[ch];
            invstd[ch] = 1.0f / sqrtf(run_var[ch] + eps);
            continue;
        }
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
    for (int64_t ch = 0; ch < c; ch++) {
        float mu = mean[ch], is = invstd[ch];
        double sdy = 0.0, sdyx = 0.0;
        for (int64_t i = 0; i < n; i++) {
            float a, bsum;
            row_dots(dy + (i * c + ch) * hw, x + (i * c + ch) * hw, hw, mu, &a, &bsum);
            sdy += a;
            sdyx += bsum;
        }
        sdyx *= is;   /* sum(dy * xhat) */
        if (dw) dw[ch] = (acc_dw ? dw[ch] : 0.0f) + (float)sdyx;
        if (db) db[ch] = (acc_db ? db[ch] : 0.0f) + (float)sdy;
        if (!dx) continue;
        float k = is * (w ? w[ch] : 1.0f);
        float mdy = training ? (float)(sdy / (double)m) : 0.0f;
        float mdyx = training ? (float)(sdyx / (double)m) : 0.0f;
        const float kx = is * mdyx, k0 = mdy - mu * kx;   /* v = k * (g - k0 - p * kx) */
        for (int64_t i = 0; i < n; i++) {
            const float *restrict p = x + (i * c + ch) * hw, *restrict g = dy + (i * c + ch) * hw;
            float *restrict q = dx + (i * c + ch) * hw;
            if (acc_dx)
                for (int64_t j = 0; j < hw; j++) q[j] += k * (g[j] - k0 - p[j] * kx);
            else
                for (int64_t j = 0; j < hw; j++) q[j] = k * (g[j] - k0 - p[j] * kx);
        }
    }
}
