/* dgrad/comm.h - the communicator: ranks, and collectives on host buffers
 * (and, with NCCL, on GPU buffers).
 *
 * A dg_comm is an opaque handle on a group of processes ("ranks") that run
 * the same program. It is backed by one of these backends:
 *   "mpi"   - MPI (Open MPI, MPICH...), only when dgrad was built with MPI;
 *   "local" - a world of one rank without MPI: every collective is a copy or
 *             a no-op. Always available.
 *   "nccl"  - NCCL on the GPUs, only when dgrad was built with CUDA and
 *             NCCL. See "Device buffers" below.
 *
 * Collectives are called by every rank of the communicator, in the same
 * order, with the same count, dtype, op and root. All buffers are host
 * memory owned by the caller (device memory too with "nccl"); the
 * communicator never keeps a pointer to one after the operation completes.
 *
 * Device buffers ("nccl", dg_comm_is_device): a collective whose buffers
 * are GPU memory (cudaMalloc'd: a CUDA context's tensors, its parameter and
 * gradient buffers) runs with NCCL on a stream of its own, ordered after
 * all work queued so far on the CUDA backend's stream: no synchronization
 * is needed before the call. The request completes (dg_comm_wait/test)
 * when the GPU has finished it. Host buffers given to the same
 * communicator go through the communicator NCCL was bootstrapped with
 * ("mpi" under a launcher, else "local"), so dg_comm_allreduce on a
 * counter still works. All buffers of one call, and every rank's, must be
 * of the same kind. DG_COMM_AVG on integers truncates as NCCL's ncclAvg
 * does. The GPU is the CUDA backend's (DG_DEVICE, else the launcher's local
 * rank: LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, else the
 * rank on this node as MPI reports it), so create the communicator before
 * the first CUDA context, or let both find the same local rank.
 *
 * Errors: bad arguments return DG_ERR with a message (dg_last_error()), and
 * the communicator stays usable. A failure of the transport (an MPI error,
 * or a timeout while waiting for other ranks) returns DG_ERR with a message
 * that names the collective, and the communicator becomes *failed*: every
 * later call on it returns DG_ERR at once, and only dg_comm_free is useful.
 * A failed collective may leave its buffers with partial results.
 *
 * Faults: no wait is unbounded. Blocking collectives are non-blocking ones
 * plus a wait with a deadline (dg_comm_set_timeout, default from the
 * environment variable DG_COMM_TIMEOUT, else 300 s); when it passes, the
 * call fails with "dg_comm_allreduce: timed out after 300 s waiting for
 * ranks (a rank may have died)". The usual reaction is to print the message
 * and exit with a non-zero status; mpirun then ends the other ranks.
 *
 * Threads: calls on one communicator must not run concurrently. With MPI
 * they should come from the thread that created it (MPI_THREAD_SERIALIZED
 * is requested when dgrad initializes MPI).
 */
#ifndef DGRAD_COMM_H
#define DGRAD_COMM_H

#include "dgrad/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_comm dg_comm;
typedef struct dg_comm_request dg_comm_request;

typedef enum {
    DG_COMM_F32,   /* float   */
    DG_COMM_F64,   /* double  */
    DG_COMM_I32,   /* int32_t */
    DG_COMM_I64,   /* int64_t */
    DG_COMM_BF16,  /* bfloat16, as uint16_t bits (the upper half of a float).
                      SUM and AVG only: each addition is done in float and
                      rounded back to bfloat16 (to nearest even), so a sum
                      over W ranks is rounded W - 1 times; AVG divides in
                      float and rounds once more. */
} dg_comm_dtype;

typedef enum {
    DG_COMM_SUM,
    DG_COMM_AVG,   /* sum, then divide by the world size. For integer dtypes
                      the division is C integer division (truncates toward
                      zero): -7 over 2 ranks gives -3. */
    DG_COMM_MAX,
    DG_COMM_MIN,
} dg_comm_op;

/* Bytes per element of dtype (4 or 8). */
size_t dg_comm_dtype_size(dg_comm_dtype dtype);

/* ---- lifetime --------------------------------------------------------- */

/* Create a communicator over all ranks of the job and store it in *out.
 * backend: "mpi", "local", "nccl", or NULL for automatic: the environment variable
 * DG_COMM_BACKEND if set, else "mpi" when launched by a launcher (mpirun,
 * mpiexec, srun: any of OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK, PMI_SIZE,
 * SLURM_PROCID is set) and dgrad has MPI, else "local". Automatic selection
 * fails, rather than silently running N independent copies, when the
 * environment says there are several ranks but dgrad has no MPI.
 * With "mpi", MPI is initialized if it is not yet (MPI_Init_thread); a plain
 * process (no launcher) becomes an MPI singleton of size 1. dg_comm_init is
 * collective under MPI: every rank must call it.
 * The timeout starts at DG_COMM_TIMEOUT (seconds; 0 = none), else 300.
 * Returns DG_ERR (and *out = NULL) on an unknown or unavailable backend, a
 * bad DG_COMM_TIMEOUT, or an MPI setup error. */
dg_status dg_comm_init(dg_comm **out, const char *backend);

/* Complete any outstanding requests (bounded by the timeout), release the
 * communicator, and call MPI_Finalize if dg_comm_init initialized MPI and
 * this was the last communicator. After a failure MPI_Finalize is skipped,
 * since it may block on a dead rank; the launcher then sees a process that
 * ended without finalizing and reports the job as failed. NULL is a no-op.
 * Outstanding request pointers become invalid. */
void dg_comm_free(dg_comm *comm);

/* ---- topology --------------------------------------------------------- */

