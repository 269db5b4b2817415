/* zero.c - ZeRO stage 1 (dgrad/zero.h): reduce-scatter of the flat
 * gradient buffer, an update of this rank's shard with its shard of the
 * optimizer state, all-gather of the flat parameter buffer.
 *
 * Layout: the flat buffers hold N floats; shard r is [r*S, r*S + S) with
 * S = ceil(N / world). When world * S == N the collectives work on the
 * context's buffers directly; otherwise through `pad` (world * S floats,
 * its tail past N zero), which also carries the state on its way to and
 * from an unsharded dg_optim for checkpoints. The update kernels are the
 * backend's (the ones dg_optim_step runs), on this shard's elements that
 * lie inside [0, N). */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/zero.h"
#include "dgrad/dist_checkpoint.h"
#include "impl.h"   /* the context's backend: memory, optimizer kernels */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_SLOTS = 3, MSG_LEN = 500, SIG_LEN = 8 };

struct dg_zero {
    dg_ctx *ctx;
    dg_comm *comm;
    const dg_backend *be;
    dg_zero_opts opts;
    int nslots;
    int world, rank;
    int nparams;
    int64_t numel;             /* N */
    int64_t shard;             /* S */
    int64_t begin, valid;      /* this shard: [begin, begin + valid) inside [0, N) */
    float *pad;                /* world * S floats, device memory */
    float *gshard;             /* S: this shard's mean gradient */
    float *state[MAX_SLOTS];   /* S each */
    int64_t steps;
    double t_rs, t_update, t_ag;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

dg_zero_opts dg_zero_defaults(dg_zero_kind kind, float lr) {
    dg_zero_opts o = { .kind = kind, .sgd = dg_sgd_defaults(lr) };
    o.adam = kind == DG_ZERO_ADAMW ? dg_adamw_defaults() : dg_adam_defaults();
    return o;
}

const char *dg_zero_kind_name(dg_zero_kind kind) {
    switch (kind) {
    case DG_ZERO_SGD: return "sgd";
    case DG_ZERO_ADAM: return "adam";
    case DG_ZERO_ADAMW: return "adamw";
    }
    return NULL;
}

dg_status dg_zero_kind_from_name(const char *name, dg_zero_kind *kind) {
    for (int k = DG_ZERO_SGD; k <= DG_ZERO_ADAMW; k++)
        if (name && !strcmp(name, dg_zero_kind_name((dg_zero_kind)k))) {
            *kind = (dg_zero_kind)k;
            return DG_OK;
        }
    return dg_set_error("dg_zero_kind_from_name: unknown optimizer kind '%s' (expected sgd, adam or adamw)",
                        name ? name : "(null)");
}

/* The checks of dg_optim_sgd/adam, and the slot count; -1 on bad options. */
static int check_opts(const dg_zero_opts *o) {
    const char *name = "dg_zero_new";
    if (o->kind == DG_ZERO_SGD) {
        const dg_sgd_opts *s = &o->sgd;
        if (!(s->lr >= 0.0f)) return dg_set_error("%s: invalid learning rate %g", name, s->lr), -1;
        if (!(s->momentum >= 0.0f)) return dg_set_error("%s: invalid momentum %g", name, s->momentum), -1;
        if (!(s->weight_decay >= 0.0f))
            return dg_set_error("%s: invalid weight_decay %g", name, s->weight_decay), -1;
        if (s->nesterov && (s->momentum <= 0.0f || s->dampening != 0.0f))
            return dg_set_error("%s: nesterov momentum requires a momentum and zero dampening", name), -1;
        return s->momentum != 0.0f ? 1 : 0;
    }
    if (o->kind != DG_ZERO_ADAM && o->kind != DG_ZERO_ADAMW)
        return dg_set_error("%s: unknown optimizer kind %d (expected DG_ZERO_SGD, DG_ZERO_ADAM or "
                            "DG_ZERO_ADAMW)", name, (int)o->kind), -1;
    const dg_adam_opts *a = &o->adam;
    if (!(a->lr >= 0.0f)) return dg_set_error("%s: invalid learning rate %g", name, a->lr), -1;
    if (!(a->eps >= 0.0f)) return dg_set_error("%s: invalid epsilon %g", name, a->eps), -1;
    if (!(a->beta1 >= 0.0f && a->beta1 < 1.0f))
        return dg_set_error("%s: invalid beta parameter at index 0: %g", name, a->beta1), -1;
    if (!(a->beta2 >= 0.0f && a->beta2 < 1.0f))
        return dg_set_error("%s: invalid beta parameter at index 1: %g", name, a->beta2), -1;
    if (!(a->weight_decay >= 0.0f))
        return dg_set_error("%s: invalid weight_decay value %g", name, a->weight_decay), -1;
    return a->amsgrad ? 3 : 2;
}

static uint64_t fnv(uint64_t h, uint64_t v) { return (h ^ v) * 1099511628211ULL; }

static uint64_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ok, parameter count, N, a hash of the shapes, kind, slots, a hash of
 * the hyper-parameters */
static void signature(dg_ctx *ctx, const dg_zero_opts *o, int ok, int nslots, int64_t sig[SIG_LEN]) {
    int n;
    dg_tensor **p = dg_ctx_params(ctx, &n);
    size_t numel = 0;
    dg_ctx_param_buffer(ctx, &numel);
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) {
        h = fnv(h, (uint64_t)p[i]->ndim);
        for (int d = 0; d < p[i]->ndim; d++) h = fnv(h, (uint64_t)p[i]->shape[d]);
    }
    uint64_t hp = 1469598103934665603ULL;
    if (o->kind == DG_ZERO_SGD) {
        hp = fnv(fnv(fnv(fnv(hp, fbits(o->sgd.lr)), fbits(o->sgd.momentum)), fbits(o->sgd.dampening)),
                 fbits(o->sgd.weight_decay));
        hp = fnv(hp, o->sgd.nesterov);
    } else {
        hp = fnv(fnv(fnv(fnv(hp, fbits(o->adam.lr)), fbits(o->adam.beta1)), fbits(o->adam.beta2)),
                 fbits(o->adam.eps));
        hp = fnv(fnv(hp, fbits(o->adam.weight_decay)), o->adam.amsgrad);
    }
    int64_t s[SIG_LEN] = { ok, n, (int64_t)numel, (int64_t)(h >> 1), (int64_t)o->kind, nslots,
                           (int64_t)(hp >> 1), 0 };
    memcpy(sig, s, sizeof s);
}

