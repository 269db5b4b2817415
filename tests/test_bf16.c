/* test_bf16.c - bfloat16 tensors and CPU autocast (dgrad/amp.h, amp.c,
 * cpu/gemm_bf16.c).
 *
 *  1. Conversions against PyTorch 1.13 (fixtures/bf16.txt, made by
 *     fixtures/make_bf16_fixtures.py): 1000 float32 bit patterns (ties,
 *     overflow to inf, NaNs, subnormals, random) rounded to nearest even,
 *     bit for bit (NaN: any NaN of the same sign, since PyTorch's payload
 *     depends on its code path), by dg_f32_to_bf16 and by the CPU
 *     backend's vector slot; widening every one of the 65536 bf16 patterns
 *     and rounding back gives the pattern again.
 *  2. The bf16 GEMM, every kernel family (oneDNN in DG_HAVE_DNNL builds,
 *     AVX512_BF16 when the CPU has it, and the portable one), every transpose, strides above the minimum,
 *     alpha, beta (beta == 0 on a NaN-filled C), edge sizes, against a
 *     double-precision product:
 *       - of the bf16-rounded inputs: the products are exact in float32, so
 *         only float32 summation error remains, |c - ref| <= 2 (k + 2)
 *         2^-24 (|alpha| sum_p |a b| + |beta c0|) (test_gemm's bound);
 *       - of the float32 inputs: each input then has a relative error of
 *         at most 2^-8 (the unit roundoff of bf16's 8-bit significand), a
 *         product at most 2^-7 + 2^-16, so |c - ref| <= (2^-7 + 2^-16)
 *         |alpha| sum_p |a b| plus the bound above.
 *  3. dg_linear, dg_matmul and dg_conv2d under autocast, forward and
 *     backward (loss sum(out * w)), against PyTorch's
 *     torch.autocast("cpu", dtype=torch.bfloat16) (fixtures/bf16.txt).
 *     PyTorch rounds its outputs and gradients to bf16 (and the bias of
 *     conv2d/linear); dgrad keeps them float32, so each value may differ by
 *     a bf16 rounding of the result and of its terms:
 *     |d| <= 2^-7 (|ref| + rms(ref)) (two bf16 unit roundoffs of the value
 *     and of the tensor's scale, for sums that cancel). Gradients get
 *     2^-6 rms(ref) more: PyTorch 1.13's own CPU bf16 GEMM accumulates
 *     some backward products in bf16 (linear_nobias's input gradient is
 *     3% off float32 there, dgrad's 0.4%). The forward is also
 *     checked tightly against a double-precision product of the
 *     bf16-rounded inputs (1e-5 of sum |a b| + |bias|): the ops do round
 *     their operands to bf16.
 *  4. Bad input: autocast with float16, nested autocast, bfloat16 tensors
 *     outside autocast or in other ops, dg_astype to int32: one-line
 *     errors naming the culprit. dg_astype forward and backward.
 *  5. Training: a 20-32-4 MLP on separable synthetic data, SGD for 150
 *     steps under autocast: the loss falls below a quarter of its start,
 *     parameters and gradients stay float32, and the last loss is within
 *     0.05 of the same run in float32.
 * Run with DG_BF16_GEMM=portable|avx512|dnnl (tests bf16_portable,
 * bf16_avx512, bf16_dnnl), 3 and 5 go through that kernel. Part 2 covers
 * every family this build and CPU have, oneDNN's included.
 */
#include "test_util.h"
#include "fixture.h"

#include "dgrad/amp.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/tensor.h"

#include "gemm_bf16.h"
#include "backend-impl.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

static float rnd_float(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; }

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- 1. conversions ------------------------------------------------------------ */

