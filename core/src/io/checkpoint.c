/* checkpoint.c - checkpoint files (dgrad/checkpoint.h): protobuf-c messages
 * of core/proto/dg_checkpoint.proto, written atomically, read and validated
 * against a model before anything changes. The collective save and load
 * (rank 0 writes and reads, every rank agrees) are comm's:
 * comm/src/dist_checkpoint.c. */
#define _XOPEN_SOURCE 700
#include "dgrad/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifdef DG_CHECKPOINT_HAVE_PROTOBUF
#include "dg_checkpoint.pb-c.h"

static const uint8_t ckpt_magic[8] = { 'D', 'G', 'C', 'K', 'P', 'T', '\r', '\n' };
enum { MSG_LEN = 500, MAX_WORLD = 1 << 20, MAX_SLOTS = 8 };

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ------------ */
static uint32_t crc32c(const uint8_t *p, size_t n) {
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---- small helpers ----------------------------------------------------- */

/* "[784x50, 50, 50x10, 10]" for up to 8 shapes, into buf */
static void append(char *buf, size_t n, const char *s) {
    size_t l = strlen(buf);
    if (l + 1 < n) snprintf(buf + l, n - l, "%s", s);
}

static void shape_list(char *buf, size_t n, int count, const int64_t *const *shapes, const int *ndims) {
    buf[0] = '\0';
    append(buf, n, "[");
    for (int i = 0; i < count && i < 8; i++) {
        if (i) append(buf, n, ", ");
        char d[32];
        if (ndims[i] == 0) append(buf, n, "scalar");
        for (int k = 0; k < ndims[i]; k++) {
            snprintf(d, sizeof d, k ? "x%lld" : "%lld", (long long)shapes[i][k]);
            append(buf, n, d);
        }
    }
    if (count > 8) append(buf, n, ", ...");
    append(buf, n, "]");
}

/* numel of a stored tensor, or -1 if its shape is unreasonable */
static int64_t tensor_numel(const Dg__Tensor *t) {
    if (t->n_shape > DG_MAX_DIMS) return -1;
    int64_t n = 1;
    for (size_t k = 0; k < t->n_shape; k++) {
        if (t->shape[k] < 0 || t->shape[k] > ((int64_t)1 << 40)) return -1;
        if (t->shape[k] && n > ((int64_t)1 << 58) / t->shape[k]) return -1;
        n *= t->shape[k];
    }
    return n;
}

/* ---- parsing and self-consistency -------------------------------------- */
static dg_status check_tensor(const Dg__Tensor *t, const char *name, const char *what, size_t i) {
    int64_t n = tensor_numel(t);
    if (n < 0) return dg_set_error("%s: corrupt checkpoint: %s %zu has a bad shape", name, what, i);
    if (t->dtype < 0 || t->dtype >= DG_DTYPE_COUNT)
        return dg_set_error("%s: corrupt checkpoint: %s %zu has unknown dtype %d", name, what, i, t->dtype);
    if ((uint64_t)t->data.len != (uint64_t)n * dg_dtype_size((dg_dtype)t->dtype))
        return dg_set_error("%s: corrupt checkpoint: %s %zu holds %zu bytes, its shape needs %llu", name, what,
                            i, t->data.len, (unsigned long long)n * dg_dtype_size((dg_dtype)t->dtype));
    return DG_OK;
}

static dg_status check_payload(const Dg__Checkpoint *ck, const char *name) {
    for (size_t i = 0; i < ck->n_params; i++)
        if (check_tensor(ck->params[i], name, "parameter", i)) return DG_ERR;
    for (size_t i = 0; i < ck->n_buffers; i++)
        if (check_tensor(ck->buffers[i], name, "buffer", i)) return DG_ERR;
    const Dg__OptimizerState *o = ck->optimizer;
    if (o) {
        if (o->num_slots < 0 || o->num_slots > MAX_SLOTS ||
            o->n_state != ck->n_params * (size_t)o->num_slots)
            return dg_set_error("%s: corrupt checkpoint: %zu optimizer state tensors for %zu parameters "
                                "and %d slots", name, o->n_state, ck->n_params, o->num_slots);
        if (o->step_count < 0) return dg_set_error("%s: corrupt checkpoint: negative optimizer step count", name);
        if (o->n_param_steps && o->n_param_steps != ck->n_params)
            return dg_set_error("%s: corrupt checkpoint: %zu per-parameter step counts for %zu parameters", name,
                                o->n_param_steps, ck->n_params);
        for (size_t i = 0; i < o->n_param_steps; i++)
            if (o->param_steps[i] < 0 || o->param_steps[i] > o->step_count)
                return dg_set_error("%s: corrupt checkpoint: parameter %zu's step count %lld is outside [0, %lld]",
                                    name, i, (long long)o->param_steps[i], (long long)o->step_count);
        for (size_t i = 0; i < o->n_state; i++) {
            if (check_tensor(o->state[i], name, "optimizer state", i)) return DG_ERR;
            const Dg__Tensor *p = ck->params[i / (size_t)o->num_slots];
            if (o->state[i]->n_shape != p->n_shape ||
                memcmp(o->state[i]->shape, p->shape, p->n_shape * sizeof *p->shape))
                return dg_set_error("%s: corrupt checkpoint: optimizer state %zu does not match its parameter's shape",
                                    name, i);
        }
    }
    const Dg__TrainState *t = ck->train;
    if (!t) return dg_set_error("%s: corrupt checkpoint: no training state", name);
    if (t->world_size < 1 || t->world_size > MAX_WORLD)
        return dg_set_error("%s: corrupt checkpoint: world size %d", name, t->world_size);
    if (t->step < 0 || t->epoch < 0 || t->epoch_samples < 0 || t->batch_size < 0 ||
        t->epoch_samples % t->world_size)
        return dg_set_error("%s: corrupt checkpoint: bad step, epoch or position", name);
    if (t->n_rng != (size_t)t->world_size * 4)
        return dg_set_error("%s: corrupt checkpoint: %zu RNG words for %d ranks", name, t->n_rng, t->world_size);
    if (t->num_stats < 0 || t->num_stats > DG_CHECKPOINT_MAX_STATS ||
        t->n_stats != (size_t)t->world_size * (size_t)t->num_stats)
        return dg_set_error("%s: corrupt checkpoint: bad statistics (%d per rank, %zu in all)", name,
                            t->num_stats, t->n_stats);
    if (t->sampler && t->sampler->dataset_size < 1)
        return dg_set_error("%s: corrupt checkpoint: sampler dataset size %lld", name,
                            (long long)t->sampler->dataset_size);
    return DG_OK;
}

/* The payload of a checkpoint file in memory: magic, version, checksum. On
 * DG_OK *file must be freed with dg__checkpoint_file__free_unpacked. */
static dg_status parse_file(const uint8_t *buf, size_t len, const char *name, Dg__CheckpointFile **file) {
    *file = NULL;
    if (len < sizeof ckpt_magic || memcmp(buf, ckpt_magic, sizeof ckpt_magic))
        return dg_set_error("%s: not a dgrad checkpoint (bad magic%s)", name,
                            len < sizeof ckpt_magic ? ", file too short" : "");
    Dg__CheckpointFile *f = dg__checkpoint_file__unpack(NULL, len - sizeof ckpt_magic, buf + sizeof ckpt_magic);
    if (!f) return dg_set_error("%s: truncated or corrupt checkpoint (the file record does not parse)", name);
    if (f->version != DG_CHECKPOINT_VERSION) {
        dg_set_error("%s: unsupported checkpoint format version %u (this dgrad reads version %d)", name,
                     f->version, DG_CHECKPOINT_VERSION);
        dg__checkpoint_file__free_unpacked(f, NULL);
        return DG_ERR;
    }
    uint32_t crc = crc32c(f->payload.data, f->payload.len);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION   /* let a fuzzer past the checksum */
    if (crc != f->crc32c) {
        dg_set_error("%s: checksum mismatch (stored %08x, computed %08x): the checkpoint is truncated or corrupt",
                     name, f->crc32c, crc);
        dg__checkpoint_file__free_unpacked(f, NULL);
        return DG_ERR;
    }
#else
    (void)crc;
#endif
    *file = f;
    return DG_OK;
}

static Dg__Checkpoint *parse_payload(const uint8_t *data, size_t len, const char *name) {
    Dg__Checkpoint *ck = dg__checkpoint__unpack(NULL, len, data);
    if (!ck) {
        dg_set_error("%s: corrupt checkpoint (the payload does not parse)", name);
        return NULL;
    }
    if (check_payload(ck, name)) {
        dg__checkpoint__free_unpacked(ck, NULL);
        return NULL;
    }
    return ck;
}

static dg_status read_whole(const char *path, uint8_t **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return dg_set_error("%s: cannot open checkpoint: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return dg_set_error("%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        fclose(f);
        return dg_set_error("%s: out of memory reading %zu bytes", path, n);
    }
    if (fread(b, 1, n, f) != n) {
        free(b);
        fclose(f);
        return dg_set_error("%s: read error: %s", path, strerror(errno ? errno : EIO));
    }
    fclose(f);
    *buf = b;
    *len = n;
    return DG_OK;
}

dg_status dg_checkpoint_check_buffer(const void *buf, size_t len, const char *name) {
    Dg__CheckpointFile *f;
    if (parse_file(buf, len, name ? name : "checkpoint", &f)) return DG_ERR;
    Dg__Checkpoint *ck = parse_payload(f->payload.data, f->payload.len, name ? name : "checkpoint");
    dg__checkpoint_file__free_unpacked(f, NULL);
    if (!ck) return DG_ERR;
    dg__checkpoint__free_unpacked(ck, NULL);
    return DG_OK;
}

/* ---- directory listing --------------------------------------------------- */
/* Steps of DIR/ckpt-<step>.dgck, newest first. -1 on error (message set),
 * else the count; *steps is malloc'd (may be NULL when 0). */
static int list_checkpoints(const char *dir, int64_t **steps, bool missing_ok) {
    *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        if (missing_ok && errno == ENOENT) return 0;
        dg_set_error("%s: cannot open checkpoint directory: %s", dir, strerror(errno));
        return -1;
    }
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long step;
        int used = 0;
        if (sscanf(e->d_name, "ckpt-%lld.dgck%n", &step, &used) != 1 || used == 0 ||
            e->d_name[used] != '\0' || step < 0)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *s = realloc(*steps, (size_t)cap * sizeof *s);
            DG_ASSERT(s != NULL);
            *steps = s;
        }
        (*steps)[n++] = step;
    }
    closedir(d);
    for (int i = 1; i < n; i++)   /* insertion sort, descending */
        for (int j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return n;
}

