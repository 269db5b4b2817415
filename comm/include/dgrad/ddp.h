/* dgrad/ddp.h - data-parallel training (PyTorch's DistributedDataParallel).
 *
 * Every rank runs its own engine context with the same model. dg_ddp ties
 * a context to a communicator:
 *  - at construction, every rank checks that all ranks registered the same
 *    parameters (count, shapes, order), then rank 0's values are broadcast;
 *  - gradients are grouped into buckets in reverse registration order (the
 *    order backward produces them). A bucket is a contiguous range of the
 *    context's flat gradient buffer, so it is reduced in place, without a
 *    copy. As soon as backward has finished every gradient of a bucket, the
 *    bucket's non-blocking all-reduce starts and overlaps with the rest of
 *    backward;
 *  - dg_ddp_backward returns once every bucket is reduced and averaged over
 *    the ranks, so every rank takes the same optimizer step;
 *  - the graph may change per step and per rank (no flag to set, unlike
 *    PyTorch's find_unused_parameters): a parameter this rank's backward
 *    did not reach adds zeros to the average, and one that no rank reached
 *    keeps no gradient (dg_param_has_grad false), so the optimizer skips
 *    it. This costs one small all-reduce (an int per parameter) per step,
 *    started after the last bucket and waited for with it.
 *
 * GPU contexts: with a device communicator ("nccl", dg_comm_is_device) the
 * buckets are reduced in place on the GPU by NCCL on its own stream, each
 * started as soon as backward has queued its gradients and ordered by CUDA
 * events, so it overlaps the rest of backward; dg_ddp_backward then returns
 * without waiting for the GPU (the next ops wait for the reduction on the
 * GPU; the host waits, within the timeout, only for the previous step's).
 * With a host communicator ("mpi" without CUDA support, "local") each
 * bucket is staged through pinned host memory: copied when ready, reduced
 * on the host, copied back after backward. That path is correct but
 * serializes the host with the GPU at every bucket.
 *
 * Typical step, as with PyTorch DDP:
 *     loss = ...forward...;
 *     dg_optim_zero_grad(opt);
 *     if (dg_ddp_backward(ddp, loss)) { print dg_last_error(); exit; }
 *     dg_optim_step(opt);
 */
#ifndef DGRAD_DDP_H
#define DGRAD_DDP_H

#include "dgrad/comm.h"
#include "dgrad/tensor.h"
#include "dgrad/timeline.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_ddp dg_ddp;   /* opaque */

typedef struct {
    size_t bucket_cap_bytes;        /* 25 MiB, PyTorch's bucket_cap_mb=25 */
    size_t first_bucket_cap_bytes;  /* 1 MiB, PyTorch's first bucket */
    bool overlap;                   /* start each bucket during backward (true);
                                       false: reduce every bucket after backward */
    bool bf16_compress;             /* false. true: each bucket is rounded to
                                       bfloat16, all-reduced as bfloat16 (half
                                       the bytes; additions in float, see
                                       DG_COMM_BF16) and widened back, as
                                       PyTorch's bf16_compress_hook. CPU
                                       contexts only, for now */
} dg_ddp_opts;

dg_ddp_opts dg_ddp_defaults(void);

/* Collective: every rank calls it with its own context (same model).
 * DG_ERR with the same message on every rank when the parameters differ
 * between ranks, or when a collective fails. Installs the context's
 * grad-ready hook. The communicator must outlive the dg_ddp. */
dg_status dg_ddp_new(dg_ddp **out, dg_ctx *ctx, dg_comm *comm, dg_ddp_opts opts);
void dg_ddp_free(dg_ddp *ddp);

/* Backward from loss, then the gradient all-reduce (average over ranks).
 * In no-sync mode gradients only accumulate locally; the next backward
 * outside no-sync reduces the accumulated sum, as PyTorch's no_sync(). */
dg_status dg_ddp_backward(dg_ddp *ddp, dg_tensor *loss);

/* Gradient accumulation: while on, dg_ddp_backward does not communicate. */
void dg_ddp_set_no_sync(dg_ddp *ddp, bool no_sync);

/* Record spans on tl (NULL: stop): "backward" (autograd) and
 * "allreduce_wait" (blocked on the reduction after it) on lane
 * DG_TIMELINE_COMPUTE, and bucket k's "allreduce" on lane
 * DG_TIMELINE_COMM + k, from its launch to the end of its wait. Call it
 * between steps; tl must outlive its use by the dg_ddp. */
void dg_ddp_set_timeline(dg_ddp *ddp, dg_timeline *tl);

/* Broadcast t (a persistent tensor, e.g. a batch-norm running mean) from
 * rank 0 to every rank. Collective. */
dg_status dg_ddp_broadcast_tensor(dg_ddp *ddp, dg_tensor *t);

typedef struct {
    int num_buckets;
    int64_t synced_steps;           /* backwards that reduced gradients */
    double reduce_seconds;          /* total time from the first bucket's
                                       start to the last bucket's completion */
    double wait_seconds;            /* total time blocked after backward */
    size_t bytes_per_step;          /* gradient bytes reduced per step */
    int64_t overlapped_buckets;     /* bucket reductions started while
                                       backward was still running */
} dg_ddp_stats;

void dg_ddp_get_stats(const dg_ddp *ddp, dg_ddp_stats *stats);
/* Bucket b's parameter range [first, last] in registration order. */
void dg_ddp_bucket_range(const dg_ddp *ddp, int b, int *first, int *last);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_DDP_H */
