/* bf16_bench.c - training-step time on the CPU, float32 against bf16
 * autocast (dgrad/amp.h), one thread; and the raw GEMMs behind them.
 *
 *   build-bf16/tests/bf16_bench [repeats]
 *
 * Models (the same as bench/bf16_torch_bench.py, for PyTorch):
 *   mlp:    784-50-10 MLP (Linear, ReLU, Linear), batch 64, cross entropy;
 *   linear: one 1024 x 1024 Linear, batch 256, cross entropy over its
 *           1024 outputs (the input needs no gradient: forward + dW);
 *   cnn:    examples/mnist_cnn's net (conv 5x5x24, BN, max-pool, ReLU,
 *           conv 5x5x32, BN, max-pool, ReLU, fc 256, ReLU, fc 10) on
 *           random 1x28x28 inputs, batch 256 (its default), 5 steps a run.
 * A step is forward, backward, SGD update (lr 0.01) and the arena reset.
 * Each figure is the median over `repeats` runs (default 7) of the mean
 * step time of a run (mlp: 200 steps, linear: 10), after a warm-up run.
 * The GEMM lines time C = A B^T (float32 SGEMM, then each bf16 family:
 * oneDNN where built, the hand AVX512_BF16 kernel, the portable one; nan
 * when a family is missing) and the float32 -> bf16 conversion of A and B
 * that autocast adds before a bf16 product.
 * DG_BF16_GEMM=dnnl|avx512|portable picks the family the models use.
 * Speed lives here, never in the tests. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dgrad/amp.h"
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/tensor.h"

#include "backend-impl.h"
#include "gemm_bf16.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    int nlayers;
    int64_t dims[3];   /* in, hidden..., out */
    int64_t batch;
} model_def;

/* median step time in seconds */
static double bench_model(const model_def *md, bool amp, int repeats, int steps, float *last_loss) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 1);
    dg_tensor *ps[4];
    int np = 0;
    for (int l = 0; l < md->nlayers; l++) {
        int64_t ws[2] = { md->dims[l + 1], md->dims[l] }, bs = md->dims[l + 1];
        float bound = 1.0f / sqrtf((float)md->dims[l]);
        ps[np] = dg_param_new(ctx, "w", 2, ws);
        dg_init_uniform(ps[np++], -bound, bound);
        ps[np] = dg_param_new(ctx, "b", 1, &bs);
        dg_init_uniform(ps[np++], -bound, bound);
    }
    int64_t in = md->dims[0], out = md->dims[md->nlayers], B = md->batch;
    float *xs = malloc(sizeof(float) * (size_t)(B * in));
    int32_t *ys = malloc(sizeof(int32_t) * (size_t)B);
    for (int64_t i = 0; i < B * in; i++) xs[i] = dg_rand_uniform(ctx);
    for (int64_t i = 0; i < B; i++) ys[i] = (int32_t)(dg_rand_u64(ctx) % (uint64_t)out);
    dg_optim *opt = dg_optim_sgd(ps, np, dg_sgd_defaults(0.01f));
    int64_t xsh[2] = { B, in };
    double *t = malloc(sizeof(double) * (size_t)repeats);
    for (int r = -1; r < repeats; r++) {
        double t0 = now();
        for (int s = 0; s < steps; s++) {
            dg_tensor *x = dg_tensor_from(ctx, DG_F32, 2, xsh, xs);
            dg_tensor *y = dg_tensor_from(ctx, DG_I32, 1, &B, ys);
            if (amp && dg_autocast_begin(ctx, DG_BF16) != DG_OK) {
                fprintf(stderr, "bf16_bench: %s\n", dg_last_error());
                exit(1);
            }
            dg_tensor *h = x;
            for (int l = 0; l < md->nlayers; l++) {
                h = dg_linear(h, ps[2 * l], ps[2 * l + 1]);
                if (l + 1 < md->nlayers) h = dg_relu(h);
            }
            dg_tensor *loss = dg_cross_entropy(h, y);
            if (amp) dg_autocast_end(ctx);
            dg_optim_zero_grad(opt);
            dg_backward(loss);
            dg_optim_step(opt);
            *last_loss = dg_item(loss);
            dg_ctx_reset_step(ctx);
        }
        if (r >= 0) t[r] = (now() - t0) / steps;
    }
    double m = median(t, repeats);
    free(t); free(xs); free(ys);
    dg_optim_free(opt);
    dg_ctx_free(ctx);
    return m;
}