static dg_status agree(dg_zero *z, int ok, int nslots) {
    int size = z->world;
    int64_t sig[SIG_LEN], *all = malloc(sizeof(int64_t) * SIG_LEN * (size_t)size);
    if (ok && !all) ok = (dg_set_error("dg_zero_new: out of memory"), 0);
    int all_ok = ok;
    if (size > 1 && dg_comm_allreduce(z->comm, &all_ok, 1, DG_COMM_I32, DG_COMM_MIN)) {
        free(all);
        return DG_ERR;
    }
    if (!all_ok) {
        free(all);
        return ok ? dg_set_error("dg_zero_new: another rank refused its options or ran out of memory")
                  : DG_ERR;
    }
    signature(z->ctx, &z->opts, ok, nslots, sig);
    if (dg_comm_allgather(z->comm, sig, all, SIG_LEN, DG_COMM_I64)) {
        free(all);
        return DG_ERR;
    }
    dg_status st = DG_OK;
    for (int r = 1; r < size && st == DG_OK; r++) {
        const int64_t *a = all, *b = all + SIG_LEN * r;
        if (a[1] != b[1] || a[2] != b[2] || a[3] != b[3])
            st = dg_set_error("dg_zero_new: model parameters differ between ranks: rank 0 has %lld parameters "
                              "(%lld floats), rank %d has %lld parameters (%lld floats)%s",
                              (long long)a[1], (long long)a[2], r, (long long)b[1], (long long)b[2],
                              a[1] == b[1] && a[2] == b[2] ? " with different shapes or order" : "");
        else if (a[4] != b[4] || a[5] != b[5])
            st = dg_set_error("dg_zero_new: optimizer options differ between ranks: rank 0 has kind %s with %lld "
                              "slots, rank %d kind %s with %lld", dg_zero_kind_name((dg_zero_kind)a[4]),
                              (long long)a[5], r, dg_zero_kind_name((dg_zero_kind)b[4]), (long long)b[5]);
        else if (a[6] != b[6])
            st = dg_set_error("dg_zero_new: optimizer options differ between ranks: rank 0 and rank %d have "
                              "different %s hyper-parameters", r, dg_zero_kind_name((dg_zero_kind)a[4]));
    }
    free(all);
    return st;
}

