/* comm_nccl.c - the "nccl" backend: NCCL collectives on GPU buffers.
 *
 * Bootstrap: an inner host communicator ("auto": MPI under a launcher, else
 * local) gives the ranks and the topology. Every rank sets up the CUDA
 * backend (its device follows the local rank, see backend_cuda.cu), the
 * ranks agree that all of them could, then rank 0 makes the ncclUniqueId
 * and broadcasts it through the host communicator (a world of one needs no
 * broadcast) and every rank calls ncclCommInitRank.
 *
 * Streams: NCCL runs on a stream of its own (highest priority). A
 * collective records an event on the CUDA backend's stream ("compute") and
 * makes the NCCL stream wait for it, so it reads what the ops queued before
 * it wrote; its request completes when an event recorded after it on the
 * NCCL stream has run. dev_allreduce/dev_join (DDP) do the same without
 * requests and hand the result back to the compute stream with an event,
 * so the host never waits for the GPU.
 *
 * Host buffers (cudaPointerGetAttributes says so, or count 0) go through
 * the inner host communicator: one dg_comm serves a training loop's
 * gradients (GPU) and its counters (host).
 */
#define _POSIX_C_SOURCE 200809L
#include "comm-impl.h"
#include "impl.h"

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 10, 0)
#error "dgrad needs NCCL 2.10 or newer (ncclAvg)"
#endif

enum { REQ_DEVICE = 1, REQ_HOST = 2 };

typedef struct {
    dg_comm *host;             /* bootstrap, and collectives on host buffers */
    int device;
    ncclComm_t nccl;
    cudaStream_t stream;       /* NCCL's stream */
    cudaStream_t compute;      /* the CUDA backend's stream (not owned) */
    cudaEvent_t ready;         /* compute -> stream */
    cudaEvent_t joined;        /* stream -> compute, at dev_join */
    bool join_pending;         /* joined recorded and not yet seen done */
    cudaEvent_t *spare;        /* completion events for requests, free */
    int nspare, spare_cap;
    cudaEvent_t *made;         /* every completion event, destroyed at the end */
    int nmade, made_cap;
} nccl_impl;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- errors (llm.c style: the failed call, its message, file:line) ---- */

static dg_status cuda_err(dg_comm *c, const char *what, const char *call, cudaError_t e,
                          const char *file, int line) {
    cudaGetLastError();
    return dg_comm_fail(c, "%s: %s failed: %s (%s:%d)", what, call, cudaGetErrorString(e),
                        file, line);
}

static const char *nccl_detail(const nccl_impl *m) {
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
    const char *s = ncclGetLastError(m ? m->nccl : NULL);
    return s ? s : "";
#else
    (void)m;
    return "";
#endif
}

static dg_status nccl_err(dg_comm *c, const char *what, const char *call, ncclResult_t r,
                          const char *file, int line) {
    const char *d = nccl_detail(c->impl);
    return dg_comm_fail(c, "%s: %s failed: %s%s%s (%s:%d; a rank may have died)", what, call,
                        ncclGetErrorString(r), *d ? ": " : "", d, file, line);
}

