/* A program outside the tree, built against the installed dgrad. */
#include <dgrad/nn.h>
#include <dgrad/ops.h>
#include <stdio.h>

int main(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    if (!ctx) return 1;
    dg_manual_seed(ctx, 1);
    dg_module *lin = dg_nn_linear(ctx, 3, 2, true);
    float xs[6] = { 1, 2, 3, 4, 5, 6 };
    int64_t shape[2] = { 2, 3 };
    dg_tensor *y = dg_module_forward(lin, dg_tensor_from(ctx, DG_F32, 2, shape, xs));
    dg_tensor *loss = dg_sum(y);
    if (!loss || dg_backward(loss) != DG_OK) return 1;
    dg_tensor **p;
    dg_module_parameters(lin, &p);
    /* d sum(x W^T + b) / db = number of rows */
    float gb = dg_item_at(p[1]->grad, 0);
    printf("dgrad %s: bias grad %g\n", dg_version(), gb);
    dg_ctx_free(ctx);
    return gb == 2.0f ? 0 : 1;
}
