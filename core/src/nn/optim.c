/* optim.c - SGD, Adam, AdamW. The update formulas are torch.optim's
 * (PyTorch 1.13, single-tensor path); the arithmetic is the backend's.
 *
 * One kernel per step, not one per parameter, when the parameters were
 * registered one after the other (all of a model's, usually): they are then
 * one range of the context's flat parameter and gradient buffers, and the
 * state is laid out the same way, so zero_grad is one memset and a step one
 * update over the range (PyTorch's foreach path does the same for launch
 * overhead on a GPU). The range includes the padding that keeps each
 * parameter 16-float aligned: it is zero in every buffer, and every rule
 * here maps zero parameter, gradient and state to zero, so it stays zero
 * (except Adam with eps = 0, which makes it NaN as it would any parameter
 * whose gradient is 0; no op reads the padding, and the optimizer never
 * writes the gradient buffer, which the all-reduce covers). */
#include "dgrad/optim.h"
#include "impl.h"

#include <math.h>
#include <stdlib.h>
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
    int64_t steps;             /* dg_optim_step calls */
    int64_t *psteps;           /* per parameter: updates taken (PyTorch's
                                  state['step']); behind while it had no grad */
    int nslots;
    dg_tensor **state;         /* n * nslots, row per parameter */
    bool flat;                 /* params are one range of the flat buffers */
    int64_t span;              /* flat: floats from params[0] to the end of params[n-1] */
    float *dev_consts;         /* Adam in a captured graph: device float[3]
                                  for adam_step_dev, or NULL */
    float host_consts[3];      /* their values for the next replay */
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
    o->psteps = dg__ctx_calloc(ctx, (size_t)n * sizeof *o->psteps);
    o->nslots = nslots;
    o->state = dg__ctx_calloc(ctx, (size_t)(n * (nslots ? nslots : 1)) * sizeof *o->state);
    o->flat = true;
    for (int i = 1; i < n; i++) o->flat &= params[i]->param_index == params[0]->param_index + i;
    if (!o->flat) {
        for (int i = 0; i < n; i++)
            for (int s = 0; s < nslots; s++)
                o->state[i * nslots + s] =
                    dg_tensor_persistent(ctx, DG_F32, params[i]->ndim, params[i]->shape);
        return o;
    }
    /* offsets within the parameter buffer do not change when it grows */
    const float *base = params[0]->data;
    o->span = (const float *)params[n - 1]->data + dg_numel(params[n - 1]) - base;
    for (int s = 0; s < nslots; s++) {
        float *buf = dg__persist_alloc(ctx, (size_t)o->span * sizeof(float));   /* zeroed */
        for (int i = 0; i < n; i++) {
            dg_tensor *t = dg__ctx_calloc(ctx, sizeof *t);   /* a view of buf, like params[i] */
            dg__tensor_header_init(t, ctx, DG_F32, params[i]->ndim, params[i]->shape,
                                   buf + ((const float *)params[i]->data - base));
            o->state[i * nslots + s] = t;
        }
    }
    return o;
}

/* The ranges one update covers: the whole span when flat, else each
 * parameter. Range i starts at params[i] and its state row. */
