/* data.c - IDX reader (plain or gzip), datasets, distributed sampler and
 * batch loader. See dgrad/data.h. */
#define _POSIX_C_SOURCE 200809L  /* fileno, fstat */

#include "dgrad/data.h"
#include "impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* ---- IDX source: a byte stream over a plain or gzip file ---------------- */

#define IDX_CHUNK (1 << 16)
/* Refuse headers that promise more than this (1 TiB): a sanity bound, not a
 * memory plan (gzip data is read into a buffer that grows as it arrives). */
#define IDX_MAX_BYTES ((int64_t)1 << 40)

typedef struct {
    const char *path;
    FILE *f;
    bool gz;
    bool z_init;        /* inflateInit2 done */
    bool member_done;   /* inflate reached the end of a gzip member */
    bool new_member;    /* a following member has produced no output yet */
    bool eof;
    z_stream zs;        /* next_in/avail_in buffer the input in both modes */
    unsigned char *in;  /* IDX_CHUNK bytes */
} idx_src;

static dg_status src_fill(idx_src *s) {
    size_t n = fread(s->in, 1, IDX_CHUNK, s->f);
    if (n == 0 && ferror(s->f))
        return dg_set_error("dg_idx_read: %s: read error: %s", s->path, strerror(errno));
    s->zs.next_in = s->in;
    s->zs.avail_in = (uInt)n;
    return DG_OK;
}

static dg_status src_open(idx_src *s, const char *path) {
    memset(s, 0, sizeof *s);
    s->path = path;
    s->f = fopen(path, "rb");
    if (!s->f)
        return dg_set_error("dg_idx_read: %s: cannot open: %s", path, strerror(errno));
    s->in = malloc(IDX_CHUNK);
    if (!s->in) return dg_set_error("dg_idx_read: %s: out of memory", path);
    /* Sniff the gzip magic in the first buffer-full; plain reads use it too. */
    if (src_fill(s) != DG_OK) return DG_ERR;
    s->gz = s->zs.avail_in >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b;
    if (s->gz) {
        if (inflateInit2(&s->zs, 15 + 16) != Z_OK)
            return dg_set_error("dg_idx_read: %s: zlib init failed", path);
        s->z_init = true;
    }
    return DG_OK;
}

static void src_close(idx_src *s) {
    if (s->z_init) inflateEnd(&s->zs);
    if (s->f) fclose(s->f);
    free(s->in);
    memset(s, 0, sizeof *s);
}

static dg_status src_read_plain(idx_src *s, uint8_t *buf, size_t n, size_t *got) {
    size_t k = s->zs.avail_in < n ? s->zs.avail_in : n;
    memcpy(buf, s->zs.next_in, k);
    s->zs.next_in += k;
    s->zs.avail_in -= (uInt)k;
    if (k < n) {
        size_t m = fread(buf + k, 1, n - k, s->f);
        if (m < n - k && ferror(s->f))
            return dg_set_error("dg_idx_read: %s: read error: %s", s->path, strerror(errno));
        k += m;
    }
    *got = k;
    return DG_OK;
}

static dg_status src_read_gz(idx_src *s, uint8_t *buf, size_t n, size_t *got) {
    size_t done = 0;
    while (done < n && !s->eof) {
        if (s->member_done) {
            /* End of a member: EOF, or another member (gzip allows several). */
            if (s->zs.avail_in == 0 && src_fill(s) != DG_OK) return DG_ERR;
            if (s->zs.avail_in == 0) { s->eof = true; break; }
            inflateReset(&s->zs);
            s->member_done = false;
            s->new_member = true;
        }
        if (s->zs.avail_in == 0) {
            if (src_fill(s) != DG_OK) return DG_ERR;
            if (s->zs.avail_in == 0 && s->new_member)
                return dg_set_error("dg_idx_read: %s: trailing garbage after the gzip stream",
                                    s->path);
            if (s->zs.avail_in == 0)
                return dg_set_error("dg_idx_read: %s: corrupt gzip: compressed data ends early "
                                    "(file truncated?)", s->path);
        }
        size_t chunk = n - done > (size_t)1 << 30 ? (size_t)1 << 30 : n - done;
        s->zs.next_out = buf + done;
        s->zs.avail_out = (uInt)chunk;
        int ret = inflate(&s->zs, Z_NO_FLUSH);
        size_t produced = chunk - s->zs.avail_out;
        done += produced;
        if (produced > 0) s->new_member = false;
        if (ret == Z_STREAM_END) {
            s->member_done = true;
        } else if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT) {
            if (s->new_member)
                return dg_set_error("dg_idx_read: %s: trailing garbage after the gzip stream",
                                    s->path);
            return dg_set_error("dg_idx_read: %s: corrupt gzip: %s", s->path,
                                s->zs.msg ? s->zs.msg : "invalid data");
        } else if (ret == Z_MEM_ERROR) {
            return dg_set_error("dg_idx_read: %s: out of memory in zlib", s->path);
        } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
            return dg_set_error("dg_idx_read: %s: zlib error %d", s->path, ret);
        }
    }
    *got = done;
    return DG_OK;
}

