/* test_onnx - ONNX import and export, and the inference API.
 *
 *  - PyTorch's files (tests/fixtures/onnx, make_onnx_fixtures.py: MLP, CNN with
 *    batch norm folded or kept, AvgPool, Dropout, Reshape, LogSoftmax) import
 *    and give PyTorch's outputs on the first 8 MNIST test images (atol and
 *    rtol 1e-5), at batch 8 and one sample at a time; saved again by dgrad
 *    and reloaded they give the same outputs;
 *  - an op dgrad does not import is a one-line error naming op and node;
 *  - a dgrad net with every exportable module (conv with stride and
 *    padding, batch norm with non-trivial statistics, max and padded
 *    average pools, dropout, flatten, linear) exported, imported and run
 *    equals the module's own eval forward;
 *  - bad input: wrong sample shape, garbage and truncated files, a missing
 *    file, a bad batch; each a one-line message naming the culprit;
 *  - two threads share one model through their own contexts and get the
 *    single-thread results; runs up to max_batch allocate nothing.
 * With a directory argument it also writes there variant.onnx, its inputs
 * (variant_in.bin, [16, 1, 28, 28]) and the module's outputs
 * (variant_out.bin), raw float32, for test_onnx_ort.py to give onnxruntime.
 * Without DG_MNIST_DIR the PyTorch-fixture checks are skipped (exit 77 if
 * all else passed).
 */
#include "dgrad/data.h"
#include "dgrad/onnx.h"
#include "dgrad/ops.h"
#include "test_util.h"

#include <pthread.h>
#include <unistd.h>

#define NIMG 8

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = '\0';
    fclose(f);
    return s;
}

static void check_one_line(const char *msg) {
    CHECKF(msg[0] && !strchr(msg, '\n'), "message is not one line: '%s'", msg);
}

/* Runs model on x (batch rows), into y; false on error. */
static bool run_model(const dg_infer_model *m, const float *x, int64_t batch, float *y) {
    dg_infer_ctx *c = dg_infer_ctx_new(m, DG_CPU, batch);
    bool ok = c && !dg_infer_run(c, x, batch, y);
    dg_infer_ctx_free(c);
    return ok;
}

static int max_abs_index(const float *a, const float *b, int64_t n, double *d) {
    int k = 0;
    *d = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs((double)a[i] - b[i]) > *d) {
            *d = fabs((double)a[i] - b[i]);
            k = (int)i;
        }
    return k;
}

/* ---- PyTorch's files ------------------------------------------------------- */

static void test_torch_fixtures(const char *fixtures, const char *mnist) {
    char path[1024];
    snprintf(path, sizeof path, "%s/onnx/torch_outputs.txt", fixtures);
    char *text = read_text(path);
    CHECKF(text != NULL, "cannot read %s", path);
    if (!text) return;
    dg_dataset ds;
    if (dg_dataset_load_mnist(mnist, false, &ds)) {
        CHECKF(false, "MNIST: %s", dg_last_error());
        free(text);
        return;
    }
    float x[NIMG * 784];
    for (int i = 0; i < NIMG; i++) {
        int32_t label;
        CHECK(!dg_dataset_get(&ds, i, x + i * 784, &label));
    }
    int cases = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "case ", 5)) continue;
        char file[256];
        int rows, cols, off;
        if (sscanf(line, "case %255s %d %d %n", file, &rows, &cols, &off) != 3 || rows != NIMG) {
            CHECKF(false, "bad line in torch_outputs.txt: %.60s", line);
            continue;
        }
        if (strstr(file, "tanh")) continue;   /* the error case */
        cases++;
        float *ref = malloc((size_t)rows * cols * sizeof *ref), *y = malloc((size_t)rows * cols * sizeof *y),
              *y1 = malloc((size_t)rows * cols * sizeof *y1), *y2 = malloc((size_t)rows * cols * sizeof *y2);
        char *p = line + off;
        for (int i = 0; i < rows * cols; i++) ref[i] = strtof(p, &p);
        snprintf(path, sizeof path, "%s/onnx/%s", fixtures, file);
        dg_clear_error();
        dg_infer_model *m = dg_onnx_load(path);
        CHECKF(m != NULL, "%s does not load", file);
        if (m) {
            CHECK_EQ_INT(dg_infer_model_input_size(m), 784);
            CHECK_EQ_INT(dg_infer_model_output_size(m), cols);
            CHECK(run_model(m, x, NIMG, y));
            double d;
            int k = max_abs_index(y, ref, rows * cols, &d);
            printf("test_onnx: %s vs PyTorch: max |diff| %.3g\n", file, d);
            for (int i = 0; i < rows * cols; i++) CHECK_NEAR(y[i], ref[i], 1e-5, 1e-5);
            (void)k;
            /* one sample at a time, in a context made for 8 */
            dg_infer_ctx *c = dg_infer_ctx_new(m, DG_CPU, NIMG);
            CHECK_NOT_NULL(c);
            for (int i = 0; c && i < NIMG; i++) CHECK(!dg_infer_run(c, x + i * 784, 1, y1 + i * cols));
            for (int i = 0; i < rows * cols; i++) CHECK_NEAR(y1[i], y[i], 1e-6, 1e-6);
            dg_infer_ctx_free(c);
            /* saved by dgrad and read back: the same */
            char tmp[64];
            snprintf(tmp, sizeof tmp, "/tmp/test_onnx_%ld.onnx", (long)getpid());
            CHECK(!dg_onnx_save(m, tmp));
            dg_infer_model *m2 = dg_onnx_load(tmp);
            CHECKF(m2 != NULL, "re-saved %s does not load", file);
            if (m2 && run_model(m2, x, NIMG, y2)) CHECK(!memcmp(y2, y, (size_t)rows * cols * sizeof *y));
            else CHECK(false);
            dg_infer_model_free(m2);
            remove(tmp);
        }
        dg_infer_model_free(m);
        free(ref);
        free(y);
        free(y1);
        free(y2);
    }
    CHECK_EQ_INT(cases, 4);
    dg_dataset_free(&ds);
    free(text);
}