static void test_convert_case(const fx_case *c) {
    const fx_tensor *in = fx_get(c, "in"), *out = fx_get(c, "out");
    CHECK(in && out && in->n == out->n);
    if (!in || !out) return;
    int64_t n = in->n;
    float *src = malloc(sizeof(float) * (size_t)n);
    uint16_t *vec = malloc(sizeof(uint16_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) src[i] = bits_f((uint32_t)in->i[i]);
    dg_backend_cpu.lowp.f32_to_bf16(vec, src, n);
    int bad = 0, nans = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)in->i[i];
        uint16_t want = (uint16_t)out->i[i], got = dg_f32_to_bf16(src[i]);
        bool want_nan = (want & 0x7f80) == 0x7f80 && (want & 0x7f);
        if ((u & 0x7fffffff) > 0x7f800000) {   /* NaN: PyTorch's payload varies */
            nans++;
            CHECKF(want_nan, "%s: PyTorch gave 0x%04x for NaN 0x%08x", c->name, want, u);
            bool ok = (got & 0x7f80) == 0x7f80 && (got & 0x7f) && (got >> 15) == (u >> 31);
            if (!ok && bad++ < 5) dgt_fail(__FILE__, __LINE__, "%s: NaN 0x%08x -> 0x%04x", c->name, u, got);
        } else if (got != want && bad++ < 5) {
            dgt_fail(__FILE__, __LINE__, "%s: 0x%08x -> 0x%04x, PyTorch 0x%04x", c->name, u, got, want);
        }
        if (vec[i] != got && bad++ < 5)
            dgt_fail(__FILE__, __LINE__, "%s: vector slot 0x%04x != scalar 0x%04x for 0x%08x", c->name,
                     vec[i], got, u);
    }
    CHECK(nans >= 8);
    printf("  %s: %lld values (%d NaNs), %d mismatches\n", c->name, (long long)n, nans, bad);
    free(src);
    free(vec);
}

