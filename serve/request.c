/* request.c - dgserve's request bodies: JSON parsing and validation of
 * KServe v2 infer and TF Serving predict bodies against the model's input
 * shape, without HTTP or a model (tests/fuzz/fuzz_request.c calls it). */
#define _POSIX_C_SOURCE 200809L
#include "request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dgs_fail(http_error *e, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    for (char *p = e->msg; *p; p++)   /* URLs may hold any bytes: keep the JSON valid */
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) *p = '?';
    e->code = code;
    return code;
}


static int64_t shape_size(const int64_t *shape, int nd) {
    int64_t s = 1;
    for (int i = 0; i < nd; i++) s *= shape[i];
    return s;
}

/* ---- request bodies ------------------------------------------------------------------ */

/* Appends the numbers of j (a number or nested arrays of them) to x (at
 * most cap); counts all of them in *n. false (message naming path) on a
 * value that is not a number. */
static bool flatten(json_t *j, float *x, int64_t cap, int64_t *n, char *path, size_t plen, http_error *e,
                    int depth) {
    if (json_is_number(j)) {
        if (*n < cap) x[*n] = (float)json_number_value(j);
        (*n)++;
        return true;
    }
    if (!json_is_array(j) || depth > 8) {
        dgs_fail(e, 400, "%s: not a number or an array of numbers", path);
        return false;
    }
    size_t base = strlen(path);
    for (size_t i = 0; i < json_array_size(j); i++) {
        snprintf(path + base, plen - base, "[%zu]", i);
        if (!flatten(json_array_get(j, i), x, cap, n, path, plen, e, depth + 1)) return false;
    }
    path[base] = '\0';
    return true;
}

const char *dgs_shape_text(const int64_t *shape, int ndim, bool batch, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[%s", batch ? "-1" : "");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", (batch || i) ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* Parses a KServe v2 infer body against model m into *x (malloc'd) and *n. */
static int parse_v2(json_t *root, const int64_t *ms, int mnd, int64_t max_request_batch, float **x, int64_t *n, http_error *e) {
    int64_t size = shape_size(ms, mnd);
    json_t *inputs = json_object_get(root, "inputs");
    if (!inputs) return dgs_fail(e, 400, "inputs: missing (an array with one tensor)");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1)
        return dgs_fail(e, 400, "inputs: must be an array of one tensor (the model has one input)");
    json_t *t = json_array_get(inputs, 0);
    if (!json_is_object(t)) return dgs_fail(e, 400, "inputs[0]: must be an object");
    json_t *name = json_object_get(t, "name");
    if (name && !json_is_string(name)) return dgs_fail(e, 400, "inputs[0].name: must be a string");
    json_t *dt = json_object_get(t, "datatype");
    if (!json_is_string(dt)) return dgs_fail(e, 400, "inputs[0].datatype: missing or not a string (\"FP32\")");
    if (strcmp(json_string_value(dt), "FP32"))
        return dgs_fail(e, 400, "inputs[0].datatype: must be \"FP32\", got \"%s\"", json_string_value(dt));
    json_t *shape = json_object_get(t, "shape");
    if (!json_is_array(shape) || json_array_size(shape) < 1)
        return dgs_fail(e, 400, "inputs[0].shape: missing or not an array of integers");
    size_t nd = json_array_size(shape);
    int64_t sh[DG_MAX_DIMS + 1];
    char b1[160], b2[160];
    for (size_t i = 0; i < nd && i <= DG_MAX_DIMS; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 1)
            return dgs_fail(e, 400, "inputs[0].shape[%zu]: must be a positive integer", i);
        sh[i] = json_integer_value(d);
    }
    bool fits = nd == (size_t)mnd + 1;
    for (int i = 0; fits && i < mnd; i++) fits = sh[i + 1] == ms[i];
    size_t k = (size_t)snprintf(b1, sizeof b1, "[");
    for (size_t i = 0; i < nd && i <= DG_MAX_DIMS && k < sizeof b1; i++)
        k += (size_t)snprintf(b1 + k, sizeof b1 - k, "%s%lld", i ? ", " : "", (long long)sh[i]);
    if (k < sizeof b1) snprintf(b1 + k, sizeof b1 - k, "%s]", nd > DG_MAX_DIMS + 1 ? ", ..." : "");
    if (!fits) {
        return dgs_fail(e, 400, "inputs[0].shape: %s does not fit the model's input %s (batch first)", b1,
                    dgs_shape_text(ms, mnd, true, b2, sizeof b2));
    }
    *n = sh[0];
    if (*n > max_request_batch)
        return dgs_fail(e, 400, "inputs[0].shape[0]: batch %lld exceeds this server's limit of %lld", (long long)*n,
                    (long long)max_request_batch);
    json_t *data = json_object_get(t, "data");
    if (!json_is_array(data)) return dgs_fail(e, 400, "inputs[0].data: missing or not an array");
    int64_t want = *n * size, got = 0;
    *x = malloc((size_t)want * sizeof **x);
    if (!*x) return dgs_fail(e, 500, "out of memory for %lld floats", (long long)want);
    char path[256] = "inputs[0].data";
    if (!flatten(data, *x, want, &got, path, sizeof path, e, 0)) return e->code;
    if (got != want)
        return dgs_fail(e, 400, "inputs[0].data: has %lld values, shape %s needs %lld", (long long)got, b1,
                    (long long)want);
    return 0;
}

/* TF Serving: {"instances": [sample, ...]}, each sample the model's input shape. */
static int parse_v1(json_t *root, const int64_t *ms, int mnd, int64_t max_request_batch, float **x, int64_t *n, http_error *e) {
    (void)mnd;
    int64_t size = shape_size(ms, mnd);
    json_t *inst = json_object_get(root, "instances");
    if (!inst) return dgs_fail(e, 400, "instances: missing (a list of inputs, one per sample)");
    if (!json_is_array(inst) || json_array_size(inst) < 1) return dgs_fail(e, 400, "instances: must be a non-empty array");
    *n = (int64_t)json_array_size(inst);
    if (*n > max_request_batch)
        return dgs_fail(e, 400, "instances: %lld instances exceed this server's limit of %lld", (long long)*n,
                    (long long)max_request_batch);
    *x = malloc((size_t)(*n * size) * sizeof **x);
    if (!*x) return dgs_fail(e, 500, "out of memory");
    for (int64_t i = 0; i < *n; i++) {
        char path[256];
        snprintf(path, sizeof path, "instances[%lld]", (long long)i);
        int64_t got = 0;
        if (!flatten(json_array_get(inst, (size_t)i), *x + i * size, size, &got, path, sizeof path, e, 0))
            return e->code;
        if (got != size)
            return dgs_fail(e, 400, "instances[%lld]: has %lld values, the model takes %lld per instance", (long long)i,
                        (long long)got, (long long)size);
    }
    return 0;
}

int dgs_parse_request(const char *body, size_t len, bool v2, const int64_t *shape, int nd,
                      int64_t max_request_batch, json_t **root_out, float **x, int64_t *n, http_error *e) {
    *root_out = NULL;
    *x = NULL;
    *n = 0;
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", len, 0, &je);
    if (!root) return dgs_fail(e, 400, "body: not valid JSON (line %d, column %d: %s)", je.line, je.column, je.text);
    *root_out = root;
    if (!json_is_object(root)) return dgs_fail(e, 400, "body: must be a JSON object");
    return v2 ? parse_v2(root, shape, nd, max_request_batch, x, n, e)
              : parse_v1(root, shape, nd, max_request_batch, x, n, e);
}
