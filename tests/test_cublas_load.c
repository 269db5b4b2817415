/* test_cublas_load - cuBLAS is opened with dlopen when the first CUDA
 * context starts, not linked (core/src/cuda-impl.h): a CPU process of a
 * CUDA-enabled build must not map it, and the loader must find the library
 * and every symbol the backend uses. Runs without a GPU. */
#define _GNU_SOURCE
#include "dgrad/tensor.h"
#include "test_util.h"

#include <stdio.h>
#include <string.h>

dg_status dg__cublas_load(char *msg, size_t n);   /* core/src/backend_cuda.cu */

static bool mapped(const char *lib) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, lib) != NULL;
    fclose(f);
    return found;
}

int main(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    CHECK_NOT_NULL(ctx);
    CHECKF(!mapped("libcublas"), "a CPU context mapped cuBLAS");
    char msg[256] = "";
    CHECKF(dg__cublas_load(msg, sizeof msg) == DG_OK, "dg__cublas_load: %s", msg);
    CHECKF(mapped("libcublas"), "cuBLAS not mapped after dg__cublas_load");
    CHECK(dg__cublas_load(msg, sizeof msg) == DG_OK);   /* idempotent */
    dg_ctx_free(ctx);
    return dgt_report("test_cublas_load");
}