static void test_widen_all(void) {
    int bad = 0;
    uint16_t all[65536];
    float wide[65536];
    for (int h = 0; h < 65536; h++) all[h] = (uint16_t)h;
    dg_backend_cpu.lowp.bf16_to_f32(wide, all, 65536);
    for (int h = 0; h < 65536; h++) {
        float f = dg_bf16_to_f32((uint16_t)h);
        uint32_t u;
        memcpy(&u, &f, 4);
        bool nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        if (u != (uint32_t)h << 16 || memcmp(&f, &wide[h], 4) != 0) bad++;
        if (!nan && dg_f32_to_bf16(f) != h) bad++;
        if (nan && !isnan(f)) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    printf("  widen/round-trip: 65536 patterns, %d bad\n", bad);
}

/* ---- 2. GEMM --------------------------------------------------------------------- */

static int64_t ngemm;

static void gemm_case(dg_bf16_isa isa, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                      float beta, int64_t pad) {
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    int64_t lda = ac + pad, ldb = bc + pad, ldc = n + pad;
    size_t alen = ar ? (size_t)((ar - 1) * lda + ac) : 1, blen = br ? (size_t)((br - 1) * ldb + bc) : 1;
    size_t clen = m ? (size_t)((m - 1) * ldc + n) : 1;
    float *af = malloc(alen * 4), *bf = malloc(blen * 4), *c = malloc(clen * 4), *c0 = malloc(clen * 4);
    uint16_t *a = malloc(alen * 2), *b = malloc(blen * 2);
    void *work = aligned_alloc(64, (DG_GEMM_BF16_WORK(m, n, k) + 63) / 64 * 64);
    for (size_t i = 0; i < alen; i++) { af[i] = rnd_float(); a[i] = dg_f32_to_bf16(af[i]); }
    for (size_t i = 0; i < blen; i++) { bf[i] = rnd_float(); b[i] = dg_f32_to_bf16(bf[i]); }
    for (size_t i = 0; i < clen; i++) c0[i] = c[i] = beta == 0.0f ? NAN : rnd_float();
    /* padding of A and B is NaN in bf16: it must not be read */
    for (size_t i = 0; i < alen; i++) if ((int64_t)i % lda >= ac) a[i] = 0x7fc0;
    for (size_t i = 0; i < blen; i++) if ((int64_t)i % ldb >= bc) b[i] = 0x7fc0;
    for (size_t i = 0; i < clen; i++) if ((int64_t)i % ldc >= n) c0[i] = c[i] = 12345.0f;
    bool ran = dg_gemm_bf16_with(isa, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, work);
    CHECK(ran);
    int bad = 0;
    for (int64_t i = 0; i < m && ran; i++) {
        for (int64_t j = 0; j < n; j++) {
            double r16 = 0, r32 = 0, mag = 0;
            for (int64_t p = 0; p < k; p++) {
                int64_t ia = ta ? p * lda + i : i * lda + p, ib = tb ? j * ldb + p : p * ldb + j;
                double x16 = dg_bf16_to_f32(a[ia]), y16 = dg_bf16_to_f32(b[ib]);
                r16 += x16 * y16;
                r32 += (double)af[ia] * bf[ib];
                mag += fabs(x16 * y16);
            }
            double cz = beta == 0.0f ? 0.0 : (double)beta * c0[i * ldc + j];
            double want16 = alpha * r16 + cz, want32 = alpha * r32 + cz;
            double tol = 2.0 * (double)(k + 2) * 0x1p-24 * (fabs(alpha) * mag + fabs(cz)) + 1e-30;
            double tol32 = (0x1p-7 + 0x1p-16) * fabs(alpha) * mag * 1.01 + tol;
            double got = c[i * ldc + j];
            if ((!(fabs(got - want16) <= tol) || !(fabs(got - want32) <= tol32)) && bad++ < 3)
                dgt_fail(__FILE__, __LINE__,
                         "%s ta=%d tb=%d %lldx%lldx%lld alpha=%g beta=%g: C[%lld,%lld] = %.9g, "
                         "bf16-input ref %.9g (tol %.3g), fp32-input ref %.9g (tol %.3g)",
                         dg_bf16_isa_name(isa), ta, tb, (long long)m, (long long)n, (long long)k,
                         alpha, beta, (long long)i, (long long)j, got, want16, tol, want32, tol32);
        }
        for (int64_t j = n; j < ldc && i + 1 < m; j++)
            if (c[i * ldc + j] != 12345.0f && bad++ < 3)
                dgt_fail(__FILE__, __LINE__, "%s: C padding written", dg_bf16_isa_name(isa));
    }
    ngemm++;
    free(af); free(bf); free(c); free(c0); free(a); free(b); free(work);
}

static void test_gemm(void) {
    static const int64_t sizes[][3] = {
        { 1, 1, 1 }, { 1, 1, 2 }, { 2, 3, 1 }, { 7, 5, 3 }, { 8, 32, 16 }, { 9, 33, 17 },
        { 16, 31, 64 }, { 17, 64, 65 }, { 64, 50, 784 }, { 64, 10, 50 }, { 50, 784, 64 },
        { 3, 100, 0 }, { 40, 70, 129 }, { 0, 5, 3 },
    };
    dg_bf16_isa isas[3] = { DG_BF16_ISA_DNNL, DG_BF16_ISA_AVX512BF16, DG_BF16_ISA_PORTABLE };
    for (int s = 0; s < 3; s++) {
        dg_bf16_isa isa = isas[s];
        uint16_t one = 0x3f80;
        float cc = 0;
        char w[256];
        if (!dg_gemm_bf16_with(isa, false, false, 1, 1, 1, 1.0f, &one, 1, &one, 1, 0.0f, &cc, 1, w)) {
            printf("  gemm %s: SKIPPED (not available on this CPU or build)\n", dg_bf16_isa_name(isa));
            continue;
        }
        int64_t before = ngemm;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            for (int t = 0; t < 4; t++) {
                const int64_t *z = sizes[i];
                gemm_case(isa, t & 1, t >> 1, z[0], z[1], z[2], 1.0f, 0.0f, 0);
                gemm_case(isa, t & 1, t >> 1, z[0], z[1], z[2], -0.75f, 0.5f, 3);
            }
        printf("  gemm %s: %lld cases\n", dg_bf16_isa_name(isa), (long long)(ngemm - before));
    }
}

/* ---- 3. autocast against PyTorch ------------------------------------------------------ */

/* double-precision forward over the bf16-rounded inputs: out and sum |terms| */
static void ref_forward(const fx_case *c, double *out, double *mag, int64_t nout) {
    const fx_tensor *x = fx_get(c, "in0"), *w = fx_get(c, "in1"), *b = fx_get(c, "in2");
    const fx_tensor *o = fx_get(c, "out");
#define R16(t, i) ((double)dg_bf16_to_f32(dg_f32_to_bf16((t)->f[i])))
    for (int64_t i = 0; i < nout; i++) out[i] = mag[i] = 0;
    if (strcmp(c->op, "linear") == 0) {
        int64_t in_f = w->shape[1], out_f = w->shape[0], rows = x->n / in_f;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out_f; j++) {
                double s = b ? b->f[j] : 0, m = b ? fabs(b->f[j]) : 0;
                for (int64_t p = 0; p < in_f; p++) {
                    double t = R16(x, r * in_f + p) * R16(w, j * in_f + p);
                    s += t;
                    m += fabs(t);
                }
                out[r * out_f + j] = s;
                mag[r * out_f + j] = m;
            }
    } else if (strcmp(c->op, "matmul") == 0) {
        /* 2-D, 1-D x 2-D, or batched [B1, 1, M, K] x [B2, K, N] */
        int64_t K = w->shape[w->ndim - 2], N = w->shape[w->ndim - 1];
        int64_t M = x->ndim == 1 ? 1 : x->shape[x->ndim - 2];
        int64_t B1 = x->ndim == 4 ? x->shape[0] : 1, B2 = w->ndim == 3 ? w->shape[0] : 1;
        for (int64_t p1 = 0; p1 < B1; p1++)
            for (int64_t p2 = 0; p2 < B2; p2++)
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++) {
                        double s = 0, m = 0;
                        for (int64_t p = 0; p < K; p++) {
                            double t = R16(x, (p1 * M + i) * K + p) * R16(w, (p2 * K + p) * N + j);
                            s += t;
                            m += fabs(t);
                        }
                        int64_t oi = ((p1 * B2 + p2) * M + i) * N + j;
                        out[oi] = s;
                        mag[oi] = m;
                    }
    } else {   /* conv2d */
        int64_t st[2], pd[2], dl[2];
        fx_argv_ints(c, "stride", st, 2);
        fx_argv_ints(c, "padding", pd, 2);
        fx_argv_ints(c, "dilation", dl, 2);
        int64_t G = fx_argi(c, "groups", 1);
        int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
        int64_t OC = w->shape[0], Cg = w->shape[1], KH = w->shape[2], KW = w->shape[3];
        int64_t OH = o->shape[2], OW = o->shape[3];
        for (int64_t nn = 0; nn < N; nn++)
            for (int64_t oc = 0; oc < OC; oc++)
                for (int64_t oy = 0; oy < OH; oy++)
                    for (int64_t ox = 0; ox < OW; ox++) {
                        double s = b ? b->f[oc] : 0, m = b ? fabs(b->f[oc]) : 0;
                        int64_t g = oc / (OC / G);
                        for (int64_t ci = 0; ci < Cg; ci++)
                            for (int64_t ky = 0; ky < KH; ky++)
                                for (int64_t kx = 0; kx < KW; kx++) {
                                    int64_t iy = oy * st[0] - pd[0] + ky * dl[0];
                                    int64_t ix = ox * st[1] - pd[1] + kx * dl[1];
                                    if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                    int64_t cin = g * Cg + ci;
                                    double t = R16(x, ((nn * C + cin) * H + iy) * W + ix) *
                                               R16(w, ((oc * Cg + ci) * KH + ky) * KW + kx);
                                    s += t;
                                    m += fabs(t);
                                }
                        int64_t oi = ((nn * OC + oc) * OH + oy) * OW + ox;
                        out[oi] = s;
                        mag[oi] = m;
                    }
    }