static dg_status ckpt_path(char *out, size_t n, const char *dir, int64_t step) {
    int k = snprintf(out, n, "%s/ckpt-%lld.dgck", dir, (long long)step);
    if (k < 0 || (size_t)k >= n) return dg_set_error("%s: checkpoint path too long", dir);
    return DG_OK;
}

dg_status dg_checkpoint_latest(const char *dir, char *path_out, size_t n) {
    if (!dir || !path_out || n == 0) return dg_set_error("dg_checkpoint_latest: NULL argument");
    path_out[0] = '\0';
    int64_t *steps;
    int count = list_checkpoints(dir, &steps, true);
    if (count < 0) return DG_ERR;
    char path[4096], first_error[1024] = "";
    for (int i = 0; i < count; i++) {
        if (ckpt_path(path, sizeof path, dir, steps[i])) break;
        uint8_t *buf;
        size_t len;
        dg_status s = read_whole(path, &buf, &len);
        Dg__CheckpointFile *f = NULL;
        if (!s) {
            s = parse_file(buf, len, path, &f);
            free(buf);
        }
        if (s) {   /* skip it, remember why */
            if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", dg_last_error());
            dg_clear_error();
            continue;
        }
        dg__checkpoint_file__free_unpacked(f, NULL);
        free(steps);
        if (strlen(path) >= n) return dg_set_error("%s: path too long for the caller's buffer", path);
        memcpy(path_out, path, strlen(path) + 1);
        return DG_OK;
    }
    free(steps);
    if (first_error[0]) return dg_set_error("%s (no valid checkpoint in %s)", first_error, dir);
    return DG_OK;
}

