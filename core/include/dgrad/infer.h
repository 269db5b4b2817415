/* dgrad/infer.h - inference: a trained model run forward, without autograd.
 *
 * A dg_infer_model is a graph of inference ops (Gemm, Conv, batch norm
 * with its running statistics, pools, ReLU, Flatten, ...) and its weights
 * in one float blob. It comes from a module (below: its weights copied, so
 * the module may be freed) or from an ONNX file (dg_onnx_load in
 * dgrad/onnx.h), and is read-only once made.
 *
 * Threads: a model may be shared by any number of threads. Each thread
 * (worker) runs it through its own dg_infer_ctx, which owns a dgrad
 * context; on the CPU that context's weight tensors are views of the
 * model's blob (one copy of the weights for all workers), on a GPU the
 * weights are copied to the device once per context. A dg_infer_ctx is
 * used by one thread at a time.
 *
 * Memory: a run's activations live in the context's step arena, reset at
 * the start of the next run. dg_infer_ctx_new runs the model once at its
 * max_batch, so that later runs of at most max_batch samples allocate
 * nothing (dg_infer_ctx_mallocs stays put); a larger batch works and grows
 * the arena once.
 *
 * Semantics: eval mode throughout (batch norm uses the running statistics,
 * dropout is the identity), dim 0 of the input and output is the batch.
 */
#ifndef DGRAD_INFER_H
#define DGRAD_INFER_H

#include "dgrad/nn.h"
#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_infer_model dg_infer_model;   /* opaque, read-only once made */
typedef struct dg_infer_ctx dg_infer_ctx;       /* opaque, one per worker */

/* The model m computes in eval mode, for inputs [batch, sample_shape...]
 * (ndim dims per sample, e.g. {784} or {1, 28, 28}). m must be a module
 * dg_module_get_info describes: a Sequential (nested ones too) of Linear,
 * Conv2d, BatchNorm2d, MaxPool2d, AvgPool2d, ReLU, Flatten and Dropout, or
 * one of those alone. Weights and running statistics are copied. NULL and
 * a message naming the module when one is of another kind or the shapes
 * do not fit ("module 3 (Linear(in_features=512, ...)): input has 128
 * features"). */
dg_infer_model *dg_infer_model_from_module(dg_module *m, int ndim, const int64_t *sample_shape);

/* Loads a checkpoint (dgrad/checkpoint.h: a file, or a directory's newest
 * one) into the parameters of ctx and the buffers of m, which ctx holds,
 * then makes the model as dg_infer_model_from_module. The checkpoint must
 * be of this model (same parameter and buffer shapes); its optimizer state
 * is ignored. */
dg_infer_model *dg_infer_model_from_checkpoint(dg_ctx *ctx, dg_module *m, int ndim,
                                               const int64_t *sample_shape, const char *path);

void dg_infer_model_free(dg_infer_model *m);

/* One sample's input and output shape (without the batch dim) into shape;
 * returns the number of dims. */
int dg_infer_model_input_shape(const dg_infer_model *m, int64_t shape[DG_MAX_DIMS]);
int dg_infer_model_output_shape(const dg_infer_model *m, int64_t shape[DG_MAX_DIMS]);
/* Floats per sample of input and output. */
int64_t dg_infer_model_input_size(const dg_infer_model *m);
int64_t dg_infer_model_output_size(const dg_infer_model *m);
/* Number of ops and the ONNX name of op i ("Conv"), for summaries. */
int dg_infer_model_num_ops(const dg_infer_model *m);
const char *dg_infer_model_op(const dg_infer_model *m, int i);
/* Floats in the weight blob. */
size_t dg_infer_model_num_weights(const dg_infer_model *m);

/* A worker context on device, warmed up at max_batch (>= 1). NULL and a
 * message if the device cannot be opened. m must outlive it. */
dg_infer_ctx *dg_infer_ctx_new(const dg_infer_model *m, dg_device device, int64_t max_batch);
void dg_infer_ctx_free(dg_infer_ctx *c);

/* Forward of batch samples: input is batch * input_size floats (host,
 * row-major), output gets batch * output_size floats. It starts by
 * clearing this thread's error message (dg_clear_error), so a failure
 * reports its own cause: DG_ERR for batch < 1 or NULL buffers, or the
 * failing op's message prefixed with the model and node. */
dg_status dg_infer_run(dg_infer_ctx *c, const float *input, int64_t batch, float *output);

/* System allocations of the context's arena so far (see above). */
uint64_t dg_infer_ctx_mallocs(const dg_infer_ctx *c);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_INFER_H */
