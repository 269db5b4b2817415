/* comm.c - backend selection, argument checks, the request pool and the
 * waits with a deadline. The backends only start operations and poll them. */
#define _POSIX_C_SOURCE 200809L

#include "comm-impl.h"
#include "impl.h"   /* dg__cuda_set_local_rank */
#include "amp-impl.h"   /* dg__bf16_round, dg__bf16_widen */

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

size_t dg_comm_dtype_size(dg_comm_dtype dtype) {
    switch (dtype) {
    case DG_COMM_F32: case DG_COMM_I32: return 4;
    case DG_COMM_F64: case DG_COMM_I64: return 8;
    case DG_COMM_BF16: return 2;
    }
    return 0;
}

dg_status dg_comm_fail(dg_comm *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->failed_msg, sizeof c->failed_msg, fmt, ap);
    va_end(ap);
    c->failed = true;
    return dg_set_error("%s", c->failed_msg);
}

/* ---- environment ------------------------------------------------------ */

#ifdef DG_HAVE_MPI
static bool env_set(const char *name) {
    const char *v = getenv(name);
    return v && v[0];
}

/* Set by mpirun/mpiexec (Open MPI, PMIx, PMI/MPICH hydra) and srun. */
static const char *launcher_var(void) {
    static const char *const vars[] = {
        "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
        "SLURM_PROCID",
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (env_set(vars[i])) return vars[i];
    return NULL;
}
#endif

/* World size announced by the launcher, or 0 if unknown. */
static long launcher_world_size(const char **var) {
    static const char *const vars[] = {
        "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS",
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && v[0]) {
            *var = vars[i];
            return strtol(v, NULL, 10);
        }
    }
    return 0;
}

static dg_status timeout_from_env(double *out) {
    const char *v = getenv("DG_COMM_TIMEOUT");
    *out = DG_COMM_DEFAULT_TIMEOUT;
    if (!v || !v[0]) return DG_OK;
    char *end;
    errno = 0;
    double t = strtod(v, &end);
    while (*end == ' ' || *end == '\t' || *end == '\n') end++;
    if (errno || end == v || *end || !isfinite(t) || t < 0)
        return dg_set_error("dg_comm_init: DG_COMM_TIMEOUT='%s' is not a "
                            "number of seconds >= 0", v);
    *out = t;
    return DG_OK;
}

#ifndef DG_HAVE_NCCL
#ifdef DG_HAVE_CUDA
#define DG_NCCL_MISSING "NCCL (not found at configure time; see DG_WITH_NCCL)"
#else
#define DG_NCCL_MISSING "CUDA"
#endif
#endif

bool dg_comm_has_backend(const char *name) {
    if (!name) return false;
    if (strcmp(name, "local") == 0) return true;
#ifdef DG_HAVE_MPI
    if (strcmp(name, "mpi") == 0) return true;
#endif
#ifdef DG_HAVE_NCCL
    if (strcmp(name, "nccl") == 0) return true;
#endif
    return false;
}

static dg_status pick_backend(const char *name, const dg_comm_backend **out) {
    *out = NULL;
    bool automatic = false;
    if (!name) name = getenv("DG_COMM_BACKEND");
    if (!name || !name[0] || strcmp(name, "auto") == 0) {
        automatic = true;
#ifdef DG_HAVE_MPI
        name = launcher_var() ? "mpi" : "local";
#else
        name = "local";
#endif
    }
    if (strcmp(name, "local") == 0) {
        const char *var = NULL;
        long n = launcher_world_size(&var);
        if (automatic && n > 1)
            return dg_set_error("dg_comm_init: launched as one of %ld ranks "
                                "(%s=%ld) but dgrad was built without MPI; "
                                "rebuild with MPI or ask for backend \"local\"",
                                n, var, n);
        *out = &dg_comm_backend_local;
        return DG_OK;
    }
    if (strcmp(name, "mpi") == 0) {
#ifdef DG_HAVE_MPI
        *out = &dg_comm_backend_mpi;
        return DG_OK;
#else
        return dg_set_error("dg_comm_init: backend \"mpi\" is not available: "
                            "dgrad was built without MPI");
#endif
    }
    if (strcmp(name, "nccl") == 0) {
#ifdef DG_HAVE_NCCL
        *out = &dg_comm_backend_nccl;
        return DG_OK;
#else
        return dg_set_error("dg_comm_init: backend \"nccl\" is not available: "
                            "dgrad was built without %s", DG_NCCL_MISSING);
#endif
    }
    return dg_set_error("dg_comm_init: unknown backend \"%s\" (available: "
#ifdef DG_HAVE_MPI
                        "mpi, "
#endif
#ifdef DG_HAVE_NCCL
                        "nccl, "
#endif
                        "local)", name);
}

