/* request.h - parsing and validation of dgserve's inference bodies
 * (KServe v2 infer, TF Serving predict), free of HTTP and of the model:
 * callable from a fuzzer (tests/fuzz/fuzz_request.c).
 *
 * The body is read in one pass by a strict JSON (RFC 8259) reader that
 * writes the numbers of the input tensor straight into a float buffer:
 * no tree, no allocation per number. Everything else in the body is
 * checked for syntax (strings, escapes, UTF-8, numbers, nesting) and
 * skipped. */
#ifndef DGSERVE_REQUEST_H
#define DGSERVE_REQUEST_H

#include "dgrad/tensor.h"

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

/* A parsed request. */
typedef struct {
    float *x;            /* n * prod(shape) floats, malloc'd: the caller frees */
    int64_t n;           /* samples */
    const char *id;      /* v2 "id", when a string: its JSON text between the quotes */
    size_t id_len;       /* (escapes kept, valid inside a JSON string), points into body */
} dgs_body;

/* Parses body (len bytes, not NUL-terminated) as a v2 (v2 true) or TF
 * Serving body for a model whose input has shape[0..nd) per sample. 0 and
 * *out on success; else the HTTP code, with e set naming the field, and
 * out->x NULL. */
int dgs_parse_request(const char *body, size_t len, bool v2, const int64_t *shape, int nd,
                      int64_t max_request_batch, dgs_body *out, http_error *e);

/* Appends "%.9g" of v to buf (at least 16 bytes free); returns the bytes
 * written. JSON has no NaN or infinity: the caller checks isfinite. */
size_t dgs_format_float(char *buf, float v);

#endif
