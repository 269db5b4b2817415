/* dgrad/nn.h - modules: Linear, ReLU, Sequential.
 *
 * Modules belong to a context and are freed with it. Parameters are
 * registered in the context's flat buffer in construction order; a module's
 * parameters() lists them in PyTorch's registration order (for Linear:
 * weight, then bias).
 */
#ifndef DGRAD_NN_H
#define DGRAD_NN_H

#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_module dg_module;   /* opaque */

/* nn.Linear(in, out, bias): weight (out, in) and bias (out), both
 * initialized as PyTorch does: kaiming_uniform_(a=sqrt(5)) for the weight,
 * i.e. U(-1/sqrt(in), 1/sqrt(in)), and U(-1/sqrt(in), 1/sqrt(in)) for the
 * bias, drawn from the context's RNG. */
dg_module *dg_nn_linear(dg_ctx *ctx, int64_t in_features, int64_t out_features, bool bias);
dg_module *dg_nn_relu(dg_ctx *ctx);
/* Sequential over n modules (the array is copied). */
dg_module *dg_nn_sequential(dg_ctx *ctx, int n, dg_module *const *mods);

/* Forward pass; NULL on error (message recorded). */
dg_tensor *dg_module_forward(dg_module *m, dg_tensor *x);
/* Parameters of m and its children, in registration order. *out points to
 * an array owned by the module. Returns the count. */
int dg_module_parameters(dg_module *m, dg_tensor ***out);
/* Train or eval mode, recursively (dropout, batch norm use it). */
void dg_module_train(dg_module *m, bool train);
bool dg_module_is_training(const dg_module *m);
/* "Linear(in_features=784, out_features=50, bias=True)" style name. */
const char *dg_module_name(const dg_module *m);
/* Child i of a Sequential, or NULL. */
dg_module *dg_module_child(dg_module *m, int i);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_NN_H */
