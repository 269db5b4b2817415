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
        if (isnan(g) != isnan(r)) d = INFINITY;
        else if (isnan(g)) d = 0;
        double rel = d / fmax(fabs(r), 1e-12);
        if (d > c.max_abs) c.max_abs = d;
        if (fabs(r) > 0 && rel > c.max_rel) c.max_rel = rel;
        double excess = d - (atol + rtol * fabs(r));
        if (excess > worst_excess) { worst_excess = excess; c.worst = i; }
        if (excess > 0) c.bad++;
    }
    return c;
}

static inline int dgt_report(const char *name) {
    int n = *dgt_failures();
    if (n) printf("%s: %d check(s) FAILED\n", name, n);
    else printf("%s: all checks passed\n", name);
    return n ? 1 : 0;
}

#endif /* DGRAD_TEST_UTIL_H */
