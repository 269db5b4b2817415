/* dgrad-export - writes a trained model as an ONNX file.
 *
 *   dgrad-export --model mlp|cnn [--no-bn] --checkpoint PATH -o OUT.onnx
 *
 * Builds the net of examples/mnist_mlp.c or examples/mnist_cnn.c (--no-bn:
 * mnist_cnn's --no-bn), loads its parameters and batch-norm statistics
 * from PATH (a checkpoint file, or a --checkpoint-dir's newest one) and
 * writes it with dg_onnx_export (opset 13, dynamic batch). --untrained
 * writes the freshly initialized net (--seed N) instead of a checkpoint's.
 */
#include "dgrad/onnx.h"
#include "models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(const char *msg) {
    if (msg) fprintf(stderr, "dgrad-export: %s\n", msg);
    fprintf(stderr, "usage: dgrad-export --model mlp|cnn [--no-bn] (--checkpoint PATH | --untrained [--seed N]) "
                    "-o OUT.onnx\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *model = NULL, *ckpt = NULL, *out = NULL;
    bool bn = true, untrained = false;
    unsigned long long seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--model") && more) model = argv[++i];
        else if (!strcmp(a, "--checkpoint") && more) ckpt = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && more) out = argv[++i];
        else if (!strcmp(a, "--no-bn")) bn = false;
        else if (!strcmp(a, "--bn")) bn = true;
        else if (!strcmp(a, "--untrained")) untrained = true;
        else if (!strcmp(a, "--seed") && more) {
            char *end;
            seed = strtoull(argv[++i], &end, 10);
            if (*end) return usage("--seed: not a number");
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(NULL);
            return 0;
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown flag or missing value: %s", a);
            return usage(msg);
        }
    }
    if (!model) return usage("--model is required");
    if (!out) return usage("-o OUT.onnx is required");
    if (!ckpt == !untrained) return usage("give one of --checkpoint PATH and --untrained");
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    if (!ctx) {
        fprintf(stderr, "dgrad-export: %s\n", dg_last_error());
        return 1;
    }
    dg_manual_seed(ctx, seed);
    int ndim;
    int64_t shape[3];
    dg_module *m = dg_tools_build_model(ctx, model, bn, &ndim, shape);
    dg_infer_model *im = NULL;
    if (m) {
        dg_module_train(m, false);
        im = ckpt ? dg_infer_model_from_checkpoint(ctx, m, ndim, shape, ckpt)
                  : dg_infer_model_from_module(m, ndim, shape);
    }
    int rc = 1;
    if (im && !dg_onnx_save(im, out)) {
        printf("dgrad-export: wrote %s (%d ops, %zu weights)\n", out, dg_infer_model_num_ops(im),
               dg_infer_model_num_weights(im));
        rc = 0;
    } else {
        fprintf(stderr, "dgrad-export: %s\n", dg_last_error());
    }
    dg_infer_model_free(im);
    dg_ctx_free(ctx);
    return rc;
}
