/* backend_cpu.c - the CPU backend: OpenBLAS for matrix products, plain C
 * loops (written for auto-vectorization) for the rest. */
#include "impl.h"
#include "gemm_cpu.h"
#include "vmath.h"
#include "gemm_bf16.h"
#include "conv_cpu.h"
#include "seq_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

/* ---- memory ---------------------------------------------------------------- */

static void *cpu_alloc(size_t n) {
    return aligned_alloc(64, (n + 63) / 64 * 64);
}
static void cpu_free(void *p) { free(p); }
static void cpu_memcpy(void *dst, const void *src, size_t n) {
    if (n) memcpy(dst, src, n);
}
static void cpu_memset0(void *dst, size_t n) {
    if (n) memset(dst, 0, n);
}
static void cpu_fill(float *dst, int64_t n, float v) {
    for (int64_t i = 0; i < n; i++) dst[i] = v;
}
static void cpu_sync(void) {}

/* ---- elementwise ------------------------------------------------------------- */

/* Merge adjacent dims that are contiguous with each other in all three
 * views, to make the inner loop as long as possible. */
static int collapse(const dg_tensor *o, const dg_tensor *a, const dg_tensor *b, int64_t *shape,
                    int64_t *so, int64_t *sa, int64_t *sb) {
    int nd = 0;
    for (int d = 0; d < o->ndim; d++) {
        if (o->shape[d] == 1) continue;
        if (nd > 0 && so[nd - 1] == o->stride[d] * o->shape[d] &&
            sa[nd - 1] == a->stride[d] * o->shape[d] && sb[nd - 1] == b->stride[d] * o->shape[d]) {
            shape[nd - 1] *= o->shape[d];
            so[nd - 1] = o->stride[d];
            sa[nd - 1] = a->stride[d];
            sb[nd - 1] = b->stride[d];
            continue;
        }
        shape[nd] = o->shape[d];
        so[nd] = o->stride[d];
        sa[nd] = a->stride[d];
        sb[nd] = b->stride[d];
        nd++;
    }
    if (nd == 0) {
        shape[0] = 1;
        so[0] = sa[0] = sb[0] = 1;
        nd = 1;
    }
    return nd;
}

#define BIN_LOOP(EXPR)                                                              \
    do {                                                                            \
        if (acc) {                                                                  \
            for (int64_t i = 0; i < n; i++) {                                       \
                float x = pa[i * sa], y = pb[i * sb];                               \
                (void)y;                                                            \
                po[i * so] += alpha * (EXPR);                                       \
            }                                                                       \
        } else if (sa == 1 && sb == 1 && so == 1) {                                 \
            for (int64_t i = 0; i < n; i++) {                                       \
                float x = pa[i], y = pb[i];                                         \
                (void)y;                                                            \
                po[i] = alpha * (EXPR);                                             \
            }                                                                       \
        } else {                                                                    \
            for (int64_t i = 0; i < n; i++) {                                       \
                float x = pa[i * sa], y = pb[i * sb];                               \
                (void)y;                                                            \
                po[i * so] = alpha * (EXPR);                                        \
            }                                                                       \
        }                                                                           \
    } while (0)

DG_HOT static void bin_row(dg_binop op, float *po, const float *pa, const float *pb, int64_t n,
                    int64_t so, int64_t sa, int64_t sb, float alpha, bool acc) {
    switch (op) {
    case DG_BIN_ADD: BIN_LOOP(x + y); break;
    case DG_BIN_SUB: BIN_LOOP(x - y); break;
    case DG_BIN_MUL: BIN_LOOP(x * y); break;
    case DG_BIN_DIV: BIN_LOOP(x / y); break;
    case DG_BIN_COPY: BIN_LOOP(x); break;
    case DG_BIN_RELU_BWD: BIN_LOOP(y <= 0.0f ? 0.0f : x); break;   /* y NaN: x, as PyTorch */
    }
}