/* ---- saving -------------------------------------------------------------- */
static dg_status mkdir_p(const char *dir) {
    char p[4096];
    size_t l = strlen(dir);
    if (l == 0 || l >= sizeof p) return dg_set_error("checkpoint directory '%s': bad path", dir);
    memcpy(p, dir, l + 1);
    for (size_t i = 1; i <= l; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) && errno != EEXIST)
            return dg_set_error("%s: cannot create checkpoint directory: %s", p, strerror(errno));
        p[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode))
        return dg_set_error("%s: checkpoint directory exists and is not a directory", dir);
    return DG_OK;
}

/* A host copy of t as a Tensor message (data malloc'd). */
static dg_status fill_tensor(Dg__Tensor *m, const dg_tensor *t, const char *name) {
    dg__tensor__init(m);
    m->name = (char *)(name ? name : "");
    m->n_shape = (size_t)t->ndim;
    m->shape = (int64_t *)t->shape;
    m->dtype = (int32_t)t->dtype;
    size_t bytes = (size_t)dg_numel(t) * dg_dtype_size(t->dtype);
    m->data.len = bytes;
    m->data.data = malloc(bytes ? bytes : 1);
    if (!m->data.data) return dg_set_error("dg_checkpoint_save: out of memory (%zu bytes)", bytes);
    dg_tensor_to_host(t, m->data.data);
    return DG_OK;
}

