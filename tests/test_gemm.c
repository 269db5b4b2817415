/* test_gemm.c - dg_gemm_small (core/src/gemm_cpu.c) against a naive
 * double-precision product, for every kernel family this CPU can run (the
 * AVX-512, AVX2 and baseline kernels on an AVX-512 machine).
 *
 * Each case has strides larger than the minimum, with NaN in the padding
 * of A and B (it must not leak into C) and a sentinel in the padding of C
 * (it must not be written). Buffers are exactly as long as the matrices
 * need, so ASan builds catch reads past their ends. beta == 0 runs on C
 * filled with NaN (C must not be read). Tolerance: the rounding bound of a
 * k-term float sum, |c - ref| <= 2 (k + 2) 2^-24 (|alpha| sum_p |a b| +
 * |beta c0|).
 */
#include "test_util.h"

#include "gemm_cpu.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void) {   /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

static float rnd_float(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; }

static const float SENTINEL = 12345.0f;

/* A rows x cols matrix with row stride ld >= cols: values in [-1, 1),
 * padding `pad`. Exactly (rows - 1) * ld + cols floats long. */
static float *make_matrix(int64_t rows, int64_t cols, int64_t ld, float pad) {
    size_t len = rows ? (size_t)((rows - 1) * ld + cols) : 0;
    float *x = malloc(sizeof(float) * (len ? len : 1));
    if (!x) abort();
    for (size_t i = 0; i < len; i++) x[i] = (int64_t)i % ld < cols ? rnd_float() : pad;
    return x;
}

static const char *dg_isa_name(dg_gemm_isa isa) {
    switch (isa) {
    case DG_GEMM_ISA_BASE: return "base";
    case DG_GEMM_ISA_AVX2: return "avx2";
    case DG_GEMM_ISA_AVX512: return "avx512";
    }
    return "?";
}

static int64_t ncases;

/* One product with kernel family isa and the given strides. Skips silently
 * when the family is not available. */
static void check_case_ld(dg_gemm_isa isa, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                          float alpha, float beta, int64_t lda, int64_t ldb, int64_t ldc) {
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    float *a = make_matrix(ar, ac, lda, NAN), *b = make_matrix(br, bc, ldb, NAN);
    float *c = make_matrix(m, n, ldc, SENTINEL);
    size_t clen = (size_t)((m - 1) * ldc + n);
    if (beta == 0.0f)
        for (size_t i = 0; i < clen; i++)
            if ((int64_t)i % ldc < n) c[i] = NAN;
    float *c0 = malloc(sizeof(float) * clen);
    if (!c0) abort();
    memcpy(c0, c, sizeof(float) * clen);

    if (!dg_gemm_small_with(isa, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) {
        free(a), free(b), free(c), free(c0);
        return;
    }
    ncases++;
    char what[160];
    snprintf(what, sizeof what,
             "%s %c%c m=%lld n=%lld k=%lld lda=%lld ldb=%lld ldc=%lld alpha=%g beta=%g",
             dg_isa_name(isa), ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)m, (long long)n,
             (long long)k, (long long)lda, (long long)ldb, (long long)ldc, alpha, beta);
    int bad = 0;
    for (int64_t i = 0; i < m && bad < 3; i++) {
        for (int64_t j = 0; j < ldc && (i + 1 < m || j < n) && bad < 3; j++) {
            float got = c[i * ldc + j];
            if (j >= n) {   /* padding */
                if (got != SENTINEL) {
                    dgt_fail(__FILE__, __LINE__, "%s: padding C[%lld][%lld] written: %g", what,
                             (long long)i, (long long)j, got);
                    bad++;
                }
                continue;
            }
            double s = 0.0, mag = 0.0;
            for (int64_t p = 0; p < k; p++) {
                double x = ta ? a[p * lda + i] : a[i * lda + p];
                double y = tb ? b[j * ldb + p] : b[p * ldb + j];
                s += x * y;
                mag += fabs(x * y);
            }
            double ref = alpha * s, bound = fabs((double)alpha) * mag;
            if (beta != 0.0f) {
                ref += (double)beta * c0[i * ldc + j];
                bound += fabs((double)beta * c0[i * ldc + j]);
            }
            bound *= 2.0 * (double)(k + 2) * 0x1p-24;
            if (!(fabs(got - ref) <= bound)) {
                dgt_fail(__FILE__, __LINE__, "%s: C[%lld][%lld] = %.9g, want %.9g (tolerance %.3g)",
                         what, (long long)i, (long long)j, got, ref, bound);
                bad++;
            }
        }
    }
    free(a), free(b), free(c), free(c0);
}

