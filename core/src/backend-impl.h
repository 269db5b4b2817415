/* backend-impl.h - the interface every backend implements: one table of
 * function pointers per device, grouped by op family. Not installed.
 *
 *   family  what                                   CPU                 CUDA
 *   mem     memory and copies                      cpu/backend_cpu.c   cuda/backend_cuda.cu
 *   math    elementwise, GEMM, reductions, loss    cpu/backend_cpu.c   cuda/cuda_elementwise.cu,
 *                                                  cpu/gemm_cpu.c      cuda/cuda_reduce.cu
 *   optim   optimizer updates                      cpu/backend_cpu.c   cuda/cuda_reduce.cu
 *   stream  pinned memory, events, graphs          (none: optional)    cuda/backend_cuda.cu
 *   cnn     convolution, pooling, dropout, BN      cpu/conv_cpu.c      cuda/cuda_conv.cu
 *   seq     activations, layer norm, indexing,     cpu/seq_cpu.c       (none yet: optional)
 *           where, LSTM / GRU recurrences
 *   lowp    bfloat16 conversions and GEMM          cpu/gemm_bf16.c     (none yet: optional)
 *           (autocast, amp.c)
 *
 * Adding an op: the op in the engine (ops*.c: shapes, checks, the autograd
 * record), then one slot here and one function per backend.
 *
 * Rules for every slot, unless its comment says otherwise:
 * - Pointers are device memory of the table's device. Tensors are float32
 *   and contiguous, except where a slot takes dg_tensor views.
 * - Who allocates: the engine. Every output buffer is allocated (from the
 *   step arena or persistent memory) before the call; no slot allocates
 *   device memory except mem.alloc and stream.alloc_host.
 * - Aliasing: outputs never alias inputs, except the elementwise slots
 *   (math.binary, math.unary, optim.*), which work in place element by
 *   element and so allow out == a (and the optimizer's p, m, v, vmax are
 *   updated in place by design).
 * - "acc" means out += result instead of out = result.
 * - Slots return nothing: they run (or are queued on the device's stream)
 *   and cannot fail on valid input; the engine checked the input.
 * - Slots marked optional may be NULL; the engine checks before calling.
 */
#ifndef DGRAD_BACKEND_IMPL_H
#define DGRAD_BACKEND_IMPL_H

#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hot CPU loops are compiled for several x86-64 levels (AVX-512, AVX2,
 * baseline) and the best one is picked at load time. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(DG_NO_CLONES)
#define DG_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DG_HOT
#endif

typedef enum {
    DG_BIN_ADD,       /* a + b */
    DG_BIN_SUB,       /* a - b */
    DG_BIN_MUL,       /* a * b */
    DG_BIN_DIV,       /* a / b */
    DG_BIN_COPY,      /* a (b unused) */
    DG_BIN_RELU_BWD,  /* b > 0 ? a : 0   (a = grad, b = relu output) */
} dg_binop;

typedef enum {
    DG_UN_RELU,
    DG_UN_EXP,
    DG_UN_LOG,
    DG_UN_SCALE,      /* alpha * a */
    DG_UN_ADD_SCALAR, /* a + alpha */
} dg_unop;

/* Geometry of a 2-D convolution or pooling over NCHW images: input
 * [n, c, h, w], kernel kh x kw, stride, padding, dilation, output oh x ow. */
typedef struct dg_conv_geom {
    int64_t n, c, h, w;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int64_t oh, ow;
} dg_conv_geom;

/* ---- mem: memory and copies (required) ---------------------------------- */
typedef struct {
    void *(*alloc)(size_t nbytes);          /* 64-byte aligned; NULL on failure */
    void (*free)(void *p);                  /* p from alloc, or NULL */
    /* nbytes between host memory and device memory; synchronous for
     * to_host (dst is valid on return) */
    void (*to_host)(void *dst, const void *src, size_t nbytes);
    void (*from_host)(void *dst, const void *src, size_t nbytes);
    void (*copy)(void *dst, const void *src, size_t nbytes);   /* device to device, no overlap */
    void (*memset0)(void *dst, size_t nbytes);
    void (*fill)(float *dst, int64_t n, float value);
    void (*synchronize)(void);              /* wait for all queued work */
} dg_backend_mem;