static void sleep_ms(long ms) {
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* magic + file record into path, atomically */
static dg_status write_atomic(const char *dir, int64_t step, const uint8_t *rec, size_t len) {
    char tmp[4096], path[4096];
    int k = snprintf(tmp, sizeof tmp, "%s/.ckpt-%lld.dgck.tmp.%ld", dir, (long long)step, (long)getpid());
    if (k < 0 || (size_t)k >= sizeof tmp || ckpt_path(path, sizeof path, dir, step))
        return dg_set_error("%s: checkpoint path too long", dir);
    const char *slow = getenv("DG_CKPT_TEST_SLOW_WRITE");   /* test hook: ms per 1 MiB chunk */
    long slow_ms = slow ? strtol(slow, NULL, 10) : 0;
    FILE *f = fopen(tmp, "wb");
    if (!f) return dg_set_error("%s: cannot create checkpoint file: %s", tmp, strerror(errno));
    bool ok = fwrite(ckpt_magic, 1, sizeof ckpt_magic, f) == sizeof ckpt_magic;
    const size_t chunk = (size_t)1 << 20;
    for (size_t off = 0; ok && off < len; off += chunk) {
        size_t c = len - off < chunk ? len - off : chunk;
        ok = fwrite(rec + off, 1, c, f) == c;
        if (slow_ms > 0) {
            fflush(f);
            sleep_ms(slow_ms);
        }
    }
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f)) ok = false;
    if (!ok) {
        unlink(tmp);
        return dg_set_error("%s: cannot write checkpoint: %s", tmp, strerror(err ? err : EIO));
    }
    if (rename(tmp, path)) {
        err = errno;
        unlink(tmp);
        return dg_set_error("%s: cannot rename checkpoint into place: %s", path, strerror(err));
    }
    int dfd = open(dir, O_RDONLY);
    if (dfd >= 0) {
        fsync(dfd);   /* makes the rename durable; some file systems refuse, harmlessly */
        close(dfd);
    }
    return DG_OK;
}

/* Delete all but the newest keep checkpoints, and stale temporary files. */
static void prune(const char *dir, int keep) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[4096];
        while ((e = readdir(d))) {
            if (strncmp(e->d_name, ".ckpt-", 6) || !strstr(e->d_name, ".dgck.tmp.")) continue;
            int k = snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (k > 0 && (size_t)k < sizeof p) unlink(p);
        }
        closedir(d);
    }
    if (keep <= 0) return;
    int64_t *steps;
    int n = list_checkpoints(dir, &steps, true);
    char path[4096];
    for (int i = keep; i < n; i++)
        if (!ckpt_path(path, sizeof path, dir, steps[i])) unlink(path);
    free(steps);
}

static dg_status check_state(const char *fn, const char *dir, dg_ctx *ctx, const dg_train_state *st) {
    if (!dir || !dir[0] || !ctx) return dg_set_error("%s: no directory or context", fn);
    if (st && (st->num_stats < 0 || st->num_stats > DG_CHECKPOINT_MAX_STATS || st->pos < 0 || st->step < 0 ||
               st->num_buffers < 0 || (st->num_buffers > 0 && !st->buffers)))
        return dg_set_error("%s: bad training state (num_stats %d, pos %lld, step %lld, "
                            "num_buffers %d%s)", fn, st->num_stats, (long long)st->pos, (long long)st->step,
                            st->num_buffers, st->num_buffers > 0 && !st->buffers ? " without buffers" : "");
    return DG_OK;
}

