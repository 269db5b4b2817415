/* ckpt_writer - a helper for the checkpoint tests and the fuzz seeds.
 *
 *   ckpt_writer model DIR IN HID    MLP IN -> HID -> 10 with Adam, saved as
 *                                   DIR/ckpt-5.dgck (a checkpoint of
 *                                   "another model" for mnist_mlp --resume)
 *   ckpt_writer tiny DIR            Linear 4 -> 3 with Adam (fuzz seed)
 *   ckpt_writer tiny-bn DIR         the same and a BatchNorm2d(3), whose
 *                                   running statistics go in as buffers
 *                                   (fuzz seed)
 *   ckpt_writer big DIR STEP MIB    one parameter of MIB MiB, every value
 *                                   STEP, saved as DIR/ckpt-STEP.dgck (the
 *                                   SIGKILL test sets DG_CKPT_TEST_SLOW_WRITE)
 *   ckpt_writer check DIR STEP MIB  the newest valid checkpoint in DIR must
 *                                   be ckpt-STEP and load with every value STEP
 * Exit status 0 on success, 1 with a message otherwise.
 */
#include "dgrad/dist_checkpoint.h"
#include "dgrad/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *what) {
    fprintf(stderr, "ckpt_writer: %s%s\n", what, dg_last_error());
    return 1;
}

static int save_mlp(const char *dir, int64_t in, int64_t hid, int64_t out, bool two, bool bn) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    if (!ctx) return die("");
    dg_manual_seed(ctx, 1);
    dg_module *m = dg_nn_linear(ctx, in, hid, true);
    if (two) {
        dg_module *layers[3] = { m, dg_nn_relu(ctx), dg_nn_linear(ctx, hid, out, true) };
        m = dg_nn_sequential(ctx, 3, layers);
    }
    dg_tensor **bufs = NULL;
    int nb = 0;
    if (bn) {
        dg_module *layers[2] = { m, dg_nn_batch_norm2d(ctx, hid) };
        m = dg_nn_sequential(ctx, 2, layers);
        nb = dg_module_buffers(m, &bufs);
        for (int i = 0; i < nb; i++) dg_init_uniform(bufs[i], 0.5f, 1.5f);
    }
    dg_tensor **params;
    int np = dg_module_parameters(m, &params);
    dg_adam_opts ao = dg_adam_defaults();
    dg_optim *opt = dg_optim_adam(params, np, ao);
    if (!opt) return die("");
    for (int i = 0; i < np; i++)
        for (int s = 0; s < dg_optim_num_slots(opt); s++) dg_init_uniform(dg_optim_state(opt, i, s), 0.0f, 1.0f);
    dg_optim_set_step_count(opt, 5);
    dg_train_state st = { .step = 5, .epoch = 0, .pos = 320, .batch_size = 64, .optimizer = "adam",
                          .num_stats = 2, .stats = { 11.5, 5.0 }, .buffers = bufs, .num_buffers = nb };
    int rc = dg_checkpoint_save(dir, ctx, opt, &st, NULL, 0) ? die("") : 0;
    dg_ctx_free(ctx);
    return rc;
}

static dg_ctx *big_model(int64_t mib, dg_tensor **p, dg_optim **opt) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    if (!ctx) return NULL;
    int64_t shape[1] = { mib * 262144 };
    *p = dg_param_new(ctx, "big", 1, shape);
    *opt = dg_optim_sgd(p, 1, dg_sgd_defaults(0.1f));
    return ctx;
}

int main(int argc, char **argv) {
    if (argc >= 5 && !strcmp(argv[1], "model"))
        return save_mlp(argv[2], atoll(argv[3]), atoll(argv[4]), 10, true, false);
    if (argc >= 3 && !strcmp(argv[1], "tiny")) return save_mlp(argv[2], 4, 3, 0, false, false);
    if (argc >= 3 && !strcmp(argv[1], "tiny-bn")) return save_mlp(argv[2], 4, 3, 0, false, true);
    if (argc >= 5 && (!strcmp(argv[1], "big") || !strcmp(argv[1], "check"))) {
        int64_t step = atoll(argv[3]), mib = atoll(argv[4]);
        dg_tensor *p;
        dg_optim *opt;
        dg_ctx *ctx = big_model(mib, &p, &opt);
        if (!ctx || !opt) return die("");
        dg_train_state st = { .step = step, .optimizer = "sgd" };
        if (!strcmp(argv[1], "big")) {
            dg_init_constant(p, (float)step);
            int rc = dg_checkpoint_save(argv[2], ctx, opt, &st, NULL, 0) ? die("") : 0;
            dg_ctx_free(ctx);
            return rc;
        }
        char path[4096], want[4096];
        if (dg_checkpoint_latest(argv[2], path, sizeof path)) return die("latest: ");
        snprintf(want, sizeof want, "%s/ckpt-%lld.dgck", argv[2], (long long)step);
        if (strcmp(path, want)) {
            fprintf(stderr, "ckpt_writer: newest valid checkpoint is '%s', expected '%s'\n", path, want);
            return 1;
        }
        if (dg_checkpoint_load(argv[2], ctx, opt, &st, NULL, NULL, 0)) return die("load: ");
        float *host = malloc(sizeof(float) * (size_t)dg_numel(p));
        dg_tensor_to_host(p, host);
        for (int64_t i = 0; i < dg_numel(p); i++)
            if (host[i] != (float)step) {
                fprintf(stderr, "ckpt_writer: value %lld is %g, expected %lld\n", (long long)i, host[i], (long long)step);
                return 1;
            }
        free(host);
        dg_ctx_free(ctx);
        printf("ckpt_writer: %s loads, step %lld\n", path, (long long)st.step);
        return 0;
    }
    fprintf(stderr, "usage: ckpt_writer model DIR IN HID | tiny DIR | big|check DIR STEP MIB\n");
    return 1;
}