#undef R16
}

static int compare_torch(const char *name, const char *what, const dg_tensor *t, const fx_tensor *ref,
                         bool grad) {
    int64_t n = ref->n;
    CHECKF(t && dg_numel(t) == n, "%s %s: %lld values, PyTorch %lld", name, what,
           t ? (long long)dg_numel(t) : -1LL, (long long)n);
    if (!t || dg_numel(t) != n) return 1;
    CHECKF(t->dtype == DG_F32, "%s %s: dtype %s", name, what, dg_dtype_name(t->dtype));
    float *v = malloc(sizeof(float) * (size_t)n);
    dg_tensor_to_host(t, v);
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)ref->f[i] * ref->f[i];
    double rms = sqrt(ss / (double)(n ? n : 1)), worst = 0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)v[i] - ref->f[i]);
        double tol = 0x1p-7 * (fabs(ref->f[i]) + rms) + (grad ? 0x1p-6 * rms : 0.0);
        if (d / tol > worst) worst = d / tol;
        if (!(d <= tol) && bad++ < 3)
            dgt_fail(__FILE__, __LINE__, "%s %s[%lld]: %.9g, PyTorch %.9g (tol %.3g)", name, what,
                     (long long)i, v[i], ref->f[i], tol);
    }
    free(v);
    printf("    %-15s %-4s %6lld values, worst |d|/tol %.3f\n", name, what, (long long)n, worst);
    return bad;
}

