/* comm_mpi.c - the "mpi" backend: MPI-3 non-blocking collectives on a
 * duplicate of MPI_COMM_WORLD whose error handler is MPI_ERRORS_RETURN, so
 * that MPI errors come back as DG_ERR instead of aborting the process. */
#define _POSIX_C_SOURCE 200809L   /* setenv */
#include "comm-impl.h"
#include "amp-impl.h"   /* dg__bf16_round, dg__bf16_widen */

#include <limits.h>
#include <stdlib.h>
#include <mpi.h>

_Static_assert(sizeof(MPI_Request) <= sizeof(((dg_comm_request *)0)->be),
               "MPI_Request does not fit in the request's backend storage");

typedef struct {
    MPI_Comm world;    /* dup of MPI_COMM_WORLD, used for every collective */
    MPI_Comm local;    /* ranks of this node (MPI_COMM_TYPE_SHARED) */
} mpi_impl;

/* MPI is initialized once per process, so these are too: how many dg_comm
 * use MPI, whether dgrad called MPI_Init, and whether any failed. */
static int g_users;
static bool g_owns_mpi;
static bool g_any_failed;
static MPI_Op g_bf16_sum = MPI_OP_NULL;   /* created with the first user */

static MPI_Request *req_mpi(dg_comm_request *r) {
    return (MPI_Request *)(void *)&r->be;
}

static MPI_Datatype mpi_dtype(dg_comm_dtype dt) {
    switch (dt) {
    case DG_COMM_F32: return MPI_FLOAT;
    case DG_COMM_F64: return MPI_DOUBLE;
    case DG_COMM_I32: return MPI_INT32_T;
    case DG_COMM_I64: return MPI_INT64_T;
    case DG_COMM_BF16: return MPI_UINT16_T;   /* reduced by g_bf16_sum */
    }
    DG_ASSERT(!"unknown dtype");
    return MPI_DATATYPE_NULL;
}

/* inout[i] = bf16(float(in[i]) + float(inout[i])): MPI has no bfloat16,
 * so bf16 travels as uint16 and this user op adds in float. */
static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = dg__bf16_round(dg__bf16_widen(a[i]) + dg__bf16_widen(b[i]));
}

static MPI_Op mpi_op(dg_comm_op op, dg_comm_dtype dt) {
    if (dt == DG_COMM_BF16) return g_bf16_sum;   /* SUM or AVG: check_op refused the rest */
    switch (op) {
    case DG_COMM_SUM: case DG_COMM_AVG: return MPI_SUM;
    case DG_COMM_MAX: return MPI_MAX;
    case DG_COMM_MIN: return MPI_MIN;
    }
    DG_ASSERT(!"unknown op");
    return MPI_OP_NULL;
}

/* "what: call failed: <MPI's error string>", and the comm is failed. */
static dg_status mpi_fail(dg_comm *c, const char *what, const char *call, int rc) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) len = 0;
    s[len] = '\0';
    g_any_failed = true;
    return dg_comm_fail(c, "%s: %s failed: %s (MPI error %d; a rank may have died)",
                        what, call, s, rc);
}

static dg_status check_count(const char *what, size_t count) {
    if (count > (size_t)INT_MAX)
        return dg_set_error("%s: count %zu exceeds the MPI limit of %d elements "
                            "per call; split the buffer", what, count, INT_MAX);
    return DG_OK;
}

static dg_status mpi_init(dg_comm *c) {
    const char *what = "dg_comm_init";
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (finalized)
        return dg_set_error("%s: MPI has already been finalized in this process", what);
    if (!inited) {
        /* Open MPI's non-blocking all-reduce (libnbc) takes its binomial
         * tree for in-place calls on fewer than 4 ranks: 1.5-2.5x the time
         * of the blocking MPI_Allreduce for gradient-sized buffers, where
         * its ring matches it (README, Benchmarks). Up to 8 ranks ask for
         * the ring, unless the user chose; more keep Open MPI's choice,
         * whose latency grows less with the rank count. */
        const char *ws = getenv("OMPI_COMM_WORLD_SIZE");
        if (!ws) ws = getenv("SLURM_NTASKS");
        if (ws && atoi(ws) >= 2 && atoi(ws) <= 8) setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0);
        int provided = 0;
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        if (rc != MPI_SUCCESS)
            return dg_set_error("%s: MPI_Init_thread failed (error %d)", what, rc);
        g_owns_mpi = true;
        /* dgrad owns MPI here, so world may return errors too. */
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    }
    g_users++;
    if (g_bf16_sum == MPI_OP_NULL && MPI_Op_create(bf16_sum, 1, &g_bf16_sum) != MPI_SUCCESS)
        g_bf16_sum = MPI_OP_NULL;   /* bf16 collectives then fail with MPI's message */

    mpi_impl *m = calloc(1, sizeof *m);
    if (!m) {
        g_users--;
        return dg_set_error("%s: out of memory", what);
    }
    m->world = m->local = MPI_COMM_NULL;
    c->impl = m;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->world);
    if (rc != MPI_SUCCESS) {
        dg_set_error("%s: MPI_Comm_dup failed (error %d)", what, rc);
        goto fail;
    }
    MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->world, &c->rank);
    MPI_Comm_size(m->world, &c->size);

    rc = MPI_Comm_split_type(m->world, MPI_COMM_TYPE_SHARED, c->rank,
                             MPI_INFO_NULL, &m->local);
    if (rc != MPI_SUCCESS) {
        mpi_fail(c, what, "MPI_Comm_split_type", rc);
        goto fail;
    }
    MPI_Comm_set_errhandler(m->local, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->local, &c->local_rank);
    MPI_Comm_size(m->local, &c->local_size);

    /* Node leaders (local rank 0) form a communicator ordered by world
     * rank; a leader's rank in it is the node index, which it then shares
     * with its node. */
    MPI_Comm leaders = MPI_COMM_NULL;
    rc = MPI_Comm_split(m->world, c->local_rank == 0 ? 0 : MPI_UNDEFINED,
                        c->rank, &leaders);
    if (rc != MPI_SUCCESS) {
        mpi_fail(c, what, "MPI_Comm_split", rc);
        goto fail;
    }
    int node[2] = {0, 1};
    if (leaders != MPI_COMM_NULL) {
        MPI_Comm_rank(leaders, &node[0]);
        MPI_Comm_size(leaders, &node[1]);
        MPI_Comm_free(&leaders);
    }
    rc = MPI_Bcast(node, 2, MPI_INT, 0, m->local);
    if (rc != MPI_SUCCESS) {
        mpi_fail(c, what, "MPI_Bcast", rc);
        goto fail;
    }
    c->node = node[0];
    c->node_count = node[1];
    return DG_OK;

