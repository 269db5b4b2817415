/* request.c - dgserve's request bodies: a one-pass strict JSON reader for
 * KServe v2 infer and TF Serving predict bodies, validated against the
 * model's input shape, without HTTP or a model (tests/fuzz/fuzz_request.c
 * calls it).
 *
 * A batch-1 MNIST body is 784 numbers in 4.5 KB. Building a JSON tree
 * for it (a node, a malloc and a strtod with a locale lookup per number)
 * cost more than the model; here the numbers of "data" (or "instances")
 * go straight into the float buffer, and the rest of the body is checked
 * and skipped. Syntax errors are reported with line and column. */
#define _POSIX_C_SOURCE 200809L
#include "request.h"

#include <math.h>
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

const char *dgs_shape_text(const int64_t *shape, int ndim, bool batch, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[%s", batch ? "-1" : "");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", (batch || i) ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

size_t dgs_format_float(char *buf, float v) {
    return (size_t)snprintf(buf, 16, "%.9g", (double)v);
}

/* ---- the reader ------------------------------------------------------------------------ */

enum { MAX_DEPTH = 64, MAX_TENSOR_DEPTH = 8 };

typedef struct {
    const char *s, *p, *end;
    http_error *e;
    int depth;
} reader;

/* A syntax error at the current position. */
static int bad_json(reader *r, const char *what) {
    int line = 1, col = 1;
    for (const char *q = r->s; q < r->p && q < r->end; q++) {
        if (*q == '\n') line++, col = 1;
        else col++;
    }
    return dgs_fail(r->e, 400, "body: not valid JSON (line %d, column %d: %s)", line, col, what);
}

static int peek(reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
    return r->p < r->end ? (unsigned char)*r->p : -1;
}

static bool eat(reader *r, char c) {
    if (peek(r) != (unsigned char)c) return false;
    r->p++;
    return true;
}

static int hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Length of the UTF-8 sequence at p (< end), 0 when it is not well formed
 * (overlong, a surrogate, beyond U+10FFFF, truncated). */
static int utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    int n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if (end - p < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf) return 0;
    return n;
}

/* A string at r->p ('"'): its text between the quotes in *txt, *len. */
static int read_string(reader *r, const char **txt, size_t *len) {
    if (peek(r) != '"') return bad_json(r, "expected a string");
    const char *p = ++r->p;
    while (p < r->end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) {
            r->p = p;
            return bad_json(r, "control character in a string");
        } else if (c == '\\') {
            if (p + 1 >= r->end) break;
            char x = p[1];
            if (x == 'u') {
                int u = p + 6 <= r->end ? hex4(p + 2) : -1;
                if (u >= 0xdc00 && u <= 0xdfff) u = -1;   /* a low surrogate alone */
                if (u >= 0xd800 && u <= 0xdbff) {       /* a high one: a low must follow */
                    int l = p + 12 <= r->end && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8) : -1;
                    if (l < 0xdc00 || l > 0xdfff) u = -1;
                    else p += 6;
                }
                if (u < 0) {
                    r->p = p;
                    return bad_json(r, "invalid \\u escape");
                }
                p += 6;
            } else if (strchr("\"\\/bfnrt", x) && x) {
                p += 2;
            } else {
                r->p = p;
                return bad_json(r, "invalid escape");
            }
        } else if (c >= 0x80) {
            int n = utf8_len((const unsigned char *)p, (const unsigned char *)r->end);
            if (!n) {
                r->p = p;
                return bad_json(r, "invalid UTF-8 in a string");
            }
            p += n;
        } else {
            p++;
        }
    }
    if (p >= r->end) {
        r->p = r->end;
        return bad_json(r, "unterminated string");
    }
    *txt = r->p;
    *len = (size_t)(p - r->p);
    r->p = p + 1;
    return 0;
}