/* ---- math: elementwise, GEMM, reductions, softmax, loss (required) ------ */
typedef struct {
    /* out (+)= alpha * op(a, b), iterating over out's shape; out, a and b
     * are dg_tensor views with their own shape and strides (in elements);
     * a and b may broadcast (stride 0 along broadcast dims). out may be a
     * itself (same view), never a partial overlap. */
    void (*binary)(dg_binop op, const dg_tensor *out, const dg_tensor *a,
                   const dg_tensor *b, float alpha, bool acc);
    /* out[n] = op(a[n]); out == a allowed. */
    void (*unary)(dg_unop op, float *out, const float *a, int64_t n, float alpha);
    /* Row-major C[m, n] = alpha * op(A) op(B) + beta * C, op(A) [m, k],
     * op(B) [k, n]; lda, ldb, ldc are row strides of the stored matrices.
     * C never aliases A or B. */
    void (*gemm)(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                 float beta, float *c, int64_t ldc);
    /* The same with beta's term a bias row: C = alpha * op(A) op(B) +
     * bias, bias [n] added to every row (C not read). Optional: NULL, and
     * the engine writes bias into C and calls gemm with beta 1. */
    void (*gemm_bias)(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                      const float *a, int64_t lda, const float *b, int64_t ldb,
                      const float *bias, float *c, int64_t ldc);
    /* in [outer, red, inner] -> out[outer, inner] (+)= scale * sum over red. */
    void (*reduce_sum)(float *out, const float *in, int64_t outer, int64_t red,
                       int64_t inner, float scale, bool acc);
    /* out [outer, d, inner] = (log_)softmax of in over the middle dim. */
    void (*softmax)(float *out, const float *in, int64_t outer, int64_t d,
                    int64_t inner, bool log);
    /* gin (+)= backward of (log_)softmax given its output y and gout, all
     * [outer, d, inner]. */
    void (*softmax_bwd)(float *gin, const float *gout, const float *y, int64_t outer,
                        int64_t d, int64_t inner, bool log, bool acc);
    /* Cross entropy of logits [n, c] against target [n] (int32), mean over
     * non-ignored rows. Writes loss[0], count[0] (rows counted, as float)
     * and lse[n] (log-sum-exp of each row). Returns the index of the first
     * target outside [0, c) that is not ignore_index, or -1 (a backend that
     * cannot check returns -1). known_valid: the caller knows every target
     * is in [0, c); a backend that checks at a cost (a read-back from the
     * GPU) may skip it. */
    int64_t (*cross_entropy)(float *loss, float *count, float *lse, const float *logits,
                             const int32_t *target, int64_t n, int64_t c, int ignore_index,
                             bool known_valid);
    /* dlogits [n, c] (+)= gout[0] / count[0] * (softmax(logits) - onehot(target)). */
    void (*cross_entropy_bwd)(float *dlogits, const float *gout, const float *count,
                              const float *lse, const float *logits, const int32_t *target,
                              int64_t n, int64_t c, int ignore_index, bool acc);
    /* out[outer, inner] (int32) = argmax over the middle dim of in [outer, d, inner]. */
    void (*argmax)(int32_t *out, const float *in, int64_t outer, int64_t d, int64_t inner);
} dg_backend_math;

/* ---- optim: optimizer updates on n contiguous floats, in place ----------- */
typedef struct {
    /* torch.optim.SGD's update of p with gradient g and momentum buffer buf
     * (unused when momentum == 0); first_step: buf = g. */
    void (*sgd_step)(float *p, const float *g, float *buf, int64_t n, float lr,
                     float momentum, float dampening, float weight_decay, bool nesterov,
                     bool first_step);
    /* Adam / AdamW (decoupled) on p with moments m, v and (amsgrad, else
     * NULL) vmax. step_size = lr / bc1, bc2_sqrt = sqrt(1 - beta2^t). */
    void (*adam_step)(float *p, const float *g, float *m, float *v, float *vmax,
                      int64_t n, float lr, float beta1, float beta2, float eps,
                      float weight_decay, bool decoupled, double step_size,
                      double bc2_sqrt);
    /* Optional (graphs): adam_step with the constants that change every
     * step read from device memory when the kernel runs, so a replayed
     * graph sees each step's: consts[0] = (float)-step_size, consts[1] =
     * (float)bc2_sqrt, consts[2] = (float)(1 - lr * weight_decay)
     * (adam_step's roundings). */
    void (*adam_step_dev)(float *p, const float *g, float *m, float *v, float *vmax,
                          int64_t n, float beta1, float beta2, float eps, float weight_decay,
                          bool decoupled, const float *consts);
} dg_backend_optim;

