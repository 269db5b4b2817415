/* fuzz_request - libFuzzer target for dgserve's request bodies
 * (serve/request.c: JSON parsing and validation of KServe v2 infer and
 * TF Serving predict bodies). Each input is tried as both kinds of body
 * against two model input shapes: [784] (the MNIST MLP) and [1, 4, 4].
 * Seeds: tests/fuzz/request/ (scripts/fuzz.sh). */
#include "request.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int64_t mlp[] = { 784 }, img[] = { 1, 4, 4 };
    const int64_t *shapes[] = { mlp, img };
    const int nds[] = { 1, 3 };
    for (int s = 0; s < 2; s++) {
        int64_t want = 1;
        for (int i = 0; i < nds[s]; i++) want *= shapes[s][i];
        for (int v2 = 0; v2 < 2; v2++) {
            json_t *root = NULL;
            float *x = NULL;
            int64_t n = 0;
            http_error e = { 0 };
            int code = dgs_parse_request((const char *)data, size, v2, shapes[s], nds[s], 64, &root, &x, &n, &e);
            if (code == 0) {
                if (!x || n < 1 || n > 64) abort();
                volatile float sum = 0;   /* every float of the batch must be addressable */
                for (int64_t i = 0; i < n * want; i++) sum += x[i];
                (void)sum;
            } else {
                if (code < 400 || code > 599 || !e.msg[0] || memchr(e.msg, '\0', sizeof e.msg) == NULL) abort();
                for (const char *p = e.msg; *p; p++)
                    if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) abort();
            }
            free(x);
            json_decref(root);
        }
    }
    return 0;
}
