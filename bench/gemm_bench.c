/* gemm_bench.c - micro-benchmark: dg_gemm_small (core/src/gemm_cpu.c)
 * against OpenBLAS's cblas_sgemm, single-threaded, on the shapes of the
 * MNIST MLP, the CNN im2col products and a sweep for the crossover.
 * Not a test: it checks nothing but prints GFLOP/s.
 *
 * Build (from the repository root; the flags match a Release libdgrad):
 *   gcc -std=c11 -O3 -DNDEBUG -fno-math-errno -Icore/include -Icore/src -Icore/src/cpu \
 *       bench/gemm_bench.c core/src/cpu/gemm_cpu.c core/src/base.c \
 *       -o build-gemm/gemm_bench $(pkg-config --cflags --libs openblas) -lm
 * Run (OpenBLAS picks its kernels at load time, so one run per core type):
 *   OPENBLAS_NUM_THREADS=1 ./build-gemm/gemm_bench            # Prescott here
 *   OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Cooperlake ./build-gemm/gemm_bench
 *   ... ./build-gemm/gemm_bench --sweep     # crossover grid, ours / OpenBLAS
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "gemm_cpu.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef void (*gemm_fn)(bool, bool, int64_t, int64_t, int64_t, float, const float *, int64_t,
                        const float *, int64_t, float, float *, int64_t);

static void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                      float *c, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta,
                c, (blasint)ldc);
}

/* Best GFLOP/s of ours (g[0]) and OpenBLAS (g[1]) on this shape, over 31
 * trials of ~5 ms each that alternate between the two, so that both see the
 * same disturbances from other processes; the best is the least disturbed. */
static void gflops(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double g[2]) {
    static const gemm_fn fns[2] = { dg_gemm_small, blas_gemm };
    int64_t lda = ta ? m : k, ldb = tb ? k : n;
    float *a = malloc(sizeof(float) * (size_t)(m * k)), *b = malloc(sizeof(float) * (size_t)(k * n));
    float *c = malloc(sizeof(float) * (size_t)(m * n));
    if (!a || !b || !c) abort();
    for (int64_t i = 0; i < m * k; i++) a[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int64_t i = 0; i < k * n; i++) b[i] = (float)rand() / RAND_MAX - 0.5f;
    memset(c, 0, sizeof(float) * (size_t)(m * n));
    double flop = 2.0 * (double)m * (double)n * (double)k;
    int64_t reps[2];
    for (int f = 0; f < 2; f++) {
        double t0 = now();
        fns[f](ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
        double t1 = now() - t0;
        reps[f] = (int64_t)(0.005 / (t1 > 1e-7 ? t1 : 1e-7)) + 1;
        g[f] = 0.0;
    }
    for (int trial = 0; trial < 31; trial++)
        for (int f = 0; f < 2; f++) {
            double t0 = now();
            for (int64_t r = 0; r < reps[f]; r++)
                fns[f](ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
            double gf = flop * (double)reps[f] / (now() - t0) * 1e-9;
            if (gf > g[f]) g[f] = gf;
        }
    free(a);
    free(b);
    free(c);
}

typedef struct {
    bool ta, tb;
    int64_t m, n, k;
    const char *what;
} shape;

static const shape shapes[] = {
    { false, true, 64, 50, 784, "mlp fwd fc1 (b64)" },
    { true, false, 50, 784, 64, "mlp dW fc1 (b64)" },
    { false, false, 64, 784, 50, "mlp dx fc1 (b64)" },
    { false, true, 64, 10, 50, "mlp fwd fc2 (b64)" },
    { true, false, 10, 50, 64, "mlp dW fc2 (b64)" },
    { false, false, 64, 50, 10, "mlp dx fc2 (b64)" },
    { false, true, 1000, 50, 784, "mlp eval fc1" },
    { false, true, 256, 50, 784, "mlp fwd fc1 (b256)" },
    { true, false, 50, 784, 256, "mlp dW fc1 (b256)" },
    { false, false, 256, 784, 50, "mlp dx fc1 (b256)" },
    { false, true, 1024, 50, 784, "mlp fwd fc1 (b1024)" },
    { true, false, 50, 784, 1024, "mlp dW fc1 (b1024)" },
    { false, false, 1024, 784, 50, "mlp dx fc1 (b1024)" },
    { false, false, 24, 576 * 64, 25, "im2col conv1 (b64)" },
    { false, false, 32, 64 * 64, 600, "im2col conv2 (b64)" },
    { false, true, 24, 25, 576 * 64, "im2col conv1 dW (b64)" },
    { true, false, 600, 64 * 64, 32, "im2col conv2 dcol (b64)" },
    { false, false, 24, 576, 25, "cnn conv1 fwd, one image (b256)" },
    { false, true, 24, 25, 576, "cnn conv1 dW, one image (b256)" },
    { false, false, 32, 384, 600, "cnn conv2 fwd, chunk of 6 (b256)" },
    { false, true, 32, 600, 384, "cnn conv2 dW, chunk of 6 (b256)" },
    { true, false, 600, 384, 32, "cnn conv2 dcol, chunk of 6 (b256)" },
    { false, true, 2048, 192, 64, "vit fwd in_proj (b128 x 16 tokens)" },
    { false, true, 2048, 128, 64, "vit fwd fc1" },
    { false, true, 2048, 64, 128, "vit fwd fc2" },
    { false, false, 2048, 64, 192, "vit dx in_proj" },
    { false, false, 2048, 64, 128, "vit dx fc1" },
    { true, false, 192, 64, 2048, "vit dW in_proj" },
    { true, false, 64, 128, 2048, "vit dW fc2" },
    { true, true, 64, 50, 784, "TT (unused by the engine)" },
};

static const char *tname(bool ta, bool tb) {
    return ta ? (tb ? "TT" : "TN") : (tb ? "NT" : "NN");
}

int main(int argc, char **argv) {
    bool sweep = argc > 1 && !strcmp(argv[1], "--sweep");
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("OpenBLAS core: %s (OPENBLAS_CORETYPE=%s), threads %d\n", openblas_get_corename(),
           ct ? ct : "unset", openblas_get_num_threads());
    printf("%-4s %6s %6s %6s  %9s %9s  %s\n", "op", "m", "n", "k", "dg GF/s", "blas GF/s", "what");
    if (!sweep) {
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const shape *s = &shapes[i];
            double g[2];
            gflops(s->ta, s->tb, s->m, s->n, s->k, g);
            printf("%-4s %6lld %6lld %6lld  %9.1f %9.1f  %s\n", tname(s->ta, s->tb),
                   (long long)s->m, (long long)s->n, (long long)s->k, g[0], g[1], s->what);
        }
        return 0;
    }
    /* crossover: a grid of shapes, ratio ours / BLAS */
    static const int64_t ms[] = { 16, 64, 128, 256, 512, 1024 }, ns[] = { 64, 256, 784, 2048 },
                         ks[] = { 64, 256, 784 };
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
            for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++)
                for (size_t l = 0; l < sizeof ks / sizeof ks[0]; l++) {
                    bool ta = t == 1, tb = t == 2;
                    int64_t m = ms[i], n = ns[j], k = ks[l];
                    double g[2];
                    gflops(ta, tb, m, n, k, g);
                    printf("%-4s %6lld %6lld %6lld  %9.1f %9.1f  %.2g flop, ratio %.2f\n", tname(ta, tb),
                           (long long)m, (long long)n, (long long)k, g[0], g[1], (double)m * n * k,
                           g[0] / g[1]);
                }
    return 0;
}