static float *dev_alloc(dg_zero *z, int64_t floats) {
    size_t bytes = (size_t)(floats > 0 ? floats : 1) * sizeof(float);
    float *p = z->be->mem.alloc(bytes);
    if (p) z->be->mem.memset0(p, bytes);
    return p;
}

void dg_zero_free(dg_zero *z) {
    if (!z) return;
    z->be->mem.free(z->pad);
    z->be->mem.free(z->gshard);
    for (int s = 0; s < MAX_SLOTS; s++) z->be->mem.free(z->state[s]);
    free(z);
}

dg_status dg_zero_new(dg_zero **out, dg_ctx *ctx, dg_comm *comm, dg_zero_opts opts) {
    if (!out) return dg_set_error("dg_zero_new: out is NULL");
    *out = NULL;
    if (!ctx || !comm) return dg_set_error("dg_zero_new: no context or communicator");
    dg_zero *z = calloc(1, sizeof *z);
    if (!z) return dg_set_error("dg_zero_new: out of memory");
    z->ctx = ctx;
    z->comm = comm;
    z->be = ctx->be;
    z->opts = opts;
    z->world = dg_comm_size(comm);
    z->rank = dg_comm_rank(comm);
    size_t numel = 0;
    dg_ctx_params(ctx, &z->nparams);
    dg_ctx_param_buffer(ctx, &numel);
    z->numel = (int64_t)numel;
    int nslots = check_opts(&opts);
    int ok = nslots >= 0;
    if (ok && (z->nparams == 0 || numel == 0)) ok = (dg_set_error("dg_zero_new: the context has no parameters"), 0);
    if (ok && dg_ctx_device(ctx) != DG_CPU && !dg_comm_is_device(comm))
        ok = (dg_set_error("dg_zero_new: a GPU context needs a device communicator (\"nccl\"), this one is \"%s\"",
                          dg_comm_backend_name(comm)), 0);
    if (ok) {
        z->nslots = nslots;
        z->shard = (z->numel + z->world - 1) / z->world;
        z->begin = (int64_t)z->rank * z->shard;
        int64_t v = z->numel - z->begin;
        z->valid = v < 0 ? 0 : v > z->shard ? z->shard : v;
        z->pad = dev_alloc(z, (int64_t)z->world * z->shard);
        z->gshard = dev_alloc(z, z->shard);
        bool mem = z->pad && z->gshard;
        for (int s = 0; s < nslots; s++) mem &= (z->state[s] = dev_alloc(z, z->shard)) != NULL;
        if (!mem) ok = (dg_set_error("dg_zero_new: out of memory for %lld-float shards", (long long)z->shard), 0);
    }
    if (agree(z, ok, ok ? nslots : -1) ||
        dg_comm_broadcast(comm, dg_ctx_param_buffer(ctx, NULL), numel, DG_COMM_F32, 0)) {
        dg_zero_free(z);
        return DG_ERR;
    }
    *out = z;
    return DG_OK;
}