static void test_unsupported_op(const char *fixtures) {
    char path[1024];
    snprintf(path, sizeof path, "%s/onnx/tanh_torch.onnx", fixtures);
    dg_clear_error();
    dg_infer_model *m = dg_onnx_load(path);
    CHECK(m == NULL);
    const char *e = dg_last_error();
    CHECK_CONTAINS(e, "op 'Tanh'");
    CHECK_CONTAINS(e, "node '/2/Tanh'");
    CHECK_CONTAINS(e, "tanh_torch.onnx");
    check_one_line(e);
    dg_infer_model_free(m);
}

/* ---- dgrad's own export ------------------------------------------------------ */

/* Every exportable module, shapes that exercise stride, padding, pools. */
static dg_module *variant_net(dg_ctx *ctx) {
    int64_t k3[2] = { 3, 3 }, k2[2] = { 2, 2 }, p1[2] = { 1, 1 }, s2[2] = { 2, 2 }, s1[2] = { 1, 1 };
    dg_module *m[12];
    int n = 0;
    m[n++] = dg_nn_conv2d(ctx, 1, 6, k3, NULL, p1, NULL, 1, false);
    m[n++] = dg_nn_batch_norm2d(ctx, 6);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_max_pool2d(ctx, k2, NULL, NULL);                  /* 14x14 */
    m[n++] = dg_nn_conv2d(ctx, 6, 8, k3, s2, p1, NULL, 1, true);     /* 7x7 */
    m[n++] = dg_nn_batch_norm2d(ctx, 8);
    m[n++] = dg_nn_avg_pool2d(ctx, k3, s1, p1);                      /* 7x7, counts padding */
    m[n++] = dg_nn_flatten(ctx);
    m[n++] = dg_nn_dropout(ctx, 0.3f);
    m[n++] = dg_nn_linear(ctx, 8 * 7 * 7, 10, true);
    dg_module *seq = dg_nn_sequential(ctx, n, m);
    dg_tensor **bufs;
    int nb = dg_module_buffers(seq, &bufs);
    for (int i = 0; i < nb; i++) {   /* running mean, then var, per batch norm */
        if (i % 2 == 0) dg_init_uniform(bufs[i], -0.3f, 0.3f);
        else dg_init_uniform(bufs[i], 0.5f, 1.5f);
    }
    dg_tensor **params;
    int np = dg_module_parameters(seq, &params);
    for (int i = 0; i < np; i++)
        if (params[i]->ndim == 1 && dg_numel(params[i]) < 10) dg_init_uniform(params[i], 0.5f, 1.5f);
    return seq;
}

static bool write_floats(const char *dir, const char *name, const float *v, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(v, sizeof *v, n, f) == n;
    if (f) ok = fclose(f) == 0 && ok;
    return ok;
}

