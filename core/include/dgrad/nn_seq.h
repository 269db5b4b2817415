/* dgrad/nn_seq.h - sequence modules with PyTorch's parameter layout, names,
 * order and initialization: LSTM, GRU, MultiheadAttention, LayerNorm,
 * Embedding, GELU, Tanh, and user-defined modules (dg_nn_custom).
 *
 * dgrad/nn.h's conventions: modules belong to the context, parameters are
 * registered in construction order and listed by dg_module_parameters in
 * PyTorch's order; NULL and a one-line message on bad input. They run on
 * the CPU (dgrad/ops_seq.h).
 */
#ifndef DGRAD_NN_SEQ_H
#define DGRAD_NN_SEQ_H

#include "dgrad/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* nn.LSTM(input_size, hidden_size, num_layers, bias=True, batch_first):
 * per layer k weight_ih_l{k} [4H, in_k], weight_hh_l{k} [4H, H],
 * bias_ih_l{k} [4H], bias_hh_l{k} [4H] (gates i, f, g, o), all
 * U(-1/sqrt(H), 1/sqrt(H)) from the context's RNG. nn.GRU: 3H (r, z, n). */
dg_module *dg_nn_lstm(dg_ctx *ctx, int64_t input_size, int64_t hidden_size, int num_layers,
                      bool batch_first);
dg_module *dg_nn_gru(dg_ctx *ctx, int64_t input_size, int64_t hidden_size, int num_layers,
                     bool batch_first);
/* The same without biases (bias=False). */
dg_module *dg_nn_rnn_ex(dg_ctx *ctx, bool gru, int64_t input_size, int64_t hidden_size,
                        int num_layers, bool batch_first, bool bias);

/* x [B, T, in] (batch_first) or [T, B, in]. lengths: host int32 [B], each
 * in [1, T], or NULL (all T): pack_padded_sequence semantics (any order),
 * so padded steps leave the state alone and give output 0. Returns the
 * output [B, T, H] or [T, B, H] (batch_first: a transposed view of the
 * time-major result, as PyTorch's; dg_contiguous copies it); *h_n and
 * (LSTM) *c_n, when not NULL, get the final states [num_layers, B, H]. The
 * initial state is 0. */
dg_tensor *dg_rnn_forward(dg_module *m, dg_tensor *x, const int32_t *lengths, dg_tensor **h_n,
                          dg_tensor **c_n);
/* The same with an initial state h0 (and c0, LSTM) [num_layers, B, H];
 * NULL: 0. */
dg_tensor *dg_rnn_forward_ex(dg_module *m, dg_tensor *x, const int32_t *lengths, dg_tensor *h0,
                             dg_tensor *c0, dg_tensor **h_n, dg_tensor **c_n);

/* nn.MultiheadAttention(embed_dim, num_heads, bias, batch_first=True):
 * in_proj_weight [3E, E] (xavier_uniform_), in_proj_bias [3E] (0),
 * out_proj.weight [E, E] (U(-1/sqrt(E), 1/sqrt(E))), out_proj.bias [E] (0). */
dg_module *dg_nn_multihead_attention(dg_ctx *ctx, int64_t embed_dim, int num_heads, bool bias);
/* q [B, Lq, E], k and v [B, Lk, E] -> [B, Lq, E]. key_padding_mask
 * [B, Lk] int32 / uint8 (true: ignore the key) or NULL; causal: the
 * upper-triangular attn_mask. dg_module_forward(m, x) is self-attention.
 * With q, k and v the same tensor on the CPU (and no autocast), the three
 * projections are one GEMM and the heads are read and written in place by
 * the fused attention kernel (PyTorch's self-attention fast path); the
 * results are those of the general path to float rounding. */
dg_tensor *dg_mha_forward(dg_module *m, dg_tensor *q, dg_tensor *k, dg_tensor *v,
                          dg_tensor *key_padding_mask, bool causal);

/* nn.LayerNorm(dim, eps): weight 1, bias 0 over the last dim. */
dg_module *dg_nn_layer_norm(dg_ctx *ctx, int64_t dim, float eps);
dg_module *dg_nn_gelu(dg_ctx *ctx);
dg_module *dg_nn_tanh(dg_ctx *ctx);
/* nn.Embedding(num, dim, padding_idx): weight N(0, 1), the padding row 0;
 * padding_idx negative counts from the end, DG_NO_PADDING_IDX (ops_seq.h)
 * for none. Its forward takes int32 indices. */
dg_module *dg_nn_embedding(dg_ctx *ctx, int64_t num, int64_t dim, int64_t padding_idx);

/* A user-defined module (subclassing nn.Module): forward(self, x, state)
 * runs it; the children's parameters, in order, are its parameters, and
 * dg_module_train reaches them. dg_module_child(self, i) gives child i,
 * dg_module_is_training(self) the mode. The children array is copied;
 * state stays the caller's. */
dg_module *dg_nn_custom(dg_ctx *ctx, const char *name,
                        dg_tensor *(*forward)(dg_module *self, dg_tensor *x, void *state),
                        void *state, int num_children, dg_module **children);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_NN_SEQ_H */
