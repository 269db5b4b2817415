/* nn.c - modules. Each kind supplies a forward function; Sequential chains
 * its children. Modules live in their context's memory. */
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "impl.h"
#include "nn-impl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

dg_module *dg__module_new(dg_ctx *ctx, dg_forward_fn fwd) {
    dg_module *m = dg__ctx_calloc(ctx, sizeof *m);
    m->ctx = ctx;
    m->forward = fwd;
    m->training = true;
    return m;
}

static dg_module *module_new(dg_ctx *ctx, dg_forward_fn fwd) { return dg__module_new(ctx, fwd); }

static dg_tensor *linear_forward(dg_module *m, dg_tensor *x) {
    return dg_linear(x, m->weight, m->bias);
}

dg_module *dg_nn_linear(dg_ctx *ctx, int64_t in_features, int64_t out_features, bool bias) {
    if (!ctx) return NULL;
    if (in_features <= 0 || out_features <= 0) {
        dg_set_error("dg_nn_linear: in_features and out_features must be positive, got %lld and %lld",
                     (long long)in_features, (long long)out_features);
        return NULL;
    }
    dg_module *m = module_new(ctx, linear_forward);
    snprintf(m->name, sizeof m->name, "Linear(in_features=%lld, out_features=%lld, bias=%s)",
             (long long)in_features, (long long)out_features, bias ? "True" : "False");
    int64_t ws[2] = { out_features, in_features };
    m->weight = dg_param_new(ctx, "weight", 2, ws);
    /* kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    float bound = 1.0f / sqrtf((float)in_features);
    dg_init_uniform(m->weight, -bound, bound);
    m->params = dg__ctx_calloc(ctx, 2 * sizeof *m->params);
    m->params[m->nparams++] = m->weight;
    if (bias) {
        m->bias = dg_param_new(ctx, "bias", 1, &out_features);
        dg_init_uniform(m->bias, -bound, bound);
        m->params[m->nparams++] = m->bias;
    }
    return m;
}

static dg_tensor *relu_forward(dg_module *m, dg_tensor *x) {
    (void)m;
    return dg_relu(x);
}

dg_module *dg_nn_relu(dg_ctx *ctx) {
    if (!ctx) return NULL;
    dg_module *m = module_new(ctx, relu_forward);
    snprintf(m->name, sizeof m->name, "ReLU()");
    return m;
}

static dg_tensor *batch_norm_forward(dg_module *m, dg_tensor *x);
static dg_tensor *max_pool_forward(dg_module *m, dg_tensor *x);

static bool is_pool2x2(const dg_module *m) {
    if (m->forward != max_pool_forward) return false;
    const int64_t *c = m->cfg;
    return c[0] == 2 && c[1] == 2 && c[2] == 2 && c[3] == 2 && c[4] == 0 && c[5] == 0;
}

/* BatchNorm2d directly followed by MaxPool2d(2) (kernel 2, stride 2, no
 * padding), with or without a ReLU before or after the pool, runs as one
 * op where the backend has it (the CPU's): the same outputs, gradients and
 * running statistics, without storing the batch-norm output. Returns how
 * many of mods[0..n) it takes (0: none, 2 or 3); *relu: one of them is it. */
static int fuse_bn_pool(dg_module *const *mods, int n, const dg_tensor *x, bool *relu) {
    const dg_module *bn = mods[0];
    if (n < 2 || bn->forward != batch_norm_forward || x->ctx != bn->ctx) return 0;
    int take;
    if (is_pool2x2(mods[1])) {
        *relu = n > 2 && mods[2]->forward == relu_forward;
        take = *relu ? 3 : 2;
    } else if (n > 2 && mods[1]->forward == relu_forward && is_pool2x2(mods[2])) {
        *relu = true;
        take = 3;
    } else {
        return 0;
    }
    return dg__bn_pool_fusable(x, bn->bufs[0], bn->weight, bn->training) ? take : 0;
}

static dg_tensor *sequential_forward(dg_module *m, dg_tensor *x) {
    for (int i = 0; i < m->nchildren && x; i++) {
        dg_module *c = m->children[i];
        bool relu = false;
        int take = fuse_bn_pool(m->children + i, m->nchildren - i, x, &relu);
        if (take) {
            x = dg__batch_norm_max_pool2x2(x, c->bufs[0], c->bufs[1], c->weight, c->bias, c->training,
                                           c->fcfg[1], c->fcfg[2], relu);
            i += take - 1;
            continue;
        }
        x = dg_module_forward(c, x);
    }
    return x;
}

dg_module *dg_nn_sequential(dg_ctx *ctx, int n, dg_module *const *mods) {
    if (!ctx) return NULL;
    for (int i = 0; i < n; i++) {
        if (!mods[i]) {
            dg_set_error("dg_nn_sequential: module %d is NULL", i);
            return NULL;
        }
        if (mods[i]->ctx != ctx) {
            dg_set_error("dg_nn_sequential: module %d belongs to another context", i);
            return NULL;
        }
    }
    dg_module *m = module_new(ctx, sequential_forward);
    snprintf(m->name, sizeof m->name, "Sequential(%d modules)", n);
    m->children = dg__ctx_calloc(ctx, (size_t)(n ? n : 1) * sizeof *m->children);
    m->nchildren = n;
    int total = 0;
    for (int i = 0; i < n; i++) {
        m->children[i] = mods[i];
        total += mods[i]->nparams;
    }
    m->params = dg__ctx_calloc(ctx, (size_t)(total ? total : 1) * sizeof *m->params);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < mods[i]->nparams; k++) m->params[m->nparams++] = mods[i]->params[k];
    return m;
}

