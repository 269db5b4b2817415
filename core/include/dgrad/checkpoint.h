/* dgrad/checkpoint.h - synchronized training checkpoints with exact resume.
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
 * Collectives: with a communicator (comm != NULL), save and load are
 * collective: every rank calls them, and every rank returns the same
 * status and message. comm == NULL means a single process.
 */
#ifndef DGRAD_CHECKPOINT_H
#define DGRAD_CHECKPOINT_H

#include "dgrad/comm.h"
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

/* Collective. Rank 0 writes DIR/ckpt-<st->step>.dgck atomically (DIR is
 * created if missing) and then deletes all but the newest `keep`
 * checkpoints in DIR (keep <= 0 keeps all). opt and st may be NULL. Every
 * rank returns DG_ERR with the same message if the write failed. */
dg_status dg_checkpoint_save(const char *dir, dg_ctx *ctx, dg_optim *opt,
                             const dg_train_state *st, dg_comm *comm, int keep);

/* Collective. path_or_dir is a checkpoint file, or a directory whose
 * newest valid checkpoint is loaded. Rank 0 reads and validates it against
 * its model (identical on every rank), broadcasts the verdict, then the
 * contents. On success parameters, st->buffers, optimizer state, step
 * count and lr, the RNG, the sampler and *st are restored. On DG_ERR
 * nothing changed. If path_out is not NULL the path loaded is copied
 * there (n bytes). */
dg_status dg_checkpoint_load(const char *path_or_dir, dg_ctx *ctx, dg_optim *opt,
                             dg_train_state *st, dg_comm *comm, char *path_out, size_t n);

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
