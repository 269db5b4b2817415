/* request.h - parsing and validation of dgserve's inference bodies
 * (KServe v2 infer, TF Serving predict), free of HTTP and of the model:
 * callable from a fuzzer (tests/fuzz/fuzz_request.c). */
#ifndef DGSERVE_REQUEST_H
#define DGSERVE_REQUEST_H

#include "dgrad/tensor.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int code;
    char msg[512];
    const char *retry_after;
} http_error;

/* Sets e (message printf-style, control and non-ASCII bytes turned to '?')
 * and returns code. */
int dgs_fail(http_error *e, int code, const char *fmt, ...) DG_PRINTF(3, 4);

/* "[-1, 784]" (batch true) or "[784]" into buf. */
const char *dgs_shape_text(const int64_t *shape, int ndim, bool batch, char *buf, size_t n);

/* Parses body (len bytes, not NUL-terminated) as a v2 (v2 true) or TF
 * Serving body for a model whose input has shape[0..nd) per sample. 0 and
 * *x (n * prod(shape) floats, malloc'd) and *n on success; else the HTTP
 * code, with e set. *root (the parsed JSON, or NULL) and *x are the
 * caller's to free (json_decref, free) either way. */
int dgs_parse_request(const char *body, size_t len, bool v2, const int64_t *shape, int nd,
                      int64_t max_request_batch, json_t **root, float **x, int64_t *n, http_error *e);

#endif
