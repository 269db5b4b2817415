/* dgrad/ops_seq.h - differentiable ops for sequences and attention, with
 * PyTorch's semantics (dgrad/ops.h's conventions: outputs are arena
 * tensors, NULL and a one-line message on bad input, a NULL input gives
 * NULL, dims may be negative).
 *
 * Index and mask tensors are DG_I32 (masks may also be DG_U8); nonzero in
 * a mask means true. Index values are checked on the host: one out of range
 * is an error naming the argument, the position and the value, and nothing
 * is computed.
 *
 * Backends: these run on the CPU. Ops that need the backend's seq family
 * (backend-impl.h) fail on a backend without it (CUDA, for now) with
 * "<op>: not implemented on cuda"; dg_concat and dg_stack run anywhere.
 */
#ifndef DGRAD_OPS_SEQ_H
#define DGRAD_OPS_SEQ_H

#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- activations (same shape as x) ------------------------------------ */
dg_tensor *dg_tanh(dg_tensor *x);
dg_tensor *dg_sigmoid(dg_tensor *x);
/* Exact GELU, F.gelu(approximate='none'): 0.5 x (1 + erf(x / sqrt(2))). */
dg_tensor *dg_gelu(dg_tensor *x);

/* ---- normalization ---------------------------------------------------- */
/* F.layer_norm over the last nnorm dims of x [..., d1..dk] (k = nnorm >= 1):
 * (x - mean) / sqrt(var + eps) * weight + bias, biased variance. weight and
 * bias have the normalized shape [d1..dk], or are NULL. PyTorch's eps: 1e-5. */
dg_tensor *dg_layer_norm(dg_tensor *x, int nnorm, dg_tensor *weight, dg_tensor *bias, float eps);

/* ---- lookup and indexing ---------------------------------------------- */
/* No padding row for dg_embedding. */
#define DG_NO_PADDING_IDX INT64_MIN
/* F.embedding: weight [V, D], indices (int32, any shape, values in [0, V))
 * -> [indices..., D]. padding_idx: that row's gradient stays 0 (negative
 * counts from the end, as in PyTorch), or DG_NO_PADDING_IDX. */
dg_tensor *dg_embedding(dg_tensor *weight, dg_tensor *indices, int64_t padding_idx);
/* torch.gather(x, dim, index): out[...i_dim...] = x[...index[...]...] along
 * dim. index (int32) has x's number of dims and, except along dim, x's
 * sizes (PyTorch also allows smaller ones); out has index's shape. */
dg_tensor *dg_gather(dg_tensor *x, int dim, dg_tensor *index);
/* torch.index_select(x, dim, index): index 1-D int32 [n]; out is x with
 * size n along dim. */
dg_tensor *dg_index_select(dg_tensor *x, int dim, dg_tensor *index);

/* ---- joining ---------------------------------------------------------- */
/* torch.cat(xs[0..n), dim): same shapes except along dim; n >= 1. */
dg_tensor *dg_concat(int n, dg_tensor *const *xs, int dim);
/* torch.stack(xs[0..n), dim): equal shapes; a new dim at dim, in
 * [-(ndim+1), ndim]. */
dg_tensor *dg_stack(int n, dg_tensor *const *xs, int dim);

/* ---- masks ------------------------------------------------------------ */
/* x.masked_fill(mask, value): mask broadcasts to x's shape (and not beyond
 * it); elements where it is true become value (no gradient flows there). */
dg_tensor *dg_masked_fill(dg_tensor *x, dg_tensor *mask, float value);
/* torch.where(cond, a, b): cond, a and b broadcast together. */
dg_tensor *dg_where(dg_tensor *cond, dg_tensor *a, dg_tensor *b);

/* ---- attention -------------------------------------------------------- */
/* softmax(q k^T / sqrt(D) + mask) v over the keys, for q [B, H, Lq, D] and
 * k [B, H, Lk, D], v [B, H, Lk, Dv] -> [B, H, Lq, Dv]; or without the head
 * dim: q [B, Lq, D], k [B, Lk, D], v [B, Lk, Dv] -> [B, Lq, Dv].
 * key_padding_mask [B, Lk] (int32 or uint8; NULL: none): true keys are
 * ignored (nn.MultiheadAttention's convention). causal: query i sees keys
 * j <= i only (torch.triu(ones(Lq, Lk), 1) masked).
 * A query row whose keys are all masked (a sample with every key padded,
 * or left padding under a causal mask) has all weights 0: its output row is
 * 0 and it passes no gradient. PyTorch's softmax gives NaN there.
 * On the CPU with Dv = D (and no autocast) one fused kernel computes it
 * (backend seq.attn_fwd / attn_bwd: no score tensor on the tape, the
 * softmax in registers); elsewhere it is composed of matmul, masks and
 * softmax. */
dg_tensor *dg_scaled_dot_product_attention(dg_tensor *q, dg_tensor *k, dg_tensor *v,
                                           dg_tensor *key_padding_mask, bool causal);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_OPS_SEQ_H */