#define cudaTry(c, what, call)                                                    \
    do {                                                                          \
        cudaError_t e_ = (call);                                                  \
        if (e_ != cudaSuccess) return cuda_err(c, what, #call, e_, __FILE__, __LINE__); \
    } while (0)

#define ncclTry(c, what, call)                                                    \
    do {                                                                          \
        ncclResult_t r_ = (call);                                                 \
        if (r_ != ncclSuccess) return nccl_err(c, what, #call, r_, __FILE__, __LINE__); \
    } while (0)

/* An error that NCCL hit in the background (a peer that went away). */
static dg_status check_async(dg_comm *c, const char *what) {
    nccl_impl *m = c->impl;
    ncclResult_t ar = ncclSuccess;
    ncclTry(c, what, ncclCommGetAsyncError(m->nccl, &ar));
    if (ar != ncclSuccess && ar != ncclInProgress)
        return nccl_err(c, what, "NCCL (asynchronous error)", ar, __FILE__, __LINE__);
    return DG_OK;
}

/* Poll ev until it has run, within the communicator's timeout. */
static dg_status wait_event(dg_comm *c, const char *what, cudaEvent_t ev) {
    double t0 = now_s();
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return DG_OK;
        if (e != cudaErrorNotReady) return cuda_err(c, what, "cudaEventQuery", e, __FILE__, __LINE__);
        cudaGetLastError();   /* not ready is not an error */
        if (check_async(c, what) != DG_OK) return DG_ERR;
        if (c->timeout > 0 && now_s() - t0 > c->timeout)
            return dg_comm_fail(c, "%s: timed out after %g s waiting for the GPU's "
                                "collectives (a rank may have died)", what, c->timeout);
        sched_yield();
    }
}

/* ---- maps ----------------------------------------------------------------- */

static ncclDataType_t nccl_dtype(dg_comm_dtype dt) {
    switch (dt) {
    case DG_COMM_F32: return ncclFloat32;
    case DG_COMM_F64: return ncclFloat64;
    case DG_COMM_I32: return ncclInt32;
    case DG_COMM_I64: return ncclInt64;
    case DG_COMM_BF16: return ncclBfloat16;
    }
    DG_ASSERT(!"unknown dtype");
    return ncclFloat32;
}

static ncclRedOp_t nccl_op(dg_comm_op op) {
    switch (op) {
    case DG_COMM_SUM: return ncclSum;
    case DG_COMM_AVG: return ncclAvg;
    case DG_COMM_MAX: return ncclMax;
    case DG_COMM_MIN: return ncclMin;
    }
    DG_ASSERT(!"unknown op");
    return ncclSum;
}

/* ---- buffers: device or host ------------------------------------------------- */

/* 1: GPU memory of this communicator's device; 0: host memory (or NULL);
 * -1: GPU memory of another device (error set). */
static int on_device(dg_comm *c, const char *what, const void *p) {
    nccl_impl *m = c->impl;
    if (!p) return 0;
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged) return 0;
    if (a.type == cudaMemoryTypeDevice && a.device != m->device) {
        dg_set_error("%s: the buffer is on GPU %d but the communicator uses GPU %d", what,
                     a.device, m->device);
        return -1;
    }
    return 1;
}

/* Which way a call goes: 1 NCCL, 0 host communicator, -1 error. */
static int route(dg_comm *c, const char *what, const void *a, const void *b, size_t count) {
    if (count == 0) return 0;   /* same choice on every rank */
    int ka = on_device(c, what, a), kb = on_device(c, what, b);
    if (ka < 0 || kb < 0) return -1;
    if (a && b && ka != kb) {
        dg_set_error("%s: one buffer is GPU memory and the other host memory", what);
        return -1;
    }
    return ka || kb;
}

/* ---- completion events for requests -------------------------------------------- */

static dg_status event_get(dg_comm *c, const char *what, cudaEvent_t *out) {
    nccl_impl *m = c->impl;
    if (m->nspare > 0) {
        *out = m->spare[--m->nspare];
        return DG_OK;
    }
    if (m->nmade == m->made_cap) {
        int cap = m->made_cap ? 2 * m->made_cap : 16;
        cudaEvent_t *made = realloc(m->made, (size_t)cap * sizeof *made);
        cudaEvent_t *spare = realloc(m->spare, (size_t)cap * sizeof *spare);
        if (made) m->made = made;
        if (spare) m->spare = spare;
        if (!made || !spare) return dg_set_error("%s: out of memory", what);
        m->made_cap = m->spare_cap = cap;
    }
    cudaTry(c, what, cudaEventCreateWithFlags(out, cudaEventDisableTiming));
    m->made[m->nmade++] = *out;
    return DG_OK;
}