dg_status dg_checkpoint_write(const char *dir, dg_ctx *ctx, dg_optim *opt, const dg_train_state *st,
                              int world, const uint64_t *rng, const double *stats, int keep) {
    if (check_state("dg_checkpoint_write", dir, ctx, st)) return DG_ERR;
    if (world < 1 || world > MAX_WORLD || !rng || (st && st->num_stats > 0 && !stats))
        return dg_set_error("dg_checkpoint_write: bad world size %d or no RNG states / statistics", world);
    if (mkdir_p(dir)) return DG_ERR;
    int np;
    dg_tensor **params = dg_ctx_params(ctx, &np);
    int nslots = opt ? dg_optim_num_slots(opt) : 0;
    size_t nstate = (size_t)np * (size_t)nslots;
    size_t nbuf = st ? (size_t)st->num_buffers : 0;
    Dg__Tensor *tens = calloc((size_t)np + nstate + nbuf, sizeof *tens);
    Dg__Tensor **pp = calloc((size_t)np + nstate + nbuf, sizeof *pp);
    dg_status s = (tens && pp) ? DG_OK : dg_set_error("dg_checkpoint_save: out of memory");
    size_t made = 0;
    for (int i = 0; !s && i < np; i++, made++) {
        pp[made] = &tens[made];
        s = fill_tensor(&tens[made], params[i], params[i]->name);
    }
    for (size_t i = 0; !s && i < nstate; i++, made++) {
        dg_tensor *t = dg_optim_state(opt, (int)(i / (size_t)nslots), (int)(i % (size_t)nslots));
        DG_ASSERT(t != NULL);
        pp[made] = &tens[made];
        s = fill_tensor(&tens[made], t, NULL);
    }
    for (size_t i = 0; !s && i < nbuf; i++, made++) {
        const dg_tensor *t = st->buffers[i];
        if (!t) {
            s = dg_set_error("dg_checkpoint_save: buffer %zu of %zu is NULL", i, nbuf);
            break;
        }
        pp[made] = &tens[made];
        s = fill_tensor(&tens[made], t, t->name);
    }
    Dg__Checkpoint ck = DG__CHECKPOINT__INIT;
    Dg__OptimizerState os = DG__OPTIMIZER_STATE__INIT;
    Dg__HyperParam lr = DG__HYPER_PARAM__INIT, *hp[1] = { &lr };
    Dg__TrainState ts = DG__TRAIN_STATE__INIT;
    Dg__SamplerState ss = DG__SAMPLER_STATE__INIT;
    Dg__CheckpointFile file = DG__CHECKPOINT_FILE__INIT;
    uint8_t *payload = NULL, *rec = NULL;
    int64_t *psteps = NULL;
    char producer[64];
    if (!s) {
        ck.n_params = (size_t)np;
        ck.params = pp;
        ck.n_buffers = nbuf;
        ck.buffers = pp + np + nstate;
        if (opt) {
            os.kind = (char *)(st && st->optimizer ? st->optimizer : "");
            lr.name = "lr";
            lr.value = dg_optim_get_lr(opt);
            os.n_hparams = 1;
            os.hparams = hp;
            os.step_count = dg_optim_step_count(opt);
            /* per-parameter counts only when a parameter fell behind (it
             * had no gradient at some step); else the file is as before */
            bool behind = false;
            for (int i = 0; i < np; i++) behind |= dg_optim_param_step_count(opt, i) != os.step_count;
            if (behind) {
                psteps = malloc((size_t)np * sizeof *psteps);
                DG_ASSERT(psteps != NULL);
                for (int i = 0; i < np; i++) psteps[i] = dg_optim_param_step_count(opt, i);
                os.n_param_steps = (size_t)np;
                os.param_steps = psteps;
            }
            os.num_slots = nslots;
            os.n_state = nstate;
            os.state = pp + np;
            ck.optimizer = &os;
        }
        ts.step = st ? st->step : 0;
        ts.epoch = st ? st->epoch : 0;
        ts.epoch_samples = st ? st->pos * world : 0;
        ts.world_size = world;
        ts.batch_size = st ? st->batch_size : 0;
        ts.n_rng = (size_t)world * 4;
        ts.rng = (uint64_t *)rng;
        ts.num_stats = st ? st->num_stats : 0;
        ts.n_stats = (size_t)world * (size_t)ts.num_stats;
        ts.stats = (double *)stats;
        if (st && st->sampler) {
            ss.seed = st->sampler->seed;
            ss.epoch = st->sampler->epoch;
            ss.shuffle = st->sampler->shuffle;
            ss.drop_last = st->sampler->drop_last;
            ss.dataset_size = st->sampler->dataset_size;
            ts.sampler = &ss;
        }
        ck.train = &ts;
        snprintf(producer, sizeof producer, "dgrad %s", dg_version());
        ck.producer = producer;
        size_t plen = dg__checkpoint__get_packed_size(&ck);
        payload = malloc(plen ? plen : 1);
        if (!payload) s = dg_set_error("dg_checkpoint_save: out of memory (%zu bytes)", plen);
        if (!s) {
            size_t packed = dg__checkpoint__pack(&ck, payload);
            DG_ASSERT(packed == plen);
            file.version = DG_CHECKPOINT_VERSION;
            file.payload.data = payload;
            file.payload.len = plen;
            file.crc32c = crc32c(payload, plen);
            size_t rlen = dg__checkpoint_file__get_packed_size(&file);
            rec = malloc(rlen);
            if (!rec) s = dg_set_error("dg_checkpoint_save: out of memory (%zu bytes)", rlen);
            if (!s) {
                packed = dg__checkpoint_file__pack(&file, rec);
                DG_ASSERT(packed == rlen);
                free(payload);   /* halve the peak before the slow part */
                payload = NULL;
                s = write_atomic(dir, ts.step, rec, rlen);
            }
        }
    }
    for (size_t i = 0; tens && i < made; i++) free(tens[i].data.data);
    free(tens);
    free(pp);
    free(payload);
    free(rec);
    free(psteps);
    if (!s) prune(dir, keep);
    return s;
}

dg_status dg_checkpoint_save_local(const char *dir, dg_ctx *ctx, dg_optim *opt, const dg_train_state *st,
                                   int keep) {
    if (check_state("dg_checkpoint_save_local", dir, ctx, st)) return DG_ERR;
    uint64_t rng[4];
    dg_rng_get_state(ctx, rng);
    return dg_checkpoint_write(dir, ctx, opt, st, 1, rng, st ? st->stats : NULL, keep);
}