static void cpu_binary(dg_binop op, const dg_tensor *out, const dg_tensor *a, const dg_tensor *b,
                       float alpha, bool acc) {
    int64_t shape[DG_MAX_DIMS], so[DG_MAX_DIMS], sa[DG_MAX_DIMS], sb[DG_MAX_DIMS];
    if (op == DG_BIN_COPY) b = a;
    int nd = collapse(out, a, b, shape, so, sa, sb);
    for (int d = 0; d < out->ndim; d++)
        if (out->shape[d] == 0) return;
    int64_t rows = 1;
    for (int d = 0; d < nd - 1; d++) rows *= shape[d];
    int64_t idx[DG_MAX_DIMS] = { 0 };
    float *po = out->data;
    const float *pa = a->data, *pb = b->data;
    for (int64_t r = 0; r < rows; r++) {
        int64_t oo = 0, oa = 0, ob = 0;
        for (int d = 0; d < nd - 1; d++) {
            oo += idx[d] * so[d];
            oa += idx[d] * sa[d];
            ob += idx[d] * sb[d];
        }
        bin_row(op, po + oo, pa + oa, pb + ob, shape[nd - 1], so[nd - 1], sa[nd - 1], sb[nd - 1],
                alpha, acc);
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < shape[d]) break;
            idx[d] = 0;
        }
    }
}

DG_HOT static void cpu_unary(dg_unop op, float *out, const float *a, int64_t n, float alpha) {
    switch (op) {
    case DG_UN_RELU:
        for (int64_t i = 0; i < n; i++) out[i] = a[i] < 0.0f ? 0.0f : a[i];   /* NaN, -0 stay */
        break;
    case DG_UN_EXP:
        for (int64_t i = 0; i < n; i++) out[i] = expf(a[i]);
        break;
    case DG_UN_LOG:
        for (int64_t i = 0; i < n; i++) out[i] = logf(a[i]);
        break;
    case DG_UN_SCALE:
        for (int64_t i = 0; i < n; i++) out[i] = alpha * a[i];
        break;
    case DG_UN_ADD_SCALAR:
        for (int64_t i = 0; i < n; i++) out[i] = a[i] + alpha;
        break;
    }
}

/* ---- BLAS ---------------------------------------------------------------------- */

/* Small products (the MLP's) go to dgrad's own kernels (gemm_cpu.c, one
 * thread), the rest to OpenBLAS (dg_set_num_threads applies to it only). */
static void cpu_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                     float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    if (dg_gemm_small_fits(m, n, k)) {
        dg_gemm_small(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c,
                (blasint)ldc);
}

/* Our kernel adds the bias in its last step; for OpenBLAS's sizes the
 * bias goes into C first. */
static void cpu_gemm_bias(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                          const float *a, int64_t lda, const float *b, int64_t ldb,
                          const float *bias, float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    if (k > 0 && !dg_gemm_small_fits(m, n, k)) {
        for (int64_t i = 0; i < m; i++) memcpy(c + i * ldc, bias, sizeof(float) * (size_t)n);
        cpu_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, 1.0f, c, ldc);
        return;
    }
    dg_gemm_small_bias(ta, tb, m, n, k, alpha, a, lda, b, ldb, bias, c, ldc);
}

/* ---- reductions ----------------------------------------------------------------- */

DG_HOT static void cpu_reduce_sum(float *out, const float *in, int64_t outer, int64_t red, int64_t inner,
                           float scale, bool acc) {
    for (int64_t o = 0; o < outer; o++) {
        const float *src = in + o * red * inner;
        float *dst = out + o * inner;
        if (inner == 1) {
            double s = 0.0;
            for (int64_t r = 0; r < red; r++) s += src[r];
            dst[0] = acc ? dst[0] + scale * (float)s : scale * (float)s;
            continue;
        }
        if (!acc && scale == 1.0f && red > 0) {
            memcpy(dst, src, (size_t)inner * sizeof(float));
            for (int64_t r = 1; r < red; r++)
                for (int64_t i = 0; i < inner; i++) dst[i] += src[r * inner + i];
            continue;
        }
        /* general: sum the rows into a chunk of columns (row after row, so
         * the reads are contiguous; each column's sum runs in the same order
         * as one column at a time would), then scale into dst */
        enum { CHUNK = 512 };
        float s[CHUNK];
        for (int64_t i0 = 0; i0 < inner; i0 += CHUNK) {
            const int64_t m = inner - i0 < CHUNK ? inner - i0 : CHUNK;
            for (int64_t i = 0; i < m; i++) s[i] = 0.0f;
            for (int64_t r = 0; r < red; r++) {
                const float *row = src + r * inner + i0;
                for (int64_t i = 0; i < m; i++) s[i] += row[i];
            }
            float *d = dst + i0;
            if (acc)
                for (int64_t i = 0; i < m; i++) d[i] += scale * s[i];
            else
                for (int64_t i = 0; i < m; i++) d[i] = scale * s[i];
        }
    }
}

