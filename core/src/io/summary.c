/* summary.c - TensorBoard event files: TFRecord framing around Event
 * messages serialized by protobuf-c (core/proto/dg_event.proto). */
#define _XOPEN_SOURCE 700
#include "dgrad/summary.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifdef DG_SUMMARY_HAVE_PROTOBUF
#include "dg_event.pb-c.h"

struct dg_summary_writer {
    FILE *f;
    char *path;
    bool failed;                /* a write failed; later calls fail too */
    uint32_t crc_table[256];
    uint8_t *buf;               /* serialized Event, grows */
    size_t cap;
    double *limits;             /* TensorFlow's default bucket limits */
    size_t nlimits;
    double *counts;             /* per bucket, then the collapsed output */
    double *out_limits, *out_counts;
};

/* ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ------------ */

static void crc32c_init(uint32_t table[256]) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
}

static uint32_t crc32c(const uint32_t table[256], const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* TFRecord's masking, so that a CRC of data holding CRCs stays strong */
static uint32_t masked_crc(const uint32_t table[256], const uint8_t *p, size_t n) {
    uint32_t c = crc32c(table, p, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static void put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- files ------------------------------------------------------------ */

/* mkdir -p */
static dg_status make_dirs(const char *dir) {
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    if (!p) return dg_set_error("dg_summary_writer_open: out of memory");
    memcpy(p, dir, n + 1);
    dg_status st = DG_OK;
    for (size_t i = 1; i <= n && st == DG_OK; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        struct stat sb;
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            st = dg_set_error("dg_summary_writer_open: cannot create directory '%s': %s", p, strerror(errno));
        else if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode))
            st = dg_set_error("dg_summary_writer_open: '%s' exists and is not a directory", p);
        p[i] = c;
    }
    free(p);
    return st;
}

static double wall_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static dg_status write_failed(dg_summary_writer *w) {
    w->failed = true;
    return dg_set_error("dg_summary: writing '%s' failed: %s", w->path, strerror(errno));
}

/* One TFRecord holding the serialized event. */
static dg_status write_event(dg_summary_writer *w, const Dg__Event *ev) {
    if (w->failed) return dg_set_error("dg_summary: an earlier write to '%s' failed", w->path);
    size_t n = dg__event__get_packed_size(ev);
    if (n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < n) cap *= 2;
        uint8_t *b = realloc(w->buf, cap);
        if (!b) return dg_set_error("dg_summary: out of memory");
        w->buf = b;
        w->cap = cap;
    }
    size_t packed = dg__event__pack(ev, w->buf);
    DG_ASSERT(packed == n);
    uint8_t head[12], tail[4];
    put_le64(head, (uint64_t)n);
    put_le32(head + 8, masked_crc(w->crc_table, head, 8));
    put_le32(tail, masked_crc(w->crc_table, w->buf, n));
    if (fwrite(head, 1, sizeof head, w->f) != sizeof head || fwrite(w->buf, 1, n, w->f) != n ||
        fwrite(tail, 1, sizeof tail, w->f) != sizeof tail)
        return write_failed(w);
    return DG_OK;
}

/* TensorFlow's Histogram::InitDefaultBuckets: [-DBL_MAX, -1e20.., -1e-12,
 * 0, 1e-12, .., 1e20.., DBL_MAX], growing by 10% each step. */
static size_t default_limits(double *out) {
    size_t k = 0;   /* positive limits below 1e20 */
    for (double v = 1.0e-12; v < 1.0e20; v *= 1.1) k++;
    if (out) {
        double v = 1.0e-12;
        for (size_t j = 0; j < k; j++, v *= 1.1) {
            out[k - j] = -v;       /* out[1..k]: negatives, largest magnitude first */
            out[k + 2 + j] = v;    /* out[k+2..2k+1]: positives */
        }
        out[0] = -DBL_MAX;
        out[k + 1] = 0.0;
        out[2 * k + 2] = DBL_MAX;
    }
    return 2 * k + 3;
}