/* ---- stream: asynchronous work (optional family: NULL on the CPU) -------- */
typedef struct {
    /* Page-locked ("pinned") host memory: copies from it (from_host) and
     * into it (to_host_async) run asynchronously on the stream. NULL and
     * an error on failure. */
    void *(*alloc_host)(size_t nbytes);
    void (*free_host)(void *p);
    /* Queue a device-to-host copy into pinned dst and return at once; dst
     * holds the data once an event recorded afterwards is done. */
    void (*to_host_async)(void *dst, const void *src, size_t nbytes);

    /* Events mark a point in the stream: event_record marks the work queued
     * so far, event_done polls it, event_wait blocks the host until it has
     * run. An event that was never recorded is done. */
    void *(*event_new)(void);
    void (*event_free)(void *ev);
    void (*event_record)(void *ev);
    bool (*event_done)(void *ev);
    void (*event_wait)(void *ev);

    /* Graphs (graph.c): between capture_begin and capture_end the work
     * queued on the stream is recorded instead of run. capture_end returns
     * an executable graph, or NULL and an error; graph_launch queues one
     * replay; graph_free waits for the stream and releases the graph.
     * capture_begin returns false and sets an error on failure. */
    bool (*capture_begin)(void);
    void *(*capture_end)(void);
    void (*graph_launch)(void *exec);
    void (*graph_free)(void *exec);
} dg_backend_stream;

/* ---- cnn: convolution, pooling, dropout, batch norm (ops_cnn.c) ---------
 * Shapes use dg_conv_geom; images are NCHW. */
typedef struct {
    /* col [c*kh*kw, n*oh*ow] = the patches of x [n, c, h, w]. */
    void (*im2col)(float *col, const float *x, const dg_conv_geom *g);
    /* x [n, c, h, w] (+)= the patches col [c*kh*kw, n*oh*ow] folded back. */
    void (*col2im)(float *x, const float *col, const dg_conv_geom *g, bool acc);
    /* Max pooling: out and idx [n, c, oh, ow]; idx = h*w index of the max
     * in its input plane (first one on ties, NaN wins; padding is -inf). */
    void (*maxpool_fwd)(float *out, int32_t *idx, const float *x, const dg_conv_geom *g);
    /* dx [n, c, h, w] (+)= dout routed to idx. */
    void (*maxpool_bwd)(float *dx, const float *dout, const int32_t *idx,
                        const dg_conv_geom *g, bool acc);
    /* Average pooling, count_include_pad=True (divisor kh*kw). */
    void (*avgpool_fwd)(float *out, const float *x, const dg_conv_geom *g);
    void (*avgpool_bwd)(float *dx, const float *dout, const dg_conv_geom *g, bool acc);
    /* mask[n]: 0 with probability p, else 1/(1-p); a counter-based hash of
     * (seed, i) (DG_DROPOUT_MIX), the same numbers on every backend. */
    void (*dropout_mask)(float *mask, int64_t n, float p, uint64_t seed);
    /* Batch norm over x [n, c, hw], per channel; mean and invstd [c].
     * training: mean and invstd from the batch (biased variance), and when
     * run_mean is not NULL the running stats [c] move by momentum (unbiased
     * variance); else mean = run_mean and invstd = 1/sqrt(run_var + eps). */
    void (*bn_stats)(float *mean, float *invstd, float *run_mean, float *run_var,
                     const float *x, int64_t n, int64_t c, int64_t hw, float momentum,
                     float eps, bool training);
    /* y [n, c, hw] = (x - mean) * invstd * w + b; w, b [c] may be NULL (1 and 0). */
    void (*bn_fwd)(float *y, const float *x, const float *mean, const float *invstd,
                   const float *w, const float *b, int64_t n, int64_t c, int64_t hw);
    /* Optional (NULL: bn_stats then bn_fwd): both in one call, training
     * mode, so that a backend can normalize each channel while its rows are
     * still in cache. */
    void (*bn_stats_fwd)(float *y, float *mean, float *invstd, float *run_mean, float *run_var,
                         const float *x, const float *w, const float *b, int64_t n, int64_t c,
                         int64_t hw, float momentum, float eps);
    /* Optional (NULL: no fusion): batch norm then 2x2 max pooling with
     * stride 2 over x [n, c, h, wd] (h and wd even), as bn_stats, bn_fwd
     * and maxpool_fwd would give, without storing the batch-norm output;
     * out and idx [n, c, h/2, wd/2]; and its backward (dx [n, c, h, wd]
     * overwritten, may be NULL). nn.c's Sequential uses it for BatchNorm2d
     * followed by MaxPool2d(2). */
    void (*bn_pool_fwd)(float *out, int32_t *idx, float *mean, float *invstd, float *run_mean,
                        float *run_var, const float *x, const float *w, const float *b, int64_t n,
                        int64_t c, int64_t h, int64_t wd, float momentum, float eps, bool training,
                        bool relu);
    void (*bn_pool_bwd)(float *dx, float *dw, float *db, const float *gout, const int32_t *idx,
                        const float *x, const float *mean, const float *invstd, const float *w,
                        int64_t n, int64_t c, int64_t h, int64_t wd, bool training, bool acc_dw,
                        bool acc_db);
    /* Gradients of bn_fwd (training: through the batch stats too). dx, dw,
     * db may be NULL; acc_* add instead of overwrite. */
    void (*bn_bwd)(float *dx, float *dw, float *db, const float *dy, const float *x,
                   const float *mean, const float *invstd, const float *w, int64_t n,
                   int64_t c, int64_t hw, bool training, bool acc_dx, bool acc_dw, bool acc_db);
} dg_backend_cnn;