/* ---- softmax ---------------------------------------------------------------------- */

/* A contiguous row: the max and the sum in 16 lanes (so that they
 * vectorize without reassociation flags), the exponentials from vmath.h,
 * stored on the way for softmax. */
DG_HOT static void softmax_row(float *y, const float *x, int64_t d, bool log) {
    enum { L = 16 };
    float lane[L];
    for (int i = 0; i < L; i++) lane[i] = -INFINITY;
    int64_t k = 0;
    for (; k + L <= d; k += L)
        for (int i = 0; i < L; i++) lane[i] = x[k + i] > lane[i] ? x[k + i] : lane[i];
    float mx = -INFINITY;
    for (int i = 0; i < L; i++) mx = fmaxf(mx, lane[i]);
    for (; k < d; k++) mx = fmaxf(mx, x[k]);
    for (int i = 0; i < L; i++) lane[i] = 0.0f;
    k = 0;
    if (log) {
        for (; k + L <= d; k += L)
            for (int i = 0; i < L; i++) lane[i] += dg__vexp(x[k + i] - mx);
    } else {
        for (; k + L <= d; k += L)
            for (int i = 0; i < L; i++) lane[i] += y[k + i] = dg__vexp(x[k + i] - mx);
    }
    float s = 0.0f;
    for (int i = 0; i < L; i++) s += lane[i];
    for (; k < d; k++) {
        float e = dg__vexp(x[k] - mx);
        if (!log) y[k] = e;
        s += e;
    }
    if (log) {
        float sub = mx + logf(s);
        for (k = 0; k < d; k++) y[k] = x[k] - sub;
    } else {
        float inv = 1.0f / s;
        for (k = 0; k < d; k++) y[k] *= inv;
    }
}

DG_HOT static void cpu_softmax(float *out, const float *in, int64_t outer, int64_t d, int64_t inner, bool log) {
    if (inner == 1) {
        for (int64_t o = 0; o < outer; o++) softmax_row(out + o * d, in + o * d, d, log);
        return;
    }
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t j = 0; j < inner; j++) {
            const float *x = in + o * d * inner + j;
            float *y = out + o * d * inner + j;
            float mx = -INFINITY;
            for (int64_t k = 0; k < d; k++) mx = fmaxf(mx, x[k * inner]);
            float s = 0.0f;
            for (int64_t k = 0; k < d; k++) s += dg__vexp(x[k * inner] - mx);
            if (log) {
                float ls = logf(s);
                for (int64_t k = 0; k < d; k++) y[k * inner] = x[k * inner] - mx - ls;
            } else {
                float inv = 1.0f / s;
                for (int64_t k = 0; k < d; k++) y[k * inner] = dg__vexp(x[k * inner] - mx) * inv;
            }
        }
    }
}

DG_HOT static void cpu_softmax_bwd(float *gin, const float *gout, const float *y, int64_t outer, int64_t d,
                            int64_t inner, bool log, bool acc) {
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t j = 0; j < inner; j++) {
            int64_t base = o * d * inner + j;
            float s = 0.0f;
            if (log) {   /* gin = g - exp(y) * sum(g) */
                for (int64_t k = 0; k < d; k++) s += gout[base + k * inner];
                for (int64_t k = 0; k < d; k++) {
                    int64_t i = base + k * inner;
                    float v = gout[i] - expf(y[i]) * s;
                    gin[i] = acc ? gin[i] + v : v;
                }
            } else {     /* gin = y * (g - sum(g * y)) */
                for (int64_t k = 0; k < d; k++) s += gout[base + k * inner] * y[base + k * inner];
                for (int64_t k = 0; k < d; k++) {
                    int64_t i = base + k * inner;
                    float v = y[i] * (gout[i] - s);
                    gin[i] = acc ? gin[i] + v : v;
                }
            }
        }
    }
}

