/* gemm_bf16.h - the CPU backend's bfloat16 kernels: conversions and a GEMM
 * with bf16 inputs and float32 accumulation and output (backend-impl.h,
 * family lowp). Internal: not installed. */
#ifndef DGRAD_GEMM_BF16_H
#define DGRAD_GEMM_BF16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* lowp.f32_to_bf16 / lowp.bf16_to_f32 (see backend-impl.h). */
void dg__cpu_f32_to_bf16(uint16_t *dst, const float *src, int64_t n);
void dg__cpu_bf16_to_f32(float *dst, const uint16_t *src, int64_t n);

/* The kernel families of the bf16 GEMM. */
typedef enum {
    DG_BF16_ISA_PORTABLE,    /* widen to float32, then the CPU backend's SGEMM */
    DG_BF16_ISA_AVX512BF16,  /* vdpbf16ps: pairs of bf16 products summed into float32 */
    DG_BF16_ISA_DNNL,        /* oneDNN's matmul (AMX / AVX512_BF16), builds with DG_HAVE_DNNL */
} dg_bf16_isa;

/* The family lowp.gemm_bf16 uses: oneDNN when this build has it and its
 * engine starts, else AVX512_BF16 when this CPU has it
 * (__builtin_cpu_supports, checked once), else portable. The environment's
 * DG_BF16_GEMM=dnnl|avx512|portable, read at the first call, picks one
 * instead (one this build or CPU lacks falls back along the same order).
 * Should oneDNN fail on a shape, that call uses AVX512_BF16 or portable. */
dg_bf16_isa dg_gemm_bf16_isa(void);
const char *dg_bf16_isa_name(dg_bf16_isa isa);

/* lowp.gemm_bf16: C = alpha * op(A) op(B) + beta * C; work holds
 * DG_GEMM_BF16_WORK(m, n, k) bytes, 64-byte aligned. */
void dg__cpu_gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                       float *c, int64_t ldc, void *work);

/* The same with one family, for tests and benchmarks. Returns false, and
 * does nothing, when this build or CPU lacks it. */
bool dg_gemm_bf16_with(dg_bf16_isa isa, bool trans_a, bool trans_b, int64_t m, int64_t n,
                       int64_t k, float alpha, const uint16_t *a, int64_t lda, const uint16_t *b,
                       int64_t ldb, float beta, float *c, int64_t ldc, void *work);

#endif /* DGRAD_GEMM_BF16_H */
