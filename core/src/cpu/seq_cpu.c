/* seq_cpu.c - CPU kernels for sequences and attention (the seq slots of
 * backend-impl.h): activations, layer norm, index picking, where, and the
 * LSTM / GRU recurrences (one GEMM per step for the whole batch, then the
 * cell, with per-sample lengths). */
#include "seq_cpu.h"
#include "vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Let a += b * c become one fused multiply-add in the clones that have FMA
 * (ISO C mode, -std=c11, turns contraction off in GCC), as in
 * gemm_cpu.c: the dot products of attention, the polynomials of vmath.h,
 * the sums of layer norm and the cells of the recurrences. */
#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif

/* y = f(x) over n floats (y may be x): the vector loops of vmath.h */
DG_HOT static void vsigmoid(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = dg__vsigmoid(x[i]);
}

DG_HOT static void vtanh(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = dg__vtanh(x[i]);
}

/* ---- activations ---------------------------------------------------------------- */

#define DG_INV_SQRT2 0.70710678118654752440f
#define DG_INV_SQRT_2PI 0.39894228040143267794f

DG_HOT void dg__cpu_act_fwd(dg_act act, float *y, const float *x, int64_t n) {
    switch (act) {
    case DG_ACT_TANH:
        vtanh(y, x, n);
        break;
    case DG_ACT_SIGMOID:
        vsigmoid(y, x, n);
        break;
    case DG_ACT_GELU:   /* x Phi(x) */
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * dg__vphi(x[i]);
        break;
    }
}

/* one loop per (activation, accumulate) pair, so that each vectorizes */
#define DG_ACT_BWD_LOOP(D)                                              \
    do {                                                                \
        if (acc)                                                        \
            for (int64_t i = 0; i < n; i++) gx[i] += gy[i] * (D);       \
        else                                                            \
            for (int64_t i = 0; i < n; i++) gx[i] = gy[i] * (D);        \
    } while (0)

DG_HOT void dg__cpu_act_bwd(dg_act act, float *gx, const float *gy, const float *x, const float *y,
                            int64_t n, bool acc) {
    switch (act) {
    case DG_ACT_TANH: DG_ACT_BWD_LOOP(1.0f - y[i] * y[i]); break;
    case DG_ACT_SIGMOID: DG_ACT_BWD_LOOP(y[i] * (1.0f - y[i])); break;
    case DG_ACT_GELU:   /* Phi(x) + x phi(x), Phi(x) read back as y / x (1/2 at 0) */
        DG_ACT_BWD_LOOP(((x[i] > 1e-30f || x[i] < -1e-30f) ? y[i] / x[i] : 0.5f) +
                        x[i] * DG_INV_SQRT_2PI * dg__vexp(-0.5f * x[i] * x[i]));
        break;
    }
}
#undef DG_ACT_BWD_LOOP

/* ---- fused attention --------------------------------------------------------------- */


/* inlined into each target clone of its caller, so that it vectorizes for it */
#define DG_ATTN_INLINE static inline __attribute__((always_inline))

/* The blocks are copied into zero-padded scratch (rows of a multiple of
 * 16 floats), so that every inner loop is one 16-lane accumulator kept in
 * registers: x [rows, d] with row stride ld -> dst [rows, dp], or
 * transposed and scaled -> dst [d, rp]. */
#define AP DG_ATTN_LANES

DG_ATTN_INLINE void attn_pad(float *restrict dst, const float *restrict x, int64_t rows, int64_t d, int64_t ld) {
    const int64_t dp = DG_ATTN_PAD(d);
    for (int64_t r = 0; r < rows; r++) {   /* whole vectors, then the tail: no memcpy call */
        float *restrict o = dst + r * dp;
        const float *restrict i = x + r * ld;
        int64_t c = 0;
        for (; c + AP <= d; c += AP)
            for (int l = 0; l < AP; l++) o[c + l] = i[c + l];
        for (; c < d; c++) o[c] = i[c];
        for (; c < dp; c++) o[c] = 0.0f;
    }
}

/* A 16 x 16 tile through registers: dst[c * ldd + r] = scale * x[r * ld + c]
 * for r < nr (the rows from nr on are written as 0), c < 16. Four rounds
 * of zips (row i with row i + 8): each moves the 8-bit index (row, column)
 * of an element one bit to the left, so after four the row and the column
 * have traded places. Vector shuffles in every clone, where the scalar
 * transpose was a load and a store per float. */
typedef float attn_v __attribute__((vector_size(AP * sizeof(float))));
_Static_assert(AP == 16, "attn_t16 is a 16 x 16 transpose");

DG_ATTN_INLINE void attn_t16(float *restrict dst, int64_t ldd, const float *restrict x, int64_t ld,
                             int64_t nr, float scale) {
    attn_v a[AP], t[AP];
    for (int r = 0; r < AP; r++) {
        if (r < nr) {
            memcpy(&a[r], x + r * ld, sizeof a[r]);
            a[r] *= scale;
        } else {
            a[r] = (attn_v){ 0.0f };
        }
    }
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < AP / 2; i++) {
            t[2 * i] = __builtin_shufflevector(a[i], a[i + 8], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21,
                                               6, 22, 7, 23);
            t[2 * i + 1] = __builtin_shufflevector(a[i], a[i + 8], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28,
                                                   13, 29, 14, 30, 15, 31);
        }
        memcpy(a, t, sizeof a);
    }
    for (int c = 0; c < AP; c++) memcpy(dst + c * ldd, &a[c], sizeof a[c]);
}

/* x [rows, d] (row stride ld), scaled, -> dst [d, rp], rows padded with 0:
 * whole 16 x 16 tiles through attn_t16, a column tail one float at a time. */
