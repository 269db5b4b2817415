#include "dgrad/base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char g_err[1024];
static _Thread_local bool g_has_err;

dg_status dg_set_error(const char *fmt, ...) {
    if (g_has_err) return DG_ERR;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    g_has_err = true;
    return DG_ERR;
}

const char *dg_last_error(void) { return g_has_err ? g_err : ""; }
void dg_clear_error(void) { g_has_err = false; g_err[0] = '\0'; }
bool dg_has_error(void) { return g_has_err; }

void dg_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "dgrad: assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}

const char *dg_version(void) { return "0.1.0"; }