/* ---- loading ------------------------------------------------------------- */
/* "checkpoint has 4 <what> [784x50, ...], model has 4 <what> [...]" */
static dg_status model_mismatch(const char *name, const char *what, Dg__Tensor *const *ct, size_t cn,
                                dg_tensor *const *mt, int mn) {
    enum { SHOW = 8 };
    const int64_t *cs[SHOW], *ms[SHOW];
    int cd[SHOW], md[SHOW];
    for (int i = 0; i < SHOW; i++) {
        if ((size_t)i < cn) { cs[i] = ct[i]->shape; cd[i] = (int)ct[i]->n_shape; }
        if (i < mn) { ms[i] = mt[i]->shape; md[i] = mt[i]->ndim; }
    }
    char a[256], b[256];
    shape_list(a, sizeof a, (int)cn, cs, cd);
    shape_list(b, sizeof b, mn, ms, md);
    return dg_set_error("%s: checkpoint is for another model: checkpoint has %zu %s %s, model has %d %s %s",
                        name, cn, what, a, mn, what, b);
}

/* Same count, and each stored tensor has the shape and dtype of the model's. */
static bool same_tensors(Dg__Tensor *const *ct, size_t cn, dg_tensor *const *mt, int mn) {
    bool same = cn == (size_t)mn;
    for (int i = 0; same && i < mn; i++) {
        const Dg__Tensor *t = ct[i];
        same = t->dtype == (int32_t)mt[i]->dtype && t->n_shape == (size_t)mt[i]->ndim &&
               !memcmp(t->shape, mt[i]->shape, t->n_shape * sizeof *t->shape);
    }
    return same;
}

static dg_status check_model(const Dg__Checkpoint *ck, const char *name, dg_ctx *ctx, dg_optim *opt,
                             const dg_train_state *st) {
    int np;
    dg_tensor **params = dg_ctx_params(ctx, &np);
    if (!same_tensors(ck->params, ck->n_params, params, np))
        return model_mismatch(name, "parameters", ck->params, ck->n_params, params, np);
    int nb = st ? st->num_buffers : 0;
    for (int i = 0; i < nb; i++)
        if (!st->buffers || !st->buffers[i] || !dg_is_contiguous(st->buffers[i]))
            return dg_set_error("%s: the model's buffer %d is NULL or not contiguous", name, i);
    if (!same_tensors(ck->buffers, ck->n_buffers, nb ? st->buffers : NULL, nb)) {
        for (int i = 0; (size_t)nb == ck->n_buffers && i < nb; i++) {   /* a dtype alone: its own message */
            const Dg__Tensor *t = ck->buffers[i];
            if (t->n_shape != (size_t)st->buffers[i]->ndim ||
                memcmp(t->shape, st->buffers[i]->shape, t->n_shape * sizeof *t->shape))
                break;
            if (t->dtype != (int32_t)st->buffers[i]->dtype)
                return dg_set_error("%s: checkpoint is for another model: buffer %d is %s in the checkpoint, "
                                    "%s in the model", name, i, dg_dtype_name((dg_dtype)t->dtype),
                                    dg_dtype_name(st->buffers[i]->dtype));
        }
        return model_mismatch(name, "buffers", ck->buffers, ck->n_buffers, nb ? st->buffers : NULL, nb);
    }
    if (opt) {
        const Dg__OptimizerState *o = ck->optimizer;
        if (!o) return dg_set_error("%s: checkpoint has no optimizer state", name);
        const char *kind = st && st->optimizer ? st->optimizer : "";
        if (strcmp(o->kind, kind))
            return dg_set_error("%s: checkpoint was written with optimizer '%s', this run uses '%s'", name,
                                o->kind, kind);
        if (o->num_slots != dg_optim_num_slots(opt))
            return dg_set_error("%s: checkpoint's optimizer has %d state slots per parameter, this one %d "
                                "(different momentum/amsgrad setting?)", name, o->num_slots, dg_optim_num_slots(opt));
    }
    const Dg__SamplerState *ss = ck->train->sampler;
    if (st && st->sampler && ss) {
        if (ss->dataset_size != st->sampler->dataset_size)
            return dg_set_error("%s: checkpoint's dataset has %lld samples, this run's %lld", name,
                                (long long)ss->dataset_size, (long long)st->sampler->dataset_size);
        if (ss->shuffle != st->sampler->shuffle || ss->drop_last != st->sampler->drop_last)
            return dg_set_error("%s: checkpoint's sampler has shuffle=%d drop_last=%d, this run's %d %d", name,
                                ss->shuffle, ss->drop_last, st->sampler->shuffle, st->sampler->drop_last);
    }
    return DG_OK;
}

