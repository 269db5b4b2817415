/* mnist_mlp - the founding example: PyTorch's MNIST MLP, in dgrad.
 *
 *   784 -> Linear -> 50 -> ReLU -> Linear -> 10, cross-entropy,
 *   Adam(lr=1e-4), batch 64, 3 epochs, shuffled every epoch.
 *
 * Data-parallel: run it under mpirun (or srun, or dgrun) and every rank
 * trains on its shard of each epoch; gradients are averaged with DDP.
 * --batch-size is per rank, as in PyTorch DDP. Only rank 0 prints. The
 * flags, output and checkpoints are libdgrad_train's (dgrad/train.h).
 */
#include "dgrad/train.h"

static dg_module *build(dg_ctx *ctx, const dg_train_opts *o, void *user) {
    (void)o;
    (void)user;
    dg_module *layers[3] = { dg_nn_linear(ctx, 784, 50, true), dg_nn_relu(ctx),
                             dg_nn_linear(ctx, 50, 10, true) };
    return dg_nn_sequential(ctx, 3, layers);
}

int main(int argc, char **argv) {
    dg_train_program p = dg_train_program_defaults("mnist_mlp", build);
    p.model = "mlp";
    p.about = "PyTorch's MNIST MLP (784-50-10, ReLU, Adam), in dgrad";
    p.flat_input = true;
    p.defaults.epochs = 3;
    p.defaults.batch_size = 64;
    p.defaults.lr = 1e-4f;
    p.defaults.train_accuracy = true;
    return dg_train_main(&p, argc, argv);
}
