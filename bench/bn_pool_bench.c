/* bn_pool_bench.c - micro-benchmark: BatchNorm2d -> ReLU -> MaxPool2d(2),
 * forward and backward, run as three modules against one Sequential (which
 * fuses them into one CPU op, see core/src/nn.c). Not a test: it prints
 * milliseconds per step (best of 5 rounds of 50 steps) and the op that ran.
 *
 * Build and run (from the repository root, after a Release build in build):
 *   gcc -std=c11 -O2 -Icore/include bench/bn_pool_bench.c -Lbuild/core -ldgrad \
 *       -Wl,-rpath,$PWD/build/core -o build/bn_pool_bench
 *   build/bn_pool_bench unfused; build/bn_pool_bench fused    # alternate a few times
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/tensor.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "fused") && strcmp(argv[1], "unfused"))) {
        fprintf(stderr, "usage: bn_pool_bench fused|unfused\n");
        return 2;
    }
    bool fused = !strcmp(argv[1], "fused");
    dg_set_num_threads(1);
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 1);
    int64_t k2[2] = { 2, 2 }, xs[4] = { 64, 24, 24, 24 };   /* MNIST CNN's first layer */
    dg_module *m[3] = { dg_nn_batch_norm2d(ctx, 24), dg_nn_relu(ctx),
                        dg_nn_max_pool2d(ctx, k2, NULL, NULL) };
    dg_module *seq = dg_nn_sequential(ctx, 3, m);
    dg_tensor *x = dg_tensor_persistent(ctx, DG_F32, 4, xs);
    dg_init_normal(x, 0.0f, 1.0f);
    x->requires_grad = true;
    double best = 1e30;
    const char *op = "?";
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        for (int i = 0; i < 50; i++) {
            dg_tensor *y = x;
            if (fused) y = dg_module_forward(seq, x);
            else
                for (int k = 0; k < 3; k++) y = dg_module_forward(m[k], y);
            op = dg_grad_fn_name(y);
            if (dg_backward(dg_sum(y)) != DG_OK) {
                fprintf(stderr, "bn_pool_bench: %s\n", dg_last_error());
                return 1;
            }
            dg_ctx_reset_step(ctx);
        }
        double dt = (now_s() - t0) / 50;
        best = dt < best ? dt : best;
    }
    printf("%s: %.3f ms per forward + backward of BatchNorm2d -> ReLU -> MaxPool2d(2) on "
           "64x24x24x24 (last op: %s)\n", argv[1], best * 1e3, op);
    dg_ctx_free(ctx);
    return 0;
}