/* The check is free here: known_valid is not needed. */
DG_HOT static int64_t cpu_cross_entropy(float *loss, float *count, float *lse, const float *logits,
                                        const int32_t *target, int64_t n, int64_t c,
                                        int ignore_index, bool known_valid) {
    (void)known_valid;
    double total = 0.0;
    int64_t cnt = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t t = target[i];
        if (t == ignore_index) {
            lse[i] = 0.0f;
            continue;
        }
        if (t < 0 || t >= c) return i;
        const float *x = logits + i * c;
        float mx = -INFINITY;
        for (int64_t k = 0; k < c; k++) mx = fmaxf(mx, x[k]);
        float s = 0.0f;
        for (int64_t k = 0; k < c; k++) s += expf(x[k] - mx);
        lse[i] = mx + logf(s);
        total += (double)(lse[i] - x[t]);
        cnt++;
    }
    count[0] = (float)cnt;
    loss[0] = (float)(total / (double)cnt);   /* 0/0 = nan, as in PyTorch */
    return -1;
}

DG_HOT static void cpu_cross_entropy_bwd(float *dlogits, const float *gout, const float *count,
                                  const float *lse, const float *logits, const int32_t *target,
                                  int64_t n, int64_t c, int ignore_index, bool acc) {
    float scale = gout[0] / count[0];
    for (int64_t i = 0; i < n; i++) {
        float *g = dlogits + i * c;
        const float *x = logits + i * c;
        int32_t t = target[i];
        if (t == ignore_index) {
            if (!acc) memset(g, 0, (size_t)c * sizeof(float));
            continue;
        }
        for (int64_t k = 0; k < c; k++) {
            float v = scale * (expf(x[k] - lse[i]) - (k == t ? 1.0f : 0.0f));
            g[k] = acc ? g[k] + v : v;
        }
    }
}

static void cpu_argmax(int32_t *out, const float *in, int64_t outer, int64_t d, int64_t inner) {
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t j = 0; j < inner; j++) {
            const float *x = in + o * d * inner + j;
            int64_t best = 0;
            for (int64_t k = 1; k < d; k++)
                if (x[k * inner] > x[best * inner] || (isnan(x[k * inner]) && !isnan(x[best * inner])))
                    best = k;
            out[o * inner + j] = (int32_t)best;
        }
    }
}

/* ---- optimizers (torch.optim 1.13, single-tensor formulas) ------------------------- */

DG_HOT static void cpu_sgd_step(float *p, const float *g, float *buf, int64_t n, float lr, float momentum,
                         float dampening, float weight_decay, bool nesterov, bool first_step) {
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (weight_decay != 0.0f) d = d + weight_decay * p[i];
        if (momentum != 0.0f) {
            float b = first_step ? d : buf[i] * momentum + (1.0f - dampening) * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[i] = p[i] + (-lr) * d;
    }
}

/* Adam's moment updates for elements [0, n); returns nothing, writes m, v.
 * Split from the parameter update so that both loops vectorize. */