dg_tensor *dg_module_forward(dg_module *m, dg_tensor *x) {
    if (!m || !x) return NULL;
    return m->forward(m, x);
}

int dg_module_parameters(dg_module *m, dg_tensor ***out) {
    if (out) *out = m->params;
    return m->nparams;
}

void dg_module_train(dg_module *m, bool train) {
    m->training = train;
    for (int i = 0; i < m->nchildren; i++) dg_module_train(m->children[i], train);
}

bool dg_module_is_training(const dg_module *m) { return m->training; }
const char *dg_module_name(const dg_module *m) { return m->name; }

dg_module *dg_module_child(dg_module *m, int i) {
    return m && i >= 0 && i < m->nchildren ? m->children[i] : NULL;
}

/* ---- convolutional nets ----------------------------------------------------- */

static dg_tensor *conv2d_forward(dg_module *m, dg_tensor *x) {
    return dg_conv2d(x, m->weight, m->bias, m->cfg, m->cfg + 2, m->cfg + 4, m->cfg[6]);
}

dg_module *dg_nn_conv2d(dg_ctx *ctx, int64_t in_channels, int64_t out_channels,
                        const int64_t kernel[2], const int64_t *stride, const int64_t *padding,
                        const int64_t *dilation, int64_t groups, bool bias) {
    if (!ctx) return NULL;
    if (in_channels <= 0 || out_channels <= 0 || !kernel || kernel[0] <= 0 || kernel[1] <= 0 ||
        groups <= 0 || in_channels % groups || out_channels % groups) {
        dg_set_error("dg_nn_conv2d: bad in_channels %lld, out_channels %lld, kernel or groups %lld "
                     "(all positive, channels divisible by groups)",
                     (long long)in_channels, (long long)out_channels, (long long)groups);
        return NULL;
    }
    dg_module *m = module_new(ctx, conv2d_forward);
    int64_t *c = m->cfg;
    c[0] = stride ? stride[0] : 1;
    c[1] = stride ? stride[1] : 1;
    c[2] = padding ? padding[0] : 0;
    c[3] = padding ? padding[1] : 0;
    c[4] = dilation ? dilation[0] : 1;
    c[5] = dilation ? dilation[1] : 1;
    c[6] = groups;
    snprintf(m->name, sizeof m->name,
             "Conv2d(%lld, %lld, kernel_size=(%lld, %lld), stride=(%lld, %lld), padding=(%lld, %lld))",
             (long long)in_channels, (long long)out_channels, (long long)kernel[0],
             (long long)kernel[1], (long long)c[0], (long long)c[1], (long long)c[2], (long long)c[3]);
    int64_t ws[4] = { out_channels, in_channels / groups, kernel[0], kernel[1] };
    m->weight = dg_param_new(ctx, "weight", 4, ws);
    float bound = 1.0f / sqrtf((float)(ws[1] * ws[2] * ws[3]));
    dg_init_uniform(m->weight, -bound, bound);
    m->params = dg__ctx_calloc(ctx, 2 * sizeof *m->params);
    m->params[m->nparams++] = m->weight;
    if (bias) {
        m->bias = dg_param_new(ctx, "bias", 1, &out_channels);
        dg_init_uniform(m->bias, -bound, bound);
        m->params[m->nparams++] = m->bias;
    }
    return m;
}

