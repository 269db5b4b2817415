/* models.c - see models.h. */
#include "models.h"

#include <string.h>

static dg_module *mlp(dg_ctx *ctx) {
    dg_module *layers[3] = { dg_nn_linear(ctx, 784, 50, true), dg_nn_relu(ctx), dg_nn_linear(ctx, 50, 10, true) };
    return dg_nn_sequential(ctx, 3, layers);
}

static dg_module *cnn(dg_ctx *ctx, bool bn) {
    int64_t k5[2] = { 5, 5 }, k2[2] = { 2, 2 };
    dg_module *m[16];
    int n = 0;
    m[n++] = dg_nn_conv2d(ctx, 1, 24, k5, NULL, NULL, NULL, 1, !bn);
    if (bn) m[n++] = dg_nn_batch_norm2d(ctx, 24);
    m[n++] = dg_nn_max_pool2d(ctx, k2, NULL, NULL);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_conv2d(ctx, 24, 32, k5, NULL, NULL, NULL, 1, !bn);
    if (bn) m[n++] = dg_nn_batch_norm2d(ctx, 32);
    m[n++] = dg_nn_max_pool2d(ctx, k2, NULL, NULL);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_flatten(ctx);
    m[n++] = dg_nn_linear(ctx, 32 * 4 * 4, 256, true);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_linear(ctx, 256, 10, true);
    return dg_nn_sequential(ctx, n, m);
}

dg_module *dg_tools_build_model(dg_ctx *ctx, const char *name, bool bn, int *ndim, int64_t shape[3]) {
    if (!strcmp(name, "mlp")) {
        *ndim = 1;
        shape[0] = 784;
        return mlp(ctx);
    }
    if (!strcmp(name, "cnn")) {
        *ndim = 3;
        shape[0] = 1;
        shape[1] = shape[2] = 28;
        return cnn(ctx, bn);
    }
    dg_set_error("--model: unknown model '%s' (mlp or cnn)", name);
    return NULL;
}