static int nranges(const dg_optim *o) { return o->flat ? 1 : o->n; }
static int64_t range_len(const dg_optim *o, int i) {
    return o->flat ? o->span : dg_numel(o->params[i]);
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
    /* allocated now: a graph capture cannot allocate */
    if (o->ctx->be->optim.adam_step_dev) o->dev_consts = dg__persist_alloc(o->ctx, sizeof o->host_consts);
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

/* Adam's bias corrections for step t, rounded as adam_step rounds them. */
static void adam_bias(const dg_optim *o, int64_t t, double *step_size, double *bc2_sqrt) {
    const dg_adam_opts *a = &o->adam;
    double bc1 = 1.0 - pow((double)a->beta1, (double)t);
    double bc2 = 1.0 - pow((double)a->beta2, (double)t);
    *step_size = (double)a->lr / bc1;
    *bc2_sqrt = sqrt(bc2);
}

/* Before each replay of a graph that captured this optimizer's step: the
 * step count advances and Adam's constants for it go to the device. */
static void on_replay(void *user) {
    dg_optim *o = user;
    o->steps++;
    for (int i = 0; i < o->n; i++) o->psteps[i]++;
    if (o->kind != OPT_ADAM) return;
    double ss, bc2;
    adam_bias(o, o->steps, &ss, &bc2);
    o->host_consts[0] = (float)(-ss);
    o->host_consts[1] = (float)bc2;
    o->host_consts[2] = (float)(1.0 - (double)o->adam.lr * (double)o->adam.weight_decay);
    /* from pageable memory: staged before the call returns */
    o->ctx->be->mem.from_host(o->dev_consts, o->host_consts, sizeof o->host_consts);
}

/* dg_optim_step inside a graph capture (dgrad/graph.h): the kernels read
 * what changes per step from device memory that on_replay writes. */
static void step_captured(dg_optim *o) {
    dg_ctx *ctx = o->ctx;
    const dg_backend *be = ctx->be;
    dg__graph_on_replay(ctx, on_replay, o);
    for (int i = 0; i < o->n; i++)
        if (!o->params[i]->has_grad || o->psteps[i] != o->steps) {
            dg__graph_fail(ctx, "dg_optim_step: parameter %d (%s) %s: a captured step updates every "
                                "parameter, so each needs a gradient at every step", o->params[i]->param_index,
                           o->params[i]->name ? o->params[i]->name : "unnamed",
                           o->params[i]->has_grad ? "skipped earlier steps" : "has no gradient");
            return;
        }
    if (o->kind == OPT_SGD) {
        const dg_sgd_opts *s = &o->sgd;
        if (o->nslots && o->steps == 0)
            dg__graph_fail(ctx, "dg_optim_step: SGD with momentum takes its first step "
                                "differently: take an eager step before the capture");
        for (int i = 0; i < nranges(o); i++) {
            dg_tensor *p = o->params[i];
            float *buf = o->nslots ? o->state[i * o->nslots]->data : NULL;
            be->optim.sgd_step(p->data, p->grad->data, buf, range_len(o, i), s->lr, s->momentum, s->dampening,
                         s->weight_decay, s->nesterov, false);
        }
        return;
    }
    if (!be->optim.adam_step_dev || !o->dev_consts) {
        dg__graph_fail(ctx, "dg_optim_step: the %s backend cannot capture Adam", be->name);
        return;
    }
    const dg_adam_opts *a = &o->adam;
    for (int i = 0; i < nranges(o); i++) {
        dg_tensor *p = o->params[i];
        dg_tensor **st = o->state + i * o->nslots;
        be->optim.adam_step_dev(p->data, p->grad->data, st[0]->data, st[1]->data,
                          a->amsgrad ? st[2]->data : NULL, range_len(o, i), a->beta1, a->beta2,
                          a->eps, a->weight_decay, o->decoupled, o->dev_consts);
    }
}

/* Whether an eager step can update the whole flat span in one call: every
 * parameter has a gradient and all are at the same step (the usual case).
 * Otherwise it goes parameter by parameter and skips those without a
 * gradient, as PyTorch skips p.grad None; their step counts stay behind. */
static bool step_whole(const dg_optim *o) {
    if (!o->flat) return false;
    for (int i = 0; i < o->n; i++)
        if (!o->params[i]->has_grad || o->psteps[i] != o->psteps[0]) return false;
    return true;
}

void dg_optim_step(dg_optim *o) {
    const dg_backend *be = o->ctx->be;
    if (o->ctx->capture) {
        step_captured(o);
        return;
    }
    o->steps++;
    bool whole = step_whole(o);
    for (int i = 0; i < (whole ? 1 : o->n); i++) {
        dg_tensor *p = o->params[i];
        if (!whole && !p->has_grad) continue;
        int64_t len = whole ? o->span : dg_numel(p), t = 0;
        if (whole)
            for (int j = 0; j < o->n; j++) t = ++o->psteps[j];
        else
            t = ++o->psteps[i];
        if (o->kind == OPT_SGD) {
            const dg_sgd_opts *s = &o->sgd;
            float *buf = o->nslots ? o->state[i * o->nslots]->data : NULL;
            be->optim.sgd_step(p->data, p->grad->data, buf, len, s->lr, s->momentum, s->dampening,
                               s->weight_decay, s->nesterov, t == 1);
            continue;
        }
        const dg_adam_opts *a = &o->adam;
        double step_size, bc2_sqrt;
        adam_bias(o, t, &step_size, &bc2_sqrt);
        dg_tensor **st = o->state + i * o->nslots;
        be->optim.adam_step(p->data, p->grad->data, st[0]->data, st[1]->data, a->amsgrad ? st[2]->data : NULL,
                            len, a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, o->decoupled, step_size,
                            bc2_sqrt);
    }
}

void dg_optim_zero_grad(dg_optim *o) {
    for (int i = 0; i < nranges(o); i++)
        o->ctx->be->mem.memset0(o->params[i]->grad->data, (size_t)range_len(o, i) * sizeof(float));
    for (int i = 0; i < o->n; i++) o->params[i]->has_grad = false;
}

float dg_optim_get_lr(const dg_optim *o) { return o->kind == OPT_SGD ? o->sgd.lr : o->adam.lr; }

void dg_optim_set_lr(dg_optim *o, float lr) {
    if (o->kind == OPT_SGD) o->sgd.lr = lr;
    else o->adam.lr = lr;
}

int64_t dg_optim_step_count(const dg_optim *o) { return o->steps; }
void dg_optim_set_step_count(dg_optim *o, int64_t steps) {
    o->steps = steps;
    for (int i = 0; i < o->n; i++) o->psteps[i] = steps;
}
int64_t dg_optim_param_step_count(const dg_optim *o, int i) {
    DG_ASSERT(i >= 0 && i < o->n);
    return o->psteps[i];
}
void dg_optim_set_param_step_count(dg_optim *o, int i, int64_t steps) {
    DG_ASSERT(i >= 0 && i < o->n && steps >= 0);
    o->psteps[i] = steps;
}
int dg_optim_num_slots(const dg_optim *o) { return o->nslots; }

dg_tensor *dg_optim_state(dg_optim *o, int i, int slot) {
    if (i < 0 || i >= o->n || slot < 0 || slot >= o->nslots) return NULL;
    return o->state[i * o->nslots + slot];
}

/* ---- momentum for schedulers, gradient clipping ------------------------------ */

float dg_optim_get_momentum(const dg_optim *o) {
    return o->kind == OPT_SGD ? o->sgd.momentum : o->adam.beta1;
}

dg_status dg_optim_set_momentum(dg_optim *o, float momentum) {
    if (!(momentum >= 0.0f && momentum < 1.0f)) {
        dg_set_error("dg_optim_set_momentum: momentum %g is outside [0, 1)", momentum);
        return DG_ERR;
    }
    if (o->kind == OPT_SGD) {
        if (!o->nslots) {
            dg_set_error("dg_optim_set_momentum: this SGD was built without momentum");
            return DG_ERR;
        }
        o->sgd.momentum = momentum;
    } else {
        o->adam.beta1 = momentum;
    }
    return DG_OK;
}

float dg_clip_grad_norm(dg_tensor *const *params, int n, float max_norm) {
    if (n <= 0) return 0.0f;
    dg_ctx *ctx = params[0]->ctx;
    bool mode = dg_set_grad_enabled(ctx, false);
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        dg_tensor *g = params[i]->grad;
        if (!g) continue;
        float norm = sqrtf(dg_item(dg_sum(dg_mul(g, g))));   /* per tensor, as PyTorch */
        total += (double)norm * (double)norm;
    }
    dg_set_grad_enabled(ctx, mode);
    float tn = (float)sqrt(total);
    float coef = max_norm / (tn + 1e-6f);
    if (coef < 1.0f)
        for (int i = 0; i < n; i++) {
            dg_tensor *g = params[i]->grad;
            if (g) ctx->be->math.unary(DG_UN_SCALE, g->data, g->data, dg_numel(g), coef);
        }
    return tn;
}

