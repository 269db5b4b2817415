/* nn.c - modules. Each kind supplies a forward function; Sequential chains
 * its children. Modules live in their context's memory. */
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "impl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef dg_tensor *(*dg_forward_fn)(dg_module *m, dg_tensor *x);

struct dg_module {
    dg_ctx *ctx;
    dg_forward_fn forward;
    char name[96];
    bool training;
    dg_tensor *weight, *bias;
    dg_module **children;
    int nchildren;
    dg_tensor **params;      /* this module's and its children's, in order */
    int nparams;
};

static dg_module *module_new(dg_ctx *ctx, dg_forward_fn fwd) {
    dg_module *m = dg__ctx_calloc(ctx, sizeof *m);
    m->ctx = ctx;
    m->forward = fwd;
    m->training = true;
    return m;
}

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

static dg_tensor *sequential_forward(dg_module *m, dg_tensor *x) {
    for (int i = 0; i < m->nchildren && x; i++) x = dg_module_forward(m->children[i], x);
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
    return i >= 0 && i < m->nchildren ? m->children[i] : NULL;
}
