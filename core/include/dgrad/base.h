/* dgrad/base.h - status codes, error messages and the always-on assert.
 *
 * Two kinds of errors:
 *  - bad input from users or the environment (files, flags, shapes, MPI
 *    setup): the function returns DG_ERR (or NULL) and records a one-line
 *    message that the caller reads with dg_last_error();
 *  - broken internal invariants: DG_ASSERT prints file and line and aborts,
 *    in every build type.
 * Library code never calls exit().
 */
#ifndef DGRAD_BASE_H
#define DGRAD_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DG_OK = 0,
    DG_ERR = -1,
} dg_status;

#if defined(__GNUC__)
#define DG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DG_PRINTF(a, b)
#endif

/* Record the error message for this thread (one line, no trailing newline).
 * The first error since dg_clear_error() wins, so the root cause survives a
 * chain of NULL-propagating calls. Always returns DG_ERR. */
dg_status dg_set_error(const char *fmt, ...) DG_PRINTF(1, 2);
/* The recorded message, or "" if none. Valid until the next set/clear. */
const char *dg_last_error(void);
void dg_clear_error(void);
bool dg_has_error(void);

/* Internal: prints "dgrad: assertion failed: EXPR (file:line)" and aborts. */
void dg_assert_fail(const char *expr, const char *file, int line);

/* Always-on assert for internal invariants. Never put side effects the
 * program relies on inside it for readability's sake, even though it is
 * never compiled out. */
#define DG_ASSERT(x) \
    do { if (!(x)) dg_assert_fail(#x, __FILE__, __LINE__); } while (0)

/* Library version. */
#define DG_VERSION_MAJOR 0
#define DG_VERSION_MINOR 1
#define DG_VERSION_PATCH 0
const char *dg_version(void);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_BASE_H */
