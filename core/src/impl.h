/* impl.h - engine internals shared by the .c files of core/src and the backends.
 * Not installed. */
#ifndef DGRAD_IMPL_H
#define DGRAD_IMPL_H

#include "dgrad/tensor.h"
#include "dgrad/ops.h"

#include "backend-impl.h"

#ifdef DG_HAVE_CUDA
/* cuda/backend_cuda.cu, for the NCCL communicator (comm/src/comm_nccl.c):
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
    dg_dtype autocast;         /* DG_BF16 inside dg_autocast_begin/end, else DG_F32 (amp.c) */
    void *amp_work;            /* lowp.gemm_bf16 workspace, grown by amp.c (persistent) */
    size_t amp_work_bytes;
};

/* Helpers shared by ops.c, nn.c and optim.c */
/* A contiguous tensor header over data (not owned), all else zero. */
void dg__tensor_header_init(dg_tensor *t, dg_ctx *ctx, dg_dtype dtype, int ndim,
                            const int64_t *shape, void *data);
dg_tensor *dg__tensor_alloc(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape);
/* t viewed with shape (ndim dims, broadcast from the right: stride 0 on
 * new and size-1 dims); a struct, not an arena tensor (ops.c). */
dg_tensor dg__expand(const dg_tensor *t, int ndim, const int64_t *shape);
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