static dg_tensor *max_pool_forward(dg_module *m, dg_tensor *x) {
    return dg_max_pool2d(x, m->cfg, m->cfg + 2, m->cfg + 4);
}

static dg_tensor *avg_pool_forward(dg_module *m, dg_tensor *x) {
    return dg_avg_pool2d(x, m->cfg, m->cfg + 2, m->cfg + 4);
}

static dg_module *pool_new(dg_ctx *ctx, bool max, const int64_t kernel[2], const int64_t *stride,
                           const int64_t *padding) {
    if (!ctx) return NULL;
    if (!kernel || kernel[0] <= 0 || kernel[1] <= 0) {
        dg_set_error("%s: kernel sizes must be positive", max ? "dg_nn_max_pool2d" : "dg_nn_avg_pool2d");
        return NULL;
    }
    dg_module *m = module_new(ctx, max ? max_pool_forward : avg_pool_forward);
    int64_t *c = m->cfg;
    c[0] = kernel[0];
    c[1] = kernel[1];
    c[2] = stride ? stride[0] : kernel[0];
    c[3] = stride ? stride[1] : kernel[1];
    c[4] = padding ? padding[0] : 0;
    c[5] = padding ? padding[1] : 0;
    snprintf(m->name, sizeof m->name, "%s(kernel_size=(%lld, %lld), stride=(%lld, %lld), padding=(%lld, %lld))",
             max ? "MaxPool2d" : "AvgPool2d", (long long)c[0], (long long)c[1], (long long)c[2],
             (long long)c[3], (long long)c[4], (long long)c[5]);
    return m;
}

dg_module *dg_nn_max_pool2d(dg_ctx *ctx, const int64_t kernel[2], const int64_t *stride,
                            const int64_t *padding) {
    return pool_new(ctx, true, kernel, stride, padding);
}

dg_module *dg_nn_avg_pool2d(dg_ctx *ctx, const int64_t kernel[2], const int64_t *stride,
                            const int64_t *padding) {
    return pool_new(ctx, false, kernel, stride, padding);
}

static dg_tensor *dropout_forward(dg_module *m, dg_tensor *x) {
    return dg_dropout(x, m->fcfg[0], m->training);
}

dg_module *dg_nn_dropout(dg_ctx *ctx, float p) {
    if (!ctx) return NULL;
    if (!(p >= 0.0f && p <= 1.0f)) {
        dg_set_error("dg_nn_dropout: probability %g is outside [0, 1]", p);
        return NULL;
    }
    dg_module *m = module_new(ctx, dropout_forward);
    m->fcfg[0] = p;
    snprintf(m->name, sizeof m->name, "Dropout(p=%g)", p);
    return m;
}

static dg_tensor *batch_norm_forward(dg_module *m, dg_tensor *x) {
    return dg_batch_norm2d(x, m->bufs[0], m->bufs[1], m->weight, m->bias, m->training, m->fcfg[1],
                           m->fcfg[2]);
}

dg_module *dg_nn_batch_norm2d(dg_ctx *ctx, int64_t num_features) {
    if (!ctx) return NULL;
    if (num_features <= 0) {
        dg_set_error("dg_nn_batch_norm2d: num_features must be positive, got %lld",
                     (long long)num_features);
        return NULL;
    }
    dg_module *m = module_new(ctx, batch_norm_forward);
    snprintf(m->name, sizeof m->name, "BatchNorm2d(%lld, eps=1e-05, momentum=0.1, affine=True)",
             (long long)num_features);
    m->fcfg[1] = 0.1f;
    m->fcfg[2] = 1e-5f;
    m->weight = dg_param_new(ctx, "weight", 1, &num_features);
    dg_init_constant(m->weight, 1.0f);
    m->bias = dg_param_new(ctx, "bias", 1, &num_features);
    m->params = dg__ctx_calloc(ctx, 2 * sizeof *m->params);
    m->params[m->nparams++] = m->weight;
    m->params[m->nparams++] = m->bias;
    m->bufs[0] = dg_tensor_persistent(ctx, DG_F32, 1, &num_features);   /* zeros */
    m->bufs[1] = dg_tensor_persistent(ctx, DG_F32, 1, &num_features);
    dg_init_constant(m->bufs[1], 1.0f);
    m->nbufs = 2;
    return m;
}

