/* dgrad/checkpoint.h - training checkpoint files with exact resume.
 *
 * A checkpoint holds the model's parameters (names, shapes, dtypes, data),
 * its buffers (batch-norm running statistics) when the caller gives them,
 * the optimizer's state (kind, lr, step count, per-parameter state
 * tensors), the training position (global step, epoch, GLOBAL samples
 * consumed in the epoch), every rank's context RNG state and per-rank
 * accumulators (an epoch's loss sum, say), the sampler's settings, and the
 * world size. The format is protobuf-c (core/proto/dg_checkpoint.proto):
 * the magic "DGCKPT\r\n", then {version, payload, CRC32C of payload}.
 *
 * Files are DIR/ckpt-<step>.dgck, written atomically by rank 0: a hidden
 * temporary file in DIR (".ckpt-<step>.dgck.tmp.<pid>"), fsync, rename,
 * fsync of DIR. A write killed half-way leaves only a temporary file,
 * which dg_checkpoint_latest ignores (the next save removes it).
 *
 * Exact resume: with the same world size and batch size, a run restored
 * from a checkpoint continues bitwise identically to the uninterrupted
 * run, provided the program restores everything dg_train_state carries
 * (parameters, buffers, optimizer state, RNG, epoch, loader position,
 * statistics).
 *
 * Resume with a different world size (or per-rank batch size) works and
 * trains on, but is NOT bitwise equal to the uninterrupted run. What it
 * guarantees: parameters, buffers, optimizer state, global step and epoch
 * are restored exactly; the epoch continues from the next global batch
 * boundary at or after the global number of samples already consumed
 * (pos = ceil(epoch_samples / (world * batch)) * batch per rank), so at
 * most world * batch - 1 samples of the epoch's permutation are skipped
 * and, because DistributedSampler padding depends on the world size, a
 * few samples at the end of the epoch may be seen twice or not at all.
 * Each rank's RNG state becomes rank 0's; the per-rank statistics are
 * summed into rank 0's (other ranks start from zero), so epoch sums stay
 * right. The data order after the resume point is that of the new world
 * size, so the trajectory differs in floating-point rounding.
 *
 * Errors are bad input (DG_ERR, one-line message naming the file):
 * missing or unreadable file, bad magic, unsupported version, checksum
 * mismatch, truncated or corrupt payload, a checkpoint of another model
 * ("checkpoint has 4 parameters [784x50, ...], model has ..."), other
 * buffers ("checkpoint has 0 buffers [], model has 4 buffers [24, 24, 32,
 * 32]": also a checkpoint with buffers loaded without any), another
 * optimizer kind or slot count, another dataset size. Loading validates
 * everything before it changes anything.
 *
 * This header is the file format and the single-process calls. The
 * collective save and load of a data-parallel job (rank 0 writes, every
 * rank agrees on the verdict and gets the contents) are in
 * dgrad/dist_checkpoint.h, in libdgrad_comm, built on these calls.
 */
#ifndef DGRAD_CHECKPOINT_H
#define DGRAD_CHECKPOINT_H

#include "dgrad/data.h"
#include "dgrad/optim.h"
#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DG_CHECKPOINT_VERSION 1
#define DG_CHECKPOINT_MAX_STATS 8

/* The training loop's position. Fill it before dg_checkpoint_save; after
 * dg_checkpoint_load it holds the restored position. */
typedef struct {
    int64_t step;              /* global optimizer steps done */
    int64_t epoch;             /* epoch in progress */
    int64_t pos;               /* this rank's loader position in the epoch,
                                  in samples (dg_loader.pos). Saved as the
                                  global count pos * world; on load, the
                                  position to continue from on this rank */
    int64_t epoch_samples;     /* load only: the saved global count */
    int64_t batch_size;        /* per rank; needed to convert pos when the
                                  world size changed */
    const char *optimizer;     /* optimizer kind name ("adam", "adamw",
                                  "sgd"): saved, and on load it must match */
    dg_sampler *sampler;       /* optional: seed, shuffle, drop_last and
                                  dataset size are saved; on load the dataset
                                  size must match, the seed is restored and
                                  the epoch set */
    int num_stats;             /* 0..DG_CHECKPOINT_MAX_STATS */
    double stats[DG_CHECKPOINT_MAX_STATS];  /* this rank's accumulators */
    int saved_world_size;      /* load only */
    dg_tensor **buffers;       /* optional: the model's buffers (batch-norm running statistics,
                                  dg_module_buffers), saved from rank 0's values; on load their
                                  number, shapes and dtypes must match the checkpoint's and every
                                  rank gets the saved values */
    int num_buffers;
} dg_train_state;