dg_status dg_summary_writer_open(dg_summary_writer **out, const char *logdir) {
    *out = NULL;
    if (!logdir || !logdir[0]) return dg_set_error("dg_summary_writer_open: empty logdir");
    if (make_dirs(logdir)) return DG_ERR;
    dg_summary_writer *w = calloc(1, sizeof *w);
    if (!w) return dg_set_error("dg_summary_writer_open: out of memory");
    crc32c_init(w->crc_table);
    w->nlimits = default_limits(NULL);
    w->limits = malloc(sizeof(double) * w->nlimits);
    w->counts = malloc(sizeof(double) * w->nlimits);
    w->out_limits = malloc(sizeof(double) * w->nlimits);
    w->out_counts = malloc(sizeof(double) * w->nlimits);
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0 || !host[0]) strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    size_t plen = strlen(logdir) + strlen(host) + 96;
    w->path = malloc(plen);
    if (!w->limits || !w->counts || !w->out_limits || !w->out_counts || !w->path) {
        dg_summary_close(w);
        return dg_set_error("dg_summary_writer_open: out of memory");
    }
    default_limits(w->limits);
    /* TF2's name, with a counter so that two writers never share a file */
    long long t = (long long)time(NULL);
    for (int k = 0; !w->f; k++) {
        snprintf(w->path, plen, "%s/events.out.tfevents.%010lld.%s.%ld.%d", logdir, t, host,
                 (long)getpid(), k);
        w->f = fopen(w->path, "wbx");
        if (!w->f && (errno != EEXIST || k > 1000)) {
            dg_set_error("dg_summary_writer_open: cannot create '%s': %s", w->path, strerror(errno));
            dg_summary_close(w);
            return DG_ERR;
        }
    }
    Dg__Event ev = DG__EVENT__INIT;
    ev.wall_time = wall_time();
    ev.what_case = DG__EVENT__WHAT_FILE_VERSION;
    ev.file_version = "brain.Event:2";
    if (write_event(w, &ev) || fflush(w->f) != 0) {
        if (!w->failed) write_failed(w);
        dg_summary_close(w);
        return DG_ERR;
    }
    *out = w;
    return DG_OK;
}

const char *dg_summary_writer_path(const dg_summary_writer *w) { return w->path; }

static dg_status write_value(dg_summary_writer *w, Dg__Summary__Value *v, int64_t step) {
    Dg__Summary__Value *values[1] = { v };
    Dg__Summary s = DG__SUMMARY__INIT;
    s.n_value = 1;
    s.value = values;
    Dg__Event ev = DG__EVENT__INIT;
    ev.wall_time = wall_time();
    ev.step = step;
    ev.what_case = DG__EVENT__WHAT_SUMMARY;
    ev.summary = &s;
    return write_event(w, &ev);
}

static dg_status check_tag(const dg_summary_writer *w, const char *fn, const char *tag) {
    if (!w) return dg_set_error("%s: NULL writer", fn);
    if (!tag || !tag[0]) return dg_set_error("%s: empty tag", fn);
    return DG_OK;
}

dg_status dg_summary_add_scalar(dg_summary_writer *w, const char *tag, float value, int64_t step) {
    if (check_tag(w, "dg_summary_add_scalar", tag)) return DG_ERR;
    Dg__Summary__Value v = DG__SUMMARY__VALUE__INIT;
    v.tag = (char *)tag;
    v.value_case = DG__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
    v.simple_value = value;
    return write_value(w, &v, step);
}

/* first limit > x (std::upper_bound), as TensorFlow picks the bucket */
static size_t bucket_of(const double *lim, size_t n, double x) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lim[mid] > x) hi = mid;
        else lo = mid + 1;
    }
    return lo < n ? lo : n - 1;   /* x == DBL_MAX or +inf: the last bucket */
}

