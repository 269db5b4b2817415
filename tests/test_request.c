/* test_request - dgserve's request reader (serve/request.c) on its own:
 *  - numbers: 200000 random values in several notations read to the same
 *    float as (float)strtod (the JSON-tree reader's result), exactly;
 *  - v2 and v1 bodies: values, batch, the id's text, nested instances;
 *  - bad bodies: syntax (with line and column), RFC 8259 strictness
 *    (leading zeros, NaN, bad escapes, lone surrogates, invalid UTF-8,
 *    control characters, trailing text, nesting) and validation errors,
 *    each naming the field. */
#include "request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c, ...)                                                         \
    do {                                                                      \
        if (!(c)) {                                                           \
            failures++;                                                       \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);              \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
        }                                                                     \
    } while (0)

static const int64_t mlp[] = { 4 }, img[] = { 1, 2, 2 };

static int parse(const char *body, bool v2, const int64_t *shape, int nd, dgs_body *b, http_error *e) {
    memset(e, 0, sizeof *e);
    return dgs_parse_request(body, strlen(body), v2, shape, nd, 8, b, e);
}

/* body must fail with code, the message containing want */
static void bad(const char *body, bool v2, int code, const char *want) {
    dgs_body b;
    http_error e;
    int c = parse(body, v2, mlp, 1, &b, &e);
    CHECK(c == code && strstr(e.msg, want) && !b.x, "%s: want %d '%s', got %d '%s'", body, code, want, c, e.msg);
    free(b.x);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void numbers(void) {
    static const char *fmts[] = { "%.9g", "%.6f", "%.17g", "%e", "%.3E", "%.0f", "%.12f", "%.20g" };
    char body[128];
    int tried = 0, wrong = 0;
    for (int i = 0; i < 200000; i++) {
        double v;
        uint64_t u = next();
        if (i % 3 == 0) {   /* any finite float's bits */
            uint32_t bits = (uint32_t)u;
            float f;
            memcpy(&f, &bits, sizeof f);
            if (!isfinite(f)) continue;
            v = f;
        } else if (i % 3 == 1) {   /* pixel-like values */
            v = (double)(u % 256) / 255.0;
        } else {   /* wide range */
            v = ldexp((double)(u >> 11) / 9007199254740992.0, (int)(u % 200) - 100) * ((u >> 8) & 1 ? -1 : 1);
        }
        char num[64];
        snprintf(num, sizeof num, fmts[i % 8], v);
        snprintf(body, sizeof body, "{\"instances\": [[%s, 0, 0, 0]]}", num);
        dgs_body b;
        http_error e;
        float want = (float)strtod(num, NULL);
        int c = parse(body, false, mlp, 1, &b, &e);
        tried++;
        if (!isfinite(want)) {
            if (c != 400) wrong++;
        } else if (c || memcmp(&b.x[0], &want, sizeof want)) {
            if (wrong++ < 5) fprintf(stderr, "number %s: want %.9g, got %s %.9g\n", num, want, e.msg, c ? 0 : b.x[0]);
        }
        free(b.x);
    }
    CHECK(wrong == 0, "%d of %d numbers read differently from strtod", wrong, tried);
    /* long mantissas, exponents at the edges */
    const char *edge[] = { "123456789012345678901234567890", "0.000000000000000000000000000000000000011754943",
                           "3.4028234663852886e38", "1e-46", "-0", "0.1e1", "1E+2", "123456789.987654321e-5",
                           "9007199254740993", "1e22", "1e23", "4.9e-324", "1e-400" };
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++) {
        snprintf(body, sizeof body, "{\"instances\": [[%s, 0, 0, 0]]}", edge[i]);
        dgs_body b;
        http_error e;
        float want = (float)strtod(edge[i], NULL);
        int c = parse(body, false, mlp, 1, &b, &e);
        CHECK(c == 0 && !memcmp(&b.x[0], &want, sizeof want), "%s: got %d %s", edge[i], c, e.msg);
        free(b.x);
    }
}

