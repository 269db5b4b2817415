/* amp-impl.h - bfloat16 internals shared by amp.c, ops.c, ops_cnn.c and the
 * CPU backend's bf16 kernels (cpu/gemm_bf16.c). Not installed. */
#ifndef DGRAD_AMP_IMPL_H
#define DGRAD_AMP_IMPL_H

#include <stdint.h>
#include <string.h>

#include "dgrad/amp.h"
#include "dgrad/tensor.h"

/* float32 -> bfloat16 bits, round to nearest even (c10::BFloat16's rule):
 * add 0x7fff plus the lowest kept bit, keep the upper half. Subnormals
 * round the same way (no flush); a value that rounds past FLT_MAX becomes
 * inf. NaN becomes a quiet NaN with the same sign and upper payload. */
static inline uint16_t dg__bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float dg__bf16_widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* True inside dg_autocast_begin(ctx, DG_BF16) .. dg_autocast_end(ctx). */
bool dg__autocast_bf16(const dg_ctx *ctx);

/* A contiguous bfloat16 arena copy of t (float32 rounded, or t itself when
 * it is already contiguous bfloat16); no autograd record. NULL and an
 * error for other dtypes or a backend without the lowp family. */
dg_tensor *dg__to_bf16(const char *op, dg_tensor *t);

/* The backend's lowp.gemm_bf16 with its workspace taken from ctx's step
 * arena (math.gemm's argument conventions). */
void dg__gemm_bf16(dg_ctx *ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                   float beta, float *c, int64_t ldc);

/* dg_linear under autocast (amp.c); the arguments were checked by dg_linear. */
dg_tensor *dg__linear_bf16(dg_tensor *x, dg_tensor *weight, dg_tensor *bias);

#endif /* DGRAD_AMP_IMPL_H */