DG_ATTN_INLINE void attn_pad_t(float *restrict dst, const float *restrict x, int64_t rows, int64_t d,
                               int64_t ld, float scale) {
    const int64_t rp = DG_ATTN_PAD(rows);
    int64_t c0 = 0;
    for (; c0 + AP <= d; c0 += AP)
        for (int64_t r0 = 0; r0 < rp; r0 += AP)
            attn_t16(dst + c0 * rp + r0, rp, x + r0 * ld + c0, ld, rows - r0, scale);
    for (int64_t c = c0; c < d; c++) {
        for (int64_t r = 0; r < rows; r++) dst[c * rp + r] = scale * x[r * ld + c];
        for (int64_t r = rows; r < rp; r++) dst[c * rp + r] = 0.0f;
    }
}

/* Row r < rows of y (row stride ldy), its first n floats:
 *   y_r (+)= sum_{k < nk} w[r * wr + k * wk] * m[k * ldm + :],
 * eight rows at a time (eight: where there are 32 vector registers),
 * then four, then one: independent register accumulators of 16 lanes,
 * each step a fused multiply-add (see the top of the file), eight chains
 * so that the FMA latency is covered. With AVX2's 16 registers eight
 * accumulators of two ymm each spill: four rows there (128 x 16 tokens, 4
 * heads of 16, AVX2 clone on the Xeon: backward 0.79x the time of the
 * four-row kernel without FMA, against 1.08x with eight rows). m has
 * padded rows (ldm and the columns read a multiple of 16). */
/* y[:nl] (+)= a, whole vectors when nl is 16 (a scalar tail read back as
 * a vector stalls) */
DG_ATTN_INLINE void attn_mm_out(float *restrict y, int64_t nl, const float *restrict a, bool acc) {
    if (nl == AP)
        for (int l = 0; l < AP; l++) y[l] = acc ? y[l] + a[l] : a[l];
    else if (acc)
        for (int64_t l = 0; l < nl; l++) y[l] += a[l];
    else
        for (int64_t l = 0; l < nl; l++) y[l] = a[l];
}

DG_ATTN_INLINE void attn_mm(float *restrict y, int64_t ldy, int64_t rows, int64_t n,
                            const float *restrict w, int64_t wr, int64_t wk, int64_t nk,
                            const float *restrict m, int64_t ldm,
                            bool acc, bool eight) {
    /* The blocks are written out, each with its accumulators named: GCC
     * keeps those in registers, but not an array of them, nor one
     * accumulator per loop (both tried: scalar code). */
    int64_t r = 0;
    for (; eight && r + 8 <= rows; r += 8) {   /* eight chains: enough to cover the FMA latency */
        const float *w0 = w + r * wr;
        for (int64_t c0 = 0; c0 < n; c0 += AP) {
            float a0[AP] = { 0.0f }, a1[AP] = { 0.0f }, a2[AP] = { 0.0f }, a3[AP] = { 0.0f };
            float a4[AP] = { 0.0f }, a5[AP] = { 0.0f }, a6[AP] = { 0.0f }, a7[AP] = { 0.0f };
            for (int64_t k = 0; k < nk; k++) {
                const float *mr = m + k * ldm + c0, *wk0 = w0 + k * wk;
                const float x0 = wk0[0], x1 = wk0[wr], x2 = wk0[2 * wr], x3 = wk0[3 * wr];
                const float x4 = wk0[4 * wr], x5 = wk0[5 * wr], x6 = wk0[6 * wr], x7 = wk0[7 * wr];
                for (int l = 0; l < AP; l++) {
                    a0[l] += x0 * mr[l];
                    a1[l] += x1 * mr[l];
                    a2[l] += x2 * mr[l];
                    a3[l] += x3 * mr[l];
                    a4[l] += x4 * mr[l];
                    a5[l] += x5 * mr[l];
                    a6[l] += x6 * mr[l];
                    a7[l] += x7 * mr[l];
                }
            }
            const int64_t nl = n - c0 < AP ? n - c0 : AP;
            float *y0 = y + r * ldy + c0;
            attn_mm_out(y0, nl, a0, acc);
            attn_mm_out(y0 + ldy, nl, a1, acc);
            attn_mm_out(y0 + 2 * ldy, nl, a2, acc);
            attn_mm_out(y0 + 3 * ldy, nl, a3, acc);
            attn_mm_out(y0 + 4 * ldy, nl, a4, acc);
            attn_mm_out(y0 + 5 * ldy, nl, a5, acc);
            attn_mm_out(y0 + 6 * ldy, nl, a6, acc);
            attn_mm_out(y0 + 7 * ldy, nl, a7, acc);
        }
    }
    for (; r + 4 <= rows; r += 4) {
        const float *w0 = w + r * wr, *w1 = w0 + wr, *w2 = w1 + wr, *w3 = w2 + wr;
        for (int64_t c0 = 0; c0 < n; c0 += AP) {
            float a0[AP] = { 0.0f }, a1[AP] = { 0.0f }, a2[AP] = { 0.0f }, a3[AP] = { 0.0f };
            for (int64_t k = 0; k < nk; k++) {
                const float *mr = m + k * ldm + c0;
                const float x0 = w0[k * wk], x1 = w1[k * wk], x2 = w2[k * wk], x3 = w3[k * wk];
                for (int l = 0; l < AP; l++) {
                    a0[l] += x0 * mr[l];
                    a1[l] += x1 * mr[l];
                    a2[l] += x2 * mr[l];
                    a3[l] += x3 * mr[l];
                }
            }
            const int64_t nl = n - c0 < AP ? n - c0 : AP;
            float *y0 = y + r * ldy + c0;
            attn_mm_out(y0, nl, a0, acc);
            attn_mm_out(y0 + ldy, nl, a1, acc);
            attn_mm_out(y0 + 2 * ldy, nl, a2, acc);
            attn_mm_out(y0 + 3 * ldy, nl, a3, acc);
        }
    }
    for (; r < rows; r++) {
        const float *w0 = w + r * wr;
        for (int64_t c0 = 0; c0 < n; c0 += AP) {
            float a0[AP] = { 0.0f };
            for (int64_t k = 0; k < nk; k++) {
                const float *mr = m + k * ldm + c0;
                const float x0 = w0[k * wk];
                for (int l = 0; l < AP; l++) a0[l] += x0 * mr[l];
            }
            attn_mm_out(y + r * ldy + c0, n - c0 < AP ? n - c0 : AP, a0, acc);
        }
    }
}

