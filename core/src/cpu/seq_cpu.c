/* seq_cpu.c - CPU kernels for sequences and attention (the seq slots of
 * backend-impl.h): activations, layer norm, index picking, where, and the
 * LSTM / GRU recurrences (one GEMM per step for the whole batch, then the
 * cell, with per-sample lengths). */
#include "seq_cpu.h"
#include "vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    case DG_ACT_GELU:
        for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + dg__verf(x[i] * DG_INV_SQRT2));
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
    case DG_ACT_GELU:   /* Phi(x) + x phi(x) */
        DG_ACT_BWD_LOOP(0.5f * (1.0f + dg__verf(x[i] * DG_INV_SQRT2)) +
                        x[i] * DG_INV_SQRT_2PI * dg__vexp(-0.5f * x[i] * x[i]));
        break;
    }
}
#undef DG_ACT_BWD_LOOP

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

void dg__cpu_layer_norm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *mean, const float *rstd, const float *w, int64_t rows,
                            int64_t d, bool acc_dx, bool acc_dw, bool acc_db) {
    if (dw && !acc_dw) memset(dw, 0, (size_t)d * sizeof(float));
    if (db && !acc_db) memset(db, 0, (size_t)d * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d, *gr = dy + r * d;
        float mu = mean[r], rs = rstd[r];
        double s1 = 0.0, s2 = 0.0;   /* mean of dxhat and of dxhat * xhat */
        for (int64_t j = 0; j < d; j++) {
            float xh = (xr[j] - mu) * rs, g = gr[j] * (w ? w[j] : 1.0f);
            s1 += g;
            s2 += (double)g * xh;
            if (dw) dw[j] += gr[j] * xh;
            if (db) db[j] += gr[j];
        }
        if (!dx) continue;
        float m1 = (float)(s1 / (double)d), m2 = (float)(s2 / (double)d);
        float *dr = dx + r * d;
        for (int64_t j = 0; j < d; j++) {
            float xh = (xr[j] - mu) * rs, g = gr[j] * (w ? w[j] : 1.0f);
            float v = rs * (g - m1 - xh * m2);
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