/* dg_gemm_small_bias against dg_gemm_small with beta 1 over a C that
 * holds the bias in every row: the same bits, C's old values (NaN) and
 * its padding untouched. */
static void check_bias_ld(dg_gemm_isa isa, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                          float alpha, int64_t lda, int64_t ldb, int64_t ldc) {
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    float *a = make_matrix(ar, ac, lda, NAN), *b = make_matrix(br, bc, ldb, NAN);
    float *bias = make_matrix(1, n, n, 0.0f);
    float *want = make_matrix(m, n, ldc, SENTINEL), *got = make_matrix(m, n, ldc, SENTINEL);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            want[i * ldc + j] = bias[j];
            got[i * ldc + j] = NAN;   /* not read */
        }
    if (dg_gemm_small_bias_with(isa, ta, tb, m, n, k, alpha, a, lda, b, ldb, bias, got, ldc)) {
        dg_gemm_small_with(isa, ta, tb, m, n, k, alpha, a, lda, b, ldb, 1.0f, want, ldc);
        ncases++;
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < (m - 1) * ldc + n; i++)
            if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
                if (first < 0) first = i;
                bad++;
            }
        CHECKF(bad == 0, "bias %s %c%c m=%lld n=%lld k=%lld ldc=%lld: %lld values differ, first [%lld] %g, want %g",
               dg_isa_name(isa), ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)m, (long long)n,
               (long long)k, (long long)ldc, (long long)bad, (long long)first,
               first >= 0 ? (double)got[first] : 0.0, first >= 0 ? (double)want[first] : 0.0);
    }
    free(a), free(b), free(bias), free(want), free(got);
}

/* check_case_ld with each stride padded by about `extra`. */
static void check_case(dg_gemm_isa isa, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                       float alpha, float beta, int64_t extra) {
    int64_t lda = (ta ? m : k) + extra, ldb = (tb ? k : n) + (extra ? extra + 3 : 0);
    check_case_ld(isa, ta, tb, m, n, k, alpha, beta, lda, ldb, n + (extra ? 2 * extra + 1 : 0));
    if (beta == 1.0f || beta == 0.5f)
        check_bias_ld(isa, ta, tb, m, n, k, alpha, lda, ldb, n + (extra ? 2 * extra + 1 : 0));
}

/* All transposes, a few alpha/beta and strides (odd s: padded), every
 * kernel family. Large shapes take the last two only, to save time. */
static void check_shape(int64_t m, int64_t n, int64_t k) {
    static const float ab[][2] = { { 1.0f, 0.0f }, { 1.0f, 1.0f }, { -0.75f, 0.5f },
                                   { 2.5f, 0.0f } };
    for (int isa = DG_GEMM_ISA_BASE; isa <= DG_GEMM_ISA_AVX512; isa++)
        for (int t = 0; t < 4; t++)
            for (int s = m * n * k > 500000 ? 2 : 0; s < 4; s++)
                check_case((dg_gemm_isa)isa, t & 1, t & 2, m, n, k, ab[s][0], ab[s][1],
                           s & 1 ? 5 : 0);
}