/* Read up to n bytes; *got < n only at the end of the (decompressed) data. */
static dg_status src_read(idx_src *s, uint8_t *buf, size_t n, size_t *got) {
    return s->gz ? src_read_gz(s, buf, n, got) : src_read_plain(s, buf, n, got);
}

/* Count what is left (and, for gzip, check the remaining CRCs). */
static dg_status src_count_rest(idx_src *s, int64_t *rest) {
    uint8_t tmp[4096];
    size_t got;
    *rest = 0;
    do {
        if (src_read(s, tmp, sizeof tmp, &got) != DG_OK) return DG_ERR;
        *rest += (int64_t)got;
    } while (got == sizeof tmp);
    return DG_OK;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Parse and check the header; sets ndim, dims and *total (element count). */
static dg_status idx_read_header(idx_src *s, dg_idx *out, int64_t *total) {
    const char *path = s->path;
    uint8_t magic[4], dimb[4 * DG_MAX_DIMS];
    size_t got;
    if (src_read(s, magic, 4, &got) != DG_OK) return DG_ERR;
    if (got < 4)
        return dg_set_error("dg_idx_read: %s: truncated header: expected 4 magic bytes, got %zu",
                            path, got);
    if (magic[0] != 0 || magic[1] != 0)
        return dg_set_error("dg_idx_read: %s: bad magic number 0x%08x: not an IDX file "
                            "(its first two bytes must be zero)", path, (unsigned)be32(magic));
    if (magic[2] != 0x08)
        return dg_set_error("dg_idx_read: %s: unsupported element type 0x%02x "
                            "(only 0x08, unsigned byte, is supported)", path, magic[2]);
    int ndim = magic[3];
    if (ndim < 1 || ndim > DG_MAX_DIMS)
        return dg_set_error("dg_idx_read: %s: unsupported number of dims %d (expected 1..%d)",
                            path, ndim, DG_MAX_DIMS);
    if (src_read(s, dimb, 4 * (size_t)ndim, &got) != DG_OK) return DG_ERR;
    if (got < 4 * (size_t)ndim)
        return dg_set_error("dg_idx_read: %s: truncated header: expected %d bytes of dims, got %zu",
                            path, 4 * ndim, got);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = be32(dimb + 4 * i);
        if (d == 0 || d > INT32_MAX)
            return dg_set_error("dg_idx_read: %s: bad size %u for dim %d", path, (unsigned)d, i);
        if (n > IDX_MAX_BYTES / (int64_t)d)
            return dg_set_error("dg_idx_read: %s: dims promise more than %lld bytes of data",
                                path, (long long)IDX_MAX_BYTES);
        n *= d;
        out->dims[i] = d;
    }
    out->ndim = ndim;
    *total = n;
    return DG_OK;
}

/* Read exactly total bytes into a buffer that grows as data arrives, so a
 * lying header in a small gzip file cannot make us allocate a lot. */