void dg_zero_zero_grad(dg_zero *z) { dg_ctx_zero_grad(z->ctx); }

/* The backend's update of n elements of this shard (p: the parameters). */
static void update(dg_zero *z, float *p, int64_t n) {
    const dg_backend *be = z->be;
    if (z->opts.kind == DG_ZERO_SGD) {
        const dg_sgd_opts *s = &z->opts.sgd;
        be->optim.sgd_step(p, z->gshard, z->nslots ? z->state[0] : NULL, n, s->lr, s->momentum, s->dampening,
                           s->weight_decay, s->nesterov, z->steps == 1);
        return;
    }
    const dg_adam_opts *a = &z->opts.adam;
    /* the bias corrections exactly as dg_optim_step computes them */
    double bc1 = 1.0 - pow((double)a->beta1, (double)z->steps);
    double bc2 = 1.0 - pow((double)a->beta2, (double)z->steps);
    be->optim.adam_step(p, z->gshard, z->state[0], z->state[1], a->amsgrad ? z->state[2] : NULL, n, a->lr,
                        a->beta1, a->beta2, a->eps, a->weight_decay, z->opts.kind == DG_ZERO_ADAMW,
                        (double)a->lr / bc1, sqrt(bc2));
}

dg_status dg_zero_step(dg_zero *z) {
    size_t n = 0;
    float *g = dg_ctx_grad_buffer(z->ctx, &n);
    float *p = dg_ctx_param_buffer(z->ctx, NULL);
    if ((int64_t)n != z->numel)
        return dg_set_error("dg_zero_step: the context's parameters have %zu floats, %lld when the dg_zero was "
                            "made (parameters registered after dg_zero_new)", n, (long long)z->numel);
    const dg_backend *be = z->be;
    int64_t W = z->world, S = z->shard, N = z->numel;
    bool even = W * S == N;
    double t0 = now();
    const float *send = g;
    if (!even) {
        be->mem.copy(z->pad, g, (size_t)N * sizeof(float));
        be->mem.memset0(z->pad + N, (size_t)(W * S - N) * sizeof(float));
        send = z->pad;
    }
    if (dg_comm_reduce_scatter(z->comm, send, z->gshard, (size_t)S, DG_COMM_F32, DG_COMM_AVG)) return DG_ERR;
    double t1 = now();
    z->steps++;
    if (z->valid > 0) update(z, p + z->begin, z->valid);
    double t2 = now();
    dg_status s;
    if (even) {
        s = dg_comm_allgather(z->comm, NULL, p, (size_t)S, DG_COMM_F32);
    } else {
        if (z->valid > 0) be->mem.copy(z->pad + z->begin, p + z->begin, (size_t)z->valid * sizeof(float));
        s = dg_comm_allgather(z->comm, NULL, z->pad, (size_t)S, DG_COMM_F32);
        if (!s) be->mem.copy(p, z->pad, (size_t)N * sizeof(float));
    }
    double t3 = now();
    z->t_rs += t1 - t0;
    z->t_update += t2 - t1;
    z->t_ag += t3 - t2;
    return s;
}

float dg_zero_get_lr(const dg_zero *z) { return z->opts.kind == DG_ZERO_SGD ? z->opts.sgd.lr : z->opts.adam.lr; }

void dg_zero_set_lr(dg_zero *z, float lr) {
    if (z->opts.kind == DG_ZERO_SGD) z->opts.sgd.lr = lr;
    else z->opts.adam.lr = lr;
}

int64_t dg_zero_step_count(const dg_zero *z) { return z->steps; }
dg_zero_kind dg_zero_get_kind(const dg_zero *z) { return z->opts.kind; }
int dg_zero_num_slots(const dg_zero *z) { return z->nslots; }