/* ---- request pool ----------------------------------------------------- */

static dg_status pool_grow(dg_comm *c) {
    dg_comm_pool_chunk *ch = calloc(1, sizeof *ch);
    if (!ch) return dg_set_error("dg_comm: out of memory for requests");
    ch->next = c->chunks;
    c->chunks = ch;
    for (int i = DG_COMM_POOL_CHUNK - 1; i >= 0; i--) {
        dg_comm_request *r = &ch->reqs[i];
        r->comm = c;
        r->state = DG_REQ_FREE;
        r->next_free = c->free_list;
        c->free_list = r;
    }
    return DG_OK;
}

static dg_comm_request *req_acquire(dg_comm *c, const char *what) {
    if (!c->free_list && pool_grow(c) != DG_OK) return NULL;
    dg_comm_request *r = c->free_list;
    c->free_list = r->next_free;
    r->next_free = NULL;
    r->state = DG_REQ_ACTIVE;
    r->what = what;
    r->avg_buf = NULL;
    r->avg_count = 0;
    r->dtype = DG_COMM_F32;
    memset(&r->be, 0, sizeof r->be);
    c->n_outstanding++;
    return r;
}

static void req_release(dg_comm_request *r) {
    dg_comm *c = r->comm;
    DG_ASSERT(r->state != DG_REQ_FREE);
    DG_ASSERT(c->n_outstanding > 0);
    r->state = DG_REQ_FREE;
    r->next_free = c->free_list;
    c->free_list = r;
    c->n_outstanding--;
}

/* ---- completion ------------------------------------------------------- */

static void avg_divide(void *buf, size_t n, dg_comm_dtype dt, int size) {
    switch (dt) {
    case DG_COMM_F32: {
        float *p = buf, d = (float)size;
        for (size_t i = 0; i < n; i++) p[i] /= d;
        break;
    }
    case DG_COMM_F64: {
        double *p = buf, d = (double)size;
        for (size_t i = 0; i < n; i++) p[i] /= d;
        break;
    }
    case DG_COMM_I32: {
        int32_t *p = buf, d = (int32_t)size;
        for (size_t i = 0; i < n; i++) p[i] /= d;
        break;
    }
    case DG_COMM_I64: {
        int64_t *p = buf, d = (int64_t)size;
        for (size_t i = 0; i < n; i++) p[i] /= d;
        break;
    }
    case DG_COMM_BF16: {
        uint16_t *p = buf;
        float d = (float)size;
        for (size_t i = 0; i < n; i++) p[i] = dg__bf16_round(dg__bf16_widen(p[i]) / d);
        break;
    }
    }
}

/* Poll an ACTIVE or DONE request once; on completion apply AVG and mark it
 * DONE. On error the request is left for the caller to release. */
static dg_status req_poll(dg_comm_request *r, bool *done) {
    dg_comm *c = r->comm;
    if (r->state == DG_REQ_DONE) {
        *done = true;
        return DG_OK;
    }
    *done = false;
    if (c->failed)
        return dg_set_error("%s: communicator failed earlier: %s",
                            r->what, c->failed_msg);
    if (c->be->test(c, r, done) != DG_OK) {
        if (!c->failed) dg_comm_fail(c, "%s: %s", r->what, dg_last_error());
        return DG_ERR;
    }
    if (*done) {
        if (r->avg_buf && c->size > 1)
            avg_divide(r->avg_buf, r->avg_count, r->dtype, c->size);
        r->state = DG_REQ_DONE;
    }
    return DG_OK;
}

static dg_status timed_out(dg_comm *c, const char *what) {
    return dg_comm_fail(c, "%s: timed out after %g s waiting for ranks "
                        "(a rank may have died)", what, c->timeout);
}