/* Whether a string's text (escapes and all) reads as the ASCII word w. */
static bool text_is(const char *t, size_t len, const char *w) {
    size_t i = 0;
    for (; *w; w++) {
        if (i >= len) return false;
        int c = (unsigned char)t[i];
        if (c == '\\') {   /* read_string checked the escape */
            char x = t[i + 1];
            if (x == 'u') c = hex4(t + i + 2), i += 6;
            else c = x == 'b' ? '\b' : x == 'f' ? '\f' : x == 'n' ? '\n' : x == 'r' ? '\r' : x == 't' ? '\t' : x, i += 2;
        } else {
            i++;
        }
        if (c != (unsigned char)*w) return false;
    }
    return i == len;
}

static const double pow10_exact[23] = { 1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };

/* A number at r->p, to *v (as strtod reads it); *is_int and *iv when it
 * is an integer (no fraction or exponent) that fits int64. */
static int read_number(reader *r, double *v, bool *is_int, int64_t *iv) {
    const char *p = r->p, *start = p;
    bool neg = false;
    if (p < r->end && *p == '-') neg = true, p++;
    if (p >= r->end || *p < '0' || *p > '9') return bad_json(r, "invalid number");
    uint64_t m = 0;       /* the first 19 significant digits */
    int digits = 0, dropped = 0, exp10 = 0;
    bool frac = false, expo = false;
    if (*p == '0') {
        p++;
    } else {
        for (; p < r->end && *p >= '0' && *p <= '9'; p++) {
            if (digits < 19) m = m * 10 + (uint64_t)(*p - '0'), digits++;
            else dropped++;
        }
    }
    if (p < r->end && *p == '.') {
        frac = true;
        p++;
        if (p >= r->end || *p < '0' || *p > '9') {
            r->p = p;
            return bad_json(r, "invalid number");
        }
        for (; p < r->end && *p >= '0' && *p <= '9'; p++) {
            if (digits == 0 && *p == '0') exp10--;   /* leading zeros of 0.000x */
            else if (digits < 19) m = m * 10 + (uint64_t)(*p - '0'), digits++, exp10--;
            else dropped++;
        }
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        expo = true;
        p++;
        bool eneg = false;
        if (p < r->end && (*p == '+' || *p == '-')) eneg = *p == '-', p++;
        if (p >= r->end || *p < '0' || *p > '9') {
            r->p = p;
            return bad_json(r, "invalid number");
        }
        int e = 0;
        for (; p < r->end && *p >= '0' && *p <= '9'; p++)
            if (e < 100000) e = e * 10 + (*p - '0');
        exp10 += eneg ? -e : e;
    }
    *is_int = !frac && !expo && dropped == 0 && (m <= (uint64_t)INT64_MAX || (neg && m == (uint64_t)INT64_MAX + 1));
    if (*is_int) *iv = neg ? (int64_t)(0 - m) : (int64_t)m;
    if (dropped == 0 && m < (1ull << 53) && exp10 >= -22 && exp10 <= 22) {
        /* exact: m and 10^|e| are doubles, one rounding (Clinger's fast path) */
        double d = (double)m;
        d = exp10 < 0 ? d / pow10_exact[-exp10] : d * pow10_exact[exp10];
        *v = neg ? -d : d;
    } else {
        char buf[128], *big = NULL, *t = buf;
        size_t n = (size_t)(p - start);
        if (n >= sizeof buf) {
            big = malloc(n + 1);
            if (!big) return dgs_fail(r->e, 500, "out of memory");
            t = big;
        }
        memcpy(t, start, n);
        t[n] = '\0';
        *v = strtod(t, NULL);   /* the C locale: dgserve never calls setlocale */
        free(big);
    }
    r->p = p;
    return 0;
}