static dg_status idx_read_data(idx_src *s, int64_t total, uint8_t **data) {
    int64_t cap = total < ((int64_t)1 << 24) ? total : ((int64_t)1 << 24), have = 0;
    uint8_t *buf = malloc((size_t)cap);
    if (!buf) return dg_set_error("dg_idx_read: %s: out of memory (%lld bytes)", s->path,
                                  (long long)cap);
    for (;;) {
        size_t got;
        if (src_read(s, buf + have, (size_t)(cap - have), &got) != DG_OK) goto fail;
        have += (int64_t)got;
        if (have < cap) {
            dg_set_error("dg_idx_read: %s: truncated: expected %lld bytes of data, got %lld",
                         s->path, (long long)total, (long long)have);
            goto fail;
        }
        if (have == total) break;
        int64_t ncap = cap > total / 2 ? total : cap * 2;
        uint8_t *nb = realloc(buf, (size_t)ncap);
        if (!nb) {
            dg_set_error("dg_idx_read: %s: out of memory (%lld bytes)", s->path, (long long)ncap);
            goto fail;
        }
        buf = nb;
        cap = ncap;
    }
    *data = buf;
    return DG_OK;
fail:
    free(buf);
    return DG_ERR;
}

dg_status dg_idx_read(const char *path, dg_idx *out) {
    DG_ASSERT(path && out);
    memset(out, 0, sizeof *out);
    idx_src s;
    int64_t total = 0, rest = 0;
    if (src_open(&s, path) != DG_OK) goto fail;
    if (idx_read_header(&s, out, &total) != DG_OK) goto fail;
    if (!s.gz) {
        /* Plain file: check the length before allocating anything. */
        struct stat st;
        if (fstat(fileno(s.f), &st) == 0 && S_ISREG(st.st_mode)) {
            int64_t have = (int64_t)st.st_size - 4 - 4 * (int64_t)out->ndim;
            if (have < total) {
                dg_set_error("dg_idx_read: %s: truncated: expected %lld bytes of data, got %lld",
                             path, (long long)total, (long long)have);
                goto fail;
            }
            if (have > total) {
                dg_set_error("dg_idx_read: %s: %lld trailing bytes after the %lld bytes of data",
                             path, (long long)(have - total), (long long)total);
                goto fail;
            }
        }
    }
    if (idx_read_data(&s, total, &out->data) != DG_OK) goto fail;
    if (src_count_rest(&s, &rest) != DG_OK) goto fail;
    if (rest > 0) {
        dg_set_error("dg_idx_read: %s: %lld trailing bytes after the %lld bytes of data",
                     path, (long long)rest, (long long)total);
        goto fail;
    }
    src_close(&s);
    return DG_OK;
fail:
    src_close(&s);
    dg_idx_free(out);
    return DG_ERR;
}