void dg_zero_get_stats(const dg_zero *z, dg_zero_stats *st) {
    *st = (dg_zero_stats){
        .world = z->world, .rank = z->rank, .numel = z->numel, .shard_len = z->shard,
        .shard_begin = z->begin, .shard_valid = z->valid, .num_slots = z->nslots,
        .state_bytes = (size_t)z->nslots * (size_t)z->shard * sizeof(float),
        .unsharded_state_bytes = (size_t)z->nslots * (size_t)z->numel * sizeof(float),
        .staging_bytes = (size_t)(z->world + 1) * (size_t)z->shard * sizeof(float),
        .steps = z->steps, .reduce_scatter_seconds = z->t_rs, .update_seconds = z->t_update,
        .allgather_seconds = z->t_ag,
    };
}

/* ---- state for checkpoints ---------------------------------------------- */

/* Rank 0's status and message to every rank (as dist_checkpoint.c). */
static dg_status share_verdict(dg_zero *z, dg_status s) {
    if (z->world == 1) return s;
    struct {
        int32_t status;
        char msg[MSG_LEN];
    } v;
    memset(&v, 0, sizeof v);
    v.status = s;
    if (s) snprintf(v.msg, sizeof v.msg, "%s", dg_last_error());
    if (dg_comm_broadcast(z->comm, &v, sizeof v / 4, DG_COMM_I32, 0)) return DG_ERR;
    if (v.status == DG_OK) return DG_OK;
    if (z->rank != 0) {
        dg_clear_error();
        dg_set_error("%s", v.msg);
    }
    return DG_ERR;
}

/* Whether full fits this dg_zero: slot count, parameter count and shapes,
 * device. */
static dg_status check_full(dg_zero *z, dg_optim *full, const char *what) {
    if (!full) return dg_set_error("%s: rank 0 has no optimizer", what);
    if (dg_optim_num_slots(full) != z->nslots)
        return dg_set_error("%s: the optimizer has %d state slots per parameter, the dg_zero %d (another kind, "
                            "momentum or amsgrad?)", what, dg_optim_num_slots(full), z->nslots);
    if (z->nslots == 0) return DG_OK;
    int np;
    dg_tensor **p = dg_ctx_params(z->ctx, &np);
    if (dg_optim_state(full, np, 0) != NULL || dg_optim_state(full, np - 1, 0) == NULL)
        return dg_set_error("%s: the optimizer does not have the context's %d parameters", what, np);
    for (int i = 0; i < np; i++)
        for (int s = 0; s < z->nslots; s++) {
            const dg_tensor *t = dg_optim_state(full, i, s);
            bool same = t && t->ndim == p[i]->ndim && t->device == p[i]->device && dg_is_contiguous(t) &&
                        !memcmp(t->shape, p[i]->shape, sizeof(int64_t) * (size_t)t->ndim);
            if (!same) {
                char a[64], b[64];
                return dg_set_error("%s: the optimizer's state %d of parameter %d is %s, the parameter %s", what, s,
                                    i, t ? dg_shape_str(t, a, sizeof a) : "missing",
                                    dg_shape_str(p[i], b, sizeof b));
            }
        }
    return DG_OK;
}

dg_status dg_zero_gather_state(dg_zero *z, dg_optim *full) {
    const char *what = "dg_zero_gather_state";
    if (share_verdict(z, z->rank == 0 ? check_full(z, full, what) : DG_OK)) return DG_ERR;
    int np;
    dg_tensor **p = dg_ctx_params(z->ctx, &np);
    for (int s = 0; s < z->nslots; s++) {
        if (dg_comm_allgather(z->comm, z->state[s], z->pad, (size_t)z->shard, DG_COMM_F32)) return DG_ERR;
        if (z->rank != 0) continue;
        for (int i = 0; i < np; i++)
            z->be->mem.copy(dg_optim_state(full, i, s)->data, z->pad + dg_param_offset(p[i]),
                            (size_t)dg_numel(p[i]) * sizeof(float));
    }
    if (z->rank == 0) {
        dg_optim_set_step_count(full, z->steps);
        dg_optim_set_lr(full, dg_zero_get_lr(z));
    }
    return DG_OK;
}

