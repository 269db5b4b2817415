/* dgrad/dist_checkpoint.h - checkpoints of a data-parallel job (libdgrad_comm).
 *
 * The collective form of dgrad/checkpoint.h: every rank calls save and
 * load, rank 0 alone touches the file system, and every rank returns the
 * same status and message. comm == NULL means a single process. What is
 * saved, the file format, exact resume and resume at another world size
 * are described in dgrad/checkpoint.h.
 */
#ifndef DGRAD_DIST_CHECKPOINT_H
#define DGRAD_DIST_CHECKPOINT_H

#include "dgrad/checkpoint.h"
#include "dgrad/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collective. Every rank's RNG state and st->stats are gathered, then rank
 * 0 writes DIR/ckpt-<st->step>.dgck (dg_checkpoint_write) and deletes all
 * but the newest `keep`. opt and st may be NULL. Every rank returns DG_ERR
 * with the same message if the write failed. */
dg_status dg_checkpoint_save(const char *dir, dg_ctx *ctx, dg_optim *opt,
                             const dg_train_state *st, dg_comm *comm, int keep);

/* Collective. path_or_dir is a checkpoint file, or a directory whose
 * newest valid checkpoint is loaded. Rank 0 reads and validates it against
 * its model (identical on every rank), broadcasts the verdict, then the
 * contents, which every rank validates again. On success parameters,
 * st->buffers, optimizer state, step count and lr, the RNG, the sampler
 * and *st are restored. On DG_ERR nothing changed. If path_out is not NULL
 * the path loaded is copied there (n bytes). */
dg_status dg_checkpoint_load(const char *path_or_dir, dg_ctx *ctx, dg_optim *opt,
                             dg_train_state *st, dg_comm *comm, char *path_out, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_DIST_CHECKPOINT_H */