DG_HOT static void cpu_adam_step(float *restrict p, const float *restrict g, float *restrict m,
                                 float *restrict v, float *restrict vmax, int64_t n, float lr,
                                 float beta1, float beta2, float eps, float weight_decay,
                                 bool decoupled, double step_size, double bc2_sqrt) {
    const float omb1 = (float)(1.0 - (double)beta1), omb2 = (float)(1.0 - (double)beta2);
    const float ss = (float)(-step_size), bc2 = (float)bc2_sqrt;
    const float decay = (float)(1.0 - (double)lr * (double)weight_decay);
    const float l2 = decoupled ? 0.0f : weight_decay;
    if (decoupled && weight_decay != 0.0f)
        for (int64_t i = 0; i < n; i++) p[i] = p[i] * decay;
    if (l2 != 0.0f) {
        for (int64_t i = 0; i < n; i++) {
            float grad = g[i] + l2 * p[i];
            m[i] = m[i] * beta1 + grad * omb1;
            v[i] = v[i] * beta2 + omb2 * grad * grad;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float grad = g[i];
            m[i] = m[i] * beta1 + grad * omb1;
            v[i] = v[i] * beta2 + omb2 * grad * grad;
        }
    }
    if (vmax) {
        for (int64_t i = 0; i < n; i++) {
            vmax[i] = vmax[i] > v[i] ? vmax[i] : v[i];
            p[i] = p[i] + ss * (m[i] / (sqrtf(vmax[i]) / bc2 + eps));
        }
    } else {
        for (int64_t i = 0; i < n; i++) p[i] = p[i] + ss * (m[i] / (sqrtf(v[i]) / bc2 + eps));
    }
}

const dg_backend dg_backend_cpu = {
    .name = "cpu",
    .device = DG_CPU,
    .mem = {
        .alloc = cpu_alloc,
        .free = cpu_free,
        .to_host = cpu_memcpy,
        .from_host = cpu_memcpy,
        .copy = cpu_memcpy,
        .memset0 = cpu_memset0,
        .fill = cpu_fill,
        .synchronize = cpu_sync,
    },
    .math = {
        .binary = cpu_binary,
        .unary = cpu_unary,
        .gemm = cpu_gemm,
        .gemm_bias = cpu_gemm_bias,
        .reduce_sum = cpu_reduce_sum,
        .softmax = cpu_softmax,
        .softmax_bwd = cpu_softmax_bwd,
        .cross_entropy = cpu_cross_entropy,
        .cross_entropy_bwd = cpu_cross_entropy_bwd,
        .argmax = cpu_argmax,
    },
    .optim = {
        .sgd_step = cpu_sgd_step,
        .adam_step = cpu_adam_step,
    },
    .cnn = {
        .im2col = dg__cpu_im2col,
        .col2im = dg__cpu_col2im,
        .maxpool_fwd = dg__cpu_maxpool_fwd,
        .maxpool_bwd = dg__cpu_maxpool_bwd,
        .avgpool_fwd = dg__cpu_avgpool_fwd,
        .avgpool_bwd = dg__cpu_avgpool_bwd,
        .dropout_mask = dg__cpu_dropout_mask,
        .bn_stats = dg__cpu_bn_stats,
        .bn_fwd = dg__cpu_bn_fwd,
        .bn_stats_fwd = dg__cpu_bn_stats_fwd,
        .bn_pool_fwd = dg__cpu_bn_pool_fwd,
        .bn_pool_bwd = dg__cpu_bn_pool_bwd,
        .bn_bwd = dg__cpu_bn_bwd,
    },
    .seq = {
        .act_fwd = dg__cpu_act_fwd,
        .act_bwd = dg__cpu_act_bwd,
        .layer_norm_fwd = dg__cpu_layer_norm_fwd,
        .layer_norm_bwd = dg__cpu_layer_norm_bwd,
        .index_fwd = dg__cpu_index_fwd,
        .index_bwd = dg__cpu_index_bwd,
        .mask_from = dg__cpu_mask_from,
        .where = dg__cpu_where,
        .where_bwd = dg__cpu_where_bwd,
        .rnn_fwd = dg__cpu_rnn_fwd,
        .rnn_bwd = dg__cpu_rnn_bwd,
        .attn_fwd = dg__cpu_attn_fwd,
        .attn_bwd = dg__cpu_attn_bwd,
    },
    .lowp = {
        .f32_to_bf16 = dg__cpu_f32_to_bf16,
        .bf16_to_f32 = dg__cpu_bf16_to_f32,
        .gemm_bf16 = dg__cpu_gemm_bf16,
    },
};