/* Checks and skips any value. */
static int skip_value(reader *r) {
    int c = peek(r);
    if (c == '"') {
        const char *t;
        size_t n;
        return read_string(r, &t, &n);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        double v;
        bool ii;
        int64_t iv;
        return read_number(r, &v, &ii, &iv);
    }
    if (c == '[' || c == '{') {
        if (++r->depth > MAX_DEPTH) return bad_json(r, "nested too deep");
        r->p++;
        char close = c == '[' ? ']' : '}';
        if (!eat(r, close)) {
            for (;;) {
                int err;
                if (c == '{') {
                    const char *t;
                    size_t n;
                    if ((err = read_string(r, &t, &n))) return err;
                    if (!eat(r, ':')) return bad_json(r, "expected ':'");
                }
                if ((err = skip_value(r))) return err;
                if (eat(r, close)) break;
                if (!eat(r, ',')) return bad_json(r, c == '[' ? "expected ',' or ']'" : "expected ',' or '}'");
            }
        }
        r->depth--;
        return 0;
    }
    static const char *const words[] = { "true", "false", "null" };
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(r->end - r->p) >= n && !memcmp(r->p, words[i], n)) {
            r->p += n;
            return 0;
        }
    }
    return bad_json(r, c < 0 ? "unexpected end of the body" : "unexpected character");
}

/* An object at r->p ('{'): field(r, key text, key length, u) reads each
 * member's value (after the ':'); the first error stops it. */
typedef int (*field_fn)(reader *r, const char *k, size_t kl, void *u);

static int read_object(reader *r, field_fn field, void *u) {
    if (++r->depth > MAX_DEPTH) return bad_json(r, "nested too deep");
    r->p++;   /* '{' */
    if (!eat(r, '}')) {
        for (;;) {
            const char *k;
            size_t kl;
            int err = read_string(r, &k, &kl);
            if (err) return err;
            if (!eat(r, ':')) return bad_json(r, "expected ':'");
            if ((err = field(r, k, kl, u))) return err;
            if (eat(r, '}')) break;
            if (!eat(r, ',')) return bad_json(r, "expected ',' or '}'");
        }
    }
    r->depth--;
    return 0;
}

/* ---- the tensor's numbers -------------------------------------------------------------- */

typedef struct {
    float *x;
    int64_t n;       /* numbers seen (all of them, stored or not) */
    int64_t cap;     /* floats allocated */
    int64_t limit;   /* at most this many are stored */
    int64_t room;    /* at most this many are allocated (>= limit) */
} floats;

static bool floats_put(floats *f, float v) {
    if (f->n < f->limit) {
        if (f->n == f->cap) {
            int64_t nc = f->cap ? f->cap * 2 : 1024;
            if (nc > f->room) nc = f->room;
            float *x = realloc(f->x, (size_t)nc * sizeof *x);
            if (!x) return false;
            f->x = x;
            f->cap = nc;
        }
        f->x[f->n] = v;
    }
    f->n++;
    return true;
}

/* "inputs[0].data[3][1]": prefix and the indices of the levels above. */
static int bad_element(reader *r, const char *prefix, const int64_t *idx, int depth, const char *what) {
    char path[256];
    size_t k = (size_t)snprintf(path, sizeof path, "%s", prefix);
    for (int i = 0; i < depth && k < sizeof path; i++)
        k += (size_t)snprintf(path + k, sizeof path - k, "[%lld]", (long long)idx[i]);
    return dgs_fail(r->e, 400, "%s: %s", path, what);
}

