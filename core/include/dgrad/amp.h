/* dgrad/amp.h - bfloat16 tensors and mixed precision (autocast), as
 * PyTorch's torch.autocast("cpu", dtype=torch.bfloat16).
 *
 * bfloat16 (DG_BF16) keeps float32's 8-bit exponent and 8 significant
 * bits (7 stored): relative rounding error at most 2^-8. A DG_BF16 tensor
 * stores uint16_t bit patterns, the upper half of the float32 encoding.
 *
 * Autocast policy. Between dg_autocast_begin(ctx, DG_BF16) and
 * dg_autocast_end(ctx):
 *  - dg_linear, dg_matmul and dg_conv2d round their float32 operands
 *    (input, weight) to bfloat16 and multiply them with float32
 *    accumulation: each product is exact and the sums are float32. Their
 *    backward does the same for the gradient products (the output gradient
 *    is rounded to bfloat16 too). A bias is added in float32.
 *  - Their outputs are float32 tensors holding the float32 accumulator (not
 *    rounded to bfloat16: PyTorch returns bfloat16 tensors, whose values
 *    differ from dgrad's by at most half a bfloat16 step). So every other
 *    op - reductions, softmax, losses, batch-norm statistics, activations -
 *    runs in float32, unchanged.
 *  - Parameters stay float32 ("master weights"), and so do their
 *    gradients and the optimizer state: the same model code and optimizer
 *    run under autocast, only the matrix products change.
 * These three ops also accept DG_BF16 operands inside autocast (used as
 * they are); outside it, and for every other op, DG_BF16 tensors are an
 * error naming the op. Autocast needs the backend's bfloat16 family: on a
 * backend without it (CUDA, for now) dg_autocast_begin fails.
 *
 * Gradients are float32 for tensors of every float dtype: the .grad of a
 * DG_BF16 tensor is a float32 tensor of its shape.
 */
#ifndef DGRAD_AMP_H
#define DGRAD_AMP_H

#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* float32 -> bfloat16 bits, rounding to nearest even (PyTorch's
 * c10::BFloat16 rule). Subnormals round like any value (no flush to zero);
 * values from 0x1.fefffep127 up round to inf; NaN stays NaN (quiet, same
 * sign). */
uint16_t dg_f32_to_bf16(float x);
/* bfloat16 bits -> float32, exact. */
float dg_bf16_to_f32(uint16_t h);

/* t converted to dtype (DG_F32 or DG_BF16), like torch's Tensor.to(dtype):
 * t itself when it already has that dtype, else a new contiguous tensor.
 * Differentiable: the gradient flows back unchanged (float32). NULL and an
 * error for another dtype or a backend without bfloat16. */
dg_tensor *dg_astype(dg_tensor *t, dg_dtype dtype);

/* Enter autocast: dtype must be DG_BF16. DG_ERR with a message when the
 * dtype is not supported, the context is already in autocast, or its
 * backend has no bfloat16 kernels (e.g. "dg_autocast_begin: bfloat16 is
 * not implemented on the cuda backend"). */
dg_status dg_autocast_begin(dg_ctx *ctx, dg_dtype dtype);
/* Leave autocast (nothing happens outside it). Tensors made inside stay
 * valid; a backward run after dg_autocast_end still uses bfloat16 for the
 * ops that ran under autocast. */
void dg_autocast_end(dg_ctx *ctx);
/* DG_BF16 inside autocast, DG_F32 outside. */
dg_dtype dg_autocast_dtype(const dg_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_AMP_H */