/* Ask for the blocks of a batch element (every head: rows of d floats,
 * row stride ld, head stride hs) two elements ahead of use, into L2 (an
 * element's blocks with their gradients outgrow L1): in training they
 * were written long before (this layer's forward) and sit in DRAM, and a
 * block's rows are too far apart for the hardware prefetcher. On data
 * out of cache this halved the time of the 4-head ViT blocks (128 x 16
 * tokens, d 16): forward 1.0 -> 0.65 ms, backward 1.9 -> 1.05 ms. */
DG_ATTN_INLINE void attn_prefetch(const float *x, int64_t heads, int64_t hs, int64_t rows, int64_t ld,
                                  int64_t d, int write) {
    if (!x) return;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < d; c += AP) {
                if (write) __builtin_prefetch(x + h * hs + r * ld + c, 1, 1);
                else __builtin_prefetch(x + h * hs + r * ld + c, 0, 1);
            }
}

/* The same for batch element n of three arrays with q's, k's and v's
 * geometry (q, k, v or their gradients; NULL: none). */
DG_ATTN_INLINE void attn_prefetch_qkv(const dg_attn_geom *g, int64_t n, const float *q, const float *k,
                                      const float *v, int write) {
    attn_prefetch(q ? q + n * g->q[0] : NULL, g->h, g->q[1], g->lq, g->q[2], g->d, write);
    attn_prefetch(k ? k + n * g->k[0] : NULL, g->h, g->k[1], g->lk, g->k[2], g->d, write);
    attn_prefetch(v ? v + n * g->v[0] : NULL, g->h, g->v[1], g->lk, g->v[2], g->d, write);
}

/* Whether attn_mm may keep eight rows of accumulators in registers: 32
 * vector registers (AVX-512). The clones are picked for the same CPU. */
static bool attn_eight_rows(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static int cached = -1;   /* racing first callers store the same value */
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f");
    }
    return cached > 0;
#else
    return false;
#endif
}

/* Rows of whole vectors (d and every row stride a multiple of 16) are
 * read in place: no padded copies. */
DG_ATTN_INLINE bool attn_inplace(const dg_attn_geom *g) {
    const int64_t m = AP;
    return g->d % m == 0 && g->q[2] % m == 0 && g->k[2] % m == 0 && g->v[2] % m == 0 &&
           g->o[2] % m == 0;
}

/* Softmax over the keys j of a transposed score block st [lk, lqp], one
 * query per lane, 16 queries at a time: the max, the exponentials and the
 * sum are vector operations down the keys, with no horizontal reduction.
 * Masked scores are -inf; a query with every key masked gets 0. */
DG_ATTN_INLINE void attn_softmax_t(float *restrict st, int64_t lk, int64_t lqp) {
    for (int64_t i0 = 0; i0 < lqp; i0 += AP) {
        float mx[AP], sum[AP] = { 0.0f };
        for (int l = 0; l < AP; l++) mx[l] = -INFINITY;
        for (int64_t j = 0; j < lk; j++)
            for (int l = 0; l < AP; l++) mx[l] = st[j * lqp + i0 + l] > mx[l] ? st[j * lqp + i0 + l] : mx[l];
        for (int l = 0; l < AP; l++) mx[l] = mx[l] == -INFINITY ? 0.0f : mx[l];   /* e^-inf = 0 */
        for (int64_t j = 0; j < lk; j++)
            for (int l = 0; l < AP; l++) {
                const float e = dg__vexp(st[j * lqp + i0 + l] - mx[l]);
                st[j * lqp + i0 + l] = e;
                sum[l] += e;
            }
        for (int l = 0; l < AP; l++) sum[l] = sum[l] > 0.0f ? 1.0f / sum[l] : 0.0f;
        for (int64_t j = 0; j < lk; j++)
            for (int l = 0; l < AP; l++) st[j * lqp + i0 + l] *= sum[l];
    }
}

/* The softmax's backward in the same layout, in place over ds = dP^T
 * [lk, lqp]: dot_i = sum_j P_ij dP_ij down the keys, then
 * dS^T = P^T (dP^T - dot) scale. */
DG_ATTN_INLINE void attn_dsoftmax_t(float *restrict ds, const float *restrict pt, float *restrict dot,
                                    int64_t lk, int64_t lqp, float scale) {
    for (int64_t i = 0; i < lqp; i++) dot[i] = 0.0f;
    for (int64_t j = 0; j < lk; j++)
        for (int64_t i = 0; i < lqp; i++) dot[i] += pt[j * lqp + i] * ds[j * lqp + i];
    for (int64_t j = 0; j < lk; j++)
        for (int64_t i = 0; i < lqp; i++) ds[j * lqp + i] = pt[j * lqp + i] * (ds[j * lqp + i] - dot[i]) * scale;
}

/* Per (batch, head) block: the scores transposed, S^T = K (scale Q)^T
 * ([lk, lqp], one query per lane, Q transposed into work), masked (a
 * padding key is a row, the causal mask a triangle), softmaxed down the
 * keys, saved in p as P^T [lk, lq], and O = P V. The block stays in L1 for
 * the short sequences of a ViT or a sentence: no GEMM calls, no head
 * copies. */