/* Wait for one request (NULL: all outstanding ones) until done or the
 * deadline. Releases what it waited for, also on error. */
static dg_status wait_until_done(dg_comm *c, dg_comm_request *one) {
    double t0 = now_s();
    const char *what = one ? one->what : "dg_comm_wait_all";
    dg_status st = DG_OK;
    for (;;) {
        bool all_done = true;
        if (one) {
            if (req_poll(one, &all_done) != DG_OK) st = DG_ERR;
        } else {
            for (dg_comm_pool_chunk *ch = c->chunks; ch && st == DG_OK; ch = ch->next)
                for (int i = 0; i < DG_COMM_POOL_CHUNK; i++) {
                    dg_comm_request *r = &ch->reqs[i];
                    if (r->state == DG_REQ_FREE) continue;
                    bool d;
                    if (req_poll(r, &d) != DG_OK) {
                        st = DG_ERR;
                        break;
                    }
                    if (!d) {
                        all_done = false;
                        what = r->what;
                    }
                }
        }
        if (st == DG_OK && all_done) break;
        if (st == DG_OK && c->timeout > 0 && now_s() - t0 > c->timeout)
            st = timed_out(c, what);
        if (st != DG_OK) break;
        sched_yield();   /* helps when ranks oversubscribe the cores */
    }
    if (one) {
        req_release(one);
    } else {
        for (dg_comm_pool_chunk *ch = c->chunks; ch; ch = ch->next)
            for (int i = 0; i < DG_COMM_POOL_CHUNK; i++)
                if (ch->reqs[i].state != DG_REQ_FREE) req_release(&ch->reqs[i]);
    }
    return st;
}

dg_status dg_comm_wait(dg_comm_request *req) {
    DG_ASSERT(req && req->comm && req->state != DG_REQ_FREE);
    return wait_until_done(req->comm, req);
}

dg_status dg_comm_test(dg_comm_request *req, bool *done) {
    DG_ASSERT(req && req->comm && req->state != DG_REQ_FREE && done);
    bool d = false;
    dg_status st = req_poll(req, &d);
    *done = d;
    if (st != DG_OK || d) req_release(req);
    return st;
}

dg_status dg_comm_wait_all(dg_comm *comm) {
    DG_ASSERT(comm);
    if (comm->n_outstanding == 0) return DG_OK;
    return wait_until_done(comm, NULL);
}

dg_status dg_comm_progress(dg_comm *comm) {
    DG_ASSERT(comm);
    if (comm->failed)
        return dg_set_error("dg_comm_progress: communicator failed earlier: %s",
                            comm->failed_msg);
    if (comm->n_outstanding == 0) return DG_OK;
    for (dg_comm_pool_chunk *ch = comm->chunks; ch; ch = ch->next)
        for (int i = 0; i < DG_COMM_POOL_CHUNK; i++) {
            dg_comm_request *r = &ch->reqs[i];
            bool d;
            if (r->state == DG_REQ_ACTIVE && req_poll(r, &d) != DG_OK)
                return DG_ERR;
        }
    return DG_OK;
}

/* ---- lifetime and topology -------------------------------------------- */

dg_status dg_comm_init(dg_comm **out, const char *backend) {
    DG_ASSERT(out);
    *out = NULL;
    const dg_comm_backend *be;
    double timeout;
    if (pick_backend(backend, &be) != DG_OK) return DG_ERR;
    if (timeout_from_env(&timeout) != DG_OK) return DG_ERR;
    dg_comm *c = calloc(1, sizeof *c);
    if (!c) return dg_set_error("dg_comm_init: out of memory");
    c->be = be;
    c->timeout = timeout;
    if (pool_grow(c) != DG_OK) {
        free(c);
        return DG_ERR;
    }
    if (be->init(c) != DG_OK) {
        free(c->chunks);
        free(c);
        return DG_ERR;
    }
    DG_ASSERT(c->size >= 1 && c->rank >= 0 && c->rank < c->size);
    /* An MPI that does not belong to the launcher (an Open MPI binary under
     * MPICH's mpiexec, say) comes up as N separate worlds of one: refuse. */
    const char *var = NULL;
    long announced = launcher_world_size(&var);
    if (strcmp(dg_comm_backend_name(c), "mpi") == 0 && announced > 1 && announced != c->size) {
        dg_set_error("dg_comm_init: the launcher started %ld ranks (%s) but %s sees a world of %d; "
                     "is the program built against the MPI of the launcher?",
                     announced, var, dg_comm_backend_name(c), c->size);
        dg_comm_free(c);
        return DG_ERR;
    }
    DG_ASSERT(c->local_size >= 1 && c->local_rank >= 0 && c->local_rank < c->local_size);
    DG_ASSERT(c->node_count >= 1 && c->node >= 0 && c->node < c->node_count);
#ifdef DG_HAVE_CUDA
    /* a CUDA context made later picks the GPU of this local rank when the
     * launcher says nothing (MPICH, say) */
    dg__cuda_set_local_rank(c->local_rank);
#endif
    *out = c;
    return DG_OK;
}

