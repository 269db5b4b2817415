/* models.h - the nets of examples/mnist_mlp.c and examples/mnist_cnn.c,
 * for the tools (dgrad-export, dgrad-infer), which build them to load a
 * checkpoint. Keep them in step with the examples. */
#ifndef DGRAD_TOOLS_MODELS_H
#define DGRAD_TOOLS_MODELS_H

#include "dgrad/nn.h"

/* "mlp" (784-50-10, input [N, 784]) or "cnn" (input [N, 1, 28, 28]; bn:
 * BatchNorm2d after each conv, as mnist_cnn's default --bn). One sample's
 * input shape goes to shape (*ndim dims). NULL and a message for another
 * name. */
dg_module *dg_tools_build_model(dg_ctx *ctx, const char *name, bool bn, int *ndim, int64_t shape[3]);

#endif
