/* fuzz_idx - libFuzzer target for the IDX reader (dg_idx_read), plain and
 * gzip. dg_idx_read takes a path, so each input is written to a temporary
 * file first. Seeds: small IDX files cut from real MNIST (scripts/fuzz.sh). */
#define _XOPEN_SOURCE 700
#include "dgrad/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char path[128];

static void cleanup(void) { unlink(path); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(path, sizeof path, "/tmp/fuzz_idx.%ld", (long)getpid());
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    DG_ASSERT(f != NULL);
    size_t put = fwrite(data, 1, size, f);
    DG_ASSERT(put == size);
    fclose(f);
    dg_clear_error();
    dg_idx idx;
    if (dg_idx_read(path, &idx) == DG_OK) {
        int64_t n = 1;
        for (int i = 0; i < idx.ndim; i++) n *= idx.dims[i];
        volatile uint8_t sum = 0;   /* touch the data: ASan checks its extent */
        for (int64_t i = 0; i < n; i++) sum += idx.data[i];
        dg_idx_free(&idx);
    }
    dg_clear_error();
    return 0;
}