void dg_comm_free(dg_comm *comm) {
    if (!comm) return;
    if (!comm->failed && comm->n_outstanding > 0) {
        /* The error, if any, stays recorded for the caller. */
        (void)wait_until_done(comm, NULL);
    }
    comm->be->finalize(comm, comm->failed);
    dg_comm_pool_chunk *ch = comm->chunks;
    while (ch) {
        dg_comm_pool_chunk *next = ch->next;
        free(ch);
        ch = next;
    }
    free(comm);
}

int dg_comm_rank(const dg_comm *comm) { DG_ASSERT(comm); return comm->rank; }
int dg_comm_size(const dg_comm *comm) { DG_ASSERT(comm); return comm->size; }
int dg_comm_local_rank(const dg_comm *comm) { DG_ASSERT(comm); return comm->local_rank; }
int dg_comm_local_size(const dg_comm *comm) { DG_ASSERT(comm); return comm->local_size; }
int dg_comm_node(const dg_comm *comm) { DG_ASSERT(comm); return comm->node; }
int dg_comm_node_count(const dg_comm *comm) { DG_ASSERT(comm); return comm->node_count; }
const char *dg_comm_backend_name(const dg_comm *comm) { DG_ASSERT(comm); return comm->be->name; }
bool dg_comm_failed(const dg_comm *comm) { DG_ASSERT(comm); return comm->failed; }
bool dg_comm_is_device(const dg_comm *comm) { DG_ASSERT(comm); return comm->be->device; }

void dg_comm_set_timeout(dg_comm *comm, double seconds) {
    DG_ASSERT(comm);
    comm->timeout = (isfinite(seconds) && seconds > 0) ? seconds : 0;
}

double dg_comm_timeout(const dg_comm *comm) { DG_ASSERT(comm); return comm->timeout; }

/* ---- argument checks -------------------------------------------------- */

static dg_status check_common(dg_comm *c, const char *what, dg_comm_dtype dt,
                              size_t count, size_t blocks) {
    if (c->failed)
        return dg_set_error("%s: communicator failed earlier: %s", what, c->failed_msg);
    size_t esz = dg_comm_dtype_size(dt);
    if (esz == 0) return dg_set_error("%s: invalid dtype %d", what, (int)dt);
    if (count > SIZE_MAX / esz / blocks)
        return dg_set_error("%s: count %zu is too large", what, count);
    return DG_OK;
}

static dg_status check_op(const char *what, dg_comm_op op, dg_comm_dtype dt) {
    switch (op) {
    case DG_COMM_SUM: case DG_COMM_AVG:
        return DG_OK;
    case DG_COMM_MAX: case DG_COMM_MIN:
        if (dt == DG_COMM_BF16)
            return dg_set_error("%s: bfloat16 reduces with SUM or AVG only, not %s", what,
                                op == DG_COMM_MAX ? "MAX" : "MIN");
        return DG_OK;
    }
    return dg_set_error("%s: invalid op %d", what, (int)op);
}

static bool overlap(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return na && nb && pa < pb + nb && pb < pa + na;
}

/* ---- starts --------------------------------------------------------- */

