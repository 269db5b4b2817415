/* csv.c - CSV files as datasets (dg_dataset_load_csv, dgrad/data.h): one
 * sample per line, a label column and numeric features, plain or gzip
 * (zlib's gz reader takes both). */
#include "dgrad/data.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct {
    gzFile f;
    const char *path;
    char *line;
    size_t cap;
    int64_t lineno;
} csv_reader;

/* The next line without its end-of-line, or NULL at the end of the file
 * (*err set on a read error or an overlong line). */
static char *next_line(csv_reader *r, dg_status *err) {
    size_t len = 0;
    *err = DG_OK;
    for (;;) {
        if (r->cap - len < 2) {
            size_t cap = r->cap ? r->cap * 2 : 4096;
            if (cap > ((size_t)1 << 30)) {
                *err = dg_set_error("%s:%lld: line longer than 1 GiB", r->path, (long long)r->lineno + 1);
                return NULL;
            }
            char *l = realloc(r->line, cap);
            if (!l) {
                *err = dg_set_error("%s: out of memory reading line %lld", r->path, (long long)r->lineno + 1);
                return NULL;
            }
            r->line = l;
            r->cap = cap;
        }
        if (!gzgets(r->f, r->line + len, (int)(r->cap - len))) {
            int zerr;
            const char *msg = gzerror(r->f, &zerr);
            if (zerr != Z_OK && zerr != Z_BUF_ERROR) {
                *err = dg_set_error("%s: read error: %s", r->path, msg);
                return NULL;
            }
            if (len == 0) return NULL;
            break;
        }
        len += strlen(r->line + len);
        if (len > 0 && r->line[len - 1] == '\n') break;
    }
    r->lineno++;
    while (len > 0 && (r->line[len - 1] == '\n' || r->line[len - 1] == '\r')) r->line[--len] = '\0';
    return r->line;
}

/* Parses the fields of line into vals (up to cap). Returns the number of
 * fields, or -1 with *bad_col set to the first field that is not a finite
 * number. */
static int64_t parse_fields(char *line, double *vals, int64_t cap, int64_t *bad_col) {
    int64_t n = 0;
    char *p = line;
    for (;;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        while (*end == ' ' || *end == '\t') end++;
        if (end == p || errno == ERANGE || !isfinite(v) || (*end != ',' && *end != '\0')) {
            *bad_col = n;
            return -1;
        }
        if (n < cap) vals[n] = v;
        n++;
        if (*end == '\0') return n;
        p = end + 1;
    }
}

/* Counts the fields of a line (commas + 1). */
static int64_t count_fields(const char *line) {
    int64_t n = 1;
    for (const char *p = line; *p; p++) n += *p == ',';
    return n;
}

static dg_status set_shape(dg_dataset *out, const char *path, int64_t nfeat, int ndim_sample,
                           const int64_t *sample_shape) {
    if (ndim_sample == 0) {
        out->ndim_sample = 1;
        out->sample_shape[0] = nfeat;
    } else {
        if (ndim_sample < 0 || ndim_sample >= DG_MAX_DIMS || !sample_shape)
            return dg_set_error("dg_dataset_load_csv: %s: ndim_sample %d: need 0 to %d dims", path, ndim_sample,
                                DG_MAX_DIMS - 1);
        int64_t numel = 1;
        for (int i = 0; i < ndim_sample; i++) {
            out->sample_shape[i] = sample_shape[i];
            numel *= sample_shape[i] > 0 ? sample_shape[i] : 0;
        }
        if (numel != nfeat)
            return dg_set_error("dg_dataset_load_csv: %s: rows have %lld features, sample_shape holds %lld", path,
                                (long long)nfeat, (long long)numel);
        out->ndim_sample = ndim_sample;
    }
    out->sample_size = nfeat;
    return DG_OK;
}

/* One data line into the dataset's row `row` (grown as needed). */
static dg_status add_row(dg_dataset *out, csv_reader *r, double *vals, int64_t ncol, int label_col,
                         int num_classes, int64_t *cap_rows) {
    int64_t bad = 0, got = parse_fields(r->line, vals, ncol, &bad);
    if (got < 0)
        return dg_set_error("%s:%lld: column %lld is not a finite number", r->path, (long long)r->lineno,
                            (long long)bad + 1);
    if (got != ncol)
        return dg_set_error("%s:%lld: %lld columns, the first row has %lld", r->path, (long long)r->lineno,
                            (long long)got, (long long)ncol);
    double lab = vals[label_col];
    if (lab != floor(lab) || lab < 0 || lab >= num_classes)
        return dg_set_error("%s:%lld: label %g in column %d is not an integer in [0, %d)", r->path,
                            (long long)r->lineno, lab, label_col + 1, num_classes);
    int64_t nfeat = ncol - 1;
    if (out->n == *cap_rows) {
        int64_t cap = *cap_rows ? *cap_rows * 2 : 1024;
        float *f = realloc(out->features, (size_t)(cap * nfeat) * sizeof(float));
        if (f) out->features = f;
        int32_t *l = f ? realloc(out->labels, (size_t)cap * sizeof(int32_t)) : NULL;
        if (l) out->labels = l;
        if (!f || !l) return dg_set_error("%s: out of memory at line %lld", r->path, (long long)r->lineno);
        *cap_rows = cap;
    }
    float *dst = out->features + out->n * nfeat;
    for (int64_t c = 0, k = 0; c < ncol; c++)
        if (c != label_col) dst[k++] = (float)vals[c];
    out->labels[out->n++] = (int32_t)lab;
    return DG_OK;
}

dg_status dg_dataset_load_csv(const char *path, int label_col, int num_classes, int ndim_sample,
                              const int64_t *sample_shape, dg_dataset *out) {
    DG_ASSERT(out != NULL);
    memset(out, 0, sizeof *out);
    if (!path) return dg_set_error("dg_dataset_load_csv: no path");
    if (num_classes < 1) return dg_set_error("dg_dataset_load_csv: %s: num_classes %d: need at least 1", path, num_classes);
    if (label_col < 0) return dg_set_error("dg_dataset_load_csv: %s: label column %d: need >= 0", path, label_col);
    csv_reader r = { .f = gzopen(path, "rb"), .path = path };
    if (!r.f) return dg_set_error("%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    dg_status s = DG_OK;
    double *vals = NULL;
    int64_t ncol = 0, cap_rows = 0;
    char *line;
    while ((line = next_line(&r, &s)) != NULL) {
        if (!line[0]) continue;   /* blank lines */
        if (ncol == 0) {          /* the first row sets the width */
            ncol = count_fields(line);
            if (ncol < 2 || label_col >= ncol) {
                s = dg_set_error("%s:%lld: %lld columns: need the label (column %d) and at least one feature",
                                 path, (long long)r.lineno, (long long)ncol, label_col + 1);
                break;
            }
            if (!(vals = malloc((size_t)ncol * sizeof *vals))) {
                s = dg_set_error("%s: out of memory", path);
                break;
            }
            if ((s = set_shape(out, path, ncol - 1, ndim_sample, sample_shape))) break;
            int64_t bad;
            if (r.lineno == 1 && parse_fields(line, vals, ncol, &bad) < 0) continue;   /* a header */
        }
        if ((s = add_row(out, &r, vals, ncol, label_col, num_classes, &cap_rows))) break;
    }
    free(vals);
    free(r.line);
    gzclose(r.f);
    if (!s && out->n == 0) s = dg_set_error("%s: no data rows", path);
    if (s) {
        dg_dataset_free(out);
        return DG_ERR;
    }
    out->num_classes = num_classes;
    out->name = path;
    return DG_OK;
}