dg_status dg_zero_scatter_state(dg_zero *z, dg_optim *full) {
    const char *what = "dg_zero_scatter_state";
    if (share_verdict(z, z->rank == 0 ? check_full(z, full, what) : DG_OK)) return DG_ERR;
    int np;
    dg_tensor **p = dg_ctx_params(z->ctx, &np);
    size_t padn = (size_t)z->world * (size_t)z->shard;
    for (int s = 0; s < z->nslots; s++) {
        if (z->rank == 0) {
            z->be->mem.memset0(z->pad, padn * sizeof(float));
            for (int i = 0; i < np; i++)
                z->be->mem.copy(z->pad + dg_param_offset(p[i]), dg_optim_state(full, i, s)->data,
                                (size_t)dg_numel(p[i]) * sizeof(float));
        }
        if (dg_comm_broadcast(z->comm, z->pad, padn, DG_COMM_F32, 0)) return DG_ERR;
        z->be->mem.copy(z->state[s], z->pad + z->begin, (size_t)z->shard * sizeof(float));
    }
    int64_t meta[2] = { 0, 0 };
    if (z->rank == 0) {
        float lr = dg_optim_get_lr(full);
        meta[0] = dg_optim_step_count(full);
        memcpy(&meta[1], &lr, sizeof lr);
    }
    if (dg_comm_broadcast(z->comm, meta, 2, DG_COMM_I64, 0)) return DG_ERR;
    float lr;
    memcpy(&lr, &meta[1], sizeof lr);
    z->steps = meta[0];
    dg_zero_set_lr(z, lr);
    return DG_OK;
}

/* A temporary unsharded optimizer: a context of the same device with
 * parameters of the same names and shapes, and the optimizer over them. */
typedef struct {
    dg_ctx *ctx;
    dg_optim *opt;
} scratch;

static dg_status scratch_new(dg_zero *z, scratch *sc, const char *what) {
    sc->ctx = dg_ctx_new(dg_ctx_device(z->ctx));
    if (!sc->ctx) return DG_ERR;
    int np;
    dg_tensor **p = dg_ctx_params(z->ctx, &np);
    dg_tensor **q = calloc((size_t)np, sizeof *q);
    if (!q) return dg_set_error("%s: out of memory", what);
    for (int i = 0; i < np; i++) q[i] = dg_param_new(sc->ctx, p[i]->name, p[i]->ndim, p[i]->shape);
    switch (z->opts.kind) {
    case DG_ZERO_SGD: sc->opt = dg_optim_sgd(q, np, z->opts.sgd); break;
    case DG_ZERO_ADAM: sc->opt = dg_optim_adam(q, np, z->opts.adam); break;
    case DG_ZERO_ADAMW: sc->opt = dg_optim_adamw(q, np, z->opts.adam); break;
    }
    free(q);
    return sc->opt ? DG_OK : DG_ERR;
}

static void scratch_free(scratch *sc) {
    dg_ctx_free(sc->ctx);
    sc->ctx = NULL;
    sc->opt = NULL;
}

dg_status dg_zero_checkpoint_save(const char *dir, dg_zero *z, const dg_train_state *st, int keep) {
    const char *what = "dg_zero_checkpoint_save";
    scratch sc = { 0 };
    dg_status s = z->rank == 0 ? scratch_new(z, &sc, what) : DG_OK;
    if (share_verdict(z, s) || dg_zero_gather_state(z, sc.opt)) {
        scratch_free(&sc);
        return DG_ERR;
    }
    dg_train_state local = st ? *st : (dg_train_state){ 0 };
    if (!local.optimizer) local.optimizer = dg_zero_kind_name(z->opts.kind);
    s = dg_checkpoint_save(dir, z->ctx, sc.opt, &local, z->comm, keep);
    scratch_free(&sc);
    return s;
}