struct dg_checkpoint {
    uint8_t *payload;          /* the checked payload bytes */
    size_t len;
    Dg__Checkpoint *msg;       /* their parse */
};

void dg_checkpoint_free(dg_checkpoint *c) {
    if (!c) return;
    if (c->msg) dg__checkpoint__free_unpacked(c->msg, NULL);
    free(c->payload);
    free(c);
}

const void *dg_checkpoint_payload(const dg_checkpoint *c, size_t *len) {
    DG_ASSERT(c != NULL && len != NULL);
    *len = c->len;
    return c->payload;
}

dg_status dg_checkpoint_parse(const void *payload, size_t len, const char *name, dg_ctx *ctx, dg_optim *opt,
                              const dg_train_state *st, dg_checkpoint **out) {
    *out = NULL;
    if (!ctx) return dg_set_error("dg_checkpoint_parse: no context");
    name = name ? name : "checkpoint";
    dg_checkpoint *c = calloc(1, sizeof *c);
    if (c) c->payload = malloc(len + 8);
    if (!c || !c->payload) {
        dg_checkpoint_free(c);
        return dg_set_error("%s: out of memory (%zu bytes)", name, len);
    }
    memcpy(c->payload, payload, len);
    c->len = len;
    c->msg = parse_payload(c->payload, len, name);
    if (!c->msg || check_model(c->msg, name, ctx, opt, st)) {
        dg_checkpoint_free(c);
        return DG_ERR;
    }
    *out = c;
    return DG_OK;
}

void dg_checkpoint_apply(const dg_checkpoint *c, dg_ctx *ctx, dg_optim *opt, dg_train_state *st, int rank,
                         int world) {
    DG_ASSERT(c != NULL && c->msg != NULL && ctx != NULL && rank >= 0 && rank < world);
    const Dg__Checkpoint *ck = c->msg;
    int np;
    dg_tensor **params = dg_ctx_params(ctx, &np);
    for (int i = 0; i < np; i++) dg_tensor_copy_from_host(params[i], ck->params[i]->data.data);
    if (opt) {
        const Dg__OptimizerState *o = ck->optimizer;
        for (size_t i = 0; i < o->n_state; i++) {
            dg_tensor *t = dg_optim_state(opt, (int)(i / (size_t)o->num_slots), (int)(i % (size_t)o->num_slots));
            DG_ASSERT(t != NULL);
            dg_tensor_copy_from_host(t, o->state[i]->data.data);
        }
        dg_optim_set_step_count(opt, o->step_count);
        for (size_t i = 0; i < o->n_param_steps; i++) dg_optim_set_param_step_count(opt, (int)i, o->param_steps[i]);
        for (size_t i = 0; i < o->n_hparams; i++)
            if (!strcmp(o->hparams[i]->name, "lr")) dg_optim_set_lr(opt, (float)o->hparams[i]->value);
    }
    const Dg__TrainState *t = ck->train;
    bool same_world = t->world_size == world;
    dg_rng_set_state(ctx, t->rng + 4 * (same_world ? rank : 0));
    if (!st) return;
    for (int i = 0; i < st->num_buffers; i++) dg_tensor_copy_from_host(st->buffers[i], ck->buffers[i]->data.data);
    st->step = t->step;
    st->epoch = t->epoch;
    st->epoch_samples = t->epoch_samples;
    st->saved_world_size = t->world_size;
    st->num_stats = t->num_stats;
    memset(st->stats, 0, sizeof st->stats);
    for (int k = 0; k < t->num_stats; k++) {
        if (same_world) {
            st->stats[k] = t->stats[(size_t)rank * (size_t)t->num_stats + k];
        } else if (rank == 0) {
            for (int r = 0; r < t->world_size; r++) st->stats[k] += t->stats[(size_t)r * (size_t)t->num_stats + k];
        }
    }
    int64_t b = st->batch_size > 0 ? st->batch_size : t->batch_size;
    if (same_world && b == t->batch_size) {
        st->pos = t->epoch_samples / world;
    } else {
        int64_t gb = (int64_t)world * (b > 0 ? b : 1);
        st->pos = (t->epoch_samples + gb - 1) / gb * (b > 0 ? b : 1);
    }
    st->batch_size = b;
    if (st->sampler) {
        if (t->sampler) st->sampler->seed = t->sampler->seed;
        dg_sampler_set_epoch(st->sampler, t->epoch);
        if (st->pos > st->sampler->num_samples) st->pos = st->sampler->num_samples;
    }
}