void dg_idx_free(dg_idx *idx) {
    if (!idx) return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

/* ---- datasets ----------------------------------------------------------- */

dg_status dg_dataset_load_idx(const char *images_path, const char *labels_path,
                              int num_classes, dg_dataset *out) {
    DG_ASSERT(images_path && labels_path && out);
    memset(out, 0, sizeof *out);
    if (num_classes < 1 || num_classes > 256)
        return dg_set_error("dg_dataset_load_idx: num_classes %d out of range 1..256 "
                            "(labels are bytes)", num_classes);
    dg_idx im, lb;
    memset(&lb, 0, sizeof lb);
    if (dg_idx_read(images_path, &im) != DG_OK) return DG_ERR;
    if (dg_idx_read(labels_path, &lb) != DG_OK) goto fail;
    if (im.ndim < 2) {
        dg_set_error("dg_dataset_load_idx: %s: images need at least 2 dims (N, ...), got %d",
                     images_path, im.ndim);
        goto fail;
    }
    if (lb.ndim != 1) {
        dg_set_error("dg_dataset_load_idx: %s: labels need 1 dim (N), got %d",
                     labels_path, lb.ndim);
        goto fail;
    }
    if (im.dims[0] != lb.dims[0]) {
        dg_set_error("dg_dataset_load_idx: count mismatch: %s has %lld images, %s has %lld labels",
                     images_path, (long long)im.dims[0], labels_path, (long long)lb.dims[0]);
        goto fail;
    }
    int64_t n = im.dims[0];
    for (int64_t i = 0; i < n; i++) {
        if (lb.data[i] >= num_classes) {
            dg_set_error("dg_dataset_load_idx: %s: label %d at index %lld out of range [0, %d)",
                         labels_path, lb.data[i], (long long)i, num_classes);
            goto fail;
        }
    }
    out->labels = malloc((size_t)n * sizeof(int32_t));
    if (!out->labels) {
        dg_set_error("dg_dataset_load_idx: %s: out of memory", labels_path);
        goto fail;
    }
    for (int64_t i = 0; i < n; i++) out->labels[i] = lb.data[i];
    out->n = n;
    out->ndim_sample = im.ndim - 1;
    out->sample_size = 1;
    for (int i = 1; i < im.ndim; i++) {
        out->sample_shape[i - 1] = im.dims[i];
        out->sample_size *= im.dims[i];
    }
    out->num_classes = num_classes;
    out->images = im.data;   /* take ownership: pixels stay uint8 */
    im.data = NULL;
    dg_idx_free(&im);
    dg_idx_free(&lb);
    return DG_OK;
fail:
    dg_idx_free(&im);
    dg_idx_free(&lb);
    dg_dataset_free(out);
    return DG_ERR;
}

/* dir/name.gz if it exists, else dir/name if it exists. */
static dg_status find_idx_file(const char *dir, const char *name, char *buf, size_t n) {
    static const char *const suffix[2] = {".gz", ""};
    for (int i = 0; i < 2; i++) {
        struct stat st;
        int k = snprintf(buf, n, "%s/%s%s", dir, name, suffix[i]);
        if (k < 0 || (size_t)k >= n)
            return dg_set_error("dg_dataset_load_mnist: %s: path too long", dir);
        if (stat(buf, &st) == 0) return DG_OK;
    }
    return dg_set_error("dg_dataset_load_mnist: %s: neither %s.gz nor %s found there",
                        dir, name, name);
}

dg_status dg_dataset_load_mnist(const char *dir, bool train, dg_dataset *out) {
    DG_ASSERT(dir && out);
    memset(out, 0, sizeof *out);
    char ip[4096], lp[4096];
    const char *split = train ? "train" : "t10k";
    char iname[64], lname[64];
    snprintf(iname, sizeof iname, "%s-images-idx3-ubyte", split);
    snprintf(lname, sizeof lname, "%s-labels-idx1-ubyte", split);
    if (find_idx_file(dir, iname, ip, sizeof ip) != DG_OK) return DG_ERR;
    if (find_idx_file(dir, lname, lp, sizeof lp) != DG_OK) return DG_ERR;
    return dg_dataset_load_idx(ip, lp, 10, out);
}

void dg_dataset_free(dg_dataset *ds) {
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    free(ds->features);
    if (ds->release) ds->release(ds->user);
    memset(ds, 0, sizeof *ds);
}

dg_status dg_dataset_check(const dg_dataset *ds) {
    if (!ds) return dg_set_error("dataset: NULL");
    const char *name = ds->name ? ds->name : "dataset";
    if (ds->n < 1) return dg_set_error("%s: n = %lld: a dataset needs at least 1 sample", name, (long long)ds->n);
    if (!ds->get && !((ds->images || ds->features) && ds->labels))
        return dg_set_error("%s: no samples: set get, or features (or images) and labels", name);
    if (ds->ndim_sample < 1 || ds->ndim_sample >= DG_MAX_DIMS)
        return dg_set_error("%s: ndim_sample = %d: need 1 to %d dims per sample", name, ds->ndim_sample,
                            DG_MAX_DIMS - 1);
    int64_t numel = 1;
    for (int i = 0; i < ds->ndim_sample; i++) {
        if (ds->sample_shape[i] < 1 || ds->sample_shape[i] > ((int64_t)1 << 31))
            return dg_set_error("%s: sample_shape[%d] = %lld: need a size >= 1", name, i,
                                (long long)ds->sample_shape[i]);
        numel *= ds->sample_shape[i];
    }
    if (numel != ds->sample_size)
        return dg_set_error("%s: sample_size = %lld but sample_shape holds %lld values", name,
                            (long long)ds->sample_size, (long long)numel);
    if (ds->num_classes < 1) return dg_set_error("%s: num_classes = %d: need at least 1", name, ds->num_classes);
    return DG_OK;
}

dg_status dg_dataset_get(const dg_dataset *ds, int64_t i, float *x, int32_t *y) {
    DG_ASSERT(ds && x && y && i >= 0 && i < ds->n);
    int64_t ss = ds->sample_size;
    if (ds->get) {
        if (ds->get(ds, i, x, y)) {
            if (!dg_has_error()) dg_set_error("%s: get(%lld) failed", ds->name ? ds->name : "dataset", (long long)i);
            return DG_ERR;
        }
    } else if (ds->features) {
        memcpy(x, ds->features + i * ss, (size_t)ss * sizeof(float));
        *y = ds->labels[i];
    } else {
        for (int64_t j = 0; j < ss; j++) x[j] = (float)ds->images[i * ss + j] / 255.0f;
        *y = ds->labels[i];
    }
    if (*y < 0 || *y >= ds->num_classes)
        return dg_set_error("%s: sample %lld has label %d, outside [0, %d)", ds->name ? ds->name : "dataset",
                            (long long)i, *y, ds->num_classes);
    return DG_OK;
}

/* ---- sampler ------------------------------------------------------------ */

/* xoshiro256** seeded through splitmix64: the same stream on every rank. */
typedef struct { uint64_t s[4]; } perm_rng;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(perm_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

/* Uniform in [0, n), without modulo bias. */
static uint64_t rng_below(perm_rng *r, uint64_t n) {
    uint64_t threshold = (0 - n) % n, x;
    do x = rng_next(r); while (x < threshold);
    return x % n;
}

dg_status dg_sampler_init(dg_sampler *s, int64_t dataset_size, int rank, int world_size,
                          bool shuffle, uint64_t seed, bool drop_last) {
    DG_ASSERT(s);
    memset(s, 0, sizeof *s);
    if (dataset_size < 1)
        return dg_set_error("dg_sampler_init: dataset_size %lld: need at least 1 sample",
                            (long long)dataset_size);
    if (world_size < 1)
        return dg_set_error("dg_sampler_init: world_size %d: need at least 1", world_size);
    if (rank < 0 || rank >= world_size)
        return dg_set_error("dg_sampler_init: rank %d out of range [0, %d)", rank, world_size);
    int64_t w = world_size;
    /* As torch: drop_last keeps floor(n / w) per rank, else ceil(n / w). */
    s->num_samples = drop_last ? dataset_size / w : (dataset_size + w - 1) / w;
    s->total_size = s->num_samples * w;
    s->dataset_size = dataset_size;
    s->rank = rank;
    s->world_size = world_size;
    s->shuffle = shuffle;
    s->seed = seed;
    s->drop_last = drop_last;
    s->indices = malloc((size_t)(s->num_samples > 0 ? s->num_samples : 1) * sizeof(int64_t));
    s->perm = malloc((size_t)dataset_size * sizeof(int64_t));
    if (!s->indices || !s->perm) {
        dg_sampler_free(s);
        return dg_set_error("dg_sampler_init: out of memory for %lld indices",
                            (long long)dataset_size);
    }
    dg_sampler_set_epoch(s, 0);
    return DG_OK;
}

dg_status dg_sampler_init_eval(dg_sampler *s, int64_t dataset_size, int rank, int world_size) {
    if (dg_sampler_init(s, dataset_size, rank, world_size, false, 0, false)) return DG_ERR;
    int64_t w = world_size;
    s->num_samples = dataset_size > rank ? (dataset_size - rank + w - 1) / w : 0;
    s->total_size = dataset_size;
    dg_sampler_set_epoch(s, 0);
    return DG_OK;
}

void dg_sampler_set_epoch(dg_sampler *s, int64_t epoch) {
    DG_ASSERT(s && s->perm && s->indices);
    int64_t n = s->dataset_size;
    s->epoch = epoch;
    for (int64_t i = 0; i < n; i++) s->perm[i] = i;
    if (s->shuffle) {
        /* Seeded by seed + epoch, like torch's generator.manual_seed(seed + epoch). */
        uint64_t x = s->seed + (uint64_t)epoch;
        perm_rng r;
        for (int k = 0; k < 4; k++) r.s[k] = splitmix64(&x);
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)rng_below(&r, (uint64_t)i + 1);
            int64_t t = s->perm[i];
            s->perm[i] = s->perm[j];
            s->perm[j] = t;
        }
    }
    /* Padding repeats the permutation from its start (cyclically when the
     * padding is longer than n); rank r takes every world_size-th index. */
    for (int64_t k = 0; k < s->num_samples; k++)
        s->indices[k] = s->perm[(s->rank + k * s->world_size) % n];
}