static dg_status start_allreduce(dg_comm *c, const char *what, void *buf,
                                 size_t count, dg_comm_dtype dt, dg_comm_op op,
                                 dg_comm_request **out) {
    *out = NULL;
    if (check_common(c, what, dt, count, 1) != DG_OK) return DG_ERR;
    if (check_op(what, op, dt) != DG_OK) return DG_ERR;
    if (count && !buf) return dg_set_error("%s: buf is NULL", what);
    dg_comm_request *r = req_acquire(c, what);
    if (!r) return DG_ERR;
    if (op == DG_COMM_AVG && !c->be->handles_avg) {
        r->avg_buf = buf;
        r->avg_count = count;
        r->dtype = dt;
    }
    if (c->be->iallreduce(c, r, buf, count, dt, op) != DG_OK) {
        req_release(r);
        return DG_ERR;
    }
    *out = r;
    return DG_OK;
}

static dg_status start_broadcast(dg_comm *c, const char *what, void *buf,
                                 size_t count, dg_comm_dtype dt, int root,
                                 dg_comm_request **out) {
    *out = NULL;
    if (check_common(c, what, dt, count, 1) != DG_OK) return DG_ERR;
    if (count && !buf) return dg_set_error("%s: buf is NULL", what);
    if (root < 0 || root >= c->size)
        return dg_set_error("%s: root %d is not a rank of a world of size %d",
                            what, root, c->size);
    dg_comm_request *r = req_acquire(c, what);
    if (!r) return DG_ERR;
    if (c->be->ibroadcast(c, r, buf, count, dt, root) != DG_OK) {
        req_release(r);
        return DG_ERR;
    }
    *out = r;
    return DG_OK;
}

static dg_status start_allgather(dg_comm *c, const char *what, const void *send,
                                 void *recv, size_t count, dg_comm_dtype dt,
                                 dg_comm_request **out) {
    *out = NULL;
    if (check_common(c, what, dt, count, (size_t)c->size) != DG_OK) return DG_ERR;
    size_t esz = dg_comm_dtype_size(dt);
    if (count && !recv) return dg_set_error("%s: recv is NULL", what);
    if (overlap(send, count * esz, recv, count * esz * (size_t)c->size))
        return dg_set_error("%s: send overlaps recv (pass send = NULL for in place)", what);
    dg_comm_request *r = req_acquire(c, what);
    if (!r) return DG_ERR;
    if (c->be->iallgather(c, r, send, recv, count, dt) != DG_OK) {
        req_release(r);
        return DG_ERR;
    }
    *out = r;
    return DG_OK;
}

static dg_status start_reduce_scatter(dg_comm *c, const char *what,
                                      const void *send, void *recv, size_t count,
                                      dg_comm_dtype dt, dg_comm_op op,
                                      dg_comm_request **out) {
    *out = NULL;
    if (check_common(c, what, dt, count, (size_t)c->size) != DG_OK) return DG_ERR;
    if (check_op(what, op, dt) != DG_OK) return DG_ERR;
    size_t esz = dg_comm_dtype_size(dt);
    if (count && !recv) return dg_set_error("%s: recv is NULL", what);
    if (overlap(send, count * esz * (size_t)c->size, recv, count * esz))
        return dg_set_error("%s: send overlaps recv (pass send = NULL for in place)", what);
    dg_comm_request *r = req_acquire(c, what);
    if (!r) return DG_ERR;
    if (op == DG_COMM_AVG && !c->be->handles_avg) {
        r->avg_buf = recv;
        r->avg_count = count;
        r->dtype = dt;
    }
    if (c->be->ireduce_scatter(c, r, send, recv, count, dt, op) != DG_OK) {
        req_release(r);
        return DG_ERR;
    }
    *out = r;
    return DG_OK;
}

static dg_status start_barrier(dg_comm *c, const char *what, dg_comm_request **out) {
    *out = NULL;
    if (c->failed)
        return dg_set_error("%s: communicator failed earlier: %s", what, c->failed_msg);
    dg_comm_request *r = req_acquire(c, what);
    if (!r) return DG_ERR;
    if (c->be->ibarrier(c, r) != DG_OK) {
        req_release(r);
        return DG_ERR;
    }
    *out = r;
    return DG_OK;
}

/* ---- public collectives ----------------------------------------------- */

dg_status dg_comm_iallreduce(dg_comm *comm, void *buf, size_t count,
                             dg_comm_dtype dtype, dg_comm_op op,
                             dg_comm_request **req) {
    DG_ASSERT(comm && req);
    return start_allreduce(comm, "dg_comm_iallreduce", buf, count, dtype, op, req);
}