static void test_export_roundtrip(const char *outdir) {
    enum { B = 16 };
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 15);
    dg_module *net = variant_net(ctx);
    CHECK_NOT_NULL(net);
    dg_module_train(net, false);
    float *x = malloc(B * 784 * sizeof *x), ref[B * 10], y[B * 10], y2[B * 10];
    dgt_rng rng = { 7 };
    dgt_fill(&rng, x, B * 784, DGT_N);
    /* the module's own forward, eval mode, no grad */
    dg_set_grad_enabled(ctx, false);
    int64_t xs[4] = { B, 1, 28, 28 };
    dg_tensor *out = dg_module_forward(net, dg_tensor_from(ctx, DG_F32, 4, xs, x));
    CHECK_NOT_NULL(out);
    if (out) dg_tensor_to_host(dg_contiguous(out), ref);
    dg_ctx_reset_step(ctx);

    int64_t sample[3] = { 1, 28, 28 };
    dg_infer_model *m = dg_infer_model_from_module(net, 3, sample);
    CHECK_NOT_NULL(m);
    if (m) {
        CHECK_EQ_INT(dg_infer_model_num_ops(m), 10);
        CHECK(!strcmp(dg_infer_model_op(m, 1), "BatchNormalization"));
        int64_t os[DG_MAX_DIMS];
        CHECK_EQ_INT(dg_infer_model_output_shape(m, os), 1);
        CHECK_EQ_INT(os[0], 10);
        CHECK(run_model(m, x, B, y));
        for (int i = 0; i < B * 10; i++) CHECK_NEAR(y[i], ref[i], 1e-5, 1e-5);
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/test_onnx_rt_%ld.onnx", (long)getpid());
    CHECK(!dg_onnx_export(net, 3, sample, tmp));
    dg_infer_model *m2 = dg_onnx_load(tmp);
    CHECK_NOT_NULL(m2);
    if (m2) {
        CHECK(run_model(m2, x, B, y2));
        CHECK(!memcmp(y, y2, sizeof y));   /* the same graph and weights: bitwise */
    }
    if (outdir) {
        char path[1024];
        snprintf(path, sizeof path, "%s/variant.onnx", outdir);
        CHECK(!dg_onnx_export(net, 3, sample, path));
        CHECK(write_floats(outdir, "variant_in.bin", x, B * 784));
        CHECK(write_floats(outdir, "variant_out.bin", ref, B * 10));
    }
    remove(tmp);

    /* bad input */
    dg_clear_error();
    int64_t wrong[1] = { 100 };
    CHECK(dg_infer_model_from_module(net, 1, wrong) == NULL);
    CHECK_CONTAINS(dg_last_error(), "/0/Conv");
    check_one_line(dg_last_error());
    dg_module *lin = dg_nn_linear(ctx, 784, 10, true);
    dg_clear_error();
    CHECK(dg_infer_model_from_module(lin, 1, wrong) == NULL);
    CHECK_CONTAINS(dg_last_error(), "input has 100 features");
    dg_clear_error();
    CHECK(dg_onnx_export(NULL, 1, wrong, tmp) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "module is NULL");
    dg_clear_error();
    int64_t neg[1] = { -3 };
    CHECK(dg_infer_model_from_module(lin, 1, neg) == NULL);
    CHECK_CONTAINS(dg_last_error(), "dim 0 is -3");
    if (m) {
        dg_infer_ctx *c = dg_infer_ctx_new(m, DG_CPU, 2);
        dg_clear_error();
        CHECK(dg_infer_run(c, x, 0, y) == DG_ERR);
        CHECK_CONTAINS(dg_last_error(), "batch must be at least 1");
        dg_infer_ctx_free(c);
        dg_clear_error();
        CHECK(dg_infer_ctx_new(m, DG_CPU, 0) == NULL);
        CHECK_CONTAINS(dg_last_error(), "max_batch");
    }
    dg_infer_model_free(m);
    dg_infer_model_free(m2);
    free(x);
    dg_ctx_free(ctx);
}

