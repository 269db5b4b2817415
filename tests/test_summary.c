/* test_summary.c - TensorBoard event files (dgrad/summary.h).
 *
 * Writes scalars and histograms to a temporary logdir, then reads the file
 * back with code independent of the writer: its own bitwise CRC32C, its own
 * protobuf wire-format decoder and its own copy of TensorFlow's bucket
 * limits. Checks the TFRecord framing and CRCs, the Event fields, tags,
 * steps, values and histogram buckets.
 *
 *   test_summary               the test
 *   test_summary --write DIR   only write the standard events into DIR (for
 *                              tests/test_summary_tb.py, which reads them
 *                              with TensorBoard itself)
 * The standard events: scalar "train/loss" = 1 / (s + 1) at steps s = 0..19,
 * scalar "train/lr" = 0.25 at step 0 and 0.125 at step 10; histogram
 * "weights/w" at steps 0 and 1 over hist_value(i, step) for i < 1000, plus a
 * NaN (skipped); histogram "empty" at step 3 with no values.
 */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/summary.h"
#include "test_util.h"

#include <dirent.h>
#include <float.h>
#include <time.h>
#include <unistd.h>

#define NHIST 1000

static float hist_value(int i, int step) {
    /* spread over several decades, both signs, and exact zeros */
    if (i % 97 == 0) return 0.0f;
    float mag = powf(10.0f, (float)(i % 9) - 4.0f) * (1.0f + (float)(i % 13) / 7.0f);
    return (i % 2 ? -mag : mag) * (float)(step + 1);
}

static int write_standard(const char *logdir, char *path, size_t path_size) {
    dg_summary_writer *w;
    if (dg_summary_writer_open(&w, logdir)) return 1;
    snprintf(path, path_size, "%s", dg_summary_writer_path(w));
    int bad = 0;
    for (int s = 0; s < 20; s++) bad |= dg_summary_add_scalar(w, "train/loss", 1.0f / (float)(s + 1), s) != DG_OK;
    bad |= dg_summary_add_scalar(w, "train/lr", 0.25f, 0) != DG_OK;
    bad |= dg_summary_add_scalar(w, "train/lr", 0.125f, 10) != DG_OK;
    float v[NHIST + 1];
    for (int step = 0; step < 2; step++) {
        for (int i = 0; i < NHIST; i++) v[i] = hist_value(i, step);
        v[NHIST] = NAN;
        bad |= dg_summary_add_histogram(w, "weights/w", v, NHIST + 1, step) != DG_OK;
    }
    bad |= dg_summary_add_histogram(w, "empty", NULL, 0, 3) != DG_OK;
    bad |= dg_summary_flush(w) != DG_OK;
    bad |= dg_summary_close(w) != DG_OK;
    return bad;
}

/* ---- an independent reader ------------------------------------------ */

static uint32_t crc32c_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

static uint32_t unmask(uint32_t m) {
    uint32_t r = m - 0xa282ead8u;
    return (r >> 17) | (r << 15);
}

static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

typedef struct {
    const uint8_t *p, *end;
    bool bad;
} rd;

static uint64_t varint(rd *r) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) break;
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) return v;
    }
    r->bad = true;
    return 0;
}

/* next field: returns false at the end; *sub is set for length-delimited */
static bool field(rd *r, int *num, int *wt, uint64_t *val, rd *sub) {
    if (r->bad || r->p >= r->end) return false;
    uint64_t key = varint(r);
    *num = (int)(key >> 3);
    *wt = (int)(key & 7);
    switch (*wt) {
    case 0: *val = varint(r); break;
    case 1:
        if (r->end - r->p < 8) { r->bad = true; return false; }
        *val = get_le(r->p, 8);
        r->p += 8;
        break;
    case 5:
        if (r->end - r->p < 4) { r->bad = true; return false; }
        *val = get_le(r->p, 4);
        r->p += 4;
        break;
    case 2: {
        uint64_t n = varint(r);
        if (r->bad || (uint64_t)(r->end - r->p) < n) { r->bad = true; return false; }
        *sub = (rd){ r->p, r->p + n, false };
        r->p += n;
        break;
    }
    default: r->bad = true; return false;
    }
    return !r->bad;
}