/* ---- seq: sequences and attention (ops_seq.c; optional family) ----------
 * NULL slots (the whole family on CUDA for now): the op fails with
 * "<op>: not implemented on <backend>". */
typedef enum {
    DG_ACT_TANH,
    DG_ACT_SIGMOID,
    DG_ACT_GELU,      /* exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) */
} dg_act;

/* One recurrent layer over a time-major padded batch: t steps, b samples,
 * h hidden units; g = 4h gates for an LSTM (i, f, g, o), 3h for a GRU
 * (r, z, n), PyTorch's order. */
typedef struct dg_rnn_geom {
    int64_t t, b, h, g;
    bool gru;
} dg_rnn_geom;

/* The buffers of seq.rnn_fwd and seq.rnn_bwd (all contiguous, allocated by
 * the engine; none aliases another). */
typedef struct dg_rnn_bufs {
    const float *xp;      /* [t, b, g] input projection x W_ih^T + b_ih */
    const float *w_hh;    /* [g, h] */
    const float *b_hh;    /* [g], or NULL (no bias) */
    const float *h0;      /* [b, h] initial state */
    const float *c0;      /* [b, h] (LSTM; NULL for a GRU) */
    const int32_t *len;   /* [b] valid steps of each sample, in [1, t] */
    float *y;             /* [t, b, h] output: the state, 0 at t >= len */
    float *hn, *cn;       /* [b, h] the state at each sample's last valid step (cn: LSTM) */
    /* saved for the backward, written by rnn_fwd: */
    float *hs;            /* [t+1, b, h] h before step 0 (h0) and after each step
                             (a padded step keeps the previous one) */
    float *cs;            /* [t+1, b, h] the same for c (LSTM; NULL for a GRU) */
    float *gates;         /* [t, b, g] the activated gates (i, f, g, o or r, z, n) */
    float *hhn;           /* [t, b, h] GRU: h W_hn^T + b_hn (NULL for an LSTM) */
} dg_rnn_bufs;

/* Scaled dot-product attention over (batch, head) blocks: q [lq, d],
 * k [lk, d], v [lk, d] and o [lq, d] of each block sit at
 * base + b * s[0] + h * s[1], row i at + i * s[2], the last dim
 * contiguous; so q, k and v may be column blocks of one packed
 * projection [B, L, 3E] and o the merged heads [B, L, E], with no copies. */
typedef struct dg_attn_geom {
    int64_t b, h, lq, lk, d;
    int64_t q[3], k[3], v[3], o[3];   /* strides: batch, head, row */
    float scale;                      /* applied to q k^T */
    bool causal;                      /* key j > query i is masked */
} dg_attn_geom;

/* Workspace of seq.attn_fwd and seq.attn_bwd, in floats: padded copies of
 * the blocks (rows of a multiple of DG_ATTN_LANES) and the transposed
 * score block. */
#define DG_ATTN_LANES 16
#define DG_ATTN_PAD(n) (((n) + DG_ATTN_LANES - 1) / DG_ATTN_LANES * DG_ATTN_LANES)
#define DG_ATTN_WORK(geom)                                                            \
    ((geom)->d * DG_ATTN_PAD((geom)->lq) + 2 * (geom)->lk * DG_ATTN_PAD((geom)->lq) +   \
     ((geom)->lk + 2 * (geom)->lq) * DG_ATTN_PAD((geom)->d) + DG_ATTN_PAD((geom)->lq))

