/* comm_local.c - the "local" backend: a world of one rank, no MPI. Every
 * collective completes when it starts: reductions over one rank leave the
 * data as it is, gathers and scatters are copies. */
#include "comm-impl.h"

#include <string.h>

static dg_status local_init(dg_comm *c) {
    c->impl = NULL;
    c->rank = 0;
    c->size = 1;
    c->local_rank = 0;
    c->local_size = 1;
    c->node = 0;
    c->node_count = 1;
    return DG_OK;
}

static void local_finalize(dg_comm *c, bool failed) {
    (void)c;
    (void)failed;
}

static dg_status local_iallreduce(dg_comm *c, dg_comm_request *r, void *buf,
                                  size_t count, dg_comm_dtype dt, dg_comm_op op) {
    (void)c; (void)r; (void)buf; (void)count; (void)dt; (void)op;
    return DG_OK;
}

static dg_status local_ibroadcast(dg_comm *c, dg_comm_request *r, void *buf,
                                  size_t count, dg_comm_dtype dt, int root) {
    (void)c; (void)r; (void)buf; (void)count; (void)dt; (void)root;
    return DG_OK;
}

static dg_status local_iallgather(dg_comm *c, dg_comm_request *r, const void *send,
                                  void *recv, size_t count, dg_comm_dtype dt) {
    (void)c; (void)r;
    if (send && count) memcpy(recv, send, count * dg_comm_dtype_size(dt));
    return DG_OK;
}

static dg_status local_ireduce_scatter(dg_comm *c, dg_comm_request *r,
                                       const void *send, void *recv, size_t count,
                                       dg_comm_dtype dt, dg_comm_op op) {
    (void)c; (void)r; (void)op;
    if (send && count) memcpy(recv, send, count * dg_comm_dtype_size(dt));
    return DG_OK;
}

static dg_status local_ibarrier(dg_comm *c, dg_comm_request *r) {
    (void)c; (void)r;
    return DG_OK;
}

static dg_status local_test(dg_comm *c, dg_comm_request *r, bool *done) {
    (void)c; (void)r;
    *done = true;
    return DG_OK;
}

const dg_comm_backend dg_comm_backend_local = {
    .name = "local",
    .init = local_init,
    .finalize = local_finalize,
    .iallreduce = local_iallreduce,
    .ibroadcast = local_ibroadcast,
    .iallgather = local_iallgather,
    .ireduce_scatter = local_ireduce_scatter,
    .ibarrier = local_ibarrier,
    .test = local_test,
};