/* No NaN or infinity among n floats: the largest magnitude, compared as
 * integers (an exponent of all ones is 0x7f800000 and above), an integer
 * max that vectorizes. */
DG_HOT static bool all_finite(const float *restrict g, size_t n) {
    const uint32_t *u = (const uint32_t *)(const void *)g;
    uint32_t most = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t m = u[i] & 0x7fffffffu;
        most = m > most ? m : most;
    }
    return most < 0x7f800000u;
}

bool dg_grads_finite(dg_ctx *ctx, int *first_bad) {
    size_t n;
    float *buf = dg_ctx_grad_buffer(ctx, &n);
    if (!buf || n == 0) return true;
    float *host = buf;
    if (dg_ctx_device(ctx) != DG_CPU) {
        host = malloc(n * sizeof *host);
        DG_ASSERT(host != NULL);
        ctx->be->mem.to_host(host, buf, n * sizeof *host);
    }
    bool ok = all_finite(host, n);
    if (!ok && first_bad) {
        int np;
        dg_tensor **p = dg_ctx_params(ctx, &np);
        *first_bad = -1;
        for (int i = 0; i < np && *first_bad < 0; i++) {
            const float *g = host + dg_param_offset(p[i]);
            if (!all_finite(g, (size_t)dg_numel(p[i]))) *first_bad = i;
        }
    }
    if (host != buf) free(host);
    return ok;
}

/* For sched.c: the context that owns the optimizer. */
dg_ctx *dg__optim_ctx(const dg_optim *o);
dg_ctx *dg__optim_ctx(const dg_optim *o) { return o->ctx; }
