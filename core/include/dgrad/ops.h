/* dgrad/ops.h - differentiable operations, with PyTorch's semantics.
 *
 * Every op records itself on the autograd tape when grad mode is on and an
 * input requires grad. Outputs are arena tensors (see dgrad/tensor.h).
 * On bad input an op returns NULL and records a message naming the op and
 * the shapes, e.g. "dg_matmul: shapes [2, 3] and [4, 5] do not fit".
 * A NULL input gives a NULL output without a new message.
 *
 * Dims may be negative (counted from the end), as in PyTorch.
 */
#ifndef DGRAD_OPS_H
#define DGRAD_OPS_H

#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise, with numpy/PyTorch broadcasting --------------------- */
dg_tensor *dg_add(dg_tensor *a, dg_tensor *b);
dg_tensor *dg_sub(dg_tensor *a, dg_tensor *b);
dg_tensor *dg_mul(dg_tensor *a, dg_tensor *b);
dg_tensor *dg_div(dg_tensor *a, dg_tensor *b);
/* a + s, a * s */
dg_tensor *dg_add_scalar(dg_tensor *a, float s);
dg_tensor *dg_mul_scalar(dg_tensor *a, float s);
dg_tensor *dg_neg(dg_tensor *a);

/* max(a, 0) as torch.relu: NaN stays NaN (and passes its gradient), -0 stays -0. */
dg_tensor *dg_relu(dg_tensor *a);
dg_tensor *dg_exp(dg_tensor *a);
dg_tensor *dg_log(dg_tensor *a);

/* ---- linear algebra --------------------------------------------------- */
/* torch.matmul: 1-D and 2-D operands, and batched operands of up to
 * DG_MAX_DIMS dims whose batch dims broadcast. */
dg_tensor *dg_matmul(dg_tensor *a, dg_tensor *b);
/* x (..., in) . weight (out, in)^T + bias (out); bias may be NULL. */
dg_tensor *dg_linear(dg_tensor *x, dg_tensor *weight, dg_tensor *bias);

/* ---- reductions ------------------------------------------------------- */
/* Over every element: a 0-dim tensor. */
dg_tensor *dg_sum(dg_tensor *a);
dg_tensor *dg_mean(dg_tensor *a);
/* Over the listed dims (ndims entries, no repeats). */
dg_tensor *dg_sum_dims(dg_tensor *a, int ndims, const int *dims, bool keepdim);
dg_tensor *dg_mean_dims(dg_tensor *a, int ndims, const int *dims, bool keepdim);
/* Index of the largest value along dim (first one on ties), as DG_I32.
 * Not differentiable. */
dg_tensor *dg_argmax(dg_tensor *a, int dim, bool keepdim);

/* ---- softmax and losses ----------------------------------------------- */
dg_tensor *dg_softmax(dg_tensor *a, int dim);
dg_tensor *dg_log_softmax(dg_tensor *a, int dim);
/* logits (N, C) float, target (N) DG_I32 class indices: the mean over the
 * batch of -log_softmax(logits)[i, target[i]], fused and numerically
 * stable. Targets equal to ignore_index (PyTorch's default is -100) are
 * left out of the loss and the mean. Any other target outside [0, C) is an
 * error that names the bad label. On a GPU that check costs a read-back
 * (the host waits for the device) unless the targets' range is known on
 * the host: it is for a tensor made by dg_tensor_from or written by
 * dg_tensor_copy_from_host (every batch of dg_loader_next), until another
 * int32 write in the context; views and op outputs are read back. */
#define DG_IGNORE_INDEX (-100)
dg_tensor *dg_cross_entropy(dg_tensor *logits, dg_tensor *target);
dg_tensor *dg_cross_entropy_ex(dg_tensor *logits, dg_tensor *target, int ignore_index);

/* ---- shape ------------------------------------------------------------ */
/* One entry of shape may be -1. A view when the layout allows it, else a
 * copy, like torch.reshape. */
dg_tensor *dg_reshape(dg_tensor *a, int ndim, const int64_t *shape);
/* Flatten dims start..end (inclusive) into one. */
dg_tensor *dg_flatten(dg_tensor *a, int start_dim, int end_dim);
dg_tensor *dg_transpose(dg_tensor *a, int dim0, int dim1);
dg_tensor *dg_permute(dg_tensor *a, const int *perm);
/* torch.narrow / a[..., start:start+length, ...] along dim: a view. */
dg_tensor *dg_slice(dg_tensor *a, int dim, int64_t start, int64_t length);
/* A contiguous copy (or a itself when already contiguous). */
dg_tensor *dg_contiguous(dg_tensor *a);

/* ---- convolutional nets (NCHW images, PyTorch's semantics) ------------- */
/* torch.nn.functional.conv2d: x [N, C, H, W], w [OC, C/groups, KH, KW],
 * b [OC] or NULL. stride, padding, dilation: {h, w}; NULL means {1, 1},
 * {0, 0}, {1, 1}. Output [N, OC, OH, OW] with
 * OH = (H + 2*padding - dilation*(KH-1) - 1) / stride + 1. */
dg_tensor *dg_conv2d(dg_tensor *x, dg_tensor *w, dg_tensor *b, const int64_t *stride,
                     const int64_t *padding, const int64_t *dilation, int64_t groups);
/* max_pool2d / avg_pool2d over x [N, C, H, W]: kernel {kh, kw}; stride
 * NULL means the kernel size, padding NULL means {0, 0} (at most half the
 * kernel). Floor mode; avg_pool2d counts the padding (count_include_pad). */
dg_tensor *dg_max_pool2d(dg_tensor *x, const int64_t *kernel, const int64_t *stride,
                         const int64_t *padding);
dg_tensor *dg_avg_pool2d(dg_tensor *x, const int64_t *kernel, const int64_t *stride,
                         const int64_t *padding);
/* Dropout: when training, each element is zeroed with probability p and
 * the rest scaled by 1/(1-p), the mask drawn from a seed taken from the
 * context's RNG; not training (or p == 0): x itself. */
dg_tensor *dg_dropout(dg_tensor *x, float p, bool training);
/* Batch norm over the channels of x [N, C, ...] (batch_norm2d: [N, C, H, W]).
 * training: normalize with the batch's mean and biased variance, and move
 * running_mean / running_var [C] (may be NULL) by momentum toward the batch
 * mean and unbiased variance; eval: use the running stats. weight and bias
 * [C] may be NULL. PyTorch defaults: momentum 0.1, eps 1e-5. */
dg_tensor *dg_batch_norm2d(dg_tensor *x, dg_tensor *running_mean, dg_tensor *running_var,
                           dg_tensor *weight, dg_tensor *bias, bool training, float momentum,
                           float eps);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_OPS_H */
