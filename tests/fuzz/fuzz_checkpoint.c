/* fuzz_checkpoint - libFuzzer target for the checkpoint reader.
 *
 * Each input is a whole checkpoint file. It goes through
 * dg_checkpoint_check_buffer (magic, version, checksum, payload parse and
 * self-consistency) and, when that accepts it, is written to a temporary
 * file and loaded into two models, which runs the model checks and the
 * restore in one of them at most: Linear(4, 3) + Adam (`ckpt_writer tiny`,
 * a seed) and the same with a BatchNorm2d(3), whose running statistics are
 * buffers (`ckpt_writer tiny-bn`, the other seed). scripts/fuzz.sh builds dgrad with
 * -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, which lets inputs with a wrong
 * checksum through, so that mutations reach the payload parser.
 */
#define _XOPEN_SOURCE 700
#include "dgrad/dist_checkpoint.h"
#include "dgrad/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    dg_ctx *ctx;
    dg_optim *opt;
    dg_tensor **bufs;
    int nb;
} model;

static model models[2];   /* without and with buffers */
static char path[128];

static void cleanup(void) { unlink(path); }

static model make_model(bool bn) {
    model m = { .ctx = dg_ctx_new(DG_CPU) };
    DG_ASSERT(m.ctx != NULL);
    dg_module *net = dg_nn_linear(m.ctx, 4, 3, true);
    if (bn) {
        dg_module *layers[2] = { net, dg_nn_batch_norm2d(m.ctx, 3) };
        net = dg_nn_sequential(m.ctx, 2, layers);
        m.nb = dg_module_buffers(net, &m.bufs);
    }
    dg_tensor **params;
    int np = dg_module_parameters(net, &params);
    m.opt = dg_optim_adam(params, np, dg_adam_defaults());
    DG_ASSERT(m.opt != NULL);
    return m;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    models[0] = make_model(false);
    models[1] = make_model(true);
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
        for (int i = 0; i < 2; i++) {
            dg_train_state st = { .batch_size = 8, .optimizer = "adam", .buffers = models[i].bufs,
                                  .num_buffers = models[i].nb };
            dg_checkpoint_load(path, models[i].ctx, models[i].opt, &st, NULL, NULL, 0);
            dg_clear_error();
        }
    }
    dg_clear_error();
    return 0;
}
