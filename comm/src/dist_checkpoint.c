/* dist_checkpoint.c - collective checkpoints (dgrad/dist_checkpoint.h):
 * rank 0 writes and reads the file (dgrad/checkpoint.h), every rank gets
 * its verdict and, on load, the payload to validate and apply. */
#include "dgrad/dist_checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MSG_LEN = 500 };

/* Rank 0's status and message to every rank. */
typedef struct {
    int32_t status;
    char msg[MSG_LEN];
} verdict;

static dg_status share_verdict(dg_comm *comm, dg_status s) {
    if (!comm || dg_comm_size(comm) == 1) return s;
    verdict v;
    memset(&v, 0, sizeof v);
    v.status = s;
    if (s) snprintf(v.msg, sizeof v.msg, "%s", dg_last_error());
    if (dg_comm_broadcast(comm, &v, sizeof v / 4, DG_COMM_I32, 0)) return DG_ERR;
    if (v.status == DG_OK) return DG_OK;
    if (dg_comm_rank(comm) != 0) {
        dg_clear_error();
        dg_set_error("%s", v.msg);
    }
    return DG_ERR;
}

dg_status dg_checkpoint_save(const char *dir, dg_ctx *ctx, dg_optim *opt, const dg_train_state *st,
                             dg_comm *comm, int keep) {
    if (!dir || !dir[0] || !ctx) return dg_set_error("dg_checkpoint_save: no directory or context");
    if (st && (st->num_stats < 0 || st->num_stats > DG_CHECKPOINT_MAX_STATS))
        return dg_set_error("dg_checkpoint_save: bad training state (num_stats %d)", st->num_stats);
    int world = comm ? dg_comm_size(comm) : 1, rank = comm ? dg_comm_rank(comm) : 0;
    uint64_t *rng = calloc((size_t)world * 4, sizeof *rng);
    double *stats = calloc((size_t)world * DG_CHECKPOINT_MAX_STATS, sizeof *stats);
    if (!rng || !stats) {
        free(rng);
        free(stats);
        return dg_set_error("dg_checkpoint_save: out of memory");
    }
    dg_rng_get_state(ctx, rng + 4 * rank);
    if (st)
        memcpy(stats + DG_CHECKPOINT_MAX_STATS * rank, st->stats, sizeof(double) * (size_t)st->num_stats);
    dg_status s = DG_OK;
    if (world > 1) {   /* also the barrier: every rank has finished its step */
        s = dg_comm_allgather(comm, NULL, rng, 4, DG_COMM_I64);
        if (!s) s = dg_comm_allgather(comm, NULL, stats, DG_CHECKPOINT_MAX_STATS, DG_COMM_F64);
        if (s) {
            free(rng);
            free(stats);
            return DG_ERR;
        }
    }
    int ns = st ? st->num_stats : 0;
    for (int r = 0; r < world; r++)   /* compact to world x num_stats */
        memmove(stats + (size_t)r * ns, stats + (size_t)r * DG_CHECKPOINT_MAX_STATS, sizeof(double) * (size_t)ns);
    if (rank == 0) s = dg_checkpoint_write(dir, ctx, opt, st, world, rng, stats, keep);
    free(rng);
    free(stats);
    return share_verdict(comm, s);
}

/* Ranks other than 0: receive rank 0's payload and validate it against
 * their own model. Every rank returns the same status. */
static dg_status receive(dg_comm *comm, dg_ctx *ctx, dg_optim *opt, const dg_train_state *st, char *path,
                         size_t pathn, dg_checkpoint **ck) {
    int rank = dg_comm_rank(comm);
    size_t plen = 0;
    const void *mine = rank == 0 ? dg_checkpoint_payload(*ck, &plen) : NULL;
    int64_t meta[2] = { (int64_t)plen, 0 };
    if (dg_comm_broadcast(comm, meta, 2, DG_COMM_I64, 0)) return DG_ERR;
    if (dg_comm_broadcast(comm, path, pathn / 4, DG_COMM_I32, 0)) return DG_ERR;
    plen = (size_t)meta[0];
    uint8_t *payload = malloc(plen + 8);
    if (payload && rank == 0) memcpy(payload, mine, plen);
    int ok = payload != NULL;
    if (dg_comm_allreduce(comm, &ok, 1, DG_COMM_I32, DG_COMM_MIN)) goto fail;
    if (!ok) {
        dg_set_error("%s: out of memory receiving the checkpoint", path);
        goto fail;
    }
    if (dg_comm_broadcast(comm, payload, (plen + 3) / 4, DG_COMM_I32, 0)) goto fail;
    dg_status s = rank == 0 ? DG_OK : dg_checkpoint_parse(payload, plen, path, ctx, opt, st, ck);
    ok = s == DG_OK;   /* every rank checked the same bytes against its model */
    if (dg_comm_allreduce(comm, &ok, 1, DG_COMM_I32, DG_COMM_MIN)) goto fail;
    if (!ok) {
        if (s == DG_OK) dg_set_error("%s: checkpoint does not fit the model on another rank", path);
        goto fail;
    }
    free(payload);
    return DG_OK;
fail:
    free(payload);
    return DG_ERR;
}

dg_status dg_checkpoint_load(const char *path_or_dir, dg_ctx *ctx, dg_optim *opt, dg_train_state *st,
                             dg_comm *comm, char *path_out, size_t n) {
    if (!path_or_dir || !ctx) return dg_set_error("dg_checkpoint_load: no path or context");
    int rank = comm ? dg_comm_rank(comm) : 0, world = comm ? dg_comm_size(comm) : 1;
    char path[4096] = "";
    dg_checkpoint *ck = NULL;
    dg_status s = DG_OK;
    if (rank == 0) s = dg_checkpoint_read(path_or_dir, ctx, opt, st, &ck, path, sizeof path);
    if (share_verdict(comm, s)) {
        dg_checkpoint_free(ck);
        return DG_ERR;
    }
    if (world > 1 && receive(comm, ctx, opt, st, path, sizeof path, &ck)) {
        dg_checkpoint_free(ck);
        return DG_ERR;
    }
    dg_checkpoint_apply(ck, ctx, opt, st, rank, world);
    dg_checkpoint_free(ck);
    if (path_out && n) snprintf(path_out, n, "%s", path);
    return DG_OK;
}
