/* impl.h - engine internals shared by the .c files of core/src and the backends.
 * Not installed. */
#ifndef DGRAD_IMPL_H
#define DGRAD_IMPL_H

#include "dgrad/tensor.h"
#include "dgrad/ops.h"

/* Hot CPU loops are compiled for several x86-64 levels (AVX-512, AVX2,
 * baseline) and the best one is picked at load time. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(DG_NO_CLONES)
#define DG_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DG_HOT
#endif

/* ---- backend table ------------------------------------------------------
 * One table per device. Every kernel works on device memory. Tensors passed
 * to kernels are float32 unless stated. "acc" means out += result instead of
 * out = result. Views carry their own shape and strides (in elements); a
 * broadcast input has stride 0 along broadcast dims. */

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

struct dg_conv_geom;   /* below, with the convolution slots */

typedef struct dg_backend {
    const char *name;
    dg_device device;

    /* optional: NULL if the backend needs no setup. Called by dg_ctx_new
     * before the first use; returns false and records an error
     * (dg_set_error) when the device cannot be used, e.g. no GPU. */
    bool (*init)(void);

    /* memory */
    void *(*alloc)(size_t nbytes);          /* NULL on failure */
    void (*free)(void *p);
    void (*to_host)(void *dst, const void *src, size_t nbytes);
    void (*from_host)(void *dst, const void *src, size_t nbytes);
    void (*copy)(void *dst, const void *src, size_t nbytes);   /* device to device */
    void (*memset0)(void *dst, size_t nbytes);
    void (*fill)(float *dst, int64_t n, float value);
    void (*synchronize)(void);

    /* elementwise */
    /* out (+)= alpha * op(a, b), iterating over out's shape; out, a and b
     * may be strided views (a, b with broadcast strides). */
    void (*binary)(dg_binop op, const dg_tensor *out, const dg_tensor *a,
                   const dg_tensor *b, float alpha, bool acc);
    /* out = op(a) on n contiguous elements. */
    void (*unary)(dg_unop op, float *out, const float *a, int64_t n, float alpha);

    /* Row-major C (+)= alpha * op(A) op(B): C is m x n, op(A) m x k. */
    void (*gemm)(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                 float beta, float *c, int64_t ldc);

    /* in viewed as [outer, red, inner] (contiguous): out[outer, inner]
     * (+)= scale * sum over red. */
    void (*reduce_sum)(float *out, const float *in, int64_t outer, int64_t red,
                       int64_t inner, float scale, bool acc);
    /* (log_)softmax over the middle dim of [outer, d, inner]. */
    void (*softmax)(float *out, const float *in, int64_t outer, int64_t d,
                    int64_t inner, bool log);
    /* gin (+)= backward of (log_)softmax given its output y and gout. */
    void (*softmax_bwd)(float *gin, const float *gout, const float *y, int64_t outer,
                        int64_t d, int64_t inner, bool log, bool acc);
    /* Cross entropy, mean over non-ignored rows. Writes loss[0], count[0]
     * (rows counted, as float) and lse[n] (log-sum-exp of each row).
     * Returns the index of the first target outside [0, c) that is not
     * ignore_index, or -1 (a backend that cannot check returns -1).
     * known_valid: the caller knows every target is in [0, c); a backend
     * that checks at a cost (a read-back from the GPU) may skip it. */
    int64_t (*cross_entropy)(float *loss, float *count, float *lse, const float *logits,
                             const int32_t *target, int64_t n, int64_t c, int ignore_index,
                             bool known_valid);
    /* dlogits (+)= gout[0] / count[0] * (softmax(logits) - onehot(target)). */
    void (*cross_entropy_bwd)(float *dlogits, const float *gout, const float *count,
                              const float *lse, const float *logits, const int32_t *target,
                              int64_t n, int64_t c, int ignore_index, bool acc);
    /* out[outer, inner] = argmax over the middle dim of [outer, d, inner]. */
    void (*argmax)(int32_t *out, const float *in, int64_t outer, int64_t d, int64_t inner);

    /* optimizers, on n contiguous floats */
    void (*sgd_step)(float *p, const float *g, float *buf, int64_t n, float lr,
                     float momentum, float dampening, float weight_decay, bool nesterov,
                     bool first_step);
    /* Adam / AdamW. step_size = lr / bc1, bc2_sqrt = sqrt(1 - beta2^t). */
    void (*adam_step)(float *p, const float *g, float *m, float *v, float *vmax,
                      int64_t n, float lr, float beta1, float beta2, float eps,
                      float weight_decay, bool decoupled, double step_size,
                      double bc2_sqrt);

    /* ---- optional slots: NULL on the CPU; callers check ---------------- */

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

    /* adam_step with the constants that change every step read from device
     * memory when the kernel runs, so a replayed graph sees each step's:
     * consts[0] = (float)-step_size, consts[1] = (float)bc2_sqrt,
     * consts[2] = (float)(1 - lr * weight_decay) (adam_step's roundings). */
    void (*adam_step_dev)(float *p, const float *g, float *m, float *v, float *vmax,
                          int64_t n, float beta1, float beta2, float eps, float weight_decay,
                          bool decoupled, const float *consts);

    /* ---- convolutional nets (ops_cnn.c): CPU in conv_cpu.c, CUDA in
     * cuda_conv.cu. Shapes use dg_conv_geom (below); images are NCHW. ---- */
    /* col [c*kh*kw, n*oh*ow] = the patches of x [n, c, h, w]. */
    void (*im2col)(float *col, const float *x, const struct dg_conv_geom *g);
    /* x [n, c, h, w] (+)= the patches col [c*kh*kw, n*oh*ow] folded back. */
    void (*col2im)(float *x, const float *col, const struct dg_conv_geom *g, bool acc);
    /* Max pooling: out and idx [n, c, oh, ow]; idx = h*w index of the max
     * in its input plane (first one on ties, NaN wins; padding is -inf). */
    void (*maxpool_fwd)(float *out, int32_t *idx, const float *x, const struct dg_conv_geom *g);
    /* dx [n, c, h, w] (+)= dout routed to idx. */
    void (*maxpool_bwd)(float *dx, const float *dout, const int32_t *idx,
                        const struct dg_conv_geom *g, bool acc);
    /* Average pooling, count_include_pad=True (divisor kh*kw). */
    void (*avgpool_fwd)(float *out, const float *x, const struct dg_conv_geom *g);
    void (*avgpool_bwd)(float *dx, const float *dout, const struct dg_conv_geom *g, bool acc);
    /* mask[i] = 0 with probability p, else 1/(1-p); a counter-based hash of
     * (seed, i), the same numbers on every backend. */
    void (*dropout_mask)(float *mask, int64_t n, float p, uint64_t seed);
    /* Batch norm over x [n, c, hw], per channel. training: mean and invstd
     * from the batch (biased variance), and when run_mean is not NULL the
     * running stats move by momentum (unbiased variance); else mean =
     * run_mean and invstd = 1/sqrt(run_var + eps). */
    void (*bn_stats)(float *mean, float *invstd, float *run_mean, float *run_var,
                     const float *x, int64_t n, int64_t c, int64_t hw, float momentum,
                     float eps, bool training);
    /* y = (x - mean) * invstd * w + b; w, b may be NULL (1 and 0). */
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
     * and its backward (dx overwritten, may be NULL). nn.c's Sequential
     * uses it for BatchNorm2d followed by MaxPool2d(2). */
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
} dg_backend;