static dg_tensor *flatten_forward(dg_module *m, dg_tensor *x) {
    (void)m;
    return dg_flatten(x, 1, -1);
}

dg_module *dg_nn_flatten(dg_ctx *ctx) {
    if (!ctx) return NULL;
    dg_module *m = module_new(ctx, flatten_forward);
    snprintf(m->name, sizeof m->name, "Flatten(start_dim=1, end_dim=-1)");
    return m;
}

static int count_buffers(const dg_module *m) {
    int n = m->nbufs;
    for (int i = 0; i < m->nchildren; i++) n += count_buffers(m->children[i]);
    return n;
}

static void collect_buffers(const dg_module *m, dg_tensor **out, int *k) {
    for (int i = 0; i < m->nbufs; i++) out[(*k)++] = m->bufs[i];
    for (int i = 0; i < m->nchildren; i++) collect_buffers(m->children[i], out, k);
}

int dg_module_buffers(dg_module *m, dg_tensor ***out) {
    if (!m->all_bufs) {
        int n = count_buffers(m);
        m->all_bufs = dg__ctx_calloc(m->ctx, (size_t)(n ? n : 1) * sizeof *m->all_bufs);
        collect_buffers(m, m->all_bufs, &m->nall_bufs);
    }
    if (out) *out = m->all_bufs;
    return m->nall_bufs;
}

/* ---- introspection ------------------------------------------------------- */

void dg_module_get_info(const dg_module *m, dg_module_info *out) {
    DG_ASSERT(m != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    const int64_t *c = m->cfg;
    if (m->kind != DG_MODULE_OTHER) {   /* seq.c's families */
        out->kind = m->kind;
        out->num_children = m->nchildren;
        out->weight = m->weight;
        out->bias = m->bias;
        out->eps = m->fcfg[2];
        return;
    }
    if (m->forward == sequential_forward) {
        out->kind = DG_MODULE_SEQUENTIAL;
        out->num_children = m->nchildren;
    } else if (m->forward == linear_forward) {
        out->kind = DG_MODULE_LINEAR;
    } else if (m->forward == conv2d_forward) {
        out->kind = DG_MODULE_CONV2D;
        for (int i = 0; i < 2; i++) {
            out->kernel[i] = m->weight->shape[2 + i];
            out->stride[i] = c[i];
            out->padding[i] = c[2 + i];
            out->dilation[i] = c[4 + i];
        }
        out->groups = c[6];
    } else if (m->forward == batch_norm_forward) {
        out->kind = DG_MODULE_BATCH_NORM2D;
        out->running_mean = m->bufs[0];
        out->running_var = m->bufs[1];
        out->momentum = m->fcfg[1];
        out->eps = m->fcfg[2];
    } else if (m->forward == max_pool_forward || m->forward == avg_pool_forward) {
        out->kind = m->forward == max_pool_forward ? DG_MODULE_MAX_POOL2D : DG_MODULE_AVG_POOL2D;
        for (int i = 0; i < 2; i++) {
            out->kernel[i] = c[i];
            out->stride[i] = c[2 + i];
            out->padding[i] = c[4 + i];
        }
    } else if (m->forward == relu_forward) {
        out->kind = DG_MODULE_RELU;
    } else if (m->forward == flatten_forward) {
        out->kind = DG_MODULE_FLATTEN;
    } else if (m->forward == dropout_forward) {
        out->kind = DG_MODULE_DROPOUT;
        out->p = m->fcfg[0];
    }
    if (out->kind == DG_MODULE_LINEAR || out->kind == DG_MODULE_CONV2D || out->kind == DG_MODULE_BATCH_NORM2D) {
        out->weight = m->weight;
        out->bias = m->bias;
    }
}
