/* dgrad/zero.h - ZeRO stage 1: the optimizer state sharded across ranks
 * (libdgrad_comm). PyTorch's ZeroRedundancyOptimizer, llm.c's ZeRO-1.
 *
 * A dg_zero wraps every parameter of a context (its flat parameter and
 * gradient buffers, N floats each, the 16-float alignment padding
 * included) and an optimizer kind with the hyper-parameters and update
 * formulas of dgrad/optim.h (torch.optim, PyTorch 1.13). The flat buffer
 * is cut into `world` shards of S = ceil(N / world) floats; shard r is
 * [r*S, r*S + S), and the last one(s) run past N: those elements are
 * padding that the dg_zero holds, never the context. N need not divide by
 * the world size. Each dg_zero_step:
 *   1. reduce-scatter of the gradient buffer, averaged over the ranks
 *      (padded to world * S floats in a staging buffer): rank r gets the
 *      mean gradient of its shard;
 *   2. rank r updates the parameters of its shard with its shard of the
 *      optimizer state (num_slots * S floats: SGD with momentum 1, Adam 2,
 *      with amsgrad 3, SGD without momentum 0);
 *   3. all-gather of the shards: every rank holds all updated parameters.
 * The results equal dg_ddp + dg_optim up to the rounding of the gradient
 * average (reduce-scatter and all-reduce may sum the ranks in different
 * orders); the optimizer state per rank is num_slots * S floats instead
 * of num_slots * N. No overlap with backward: the reduce-scatter starts
 * after backward has finished.
 *
 * Typical step (instead of dg_ddp_backward + dg_optim_step):
 *     dg_zero_zero_grad(z);
 *     loss = ...forward...;
 *     if (dg_backward(loss) || dg_zero_step(z)) { print dg_last_error(); exit; }
 *
 * Devices: CPU contexts with any communicator; GPU contexts need a device
 * communicator ("nccl", dg_comm_is_device), every buffer then being GPU
 * memory of the context's backend.
 *
 * Errors: bad options or arguments return DG_ERR with a one-line message
 * (dg_last_error) and change nothing. Collective calls (marked below)
 * must be made by every rank in the same order; when one rank refuses its
 * input, every rank returns DG_ERR (the others with a message naming that
 * rank), so no rank is left waiting. A failed transport fails the
 * communicator (dgrad/comm.h).
 *
 * Checkpoints: the state is saved in the ordinary checkpoint format
 * (dgrad/checkpoint.h) by gathering it into an unsharded dg_optim on rank
 * 0 (dg_zero_gather_state), and restored by scattering such an optimizer
 * (dg_zero_scatter_state); dg_zero_checkpoint_save/load do both with a
 * temporary optimizer. The file is the one dg_checkpoint_save writes for
 * dg_optim, so it resumes a sharded job at any world size, or an
 * unsharded one, and a sharded job resumes from an unsharded checkpoint.
 * At the same world size the resumed run is bitwise the uninterrupted one.
 * The raw shard (dg_zero_shard_get/set) is for per-rank shard files: it
 * only fits the same world size and rank.
 */
#ifndef DGRAD_ZERO_H
#define DGRAD_ZERO_H

#include "dgrad/checkpoint.h"
#include "dgrad/comm.h"
#include "dgrad/optim.h"
#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_zero dg_zero;   /* opaque */

typedef enum {
    DG_ZERO_SGD,     /* torch.optim.SGD: opts.sgd */
    DG_ZERO_ADAM,    /* torch.optim.Adam: opts.adam (L2 weight decay) */
    DG_ZERO_ADAMW,   /* torch.optim.AdamW: opts.adam (decoupled decay) */
} dg_zero_kind;

typedef struct {
    dg_zero_kind kind;
    dg_sgd_opts sgd;      /* for DG_ZERO_SGD */
    dg_adam_opts adam;    /* for DG_ZERO_ADAM and DG_ZERO_ADAMW */
} dg_zero_opts;

/* Options with PyTorch's defaults (dg_sgd_defaults(lr), dg_adam_defaults,
 * dg_adamw_defaults) for kind; lr is used by SGD only. */
dg_zero_opts dg_zero_defaults(dg_zero_kind kind, float lr);

/* "sgd", "adam", "adamw" (the names dg_train_state.optimizer uses), or
 * NULL for an unknown kind. */
const char *dg_zero_kind_name(dg_zero_kind kind);
/* The kind called name; DG_ERR and "unknown optimizer kind 'lamb' (expected
 * sgd, adam or adamw)" otherwise. */
dg_status dg_zero_kind_from_name(const char *name, dg_zero_kind *kind);

/* Collective. Shards every parameter of ctx (registered before this call:
 * registering more afterwards is an error at the next step) over comm's
 * ranks. Checks, as dg_ddp_new does, that every rank has the same
 * parameters and options, then broadcasts rank 0's parameter values.
 * DG_ERR on an unknown kind, bad hyper-parameters (as dg_optim_* checks
 * them), a context without parameters, a GPU context with a host
 * communicator, parameters or options that differ between ranks, or out of
 * memory. The communicator must outlive the dg_zero. */