static void test_bad_files(const char *fixtures) {
    dg_clear_error();
    CHECK(dg_onnx_load("/nonexistent/model.onnx") == NULL);
    CHECK_CONTAINS(dg_last_error(), "/nonexistent/model.onnx: cannot open");
    static const char junk[] = "this is not a protobuf \xff\xff\xff\xff";
    dg_clear_error();
    CHECK(dg_onnx_load_buffer(junk, sizeof junk, "junk.onnx") == NULL);
    CHECK_CONTAINS(dg_last_error(), "junk.onnx");
    check_one_line(dg_last_error());
    char path[1024];
    snprintf(path, sizeof path, "%s/onnx/mlp_torch.onnx", fixtures);
    FILE *f = fopen(path, "rb");
    static char buf[1 << 18];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    CHECK(n > 1000);
    /* cut in the middle of the weights: the parse fails, nothing leaks */
    dg_clear_error();
    CHECK(dg_onnx_load_buffer(buf, n / 2, "half.onnx") == NULL);
    CHECK_CONTAINS(dg_last_error(), "half.onnx");
    /* every prefix of the first bytes: an error or (never) a model, no crash */
    for (size_t k = 0; k < 400 && k < n; k += 7) {
        dg_clear_error();
        dg_infer_model *m = dg_onnx_load_buffer(buf, k, "prefix.onnx");
        CHECK(m == NULL && dg_last_error()[0]);
        dg_infer_model_free(m);
    }
}

/* ---- threads and steady state ------------------------------------------------- */

typedef struct {
    const dg_infer_model *m;
    const float *x, *ref;       /* 16 samples and their outputs */
    int failures;
    uint64_t mallocs_after_warmup, mallocs_end;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    dg_infer_ctx *c = dg_infer_ctx_new(a->m, DG_CPU, 16);
    if (!c) {
        a->failures++;
        return NULL;
    }
    a->mallocs_after_warmup = dg_infer_ctx_mallocs(c);
    float y[16 * 10];
    for (int it = 0; it < 40; it++) {
        int b = 1 + (it * 7) % 16, start = (it * 5) % (17 - b);
        if (dg_infer_run(c, a->x + start * 784, b, y)) {
            a->failures++;
            continue;
        }
        for (int i = 0; i < b * 10; i++)
            if (!dgt_close(y[i], a->ref[start * 10 + i], 1e-6, 1e-6)) a->failures++;
    }
    a->mallocs_end = dg_infer_ctx_mallocs(c);
    dg_infer_ctx_free(c);
    return NULL;
}

static void test_threads(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 3);
    dg_module *net = variant_net(ctx);
    int64_t sample[3] = { 1, 28, 28 };
    dg_infer_model *m = dg_infer_model_from_module(net, 3, sample);
    dg_ctx_free(ctx);   /* the model holds its own copy of the weights */
    CHECK_NOT_NULL(m);
    if (!m) return;
    float *x = malloc(16 * 784 * sizeof *x), ref[16 * 10];
    dgt_rng rng = { 11 };
    dgt_fill(&rng, x, 16 * 784, DGT_N);
    /* reference: each sample alone (batch 1) */
    dg_infer_ctx *c = dg_infer_ctx_new(m, DG_CPU, 1);
    for (int i = 0; c && i < 16; i++) CHECK(!dg_infer_run(c, x + i * 784, 1, ref + i * 10));
    dg_infer_ctx_free(c);
    worker_arg args[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        args[t] = (worker_arg){ .m = m, .x = x, .ref = ref };
        CHECK(pthread_create(&th[t], NULL, worker, &args[t]) == 0);
    }
    for (int t = 0; t < 2; t++) {
        pthread_join(th[t], NULL);
        CHECK_EQ_INT(args[t].failures, 0);
        CHECKF(args[t].mallocs_end == args[t].mallocs_after_warmup,
               "worker %d: the arena allocated %llu times after warm-up", t,
               (unsigned long long)(args[t].mallocs_end - args[t].mallocs_after_warmup));
    }
    free(x);
    dg_infer_model_free(m);
}

int main(int argc, char **argv) {
    const char *fixtures = getenv("DG_FIXTURES"), *mnist = getenv("DG_MNIST_DIR");
    if (!fixtures || !fixtures[0]) {
        fprintf(stderr, "test_onnx: DG_FIXTURES is not set\n");
        return 1;
    }
    bool skipped = !mnist || !mnist[0];
    if (!skipped) test_torch_fixtures(fixtures, mnist);
    else printf("test_onnx: DG_MNIST_DIR is empty: PyTorch-fixture checks skipped\n");
    test_unsupported_op(fixtures);
    test_export_roundtrip(argc > 1 ? argv[1] : NULL);
    test_bad_files(fixtures);
    test_threads();
    int rc = dgt_report("test_onnx");
    return rc == 0 && skipped ? 77 : rc;
}
