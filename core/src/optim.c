/* optim.c - SGD, Adam, AdamW. The update formulas are torch.optim's
 * (PyTorch 1.13, single-tensor path); the arithmetic is the backend's. */
#include "dgrad/optim.h"
#include "impl.h"

#include <math.h>
#include <string.h>

enum { OPT_SGD, OPT_ADAM };

struct dg_optim {
    int kind;
    bool decoupled;            /* AdamW */
    dg_ctx *ctx;
    dg_tensor **params;
    int n;
    dg_sgd_opts sgd;
    dg_adam_opts adam;
    int64_t steps;
    int nslots;
    dg_tensor **state;         /* n * nslots, row per parameter */
};

dg_sgd_opts dg_sgd_defaults(float lr) {
    return (dg_sgd_opts){ .lr = lr };
}

dg_adam_opts dg_adam_defaults(void) {
    return (dg_adam_opts){ .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f };
}

dg_adam_opts dg_adamw_defaults(void) {
    dg_adam_opts o = dg_adam_defaults();
    o.weight_decay = 1e-2f;
    return o;
}

static dg_optim *optim_new(const char *name, dg_tensor *const *params, int n, int nslots) {
    if (n <= 0 || !params) {
        dg_set_error("%s: optimizer got an empty parameter list", name);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (!params[i] || !params[i]->is_param) {
            dg_set_error("%s: parameter %d is not a registered parameter", name, i);
            return NULL;
        }
        if (params[i]->ctx != params[0]->ctx) {
            dg_set_error("%s: parameters belong to different contexts", name);
            return NULL;
        }
    }
    dg_ctx *ctx = params[0]->ctx;
    dg_optim *o = dg__ctx_calloc(ctx, sizeof *o);
    o->ctx = ctx;
    o->n = n;
    o->params = dg__ctx_calloc(ctx, (size_t)n * sizeof *o->params);
    memcpy(o->params, params, (size_t)n * sizeof *o->params);
    o->nslots = nslots;
    o->state = dg__ctx_calloc(ctx, (size_t)(n * (nslots ? nslots : 1)) * sizeof *o->state);
    for (int i = 0; i < n; i++)
        for (int s = 0; s < nslots; s++)
            o->state[i * nslots + s] = dg_tensor_persistent(ctx, DG_F32, params[i]->ndim, params[i]->shape);
    return o;
}

dg_optim *dg_optim_sgd(dg_tensor *const *params, int n, dg_sgd_opts opts) {
    const char *name = "dg_optim_sgd";
    if (!(opts.lr >= 0.0f)) { dg_set_error("%s: invalid learning rate %g", name, opts.lr); return NULL; }
    if (!(opts.momentum >= 0.0f)) { dg_set_error("%s: invalid momentum %g", name, opts.momentum); return NULL; }
    if (!(opts.weight_decay >= 0.0f)) {
        dg_set_error("%s: invalid weight_decay %g", name, opts.weight_decay);
        return NULL;
    }
    if (opts.nesterov && (opts.momentum <= 0.0f || opts.dampening != 0.0f)) {
        dg_set_error("%s: nesterov momentum requires a momentum and zero dampening", name);
        return NULL;
    }
    dg_optim *o = optim_new(name, params, n, opts.momentum != 0.0f ? 1 : 0);
    if (!o) return NULL;
    o->kind = OPT_SGD;
    o->sgd = opts;
    return o;
}

static dg_optim *adam_new(const char *name, dg_tensor *const *params, int n, dg_adam_opts opts,
                          bool decoupled) {
    if (!(opts.lr >= 0.0f)) { dg_set_error("%s: invalid learning rate %g", name, opts.lr); return NULL; }
    if (!(opts.eps >= 0.0f)) { dg_set_error("%s: invalid epsilon %g", name, opts.eps); return NULL; }
    if (!(opts.beta1 >= 0.0f && opts.beta1 < 1.0f)) {
        dg_set_error("%s: invalid beta parameter at index 0: %g", name, opts.beta1);
        return NULL;
    }
    if (!(opts.beta2 >= 0.0f && opts.beta2 < 1.0f)) {
        dg_set_error("%s: invalid beta parameter at index 1: %g", name, opts.beta2);
        return NULL;
    }
    if (!(opts.weight_decay >= 0.0f)) {
        dg_set_error("%s: invalid weight_decay value %g", name, opts.weight_decay);
        return NULL;
    }
    dg_optim *o = optim_new(name, params, n, opts.amsgrad ? 3 : 2);
    if (!o) return NULL;
    o->kind = OPT_ADAM;
    o->adam = opts;
    o->decoupled = decoupled;
    return o;
}

dg_optim *dg_optim_adam(dg_tensor *const *params, int n, dg_adam_opts opts) {
    return adam_new("dg_optim_adam", params, n, opts, false);
}

dg_optim *dg_optim_adamw(dg_tensor *const *params, int n, dg_adam_opts opts) {
    return adam_new("dg_optim_adamw", params, n, opts, true);
}

void dg_optim_free(dg_optim *opt) {
    (void)opt;   /* memory belongs to the context */
}

void dg_optim_step(dg_optim *o) {
    const dg_backend *be = o->ctx->be;
    o->steps++;
    if (o->kind == OPT_SGD) {
        const dg_sgd_opts *s = &o->sgd;
        for (int i = 0; i < o->n; i++) {
            dg_tensor *p = o->params[i];
            float *buf = o->nslots ? o->state[i * o->nslots]->data : NULL;
            be->sgd_step(p->data, p->grad->data, buf, dg_numel(p), s->lr, s->momentum, s->dampening,
                         s->weight_decay, s->nesterov, o->steps == 1);
        }
        return;
    }
    const dg_adam_opts *a = &o->adam;
    double bc1 = 1.0 - pow((double)a->beta1, (double)o->steps);
    double bc2 = 1.0 - pow((double)a->beta2, (double)o->steps);
    double step_size = (double)a->lr / bc1;
    for (int i = 0; i < o->n; i++) {
        dg_tensor *p = o->params[i];
        dg_tensor **st = o->state + i * o->nslots;
        be->adam_step(p->data, p->grad->data, st[0]->data, st[1]->data, a->amsgrad ? st[2]->data : NULL,
                      dg_numel(p), a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, o->decoupled,
                      step_size, sqrt(bc2));
    }
}

void dg_optim_zero_grad(dg_optim *o) {
    for (int i = 0; i < o->n; i++) {
        dg_tensor *g = o->params[i]->grad;
        o->ctx->be->memset0(g->data, (size_t)dg_numel(g) * sizeof(float));
    }
}

float dg_optim_get_lr(const dg_optim *o) { return o->kind == OPT_SGD ? o->sgd.lr : o->adam.lr; }

void dg_optim_set_lr(dg_optim *o, float lr) {
    if (o->kind == OPT_SGD) o->sgd.lr = lr;
    else o->adam.lr = lr;
}

int64_t dg_optim_step_count(const dg_optim *o) { return o->steps; }
void dg_optim_set_step_count(dg_optim *o, int64_t steps) { o->steps = steps; }
int dg_optim_num_slots(const dg_optim *o) { return o->nslots; }

dg_tensor *dg_optim_state(dg_optim *o, int i, int slot) {
    if (i < 0 || i >= o->n || slot < 0 || slot >= o->nslots) return NULL;
    return o->state[i * o->nslots + slot];
}
