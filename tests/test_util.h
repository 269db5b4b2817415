/* test_util.h - small helpers shared by the tests.
 *
 * Each CHECK prints "file:line: ..." with the values it compared and sets
 * the failure flag; it does not stop the test. A test's main() ends with
 * `return dgt_report("name");`, which prints a summary and returns the exit
 * status (0 when every check passed).
 */
#ifndef DGRAD_TEST_UTIL_H
#define DGRAD_TEST_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/base.h"
#include "dgrad/tensor.h"   /* DG_MAX_DIMS */

/* Number of failed checks so far in this program. */
static inline int *dgt_failures(void) {
    static int n;
    return &n;
}

static inline void dgt_fail(const char *file, int line, const char *fmt, ...)
    DG_PRINTF(3, 4);

static inline void dgt_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s:%d: FAIL: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    const char *err = dg_last_error();
    if (err[0]) fprintf(stderr, " [dg_last_error: %s]", err);
    fputc('\n', stderr);
    fflush(stderr);
    (*dgt_failures())++;
}

#define CHECK(cond) \
    do { if (!(cond)) dgt_fail(__FILE__, __LINE__, "%s", #cond); } while (0)

/* CHECK with a printf-style explanation. */
#define CHECKF(cond, ...) \
    do { if (!(cond)) dgt_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)

#define CHECK_EQ_INT(a, b) \
    do { \
        long long dgt_a_ = (long long)(a), dgt_b_ = (long long)(b); \
        if (dgt_a_ != dgt_b_) \
            dgt_fail(__FILE__, __LINE__, "%s == %s: %lld vs %lld", #a, #b, dgt_a_, dgt_b_); \
    } while (0)

/* |a - b| <= atol + rtol * |b| (b is the reference). */
static inline bool dgt_close(double a, double b, double atol, double rtol) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return fabs(a - b) <= atol + rtol * fabs(b);
}

#define CHECK_NEAR(a, b, atol, rtol) \
    do { \
        double dgt_a_ = (double)(a), dgt_b_ = (double)(b); \
        if (!dgt_close(dgt_a_, dgt_b_, (atol), (rtol))) \
            dgt_fail(__FILE__, __LINE__, \
                     "%s ~= %s: %.9g vs %.9g (diff %.3g, atol %g, rtol %g)", \
                     #a, #b, dgt_a_, dgt_b_, fabs(dgt_a_ - dgt_b_), \
                     (double)(atol), (double)(rtol)); \
    } while (0)

/* A pointer that must not be NULL; the message shows dg_last_error(). */
#define CHECK_NOT_NULL(p) \
    do { if ((p) == NULL) dgt_fail(__FILE__, __LINE__, "%s is NULL", #p); } while (0)

#define CHECK_CONTAINS(s, sub) \
    do { \
        const char *dgt_s_ = (s), *dgt_sub_ = (sub); \
        if (!dgt_s_ || !strstr(dgt_s_, dgt_sub_)) \
            dgt_fail(__FILE__, __LINE__, "%s contains \"%s\": got \"%s\"", #s, dgt_sub_, \
                     dgt_s_ ? dgt_s_ : "(null)"); \
    } while (0)

/* Max abs and rel error of got against ref over n values; returns the
 * number of values outside atol + rtol * |ref|. */
typedef struct {
    double max_abs, max_rel;
    int64_t worst;      /* index of the worst value by excess over tolerance */
    int64_t bad;
} dgt_cmp;

static inline dgt_cmp dgt_compare(const float *got, const float *ref, int64_t n,
                                  double atol, double rtol) {
    dgt_cmp c = {0, 0, -1, 0};
    double worst_excess = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i], d = fabs(g - r);
        if (isnan(g) != isnan(r)) d = INFINITY;        /* one NaN: off by any tolerance */
        else if (isnan(g) || g == r) d = 0;            /* both NaN, or equal infinities */
        double rel = d / fmax(fabs(r), 1e-12);
        if (d > c.max_abs) c.max_abs = d;
        if (fabs(r) > 0 && rel > c.max_rel) c.max_rel = rel;
        double excess = isinf(d) ? INFINITY : d - (atol + rtol * fabs(r));
        if (excess > worst_excess) { worst_excess = excess; c.worst = i; }
        if (excess > 0) c.bad++;
    }
    return c;
}

/* ---- deterministic values, independent of the engine's RNG -------------------- */

/* xorshift64*: each test seeds its own state. */
typedef struct { uint64_t s; } dgt_rng;

static inline double dgt_uniform(dgt_rng *r) {   /* [0, 1) */
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (double)((r->s * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

static inline double dgt_normal(dgt_rng *r) {    /* Box-Muller, N(0, 1) */
    double u1 = dgt_uniform(r), u2 = dgt_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef enum {
    DGT_N,      /* normal(0, 1) */
    DGT_AWAY,   /* |x| in [0.5, 1.5), random sign: denominators */
    DGT_KINK,   /* |x| in [0.1, 1.1), random sign: relu inputs */
    DGT_POS,    /* [0.2, 2): log inputs */
} dgt_vkind;

static inline void dgt_fill(dgt_rng *r, float *v, int64_t n, dgt_vkind k) {
    for (int64_t i = 0; i < n; i++) {
        double s = dgt_uniform(r) < 0.5 ? -1.0 : 1.0;
        switch (k) {
        case DGT_N: v[i] = (float)dgt_normal(r); break;
        case DGT_AWAY: v[i] = (float)(s * (0.5 + dgt_uniform(r))); break;
        case DGT_KINK: v[i] = (float)(s * (0.1 + dgt_uniform(r))); break;
        case DGT_POS: v[i] = (float)(0.2 + 1.8 * dgt_uniform(r)); break;
        }
    }
}

/* "2,3,4" -> shape; "" -> 0-dim. Returns ndim. */
static inline int dgt_parse_shape(const char *s, int64_t *shape) {
    int n = 0;
    while (s && *s) {
        char *end;
        long long v = strtoll(s, &end, 10);
        DG_ASSERT(end != s && n < DG_MAX_DIMS);
        shape[n++] = v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static inline int64_t dgt_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

/* A synthetic MNIST-like batch, a function of (salt, step): rows x cols
 * pixels, about a fifth of them in [0, 1], the rest 0; labels uniform in
 * [0, classes). */
static inline void dgt_sparse_batch(uint32_t salt, int step, int rows, int cols, int classes,
                                    float *x, int32_t *y) {
    uint32_t k = (uint32_t)step * 2654435761u + salt;
    for (int i = 0; i < rows * cols; i++) {
        k = k * 1103515245u + 12345u;
        x[i] = (k >> 9) % 5 == 0 ? (float)((k >> 8) & 0xff) / 255.0f : 0.0f;
    }
    for (int i = 0; i < rows; i++) {
        k = k * 1103515245u + 12345u;
        y[i] = (int32_t)((k >> 16) % (uint32_t)classes);
    }
}

static inline int dgt_report(const char *name) {
    int n = *dgt_failures();
    if (n) printf("%s: %d check(s) FAILED\n", name, n);
    else printf("%s: all checks passed\n", name);
    return n ? 1 : 0;
}

#endif /* DGRAD_TEST_UTIL_H */
