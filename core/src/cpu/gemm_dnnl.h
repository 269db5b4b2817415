/* gemm_dnnl.h - the bf16 GEMM through oneDNN (gemm_dnnl.c), one of the
 * kernel families of gemm_bf16.c. Internal: not installed. */
#ifndef DGRAD_GEMM_DNNL_H
#define DGRAD_GEMM_DNNL_H

#include <stdbool.h>
#include <stdint.h>

/* Whether this build has oneDNN (DG_HAVE_DNNL) and its CPU engine starts. */
bool dg__dnnl_available(void);

/* C = alpha * op(A) op(B) + beta * C, A and B bf16 (uint16_t bit
 * patterns), C float32, row-major. False when oneDNN is missing or fails
 * (C untouched: the caller falls back to another kernel). */
bool dg__dnnl_gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                        const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                        float *c, int64_t ldc);

#endif /* DGRAD_GEMM_DNNL_H */
