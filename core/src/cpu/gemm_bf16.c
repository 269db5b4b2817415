/* gemm_bf16.c - the CPU backend's bfloat16 kernels (family lowp in
 * backend-impl.h): float32 <-> bfloat16 conversions, and a GEMM with
 * bfloat16 inputs and float32 accumulation and output.
 *
 * Three GEMM kernel families, picked at run time (dg_gemm_bf16_isa):
 *  - oneDNN's matmul (gemm_dnnl.c, builds with DG_HAVE_DNNL): AMX or
 *    AVX512_BF16 as oneDNN sees fit; the default when present;
 *  - AVX512_BF16: both operands are packed into pairs of bf16 values along
 *    k (one 32-bit lane per pair), A in panels of MR rows and B in panels
 *    of NR columns; an MR x NR block of C is kept in 2 * MR zmm registers
 *    and vdpbf16ps adds a[2i] b[2i] + a[2i+1] b[2i+1] into each float32
 *    lane. The hardware rounds to nearest even, treats bf16 subnormal
 *    inputs as zero and flushes subnormal results (vdpbf16ps's DAZ/FTZ).
 *  - portable: A and B widened to float32 (exact), then the CPU backend's
 *    SGEMM (math.gemm): the same products, summed in float32.
 * Either way the products of two bf16 values are exact in float32 (8 + 8
 * significant bits), so the result differs from an exact product of the
 * bf16 inputs only by float32 summation error. One thread; no heap memory
 * (the engine passes the workspace). */
#include "gemm_bf16.h"
#include "gemm_dnnl.h"

#include <stdlib.h>
#include <string.h>

#include "amp-impl.h"
#include "backend-impl.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DG_BF16_X86 1
#include <immintrin.h>
#endif

/* ---- conversions ------------------------------------------------------------ */

DG_HOT void dg__cpu_f32_to_bf16(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = dg__bf16_round(src[i]);
}

DG_HOT void dg__cpu_bf16_to_f32(float *dst, const uint16_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}

/* ---- kernel choice ---------------------------------------------------------- */

static bool cpu_has_avx512bf16(void) {
#ifdef DG_BF16_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return false;
#endif
}

dg_bf16_isa dg_gemm_bf16_isa(void) {
    static int isa = -1;   /* decided once; a race writes the same value */
    int v = __atomic_load_n(&isa, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *env = getenv("DG_BF16_GEMM");
        bool portable = env && strcmp(env, "portable") == 0;
        bool avx = env && (strcmp(env, "avx512") == 0 || strcmp(env, "avx512bf16") == 0);
        if (!portable && !avx && dg__dnnl_available())
            v = DG_BF16_ISA_DNNL;
        else
            v = !portable && cpu_has_avx512bf16() ? DG_BF16_ISA_AVX512BF16 : DG_BF16_ISA_PORTABLE;
        __atomic_store_n(&isa, v, __ATOMIC_RELAXED);
    }
    return (dg_bf16_isa)v;
}

const char *dg_bf16_isa_name(dg_bf16_isa isa) {
    return isa == DG_BF16_ISA_DNNL ? "dnnl" : isa == DG_BF16_ISA_AVX512BF16 ? "avx512bf16" : "portable";
}

/* ---- portable: widen, then SGEMM ------------------------------------------ */

static void gemm_portable(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                          const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                          float beta, float *c, int64_t ldc, void *work) {
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    float *af = work, *bf = af + ar * ac;
    for (int64_t i = 0; i < ar && ac > 0; i++) dg__cpu_bf16_to_f32(af + i * ac, a + i * lda, ac);
    for (int64_t i = 0; i < br && bc > 0; i++) dg__cpu_bf16_to_f32(bf + i * bc, b + i * ldb, bc);
    dg_backend_cpu.math.gemm(ta, tb, m, n, k, alpha, af, ac > 0 ? ac : 1, bf, bc > 0 ? bc : 1,
                             beta, c, ldc);
}

/* ---- AVX512_BF16 ------------------------------------------------------------ */

#ifdef DG_BF16_X86

#define MR 8    /* rows of a C block */
#define NR 32   /* columns of a C block: two zmm of float32 */

/* ap [ceil(m/MR)][k2][MR] pairs of op(A) (row i, k = 2q and 2q+1), zero
 * beyond m and k. */
static void pack_a(uint32_t *ap, bool ta, const uint16_t *a, int64_t lda, int64_t m, int64_t k) {
    int64_t k2 = (k + 1) / 2, mp = (m + MR - 1) / MR;
    for (int64_t pi = 0; pi < mp; pi++) {
        uint32_t *dst = ap + pi * k2 * MR;
        for (int r = 0; r < MR; r++) {
            int64_t i = pi * MR + r;
            if (i >= m) {
                for (int64_t q = 0; q < k2; q++) dst[q * MR + r] = 0;
                continue;
            }
            if (!ta) {   /* a pair is two adjacent bf16 values: one 32-bit load */
                const uint16_t *row = a + i * lda;
                for (int64_t q = 0; q < k / 2; q++) memcpy(&dst[q * MR + r], row + 2 * q, 4);
                if (k % 2) dst[(k2 - 1) * MR + r] = row[k - 1];
                continue;
            }
            for (int64_t q = 0; q < k2; q++) {
                int64_t p = 2 * q;
                uint32_t lo = ta ? a[p * lda + i] : a[i * lda + p];
                uint32_t hi = p + 1 < k ? (ta ? a[(p + 1) * lda + i] : a[i * lda + p + 1]) : 0;
                dst[q * MR + r] = lo | hi << 16;
            }
        }
    }
}

