/* ddp.c - bucketed gradient all-reduce, overlapped with backward.
 *
 * Three paths, chosen at dg_ddp_new from the context's device and the
 * communicator:
 *  - host: CPU tensors; each bucket is reduced in place in the gradient
 *    buffer with dg_comm_iallreduce;
 *  - device: GPU tensors and a device communicator (NCCL); each bucket is
 *    reduced in place on the GPU, stream-ordered: the all-reduce waits on
 *    the GPU for the backward kernels queued before it and the next ops wait
 *    for it (dev_join), so the host never blocks on the GPU;
 *  - staged: GPU tensors and a host communicator (MPI that is not
 *    CUDA-aware, or local): each ready bucket is copied asynchronously into
 *    a pinned host copy of the gradient buffer, reduced there once its copy
 *    has landed, and copied back after backward. Correct and simple, but it
 *    serializes: the host waits for each copy and for every reduction, and
 *    the copy back runs after all of them.
 */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/ddp.h"
#include "comm-impl.h"   /* dg__comm_dev_*: device communicators */
#include "impl.h"        /* the backend's pinned memory and events */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int first, last;            /* parameter range, registration order */
    size_t offset, count;       /* range of the flat gradient buffer, floats */
    int pending;                /* parameters whose gradient is not final yet */
    bool launched;
    dg_comm_request *req;
    void *ev;                   /* staged: marks its copy to the host */
} bucket;

typedef enum { PATH_HOST, PATH_DEVICE, PATH_STAGED } ddp_path;

struct dg_ddp {
    dg_ctx *ctx;
    dg_comm *comm;
    dg_ddp_opts opts;
    bucket *buckets;            /* buckets[0] holds the last parameters */
    int nbuckets;
    int *bucket_of;             /* parameter index -> bucket */
    int next_launch;            /* buckets start in index order on every rank */
    bool no_sync;
    bool failed;
    double t_first_launch;
    dg_ddp_stats stats;
    dg_timeline *tl;            /* optional: spans of backward and all-reduces */
    ddp_path path;
    const dg_backend *be;       /* the context's backend */
    float *stage;               /* staged: pinned copy of the gradient buffer */
    int next_stage;             /* staged: buckets copied to stage, in order */
    uint16_t *half;             /* bf16_compress: the gradient buffer in bf16 */
    int32_t *used;              /* per parameter: has a gradient on this rank,
                                   then on any rank (all-reduced with MAX) */
    dg_comm_request *used_req;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

dg_ddp_opts dg_ddp_defaults(void) {
    return (dg_ddp_opts){ .bucket_cap_bytes = 25u << 20, .first_bucket_cap_bytes = 1u << 20,
                          .overlap = true };
}

/* count, total size and a hash of every shape, in order */
static void param_signature(dg_ctx *ctx, int64_t sig[3]) {
    int n;
    dg_tensor **p = dg_ctx_params(ctx, &n);
    uint64_t h = 1469598103934665603ULL;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        h = (h ^ (uint64_t)p[i]->ndim) * 1099511628211ULL;
        for (int d = 0; d < p[i]->ndim; d++) h = (h ^ (uint64_t)p[i]->shape[d]) * 1099511628211ULL;
        total += dg_numel(p[i]);
    }
    sig[0] = n;
    sig[1] = total;
    sig[2] = (int64_t)(h >> 1);
}

static dg_status check_same_params(dg_ddp *d) {
    int size = dg_comm_size(d->comm);
    int64_t sig[3], *all = malloc(sizeof(int64_t) * 3 * (size_t)size);
    if (!all) return dg_set_error("dg_ddp_new: out of memory");
    param_signature(d->ctx, sig);
    if (dg_comm_allgather(d->comm, sig, all, 3, DG_COMM_I64)) {
        free(all);
        return DG_ERR;
    }
    dg_status st = DG_OK;
    for (int r = 1; r < size && st == DG_OK; r++) {
        int64_t *a = all, *b = all + 3 * r;
        if (a[0] != b[0] || a[1] != b[1] || a[2] != b[2])
            st = dg_set_error("dg_ddp_new: model parameters differ between ranks: rank 0 has %lld "
                              "parameters (%lld values), rank %d has %lld parameters (%lld values)%s",
                              (long long)a[0], (long long)a[1], r, (long long)b[0], (long long)b[1],
                              a[0] == b[0] && a[1] == b[1] ? " with different shapes or order" : "");
    }
    free(all);
    return st;
}