static void event_put(nccl_impl *m, cudaEvent_t ev) {
    DG_ASSERT(m->nspare < m->spare_cap);
    m->spare[m->nspare++] = ev;
}

/* ---- stream order ------------------------------------------------------------------- */

/* The NCCL stream waits for the work queued so far on the compute stream. */
static dg_status after_compute(dg_comm *c, const char *what) {
    nccl_impl *m = c->impl;
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    cudaTry(c, what, cudaSetDevice(m->device));
    cudaTry(c, what, cudaStreamIsCapturing(m->compute, &cs));
    if (cs != cudaStreamCaptureStatusNone)
        return dg_set_error("%s: NCCL collectives cannot be part of a CUDA graph capture", what);
    cudaTry(c, what, cudaEventRecord(m->ready, m->compute));
    cudaTry(c, what, cudaStreamWaitEvent(m->stream, m->ready, 0));
    return DG_OK;
}

/* r completes when the work queued so far on the NCCL stream has run. */
static dg_status finish_device(dg_comm *c, dg_comm_request *r) {
    nccl_impl *m = c->impl;
    cudaEvent_t ev;
    if (event_get(c, r->what, &ev) != DG_OK) return DG_ERR;
    cudaError_t e = cudaEventRecord(ev, m->stream);
    if (e != cudaSuccess) {
        event_put(m, ev);
        return cuda_err(c, r->what, "cudaEventRecord", e, __FILE__, __LINE__);
    }
    r->be.ptr = ev;
    r->be.i64[1] = REQ_DEVICE;
    return DG_OK;
}

static void keep_host(dg_comm_request *r, dg_comm_request *inner) {
    r->be.ptr = inner;
    r->be.i64[1] = REQ_HOST;
}

/* ---- lifetime ------------------------------------------------------------------------------ */

/* failed: abort NCCL instead of waiting for it. fail_host: mark the host
 * communicator failed too (a failed job skips MPI_Finalize, as the mpi
 * backend does); not for a setup error, after which the program may go on
 * with another communicator. */
static void release(dg_comm *c, bool failed, bool fail_host) {
    nccl_impl *m = c->impl;
    if (!m) return;
    if (m->nccl) {
        if (!failed && m->stream && wait_event(c, "dg_comm_free", m->joined) != DG_OK)
            failed = true;
        if (!failed && m->stream) {
            /* everything on the NCCL stream, requests never waited for included */
            double t0 = now_s();
            cudaError_t e;
            while ((e = cudaStreamQuery(m->stream)) == cudaErrorNotReady) {
                cudaGetLastError();
                if (c->timeout > 0 && now_s() - t0 > c->timeout) break;
                sched_yield();
            }
            if (e != cudaSuccess) {
                cudaGetLastError();
                failed = true;
            }
        }
        if (failed) ncclCommAbort(m->nccl);
        else ncclCommDestroy(m->nccl);
    }
    for (int i = 0; i < m->nmade; i++) cudaEventDestroy(m->made[i]);
    if (m->ready) cudaEventDestroy(m->ready);
    if (m->joined) cudaEventDestroy(m->joined);
    if (m->stream) cudaStreamDestroy(m->stream);
    cudaGetLastError();
    if (m->host) {
        if (fail_host && failed && !dg_comm_failed(m->host))
            dg_comm_fail(m->host, "the nccl communicator failed");
        dg_comm_free(m->host);
    }
    free(m->spare);
    free(m->made);
    free(m);
    c->impl = NULL;
}

