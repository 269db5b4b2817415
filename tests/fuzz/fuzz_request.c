/* fuzz_request - libFuzzer target for dgserve's request bodies
 * (serve/request.c: the one-pass JSON reader and the validation of KServe
 * v2 infer and TF Serving predict bodies). Each input is tried as both
 * kinds of body against two model input shapes: [784] (the MNIST MLP) and
 * [1, 4, 4]. Seeds: tests/fuzz/request/ (scripts/fuzz.sh). */
#include "request.h"

#include <math.h>
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
            dgs_body b;
            http_error e = { 0 };
            int code = dgs_parse_request((const char *)data, size, v2, shapes[s], nds[s], 64, &b, &e);
            if (code == 0) {
                if (!b.x || b.n < 1 || b.n > 64) abort();
                for (int64_t i = 0; i < b.n * want; i++)   /* every float addressable and finite */
                    if (!isfinite(b.x[i])) abort();
                if (b.id && (b.id < (const char *)data || b.id + b.id_len > (const char *)data + size)) abort();
            } else {
                if (b.x || code < 400 || code > 599 || !e.msg[0] || memchr(e.msg, '\0', sizeof e.msg) == NULL) abort();
                for (const char *p = e.msg; *p; p++)
                    if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) abort();
            }
            free(b.x);
        }
    }
    return 0;
}