dg_status dg_summary_add_histogram(dg_summary_writer *w, const char *tag, const float *values,
                                   size_t n, int64_t step) {
    if (check_tag(w, "dg_summary_add_histogram", tag)) return DG_ERR;
    if (n && !values) return dg_set_error("dg_summary_add_histogram: NULL values for '%s'", tag);
    Dg__HistogramProto h = DG__HISTOGRAM_PROTO__INIT;
    memset(w->counts, 0, sizeof(double) * w->nlimits);
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double x = values[i];
        if (isnan(x)) continue;
        w->counts[bucket_of(w->limits, w->nlimits, x)] += 1.0;
        if (x < lo) lo = x;
        if (x > hi) hi = x;
        h.num += 1.0;
        h.sum += x;
        h.sum_squares += x * x;
    }
    h.min = h.num > 0 ? lo : 0.0;
    h.max = h.num > 0 ? hi : 0.0;
    /* each run of empty buckets becomes one bucket ending at the run's end */
    size_t k = 0;
    for (size_t i = 0; i < w->nlimits;) {
        double end = w->limits[i], c = w->counts[i];
        i++;
        if (c <= 0.0)
            while (i < w->nlimits && w->counts[i] <= 0.0) end = w->limits[i++];
        w->out_limits[k] = end;
        w->out_counts[k++] = c;
    }
    h.n_bucket_limit = h.n_bucket = k;
    h.bucket_limit = w->out_limits;
    h.bucket = w->out_counts;
    Dg__Summary__Value v = DG__SUMMARY__VALUE__INIT;
    v.tag = (char *)tag;
    v.value_case = DG__SUMMARY__VALUE__VALUE_HISTO;
    v.histo = &h;
    return write_value(w, &v, step);
}

dg_status dg_summary_flush(dg_summary_writer *w) {
    if (!w) return dg_set_error("dg_summary_flush: NULL writer");
    if (w->failed) return dg_set_error("dg_summary: an earlier write to '%s' failed", w->path);
    if (fflush(w->f) != 0) return write_failed(w);
    return DG_OK;
}

dg_status dg_summary_close(dg_summary_writer *w) {
    if (!w) return DG_OK;
    dg_status st = DG_OK;
    if (w->f) {
        if (w->failed) st = dg_set_error("dg_summary: an earlier write to '%s' failed", w->path);
        else if (fflush(w->f) != 0) st = write_failed(w);
        if (fclose(w->f) != 0 && st == DG_OK) st = write_failed(w);
    }
    free(w->path);
    free(w->buf);
    free(w->limits);
    free(w->counts);
    free(w->out_limits);
    free(w->out_counts);
    free(w);
    return st;
}

#else /* !DG_SUMMARY_HAVE_PROTOBUF */

struct dg_summary_writer {
    int unused;
};

static dg_status no_protobuf(const char *fn) {
    return dg_set_error("%s: dgrad was built without protobuf-c (TensorBoard summaries need it)", fn);
}

dg_status dg_summary_writer_open(dg_summary_writer **w, const char *logdir) {
    (void)logdir;
    *w = NULL;
    return no_protobuf("dg_summary_writer_open");
}

const char *dg_summary_writer_path(const dg_summary_writer *w) {
    (void)w;
    return "";
}

dg_status dg_summary_add_scalar(dg_summary_writer *w, const char *tag, float value, int64_t step) {
    (void)w, (void)tag, (void)value, (void)step;
    return no_protobuf("dg_summary_add_scalar");
}

dg_status dg_summary_add_histogram(dg_summary_writer *w, const char *tag, const float *values,
                                   size_t n, int64_t step) {
    (void)w, (void)tag, (void)values, (void)n, (void)step;
    return no_protobuf("dg_summary_add_histogram");
}

dg_status dg_summary_flush(dg_summary_writer *w) {
    (void)w;
    return no_protobuf("dg_summary_flush");
}

dg_status dg_summary_close(dg_summary_writer *w) {
    (void)w;
    return DG_OK;
}

#endif
