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