/* Workspace of seq.rnn_bwd, in floats. */
#define DG_RNN_BWD_WORK(geom) ((geom)->b * ((geom)->h * (3 + (geom)->t) + (geom)->g))

typedef struct {
    /* y[n] = act(x[n]); y == x allowed. */
    void (*act_fwd)(dg_act act, float *y, const float *x, int64_t n);
    /* gx[n] (+)= gy * act'(x), given x and y = act(x) from act_fwd (the
     * CPU's GELU reads Phi(x) back as y / x). */
    void (*act_bwd)(dg_act act, float *gx, const float *gy, const float *x, const float *y,
                    int64_t n, bool acc);
    /* Layer norm of each row of x [rows, d]: y = (x - mean) * rstd * w + b,
     * biased variance, rstd = 1/sqrt(var + eps); w, b [d] may be NULL (1
     * and 0). Writes mean and rstd [rows] for the backward. */
    void (*layer_norm_fwd)(float *y, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int64_t rows, int64_t d, float eps);
    /* Its gradients; dx, dw, db may be NULL; acc_*: add instead of write. */
    void (*layer_norm_bwd)(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *mean, const float *rstd, const float *w, int64_t rows,
                           int64_t d, bool acc_dx, bool acc_dw, bool acc_db);
    /* Pick along the middle dim: x [outer, nx, inner] -> out [outer, ni, inner],
     * out[o, i, j] = x[o, k, j] with k = idx[i] (index_select, embedding:
     * idx [ni]) or, per_element, k = idx[(o * ni + i) * inner + j]
     * (torch.gather: idx [outer, ni, inner]). The engine checked every k
     * is in [0, nx). */
    void (*index_fwd)(float *out, const float *x, const int32_t *idx, int64_t outer, int64_t nx,
                      int64_t ni, int64_t inner, bool per_element);
    /* Its gradient, always added: dx [outer, nx, inner] += dout scattered
     * back; picks with k == skip add nothing (embedding's padding_idx; -1:
     * none). */
    void (*index_bwd)(float *dx, const float *dout, const int32_t *idx, int64_t outer,
                      int64_t nx, int64_t ni, int64_t inner, bool per_element, int64_t skip);
    /* m[n] = cond != 0 (0 or 1), cond a uint8 or int32 view (its own
     * strides, 0 where broadcast) of n elements, row-major over its shape. */
    void (*mask_from)(uint8_t *m, const dg_tensor *cond);
    /* out[n] = m ? a : b; out may be a or b. */
    void (*where)(float *out, const uint8_t *m, const float *a, const float *b, int64_t n);
    /* ga[n] = m ? g : 0, gb[n] = m ? 0 : g; either may be NULL. */
    void (*where_bwd)(float *ga, float *gb, const uint8_t *m, const float *g, int64_t n);
    /* One LSTM or GRU layer over every step (see dg_rnn_bufs): per step one
     * GEMM h W_hh^T for the whole batch, then the cell. A sample's padded
     * steps (t >= len) leave its state as it was and output 0. */
    void (*rnn_fwd)(const dg_rnn_geom *g, const dg_rnn_bufs *s);
    /* Its backward from dy [t, b, h], dhn, dcn [b, h] (each may be NULL:
     * zero): dxp [t, b, g] written (0 at padded steps); dw_hh [g, h] and
     * db_hh [g] (NULL: not wanted) written or, acc_w / acc_b, added; dh0,
     * dc0 [b, h] written (NULL: not wanted). work: DG_RNN_BWD_WORK floats. */
    void (*rnn_bwd)(const dg_rnn_geom *g, const dg_rnn_bufs *s, const float *dy,
                    const float *dhn, const float *dcn, float *dxp, float *dw_hh, bool acc_w,
                    float *db_hh, bool acc_b, float *dh0, float *dc0, float *work);
    /* o = softmax(scale q k^T, masked) v for every (batch, head); p
     * (b h lq lk floats) gets the probabilities for the backward, in the
     * kernel's own layout. pad [b, lk]
     * (1: that key is masked for every query) may be NULL. A query row with
     * every key masked gets p 0 and o 0 (not NaN). work: DG_ATTN_WORK. */
    void (*attn_fwd)(const dg_attn_geom *g, const float *q, const float *k, const float *v,
                     const uint8_t *pad, float *o, float *p, float *work);
    /* Its backward from go (o's strides): gq, gk, gv (q's, k's and v's
     * strides; each may be NULL: not wanted) written, or added where
     * acc_q / acc_k / acc_v. Two of them may be one buffer (q, k, v the
     * same tensor) when the later ones add. work: DG_ATTN_WORK. */
    void (*attn_bwd)(const dg_attn_geom *g, const float *q, const float *k, const float *v,
                     const float *p, const float *go, float *gq, float *gk, float *gv, bool acc_q,
                     bool acc_k, bool acc_v, float *work);
} dg_backend_seq;