/* Reverse registration order, first bucket capped smaller, as PyTorch. */
static void build_buckets(dg_ddp *d) {
    int n;
    dg_tensor **p = dg_ctx_params(d->ctx, &n);
    d->buckets = calloc((size_t)(n ? n : 1), sizeof *d->buckets);
    d->bucket_of = calloc((size_t)(n ? n : 1), sizeof *d->bucket_of);
    d->used = calloc((size_t)(n ? n : 1), sizeof *d->used);
    DG_ASSERT(d->buckets && d->bucket_of && d->used);
    size_t cap = d->opts.first_bucket_cap_bytes, bytes = 0;
    int nb = 0;
    for (int i = n - 1; i >= 0; i--) {
        size_t pb = (size_t)dg_numel(p[i]) * sizeof(float);
        if (nb == 0 || (bytes > 0 && bytes + pb > cap)) {
            if (nb > 0) cap = d->opts.bucket_cap_bytes;
            d->buckets[nb++] = (bucket){ .first = i, .last = i };
            bytes = 0;
        }
        bucket *b = &d->buckets[nb - 1];
        b->first = i;
        bytes += pb;
        d->bucket_of[i] = nb - 1;
    }
    for (int k = 0; k < nb; k++) {
        bucket *b = &d->buckets[k];
        b->offset = dg_param_offset(p[b->first]);
        b->count = dg_param_offset(p[b->last]) + (size_t)dg_numel(p[b->last]) - b->offset;
        d->stats.bytes_per_step += b->count * sizeof(float);
    }
    d->nbuckets = nb;
    d->stats.num_buckets = nb;
    if (d->opts.bf16_compress) d->stats.bytes_per_step /= 2;
}

static void reset_step(dg_ddp *d) {
    for (int k = 0; k < d->nbuckets; k++) {
        bucket *b = &d->buckets[k];
        b->pending = b->last - b->first + 1;
        b->launched = false;
        b->req = NULL;
    }
    d->next_launch = 0;
    d->next_stage = 0;
}

/* Staged path: queue the copies of the ready buckets to the host, in order. */
static void stage_ready(dg_ddp *d, bool all) {
    float *g = dg_ctx_grad_buffer(d->ctx, NULL);
    while (d->next_stage < d->nbuckets) {
        bucket *b = &d->buckets[d->next_stage];
        if (!all && b->pending > 0) break;
        d->be->stream.to_host_async(d->stage + b->offset, g + b->offset, b->count * sizeof(float));
        d->be->stream.event_record(b->ev);
        d->next_stage++;
    }
}

static void launch_ready(dg_ddp *d, bool all) {
    float *g = dg_ctx_grad_buffer(d->ctx, NULL);
    if (d->path == PATH_STAGED) stage_ready(d, all);
    while (!d->failed && d->next_launch < d->nbuckets) {
        bucket *b = &d->buckets[d->next_launch];
        if (!all && b->pending > 0) break;
        if (d->path == PATH_STAGED && !d->be->stream.event_done(b->ev)) {
            if (!all) break;   /* its copy has not landed yet: a later hook */
            d->be->stream.event_wait(b->ev);
        }
        if (d->next_launch == 0) d->t_first_launch = now();
        dg_status st;
        if (d->path == PATH_DEVICE)
            st = dg__comm_dev_allreduce(d->comm, g + b->offset, b->count, DG_COMM_F32, DG_COMM_AVG);
        else if (d->half) {
            d->be->lowp.f32_to_bf16(d->half + b->offset, g + b->offset, (int64_t)b->count);
            st = dg_comm_iallreduce(d->comm, d->half + b->offset, b->count, DG_COMM_BF16, DG_COMM_AVG, &b->req);
        } else
            st = dg_comm_iallreduce(d->comm, (d->path == PATH_STAGED ? d->stage : g) + b->offset,
                                    b->count, DG_COMM_F32, DG_COMM_AVG, &b->req);
        if (st) {
            d->failed = true;
            break;
        }
        b->launched = true;
        dg_timeline_begin(d->tl, "allreduce", DG_TIMELINE_COMM + d->next_launch);
        d->next_launch++;
    }
}