static void test_autocast_case(const fx_case *c) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_tensor *in[3] = { NULL, NULL, NULL };
    const fx_tensor *ref_in[3];
    for (int k = 0; k < 3; k++) {
        char key[8];
        snprintf(key, sizeof key, "in%d", k);
        ref_in[k] = fx_get(c, key);
        if (!ref_in[k]) continue;
        in[k] = dg_param_new(ctx, key, ref_in[k]->ndim, ref_in[k]->shape);
        dg_tensor_copy_from_host(in[k], ref_in[k]->f);
    }
    CHECK(dg_autocast_begin(ctx, DG_BF16) == DG_OK);
    CHECK(dg_autocast_dtype(ctx) == DG_BF16);
    dg_tensor *out = NULL;
    if (strcmp(c->op, "linear") == 0) {
        out = dg_linear(in[0], in[1], in[2]);
    } else if (strcmp(c->op, "matmul") == 0) {
        out = dg_matmul(in[0], in[1]);
    } else {
        int64_t st[2], pd[2], dl[2];
        fx_argv_ints(c, "stride", st, 2);
        fx_argv_ints(c, "padding", pd, 2);
        fx_argv_ints(c, "dilation", dl, 2);
        out = dg_conv2d(in[0], in[1], in[2], st, pd, dl, fx_argi(c, "groups", 1));
    }
    dg_autocast_end(ctx);
    CHECK(dg_autocast_dtype(ctx) == DG_F32);
    CHECK_NOT_NULL(out);
    if (!out) { dg_ctx_free(ctx); return; }
    const fx_tensor *ref_out = fx_get(c, "out"), *ref_w = fx_get(c, "w");
    compare_torch(c->name, "out", out, ref_out, false);
    /* tight: a double product of the bf16-rounded operands */
    int64_t n = ref_out->n;
    double *r = malloc(sizeof(double) * (size_t)n), *mag = malloc(sizeof(double) * (size_t)n);
    float *v = malloc(sizeof(float) * (size_t)n);
    ref_forward(c, r, mag, n);
    dg_tensor_to_host(out, v);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(v[i] - r[i]) <= 1e-5 * mag[i] + 1e-30) && bad++ < 3)
            dgt_fail(__FILE__, __LINE__, "%s out[%lld]: %.9g, bf16-input double ref %.9g", c->name,
                     (long long)i, v[i], r[i]);
    free(r); free(mag); free(v);
    dg_tensor *w = dg_tensor_from(ctx, DG_F32, ref_w->ndim, ref_w->shape, ref_w->f);
    dg_tensor *loss = dg_sum(dg_mul(dg_reshape(out, ref_w->ndim, ref_w->shape), w));
    CHECK(dg_backward(loss) == DG_OK);
    for (int k = 0; k < 3; k++) {
        char key[8];
        snprintf(key, sizeof key, "g%d", k);
        const fx_tensor *g = fx_get(c, key);
        if (!g || !in[k]) continue;
        CHECK(in[k]->dtype == DG_F32 && in[k]->grad && in[k]->grad->dtype == DG_F32);
        compare_torch(c->name, key, in[k]->grad, g, true);
    }
    dg_ctx_free(ctx);
}