/* Geometry of a 2-D convolution or pooling over NCHW images: input
 * [n, c, h, w], kernel kh x kw, stride, padding, dilation, output oh x ow. */
typedef struct dg_conv_geom {
    int64_t n, c, h, w;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int64_t oh, ow;
} dg_conv_geom;

extern const dg_backend dg_backend_cpu;
#ifdef DG_HAVE_CUDA
extern const dg_backend dg_backend_cuda;   /* backend_cuda.cu */
#endif
/* Backends register here (the CUDA backend fills its slot when built). */
const dg_backend *dg_backend_get(dg_device device);

#ifdef DG_HAVE_CUDA
/* backend_cuda.cu, for the NCCL communicator (comm/src/comm_nccl.c):
 * the stream every op is queued on (a cudaStream_t) and the device, both
 * valid once the backend's init succeeded; and a hint for the choice of
 * device: this process's rank among the ranks of its node, used when
 * neither DG_DEVICE nor a launcher's local-rank variable is set. The hint
 * counts only before the backend's init. */
void *dg__cuda_stream(void);
int dg__cuda_device(void);
void dg__cuda_set_local_rank(int local_rank);
#endif

/* ---- arena -------------------------------------------------------------- */

typedef struct dg_arena_chunk {
    struct dg_arena_chunk *next;
    void *mem;
    size_t size, used;
} dg_arena_chunk;

typedef struct {
    const dg_backend *be;      /* NULL: host memory via malloc */
    dg_arena_chunk *chunks;    /* newest first */
    size_t capacity;
    size_t high_water;         /* bytes used in the busiest step */
    uint64_t mallocs;
} dg_arena;

void *dg_arena_alloc(dg_arena *a, size_t nbytes);   /* 64-byte aligned */
void dg_arena_reset(dg_arena *a);
void dg_arena_release(dg_arena *a);