/* median step time in seconds of examples/mnist_cnn's net (with BN) */
static double bench_cnn(bool amp, int repeats, int steps, float *last_loss) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 1);
    int64_t k5[2] = { 5, 5 }, k2[2] = { 2, 2 };
    dg_module *m[12];
    int n = 0;
    m[n++] = dg_nn_conv2d(ctx, 1, 24, k5, NULL, NULL, NULL, 1, false);
    m[n++] = dg_nn_batch_norm2d(ctx, 24);
    m[n++] = dg_nn_max_pool2d(ctx, k2, NULL, NULL);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_conv2d(ctx, 24, 32, k5, NULL, NULL, NULL, 1, false);
    m[n++] = dg_nn_batch_norm2d(ctx, 32);
    m[n++] = dg_nn_max_pool2d(ctx, k2, NULL, NULL);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_flatten(ctx);
    m[n++] = dg_nn_linear(ctx, 32 * 4 * 4, 256, true);
    m[n++] = dg_nn_relu(ctx);
    m[n++] = dg_nn_linear(ctx, 256, 10, true);
    dg_module *net = dg_nn_sequential(ctx, n, m);
    dg_tensor **ps;
    int np = dg_module_parameters(net, &ps);
    int64_t B = 256, xsh[4] = { 256, 1, 28, 28 };
    float *xs = malloc(sizeof(float) * (size_t)(B * 784));
    int32_t *ys = malloc(sizeof(int32_t) * (size_t)B);
    for (int64_t i = 0; i < B * 784; i++) xs[i] = dg_rand_uniform(ctx);
    for (int64_t i = 0; i < B; i++) ys[i] = (int32_t)(dg_rand_u64(ctx) % 10u);
    dg_optim *opt = dg_optim_sgd(ps, np, dg_sgd_defaults(0.01f));
    double *t = malloc(sizeof(double) * (size_t)repeats);
    for (int r = -1; r < repeats; r++) {
        double t0 = now();
        for (int s = 0; s < steps; s++) {
            dg_tensor *x = dg_tensor_from(ctx, DG_F32, 4, xsh, xs);
            dg_tensor *y = dg_tensor_from(ctx, DG_I32, 1, &B, ys);
            if (amp && dg_autocast_begin(ctx, DG_BF16) != DG_OK) {
                fprintf(stderr, "bf16_bench: %s\n", dg_last_error());
                exit(1);
            }
            dg_tensor *loss = dg_cross_entropy(dg_module_forward(net, x), y);
            if (amp) dg_autocast_end(ctx);
            dg_optim_zero_grad(opt);
            dg_backward(loss);
            dg_optim_step(opt);
            *last_loss = dg_item(loss);
            dg_ctx_reset_step(ctx);
        }
        if (r >= 0) t[r] = (now() - t0) / steps;
    }
    double med = median(t, repeats);
    free(t); free(xs); free(ys);
    dg_optim_free(opt);
    dg_ctx_free(ctx);
    return med;
}