static void test_fixtures(void) {
    FILE *f = fx_open("bf16.txt");
    CHECK(f != NULL);
    if (!f) return;
    fx_case c;
    int r, nconv = 0, nauto = 0;
    while ((r = fx_read_case(f, &c)) == 1) {
        if (strcmp(c.op, "convert") == 0) {
            test_convert_case(&c);
            nconv++;
        } else {
            test_autocast_case(&c);
            nauto++;
        }
        fx_case_free(&c);
    }
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_INT(nconv, 2);
    CHECK(nauto >= 10);
    fclose(f);
}

/* ---- 4. bad input, dg_astype --------------------------------------------------------------- */

static void test_errors_and_astype(void) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    int64_t s[2] = { 2, 3 };
    float v[6] = { 1.0f, -2.5f, 3.0039062f, 1e-40f, 65504.0f, 0.1f };
    dg_tensor *x = dg_param_new(ctx, "x", 2, s);
    dg_tensor_copy_from_host(x, v);
    dg_clear_error();
    CHECK(dg_autocast_begin(ctx, DG_F16) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "float16");
    dg_clear_error();
    CHECK(dg_autocast_begin(ctx, DG_BF16) == DG_OK);
    CHECK(dg_autocast_begin(ctx, DG_BF16) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "already in autocast");
    dg_autocast_end(ctx);
    dg_clear_error();

    dg_tensor *h = dg_astype(x, DG_BF16);
    CHECK(h && h->dtype == DG_BF16 && h->requires_grad);
    for (int i = 0; i < 6; i++) CHECK_EQ_INT(dg_item_at(h, i) == dg_bf16_to_f32(dg_f32_to_bf16(v[i])), 1);
    CHECK(dg_astype(h, DG_BF16) == h);
    dg_clear_error();
    CHECK(dg_add(h, h) == NULL);
    CHECK_CONTAINS(dg_last_error(), "dg_add: expected a float32 tensor, got bfloat16");
    dg_clear_error();
    CHECK(dg_linear(h, x, NULL) == NULL);   /* outside autocast */
    CHECK_CONTAINS(dg_last_error(), "dg_linear");
    CHECK_CONTAINS(dg_last_error(), "bfloat16");
    dg_clear_error();
    CHECK(dg_astype(x, DG_I32) == NULL);
    CHECK_CONTAINS(dg_last_error(), "dg_astype: cannot convert float32 to int32");
    dg_clear_error();
    /* back to float32 and a loss: the gradient reaches x, in float32 */
    dg_tensor *f = dg_astype(h, DG_F32);
    CHECK(f && f->dtype == DG_F32);
    dg_tensor *wt = dg_full(ctx, 2, s, 2.0f);
    CHECK(dg_backward(dg_sum(dg_mul(f, wt))) == DG_OK);
    for (int i = 0; i < 6; i++) CHECK_NEAR(dg_item_at(x->grad, i), 2.0, 0, 0);
    /* a bf16 operand inside autocast: matmul of h [2,3] and x^T [3,2] */
    CHECK(dg_autocast_begin(ctx, DG_BF16) == DG_OK);
    dg_tensor *mm = dg_matmul(h, dg_transpose(x, 0, 1));
    dg_autocast_end(ctx);
    CHECK_NOT_NULL(mm);
    if (mm) {
        double want = 0;
        for (int p = 0; p < 3; p++) {
            double q = dg_bf16_to_f32(dg_f32_to_bf16(v[p]));
            want += q * q;
        }
        CHECK_NEAR(dg_item_at(mm, 0), want, 0, 1e-6);
    }
    dg_ctx_free(ctx);
}

