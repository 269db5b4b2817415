/* mnist_cnn - a small convolutional net on MNIST, in dgrad.
 *
 *   (B, 1, 28, 28) -> Conv 5x5x24 -> MaxPool 2 -> ReLU -> Conv 5x5x32
 *   -> MaxPool 2 -> ReLU -> Flatten -> Linear 512->256 -> ReLU -> Linear 10,
 *   cross-entropy, Adam with OneCycleLR (max_lr --lr), batch 256, 1 epoch,
 *   with BatchNorm2d after each convolution (the convolutions then have no
 *   bias). Defaults (tuned): batch norm on, max_lr 3e-2, pct_start 0.2,
 *   div_factor 10 (PyTorch's OneCycle defaults are 0.3 and 25): 99.08% test
 *   accuracy on average over seeds 0-4 after one epoch on the CPU (min
 *   99.04%). --no-bn gives the plain net (--lr 1e-2: 98.8%; with 3e-3, the
 *   PyTorch reference recipe: 98.2%).
 *
 * Data-parallel: run it under mpirun (or srun) and every rank trains on its
 * shard of each epoch; gradients are averaged with DDP, and rank 0's
 * batch-norm running statistics are broadcast before every step (PyTorch
 * DDP's broadcast_buffers). --batch-size is per rank. The flags, output
 * and checkpoints are libdgrad_train's (dgrad/train.h).
 */
#include "dgrad/train.h"

typedef struct {
    bool bn;                    /* --bn / --no-bn */
} cnn_opts;

static const dg_flag cnn_flags[] = {
    { "--bn", DG_FLAG_SET, offsetof(cnn_opts, bn), NULL,
      "BatchNorm2d after each convolution; without it (--no-bn) the convolutions get a bias", 0, 0, NULL, NULL },
    { "--no-bn", DG_FLAG_CLEAR, offsetof(cnn_opts, bn), NULL, "no batch norm", 0, 0, NULL, NULL },
};

/* The net; NULL on error. */
static dg_module *build(dg_ctx *ctx, const dg_train_opts *o, void *user) {
    (void)o;
    const cnn_opts *c = user;
    int64_t k5[2] = { 5, 5 }, k2[2] = { 2, 2 };
    dg_module *m[16];
    int n = 0;
    m[n++] = dg_nn_conv2d(ctx, 1, 24, k5, NULL, NULL, NULL, 1, !c->bn);
    if (c->bn) m[n++] = dg_nn_batch_norm2d(ctx, 24);
    m[n++] = dg_nn_max_pool2d(ctx, k2, NULL, NULL);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_conv2d(ctx, 24, 32, k5, NULL, NULL, NULL, 1, !c->bn);
    if (c->bn) m[n++] = dg_nn_batch_norm2d(ctx, 32);
    m[n++] = dg_nn_max_pool2d(ctx, k2, NULL, NULL);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_flatten(ctx);
    m[n++] = dg_nn_linear(ctx, 32 * 4 * 4, 256, true);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_linear(ctx, 256, 10, true);
    return dg_nn_sequential(ctx, n, m);
}

int main(int argc, char **argv) {
    cnn_opts c = { .bn = true };
    dg_train_program p = dg_train_program_defaults("mnist_cnn", build);
    p.model = "cnn";
    p.about = "a convolutional net on MNIST (conv-BN-pool-ReLU x2, fc 256, fc 10), Adam + OneCycle, in dgrad";
    p.user = &c;
    p.extra_flags = cnn_flags;
    p.num_extra_flags = (int)(sizeof cnn_flags / sizeof cnn_flags[0]);
    p.extra_target = &c;
    p.defaults.epochs = 1;
    p.defaults.batch_size = 256;
    p.defaults.lr = 3e-2f;
    p.defaults.sched = "onecycle";
    p.defaults.pct_start = 0.2;
    p.defaults.div_factor = 10.0;
    return dg_train_main(&p, argc, argv);
}