DG_HOT void dg__cpu_attn_fwd(const dg_attn_geom *g, const float *q, const float *k, const float *v,
                             const uint8_t *pad, float *o, float *p, float *work) {
    const int64_t lq = g->lq, lk = g->lk, d = g->d, qp = DG_ATTN_PAD(lq), dp = DG_ATTN_PAD(d);
    const bool inplace = attn_inplace(g), eight = attn_eight_rows();
    float *qt = work, *st = qt + d * qp, *vp = st + lk * qp;
    for (int64_t b = 0; b < g->b; b++) {
        if (b + 2 < g->b) attn_prefetch_qkv(g, b + 2, q, k, v, 0);
        for (int64_t h = 0; h < g->h; h++) {
            float *P = p + (b * g->h + h) * lq * lk;
            const uint8_t *pm = pad ? pad + b * lk : NULL;
            const float *K = k + b * g->k[0] + h * g->k[1], *V = v + b * g->v[0] + h * g->v[1];
            int64_t ldk = g->k[2], ldv = g->v[2];
            if (!inplace) {
                attn_pad(vp, V, lk, d, ldv);
                V = vp;
                ldv = dp;
            }
            float *S = lq == qp ? P : st;   /* no padding: the scores are P's own rows */
            attn_pad_t(qt, q + b * g->q[0] + h * g->q[1], lq, d, g->q[2], g->scale);
            attn_mm(S, qp, lk, qp, K, ldk, 1, d, qt, qp, false, eight);   /* pads of K are never read */
            for (int64_t j = 0; j < lk; j++) {
                float *restrict sj = S + j * qp;
                if (pm && pm[j])
                    for (int64_t i = 0; i < qp; i++) sj[i] = -INFINITY;
                else if (g->causal)
                    for (int64_t i = 0; i < j && i < qp; i++) sj[i] = -INFINITY;
            }
            attn_softmax_t(S, lk, qp);
            if (S != P)
                for (int64_t j = 0; j < lk; j++) {
                    float *restrict pj = P + j * lq;
                    const float *restrict sj = S + j * qp;
                    for (int64_t i = 0; i < lq; i++) pj[i] = sj[i];
                }
            attn_mm(o + b * g->o[0] + h * g->o[1], g->o[2], lq, d, S, 1, qp, lk, V, ldv, false, eight);
        }
    }
}

/* In the same transposed layout: dP^T = V dO^T (dO transposed into work),
 * dot_i = sum_j P_ij dP_ij down the keys, dS^T = P^T (dP^T - dot) scale,
 * then dQ = dS K, dK = dS^T Q, dV = P^T dO, each row one register
 * accumulator. */
DG_HOT void dg__cpu_attn_bwd(const dg_attn_geom *g, const float *q, const float *k, const float *v,
                             const float *p, const float *go, float *gq, float *gk, float *gv,
                             bool acc_q, bool acc_k, bool acc_v, float *work) {
    const int64_t lq = g->lq, lk = g->lk, d = g->d, qp = DG_ATTN_PAD(lq), dp = DG_ATTN_PAD(d);
    const bool inplace = attn_inplace(g), eight = attn_eight_rows();
    const float scale = g->scale;
    float *ot = work, *ds = ot + d * qp, *pt = ds + lk * qp, *kpd = pt + lk * qp;
    float *qpd = kpd + lk * dp, *gop = qpd + lq * dp, *dot = gop + lq * dp;
    for (int64_t b = 0; b < g->b; b++) {
        if (b + 2 < g->b) {
            const int64_t n = b + 2;
            attn_prefetch_qkv(g, n, q, k, v, 0);
            attn_prefetch(go + n * g->o[0], g->h, g->o[1], lq, g->o[2], d, 0);
            attn_prefetch(p + n * g->h * lq * lk, 1, 0, 1, 0, g->h * lq * lk, 0);
            attn_prefetch_qkv(g, n, gq, gk, gv, 1);
        }
        for (int64_t h = 0; h < g->h; h++) {
            const float *P = p + (b * g->h + h) * lq * lk;   /* P^T [lk, lq] */
            float *GQ = gq ? gq + b * g->q[0] + h * g->q[1] : NULL;
            float *GK = gk ? gk + b * g->k[0] + h * g->k[1] : NULL;
            float *GV = gv ? gv + b * g->v[0] + h * g->v[1] : NULL;
            const float *GO = go + b * g->o[0] + h * g->o[1];
            const float *Q = q + b * g->q[0] + h * g->q[1], *K = k + b * g->k[0] + h * g->k[1];
            const float *V = v + b * g->v[0] + h * g->v[1];
            int64_t ldo = g->o[2], ldq = g->q[2], ldk = g->k[2];
            if (GV) {   /* dV_j = sum_i P_ij dO_i */
                const float *O = GO;
                if (!inplace) {
                    attn_pad(gop, GO, lq, d, ldo);
                    O = gop;
                    ldo = dp;
                }
                attn_mm(GV, g->v[2], lk, d, P, lq, 1, lq, O, ldo, acc_v, eight);
            }
            if (!GQ && !GK) continue;
            const float *PT = P;   /* P^T with rows of whole vectors */
            if (lq != qp) {
                for (int64_t j = 0; j < lk; j++) {
                    for (int64_t i = 0; i < lq; i++) pt[j * qp + i] = P[j * lq + i];
                    for (int64_t i = lq; i < qp; i++) pt[j * qp + i] = 0.0f;
                }
                PT = pt;
            }
            attn_pad_t(ot, GO, lq, d, g->o[2], 1.0f);
            attn_mm(ds, qp, lk, qp, V, g->v[2], 1, d, ot, qp, false, eight);   /* dP^T = V dO^T */
            attn_dsoftmax_t(ds, PT, dot, lk, qp, scale);
            if (GQ) {   /* dQ_i = sum_j dS_ij K_j */
                if (!inplace) {
                    attn_pad(kpd, K, lk, d, ldk);
                    K = kpd;
                    ldk = dp;
                }
                attn_mm(GQ, g->q[2], lq, d, ds, 1, qp, lk, K, ldk, acc_q, eight);
            }
            if (GK) {   /* dK_j = sum_i dS_ij Q_i */
                if (!inplace) {
                    attn_pad(qpd, Q, lq, d, ldq);
                    Q = qpd;
                    ldq = dp;
                }
                attn_mm(GK, g->k[2], lk, d, ds, qp, 1, lq, Q, ldq, acc_k, eight);
            }
        }
    }
}
#undef AP