/* A number or nested arrays of numbers, appended to f in order. */
static int read_numbers(reader *r, floats *f, const char *prefix, int64_t *idx, int depth) {
    int c = peek(r);
    if (c == '[') {
        if (depth >= MAX_TENSOR_DEPTH) return bad_element(r, prefix, idx, depth, "nested deeper than 8 levels");
        r->p++;
        if (eat(r, ']')) return 0;
        for (idx[depth] = 0;; idx[depth]++) {
            int err = read_numbers(r, f, prefix, idx, depth + 1);
            if (err) return err;
            if (eat(r, ']')) return 0;
            if (!eat(r, ',')) return bad_json(r, "expected ',' or ']'");
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        double v;
        bool ii;
        int64_t iv;
        int err = read_number(r, &v, &ii, &iv);
        if (err) return err;
        float x = (float)v;
        if (!isfinite(x)) return bad_element(r, prefix, idx, depth, "out of the FP32 range");
        if (!floats_put(f, x)) return dgs_fail(r->e, 500, "out of memory");
        return 0;
    }
    if (c == '{' || c == '"' || c == 't' || c == 'f' || c == 'n') {
        const char *at = r->p;
        int err = skip_value(r);   /* a syntax error first, if it is one */
        if (err) return err;
        r->p = at;
        return bad_element(r, prefix, idx, depth, "not a number or an array of numbers");
    }
    return bad_json(r, c < 0 ? "unexpected end of the body" : "unexpected character");
}

static int64_t shape_size(const int64_t *shape, int nd) {
    int64_t s = 1;
    for (int i = 0; i < nd; i++) s *= shape[i];
    return s;
}

/* ---- KServe v2 ----------------------------------------------------------------------- */

typedef struct {
    bool seen, has_name, name_ok, has_dt, dt_ok, has_shape, shape_ok, has_data;
    const char *dt;
    size_t dt_len;
    int64_t sh[DG_MAX_DIMS + 1];
    size_t nd;            /* all dims, even those past DG_MAX_DIMS + 1 */
    size_t bad_dim;       /* the first dim that is not a positive integer */
    floats data;
} tensor;

static int tensor_field(reader *r, const char *k, size_t kl, void *u) {
    tensor *t = u;
    int err = 0;
    if (text_is(k, kl, "name")) {
        t->has_name = true;
        t->name_ok = peek(r) == '"';
        return skip_value(r);
    }
    if (text_is(k, kl, "datatype")) {
        t->has_dt = true;
        t->dt_ok = peek(r) == '"';
        return t->dt_ok ? read_string(r, &t->dt, &t->dt_len) : skip_value(r);
    }
    if (text_is(k, kl, "shape")) {
        t->has_shape = true;
        t->nd = 0;
        t->bad_dim = (size_t)-1;
        t->shape_ok = peek(r) == '[';
        if (!t->shape_ok) return skip_value(r);
        r->p++;
        if (eat(r, ']')) return 0;
        for (;; t->nd++) {
            double v;
            bool ii = false;
            int64_t iv = 0;
            int c = peek(r);
            if (c == '-' || (c >= '0' && c <= '9')) err = read_number(r, &v, &ii, &iv);
            else err = skip_value(r);
            if (err) return err;
            if ((!ii || iv < 1) && t->bad_dim == (size_t)-1) t->bad_dim = t->nd;
            if (t->nd <= DG_MAX_DIMS) t->sh[t->nd] = iv;
            if (eat(r, ']')) break;
            if (!eat(r, ',')) return bad_json(r, "expected ',' or ']'");
        }
        t->nd++;
        return 0;
    }
    if (text_is(k, kl, "data")) {
        if (t->has_data) return dgs_fail(r->e, 400, "inputs[0].data: given twice");
        t->has_data = true;
        if (peek(r) != '[') {
            if ((err = skip_value(r))) return err;
            return dgs_fail(r->e, 400, "inputs[0].data: missing or not an array");
        }
        int64_t idx[MAX_TENSOR_DEPTH];
        return read_numbers(r, &t->data, "inputs[0].data", idx, 0);
    }
    return skip_value(r);   /* parameters, and what we do not know */
}

/* "inputs": [tensor] */
static int read_inputs(reader *r, tensor *t) {
    if (peek(r) != '[') {
        int err = skip_value(r);
        return err ? err : dgs_fail(r->e, 400, "inputs: must be an array of one tensor (the model has one input)");
    }
    if (++r->depth > MAX_DEPTH) return bad_json(r, "nested too deep");
    r->p++;
    int64_t count = 0;
    bool first_object = false;
    if (!eat(r, ']')) {
        for (;; count++) {
            int err;
            if (count == 0 && peek(r) == '{') {
                first_object = true;
                t->seen = true;
                err = read_object(r, tensor_field, t);
            } else {
                err = skip_value(r);
            }
            if (err) return err;
            if (eat(r, ']')) break;
            if (!eat(r, ',')) return bad_json(r, "expected ',' or ']'");
        }
        count++;
    }
    r->depth--;
    if (count != 1) return dgs_fail(r->e, 400, "inputs: must be an array of one tensor (the model has one input)");
    if (!first_object) return dgs_fail(r->e, 400, "inputs[0]: must be an object");
    return 0;
}

static int check_tensor(tensor *t, const int64_t *ms, int mnd, int64_t max_request_batch, dgs_body *out,
                        http_error *e) {
    if (t->has_name && !t->name_ok) return dgs_fail(e, 400, "inputs[0].name: must be a string");
    if (!t->has_dt || !t->dt_ok) return dgs_fail(e, 400, "inputs[0].datatype: missing or not a string (\"FP32\")");
    if (!text_is(t->dt, t->dt_len, "FP32"))
        return dgs_fail(e, 400, "inputs[0].datatype: must be \"FP32\", got \"%.*s\"", (int)(t->dt_len > 64 ? 64 : t->dt_len),
                        t->dt);
    if (!t->has_shape || !t->shape_ok || t->nd < 1)
        return dgs_fail(e, 400, "inputs[0].shape: missing or not an array of integers");
    if (t->bad_dim != (size_t)-1) return dgs_fail(e, 400, "inputs[0].shape[%zu]: must be a positive integer", t->bad_dim);
    bool fits = t->nd == (size_t)mnd + 1;
    for (int i = 0; fits && i < mnd; i++) fits = t->sh[i + 1] == ms[i];
    char b1[160], b2[160];
    size_t k = (size_t)snprintf(b1, sizeof b1, "[");
    for (size_t i = 0; i < t->nd && i <= DG_MAX_DIMS && k < sizeof b1; i++)
        k += (size_t)snprintf(b1 + k, sizeof b1 - k, "%s%lld", i ? ", " : "", (long long)t->sh[i]);
    if (k < sizeof b1) snprintf(b1 + k, sizeof b1 - k, "%s]", t->nd > DG_MAX_DIMS + 1 ? ", ..." : "");
    if (!fits)
        return dgs_fail(e, 400, "inputs[0].shape: %s does not fit the model's input %s (batch first)", b1,
                        dgs_shape_text(ms, mnd, true, b2, sizeof b2));
    int64_t n = t->sh[0];
    if (n > max_request_batch)
        return dgs_fail(e, 400, "inputs[0].shape[0]: batch %lld exceeds this server's limit of %lld", (long long)n,
                        (long long)max_request_batch);
    if (!t->has_data) return dgs_fail(e, 400, "inputs[0].data: missing or not an array");
    int64_t want = n * shape_size(ms, mnd);
    if (t->data.n != want)
        return dgs_fail(e, 400, "inputs[0].data: has %lld values, shape %s needs %lld", (long long)t->data.n, b1,
                        (long long)want);
    out->x = t->data.x;
    out->n = n;
    t->data.x = NULL;
    return 0;
}

typedef struct {
    tensor t;
    bool has_inputs;
    dgs_body *out;
} v2_body;

static int v2_field(reader *r, const char *k, size_t kl, void *u) {
    v2_body *b = u;
    if (text_is(k, kl, "inputs")) {
        if (b->has_inputs) return dgs_fail(r->e, 400, "inputs: given twice");
        b->has_inputs = true;
        return read_inputs(r, &b->t);
    }
    if (text_is(k, kl, "id") && peek(r) == '"') return read_string(r, &b->out->id, &b->out->id_len);
    return skip_value(r);   /* outputs, parameters, ... */
}

static int read_v2(reader *r, const int64_t *ms, int mnd, int64_t max_request_batch, dgs_body *out) {
    int64_t most = max_request_batch * shape_size(ms, mnd);
    v2_body b = { .t = { .data = { .limit = most, .room = most } }, .out = out };
    int err = read_object(r, v2_field, &b);
    if (!err && peek(r) >= 0) err = bad_json(r, "text after the body's object");
    if (!err && !b.has_inputs) err = dgs_fail(r->e, 400, "inputs: missing (an array with one tensor)");
    if (!err) err = check_tensor(&b.t, ms, mnd, max_request_batch, out, r->e);
    free(b.t.data.x);
    if (err) out->id = NULL, out->id_len = 0;
    return err;
}

/* ---- TF Serving ------------------------------------------------------------------- */

/* "instances": [sample, ...], each sample the model's input shape */
static int read_instances(reader *r, int64_t size, int64_t max_request_batch, floats *f, int64_t *count) {
    if (peek(r) != '[') {
        int err = skip_value(r);
        return err ? err : dgs_fail(r->e, 400, "instances: must be a non-empty array");
    }
    if (++r->depth > MAX_DEPTH) return bad_json(r, "nested too deep");
    r->p++;
    if (eat(r, ']')) return dgs_fail(r->e, 400, "instances: must be a non-empty array");
    for (*count = 0;;) {
        if (*count == max_request_batch)
            return dgs_fail(r->e, 400, "instances: more than %lld instances, this server's limit",
                            (long long)max_request_batch);
        char prefix[48];
        snprintf(prefix, sizeof prefix, "instances[%lld]", (long long)*count);
        floats one = { .x = f->x, .n = f->n, .cap = f->cap, .limit = f->n + size, .room = f->room };   /* this sample's room */
        int64_t idx[MAX_TENSOR_DEPTH];
        int64_t start = f->n;
        int err = read_numbers(r, &one, prefix, idx, 0);
        f->x = one.x;
        f->cap = one.cap;
        if (err) return err;
        if (one.n - start != size)
            return dgs_fail(r->e, 400, "instances[%lld]: has %lld values, the model takes %lld per instance",
                            (long long)*count, (long long)(one.n - start), (long long)size);
        f->n = one.n;
        (*count)++;
        if (eat(r, ']')) break;
        if (!eat(r, ',')) return bad_json(r, "expected ',' or ']'");
    }
    r->depth--;
    return 0;
}

typedef struct {
    int64_t size, max_request_batch, count;
    floats f;
    bool has;
} v1_body;

static int v1_field(reader *r, const char *k, size_t kl, void *u) {
    v1_body *b = u;
    if (!text_is(k, kl, "instances")) return skip_value(r);   /* signature_name, ... */
    if (b->has) return dgs_fail(r->e, 400, "instances: given twice");
    b->has = true;
    return read_instances(r, b->size, b->max_request_batch, &b->f, &b->count);
}

static int read_v1(reader *r, const int64_t *ms, int mnd, int64_t max_request_batch, dgs_body *out) {
    int64_t size = shape_size(ms, mnd);
    v1_body b = { .size = size, .max_request_batch = max_request_batch,
                  .f = { .limit = max_request_batch * size, .room = max_request_batch * size } };
    int err = read_object(r, v1_field, &b);
    if (!err && peek(r) >= 0) err = bad_json(r, "text after the body's object");
    if (!err && !b.has) err = dgs_fail(r->e, 400, "instances: missing (a list of inputs, one per sample)");
    if (!err) {
        out->x = b.f.x;
        out->n = b.count;
        b.f.x = NULL;
    }
    free(b.f.x);
    return err;
}

int dgs_parse_request(const char *body, size_t len, bool v2, const int64_t *shape, int nd,
                      int64_t max_request_batch, dgs_body *out, http_error *e) {
    *out = (dgs_body){ 0 };
    reader r = { .s = body ? body : "", .p = body ? body : "", .end = (body ? body : "") + len, .e = e };
    int c = peek(&r);
    if (c != '{') {
        int err = skip_value(&r);   /* a syntax error, or valid JSON of the wrong kind */
        if (!err && peek(&r) >= 0) err = bad_json(&r, "text after the body's value");
        return err ? err : dgs_fail(e, 400, "body: must be a JSON object");
    }
    return v2 ? read_v2(&r, shape, nd, max_request_batch, out) : read_v1(&r, shape, nd, max_request_batch, out);
}