static double bench_gemm(int which, int64_t m, int64_t n, int64_t k, int repeats) {
    float *a = malloc(sizeof(float) * (size_t)(m * k)), *b = malloc(sizeof(float) * (size_t)(k * n));
    float *c = malloc(sizeof(float) * (size_t)(m * n));
    uint16_t *a16 = malloc(2 * (size_t)(m * k)), *b16 = malloc(2 * (size_t)(k * n));
    void *work = aligned_alloc(64, (DG_GEMM_BF16_WORK(m, n, k) + 63) / 64 * 64);
    for (int64_t i = 0; i < m * k; i++) a[i] = (float)(i % 17) * 0.1f - 0.8f;
    for (int64_t i = 0; i < k * n; i++) b[i] = (float)(i % 13) * 0.1f - 0.6f;
    dg_backend_cpu.lowp.f32_to_bf16(a16, a, m * k);
    dg_backend_cpu.lowp.f32_to_bf16(b16, b, k * n);
    double *t = malloc(sizeof(double) * (size_t)repeats);
    for (int r = -1; r < repeats; r++) {
        double t0 = now();
        if (which == 0)
            dg_backend_cpu.math.gemm(false, true, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        else if (which == 4) {   /* the float32 -> bf16 conversion of both operands */
            dg_backend_cpu.lowp.f32_to_bf16(a16, a, m * k);
            dg_backend_cpu.lowp.f32_to_bf16(b16, b, k * n);
        } else {
            dg_bf16_isa isa = which == 1 ? DG_BF16_ISA_AVX512BF16
                            : which == 3 ? DG_BF16_ISA_DNNL : DG_BF16_ISA_PORTABLE;
            if (!dg_gemm_bf16_with(isa, false, true, m, n, k, 1.0f, a16, k, b16, k, 0.0f, c, n, work)) {
                free(a); free(b); free(c); free(a16); free(b16); free(work); free(t);
                return NAN;   /* not in this build or on this CPU */
            }
        }
        if (r >= 0) t[r] = now() - t0;
    }
    double med = median(t, repeats);
    free(a); free(b); free(c); free(a16); free(b16); free(work); free(t);
    return med;
}

int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 7;
    if (repeats < 1) repeats = 1;
    dg_set_num_threads(1);
    printf("bf16 GEMM kernel: %s; one thread; median of %d runs\n",
           dg_bf16_isa_name(dg_gemm_bf16_isa()), repeats);
    model_def mlp = { 2, { 784, 50, 10 }, 64 }, lin = { 1, { 1024, 1024, 0 }, 256 };
    struct { const char *name; const model_def *md; int steps; } ms[2] = {
        { "mlp 784-50-10 b64", &mlp, 200 }, { "linear 1024x1024 b256", &lin, 10 } };
    for (int i = 0; i < 2; i++) {
        float l32 = 0, l16 = 0;
        double t32 = bench_model(ms[i].md, false, repeats, ms[i].steps, &l32);
        double t16 = bench_model(ms[i].md, true, repeats, ms[i].steps, &l16);
        printf("%-24s fp32 %9.1f us/step   bf16 autocast %9.1f us/step   speedup %.2fx  "
               "(loss after: %.4f / %.4f)\n", ms[i].name, t32 * 1e6, t16 * 1e6, t32 / t16, l32, l16);
    }
    {
        float l32 = 0, l16 = 0;
        double t32 = bench_cnn(false, repeats, 5, &l32), t16 = bench_cnn(true, repeats, 5, &l16);
        printf("%-24s fp32 %9.1f us/step   bf16 autocast %9.1f us/step   speedup %.2fx  "
               "(loss after: %.4f / %.4f)\n", "cnn mnist_cnn b256", t32 * 1e6, t16 * 1e6, t32 / t16, l32, l16);
    }
    int64_t shapes[3][3] = { { 256, 1024, 1024 }, { 64, 50, 784 }, { 1024, 1024, 256 } };
    for (int i = 0; i < 3; i++) {
        int64_t m = shapes[i][0], n = shapes[i][1], k = shapes[i][2];
        double ts = bench_gemm(0, m, n, k, repeats), tb = bench_gemm(1, m, n, k, repeats);
        double tp = bench_gemm(2, m, n, k, repeats), td = bench_gemm(3, m, n, k, repeats);
        double tc = bench_gemm(4, m, n, k, repeats);
        double fl = 2.0 * (double)(m * n * k) * 1e-9;
        printf("gemm A B^T %4lldx%4lldx%4lld: sgemm %8.1f us (%5.1f GFLOP/s)  bf16 dnnl %8.1f us (%6.1f)  "
               "avx512bf16 %8.1f us (%5.1f)  portable %8.1f us (%5.1f)  f32->bf16 of A and B %7.1f us\n",
               (long long)m, (long long)n, (long long)k, ts * 1e6, fl / ts, td * 1e6, fl / td,
               tb * 1e6, fl / tb, tp * 1e6, fl / tp, tc * 1e6);
    }
    return 0;
}