/* ---- layer norm ------------------------------------------------------------------- */

/* The sums of a row in 16 float lanes, so that the loops vectorize; the
 * variance is taken around the mean (two passes), as PyTorch's CPU kernel. */
enum { LN_LANES = 16 };

DG_HOT void dg__cpu_layer_norm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                                   const float *b, int64_t rows, int64_t d, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        float lane[LN_LANES] = { 0.0f };
        int64_t j = 0;
        for (; j + LN_LANES <= d; j += LN_LANES)
            for (int i = 0; i < LN_LANES; i++) lane[i] += xr[j + i];
        float s = 0.0f;
        for (int i = 0; i < LN_LANES; i++) s += lane[i];
        for (; j < d; j++) s += xr[j];
        const float mu = s / (float)d;
        for (int i = 0; i < LN_LANES; i++) lane[i] = 0.0f;
        for (j = 0; j + LN_LANES <= d; j += LN_LANES)
            for (int i = 0; i < LN_LANES; i++) lane[i] += (xr[j + i] - mu) * (xr[j + i] - mu);
        float v = 0.0f;
        for (int i = 0; i < LN_LANES; i++) v += lane[i];
        for (; j < d; j++) v += (xr[j] - mu) * (xr[j] - mu);
        const float rs = 1.0f / sqrtf(v / (float)d + eps);
        mean[r] = mu;
        rstd[r] = rs;
        if (w && b)
            for (j = 0; j < d; j++) yr[j] = (xr[j] - mu) * rs * w[j] + b[j];
        else
            for (j = 0; j < d; j++) yr[j] = (xr[j] - mu) * rs * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
    }
}

/* The two row sums (of dxhat and of dxhat * xhat) in 16 float lanes, as
 * the forward's, with dw and db added in the same pass. */
DG_HOT void dg__cpu_layer_norm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                                   const float *mean, const float *rstd, const float *w, int64_t rows,
                                   int64_t d, bool acc_dx, bool acc_dw, bool acc_db) {
    if (dw && !acc_dw) memset(dw, 0, (size_t)d * sizeof(float));
    if (db && !acc_db) memset(db, 0, (size_t)d * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict xr = x + r * d, *restrict gr = dy + r * d;
        const float mu = mean[r], rs = rstd[r];
        float l1[LN_LANES] = { 0.0f }, l2[LN_LANES] = { 0.0f };
        int64_t j = 0;
#define LN_BWD_SUMS(W, DW, DB)                                                   \
        for (; j + LN_LANES <= d; j += LN_LANES)                                 \
            for (int i = 0; i < LN_LANES; i++) {                                 \
                const float xh = (xr[j + i] - mu) * rs, gy = gr[j + i];          \
                const float g = gy * (W);                                        \
                l1[i] += g;                                                      \
                l2[i] += g * xh;                                                 \
                DW;                                                              \
                DB;                                                              \
            }
        if (w && dw && db) {
            float *restrict pw = dw, *restrict pb = db;
            LN_BWD_SUMS(w[j + i], pw[j + i] += gy * xh, pb[j + i] += gy)
        } else if (w) {
            LN_BWD_SUMS(w[j + i], (void)0, (void)0)
        } else {
            LN_BWD_SUMS(1.0f, (void)0, (void)0)
        }
#undef LN_BWD_SUMS
        const int64_t jv = j;   /* dw, db of the vector part are done when both are wanted */
        float s1 = 0.0f, s2 = 0.0f;
        for (int i = 0; i < LN_LANES; i++) {
            s1 += l1[i];
            s2 += l2[i];
        }
        for (; j < d; j++) {
            const float xh = (xr[j] - mu) * rs, g = gr[j] * (w ? w[j] : 1.0f);
            s1 += g;
            s2 += g * xh;
        }
        const int64_t j0 = w && dw && db ? jv : 0;
        if (dw)
            for (j = j0; j < d; j++) dw[j] += gr[j] * ((xr[j] - mu) * rs);
        if (db)
            for (j = j0; j < d; j++) db[j] += gr[j];
        if (!dx) continue;
        const float m1 = s1 / (float)d, m2 = s2 / (float)d;
        float *restrict dr = dx + r * d;
        for (j = 0; j < d; j++) {
            const float xh = (xr[j] - mu) * rs, g = gr[j] * (w ? w[j] : 1.0f);
            const float v = rs * (g - m1 - xh * m2);
            dr[j] = acc_dx ? dr[j] + v : v;
        }
    }
}

/* ---- index picking ------------------------------------------------------------------ */

void dg__cpu_index_fwd(float *out, const float *x, const int32_t *idx, int64_t outer, int64_t nx,
                       int64_t ni, int64_t inner, bool per_element) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < ni; i++) {
            float *dst = out + (o * ni + i) * inner;
            if (per_element) {
                const int32_t *k = idx + (o * ni + i) * inner;
                for (int64_t j = 0; j < inner; j++) dst[j] = x[(o * nx + k[j]) * inner + j];
            } else {
                memcpy(dst, x + (o * nx + idx[i]) * inner, (size_t)inner * sizeof(float));
            }
        }
}

