/* dgrad/tensor.h - tensors, the engine context and define-by-run autograd.
 *
 * Memory model
 * ------------
 * A dg_ctx owns all memory. It has three kinds of storage:
 *  - parameters: one contiguous float buffer for every parameter, and one
 *    for their gradients, in registration order (dg_param_new). A parameter
 *    tensor is a view into it. A data-parallel all-reduce covers the whole
 *    gradient buffer, or buckets of it.
 *  - persistent tensors (dg_tensor_persistent): optimizer state, buffers;
 *    they live until dg_ctx_free.
 *  - the step arena: every other tensor (inputs, activations, gradients of
 *    activations, autograd nodes). dg_ctx_reset_step() releases all of it at
 *    once. The arena keeps its memory, so a steady-state training step makes
 *    no malloc.
 *
 * Tensors created by ops are arena tensors: they are invalid after
 * dg_ctx_reset_step(). Call it once per training step, after the optimizer.
 *
 * Errors: ops return NULL on bad input (a shape that does not fit, say) and
 * record a one-line message (dgrad/base.h). An op given a NULL input returns
 * NULL, so a caller may check once at the end of a chain.
 */
#ifndef DGRAD_TENSOR_H
#define DGRAD_TENSOR_H

#include "dgrad/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DG_MAX_DIMS 6

typedef enum {
    DG_F32 = 0,
    DG_F16,
    DG_BF16,
    DG_I32,
    DG_I64,
    DG_U8,
    DG_DTYPE_COUNT
} dg_dtype;

typedef enum {
    DG_CPU = 0,
    DG_CUDA,
    DG_DEVICE_COUNT
} dg_device;

typedef struct dg_ctx dg_ctx;     /* opaque engine state */
typedef struct dg_node dg_node;   /* opaque autograd record */

/* A tensor is a strided view of memory. The fields are open for reading;
 * change them only through the API. Strides are in elements. */
typedef struct dg_tensor {
    dg_ctx *ctx;
    dg_dtype dtype;
    dg_device device;
    int ndim;                       /* 0 for a scalar */
    int64_t shape[DG_MAX_DIMS];
    int64_t stride[DG_MAX_DIMS];
    void *data;                     /* first element of the view */
    struct dg_tensor *grad;         /* NULL until backward reaches it */
    dg_node *grad_fn;               /* NULL for leaves */
    bool requires_grad;
    bool is_param;                  /* a view into the flat parameter buffer */
    int param_index;                /* registration order, -1 if not a param */
    const char *name;               /* parameters only, may be NULL */
    /* autograd bookkeeping (internal) */
    uint64_t tape_gen;
    int64_t tape_first_use;
    uint64_t grad_gen;              /* backward pass that wrote .grad */
    uint64_t ready_gen;             /* backward pass that declared it final */
    bool has_grad;                  /* parameters: see dg_param_has_grad */
    /* int32 values written from the host: their range, valid while no
     * int32 write has happened in the context since (range_epoch), so
     * that cross entropy need not read labels back from a GPU (internal) */
    uint64_t range_epoch;           /* 0: unknown */
    int32_t range_min, range_max;
} dg_tensor;

/* ---- context ---------------------------------------------------------- */

/* A new engine context on the given device. NULL and an error if the device
 * has no backend in this build or cannot be opened. */
dg_ctx *dg_ctx_new(dg_device device);
void dg_ctx_free(dg_ctx *ctx);
dg_device dg_ctx_device(const dg_ctx *ctx);

/* Release every arena tensor and the autograd tape. Parameters, their
 * gradients and persistent tensors stay; the .grad of a persistent tensor
 * that requires grad (an arena tensor: this pass's gradient) becomes NULL. */
void dg_ctx_reset_step(dg_ctx *ctx);

/* Bytes the arena holds (its capacity), for tests of steady-state memory. */
size_t dg_ctx_arena_capacity(const dg_ctx *ctx);
/* Number of times the arena asked the system for memory since creation. */
uint64_t dg_ctx_arena_mallocs(const dg_ctx *ctx);

/* Grad mode (autograd recording). Returns the previous mode. */
bool dg_set_grad_enabled(dg_ctx *ctx, bool enabled);
bool dg_is_grad_enabled(const dg_ctx *ctx);

/* Threads used by the CPU backend (BLAS). n <= 0 leaves the default. */
void dg_set_num_threads(int n);

/* ---- seeded RNG (one stream per context) ------------------------------ */

void dg_manual_seed(dg_ctx *ctx, uint64_t seed);
/* Uniform float in [0, 1) and a raw 64-bit draw from the context stream. */
float dg_rand_uniform(dg_ctx *ctx);
uint64_t dg_rand_u64(dg_ctx *ctx);
/* Save and restore the RNG state (for checkpoints). */
void dg_rng_get_state(const dg_ctx *ctx, uint64_t state[4]);
void dg_rng_set_state(dg_ctx *ctx, const uint64_t state[4]);

/* ---- creation --------------------------------------------------------- */