/* The hash behind cnn.dropout_mask on every backend: 24 uniform bits of
 * (seed, i) as a float in [0, 1). */
#define DG_DROPOUT_MIX(seed, i, out)                                         \
    do {                                                                     \
        uint64_t dg_z_ = (seed) + ((uint64_t)(i) + 1) * 0x9E3779B97F4A7C15ull; \
        dg_z_ = (dg_z_ ^ (dg_z_ >> 30)) * 0xBF58476D1CE4E5B9ull;             \
        dg_z_ = (dg_z_ ^ (dg_z_ >> 27)) * 0x94D049BB133111EBull;             \
        dg_z_ ^= dg_z_ >> 31;                                                \
        (out) = (float)(dg_z_ >> 40) * (1.0f / 16777216.0f);                 \
    } while (0)

/* ---- lowp: bfloat16 storage and products (amp.c; optional family) --------
 * bf16 values are uint16_t bit patterns (the upper half of a float32).
 * NULL slots (the whole family on CUDA for now): dg_autocast_begin and
 * dg_astype fail with "...: bfloat16 is not implemented on <backend>". */

/* Bytes of workspace gemm_bf16 needs for an m x n x k product: enough to
 * pack both operands as bf16 pairs (AVX512_BF16 kernels) or to widen both
 * to float32 (the portable kernel). */
#define DG_GEMM_BF16_WORK(m, n, k)                                                  \
    ((size_t)4 * ((size_t)(m) * (size_t)(k) + (size_t)(k) * (size_t)(n)) +        \
     (size_t)2 * ((size_t)(m) + (size_t)(n) + 64) * ((size_t)(k) + 2) + 256)

typedef struct {
    /* dst[n] = src[n] rounded to bfloat16, to nearest even; NaN stays a
     * (quiet) NaN with its sign, infinities and subnormals round like any
     * other value (no flush to zero). No aliasing. */
    void (*f32_to_bf16)(uint16_t *dst, const float *src, int64_t n);
    /* dst[n] = src[n] widened to float32 (exact). No aliasing. */
    void (*bf16_to_f32)(float *dst, const uint16_t *src, int64_t n);
    /* Row-major C[m, n] = alpha * op(A) op(B) + beta * C in float32 with A
     * and B bfloat16: the products are exact and summed in float32 (math.
     * gemm's conventions for trans_*, lda, ldb, ldc, in elements; beta == 0
     * does not read C). work: DG_GEMM_BF16_WORK(m, n, k) bytes of device
     * memory, 64-byte aligned, allocated by the engine (contents are
     * scratch). C never aliases A, B or work. */
    void (*gemm_bf16)(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                      const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                      float *c, int64_t ldc, void *work);
} dg_backend_lowp;

typedef struct dg_backend {
    const char *name;
    dg_device device;
    /* Optional: NULL if the backend needs no setup. Called by dg_ctx_new
     * before the first use; returns false and records an error
     * (dg_set_error) when the device cannot be used, e.g. no GPU. */
    bool (*init)(void);

    dg_backend_mem mem;
    dg_backend_math math;
    dg_backend_optim optim;
    dg_backend_stream stream;   /* all NULL on a synchronous backend */
    dg_backend_cnn cnn;
    dg_backend_seq seq;         /* optional family: all NULL on CUDA for now */
    dg_backend_lowp lowp;       /* optional family: all NULL on CUDA for now */
} dg_backend;

extern const dg_backend dg_backend_cpu;    /* cpu/backend_cpu.c */
#ifdef DG_HAVE_CUDA
extern const dg_backend dg_backend_cuda;   /* cuda/backend_cuda.cu */
#endif
/* Backends register here (the CUDA backend fills its slot when built). */
const dg_backend *dg_backend_get(dg_device device);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_BACKEND_IMPL_H */