void dg__cpu_index_bwd(float *dx, const float *dout, const int32_t *idx, int64_t outer, int64_t nx,
                       int64_t ni, int64_t inner, bool per_element, int64_t skip) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < ni; i++) {
            const float *src = dout + (o * ni + i) * inner;
            if (per_element) {
                const int32_t *k = idx + (o * ni + i) * inner;
                for (int64_t j = 0; j < inner; j++)
                    if (k[j] != skip) dx[(o * nx + k[j]) * inner + j] += src[j];
            } else if (idx[i] != skip) {
                float *dst = dx + (o * nx + idx[i]) * inner;
                for (int64_t j = 0; j < inner; j++) dst[j] += src[j];
            }
        }
}

/* ---- where ---------------------------------------------------------------------------- */

void dg__cpu_mask_from(uint8_t *m, const dg_tensor *cond) {
    int64_t n = dg_numel(cond), idx[DG_MAX_DIMS] = { 0 }, off = 0;
    const int nd = cond->ndim;
    const bool u8 = cond->dtype == DG_U8;
    DG_ASSERT(u8 || cond->dtype == DG_I32);
    for (int64_t i = 0; i < n; i++) {
        m[i] = u8 ? ((const uint8_t *)cond->data)[off] != 0 : ((const int32_t *)cond->data)[off] != 0;
        for (int d = nd - 1; d >= 0; d--) {
            off += cond->stride[d];
            if (++idx[d] < cond->shape[d]) break;
            off -= idx[d] * cond->stride[d];
            idx[d] = 0;
        }
    }
}

void dg__cpu_where(float *out, const uint8_t *m, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = m[i] ? a[i] : b[i];
}

void dg__cpu_where_bwd(float *ga, float *gb, const uint8_t *m, const float *g, int64_t n) {
    if (ga)
        for (int64_t i = 0; i < n; i++) ga[i] = m[i] ? g[i] : 0.0f;
    if (gb)
        for (int64_t i = 0; i < n; i++) gb[i] = m[i] ? 0.0f : g[i];
}

/* ---- LSTM and GRU ---------------------------------------------------------------------- */

static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                 const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    dg_backend_cpu.math.gemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

/* Like pack_padded_sequence, the recurrent products of step t run over the
 * rows still inside their sequence only: act gets their indices (m of
 * them). When some rows are done, their h rows are gathered into a compact
 * block for the GEMM and its rows scattered back, a copy of m * (h + g)
 * floats against the m * g * h multiply-adds it saves. */
static int64_t active_rows(const dg_rnn_bufs *s, int64_t b, int64_t t, int64_t *act) {
    int64_t m = 0;
    for (int64_t r = 0; r < b; r++)
        if (t < s->len[r]) act[m++] = r;
    return m;
}

static void gather_rows(float *dst, const float *src, const int64_t *act, int64_t m, int64_t w) {
    for (int64_t k = 0; k < m; k++) memcpy(dst + k * w, src + act[k] * w, (size_t)w * sizeof(float));
}

static void *scratch(size_t nfloats) {
    void *p = aligned_alloc(64, (nfloats * sizeof(float) + 63) / 64 * 64);
    DG_ASSERT(p != NULL);
    return p;
}

/* Gates in the order of PyTorch: i, f, g, o; the activations run over the
 * whole gate row as vector loops, then the state update. */
DG_HOT static void lstm_cell(const dg_rnn_geom *g, const dg_rnn_bufs *s, int64_t t) {
    const int64_t B = g->b, H = g->h, G = g->g;
    float *gt = s->gates + t * B * G;
    const float *xp = s->xp + t * B * G;
    const float *hp = s->hs + t * B * H, *cp = s->cs + t * B * H;
    float *hc = s->hs + (t + 1) * B * H, *cc = s->cs + (t + 1) * B * H, *y = s->y + t * B * H;
    for (int64_t r = 0; r < B; r++) {
        float *a = gt + r * G;
        if (t >= s->len[r]) {   /* padded: the state stays, the output is 0 */
            memcpy(hc + r * H, hp + r * H, (size_t)H * sizeof(float));
            memcpy(cc + r * H, cp + r * H, (size_t)H * sizeof(float));
            memset(y + r * H, 0, (size_t)H * sizeof(float));
            continue;
        }
        const float *x = xp + r * G;
        if (s->b_hh)
            for (int64_t j = 0; j < G; j++) a[j] = (a[j] + s->b_hh[j]) + x[j];
        else
            for (int64_t j = 0; j < G; j++) a[j] += x[j];
        vsigmoid(a, a, 2 * H);           /* i, f */
        vtanh(a + 2 * H, a + 2 * H, H);  /* g */
        vsigmoid(a + 3 * H, a + 3 * H, H);
        const float *gi = a, *gf = a + H, *gg = a + 2 * H, *go = a + 3 * H;
        const float *c0 = cp + r * H;
        float *c1 = cc + r * H, *h1 = hc + r * H, *yr = y + r * H;
        for (int64_t j = 0; j < H; j++) c1[j] = gf[j] * c0[j] + gi[j] * gg[j];
        vtanh(yr, c1, H);
        for (int64_t j = 0; j < H; j++) {
            yr[j] *= go[j];
            h1[j] = yr[j];
        }
    }
}