static void on_grad_ready(dg_tensor *param, void *user) {
    dg_ddp *d = user;
    if (d->no_sync || d->failed) return;
    bucket *b = &d->buckets[d->bucket_of[param->param_index]];
    b->pending--;
    if (d->opts.overlap) {
        int before = d->next_launch;
        launch_ready(d, false);
        d->stats.overlapped_buckets += d->next_launch - before;
    }
    if (!d->failed && d->path != PATH_DEVICE && dg_comm_progress(d->comm)) d->failed = true;
}

/* Broadcast n floats of the context's memory at p from rank 0. */
static dg_status broadcast_floats(dg_ddp *d, float *p, size_t n) {
    if (d->path != PATH_STAGED) return dg_comm_broadcast(d->comm, p, n, DG_COMM_F32, 0);
    float *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return dg_set_error("dg_ddp: out of memory staging %zu floats", n);
    d->be->mem.to_host(h, p, n * sizeof *h);
    dg_status st = dg_comm_broadcast(d->comm, h, n, DG_COMM_F32, 0);
    if (st == DG_OK) d->be->mem.from_host(p, h, n * sizeof *h);   /* pageable: copied before return */
    free(h);
    return st;
}

/* Staged path: the pinned buffer and one event per bucket. */
static dg_status stage_new(dg_ddp *d) {
    size_t n;
    (void)dg_ctx_grad_buffer(d->ctx, &n);
    d->stage = d->be->stream.alloc_host((n ? n : 1) * sizeof(float));
    if (!d->stage) return DG_ERR;
    for (int k = 0; k < d->nbuckets; k++) d->buckets[k].ev = d->be->stream.event_new();
    return DG_OK;
}

static void stage_free(dg_ddp *d) {
    if (d->path != PATH_STAGED) return;
    if (d->stage) d->be->stream.free_host(d->stage);   /* waits for the stream */
    for (int k = 0; k < d->nbuckets; k++) d->be->stream.event_free(d->buckets[k].ev);
    d->stage = NULL;
}

dg_status dg_ddp_new(dg_ddp **out, dg_ctx *ctx, dg_comm *comm, dg_ddp_opts opts) {
    *out = NULL;
    if (!ctx || !comm) return dg_set_error("dg_ddp_new: NULL context or communicator");
    if (opts.bucket_cap_bytes == 0 || opts.first_bucket_cap_bytes == 0)
        return dg_set_error("dg_ddp_new: bucket sizes must be positive");
    dg_ddp *d = calloc(1, sizeof *d);
    if (!d) return dg_set_error("dg_ddp_new: out of memory");
    d->ctx = ctx;
    d->comm = comm;
    d->opts = opts;
    d->be = dg_backend_get(dg_ctx_device(ctx));
    d->path = dg_ctx_device(ctx) == DG_CPU ? PATH_HOST
              : dg_comm_is_device(comm)    ? PATH_DEVICE
                                           : PATH_STAGED;
    if (d->path == PATH_STAGED &&
        !(d->be->stream.alloc_host && d->be->stream.to_host_async && d->be->stream.event_new)) {
        dg_set_error("dg_ddp_new: the %s backend cannot stage gradients through the host "
                     "for the %s communicator", d->be->name, dg_comm_backend_name(comm));
        free(d);
        return DG_ERR;
    }
    if (opts.bf16_compress && (d->path != PATH_HOST || !d->be->lowp.f32_to_bf16)) {
        dg_set_error("dg_ddp_new: bf16_compress needs a CPU context (the %s backend has no bf16 "
                     "gradient path yet)", d->be->name);
        free(d);
        return DG_ERR;
    }
    if (check_same_params(d)) {
        free(d);
        return DG_ERR;
    }
    size_t n;
    float *p = dg_ctx_param_buffer(ctx, &n);
    if (n && broadcast_floats(d, p, n)) {
        free(d);
        return DG_ERR;
    }
    build_buckets(d);
    if (opts.bf16_compress) {
        d->half = malloc((n ? n : 1) * sizeof *d->half);
        if (!d->half) {
            dg_set_error("dg_ddp_new: out of memory for the bf16 gradient buffer (%zu values)", n);
            free(d->buckets);
            free(d->bucket_of);
            free(d->used);
            free(d);
            return DG_ERR;
        }
    }
    if (d->path == PATH_STAGED && stage_new(d)) {
        stage_free(d);
        free(d->buckets);
        free(d->bucket_of);
        free(d->used);
        free(d);
        return DG_ERR;
    }
    reset_step(d);
    dg_ctx_set_grad_ready_hook(ctx, on_grad_ready, d);
    *out = d;
    return DG_OK;
}