/* ---- autograd records ---------------------------------------------------- */

typedef void (*dg_backward_fn)(dg_node *n);

struct dg_node {
    dg_backward_fn backward;
    const char *name;
    int64_t index;             /* position on the tape */
    bool consumed;             /* its backward has run */
    dg_tensor *out;
    dg_tensor *in[3];
    int nin;
    dg_tensor *saved[2];
    float f;
    int64_t i[DG_MAX_DIMS + 2];
};

/* ---- context ------------------------------------------------------------- */

typedef struct dg_persist {
    struct dg_persist *next;
    void *data;                /* device memory */
    dg_tensor *header;         /* host memory, may be NULL */
} dg_persist;

struct dg_ctx {
    dg_device device;
    const dg_backend *be;
    dg_arena meta;             /* tensor structs and nodes (host) */
    dg_arena data;             /* tensor data (device) */
    bool grad_enabled;

    /* tape */
    dg_node **tape;
    int64_t tape_len, tape_cap;
    uint64_t tape_gen;         /* bumped by dg_ctx_reset_step */
    uint64_t bw_gen;           /* bumped by each dg_backward */

    /* parameters */
    dg_tensor **params;
    int nparams, params_cap;
    float *param_buf, *grad_buf;
    size_t param_numel, param_cap;

    dg_persist *persist;       /* persistent allocations */
    void **owned;              /* host objects freed with the context */
    int nowned, owned_cap;

    uint64_t rng[4];

    dg_grad_ready_fn grad_ready;
    void *grad_ready_user;

    struct dg_graph *capture;  /* the graph being captured, or NULL (graph.c) */
    uint64_t i32_writes;       /* int32 writes through the API (and graph replays) */
};

/* Helpers shared by ops.c, nn.c and optim.c */
/* A contiguous tensor header over data (not owned), all else zero. */
void dg__tensor_header_init(dg_tensor *t, dg_ctx *ctx, dg_dtype dtype, int ndim,
                            const int64_t *shape, void *data);
dg_tensor *dg__tensor_alloc(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape);
dg_tensor *dg__view(dg_tensor *base, int ndim, const int64_t *shape,
                    const int64_t *stride, void *data);
dg_node *dg__record(dg_ctx *ctx, const char *name, dg_backward_fn fn, dg_tensor *out,
                    int nin, dg_tensor *const *in);
bool dg__needs_grad(dg_ctx *ctx, int nin, dg_tensor *const *in);
/* True when t is int32 and every value is known, without reading the
 * device, to lie in [0, c): written from the host by dg_tensor_from or
 * dg_tensor_copy_from_host (or copied from such a tensor), and no int32
 * write in the context since. Views and op outputs are unknown. */
bool dg__values_below(const dg_tensor *t, int64_t c);
/* For backward rules: the gradient buffer of t (NULL if t needs none),
 * allocated uninitialized on first use. *acc: it already holds a gradient
 * of this pass (add to it) or belongs to a parameter; else overwrite it. */
dg_tensor *dg__grad_slot(dg_tensor *t, bool *acc);
void *dg__persist_alloc(dg_ctx *ctx, size_t nbytes);
/* calloc'd host memory that dg_ctx_free releases */
void *dg__ctx_calloc(dg_ctx *ctx, size_t nbytes);
void dg__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);

/* graph.c, while ctx->capture is set: run fn(user) on the host before each
 * replay of the graph being captured (an optimizer advances its step count
 * and writes its bias corrections to the device there). Registering the
 * same fn and user twice fails the capture. */
typedef void (*dg_replay_hook)(void *user);
void dg__graph_on_replay(dg_ctx *ctx, dg_replay_hook fn, void *user);
/* Fail the capture under way: dg_graph_end_capture returns DG_ERR with this
 * message. The first message wins. */
void dg__graph_fail(dg_ctx *ctx, const char *fmt, ...) DG_PRINTF(2, 3);

/* BatchNorm2d then MaxPool2d(2) in one op (ops_cnn.c), for nn.c's
 * Sequential: whether the backend and x allow it, and the op, equal to
 * max_pool2d(batch_norm2d(x, ...), 2) (relu: and then relu, which is the
 * same as relu before the pool) with the batch-norm output never stored
 * (a call it does not allow is an assert). */
bool dg__bn_pool_fusable(const dg_tensor *x, const dg_tensor *running_mean, const dg_tensor *weight,
                         bool training);
dg_tensor *dg__batch_norm_max_pool2x2(dg_tensor *x, dg_tensor *running_mean, dg_tensor *running_var,
                                      dg_tensor *weight, dg_tensor *bias, bool training,
                                      float momentum, float eps, bool relu);

#endif /* DGRAD_IMPL_H */
