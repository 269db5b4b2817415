/* test_vmath.c - core/src/cpu/vmath.h (the vectorizable exp, tanh, sigmoid
 * and erf of the CPU kernels) against double-precision libm, over a sweep
 * of the float range (every 1999th float bit pattern from -100 to 100, and a
 * dense grid across the branch points 0.55, 1 and 4) plus the edges (0, -0,
 * the clamps, +-inf). The bounds are the ones vmath.h documents: exp within
 * 2 ulp (relative 2.4e-7) where the result is a normal float; tanh within
 * 4e-7 relative; sigmoid within 4e-7 relative or 1e-30 absolute; erf within
 * 3e-7 absolute; the normal CDF within 4e-7 + 2.5e-7 x^2 relative left
 * of 0 (down to FLT_MIN; x^2 / 2 is rounded inside e^(-x^2 / 2)) and 3e-7
 * absolute right of it. The loops are compiled like the kernels' (DG_HOT), so the
 * vector code paths are the ones tested. */
#include "test_util.h"

#include "backend-impl.h"
#include "vmath.h"

#include <float.h>

enum { N_MAX = 1 << 21 };

static float xs[N_MAX], ys[N_MAX];

DG_HOT static void run(int f, const float *x, float *y, int n) {
    switch (f) {
    case 0: for (int i = 0; i < n; i++) y[i] = dg__vexp(x[i]); break;
    case 1: for (int i = 0; i < n; i++) y[i] = dg__vtanh(x[i]); break;
    case 2: for (int i = 0; i < n; i++) y[i] = dg__vsigmoid(x[i]); break;
    case 3: for (int i = 0; i < n; i++) y[i] = dg__verf(x[i]); break;
    default: for (int i = 0; i < n; i++) y[i] = dg__vphi(x[i]); break;
    }
}

static int fill(void) {
    int n = 0;
    for (uint32_t b = 0; b < 0x42c80000u; b += 1999) {   /* |x| up to 100 */
        float v;
        memcpy(&v, &b, sizeof v);
        DG_ASSERT(n + 2 <= N_MAX - 16384);
        xs[n++] = v;
        xs[n++] = -v;
    }
    for (int i = -2000; i <= 2000; i++) {   /* around the branch points */
        xs[n++] = 0.55f + (float)i * 1e-6f;
        xs[n++] = 1.0f + (float)i * 1e-6f;
        xs[n++] = -4.0f + (float)i * 1e-5f;
    }
    const float edge[] = { 0.0f, -0.0f, -87.3f, 88.3f, 10.0f, -10.0f, 1e-30f, -1e-30f, INFINITY, -INFINITY };
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) xs[n++] = edge[i];
    return n;
}

int main(void) {
    const int n = fill();
    const char *names[] = { "exp", "tanh", "sigmoid", "erf", "phi" };
    for (int f = 0; f < 5; f++) {
        run(f, xs, ys, n);
        double worst = 0.0;
        float worst_x = 0.0f;
        int bad = 0;
        for (int i = 0; i < n; i++) {
            double x = xs[i], ref, err, lim;
            switch (f) {
            case 0:
                if (x < -87.3 || x > 88.3) continue;   /* clamped: documented */
                ref = exp(x);
                if (ref < FLT_MIN) continue;
                err = fabs(ys[i] - ref) / ref;
                lim = 2.4e-7;
                break;
            case 1:
                ref = tanh(x);
                err = ref == 0.0 ? fabs((double)ys[i]) : fabs(ys[i] - ref) / fabs(ref);
                lim = 4e-7;
                break;
            case 2:
                ref = 1.0 / (1.0 + exp(-x));
                err = fabs(ys[i] - ref) < 1e-30 ? 0.0 : fabs(ys[i] - ref) / ref;
                lim = 4e-7;
                break;
            case 3:
                ref = erf(x);
                err = fabs(ys[i] - ref);
                lim = 3e-7;
                break;
            default:   /* the normal CDF: relative on the left (down to FLT_MIN), absolute on the right */
                ref = 0.5 * erfc(-x / sqrt(2.0));
                if (x < 0.0) {
                    if (ref < FLT_MIN) {
                        err = fabs((double)ys[i]) <= FLT_MIN ? 0.0 : 1.0;
                    } else {
                        err = fabs(ys[i] - ref) / ref;
                    }
                    lim = 4e-7 + 2.5e-7 * x * x;   /* x^2 / 2 rounded inside e^(-x^2 / 2) */
                } else {
                    err = fabs(ys[i] - ref);
                    lim = 3e-7;
                }
            }
            if (!(err <= lim)) bad++;
            if (!(err <= worst)) {
                worst = err;
                worst_x = xs[i];
            }
        }
        printf("%-8s %d points, largest error %.3g at x = %.9g\n", names[f], n, worst, (double)worst_x);
        CHECKF(bad == 0, "%s: %d points over the bound (largest error %.3g at x = %.9g)", names[f], bad,
               worst, (double)worst_x);
    }
    /* the signs and the fixed points */
    float z[4] = { 0.0f, -0.0f, INFINITY, -INFINITY }, o[4];
    run(1, z, o, 4);
    CHECK(o[0] == 0.0f && o[1] == 0.0f && o[2] == 1.0f && o[3] == -1.0f);
    run(3, z, o, 4);
    CHECK(o[0] == 0.0f && o[1] == 0.0f && o[2] == 1.0f && o[3] == -1.0f);
    run(0, z, o, 4);
    CHECK(o[0] == 1.0f && o[1] == 1.0f && o[3] == 0.0f);   /* e^-inf = 0: masked softmax entries */
    float q[1] = { NAN }, qo[1];   /* NaN in, NaN out, for each (a fully masked row's -inf - -inf) */
    for (int f = 0; f < 5; f++) {
        run(f, q, qo, 1);
        CHECKF(isnan(qo[0]), "%s(NaN) = %g", names[f], (double)qo[0]);
    }
    run(4, z, o, 4);
    CHECK(o[0] == 0.5f && o[1] == 0.5f && o[2] == 1.0f && o[3] == 0.0f);
    run(2, z, o, 4);
    CHECK(o[0] == 0.5f && o[1] == 0.5f && o[2] == 1.0f && o[3] >= 0.0f && o[3] < 1e-37f);
    return dgt_report("test_vmath");
}