/* Arena tensor, contiguous, contents uninitialized. */
dg_tensor *dg_tensor_new(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape);
dg_tensor *dg_zeros(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape);
dg_tensor *dg_full(dg_ctx *ctx, int ndim, const int64_t *shape, float value);
dg_tensor *dg_scalar(dg_ctx *ctx, float value);
/* Arena tensor filled from host memory (copied, dtype-sized elements). */
dg_tensor *dg_tensor_from(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape,
                          const void *host_data);
/* Persistent tensor (lives until dg_ctx_free), zero-filled. */
dg_tensor *dg_tensor_persistent(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape);

/* A float32 parameter, registered in order, with requires_grad set. Its data
 * and gradient are views into the flat buffers; both start at zero. */
dg_tensor *dg_param_new(dg_ctx *ctx, const char *name, int ndim, const int64_t *shape);

/* Registered parameters in registration order (array owned by ctx). */
dg_tensor **dg_ctx_params(dg_ctx *ctx, int *count);
/* The flat parameter and gradient buffers (device memory) and their length
 * in floats. Pointers stay valid until another parameter is registered. */
float *dg_ctx_param_buffer(dg_ctx *ctx, size_t *numel);
float *dg_ctx_grad_buffer(dg_ctx *ctx, size_t *numel);
/* Offset of a parameter in the flat buffers, in floats. */
size_t dg_param_offset(const dg_tensor *param);
/* Set every parameter gradient to zero and to "none" (dg_param_has_grad
 * false), as PyTorch's zero_grad(set_to_none=True). */
void dg_ctx_zero_grad(dg_ctx *ctx);
/* Whether parameter p has a gradient: backward reached it since its
 * gradient was last zeroed (PyTorch: p.grad is not None, with the default
 * zero_grad of PyTorch 2). A new parameter has none. The buffer behind it
 * always exists and reads 0 while there is none. Optimizers skip
 * parameters without a gradient; DDP gives a parameter one when backward
 * reached it on any rank. dg_param_set_has_grad is for a gradient written
 * by hand (PyTorch: p.grad = ...). */
bool dg_param_has_grad(const dg_tensor *p);
void dg_param_set_has_grad(dg_tensor *p, bool has);

/* In-place initializers (no autograd): uniform in [lo, hi) from ctx's RNG,
 * normal(mean, std), and a constant. */
void dg_init_uniform(dg_tensor *t, float lo, float hi);
void dg_init_normal(dg_tensor *t, float mean, float std);
void dg_init_constant(dg_tensor *t, float value);

/* ---- inspection ------------------------------------------------------- */

int64_t dg_numel(const dg_tensor *t);
bool dg_is_contiguous(const dg_tensor *t);
size_t dg_dtype_size(dg_dtype dtype);
const char *dg_dtype_name(dg_dtype dtype);
/* "[64, 10]" into buf; returns buf. */
const char *dg_shape_str(const dg_tensor *t, char *buf, size_t n);
/* Copy the (possibly strided) tensor to host memory as contiguous
 * elements of its dtype. */
void dg_tensor_to_host(const dg_tensor *t, void *dst);
/* Copy contiguous host elements into t (same dtype and numel). */
void dg_tensor_copy_from_host(dg_tensor *t, const void *src);
/* Copy src's elements into dst on the device: same context, dtype and
 * element count, both contiguous; no autograd. Queued like an op (e.g. a
 * batch from dg_loader_next into a captured graph's fixed inputs, see
 * dgrad/graph.h). DG_ERR when they do not match. */
dg_status dg_tensor_copy(dg_tensor *dst, const dg_tensor *src);
/* Element i (row-major over the view) as float; for tests and printing. */
float dg_item_at(const dg_tensor *t, int64_t i);
/* The value of a one-element tensor. */
float dg_item(const dg_tensor *t);

/* ---- autograd --------------------------------------------------------- */

/* Run backward from a one-element tensor. Gradients are added into .grad of
 * every parameter it depends on (they accumulate until zeroed); other
 * tensors get this pass's gradient in .grad. Several losses of one step may
 * each run backward, but the graph behind a node runs backward only once
 * per step (PyTorch without retain_graph): a second pass through it is
 * DG_ERR. Also DG_ERR if loss is not a scalar or needs no grad. */
dg_status dg_backward(dg_tensor *loss);

/* A new tensor sharing storage, cut off from the graph. */
dg_tensor *dg_detach(dg_tensor *t);

/* The name of the op that made t, as recorded for backward (PyTorch's
 * t.grad_fn.name()): "dg_matmul", "dg_relu", or for ops that a Sequential
 * fused, the names joined by '+' ("dg_batch_norm2d+dg_max_pool2d+dg_relu");
 * NULL for a leaf or a tensor made without grad. */
const char *dg_grad_fn_name(const dg_tensor *t);

/* Called during backward as soon as a parameter's gradient is final for
 * this backward pass (every use of it has been processed). The data-parallel
 * layer starts bucket all-reduces from here. NULL removes the hook. */
typedef void (*dg_grad_ready_fn)(dg_tensor *param, void *user);
void dg_ctx_set_grad_ready_hook(dg_ctx *ctx, dg_grad_ready_fn fn, void *user);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_TENSOR_H */
