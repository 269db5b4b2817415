/* seq-impl.h - engine internals of the sequence ops (ops_seq.c) shared with
 * the recurrent modules (nn/nn_seq.c). Not installed. */
#ifndef DGRAD_SEQ_IMPL_H
#define DGRAD_SEQ_IMPL_H

#include "impl.h"

/* One LSTM (gru false) or GRU layer over a time-major padded batch, as one
 * autograd node (three inputs, the engine's limit):
 *   xp   [t*b, g] the input projection x W_ih^T + b_ih (g = 4h or 3h),
 *   w_hh [g, h],
 *   aux  1-D: h0 [b*h], then c0 [b*h] (LSTM only), then b_hh [g] when
 *        has_bias; the caller concatenates them (dg_concat), so gradients
 *        reach each part,
 *   len  int32 [b], contiguous, every value in [1, t] (the caller checked).
 * Returns the outputs packed in one 1-D tensor: y [t, b, h] (0 at padded
 * steps), then h_n [b, h], then (LSTM) c_n [b, h]; the caller cuts them
 * out with dg_slice. op names the errors ("dg_lstm"). NULL and an error if
 * the backend lacks the slots. */
dg_tensor *dg__rnn_layer(const char *op, bool gru, dg_tensor *xp, dg_tensor *w_hh, dg_tensor *aux,
                         dg_tensor *len, int64_t t, int64_t b, int64_t h, bool has_bias);

/* True when the backend has the fused attention kernels and no autocast
 * is on (autocast multiplies in bfloat16 through the composed path). */
bool dg__attn_fused_ok(const dg_ctx *ctx);
/* Self-attention from one packed projection qkv [B, L, 3E] (q, k, v its
 * column blocks, each split into heads of E / heads), with PyTorch's
 * key_padding_mask [B, L] (nonzero: masked; checked here) and causal mask;
 * returns the heads merged, [B, L, E]. Needs dg__attn_fused_ok and a
 * contiguous qkv (asserted). name names the errors. */
dg_tensor *dg__attention_packed(const char *name, dg_tensor *qkv, int64_t heads,
                                dg_tensor *key_padding_mask, bool causal);

/* False, with "<op>: not implemented on <backend>", when slot is NULL. */
bool dg__seq_has(const dg_ctx *ctx, const char *op, const void *slot);

#endif /* DGRAD_SEQ_IMPL_H */