dg_status dg_zero_checkpoint_load(const char *path_or_dir, dg_zero *z, dg_train_state *st, char *path_out,
                                  size_t n) {
    const char *what = "dg_zero_checkpoint_load";
    scratch sc = { 0 };
    dg_status s = z->rank == 0 ? scratch_new(z, &sc, what) : DG_OK;
    if (share_verdict(z, s)) {
        scratch_free(&sc);
        return DG_ERR;
    }
    dg_train_state local = st ? *st : (dg_train_state){ 0 };
    if (!local.optimizer) local.optimizer = dg_zero_kind_name(z->opts.kind);
    s = dg_checkpoint_load(path_or_dir, z->ctx, sc.opt, &local, z->comm, path_out, n);
    if (!s) s = dg_zero_scatter_state(z, sc.opt);
    scratch_free(&sc);
    if (!s && st) {
        local.optimizer = st->optimizer;
        *st = local;
    }
    return s;
}

dg_status dg_zero_shard_get(const dg_zero *z, dg_zero_shard_info *info, float *state, size_t n) {
    size_t need = (size_t)z->nslots * (size_t)z->shard;
    if (!info || (need && !state))
        return dg_set_error("dg_zero_shard_get: no info or state buffer");
    if (n < need)
        return dg_set_error("dg_zero_shard_get: the buffer holds %zu floats, the shard needs %d x %lld = %zu", n,
                            z->nslots, (long long)z->shard, need);
    *info = (dg_zero_shard_info){ .world = z->world, .rank = z->rank, .kind = (int)z->opts.kind,
                                  .num_slots = z->nslots, .numel = z->numel, .shard_len = z->shard,
                                  .steps = z->steps, .lr = dg_zero_get_lr(z) };
    for (int s = 0; s < z->nslots; s++)
        z->be->mem.to_host(state + (size_t)s * (size_t)z->shard, z->state[s], (size_t)z->shard * sizeof(float));
    return DG_OK;
}

dg_status dg_zero_shard_set(dg_zero *z, const dg_zero_shard_info *info, const float *state, size_t n) {
    const char *what = "dg_zero_shard_set";
    size_t need = (size_t)z->nslots * (size_t)z->shard;
    if (!info || (n && !state)) return dg_set_error("%s: no info or state buffer", what);
    if (info->world != z->world)
        return dg_set_error("%s: shard was saved by a world of %d ranks, this one has %d: reshard through "
                            "dg_zero_checkpoint_save/load", what, info->world, z->world);
    if (info->rank != z->rank)
        return dg_set_error("%s: shard is rank %d's, this is rank %d", what, info->rank, z->rank);
    if (info->kind != (int)z->opts.kind || info->num_slots != z->nslots) {
        const char *k = dg_zero_kind_name((dg_zero_kind)info->kind);
        return dg_set_error("%s: shard is of optimizer '%s' with %d slots, this one '%s' with %d", what,
                            k ? k : "unknown", info->num_slots, dg_zero_kind_name(z->opts.kind), z->nslots);
    }
    if (info->numel != z->numel || info->shard_len != z->shard || n != need)
        return dg_set_error("%s: shard does not fit: it holds %zu floats for %lld parameter floats (shard %lld), "
                            "this rank's shard is %d x %lld = %zu floats of %lld", what, n,
                            (long long)info->numel, (long long)info->shard_len, z->nslots, (long long)z->shard,
                            need, (long long)z->numel);
    for (int s = 0; s < z->nslots; s++)
        z->be->mem.from_host(z->state[s], state + (size_t)s * (size_t)z->shard, (size_t)z->shard * sizeof(float));
    z->steps = info->steps;
    dg_zero_set_lr(z, info->lr);
    return DG_OK;
}