void dg_ddp_free(dg_ddp *d) {
    if (!d) return;
    dg_ctx_set_grad_ready_hook(d->ctx, NULL, NULL);
    stage_free(d);
    free(d->buckets);
    free(d->bucket_of);
    free(d->used);
    free(d->half);
    free(d);
}

dg_status dg_ddp_backward(dg_ddp *d, dg_tensor *loss) {
    if (d->failed) return dg_set_error("dg_ddp_backward: the communicator has failed");
    reset_step(d);
    dg_timeline_begin(d->tl, "backward", DG_TIMELINE_COMPUTE);
    dg_status bst = dg_backward(loss);
    dg_timeline_end(d->tl, DG_TIMELINE_COMPUTE);
    if (bst) return DG_ERR;
    if (d->no_sync) return DG_OK;
    double t0 = now();
    dg_timeline_begin(d->tl, "allreduce_wait", DG_TIMELINE_COMPUTE);
    launch_ready(d, true);   /* buckets with unused parameters, or overlap off */
    /* which parameters have a gradient on any rank: after every bucket, so
     * the collectives start in the same order on every rank */
    int np;
    dg_tensor **params = dg_ctx_params(d->ctx, &np);
    for (int i = 0; i < np; i++) d->used[i] = dg_param_has_grad(params[i]);
    if (!d->failed && np && dg_comm_iallreduce(d->comm, d->used, (size_t)np, DG_COMM_I32, DG_COMM_MAX, &d->used_req))
        d->failed = true;
    if (d->path == PATH_DEVICE && !d->failed && dg__comm_dev_join(d->comm)) d->failed = true;
    for (int k = 0; k < d->nbuckets && !d->failed; k++) {
        bucket *b = &d->buckets[k];
        if (!b->launched) continue;
        if (d->path != PATH_DEVICE && dg_comm_wait(b->req)) d->failed = true;
        if (d->half && !d->failed)
            d->be->lowp.bf16_to_f32(dg_ctx_grad_buffer(d->ctx, NULL) + b->offset, d->half + b->offset,
                                    (int64_t)b->count);
        dg_timeline_end(d->tl, DG_TIMELINE_COMM + k);
    }
    if (!d->failed && np && dg_comm_wait(d->used_req)) d->failed = true;
    /* a parameter no rank reached keeps no gradient (the optimizer skips
     * it); one reached elsewhere has the average, this rank's share 0 */
    for (int i = 0; i < np && !d->failed; i++) dg_param_set_has_grad(params[i], d->used[i] != 0);
    if (d->path == PATH_STAGED && !d->failed) {
        /* back to the device, queued; the next step's copies to the host
         * come after these on the stream, so stage is not overwritten early */
        float *g = dg_ctx_grad_buffer(d->ctx, NULL);
        for (int k = 0; k < d->nbuckets; k++)
            d->be->mem.from_host(g + d->buckets[k].offset, d->stage + d->buckets[k].offset,
                             d->buckets[k].count * sizeof(float));
    }
    dg_timeline_end(d->tl, DG_TIMELINE_COMPUTE);
    if (d->failed) return dg_set_error("dg_ddp_backward: gradient all-reduce failed");
    double t1 = now();
    d->stats.wait_seconds += t1 - t0;
    d->stats.reduce_seconds += t1 - d->t_first_launch;
    d->stats.synced_steps++;
    return DG_OK;
}

void dg_ddp_set_no_sync(dg_ddp *d, bool no_sync) { d->no_sync = no_sync; }

void dg_ddp_set_timeline(dg_ddp *d, dg_timeline *tl) { d->tl = tl; }

dg_status dg_ddp_broadcast_tensor(dg_ddp *d, dg_tensor *t) {
    if (!dg_is_contiguous(t) || t->dtype != DG_F32)
        return dg_set_error("dg_ddp_broadcast_tensor: need a contiguous float32 tensor");
    if (t->ctx != d->ctx)
        return dg_set_error("dg_ddp_broadcast_tensor: the tensor belongs to another context");
    return broadcast_floats(d, t->data, (size_t)dg_numel(t));
}

void dg_ddp_get_stats(const dg_ddp *d, dg_ddp_stats *s) { *s = d->stats; }

void dg_ddp_bucket_range(const dg_ddp *d, int b, int *first, int *last) {
    DG_ASSERT(b >= 0 && b < d->nbuckets);
    *first = d->buckets[b].first;
    *last = d->buckets[b].last;
}
