/* vmath.h - exp, tanh, sigmoid and erf for float, written as straight-line
 * arithmetic (no libm calls, no branches on the data) so that the compiler
 * vectorizes the loops that call them; in a DG_HOT loop that is 16 lanes of
 * AVX-512 or 8 of AVX2 per instruction, where libm's tanhf and erff run one
 * value at a time (tanhf through expm1f was half of an LSTM epoch).
 *
 * Accuracy, against double-precision references over the whole float range
 * (tests/test_vmath.c checks it): exp within 2 ulp, tanh and sigmoid within
 * 4e-7 relative (absolute near 0 for sigmoid's far left tail), erf within
 * 3e-7 absolute, the normal CDF within 4e-7 + 2.5e-7 x^2 relative left of 0
 * and 3e-7 absolute right of it. Sleef's 1-ulp functions, which PyTorch uses, are closer;
 * these are the same order as the float rounding of the ops around them.
 * Internal: not installed. */
#ifndef DGRAD_VMATH_H
#define DGRAD_VMATH_H

#include <stdint.h>
#include <string.h>

/* e^x for x in [-87.3, 88.3]; 0 below (e^-inf = 0 exactly), e^88.3 above
 * (huge for a float caller anyway): x = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor
 * series to r^7 (the r^8 term is below 6e-9 relative), times 2^n built in
 * the exponent bits. */
static inline float dg__vexp(float x) {
    const float x0 = x;
    x = x > -87.3f ? x : -87.3f;   /* NaN too: n below must be a finite integer */
    x = x < 88.3f ? x : 88.3f;
    const float shift = 12582912.0f;   /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504088896341f + shift) - shift;
    float r = x - n * 0.693145751953125f;   /* ln2 in two parts (Cody and Waite) */
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;   /* n in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = x0 < -87.3f ? 0.0f : p * scale;   /* e^-inf = 0: masked logits weigh nothing */
    return x0 != x0 ? x0 : e;                    /* NaN stays NaN */
}

static inline float dg__vsigmoid(float x) { return 1.0f / (1.0f + dg__vexp(-x)); }

/* tanh: the odd Taylor series to x^15 below |x| = 0.55 (terms beyond are
 * under 3e-8 relative there), 1 - 2 / (e^2|x| + 1) above (tanh >= 0.5, so
 * the subtraction loses no more than a bit), the sign put back last. */
static inline float dg__vtanh(float x) {
    float ax = x < 0.0f ? -x : x;
    float x2 = x * x;
    float s = -929569.0f / 638512875.0f;
    s = s * x2 + 21844.0f / 6081075.0f;
    s = s * x2 - 1382.0f / 155925.0f;
    s = s * x2 + 62.0f / 2835.0f;
    s = s * x2 - 17.0f / 315.0f;
    s = s * x2 + 2.0f / 15.0f;
    s = s * x2 - 1.0f / 3.0f;
    float small = ax + ax * x2 * s;
    float e = dg__vexp(2.0f * (ax > 10.0f ? 10.0f : ax));   /* tanh(10) rounds to 1 */
    float large = 1.0f - 2.0f / (e + 1.0f);
    float t = ax < 0.55f ? small : large;
    return x < 0.0f ? -t : t;
}

/* erfc(z) for z >= 0: e^-z^2 * t * P(t), t = 1 / (1 + z / 2), the
 * Chebyshev fit of Numerical Recipes' erfcc (1.2e-7 relative); 0 once
 * e^-z^2 underflows (z above 9.3), and for z = inf. */
static inline float dg__verfc_pos(float z) {
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return t * dg__vexp(-z * z + p);
}

/* erf: the Taylor series x sum (-1)^k x^2k / (k! (2k+1)) (times 2/sqrt(pi))
 * to x^21 below |x| = 1 (terms beyond under 1e-8), and above it
 * 1 - erfc with erfc(x) = e^-x^2 * t * P(t), t = 1 / (1 + x / 2) (the
 * Chebyshev fit of Numerical Recipes' erfcc, 1.2e-7 relative); 1 from
 * |x| = 4 on (erfc(4) = 1.5e-8). */
static inline float dg__verf(float x) {
    float ax = x < 0.0f ? -x : x;
    float x2 = x * x;
    float s = 1.0f / (3628800.0f * 21.0f);   /* k = 10 */
    s = -s * x2 + 1.0f / (362880.0f * 19.0f);
    s = -s * x2 + 1.0f / (40320.0f * 17.0f);
    s = -s * x2 + 1.0f / (5040.0f * 15.0f);
    s = -s * x2 + 1.0f / (720.0f * 13.0f);
    s = -s * x2 + 1.0f / (120.0f * 11.0f);
    s = -s * x2 + 1.0f / (24.0f * 9.0f);
    s = -s * x2 + 1.0f / (6.0f * 7.0f);
    s = -s * x2 + 1.0f / (2.0f * 5.0f);
    s = -s * x2 + 1.0f / 3.0f;
    s = -s * x2 + 1.0f;
    float small = 1.12837916709551257f * ax * s;
    float large = 1.0f - dg__verfc_pos(ax > 4.0f ? 4.0f : ax);
    float r = ax < 1.0f ? small : large;
    return x < 0.0f ? -r : r;
}

/* The standard normal CDF, Phi(x) = erfc(-x / sqrt 2) / 2, from one erfc
 * of |x| / sqrt 2: within 4e-7 + 2.5e-7 x^2 relative left of 0 (no
 * cancellation, unlike 1 + erf; the x^2 term is x^2 / 2 rounded inside the
 * exponential), 3e-7 absolute right of it; half the work of erf, which
 * computes both of its branches. GELU is x Phi(x). */
static inline float dg__vphi(float x) {
    float h = 0.5f * dg__verfc_pos((x < 0.0f ? -x : x) * 0.70710678118654752f);
    return x < 0.0f ? h : 1.0f - h;
}

#endif /* DGRAD_VMATH_H */
