/* dgrad-infer - runs a model on MNIST test images: an ONNX file through
 * dgrad's inference API, or a checkpoint through the module's own forward.
 *
 *   dgrad-infer (MODEL.onnx | --model mlp|cnn [--no-bn] --checkpoint PATH)
 *               --data DIR [--limit N] [--batch-size B] [--normalize] [--out FILE]
 *
 * Prints the accuracy on the first N (default all) t10k images; --out
 * writes the outputs as raw little-endian float32, N rows. Inputs are
 * pixel / 255 (ToTensor), or with --normalize (pixel/255 - 0.1307) / 0.3081,
 * as the trainer's flag of that name.
 */
#include "dgrad/checkpoint.h"
#include "dgrad/data.h"
#include "dgrad/onnx.h"
#include "dgrad/ops.h"
#include "models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(const char *msg) {
    if (msg) fprintf(stderr, "dgrad-infer: %s\n", msg);
    fprintf(stderr, "usage: dgrad-infer (MODEL.onnx | --model mlp|cnn [--no-bn] --checkpoint PATH) --data DIR "
                    "[--limit N] [--batch-size B] [--normalize] [--out FILE]\n");
    return 2;
}

static long long num(const char *flag, const char *s, int *bad) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || v < 1) {
        fprintf(stderr, "dgrad-infer: %s: '%s' is not a positive integer\n", flag, s);
        *bad = 1;
    }
    return v;
}

/* The module's forward in eval mode without grad, on one batch. */
static dg_status module_run(dg_ctx *ctx, dg_module *m, int ndim, const int64_t *shape, const float *x,
                            int64_t b, float *y, int64_t nout) {
    int64_t s[4] = { b, shape[0], ndim > 1 ? shape[1] : 0, ndim > 2 ? shape[2] : 0 };
    dg_ctx_reset_step(ctx);
    dg_tensor *out = dg_module_forward(m, dg_tensor_from(ctx, DG_F32, ndim + 1, s, x));
    if (!out) return DG_ERR;
    if (dg_numel(out) != b * nout) return dg_set_error("model output has %lld values, expected %lld",
                                                       (long long)dg_numel(out), (long long)(b * nout));
    dg_tensor_to_host(dg_contiguous(out), y);
    return DG_OK;
}

int main(int argc, char **argv) {
    const char *onnx = NULL, *model = NULL, *ckpt = NULL, *data = NULL, *outp = NULL;
    bool bn = true, normalize = false;
    long long limit = 0, bs = 256;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--model") && more) model = argv[++i];
        else if (!strcmp(a, "--checkpoint") && more) ckpt = argv[++i];
        else if (!strcmp(a, "--data") && more) data = argv[++i];
        else if (!strcmp(a, "--out") && more) outp = argv[++i];
        else if (!strcmp(a, "--limit") && more) limit = num(a, argv[++i], &bad);
        else if (!strcmp(a, "--batch-size") && more) bs = num(a, argv[++i], &bad);
        else if (!strcmp(a, "--no-bn")) bn = false;
        else if (!strcmp(a, "--normalize")) normalize = true;
        else if (a[0] != '-' && !onnx) onnx = a;
        else {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown flag or missing value: %s", a);
            return usage(msg);
        }
    }
    if (bad) return 2;
    if (!data) return usage("--data DIR is required");
    if (!onnx == !model) return usage("give a MODEL.onnx or --model");
    if (model && !ckpt) return usage("--model needs --checkpoint PATH");
    dg_dataset ds;
    if (dg_dataset_load_mnist(data, false, &ds)) {
        fprintf(stderr, "dgrad-infer: %s\n", dg_last_error());
        return 1;
    }
    int64_t n = limit && limit < ds.n ? limit : ds.n;
    dg_ctx *ctx = NULL;
    dg_module *m = NULL;
    dg_infer_model *im = NULL;
    dg_infer_ctx *ic = NULL;
    int ndim = 0;
    int64_t shape[DG_MAX_DIMS];
    int64_t nin = 784, nout = 10;
    if (onnx) {
        im = dg_onnx_load(onnx);
        if (im) {
            ndim = dg_infer_model_input_shape(im, shape);
            nin = dg_infer_model_input_size(im);
            nout = dg_infer_model_output_size(im);
            ic = dg_infer_ctx_new(im, DG_CPU, bs);
        }
    } else {
        ctx = dg_ctx_new(DG_CPU);
        if (ctx) m = dg_tools_build_model(ctx, model, bn, &ndim, shape);
        if (m) {
            dg_train_state st = { 0 };
            st.num_buffers = dg_module_buffers(m, &st.buffers);
            dg_module_train(m, false);
            dg_set_grad_enabled(ctx, false);
            if (dg_checkpoint_load_local(ckpt, ctx, NULL, &st, NULL, 0)) m = NULL;
        }
    }
    float *x = malloc((size_t)(bs * nin) * sizeof *x), *y = malloc((size_t)(n * nout) * sizeof *y);
    int rc = 1;
    if ((onnx ? !ic : !m) || !x || !y || nin != ds.sample_size) {
        if (x && y && nin != ds.sample_size && (ic || m))
            fprintf(stderr, "dgrad-infer: the model takes %lld floats per sample, MNIST has %lld\n",
                    (long long)nin, (long long)ds.sample_size);
        else fprintf(stderr, "dgrad-infer: %s\n", dg_last_error()[0] ? dg_last_error() : "out of memory");
        goto done;
    }
    int64_t correct = 0;
    for (int64_t i0 = 0; i0 < n; i0 += bs) {
        int64_t b = n - i0 < bs ? n - i0 : bs;
        for (int64_t i = 0; i < b; i++) {
            int32_t label;
            dg_dataset_get(&ds, i0 + i, x + i * nin, &label);
            if (normalize)
                for (int64_t k = 0; k < nin; k++) x[i * nin + k] = (x[i * nin + k] - 0.1307f) / 0.3081f;
        }
        float *yb = y + i0 * nout;
        if (onnx ? dg_infer_run(ic, x, b, yb) : module_run(ctx, m, ndim, shape, x, b, yb, nout)) {
            fprintf(stderr, "dgrad-infer: %s\n", dg_last_error());
            goto done;
        }
        for (int64_t i = 0; i < b; i++) {
            int best = 0;
            for (int k = 1; k < nout; k++)
                if (yb[i * nout + k] > yb[i * nout + best]) best = k;
            correct += best == ds.labels[i0 + i];
        }
    }
    printf("dgrad-infer: %lld images, accuracy %.2f%%\n", (long long)n, 100.0 * (double)correct / (double)n);
    rc = 0;
    if (outp) {
        FILE *f = fopen(outp, "wb");
        if (!f || fwrite(y, sizeof *y, (size_t)(n * nout), f) != (size_t)(n * nout) || fclose(f)) {
            fprintf(stderr, "dgrad-infer: cannot write %s\n", outp);
            rc = 1;
        }
    }
done:
    free(x);
    free(y);
    dg_infer_ctx_free(ic);
    dg_infer_model_free(im);
    dg_ctx_free(ctx);
    dg_dataset_free(&ds);
    return rc;
}