/* bp [ceil(n/NR)][k2][NR] pairs of op(B) (column j, k = 2q and 2q+1),
 * zero beyond n and k. */
static void pack_b(uint32_t *bp, bool tb, const uint16_t *b, int64_t ldb, int64_t n, int64_t k) {
    int64_t k2 = (k + 1) / 2, np = (n + NR - 1) / NR;
    for (int64_t pj = 0; pj < np; pj++) {
        uint32_t *dst = bp + pj * k2 * NR;
        int64_t j0 = pj * NR, nc = n - j0 < NR ? n - j0 : NR;
        if (tb) {   /* column j is a row of B: its pairs are 32-bit loads */
            for (int64_t c = 0; c < NR; c++) {
                if (c >= nc) {
                    for (int64_t q = 0; q < k2; q++) dst[q * NR + c] = 0;
                    continue;
                }
                const uint16_t *col = b + (j0 + c) * ldb;
                for (int64_t q = 0; q < k / 2; q++) memcpy(&dst[q * NR + c], col + 2 * q, 4);
                if (k % 2) dst[(k2 - 1) * NR + c] = col[k - 1];
            }
            continue;
        }
        for (int64_t q = 0; q < k2; q++) {
            int64_t p = 2 * q;
            uint32_t *d = dst + q * NR;
            if (!tb) {
                const uint16_t *r0 = b + p * ldb + j0, *r1 = r0 + ldb;
                if (p + 1 < k)
                    for (int64_t c = 0; c < nc; c++) d[c] = (uint32_t)r0[c] | (uint32_t)r1[c] << 16;
                else
                    for (int64_t c = 0; c < nc; c++) d[c] = r0[c];
            } else {
                for (int64_t c = 0; c < nc; c++) {
                    const uint16_t *col = b + (j0 + c) * ldb + p;
                    d[c] = (uint32_t)col[0] | (p + 1 < k ? (uint32_t)col[1] << 16 : 0);
                }
            }
            for (int64_t c = nc; c < NR; c++) d[c] = 0;
        }
    }
}

#define DG_TARGET_BF16 __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))

/* C[mr, nr] (mr <= MR, nr <= NR) = alpha * Apanel Bpanel + beta * C. */
DG_TARGET_BF16 static void kernel_bf16(int64_t k2, const uint32_t *ap, const uint32_t *bp,
                                       float *c, int64_t ldc, int64_t mr, int64_t nr, float alpha,
                                       float beta) {
    __m512 acc0[MR], acc1[MR];
    for (int r = 0; r < MR; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
    for (int64_t q = 0; q < k2; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(bp + q * NR));
        __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(bp + q * NR + 16));
        const uint32_t *aq = ap + q * MR;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)aq[r]);
            acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
            acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
        }
    }
    __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int64_t r = 0; r < mr; r++) {
        float *cr = c + r * ldc;
        __m512 v0 = _mm512_mul_ps(acc0[r], va), v1 = _mm512_mul_ps(acc1[r], va);
        if (beta != 0.0f) {
            v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), v0);
            if (m1) v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), v1);
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        if (m1) _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
}

static void gemm_avx512bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                            const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                            float beta, float *c, int64_t ldc, void *work) {
    int64_t k2 = (k + 1) / 2, mp = (m + MR - 1) / MR, np = (n + NR - 1) / NR;
    size_t abytes = ((size_t)(mp * MR * k2) * 4 + 63) / 64 * 64;
    uint32_t *ap = work, *bp = (uint32_t *)((char *)work + abytes);
    pack_a(ap, ta, a, lda, m, k);
    pack_b(bp, tb, b, ldb, n, k);
    for (int64_t pj = 0; pj < np; pj++) {
        int64_t nr = n - pj * NR < NR ? n - pj * NR : NR;
        for (int64_t pi = 0; pi < mp; pi++) {
            int64_t mr = m - pi * MR < MR ? m - pi * MR : MR;
            kernel_bf16(k2, ap + pi * k2 * MR, bp + pj * k2 * NR, c + pi * MR * ldc + pj * NR, ldc,
                        mr, nr, alpha, beta);
        }
    }
}
#endif /* DG_BF16_X86 */

/* ---- entry points ------------------------------------------------------------ */

bool dg_gemm_bf16_with(dg_bf16_isa isa, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                       float alpha, const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                       float beta, float *c, int64_t ldc, void *work) {
    if (isa == DG_BF16_ISA_DNNL) {
        if (!dg__dnnl_available()) return false;
        if (dg__dnnl_gemm_bf16(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return true;
        /* oneDNN failed on this shape: the hand kernels */
        isa = cpu_has_avx512bf16() ? DG_BF16_ISA_AVX512BF16 : DG_BF16_ISA_PORTABLE;
    }
    if (isa == DG_BF16_ISA_AVX512BF16) {
#ifdef DG_BF16_X86
        if (!cpu_has_avx512bf16()) return false;
        if (m > 0 && n > 0) gemm_avx512bf16(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, work);
        return true;
#else
        return false;
#endif
    }
    if (m > 0 && n > 0) gemm_portable(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, work);
    return true;
}

void dg__cpu_gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                       const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                       float *c, int64_t ldc, void *work) {
    bool ok = dg_gemm_bf16_with(dg_gemm_bf16_isa(), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta,
                                c, ldc, work);
    DG_ASSERT(ok);
}