dg_status dg_comm_allreduce(dg_comm *comm, void *buf, size_t count,
                            dg_comm_dtype dtype, dg_comm_op op) {
    DG_ASSERT(comm);
    dg_comm_request *r;
    if (start_allreduce(comm, "dg_comm_allreduce", buf, count, dtype, op, &r) != DG_OK)
        return DG_ERR;
    return wait_until_done(comm, r);
}

dg_status dg_comm_ibroadcast(dg_comm *comm, void *buf, size_t count,
                             dg_comm_dtype dtype, int root,
                             dg_comm_request **req) {
    DG_ASSERT(comm && req);
    return start_broadcast(comm, "dg_comm_ibroadcast", buf, count, dtype, root, req);
}

dg_status dg_comm_broadcast(dg_comm *comm, void *buf, size_t count,
                            dg_comm_dtype dtype, int root) {
    DG_ASSERT(comm);
    dg_comm_request *r;
    if (start_broadcast(comm, "dg_comm_broadcast", buf, count, dtype, root, &r) != DG_OK)
        return DG_ERR;
    return wait_until_done(comm, r);
}

dg_status dg_comm_iallgather(dg_comm *comm, const void *send, void *recv,
                             size_t count_per_rank, dg_comm_dtype dtype,
                             dg_comm_request **req) {
    DG_ASSERT(comm && req);
    return start_allgather(comm, "dg_comm_iallgather", send, recv, count_per_rank,
                           dtype, req);
}

dg_status dg_comm_allgather(dg_comm *comm, const void *send, void *recv,
                            size_t count_per_rank, dg_comm_dtype dtype) {
    DG_ASSERT(comm);
    dg_comm_request *r;
    if (start_allgather(comm, "dg_comm_allgather", send, recv, count_per_rank,
                        dtype, &r) != DG_OK)
        return DG_ERR;
    return wait_until_done(comm, r);
}

dg_status dg_comm_ireduce_scatter(dg_comm *comm, const void *send, void *recv,
                                  size_t recv_count_per_rank,
                                  dg_comm_dtype dtype, dg_comm_op op,
                                  dg_comm_request **req) {
    DG_ASSERT(comm && req);
    return start_reduce_scatter(comm, "dg_comm_ireduce_scatter", send, recv,
                                recv_count_per_rank, dtype, op, req);
}

dg_status dg_comm_reduce_scatter(dg_comm *comm, const void *send, void *recv,
                                 size_t recv_count_per_rank,
                                 dg_comm_dtype dtype, dg_comm_op op) {
    DG_ASSERT(comm);
    dg_comm_request *r;
    if (start_reduce_scatter(comm, "dg_comm_reduce_scatter", send, recv,
                             recv_count_per_rank, dtype, op, &r) != DG_OK)
        return DG_ERR;
    return wait_until_done(comm, r);
}

dg_status dg_comm_ibarrier(dg_comm *comm, dg_comm_request **req) {
    DG_ASSERT(comm && req);
    return start_barrier(comm, "dg_comm_ibarrier", req);
}

dg_status dg_comm_barrier(dg_comm *comm) {
    DG_ASSERT(comm);
    dg_comm_request *r;
    if (start_barrier(comm, "dg_comm_barrier", &r) != DG_OK) return DG_ERR;
    return wait_until_done(comm, r);
}

/* ---- device communicators (ddp.c) ------------------------------------ */

dg_status dg__comm_dev_allreduce(dg_comm *c, void *buf, size_t count, dg_comm_dtype dt,
                                 dg_comm_op op) {
    const char *what = "dg_comm (device all-reduce)";
    DG_ASSERT(c && c->be->dev_allreduce);
    if (c->failed)
        return dg_set_error("%s: communicator failed earlier: %s", what, c->failed_msg);
    if (check_common(c, what, dt, count, 1) != DG_OK || check_op(what, op, dt) != DG_OK)
        return DG_ERR;
    return c->be->dev_allreduce(c, buf, count, dt, op);
}

dg_status dg__comm_dev_join(dg_comm *c) {
    DG_ASSERT(c && c->be->dev_join);
    if (c->failed)
        return dg_set_error("dg_comm (device join): communicator failed earlier: %s",
                            c->failed_msg);
    return c->be->dev_join(c);
}