/* A checkpoint read and validated against a model, not yet applied. */
typedef struct dg_checkpoint dg_checkpoint;

/* Writes DIR/ckpt-<st->step>.dgck atomically (DIR is created if missing)
 * and then deletes all but the newest `keep` checkpoints in DIR (keep <= 0
 * keeps all). The job had `world` ranks: rng holds world * 4 RNG words
 * (dg_rng_get_state of each rank, in rank order) and stats world *
 * st->num_stats accumulators (rank-major); parameters, buffers and
 * optimizer state are this process's. opt and st may be NULL. */
dg_status dg_checkpoint_write(const char *dir, dg_ctx *ctx, dg_optim *opt,
                              const dg_train_state *st, int world, const uint64_t *rng,
                              const double *stats, int keep);

/* dg_checkpoint_write for a single process (world 1, this context's RNG,
 * st->stats). */
dg_status dg_checkpoint_save_local(const char *dir, dg_ctx *ctx, dg_optim *opt,
                                   const dg_train_state *st, int keep);

/* Reads path_or_dir (a file, or a directory's newest valid checkpoint;
 * the path read goes to path, pathn bytes) and validates it against the
 * model in ctx, opt and st, changing nothing: *out on DG_OK. */
dg_status dg_checkpoint_read(const char *path_or_dir, dg_ctx *ctx, dg_optim *opt,
                             const dg_train_state *st, dg_checkpoint **out, char *path,
                             size_t pathn);

/* The payload bytes of a read checkpoint (to send to other ranks), valid
 * until dg_checkpoint_free. */
const void *dg_checkpoint_payload(const dg_checkpoint *ck, size_t *len);

/* Parses payload bytes (from dg_checkpoint_payload, copied) and validates
 * them against the model, as dg_checkpoint_read does; name is for
 * messages. */
dg_status dg_checkpoint_parse(const void *payload, size_t len, const char *name, dg_ctx *ctx,
                              dg_optim *opt, const dg_train_state *st, dg_checkpoint **out);

/* Restores parameters, st->buffers, optimizer state, step count and lr,
 * the RNG (rank's own when the world size is the saved one, else rank
 * 0's), the sampler and *st for rank `rank` of `world` (see above for a
 * changed world size). ck must have been validated against this model. */
void dg_checkpoint_apply(const dg_checkpoint *ck, dg_ctx *ctx, dg_optim *opt,
                         dg_train_state *st, int rank, int world);

void dg_checkpoint_free(dg_checkpoint *ck);

/* Read and apply in one process (world 1). On DG_ERR nothing changed. If
 * path_out is not NULL the path loaded is copied there (n bytes). */
dg_status dg_checkpoint_load_local(const char *path_or_dir, dg_ctx *ctx, dg_optim *opt,
                                   dg_train_state *st, char *path_out, size_t n);

/* Newest valid checkpoint in dir (highest step whose magic, version and
 * checksum check), into path_out (n bytes); invalid newer ones are
 * skipped. DG_OK with path_out = "" when dir holds no ckpt-*.dgck file (or
 * does not exist); DG_ERR, with the newest one's error, when it holds
 * some but none is valid, and on other errors. Not
 * collective: call it on one rank, or on each with a shared file system. */
dg_status dg_checkpoint_latest(const char *dir, char *path_out, size_t n);

/* Check a whole checkpoint file held in memory (magic, version, checksum,
 * and that the payload parses and is self-consistent) without a model.
 * name is used in messages. For tools and fuzzing. */
dg_status dg_checkpoint_check_buffer(const void *buf, size_t len, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_CHECKPOINT_H */