dg_status dg_zero_new(dg_zero **out, dg_ctx *ctx, dg_comm *comm, dg_zero_opts opts);
/* Not collective. NULL is a no-op. */
void dg_zero_free(dg_zero *z);

/* Zero the context's gradients (dg_ctx_zero_grad). */
void dg_zero_zero_grad(dg_zero *z);
/* Collective: reduce-scatter the gradients (mean over ranks), update this
 * rank's shard, all-gather the parameters. DG_ERR (nothing updated) when
 * parameters were registered after dg_zero_new, or when a collective
 * failed (the parameters may then differ between ranks). */
dg_status dg_zero_step(dg_zero *z);

float dg_zero_get_lr(const dg_zero *z);
void dg_zero_set_lr(dg_zero *z, float lr);   /* the same on every rank */
int64_t dg_zero_step_count(const dg_zero *z);
dg_zero_kind dg_zero_get_kind(const dg_zero *z);
/* State slots per element: SGD 0 (no momentum) or 1, Adam/AdamW 2, or 3
 * with amsgrad; the same as dg_optim_num_slots of the unsharded optimizer. */
int dg_zero_num_slots(const dg_zero *z);

typedef struct {
    int world, rank;
    int64_t numel;             /* N: floats in the context's flat buffers */
    int64_t shard_len;         /* S = ceil(N / world) */
    int64_t shard_begin;       /* rank * S */
    int64_t shard_valid;       /* elements of this shard inside [0, N) */
    int num_slots;
    size_t state_bytes;        /* this rank's optimizer state: num_slots * S * 4 */
    size_t unsharded_state_bytes; /* what dg_optim would hold: num_slots * N * 4 */
    size_t staging_bytes;      /* padded gradient/parameter staging plus the
                                  gradient shard: (world + 1) * S * 4 */
    int64_t steps;
    double reduce_scatter_seconds;  /* totals over all steps */
    double update_seconds;
    double allgather_seconds;
} dg_zero_stats;

void dg_zero_get_stats(const dg_zero *z, dg_zero_stats *stats);

/* ---- state for checkpoints ---------------------------------------------- */

/* Collective. Copies the whole optimizer state (every shard), the step
 * count and the lr into full on rank 0: full must be an unsharded dg_optim
 * of the same kind and number of slots (dg_optim_sgd/adam/adamw with the
 * same options) over parameters with the shapes of the context's, in the
 * same order; it may belong to another context of the same device (its
 * parameter values are not touched). Other ranks' full is ignored (pass
 * NULL). Goes through the staging buffer: no memory beyond full. DG_ERR on
 * every rank when rank 0's full does not fit. */
dg_status dg_zero_gather_state(dg_zero *z, dg_optim *full);

/* Collective, the reverse: rank 0's full (as above) gives every rank its
 * shard of the state, the step count and the lr. Other ranks' full is
 * ignored. */
dg_status dg_zero_scatter_state(dg_zero *z, dg_optim *full);

/* Collective. dg_checkpoint_save (dgrad/dist_checkpoint.h) of the context
 * and the gathered optimizer state. Rank 0 builds a temporary unsharded
 * optimizer (in a context of its own, freed before returning: num_slots *
 * N + 2 * N floats for the call's duration), the other ranks nothing. If st
 * is NULL or st->optimizer is NULL, the kind name is saved. */
dg_status dg_zero_checkpoint_save(const char *dir, dg_zero *z, const dg_train_state *st, int keep);

/* Collective. dg_checkpoint_load of a checkpoint saved by
 * dg_zero_checkpoint_save, or by dg_checkpoint_save with a dg_optim of the
 * same kind, at any world size: parameters, the training state (*st, as
 * dg_checkpoint_load restores it) and this rank's shard of the optimizer
 * state, step count and lr. st->optimizer NULL means this kind's name. On
 * DG_ERR from the file (missing, corrupt, another model or optimizer
 * kind) nothing changed. */
dg_status dg_zero_checkpoint_load(const char *path_or_dir, dg_zero *z, dg_train_state *st,
                                  char *path_out, size_t n);

/* This rank's raw shard, for per-rank shard files. */
typedef struct {
    int world, rank;
    int kind;                  /* dg_zero_kind */
    int num_slots;
    int64_t numel;             /* N */
    int64_t shard_len;         /* S */
    int64_t steps;
    float lr;
} dg_zero_shard_info;

/* Not collective. Copies this rank's state into state (num_slots * S
 * floats, slot after slot, host memory) and describes it in *info. DG_ERR
 * when n (floats) is smaller than num_slots * S. */
dg_status dg_zero_shard_get(const dg_zero *z, dg_zero_shard_info *info, float *state, size_t n);

/* Not collective. Restores a shard that dg_zero_shard_get gave at the
 * same world size, on the same rank, for the same parameters and kind.
 * DG_ERR, changing nothing, when info says another world size ("shard was
 * saved by a world of 2 ranks, this one has 3: reshard through
 * dg_zero_checkpoint_save/load"), another rank, kind, slot count or
 * parameter count, or when n is not num_slots * S (the shard does not fit). */
dg_status dg_zero_shard_set(dg_zero *z, const dg_zero_shard_info *info, const float *state, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_ZERO_H */