void dg_sampler_free(dg_sampler *s) {
    if (!s) return;
    free(s->indices);
    free(s->perm);
    memset(s, 0, sizeof *s);
}

/* ---- loader ------------------------------------------------------------- */

dg_status dg_loader_init(dg_loader *l, const dg_dataset *ds, dg_sampler *sampler,
                         int64_t batch_size, bool drop_last) {
    DG_ASSERT(l);
    memset(l, 0, sizeof *l);
    if (!ds) return dg_set_error("dg_loader_init: no dataset");
    if (dg_dataset_check(ds)) return DG_ERR;
    if (!sampler || !sampler->indices)
        return dg_set_error("dg_loader_init: no sampler (call dg_sampler_init first)");
    if (sampler->dataset_size != ds->n)
        return dg_set_error("dg_loader_init: sampler covers %lld samples but the dataset has %lld",
                            (long long)sampler->dataset_size, (long long)ds->n);
    if (batch_size < 1)
        return dg_set_error("dg_loader_init: batch_size %lld: need at least 1",
                            (long long)batch_size);
    l->ds = ds;
    l->sampler = sampler;
    l->batch_size = batch_size;
    l->drop_last = drop_last;
    l->scale = 1.0f / 255.0f;
    l->shift = 0.0f;
    l->pos = 0;
    l->buf_rows = batch_size < sampler->num_samples ? batch_size : sampler->num_samples;
    if (l->buf_rows < 1) l->buf_rows = 1;
    l->xbuf = malloc((size_t)(l->buf_rows * ds->sample_size) * sizeof(float));
    l->ybuf = malloc((size_t)l->buf_rows * sizeof(int32_t));
    if (!l->xbuf || !l->ybuf) {
        dg_loader_free(l);
        return dg_set_error("dg_loader_init: out of memory for a batch of %lld",
                            (long long)batch_size);
    }
    return DG_OK;
}