/* ---- 5. training -------------------------------------------------------------------------------- */

static float train(bool amp, float *first) {
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(ctx, 7);
    int64_t s1[2] = { 32, 20 }, s2[2] = { 4, 32 }, b1s = 32, b2s = 4;
    dg_tensor *w1 = dg_param_new(ctx, "w1", 2, s1), *b1 = dg_param_new(ctx, "b1", 1, &b1s);
    dg_tensor *w2 = dg_param_new(ctx, "w2", 2, s2), *b2 = dg_param_new(ctx, "b2", 1, &b2s);
    dg_init_uniform(w1, -0.22f, 0.22f);
    dg_init_uniform(w2, -0.17f, 0.17f);
    enum { N = 64, D = 20 };
    float xs[N * D], centers[4][D];
    int32_t ys[N];
    uint64_t saved = rng_state;
    rng_state = 12345;
    for (int c = 0; c < 4; c++)
        for (int d = 0; d < D; d++) centers[c][d] = rnd_float();
    for (int i = 0; i < N; i++) {
        ys[i] = i % 4;
        for (int d = 0; d < D; d++) xs[i * D + d] = centers[ys[i]][d] + 0.5f * rnd_float();
    }
    rng_state = saved;
    dg_tensor *ps[4] = { w1, b1, w2, b2 };
    dg_optim *opt = dg_optim_sgd(ps, 4, dg_sgd_defaults(0.1f));
    float loss = 0;
    int64_t xsh[2] = { N, D }, ny = N;
    for (int step = 0; step < 150; step++) {
        dg_tensor *x = dg_tensor_from(ctx, DG_F32, 2, xsh, xs);
        dg_tensor *y = dg_tensor_from(ctx, DG_I32, 1, &ny, ys);
        if (amp) CHECK(dg_autocast_begin(ctx, DG_BF16) == DG_OK);
        dg_tensor *l = dg_cross_entropy(dg_linear(dg_relu(dg_linear(x, w1, b1)), w2, b2), y);
        if (amp) dg_autocast_end(ctx);
        CHECK_NOT_NULL(l);
        if (!l) break;
        loss = dg_item(l);
        if (step == 0) *first = loss;
        dg_optim_zero_grad(opt);
        CHECK(dg_backward(l) == DG_OK);
        int badp = -1;
        CHECK(dg_grads_finite(ctx, &badp));
        dg_optim_step(opt);
        dg_ctx_reset_step(ctx);
    }
    CHECK(w1->dtype == DG_F32 && w1->grad->dtype == DG_F32);
    dg_optim_free(opt);
    dg_ctx_free(ctx);
    return loss;
}

static void test_training(void) {
    float f16 = 0, f32 = 0;
    float l16 = train(true, &f16), l32 = train(false, &f32);
    printf("  training: bf16 autocast loss %.4f -> %.4f, float32 %.4f -> %.4f\n", f16, l16, f32, l32);
    CHECK(l16 < 0.25f * f16);
    CHECK_NEAR(l16, l32, 0.05, 0);
}

int main(void) {
    (void)fx_argf;
    printf("bf16 GEMM kernel used by the engine: %s\n", dg_bf16_isa_name(dg_gemm_bf16_isa()));
    const char *env = getenv("DG_BF16_GEMM");
    if (env && strcmp(env, "portable") == 0) CHECK(dg_gemm_bf16_isa() == DG_BF16_ISA_PORTABLE);
    if (env && strcmp(env, "avx512") == 0) CHECK(dg_gemm_bf16_isa() != DG_BF16_ISA_DNNL);
#ifdef DG_HAVE_DNNL
    if (env && strcmp(env, "dnnl") == 0) CHECK(dg_gemm_bf16_isa() == DG_BF16_ISA_DNNL);
#endif
    test_widen_all();
    test_gemm();
    test_fixtures();
    test_errors_and_astype();
    test_training();
    return dgt_report("test_bf16");
}