int dg_comm_rank(const dg_comm *comm);        /* 0 .. size-1 */
int dg_comm_size(const dg_comm *comm);        /* world size, >= 1 */
int dg_comm_local_rank(const dg_comm *comm);  /* rank among the ranks of this node */
int dg_comm_local_size(const dg_comm *comm);  /* ranks on this node */
/* Index of this rank's node, 0 .. dg_comm_node_count()-1. Nodes are the
 * shared-memory domains (MPI_COMM_TYPE_SHARED), numbered in the order of
 * the lowest world rank on each. */
int dg_comm_node(const dg_comm *comm);
int dg_comm_node_count(const dg_comm *comm);
const char *dg_comm_backend_name(const dg_comm *comm);  /* "mpi", "local" or "nccl" */
/* True when collectives accept GPU buffers ("nccl"). */
bool dg_comm_is_device(const dg_comm *comm);
/* True when this build has the backend ("mpi", "local", "nccl"); it may
 * still fail to start (no GPU, say). */
bool dg_comm_has_backend(const char *name);

/* Timeout, in seconds, for every wait on this communicator; 0 or less
 * disables it (waits may then block forever if a rank dies). */
void dg_comm_set_timeout(dg_comm *comm, double seconds);
double dg_comm_timeout(const dg_comm *comm);
/* True once a transport error or timeout has made the communicator unusable. */
bool dg_comm_failed(const dg_comm *comm);

/* ---- blocking collectives ---------------------------------------------
 * count is in elements. On return the operation is complete on this rank.
 * A count of 0 is allowed (it still synchronizes like the collective). */

/* buf: count elements, in place. On return every rank holds op over the
 * ranks' buf, element-wise. */
dg_status dg_comm_allreduce(dg_comm *comm, void *buf, size_t count,
                            dg_comm_dtype dtype, dg_comm_op op);

/* buf: count elements; on return every rank holds root's buf. */
dg_status dg_comm_broadcast(dg_comm *comm, void *buf, size_t count,
                            dg_comm_dtype dtype, int root);

/* send: count_per_rank elements. recv: size * count_per_rank elements; on
 * return block r (recv + r * count_per_rank elements) holds rank r's send.
 * In place: send = NULL, and this rank's block is already in recv at its
 * position. send must not overlap recv otherwise. */
dg_status dg_comm_allgather(dg_comm *comm, const void *send, void *recv,
                            size_t count_per_rank, dg_comm_dtype dtype);

/* Equal blocks: send holds size * recv_count_per_rank elements, seen as
 * size blocks of recv_count_per_rank. recv: recv_count_per_rank elements;
 * on return it holds op over all ranks of their block number `rank`.
 * (To reduce-scatter a length that does not divide by size, pad it.)
 * In place: send = NULL, recv holds the size * recv_count_per_rank input,
 * and on return its first recv_count_per_rank elements hold the result
 * (the rest is unspecified). send must not overlap recv otherwise. */
dg_status dg_comm_reduce_scatter(dg_comm *comm, const void *send, void *recv,
                                 size_t recv_count_per_rank,
                                 dg_comm_dtype dtype, dg_comm_op op);

dg_status dg_comm_barrier(dg_comm *comm);

/* ---- non-blocking collectives -----------------------------------------
 * Same arguments and results as the blocking ones. On DG_OK, *req is a
 * request owned by the communicator (taken from a pool: no allocation in
 * the steady state); buffers must stay valid and untouched until the
 * request completes through dg_comm_wait, dg_comm_test (done = true) or
 * dg_comm_wait_all, which release it: the pointer is invalid after that.
 * On DG_ERR, *req is NULL. Requests may complete in any order. */

dg_status dg_comm_iallreduce(dg_comm *comm, void *buf, size_t count,
                             dg_comm_dtype dtype, dg_comm_op op,
                             dg_comm_request **req);
dg_status dg_comm_ibroadcast(dg_comm *comm, void *buf, size_t count,
                             dg_comm_dtype dtype, int root,
                             dg_comm_request **req);
dg_status dg_comm_iallgather(dg_comm *comm, const void *send, void *recv,
                             size_t count_per_rank, dg_comm_dtype dtype,
                             dg_comm_request **req);
dg_status dg_comm_ireduce_scatter(dg_comm *comm, const void *send, void *recv,
                                  size_t recv_count_per_rank,
                                  dg_comm_dtype dtype, dg_comm_op op,
                                  dg_comm_request **req);
dg_status dg_comm_ibarrier(dg_comm *comm, dg_comm_request **req);

/* Block until req completes (at most the communicator's timeout, counted
 * from this call), then release it. On a timeout or transport error the
 * request is released too and the communicator is failed. */
dg_status dg_comm_wait(dg_comm_request *req);

/* Poll req once without blocking. *done = true: it completed and has been
 * released. *done = false: still running, call again. Never times out (use
 * dg_comm_wait for a bounded wait). On DG_ERR the request is released and
 * the communicator is failed. */
dg_status dg_comm_test(dg_comm_request *req, bool *done);

/* Wait for every outstanding request of comm, with one deadline, and
 * release them all. */
dg_status dg_comm_wait_all(dg_comm *comm);

/* Drive the progress of outstanding non-blocking collectives without
 * blocking. MPI moves data of a non-blocking collective only inside MPI
 * calls, so a caller that overlaps communication with computation (the
 * backward pass) should call this now and then. Requests that complete
 * stay owned by the caller until dg_comm_wait/test. Cheap when nothing is
 * outstanding. */
dg_status dg_comm_progress(dg_comm *comm);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_COMM_H */