/* Set up the CUDA side of this rank; DG_ERR with a message. */
static dg_status setup_cuda(dg_comm *c, const char *what) {
    nccl_impl *m = c->impl;
    const dg_backend *be = dg_backend_get(DG_CUDA);
    DG_ASSERT(be && be->init);
    dg__cuda_set_local_rank(c->local_rank);
    if (!be->init()) {
        char msg[DG_COMM_MSG_MAX];
        const char *e = dg_last_error();
        if (strncmp(e, "dg_ctx_new: ", 12) == 0) e += 12;
        snprintf(msg, sizeof msg, "%s", e);
        dg_clear_error();
        return dg_set_error("%s: %s", what, msg);
    }
    m->device = dg__cuda_device();
    m->compute = (cudaStream_t)dg__cuda_stream();
    int lo = 0, hi = 0;
    cudaTry(c, what, cudaSetDevice(m->device));
    cudaTry(c, what, cudaDeviceGetStreamPriorityRange(&lo, &hi));
    cudaTry(c, what, cudaStreamCreateWithPriority(&m->stream, cudaStreamNonBlocking, hi));
    cudaTry(c, what, cudaEventCreateWithFlags(&m->ready, cudaEventDisableTiming));
    cudaTry(c, what, cudaEventCreateWithFlags(&m->joined, cudaEventDisableTiming));
    return DG_OK;
}

static dg_status nccl_init(dg_comm *c) {
    const char *what = "dg_comm_init (nccl)";
    nccl_impl *m = calloc(1, sizeof *m);
    if (!m) return dg_set_error("%s: out of memory", what);
    c->impl = m;
    /* No GPU at all: fail before the host communicator initializes (and,
     * when freed, finalizes) MPI, so the program may go on without NCCL. */
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        cudaGetLastError();
        if (setup_cuda(c, what) == DG_OK)   /* fails, with the CUDA backend's message */
            dg_set_error("%s: no CUDA device", what);
        goto fail;
    }
    /* "auto" and not NULL: DG_COMM_BACKEND may say "nccl" */
    if (dg_comm_init(&m->host, "auto") != DG_OK) goto fail;
    dg_comm_set_timeout(m->host, c->timeout);
    c->rank = dg_comm_rank(m->host);
    c->size = dg_comm_size(m->host);
    c->local_rank = dg_comm_local_rank(m->host);
    c->local_size = dg_comm_local_size(m->host);
    c->node = dg_comm_node(m->host);
    c->node_count = dg_comm_node_count(m->host);

    /* every rank learns whether every rank has a GPU, so all fail together */
    int32_t ok = setup_cuda(c, what) == DG_OK;
    if (c->size > 1) {
        int32_t all = ok;
        if (dg_comm_allreduce(m->host, &all, 1, DG_COMM_I32, DG_COMM_MIN) != DG_OK) goto fail;
        if (ok && !all) {
            dg_set_error("%s: another rank could not set up its GPU", what);
            goto fail;
        }
    }
    if (!ok) goto fail;

    struct {
        int32_t ok, pad;
        ncclUniqueId id;
    } boot;
    _Static_assert(sizeof boot % 4 == 0, "the NCCL id travels as int32s");
    memset(&boot, 0, sizeof boot);
    char id_msg[256] = "";
    if (c->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&boot.id);
        boot.ok = r == ncclSuccess;
        if (!boot.ok)
            snprintf(id_msg, sizeof id_msg, "ncclGetUniqueId failed: %s: %s", ncclGetErrorString(r),
                     nccl_detail(NULL));
    }
    if (c->size > 1 &&
        dg_comm_broadcast(m->host, &boot, sizeof boot / 4, DG_COMM_I32, 0) != DG_OK)
        goto fail;
    if (!boot.ok) {
        dg_set_error("%s: %s", what, c->rank == 0 ? id_msg : "rank 0 could not create the NCCL id");
        goto fail;
    }
    /* Blocking: the broadcast above showed that every rank got this far. */
    ncclResult_t r = ncclCommInitRank(&m->nccl, c->size, boot.id, c->rank);
    if (r != ncclSuccess) {
        m->nccl = NULL;
        dg_set_error("%s: ncclCommInitRank (rank %d of %d, GPU %d) failed: %s: %s", what, c->rank,
                     c->size, m->device, ncclGetErrorString(r), nccl_detail(NULL));
        goto fail;
    }
    return DG_OK;