/* Gates in the order of PyTorch: r, z, n; n = tanh(x_n + r (h W_hn^T + b_hn)). */
DG_HOT static void gru_cell(const dg_rnn_geom *g, const dg_rnn_bufs *s, int64_t t) {
    const int64_t B = g->b, H = g->h, G = g->g;
    float *gt = s->gates + t * B * G, *hn = s->hhn + t * B * H;
    const float *xp = s->xp + t * B * G;
    const float *hp = s->hs + t * B * H;
    float *hc = s->hs + (t + 1) * B * H, *y = s->y + t * B * H;
    for (int64_t r = 0; r < B; r++) {
        float *a = gt + r * G;
        if (t >= s->len[r]) {
            memcpy(hc + r * H, hp + r * H, (size_t)H * sizeof(float));
            memset(y + r * H, 0, (size_t)H * sizeof(float));
            continue;
        }
        const float *x = xp + r * G;
        float *hnr = hn + r * H;
        if (s->b_hh) {
            for (int64_t j = 0; j < 2 * H; j++) a[j] = (a[j] + s->b_hh[j]) + x[j];
            for (int64_t j = 2 * H; j < G; j++) a[j] += s->b_hh[j];
        } else {
            for (int64_t j = 0; j < 2 * H; j++) a[j] += x[j];
        }
        vsigmoid(a, a, 2 * H);   /* r, z */
        float *gn = a + 2 * H;
        for (int64_t j = 0; j < H; j++) {
            hnr[j] = gn[j];   /* h W_hn^T + b_hn, kept for the backward */
            gn[j] = x[2 * H + j] + a[j] * gn[j];
        }
        vtanh(gn, gn, H);
        const float *z = a + H, *h0 = hp + r * H;
        float *h1 = hc + r * H, *yr = y + r * H;
        for (int64_t j = 0; j < H; j++) {
            float v = (1.0f - z[j]) * gn[j] + z[j] * h0[j];
            h1[j] = v;
            yr[j] = v;
        }
    }
}

void dg__cpu_rnn_fwd(const dg_rnn_geom *g, const dg_rnn_bufs *s) {
    const int64_t B = g->b, H = g->h, G = g->g, T = g->t;
    memcpy(s->hs, s->h0, (size_t)(B * H) * sizeof(float));
    if (!g->gru) memcpy(s->cs, s->c0, (size_t)(B * H) * sizeof(float));
    int64_t *act = malloc((size_t)B * sizeof *act);
    DG_ASSERT(act != NULL);
    float *hb = scratch((size_t)(B * H)), *gb = scratch((size_t)(B * G));
    for (int64_t t = 0; t < T; t++) {
        /* gates = h W_hh^T; the cell adds b_hh, then xp (a GRU keeps the n part apart) */
        float *gt = s->gates + t * B * G;
        const float *ht = s->hs + t * B * H;
        const int64_t m = active_rows(s, B, t, act);
        if (m == B) {
            gemm(false, true, B, G, H, ht, H, s->w_hh, H, 0.0f, gt, G);
        } else if (m > 0) {
            gather_rows(hb, ht, act, m, H);
            gemm(false, true, m, G, H, hb, H, s->w_hh, H, 0.0f, gb, G);
            for (int64_t k = 0; k < m; k++)
                memcpy(gt + act[k] * G, gb + k * G, (size_t)G * sizeof(float));
        }
        if (g->gru) gru_cell(g, s, t);
        else lstm_cell(g, s, t);
    }
    free(act);
    free(hb);
    free(gb);
    for (int64_t r = 0; r < B; r++) {   /* the state after the last step is the last valid one */
        memcpy(s->hn + r * H, s->hs + (T * B + r) * H, (size_t)H * sizeof(float));
        if (!g->gru) memcpy(s->cn + r * H, s->cs + (T * B + r) * H, (size_t)H * sizeof(float));
    }
}

/* One step back. dh, dc [b, h]: the gradient reaching the state after step
 * t (dy already added); writes dxp_t and dhh_t [b, g] (the gradient of
 * h W_hh^T + b_hh; for an LSTM the same buffer as dxp_t), then updates dc
 * to the gradient before the step. dh is updated by the caller. */
DG_HOT static void lstm_cell_bwd(const dg_rnn_geom *g, const dg_rnn_bufs *s, int64_t t,
                                 const float *dh, float *dc, float *dxp) {
    const int64_t B = g->b, H = g->h, G = g->g;
    const float *gt = s->gates + t * B * G, *cp = s->cs + t * B * H, *cc = s->cs + (t + 1) * B * H;
    enum { CHUNK = 256 };
    float tc[CHUNK];   /* tanh(c_t), recomputed a chunk at a time */
    for (int64_t r = 0; r < B; r++) {
        float *d = dxp + r * G;
        if (t >= s->len[r]) {
            memset(d, 0, (size_t)G * sizeof(float));
            continue;
        }
        const float *a = gt + r * G;
        for (int64_t j0 = 0; j0 < H; j0 += CHUNK) {
            const int64_t m = H - j0 < CHUNK ? H - j0 : CHUNK;
            vtanh(tc, cc + r * H + j0, m);
            for (int64_t k = 0; k < m; k++) {
                const int64_t j = j0 + k;
                float i = a[j], f = a[H + j], gg = a[2 * H + j], o = a[3 * H + j];
                float gh = dh[r * H + j];
                float gc = dc[r * H + j] + gh * o * (1.0f - tc[k] * tc[k]);
                d[j] = gc * gg * i * (1.0f - i);
                d[H + j] = gc * cp[r * H + j] * f * (1.0f - f);
                d[2 * H + j] = gc * i * (1.0f - gg * gg);
                d[3 * H + j] = gh * tc[k] * o * (1.0f - o);
                dc[r * H + j] = gc * f;
            }
        }
    }
}

