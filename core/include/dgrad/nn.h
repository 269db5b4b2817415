/* dgrad/nn.h - modules: Linear, ReLU, Sequential.
 *
 * Modules belong to a context and are freed with it. Parameters are
 * registered in the context's flat buffer in construction order; a module's
 * parameters() lists them in PyTorch's registration order (for Linear:
 * weight, then bias).
 */
#ifndef DGRAD_NN_H
#define DGRAD_NN_H

#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_module dg_module;   /* opaque */

/* nn.Linear(in, out, bias): weight (out, in) and bias (out), both
 * initialized as PyTorch does: kaiming_uniform_(a=sqrt(5)) for the weight,
 * i.e. U(-1/sqrt(in), 1/sqrt(in)), and U(-1/sqrt(in), 1/sqrt(in)) for the
 * bias, drawn from the context's RNG. */
dg_module *dg_nn_linear(dg_ctx *ctx, int64_t in_features, int64_t out_features, bool bias);
dg_module *dg_nn_relu(dg_ctx *ctx);
/* Sequential over n modules (the array is copied). */
dg_module *dg_nn_sequential(dg_ctx *ctx, int n, dg_module *const *mods);

/* Forward pass; NULL on error (message recorded). */
dg_tensor *dg_module_forward(dg_module *m, dg_tensor *x);
/* Parameters of m and its children, in registration order. *out points to
 * an array owned by the module. Returns the count. */
int dg_module_parameters(dg_module *m, dg_tensor ***out);
/* Train or eval mode, recursively (dropout, batch norm use it). */
void dg_module_train(dg_module *m, bool train);
bool dg_module_is_training(const dg_module *m);
/* "Linear(in_features=784, out_features=50, bias=True)" style name. */
const char *dg_module_name(const dg_module *m);
/* Child i of a Sequential or a custom module (dg_nn_custom), or NULL. */
dg_module *dg_module_child(dg_module *m, int i);

/* ---- convolutional nets -------------------------------------------------- */
/* nn.Conv2d(in, out, kernel, stride, padding, dilation, groups, bias):
 * weight [out, in/groups, kh, kw] with kaiming_uniform_(a=sqrt(5)), i.e.
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in/groups*kh*kw, and the
 * bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)). stride, padding, dilation: {h, w},
 * NULL for PyTorch's defaults ({1,1}, {0,0}, {1,1}). */
dg_module *dg_nn_conv2d(dg_ctx *ctx, int64_t in_channels, int64_t out_channels,
                        const int64_t kernel[2], const int64_t *stride, const int64_t *padding,
                        const int64_t *dilation, int64_t groups, bool bias);
/* nn.MaxPool2d / nn.AvgPool2d: stride NULL = kernel, padding NULL = 0. */
dg_module *dg_nn_max_pool2d(dg_ctx *ctx, const int64_t kernel[2], const int64_t *stride,
                            const int64_t *padding);
dg_module *dg_nn_avg_pool2d(dg_ctx *ctx, const int64_t kernel[2], const int64_t *stride,
                            const int64_t *padding);
/* nn.Dropout(p): active in train mode only. */
dg_module *dg_nn_dropout(dg_ctx *ctx, float p);
/* nn.BatchNorm2d(c): weight 1, bias 0, buffers running_mean 0 and
 * running_var 1 (persistent tensors), momentum 0.1, eps 1e-5. */
dg_module *dg_nn_batch_norm2d(dg_ctx *ctx, int64_t num_features);
/* nn.Flatten(): dims 1..-1 into one. */
dg_module *dg_nn_flatten(dg_ctx *ctx);
/* Buffers (state that is not a parameter: batch norm's running stats) of
 * m and its children, in PyTorch's order. *out points to an array owned by
 * the module. Returns the count. A data-parallel program broadcasts them
 * from rank 0 at the start, like the parameters. */
int dg_module_buffers(dg_module *m, dg_tensor ***out);

/* ---- introspection (ONNX export, dgrad/onnx.h; inference, dgrad/infer.h) -- */
typedef enum {
    DG_MODULE_OTHER = 0,        /* a kind this API does not describe */
    DG_MODULE_SEQUENTIAL,
    DG_MODULE_LINEAR,
    DG_MODULE_CONV2D,
    DG_MODULE_BATCH_NORM2D,
    DG_MODULE_MAX_POOL2D,
    DG_MODULE_AVG_POOL2D,
    DG_MODULE_RELU,
    DG_MODULE_FLATTEN,
    DG_MODULE_DROPOUT,
    /* dgrad/nn_seq.h (inference and ONNX export do not support these) */
    DG_MODULE_LSTM,
    DG_MODULE_GRU,
    DG_MODULE_MULTIHEAD_ATTENTION,
    DG_MODULE_LAYER_NORM,        /* weight, bias [dim], eps */
    DG_MODULE_EMBEDDING,         /* weight [num, dim] */
    DG_MODULE_GELU,
    DG_MODULE_TANH,
    DG_MODULE_CUSTOM,            /* num_children */
} dg_module_kind;

/* What a module is and holds. The tensors are the module's own (not
 * copies); unused fields are zero or NULL. */
typedef struct {
    dg_module_kind kind;
    int num_children;              /* Sequential */
    dg_tensor *weight, *bias;      /* Linear [out, in], Conv2d [oc, ic/groups, kh, kw],
                                      BatchNorm2d [c]; bias may be NULL */
    dg_tensor *running_mean, *running_var;   /* BatchNorm2d [c] */
    int64_t kernel[2];             /* pools */
    int64_t stride[2], padding[2]; /* Conv2d, pools */
    int64_t dilation[2], groups;   /* Conv2d */
    float p;                       /* Dropout */
    float momentum, eps;           /* BatchNorm2d */
} dg_module_info;

/* Fills *out for m. */
void dg_module_get_info(const dg_module *m, dg_module_info *out);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_NN_H */