static double as_double(uint64_t v) {
    double d;
    memcpy(&d, &v, 8);
    return d;
}

static float as_float(uint64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct {
    double min, max, num, sum, sum_squares;
    double limit[2000], count[2000];
    int nlimit, ncount;
} histo;

typedef struct {
    double wall_time;
    int64_t step;
    char file_version[64];
    bool has_summary;
    int nvalues;
    char tag[64];
    int kind;           /* 2 simple_value, 5 histo */
    float simple_value;
    histo h;
} event;

static int packed_doubles(rd sub, double *out, int cap) {
    int n = 0;
    while (sub.end - sub.p >= 8 && n < cap) {
        out[n++] = as_double(get_le(sub.p, 8));
        sub.p += 8;
    }
    return sub.p == sub.end ? n : -1;
}

static bool parse_histo(rd r, histo *h) {
    int num, wt;
    uint64_t v;
    rd sub;
    while (field(&r, &num, &wt, &v, &sub)) {
        if (num >= 1 && num <= 5 && wt == 1) {
            double d = as_double(v);
            if (num == 1) h->min = d;
            else if (num == 2) h->max = d;
            else if (num == 3) h->num = d;
            else if (num == 4) h->sum = d;
            else h->sum_squares = d;
        } else if (num == 6 && wt == 2) {
            h->nlimit = packed_doubles(sub, h->limit, 2000);
        } else if (num == 7 && wt == 2) {
            h->ncount = packed_doubles(sub, h->count, 2000);
        } else {
            return false;
        }
    }
    return !r.bad && h->nlimit >= 0 && h->ncount >= 0;
}

static bool parse_value(rd r, event *e) {
    int num, wt;
    uint64_t v;
    rd sub;
    while (field(&r, &num, &wt, &v, &sub)) {
        if (num == 1 && wt == 2) {
            size_t n = (size_t)(sub.end - sub.p);
            if (n >= sizeof e->tag) return false;
            memcpy(e->tag, sub.p, n);
            e->tag[n] = '\0';
        } else if (num == 2 && wt == 5) {
            e->kind = 2;
            e->simple_value = as_float(v);
        } else if (num == 5 && wt == 2) {
            e->kind = 5;
            if (!parse_histo(sub, &e->h)) return false;
        } else {
            return false;
        }
    }
    return !r.bad;
}

static bool parse_event(rd r, event *e) {
    memset(e, 0, sizeof *e);
    int num, wt;
    uint64_t v;
    rd sub;
    while (field(&r, &num, &wt, &v, &sub)) {
        if (num == 1 && wt == 1) {
            e->wall_time = as_double(v);
        } else if (num == 2 && wt == 0) {
            e->step = (int64_t)v;
        } else if (num == 3 && wt == 2) {
            size_t n = (size_t)(sub.end - sub.p);
            if (n >= sizeof e->file_version) return false;
            memcpy(e->file_version, sub.p, n);
        } else if (num == 5 && wt == 2) {
            e->has_summary = true;
            int vnum, vwt;
            uint64_t vv;
            rd vsub;
            while (field(&sub, &vnum, &vwt, &vv, &vsub)) {
                if (vnum != 1 || vwt != 2 || !parse_value(vsub, e)) return false;
                e->nvalues++;
            }
            if (sub.bad) return false;
        } else {
            return false;
        }
    }
    return !r.bad;
}

/* Reads every record, checking framing and CRCs. Returns the count or -1. */
static int read_events(const char *path, event *out, int cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    static uint8_t data[1 << 16];
    int n = 0;
    uint8_t head[12], tail[4];
    size_t got;
    while ((got = fread(head, 1, 12, f)) == 12) {
        uint64_t len = get_le(head, 8);
        CHECKF(unmask((uint32_t)get_le(head + 8, 4)) == crc32c_bitwise(head, 8),
               "record %d: bad length CRC", n);
        if (len > sizeof data || fread(data, 1, len, f) != len || fread(tail, 1, 4, f) != 4) {
            CHECKF(0, "record %d: truncated (length %llu)", n, (unsigned long long)len);
            break;
        }
        CHECKF(unmask((uint32_t)get_le(tail, 4)) == crc32c_bitwise(data, len), "record %d: bad data CRC", n);
        if (n < cap && !parse_event((rd){ data, data + len, false }, &out[n]))
            CHECKF(0, "record %d: cannot decode the Event", n);
        n++;
    }
    CHECKF(got == 0 && feof(f), "trailing %zu bytes after the last record", got);
    fclose(f);
    return n;
}

/* TensorFlow's default limits, computed here independently of summary.c */
static int tf_limits(double *lim) {
    double pos[1000];
    int k = 0;
    for (double v = 1.0e-12; v < 1.0e20; v *= 1.1) pos[k++] = v;
    int n = 0;
    lim[n++] = -DBL_MAX;
    for (int i = k - 1; i >= 0; i--) lim[n++] = -pos[i];
    lim[n++] = 0.0;
    for (int i = 0; i < k; i++) lim[n++] = pos[i];
    lim[n++] = DBL_MAX;
    return n;
}

static void check_histogram(const histo *h, int step) {
    double lim[2000];
    int nlim = tf_limits(lim);
    CHECK_EQ_INT(nlim, 1551);
    double mn = INFINITY, mx = -INFINITY, sum = 0, sq = 0;
    for (int i = 0; i < NHIST; i++) {
        double x = hist_value(i, step);
        mn = fmin(mn, x);
        mx = fmax(mx, x);
        sum += x;
        sq += x * x;
    }
    CHECK_NEAR(h->num, NHIST, 0, 0);   /* the NaN is skipped */
    CHECK_NEAR(h->min, mn, 0, 0);
    CHECK_NEAR(h->max, mx, 0, 0);
    CHECK_NEAR(h->sum, sum, 0, 1e-12);
    CHECK_NEAR(h->sum_squares, sq, 0, 1e-12);
    CHECK_EQ_INT(h->nlimit, h->ncount);
    /* every bucket: its count is the number of values in [previous limit,
     * limit); each limit is one of TensorFlow's; runs of empty buckets are
     * collapsed, so no two empty buckets are adjacent */
    double total = 0, left = -INFINITY;
    int j = 0;
    for (int b = 0; b < h->nlimit; b++) {
        while (j < nlim && lim[j] != h->limit[b]) j++;
        CHECKF(j < nlim, "bucket %d: limit %g is not a TensorFlow limit", b, h->limit[b]);
        int cnt = 0;
        for (int i = 0; i < NHIST; i++) {
            double x = hist_value(i, step);
            cnt += x >= left && x < h->limit[b];
        }
        CHECKF(cnt == (int)h->count[b], "step %d bucket %d [%g, %g): count %g, want %d", step, b, left,
               h->limit[b], h->count[b], cnt);
        CHECKF(!(b > 0 && h->count[b] == 0 && h->count[b - 1] == 0), "bucket %d: two empty buckets in a row", b);
        total += h->count[b];
        left = h->limit[b];
    }
    CHECK_NEAR(total, NHIST, 0, 0);
    CHECK_NEAR(h->limit[h->nlimit - 1], DBL_MAX, 0, 0);
}

static void check_file(const char *path) {
    static event ev[64];
    int n = read_events(path, ev, 64);
    CHECK_EQ_INT(n, 1 + 20 + 2 + 2 + 1);
    if (n != 26) return;
    double now = (double)time(NULL);
    CHECK_CONTAINS(ev[0].file_version, "brain.Event:2");
    CHECK(!ev[0].has_summary);
    for (int i = 0; i < n; i++) {
        CHECKF(fabs(ev[i].wall_time - now) < 600, "event %d: wall_time %f, now %f", i, ev[i].wall_time, now);
        if (i > 0) CHECKF(ev[i].has_summary && ev[i].nvalues == 1, "event %d: one value", i);
    }
    for (int s = 0; s < 20; s++) {
        event *e = &ev[1 + s];
        CHECK_EQ_INT(e->step, s);
        CHECKF(!strcmp(e->tag, "train/loss"), "tag %s", e->tag);
        CHECK_EQ_INT(e->kind, 2);
        CHECK(e->simple_value == 1.0f / (float)(s + 1));
    }
    CHECK(!strcmp(ev[21].tag, "train/lr") && ev[21].step == 0 && ev[21].simple_value == 0.25f);
    CHECK(!strcmp(ev[22].tag, "train/lr") && ev[22].step == 10 && ev[22].simple_value == 0.125f);
    for (int step = 0; step < 2; step++) {
        event *e = &ev[23 + step];
        CHECKF(!strcmp(e->tag, "weights/w"), "tag %s", e->tag);
        CHECK_EQ_INT(e->step, step);
        CHECK_EQ_INT(e->kind, 5);
        check_histogram(&e->h, step);
    }
    event *e = &ev[25];
    CHECK(!strcmp(e->tag, "empty") && e->step == 3 && e->kind == 5);
    CHECK(e->h.num == 0 && e->h.nlimit == 1 && e->h.count[0] == 0);
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[4096];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (unlink(p) != 0) remove_tree(p);
    }
    closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv) {
    char path[4096];
    if (argc == 3 && !strcmp(argv[1], "--write")) {
        if (write_standard(argv[2], path, sizeof path)) {
            fprintf(stderr, "test_summary: %s\n", dg_last_error());
            return 1;
        }
        printf("%s\n", path);
        return 0;
    }
    uint8_t check[] = "123456789";
    CHECK(crc32c_bitwise(check, 9) == 0xE3069283u);   /* the CRC-32C check value */

    char tmp[] = "/tmp/dg_summary_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    char logdir[4200];
    snprintf(logdir, sizeof logdir, "%s/runs/a", tmp);   /* parents are created */
    dg_summary_writer *w = NULL;
#ifndef DG_TEST_HAVE_PROTOBUF
    CHECK(dg_summary_writer_open(&w, logdir) == DG_ERR && w == NULL);
    CHECK_CONTAINS(dg_last_error(), "built without protobuf-c");
    dg_clear_error();
    (void)check_file;
    (void)write_standard;
#else
    CHECK(write_standard(logdir, path, sizeof path) == 0);
    CHECK_CONTAINS(path, "/runs/a/events.out.tfevents.");
    check_file(path);

    /* a second writer in the same directory gets its own file */
    CHECK(dg_summary_writer_open(&w, logdir) == DG_OK);
    CHECK(w && strcmp(dg_summary_writer_path(w), path) != 0);
    dg_clear_error();
    CHECK(dg_summary_add_scalar(w, "", 1.0f, 0) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "empty tag");
    dg_clear_error();
    CHECK(dg_summary_add_histogram(w, "h", NULL, 3, 0) == DG_ERR);
    dg_clear_error();
    CHECK(dg_summary_close(w) == DG_OK);
    CHECK(dg_summary_close(NULL) == DG_OK);

    /* a logdir that is a file */
    char file[4300];
    snprintf(file, sizeof file, "%s/plain", tmp);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    w = (dg_summary_writer *)1;
    CHECK(dg_summary_writer_open(&w, file) == DG_ERR && w == NULL);
    CHECK_CONTAINS(dg_last_error(), "not a directory");
    CHECK_CONTAINS(dg_last_error(), file);
    dg_clear_error();
    snprintf(file, sizeof file, "%s/plain/sub", tmp);
    CHECK(dg_summary_writer_open(&w, file) == DG_ERR && w == NULL);
    dg_clear_error();
#endif
    remove_tree(tmp);
    return dgt_report("test_summary");
}