DG_HOT static void gru_cell_bwd(const dg_rnn_geom *g, const dg_rnn_bufs *s, int64_t t,
                                const float *dh, float *dxp, float *dhh, float *dhhn) {
    const int64_t B = g->b, H = g->h, G = g->g;
    const float *gt = s->gates + t * B * G, *hp = s->hs + t * B * H, *hn = s->hhn + t * B * H;
    for (int64_t r = 0; r < B; r++) {
        float *d = dxp + r * G, *e = dhh + r * G, *en = dhhn + r * H;
        if (t >= s->len[r]) {
            memset(d, 0, (size_t)G * sizeof(float));
            memset(e, 0, (size_t)G * sizeof(float));
            memset(en, 0, (size_t)H * sizeof(float));
            continue;
        }
        const float *a = gt + r * G;
        for (int64_t j = 0; j < H; j++) {
            float rr = a[j], z = a[H + j], n = a[2 * H + j], gh = dh[r * H + j];
            float an = gh * (1.0f - z) * (1.0f - n * n);
            float ar = an * hn[r * H + j] * rr * (1.0f - rr);
            float az = gh * (hp[r * H + j] - n) * z * (1.0f - z);
            d[j] = e[j] = ar;
            d[H + j] = e[H + j] = az;
            d[2 * H + j] = an;
            e[2 * H + j] = en[j] = an * rr;
        }
    }
}

void dg__cpu_rnn_bwd(const dg_rnn_geom *g, const dg_rnn_bufs *s, const float *dy, const float *dhn,
                     const float *dcn, float *dxp, float *dw_hh, bool acc_w, float *db_hh,
                     bool acc_b, float *dh0, float *dc0, float *work) {
    const int64_t B = g->b, H = g->h, G = g->g, T = g->t, BH = B * H;
    float *dh = work, *dc = work + BH, *dhp = work + 2 * BH, *dhh = work + 3 * BH;
    float *dhhn = dhh + B * G;   /* GRU: [t, b, h] */
    int64_t *act = malloc((size_t)B * sizeof *act), n_act = 0;
    DG_ASSERT(act != NULL);
    float *eb = scratch((size_t)(B * G));
    if (dhn) memcpy(dh, dhn, (size_t)BH * sizeof(float));
    else memset(dh, 0, (size_t)BH * sizeof(float));
    if (dcn) memcpy(dc, dcn, (size_t)BH * sizeof(float));
    else memset(dc, 0, (size_t)BH * sizeof(float));
    for (int64_t t = T - 1; t >= 0; t--) {
        if (dy) {   /* the output at a padded step is a constant 0 */
            const float *yt = dy + t * BH;
            for (int64_t r = 0; r < B; r++)
                if (t < s->len[r])
                    for (int64_t j = 0; j < H; j++) dh[r * H + j] += yt[r * H + j];
        }
        float *dxt = dxp + t * B * G, *e = dxt;
        if (g->gru) {
            e = dhh;
            gru_cell_bwd(g, s, t, dh, dxt, dhh, dhhn + t * BH);
        } else {
            lstm_cell_bwd(g, s, t, dh, dc, dxt);
        }
        /* d h_{t-1} via W_hh, for the rows inside their sequence (row k of
         * dhp is row act[k]); the others' dh passes through */
        const int64_t m = active_rows(s, B, t, act);
        if (m == B) {
            gemm(false, false, B, H, G, e, G, s->w_hh, H, 0.0f, dhp, H);
        } else if (m > 0) {
            gather_rows(eb, e, act, m, G);
            gemm(false, false, m, H, G, eb, G, s->w_hh, H, 0.0f, dhp, H);
        }
        const float *z = s->gates + t * B * G + H;
        for (int64_t k = 0; k < m; k++) {
            const int64_t r = act[k];
            for (int64_t j = 0; j < H; j++)
                dh[r * H + j] = dhp[k * H + j] + (g->gru ? dh[r * H + j] * z[r * G + j] : 0.0f);
        }
        n_act += m;
    }
    if (dh0) memcpy(dh0, dh, (size_t)BH * sizeof(float));
    if (dc0 && !g->gru) memcpy(dc0, dc, (size_t)BH * sizeof(float));
    /* dW_hh = sum_t dhh_t^T h_{t-1}, db_hh = sum of dhh rows: one GEMM over all
     * steps (padded rows of dhh are 0) */
    const int64_t TB = T * B;
    if (dw_hh) {
        /* the padded rows' zeros left out when they are many enough to pay
         * for the copy into compact blocks */
        const float *d = dxp, *dn = dhhn, *hp = s->hs;
        float *pd = NULL, *pn = NULL, *ph = NULL;
        int64_t rows = TB;
        if (n_act < TB - TB / 16) {
            pd = scratch((size_t)(n_act * G));
            ph = scratch((size_t)(n_act * H));
            if (g->gru) pn = scratch((size_t)(n_act * H));
            int64_t k = 0;
            for (int64_t t = 0; t < T; t++) {
                const int64_t m = active_rows(s, B, t, act);
                gather_rows(pd + k * G, dxp + t * B * G, act, m, G);
                gather_rows(ph + k * H, s->hs + t * BH, act, m, H);
                if (pn) gather_rows(pn + k * H, dhhn + t * BH, act, m, H);
                k += m;
            }
            DG_ASSERT(k == n_act);
            d = pd, dn = pn, hp = ph, rows = n_act;
        }
        if (g->gru) {
            gemm(true, false, 2 * H, H, rows, d, G, hp, H, acc_w ? 1.0f : 0.0f, dw_hh, H);
            gemm(true, false, H, H, rows, dn, H, hp, H, acc_w ? 1.0f : 0.0f, dw_hh + 2 * H * H, H);
        } else {
            gemm(true, false, G, H, rows, d, G, hp, H, acc_w ? 1.0f : 0.0f, dw_hh, H);
        }
        free(pd);
        free(pn);
        free(ph);
    }
    free(act);
    free(eb);
    if (db_hh) {
        if (!acc_b) memset(db_hh, 0, (size_t)G * sizeof(float));
        const int64_t gz = g->gru ? 2 * H : G;
        for (int64_t r = 0; r < TB; r++) {
            const float *d = dxp + r * G;
            for (int64_t j = 0; j < gz; j++) db_hh[j] += d[j];
            if (g->gru)
                for (int64_t j = 0; j < H; j++) db_hh[2 * H + j] += dhhn[r * H + j];
        }
    }
}