static void bodies(void) {
    dgs_body b;
    http_error e;
    const char *v2 = " {\"id\": \"r-\\\"1\\u00e9\", \"parameters\": {\"a\": [1, {\"b\": null}]},\n"
                     "  \"inputs\": [{\"data\": [[1, 2.5, -3e-1, 4], [5, 6, 7, 8]], \"name\": \"x\",\n"
                     "               \"shape\": [2, 4], \"datatype\": \"FP32\", \"parameters\": {}}],\n"
                     "  \"outputs\": [{\"name\": \"output\"}]} ";
    int c = parse(v2, true, mlp, 1, &b, &e);
    const float want[] = { 1, 2.5f, -0.3f, 4, 5, 6, 7, 8 };
    CHECK(c == 0 && b.n == 2 && !memcmp(b.x, want, sizeof want), "v2 body: %d %s", c, e.msg);
    CHECK(c == 0 && b.id && b.id_len == 11 && !memcmp(b.id, "r-\\\"1\\u00e9", 11), "v2 id text: %.*s",
          (int)b.id_len, b.id ? b.id : "");
    free(b.x);
    c = parse("{\"inputs\":[{\"shape\":[1,4],\"datatype\":\"FP\\u0033\\u0032\",\"data\":[1,2,3,4]}],\"id\":5}", true,
              mlp, 1, &b, &e);
    CHECK(c == 0 && b.n == 1 && !b.id, "escaped datatype, numeric id: %d %s", c, e.msg);
    free(b.x);
    c = parse("{\"instances\": [[[1, 2], [3, 4]], [[5, 6], [7, 8]], [9, 10, 11, 12]], \"signature_name\": \"x\"}",
              false, img, 3, &b, &e);
    CHECK(c == 0 && b.n == 3 && b.x[4] == 5 && b.x[11] == 12, "v1 nested: %d %s", c, e.msg);
    free(b.x);
    c = parse("{\"instances\": [1, 2, 3]}", false, (const int64_t[]){ 1 }, 1, &b, &e);
    CHECK(c == 0 && b.n == 3 && b.x[2] == 3, "v1 scalars for a 1-value model: %d %s", c, e.msg);
    free(b.x);
}

