/* gemm_cpu.h - dgrad's own single-precision GEMM for small matrices, used by
 * the CPU backend (backend_cpu.c) in place of OpenBLAS where it is faster.
 * Internal: not installed. */
#ifndef DGRAD_GEMM_CPU_H
#define DGRAD_GEMM_CPU_H

#include <stdbool.h>
#include <stdint.h>

/* Row-major C = alpha * op(A) op(B) + beta * C, exactly like cblas_sgemm
 * with CblasRowMajor: C is m x n, op(A) is m x k, op(B) is k x n.
 * trans_a: A is stored k x m (else m x k); trans_b: B is stored n x k (else
 * k x n). lda, ldb, ldc are row strides in elements. beta == 0 does not
 * read C (it may hold NaN); alpha == 0 or k == 0 does not read A or B.
 * C must not overlap A or B. One thread, no heap memory, about 33 KiB of
 * stack; reentrant. Any shape works, but it is tuned for small ones: see
 * dg_gemm_small_fits. */
void dg_gemm_small(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                   float *c, int64_t ldc);

/* C = alpha * op(A) op(B) + bias, bias [n] added to every row, in the
 * kernel's last step: the same values as dg_gemm_small with beta 1 over a
 * C that holds bias in every row, without writing and reading that C.
 * C is not read. */
void dg_gemm_small_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb,
                        const float *bias, float *c, int64_t ldc);

/* The kernel families, by the registers they are written for. */
typedef enum {
    DG_GEMM_ISA_BASE,    /* the compiler's target: 4-float vectors unless -march says more */
    DG_GEMM_ISA_AVX2,    /* x86-64 AVX2 + FMA: 8-float vectors */
    DG_GEMM_ISA_AVX512,  /* x86-64 AVX-512 F/VL/BW/DQ: 16-float vectors */
} dg_gemm_isa;

/* The family dg_gemm_small uses on this CPU: the widest it supports. */
dg_gemm_isa dg_gemm_small_isa(void);

/* dg_gemm_small with the kernels of one family, for tests and benchmarks.
 * Returns false, and does nothing, when this build or CPU lacks it. */
bool dg_gemm_small_with(dg_gemm_isa isa, bool trans_a, bool trans_b, int64_t m, int64_t n,
                        int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                        int64_t ldb, float beta, float *c, int64_t ldc);

/* The same for dg_gemm_small_bias. */
bool dg_gemm_small_bias_with(dg_gemm_isa isa, bool trans_a, bool trans_b, int64_t m, int64_t n,
                             int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                             int64_t ldb, const float *bias, float *c, int64_t ldc);

/* True when dg_gemm_small is expected to be faster than OpenBLAS for this
 * shape (measured crossover, see gemm_cpu.c). */
bool dg_gemm_small_fits(int64_t m, int64_t n, int64_t k);

#endif /* DGRAD_GEMM_CPU_H */