/* k == 0 and alpha == 0: C = beta C, A and B unread (they are NaN here). */
static void check_no_product(void) {
    float a[12], b[12], c[6];
    for (int i = 0; i < 12; i++) a[i] = b[i] = NAN;
    for (int i = 0; i < 6; i++) c[i] = (float)i;
    dg_gemm_small(false, false, 2, 3, 0, 1.0f, a, 1, b, 3, 0.5f, c, 3);
    for (int i = 0; i < 6; i++) CHECKF(c[i] == 0.5f * (float)i, "k=0: c[%d] = %g", i, c[i]);
    dg_gemm_small(false, false, 2, 3, 4, 0.0f, a, 4, b, 3, 2.0f, c, 3);
    for (int i = 0; i < 6; i++) CHECKF(c[i] == (float)i, "alpha=0: c[%d] = %g", i, c[i]);
    for (int i = 0; i < 6; i++) c[i] = NAN;
    dg_gemm_small(true, true, 2, 3, 4, 0.0f, a, 2, b, 4, 0.0f, c, 3);
    for (int i = 0; i < 6; i++) CHECKF(c[i] == 0.0f, "alpha=0 beta=0: c[%d] = %g", i, c[i]);
    dg_gemm_small(false, false, 0, 3, 4, 1.0f, a, 4, b, 3, 0.0f, c, 3);   /* m = 0: no-op */
    CHECK(c[0] == 0.0f);
    const float bias[3] = { 1.0f, -2.0f, 0.5f };   /* k = 0 with a bias: every row is the bias */
    dg_gemm_small_bias(false, false, 2, 3, 0, 1.0f, a, 1, b, 3, bias, c, 3);
    for (int i = 0; i < 6; i++) CHECKF(c[i] == bias[i % 3], "bias k=0: c[%d] = %g", i, c[i]);
}

int main(void) {
    printf("dg_gemm_small uses the %s kernels here\n", dg_isa_name(dg_gemm_small_isa()));
    check_no_product();

    /* tiny, primes, and edges of the 6-row blocks and 4/8/16-float vectors */
    static const int64_t dims[] = { 1, 2, 3, 5, 7, 13, 16, 17, 29, 33, 64, 65 };
    int nd = (int)(sizeof dims / sizeof dims[0]);
    for (int i = 0; i < nd; i++)
        for (int j = 0; j < nd; j++)
            for (int l = 0; l < nd; l += 4) check_shape(dims[i], dims[j], dims[(l + i + j) % nd]);

    /* the MNIST MLP's products at batch 64 and larger, the CNN's im2col
     * products (smaller batch), k over several passes (of <= 64 or 128) */
    static const int64_t shapes[][3] = {
        { 64, 50, 784 }, { 50, 784, 64 }, { 64, 784, 50 }, { 64, 10, 50 }, { 10, 50, 64 },
        { 64, 50, 10 }, { 100, 50, 784 }, { 50, 784, 200 },
        { 24, 2304, 25 }, { 32, 256, 600 }, { 24, 25, 2304 }, { 7, 129, 200 }, { 6, 64, 129 },
        { 1, 1000, 1 }, { 1000, 1, 3 }, { 3, 3, 1000 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        check_shape(shapes[s][0], shapes[s][1], shapes[s][2]);

    /* row strides of B that are multiples of 128 floats (B is packed) */
    for (int isa = DG_GEMM_ISA_BASE; isa <= DG_GEMM_ISA_AVX512; isa++)
        for (int ta = 0; ta < 2; ta++) {
            dg_gemm_isa i = (dg_gemm_isa)isa;
            check_case_ld(i, ta, false, 20, 100, 70, 1.0f, 0.0f, ta ? 20 : 70, 128, 100);
            check_case_ld(i, ta, false, 13, 256, 9, 0.5f, 2.0f, ta ? 13 : 9, 256, 300);
        }

    /* random shapes */
    for (int r = 0; r < 200; r++) {
        int64_t m = 1 + rnd() % 90, n = 1 + rnd() % 150, k = 1 + rnd() % 300;
        int isa = (int)(rnd() % 3), t = (int)(rnd() % 4);
        float alpha = rnd_float() * 2.0f, beta = rnd() % 3 ? rnd_float() : 0.0f;
        check_case((dg_gemm_isa)isa, t & 1, t & 2, m, n, k, alpha, beta, rnd() % 4);
    }
    printf("%lld products checked\n", (long long)ncases);
    return dgt_report("test_gemm");
}
