/* comm-impl.h - internals of the communicator: the backend interface, the
 * request pool and the dg_comm struct. Not installed. */
#ifndef DGRAD_COMM_IMPL_H
#define DGRAD_COMM_IMPL_H

#include "dgrad/comm.h"

#define DG_COMM_POOL_CHUNK 64        /* requests per pool allocation */
#define DG_COMM_DEFAULT_TIMEOUT 300.0
#define DG_COMM_MSG_MAX 512

typedef enum {
    DG_REQ_FREE,     /* in the pool */
    DG_REQ_ACTIVE,   /* started, not known to be complete */
    DG_REQ_DONE,     /* complete (seen by dg_comm_progress), not yet released */
} dg_req_state;

struct dg_comm_request {
    dg_comm *comm;
    dg_comm_request *next_free;
    dg_req_state state;
    const char *what;          /* public function name, for messages */
    void *avg_buf;             /* non-NULL: divide avg_count elements by size */
    size_t avg_count;
    dg_comm_dtype dtype;
    union {                    /* backend storage (an MPI_Request, ...) */
        void *ptr;
        int64_t i64[4];
    } be;
};

typedef struct dg_comm_pool_chunk {
    struct dg_comm_pool_chunk *next;
    dg_comm_request reqs[DG_COMM_POOL_CHUNK];
} dg_comm_pool_chunk;

/* A backend. Every slot is required. The start functions (i*) receive
 * arguments already checked by comm.c (dtype and op valid, buffers non-NULL
 * when count > 0, root in range, in place = send NULL) and an ACTIVE request
 * whose `what` is set; DG_COMM_AVG arrives as is and must be computed as a
 * sum (comm.c divides on completion). A start or test that hits a transport
 * error calls dg_comm_fail; one that rejects its arguments (for example a
 * count the transport cannot express) calls dg_set_error only. */
typedef struct dg_comm_backend {
    const char *name;
    /* Set c->impl, rank, size, local_rank, local_size, node, node_count. */
    dg_status (*init)(dg_comm *c);
    /* Release c->impl. failed: do not touch the transport (it may hang). */
    void (*finalize)(dg_comm *c, bool failed);
    dg_status (*iallreduce)(dg_comm *c, dg_comm_request *r, void *buf,
                            size_t count, dg_comm_dtype dt, dg_comm_op op);
    dg_status (*ibroadcast)(dg_comm *c, dg_comm_request *r, void *buf,
                            size_t count, dg_comm_dtype dt, int root);
    dg_status (*iallgather)(dg_comm *c, dg_comm_request *r, const void *send,
                            void *recv, size_t count, dg_comm_dtype dt);
    dg_status (*ireduce_scatter)(dg_comm *c, dg_comm_request *r,
                                 const void *send, void *recv, size_t count,
                                 dg_comm_dtype dt, dg_comm_op op);
    dg_status (*ibarrier)(dg_comm *c, dg_comm_request *r);
    /* Poll r once, driving progress; set *done. */
    dg_status (*test)(dg_comm *c, dg_comm_request *r, bool *done);

    /* Optional, for device communicators (NULL otherwise). */
    bool device;                  /* buffers may be GPU memory */
    bool handles_avg;             /* computes DG_COMM_AVG itself: comm.c
                                     does not divide on completion */
    /* Stream-ordered all-reduce of a GPU buffer, after the work queued so
     * far on the CUDA backend's stream; no request, nothing to wait for. */
    dg_status (*dev_allreduce)(dg_comm *c, void *buf, size_t count,
                               dg_comm_dtype dt, dg_comm_op op);
    /* Make the CUDA backend's stream wait for every dev_allreduce so far
     * (on the GPU; the host does not wait). Before that it waits, within
     * the timeout, for the previous join's reductions to finish, so that a
     * dead rank is noticed one step late rather than never. */
    dg_status (*dev_join)(dg_comm *c);
} dg_comm_backend;

struct dg_comm {
    const dg_comm_backend *be;
    void *impl;
    int rank, size;
    int local_rank, local_size;
    int node, node_count;
    double timeout;               /* seconds; <= 0: none */
    bool failed;
    char failed_msg[DG_COMM_MSG_MAX];
    dg_comm_pool_chunk *chunks;
    dg_comm_request *free_list;
    size_t n_outstanding;         /* ACTIVE + DONE */
};

/* Record a transport failure: sets c->failed, keeps the message in the
 * comm and in dg_set_error. Returns DG_ERR. */
dg_status dg_comm_fail(dg_comm *c, const char *fmt, ...) DG_PRINTF(2, 3);

extern const dg_comm_backend dg_comm_backend_local;
#ifdef DG_HAVE_MPI
extern const dg_comm_backend dg_comm_backend_mpi;
#endif
#ifdef DG_HAVE_NCCL
extern const dg_comm_backend dg_comm_backend_nccl;   /* comm_nccl.c */
#endif

/* Device communicators (for ddp.c): the dev_* slots, checked. */
dg_status dg__comm_dev_allreduce(dg_comm *c, void *buf, size_t count,
                                 dg_comm_dtype dt, dg_comm_op op);
dg_status dg__comm_dev_join(dg_comm *c);

#endif /* DGRAD_COMM_IMPL_H */