static void loader_unpin(dg_loader *l) {
    if (!l->pin[0]) return;
    const dg_backend *be = dg_backend_get((dg_device)l->pin_device);
    for (int k = 0; k < 2; k++) {
        be->stream.free_host(l->pin[k]);   /* waits for the stream: no copy still reads it */
        be->stream.event_free(l->pin_ev[k]);
        l->pin[k] = l->pin_ev[k] = NULL;
    }
}

void dg_loader_free(dg_loader *l) {
    if (!l) return;
    loader_unpin(l);
    free(l->xbuf);
    free(l->ybuf);
    memset(l, 0, sizeof *l);
}

int64_t dg_loader_num_batches(const dg_loader *l) {
    DG_ASSERT(l && l->sampler);
    int64_t n = l->sampler->num_samples, b = l->batch_size;
    return l->drop_last ? n / b : (n + b - 1) / b;
}

void dg_loader_start_epoch(dg_loader *l, int64_t epoch) {
    DG_ASSERT(l && l->sampler);
    dg_sampler_set_epoch(l->sampler, epoch);
    l->pos = 0;
}

/* Size of the next batch (0 at the end of the epoch). */
static int64_t loader_next_size(const dg_loader *l) {
    int64_t left = l->sampler->num_samples - l->pos;
    if (left <= 0) return 0;
    if (left < l->batch_size) return l->drop_last ? 0 : left;
    return l->batch_size;
}

/* Pixels to floats. The default is exactly ToTensor()'s pixel / 255 (not
 * pixel * (1/255), which differs for some values). */
DG_HOT static void convert_pixels(float *restrict dst, const uint8_t *restrict px, int64_t n,
                                  bool to_tensor, float scale, float shift) {
    if (to_tensor) {
        for (int64_t j = 0; j < n; j++) dst[j] = (float)px[j] / 255.0f;
    } else {
        for (int64_t j = 0; j < n; j++) dst[j] = (float)px[j] * scale + shift;
    }
}

