/* fuzz_checkpoint - libFuzzer target for the checkpoint reader.
 *
 * Each input is a whole checkpoint file. It goes through
 * dg_checkpoint_check_buffer (magic, version, checksum, payload parse and
 * self-consistency) and, when that accepts it, is written to a temporary
 * file and loaded into a Linear(4, 3) + Adam model (the model of
 * `ckpt_writer tiny`, the seed), which runs the model checks and the
 * restore. scripts/fuzz.sh builds dgrad with
 * -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, which lets inputs with a wrong
 * checksum through, so that mutations reach the payload parser.
 */
#define _XOPEN_SOURCE 700
#include "dgrad/checkpoint.h"
#include "dgrad/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static dg_ctx *ctx;
static dg_optim *opt;
static char path[128];

static void cleanup(void) { unlink(path); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    ctx = dg_ctx_new(DG_CPU);
    DG_ASSERT(ctx != NULL);
    dg_tensor **params;
    int np = dg_module_parameters(dg_nn_linear(ctx, 4, 3, true), &params);
    opt = dg_optim_adam(params, np, dg_adam_defaults());
    DG_ASSERT(opt != NULL);
    snprintf(path, sizeof path, "/tmp/fuzz_checkpoint.%ld.dgck", (long)getpid());
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dg_clear_error();
    if (dg_checkpoint_check_buffer(data, size, "fuzz") == DG_OK) {
        FILE *f = fopen(path, "wb");
        DG_ASSERT(f != NULL);
        size_t put = fwrite(data, 1, size, f);
        DG_ASSERT(put == size);
        fclose(f);
        dg_train_state st = { .batch_size = 8, .optimizer = "adam" };
        dg_checkpoint_load(path, ctx, opt, &st, NULL, NULL, 0);
    }
    dg_clear_error();
    return 0;
}