static void errors(void) {
    const char *ok4 = "[1,2,3,4]";
    char body[512];
    /* syntax */
    bad("", true, 400, "body: not valid JSON (line 1, column 1");
    bad("{\"inputs\": [\n{\"data\": [1,\n2,,3]}]}", true, 400, "line 3, column 3");
    bad("{\"instances\": [[01, 2, 3, 4]]}", false, 400, "body: not valid JSON");
    bad("{\"instances\": [[NaN, 2, 3, 4]]}", false, 400, "body: not valid JSON");
    bad("{\"instances\": [[Infinity, 2, 3, 4]]}", false, 400, "body: not valid JSON");
    bad("{\"instances\": [[1., 2, 3, 4]]}", false, 400, "invalid number");
    bad("{\"instances\": [[.5, 2, 3, 4]]}", false, 400, "body: not valid JSON");
    bad("{\"instances\": [[1e, 2, 3, 4]]}", false, 400, "invalid number");
    bad("{\"instances\": [[+1, 2, 3, 4]]}", false, 400, "body: not valid JSON");
    bad("{\"x\": \"\\q\", \"instances\": [[1, 2, 3, 4]]}", false, 400, "invalid escape");
    bad("{\"x\": \"\\ud800\", \"instances\": [[1, 2, 3, 4]]}", false, 400, "invalid \\u escape");
    bad("{\"x\": \"\\udc00\", \"instances\": [[1, 2, 3, 4]]}", false, 400, "invalid \\u escape");
    bad("{\"x\": \"\xc0\xaf\", \"instances\": [[1, 2, 3, 4]]}", false, 400, "invalid UTF-8");
    bad("{\"x\": \"\xed\xa0\x80\", \"instances\": [[1, 2, 3, 4]]}", false, 400, "invalid UTF-8");
    bad("{\"x\": \"\xf4\x90\x80\x80\", \"instances\": [[1, 2, 3, 4]]}", false, 400, "invalid UTF-8");
    bad("{\"x\": \"a\tb\", \"instances\": [[1, 2, 3, 4]]}", false, 400, "control character");
    bad("{\"instances\": [[1, 2, 3, 4]]} x", false, 400, "text after");
    bad("{\"instances\": [[1, 2, 3, 4]]", false, 400, "body: not valid JSON");
    bad("{\"x\": \"abc", false, 400, "unterminated string");
    bad("{\"x\" 1}", false, 400, "expected ':'");
    bad("{\"x\": tru}", false, 400, "body: not valid JSON");
    size_t k = (size_t)snprintf(body, sizeof body, "{\"x\": ");
    for (int i = 0; i < 70; i++) body[k++] = '[';
    for (int i = 0; i < 70; i++) body[k++] = ']';
    snprintf(body + k, sizeof body - k, ", \"instances\": [%s]}", ok4);
    bad(body, false, 400, "nested too deep");
    bad("[1, 2]", true, 400, "body: must be a JSON object");
    bad("\"text\"", false, 400, "body: must be a JSON object");
    /* v2 fields */
    bad("{\"foo\": 1}", true, 400, "inputs: missing");
    bad("{\"inputs\": {}}", true, 400, "inputs: must be an array of one tensor");
    bad("{\"inputs\": []}", true, 400, "inputs: must be an array of one tensor");
    bad("{\"inputs\": [1]}", true, 400, "inputs[0]: must be an object");
    bad("{\"inputs\": [{}, {}]}", true, 400, "inputs: must be an array of one tensor");
    bad("{\"inputs\": [{\"name\": 3, \"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [1,2,3,4]}]}", true, 400,
        "inputs[0].name: must be a string");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"data\": [1,2,3,4]}]}", true, 400, "inputs[0].datatype: missing");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"datatype\": \"INT64\", \"data\": [1,2,3,4]}]}", true, 400,
        "inputs[0].datatype: must be \"FP32\", got \"INT64\"");
    bad("{\"inputs\": [{\"datatype\": \"FP32\", \"data\": [1,2,3,4]}]}", true, 400, "inputs[0].shape: missing");
    bad("{\"inputs\": [{\"shape\": [1, 4.0], \"datatype\": \"FP32\", \"data\": [1,2,3,4]}]}", true, 400,
        "inputs[0].shape[1]: must be a positive integer");
    bad("{\"inputs\": [{\"shape\": [0, 4], \"datatype\": \"FP32\", \"data\": []}]}", true, 400,
        "inputs[0].shape[0]: must be a positive integer");
    bad("{\"inputs\": [{\"shape\": [99999999999999999999, 4], \"datatype\": \"FP32\", \"data\": []}]}", true, 400,
        "inputs[0].shape[0]: must be a positive integer");
    bad("{\"inputs\": [{\"shape\": [1, 5], \"datatype\": \"FP32\", \"data\": [1,2,3,4,5]}]}", true, 400,
        "inputs[0].shape: [1, 5] does not fit the model's input [-1, 4]");
    bad("{\"inputs\": [{\"shape\": [9, 4], \"datatype\": \"FP32\", \"data\": []}]}", true, 400,
        "inputs[0].shape[0]: batch 9 exceeds this server's limit of 8");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"datatype\": \"FP32\"}]}", true, 400, "inputs[0].data: missing");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": 1}]}", true, 400,
        "inputs[0].data: missing or not an array");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [1,2,3]}]}", true, 400,
        "inputs[0].data: has 3 values, shape [1, 4] needs 4");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,"
        "17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33]}]}",
        true, 400, "inputs[0].data: has 33 values, shape [1, 4] needs 4");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [[1, 2], [3, \"x\"]]}]}", true, 400,
        "inputs[0].data[1][1]: not a number or an array of numbers");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [1, 2, 3, 1e39]}]}", true, 400,
        "inputs[0].data[3]: out of the FP32 range");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [[[[[[[[[1]]]]]]]]]}]}", true, 400,
        "nested deeper than 8 levels");
    bad("{\"inputs\": [{\"shape\": [1, 4], \"datatype\": \"FP32\", \"data\": [1,2,3,4], \"data\": [1,2,3,4]}]}", true,
        400, "inputs[0].data: given twice");
    bad("{\"inputs\": [], \"inputs\": []}", true, 400, "inputs: ");
    /* v1 fields */
    bad("{\"inputs\": []}", false, 400, "instances: missing");
    bad("{\"instances\": []}", false, 400, "instances: must be a non-empty array");
    bad("{\"instances\": 3}", false, 400, "instances: must be a non-empty array");
    bad("{\"instances\": [[1, 2, 3, 4], [1, 2]]}", false, 400, "instances[1]: has 2 values, the model takes 4");
    bad("{\"instances\": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]}", false, 400, "instances[1]: has 5 values");
    bad("{\"instances\": [[1, 2, 3, 4], [1, 2, null, 4]]}", false, 400, "instances[1][2]: not a number");
    k = (size_t)snprintf(body, sizeof body, "{\"instances\": [");
    for (int i = 0; i < 9; i++) k += (size_t)snprintf(body + k, sizeof body - k, "%s%s", i ? "," : "", ok4);
    snprintf(body + k, sizeof body - k, "]}");
    bad(body, false, 400, "instances: more than 8 instances");
}

int main(void) {
    numbers();
    bodies();
    errors();
    if (failures) {
        fprintf(stderr, "test_request: %d failures\n", failures);
        return 1;
    }
    printf("test_request: ok\n");
    return 0;
}