dg_status dg_checkpoint_read(const char *path_or_dir, dg_ctx *ctx, dg_optim *opt, const dg_train_state *st,
                             dg_checkpoint **out, char *path, size_t pathn) {
    *out = NULL;
    if (!path_or_dir || !ctx || !path || pathn == 0) return dg_set_error("dg_checkpoint_read: no path or context");
    path[0] = '\0';
    struct stat sb;
    if (stat(path_or_dir, &sb)) return dg_set_error("%s: cannot open checkpoint: %s", path_or_dir, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        if (dg_checkpoint_latest(path_or_dir, path, pathn)) return DG_ERR;
        if (!path[0]) return dg_set_error("%s: no valid checkpoint in this directory", path_or_dir);
    } else {
        if (strlen(path_or_dir) >= pathn) return dg_set_error("%s: path too long", path_or_dir);
        memcpy(path, path_or_dir, strlen(path_or_dir) + 1);
    }
    uint8_t *buf;
    size_t len;
    if (read_whole(path, &buf, &len)) return DG_ERR;
    Dg__CheckpointFile *f;
    dg_status s = parse_file(buf, len, path, &f);
    free(buf);
    if (s) return DG_ERR;
    s = dg_checkpoint_parse(f->payload.data, f->payload.len, path, ctx, opt, st, out);
    dg__checkpoint_file__free_unpacked(f, NULL);
    return s;
}

dg_status dg_checkpoint_load_local(const char *path_or_dir, dg_ctx *ctx, dg_optim *opt, dg_train_state *st,
                                   char *path_out, size_t n) {
    char path[4096];
    dg_checkpoint *c;
    if (dg_checkpoint_read(path_or_dir, ctx, opt, st, &c, path, sizeof path)) return DG_ERR;
    dg_checkpoint_apply(c, ctx, opt, st, 0, 1);
    dg_checkpoint_free(c);
    if (path_out && n) snprintf(path_out, n, "%s", path);
    return DG_OK;
}

#else /* !DG_CHECKPOINT_HAVE_PROTOBUF */

static dg_status no_protobuf(const char *fn) {
    return dg_set_error("%s: dgrad was built without protobuf-c (checkpoints unavailable)", fn);
}

dg_status dg_checkpoint_write(const char *dir, dg_ctx *ctx, dg_optim *opt, const dg_train_state *st,
                              int world, const uint64_t *rng, const double *stats, int keep) {
    (void)dir; (void)ctx; (void)opt; (void)st; (void)world; (void)rng; (void)stats; (void)keep;
    return no_protobuf("dg_checkpoint_write");
}

dg_status dg_checkpoint_save_local(const char *dir, dg_ctx *ctx, dg_optim *opt, const dg_train_state *st,
                                   int keep) {
    (void)dir; (void)ctx; (void)opt; (void)st; (void)keep;
    return no_protobuf("dg_checkpoint_save_local");
}

dg_status dg_checkpoint_read(const char *path_or_dir, dg_ctx *ctx, dg_optim *opt, const dg_train_state *st,
                             dg_checkpoint **out, char *path, size_t pathn) {
    (void)path_or_dir; (void)ctx; (void)opt; (void)st; (void)path; (void)pathn;
    *out = NULL;
    return no_protobuf("dg_checkpoint_read");
}

dg_status dg_checkpoint_parse(const void *payload, size_t len, const char *name, dg_ctx *ctx, dg_optim *opt,
                              const dg_train_state *st, dg_checkpoint **out) {
    (void)payload; (void)len; (void)name; (void)ctx; (void)opt; (void)st;
    *out = NULL;
    return no_protobuf("dg_checkpoint_parse");
}

const void *dg_checkpoint_payload(const dg_checkpoint *c, size_t *len) {
    (void)c;
    *len = 0;
    return NULL;
}

void dg_checkpoint_apply(const dg_checkpoint *c, dg_ctx *ctx, dg_optim *opt, dg_train_state *st, int rank,
                         int world) {
    (void)c; (void)ctx; (void)opt; (void)st; (void)rank; (void)world;
    DG_ASSERT(!"dg_checkpoint_apply without protobuf-c");
}

void dg_checkpoint_free(dg_checkpoint *c) { (void)c; }

dg_status dg_checkpoint_load_local(const char *path_or_dir, dg_ctx *ctx, dg_optim *opt, dg_train_state *st,
                                   char *path_out, size_t n) {
    (void)path_or_dir; (void)ctx; (void)opt; (void)st; (void)path_out; (void)n;
    return no_protobuf("dg_checkpoint_load_local");
}

dg_status dg_checkpoint_latest(const char *dir, char *path_out, size_t n) {
    (void)dir;
    if (path_out && n) path_out[0] = '\0';
    return no_protobuf("dg_checkpoint_latest");
}

dg_status dg_checkpoint_check_buffer(const void *buf, size_t len, const char *name) {
    (void)buf; (void)len; (void)name;
    return no_protobuf("dg_checkpoint_check_buffer");
}

#endif