int64_t dg_loader_next_host(dg_loader *l, float *x, int32_t *y) {
    DG_ASSERT(l && l->ds && l->sampler && x && y);
    int64_t b = loader_next_size(l);
    if (b == 0) {
        l->pos = l->sampler->num_samples;
        return 0;
    }
    const dg_dataset *ds = l->ds;
    int64_t ss = ds->sample_size;
    bool to_tensor = l->scale == 1.0f / 255.0f && l->shift == 0.0f;
    bool pixels = !ds->get && !ds->features;
    for (int64_t i = 0; i < b; i++) {
        int64_t idx = l->sampler->indices[l->pos + i];
        DG_ASSERT(idx >= 0 && idx < ds->n);
        if (pixels) {
            convert_pixels(x + i * ss, ds->images + idx * ss, ss, to_tensor, l->scale, l->shift);
            y[i] = ds->labels[idx];
        } else if (dg_dataset_get(ds, idx, x + i * ss, y + i)) {
            return -1;
        }
    }
    l->pos += b;
    return b;
}

/* Pinned staging for be's device, made once (true when available). */
static bool loader_pin(dg_loader *l, const dg_backend *be) {
    if (l->pin[0]) {
        if (l->pin_device == (int)be->device) return true;
        loader_unpin(l);                  /* used with another device before */
    }
    if (!be->stream.alloc_host || !be->stream.event_new) return false;
    size_t bytes = (size_t)(l->buf_rows * l->ds->sample_size) * sizeof(float) +
                   (size_t)l->buf_rows * sizeof(int32_t);
    for (int k = 0; k < 2; k++) {
        l->pin[k] = be->stream.alloc_host(bytes);
        if (!l->pin[k]) {                 /* fall back to pageable staging */
            if (k == 1) be->stream.free_host(l->pin[0]);
            l->pin[0] = NULL;
            dg_clear_error();
            return false;
        }
    }
    l->pin_ev[0] = be->stream.event_new();
    l->pin_ev[1] = be->stream.event_new();
    l->pin_next = 0;
    l->pin_device = (int)be->device;
    return true;
}

int64_t dg_loader_next(dg_loader *l, dg_ctx *ctx, bool flatten, dg_tensor **x, dg_tensor **y) {
    DG_ASSERT(l && ctx && x && y);
    *x = *y = NULL;
    int64_t b = loader_next_size(l);
    DG_ASSERT(b <= l->buf_rows);
    int64_t pos0 = l->pos;
    if (b == 0) {
        l->pos = l->sampler->num_samples;
        return 0;
    }
    const dg_dataset *ds = l->ds;
    int64_t shape[DG_MAX_DIMS];
    int nd;
    shape[0] = b;
    if (flatten || ds->ndim_sample == 1) {
        shape[1] = ds->sample_size;
        nd = 2;
    } else if (ds->ndim_sample == 2) {
        shape[1] = 1;
        shape[2] = ds->sample_shape[0];
        shape[3] = ds->sample_shape[1];
        nd = 4;
    } else {
        for (int i = 0; i < ds->ndim_sample; i++) shape[1 + i] = ds->sample_shape[i];
        nd = 1 + ds->ndim_sample;
    }
    int64_t yshape[1] = {b};
    if (dg_ctx_device(ctx) == DG_CPU) {   /* straight into the arena tensors */
        *x = dg_tensor_new(ctx, DG_F32, nd, shape);
        *y = *x ? dg_tensor_new(ctx, DG_I32, 1, yshape) : NULL;
        if (*x && *y && dg_loader_next_host(l, (*x)->data, (*y)->data) < 0) *x = *y = NULL;
    } else {                              /* staged in host memory */
        const dg_backend *be = dg_backend_get(dg_ctx_device(ctx));
        float *xh = l->xbuf;
        int32_t *yh = l->ybuf;
        void *ev = NULL;
        if (loader_pin(l, be)) {          /* pinned: the upload runs async */
            int k = l->pin_next;
            l->pin_next ^= 1;
            ev = l->pin_ev[k];
            be->stream.event_wait(ev);           /* the upload two batches back is done */
            xh = l->pin[k];
            yh = (int32_t *)(void *)(xh + l->buf_rows * ds->sample_size);
        }
        if (dg_loader_next_host(l, xh, yh) >= 0) {
            *x = dg_tensor_from(ctx, DG_F32, nd, shape, xh);
            *y = *x ? dg_tensor_from(ctx, DG_I32, 1, yshape, yh) : NULL;
        }
        if (ev) be->stream.event_record(ev);
    }
    if (!*x || !*y) {
        if (!dg_has_error()) dg_set_error("dg_loader_next: could not make the batch tensors");
        *x = *y = NULL;
        l->pos = pos0;
        return -1;
    }
    return b;
}