fail:
    release(c, true, false);
    return DG_ERR;
}

static void nccl_finalize(dg_comm *c, bool failed) { release(c, failed, true); }

/* ---- collectives ----------------------------------------------------------------------- */

static dg_status nccl_iallreduce(dg_comm *c, dg_comm_request *r, void *buf, size_t count,
                                 dg_comm_dtype dt, dg_comm_op op) {
    nccl_impl *m = c->impl;
    int where = route(c, r->what, buf, NULL, count);
    if (where < 0) return DG_ERR;
    if (!where) {
        dg_comm_request *in;
        if (dg_comm_iallreduce(m->host, buf, count, dt, op, &in) != DG_OK) return DG_ERR;
        keep_host(r, in);
        return DG_OK;
    }
    if (after_compute(c, r->what) != DG_OK) return DG_ERR;
    ncclTry(c, r->what, ncclAllReduce(buf, buf, count, nccl_dtype(dt), nccl_op(op), m->nccl, m->stream));
    return finish_device(c, r);
}

static dg_status nccl_ibroadcast(dg_comm *c, dg_comm_request *r, void *buf, size_t count,
                                 dg_comm_dtype dt, int root) {
    nccl_impl *m = c->impl;
    int where = route(c, r->what, buf, NULL, count);
    if (where < 0) return DG_ERR;
    if (!where) {
        dg_comm_request *in;
        if (dg_comm_ibroadcast(m->host, buf, count, dt, root, &in) != DG_OK) return DG_ERR;
        keep_host(r, in);
        return DG_OK;
    }
    if (after_compute(c, r->what) != DG_OK) return DG_ERR;
    ncclTry(c, r->what, ncclBroadcast(buf, buf, count, nccl_dtype(dt), root, m->nccl, m->stream));
    return finish_device(c, r);
}

static dg_status nccl_iallgather(dg_comm *c, dg_comm_request *r, const void *send, void *recv,
                                 size_t count, dg_comm_dtype dt) {
    nccl_impl *m = c->impl;
    int where = route(c, r->what, send, recv, count);
    if (where < 0) return DG_ERR;
    if (!where) {
        dg_comm_request *in;
        if (dg_comm_iallgather(m->host, send, recv, count, dt, &in) != DG_OK) return DG_ERR;
        keep_host(r, in);
        return DG_OK;
    }
    size_t bytes = count * dg_comm_dtype_size(dt);
    /* in place: NCCL's convention is send = recv + rank * count */
    const void *s = send ? send : (const char *)recv + (size_t)c->rank * bytes;
    if (after_compute(c, r->what) != DG_OK) return DG_ERR;
    ncclTry(c, r->what, ncclAllGather(s, recv, count, nccl_dtype(dt), m->nccl, m->stream));
    return finish_device(c, r);
}

static dg_status nccl_ireduce_scatter(dg_comm *c, dg_comm_request *r, const void *send,
                                      void *recv, size_t count, dg_comm_dtype dt,
                                      dg_comm_op op) {
    nccl_impl *m = c->impl;
    int where = route(c, r->what, send, recv, count);
    if (where < 0) return DG_ERR;
    if (!where) {
        dg_comm_request *in;
        if (dg_comm_ireduce_scatter(m->host, send, recv, count, dt, op, &in) != DG_OK)
            return DG_ERR;
        keep_host(r, in);
        return DG_OK;
    }
    if (after_compute(c, r->what) != DG_OK) return DG_ERR;
    if (send) {
        ncclTry(c, r->what, ncclReduceScatter(send, recv, count, nccl_dtype(dt), nccl_op(op),
                                              m->nccl, m->stream));
    } else {
        /* ours: the result goes to recv's first block; NCCL's in-place
         * form puts it at block `rank`: reduce there, then move it */
        size_t bytes = count * dg_comm_dtype_size(dt);
        char *mine = (char *)recv + (size_t)c->rank * bytes;
        ncclTry(c, r->what, ncclReduceScatter(recv, mine, count, nccl_dtype(dt), nccl_op(op),
                                              m->nccl, m->stream));
        if (c->rank != 0)
            cudaTry(c, r->what, cudaMemcpyAsync(recv, mine, bytes, cudaMemcpyDeviceToDevice,
                                                m->stream));
    }
    return finish_device(c, r);
}

