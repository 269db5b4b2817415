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
     * ignore_index, or -1 (a backend that cannot check returns -1). */
    int64_t (*cross_entropy)(float *loss, float *count, float *lse, const float *logits,
                             const int32_t *target, int64_t n, int64_t c, int ignore_index);
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
} dg_backend;

extern const dg_backend dg_backend_cpu;
#ifdef DG_HAVE_CUDA
extern const dg_backend dg_backend_cuda;   /* backend_cuda.cu */
#endif
/* Backends register here (the CUDA backend fills its slot when built). */
const dg_backend *dg_backend_get(dg_device device);

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
};

/* Helpers shared by ops.c, nn.c and optim.c */
dg_tensor *dg__tensor_alloc(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape);
dg_tensor *dg__view(dg_tensor *base, int ndim, const int64_t *shape,
                    const int64_t *stride, void *data);
dg_node *dg__record(dg_ctx *ctx, const char *name, dg_backward_fn fn, dg_tensor *out,
                    int nin, dg_tensor *const *in);
bool dg__needs_grad(dg_ctx *ctx, int nin, dg_tensor *const *in);
void *dg__persist_alloc(dg_ctx *ctx, size_t nbytes);
/* calloc'd host memory that dg_ctx_free releases */
void *dg__ctx_calloc(dg_ctx *ctx, size_t nbytes);
void dg__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);

#endif /* DGRAD_IMPL_H */