fail:
    if (!c->failed) {
        if (m->local != MPI_COMM_NULL) MPI_Comm_free(&m->local);
        if (m->world != MPI_COMM_NULL) MPI_Comm_free(&m->world);
    }
    free(m);
    c->impl = NULL;
    g_users--;
    return DG_ERR;
}

static void mpi_finalize(dg_comm *c, bool failed) {
    mpi_impl *m = c->impl;
    if (!m) return;
    if (failed) g_any_failed = true;
    if (!failed) {
        MPI_Comm_free(&m->local);
        MPI_Comm_free(&m->world);
    }
    free(m);
    c->impl = NULL;
    DG_ASSERT(g_users > 0);
    if (--g_users == 0 && g_bf16_sum != MPI_OP_NULL) MPI_Op_free(&g_bf16_sum);
    if (g_users == 0 && g_owns_mpi && !g_any_failed) {
        MPI_Finalize();
        g_owns_mpi = false;
    }
}

static dg_status mpi_iallreduce(dg_comm *c, dg_comm_request *r, void *buf,
                                size_t count, dg_comm_dtype dt, dg_comm_op op) {
    if (check_count(r->what, count) != DG_OK) return DG_ERR;
    mpi_impl *m = c->impl;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, mpi_dtype(dt),
                            mpi_op(op, dt), m->world, req_mpi(r));
    return rc == MPI_SUCCESS ? DG_OK : mpi_fail(c, r->what, "MPI_Iallreduce", rc);
}

static dg_status mpi_ibroadcast(dg_comm *c, dg_comm_request *r, void *buf,
                                size_t count, dg_comm_dtype dt, int root) {
    if (check_count(r->what, count) != DG_OK) return DG_ERR;
    mpi_impl *m = c->impl;
    int rc = MPI_Ibcast(buf, (int)count, mpi_dtype(dt), root, m->world, req_mpi(r));
    return rc == MPI_SUCCESS ? DG_OK : mpi_fail(c, r->what, "MPI_Ibcast", rc);
}

static dg_status mpi_iallgather(dg_comm *c, dg_comm_request *r, const void *send,
                                void *recv, size_t count, dg_comm_dtype dt) {
    if (check_count(r->what, count) != DG_OK) return DG_ERR;
    mpi_impl *m = c->impl;
    MPI_Datatype t = mpi_dtype(dt);
    int rc = MPI_Iallgather(send ? send : MPI_IN_PLACE, (int)count, t,
                            recv, (int)count, t, m->world, req_mpi(r));
    return rc == MPI_SUCCESS ? DG_OK : mpi_fail(c, r->what, "MPI_Iallgather", rc);
}

static dg_status mpi_ireduce_scatter(dg_comm *c, dg_comm_request *r,
                                     const void *send, void *recv, size_t count,
                                     dg_comm_dtype dt, dg_comm_op op) {
    if (check_count(r->what, count) != DG_OK) return DG_ERR;
    mpi_impl *m = c->impl;
    int rc = MPI_Ireduce_scatter_block(send ? send : MPI_IN_PLACE, recv, (int)count,
                                       mpi_dtype(dt), mpi_op(op, dt), m->world,
                                       req_mpi(r));
    return rc == MPI_SUCCESS ? DG_OK
                             : mpi_fail(c, r->what, "MPI_Ireduce_scatter_block", rc);
}

static dg_status mpi_ibarrier(dg_comm *c, dg_comm_request *r) {
    mpi_impl *m = c->impl;
    int rc = MPI_Ibarrier(m->world, req_mpi(r));
    return rc == MPI_SUCCESS ? DG_OK : mpi_fail(c, r->what, "MPI_Ibarrier", rc);
}

static dg_status mpi_test(dg_comm *c, dg_comm_request *r, bool *done) {
    int flag = 0;
    int rc = MPI_Test(req_mpi(r), &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_fail(c, r->what, "MPI_Test", rc);
    *done = flag != 0;
    return DG_OK;
}

const dg_comm_backend dg_comm_backend_mpi = {
    .name = "mpi",
    .init = mpi_init,
    .finalize = mpi_finalize,
    .iallreduce = mpi_iallreduce,
    .ibroadcast = mpi_ibroadcast,
    .iallgather = mpi_iallgather,
    .ireduce_scatter = mpi_ireduce_scatter,
    .ibarrier = mpi_ibarrier,
    .test = mpi_test,
};