static dg_status nccl_ibarrier(dg_comm *c, dg_comm_request *r) {
    nccl_impl *m = c->impl;
    dg_comm_request *in;
    if (dg_comm_ibarrier(m->host, &in) != DG_OK) return DG_ERR;
    keep_host(r, in);
    return DG_OK;
}

static dg_status nccl_test(dg_comm *c, dg_comm_request *r, bool *done) {
    nccl_impl *m = c->impl;
    *done = false;
    if (r->be.i64[1] == REQ_HOST) {
        dg_comm_request *in = r->be.ptr;
        DG_ASSERT(in != NULL);
        bool d = false;
        dg_status st = dg_comm_test(in, &d);   /* releases in when done or failed */
        if (st != DG_OK || d) r->be.ptr = NULL;
        *done = d;
        return st;
    }
    DG_ASSERT(r->be.i64[1] == REQ_DEVICE);
    cudaEvent_t ev = r->be.ptr;
    cudaError_t e = cudaEventQuery(ev);
    if (e == cudaSuccess) {
        event_put(m, ev);
        r->be.ptr = NULL;
        *done = true;
        return DG_OK;
    }
    if (e != cudaErrorNotReady) return cuda_err(c, r->what, "cudaEventQuery", e, __FILE__, __LINE__);
    cudaGetLastError();
    return check_async(c, r->what);
}

/* ---- DDP: stream-ordered, no requests --------------------------------------------------- */

static dg_status nccl_dev_allreduce(dg_comm *c, void *buf, size_t count, dg_comm_dtype dt,
                                    dg_comm_op op) {
    const char *what = "dg_ddp_backward (NCCL all-reduce)";
    nccl_impl *m = c->impl;
    if (count == 0) return DG_OK;
    if (after_compute(c, what) != DG_OK) return DG_ERR;
    ncclTry(c, what, ncclAllReduce(buf, buf, count, nccl_dtype(dt), nccl_op(op), m->nccl, m->stream));
    return DG_OK;
}

static dg_status nccl_dev_join(dg_comm *c) {
    const char *what = "dg_ddp_backward (NCCL)";
    nccl_impl *m = c->impl;
    cudaTry(c, what, cudaSetDevice(m->device));
    /* the previous step's reductions, within the timeout: the host stays at
     * most one step ahead, and a dead rank ends in an error, not a hang */
    if (m->join_pending && wait_event(c, what, m->joined) != DG_OK) return DG_ERR;
    if (check_async(c, what) != DG_OK) return DG_ERR;
    cudaTry(c, what, cudaEventRecord(m->joined, m->stream));
    cudaTry(c, what, cudaStreamWaitEvent(m->compute, m->joined, 0));
    m->join_pending = true;
    return DG_OK;
}

const dg_comm_backend dg_comm_backend_nccl = {
    .name = "nccl",
    .init = nccl_init,
    .finalize = nccl_finalize,
    .iallreduce = nccl_iallreduce,
    .ibroadcast = nccl_ibroadcast,
    .iallgather = nccl_iallgather,
    .ireduce_scatter = nccl_ireduce_scatter,
    .ibarrier = nccl_ibarrier,
    .test = nccl_test,
    .device = true,
    .handles_avg = true,
    .dev_allreduce = nccl_dev_allreduce,
    .dev_join = nccl_dev_join,
};
