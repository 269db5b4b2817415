/* gemm_cpu.c - dgrad's own SGEMM for the small products of MLP training
 * (see gemm_cpu.h for the contract).
 *
 * Design: no packing of A, no heap, one thread. C is cut into micro-tiles
 * of up to MR rows x NV vectors; a tile keeps its accumulators in
 * registers and, for each p, loads NV vectors of row p of op(B) and
 * broadcasts MR elements of column p of op(A) (an outer product). Where n
 * is not a multiple of the vector width, a panel's last vector ends at its
 * last column and overlaps the one before (no padding, no masked stores).
 * B is read in place when its rows run along n (NN, TN), unless its row
 * stride is a multiple of 512 bytes: then the rows of a panel fall into at
 * most half of the L1 sets and evict each other, so the panel is copied to
 * a stack buffer (64 x 512 x 256 NN: 96 GFLOP/s in place, 139 copied). For
 * NT each kc x 64 panel of B^T is copied there, by 16 x 16 blocks
 * transposed in registers on AVX-512 (a dot-product kernel along k, which
 * needs no transpose, measured 65-80 GFLOP/s against 110 for this on the
 * MLP's 64 x 50 x 784). k is cut into equal passes of at most KC (KC_NT)
 * so that the panel stays in L1; passes after the first add into C.
 *
 * Portable GNU C (vector extensions). The tile is written once per vector
 * width and compiled for the machine's register file:
 *   x86-64 with AVX-512: 16-float zmm vectors, 6 x 64 tiles (24 of 32 zmm);
 *   x86-64 with AVX2+FMA: 8-float ymm vectors, 6 x 16 tiles (12 of 16 ymm);
 *   anything else: 4-float vectors (SSE2, NEON), 6 x 8 tiles.
 * This is DG_HOT's idea with the width chosen per ISA: one vector type
 * compiled for all levels (target_clones) does not work, since GCC keeps
 * vectors wider than the ISA's registers on the stack.
 */
#include "gemm_cpu.h"

#include "dgrad/base.h"

#include <string.h>

/* Let acc += a * b become one fused multiply-add: ISO C mode (-std=c11)
 * turns contraction off by default in GCC. */
#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif

#define MR 6        /* rows of C per micro-tile */
#define NV_MAX 4    /* most vectors per micro-tile row */
#define KC 64       /* most k per pass, NN and TN: the B panel and a small A fit L1 */
#define KC_NT 128   /* most k per pass, NT: fewer passes, each with a transpose */
#define PANEL 64    /* most columns per panel (NV_MAX x 16) */

typedef float dg_v16 __attribute__((vector_size(64)));
typedef float dg_v8 __attribute__((vector_size(32)));
typedef float dg_v4 __attribute__((vector_size(16)));
/* unaligned views, for loads and stores */
typedef float dg_v16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef float dg_v8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef float dg_v4u __attribute__((vector_size(16), aligned(4), may_alias));

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* ---- micro-tile --------------------------------------------------------- */

/* tile<W>: C(r, j) = alpha * sum_p A(r, p) B(p, j) + beta * Cin(r, j) for
 * r < mr, j < nv * W, with A(r, p) = a[r * ars + p * acs] and
 * B(p, j) = b[p * ldb + j]; Cin(r, .) is at ci[r * ldci], which is C
 * itself or, with ldci = 0, one row added to every row (a bias). The last
 * vector of columns has its own addresses, so that it can overlap the one
 * before or be staged outside B and C: its B(p, .) is at bl[p * ldbl], its
 * C(r, .) at cl[r * ldcl], its Cin(r, .) at cli[r * ldcli], with beta_l for
 * beta. mr and nv are constants after inlining, so acc lives in
 * registers. */
#define DEFINE_TILE(W, VT, VTU) \
    ALWAYS_INLINE void tile##W(const int mr, const int nv, int64_t k, const float *a, \
                               int64_t ars, int64_t acs, const float *b, int64_t ldb, \
                               const float *bl, int64_t ldbl, float *c, int64_t ldc, float *cl, \
                               int64_t ldcl, const float *ci, int64_t ldci, const float *cli, \
                               int64_t ldcli, float alpha, float beta, float beta_l) { \
        VT acc[MR][NV_MAX]; \
        UNROLL for (int r = 0; r < mr; r++) \
            UNROLL for (int v = 0; v < nv; v++) acc[r][v] = (VT){ 0 }; \
        for (int64_t p = 0; p < k; p++) { \
            VT bv[NV_MAX]; \
            UNROLL for (int v = 0; v < nv - 1; v++) bv[v] = *(const VTU *)(b + p * ldb + v * W); \
            bv[nv - 1] = *(const VTU *)(bl + p * ldbl); \
            UNROLL for (int r = 0; r < mr; r++) { \
                float av = a[r * ars + p * acs]; \
                UNROLL for (int v = 0; v < nv; v++) acc[r][v] += av * bv[v]; \
            } \
        } \
        UNROLL for (int r = 0; r < mr; r++) { \
            float *cr = c + r * ldc; \
            VT xl = alpha * acc[r][nv - 1]; /* first: it may overlap C of the others */ \
            if (beta_l != 0.0f) xl += beta_l * *(const VTU *)(cli + r * ldcli); \
            UNROLL for (int v = 0; v < nv - 1; v++) { \
                VT x = alpha * acc[r][v]; \
                if (beta != 0.0f) x += beta * *(const VTU *)(ci + r * ldci + v * W); \
                *(VTU *)(cr + v * W) = x; \
            } \
            *(VTU *)(cl + r * ldcl) = xl; \
        } \
    }

DEFINE_TILE(16, dg_v16, dg_v16u)
DEFINE_TILE(8, dg_v8, dg_v8u)
DEFINE_TILE(4, dg_v4, dg_v4u)

#define TILE_CASE(W, R, V) \
    case (R) * 8 + (V): \
        tile##W(R, V, k, a, ars, acs, b, ldb, bl, ldbl, c, ldc, cl, ldcl, ci, ldci, cli, ldcli, \
                alpha, beta, beta_l); \
        break;
#define TILE_CASES(W, V) \
    TILE_CASE(W, 1, V) TILE_CASE(W, 2, V) TILE_CASE(W, 3, V) \
    TILE_CASE(W, 4, V) TILE_CASE(W, 5, V) TILE_CASE(W, 6, V)

/* Instantiates tile<w>(mr, nv) for mr <= MR, nv <= nvmax in its caller;
 * w and nvmax are constants. */
ALWAYS_INLINE void tile_any(const int w, const int nvmax, int mr, int nv, int64_t k,
                            const float *a, int64_t ars, int64_t acs, const float *b,
                            int64_t ldb, const float *bl, int64_t ldbl, float *c, int64_t ldc,
                            float *cl, int64_t ldcl, const float *ci, int64_t ldci,
                            const float *cli, int64_t ldcli, float alpha, float beta,
                            float beta_l) {
    if (w == 16 && nvmax == 4) {
        switch (mr * 8 + nv) {
        TILE_CASES(16, 1) TILE_CASES(16, 2) TILE_CASES(16, 3) TILE_CASES(16, 4)
        default: DG_ASSERT(0 && "bad micro-tile");
        }
    } else if (w == 8 && nvmax == 2) {
        switch (mr * 8 + nv) {
        TILE_CASES(8, 1) TILE_CASES(8, 2)
        default: DG_ASSERT(0 && "bad micro-tile");
        }
    } else if (w == 4 && nvmax == 2) {
        switch (mr * 8 + nv) {
        TILE_CASES(4, 1) TILE_CASES(4, 2)
        default: DG_ASSERT(0 && "bad micro-tile");
        }
    } else {
        DG_ASSERT(0 && "bad tile shape");
    }
}

/* ---- packing ------------------------------------------------------------ */

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SHUF(x, y, ...) __builtin_shufflevector(x, y, __VA_ARGS__)
#else
typedef int32_t dg_v16i __attribute__((vector_size(64)));
#define SHUF(x, y, ...) __builtin_shuffle(x, y, (dg_v16i){ __VA_ARGS__ })
#endif

/* One stage of a 16 x 16 in-register transpose: rows i and j = i + d swap
 * their off-diagonal d x d blocks. */
#define TR_STAGE(r, i, j, d) do { \
        dg_v16 x_ = r[i], y_ = r[j]; \
        r[i] = SHUF(x_, y_, TR_LO_##d); \
        r[j] = SHUF(x_, y_, TR_HI_##d); \
    } while (0)
#define TR_LO_8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define TR_HI_8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define TR_LO_4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define TR_HI_4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define TR_LO_2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define TR_HI_2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define TR_LO_1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define TR_HI_1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31

ALWAYS_INLINE void transpose16(dg_v16 r[16]) {
    UNROLL for (int i = 0; i < 8; i++) TR_STAGE(r, i, i + 8, 8);
    UNROLL for (int i = 0; i < 4; i++) {
        TR_STAGE(r, i, i + 4, 4);
        TR_STAGE(r, i + 8, i + 12, 4);
    }
    UNROLL for (int i = 0; i < 16; i += 4) {
        TR_STAGE(r, i, i + 2, 2);
        TR_STAGE(r, i + 1, i + 3, 2);
    }
    UNROLL for (int i = 0; i < 16; i += 2) TR_STAGE(r, i, i + 1, 1);
}

/* dst[p * ldd + j] = src[j * lds + p] (B^T) for p < kc, j < nc, and 0 for
 * nc <= j < ncp (a multiple of 16). vec: by 16 x 16 blocks in registers,
 * where 16-float shuffles are single instructions (AVX-512). */
ALWAYS_INLINE void pack_bt(const bool vec, float *dst, int64_t ldd, const float *src,
                           int64_t lds, int nc, int ncp, int64_t kc) {
    int64_t kv = vec ? kc / 16 * 16 : 0;
    for (int j0 = 0; j0 < ncp; j0 += 16) {
        for (int64_t p0 = 0; p0 < kv; p0 += 16) {
            dg_v16 r[16];
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++)
                r[i] = j0 + i < nc ? (dg_v16)*(const dg_v16u *)(src + (j0 + i) * lds + p0)
                                   : (dg_v16){ 0 };
            transpose16(r);
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++)
                *(dg_v16u *)(dst + (p0 + i) * ldd + j0) = r[i];
        }
        for (int64_t p = kv; p < kc; p++)
            for (int j = j0; j < j0 + 16 && j < ncp; j++)
                dst[p * ldd + j] = j < nc ? src[j * lds + p] : 0.0f;
    }
}

/* dst[p * ldd + j] = src[p * lds + j] for p < kc, j < nc, and 0 for
 * nc <= j < ncp. */
ALWAYS_INLINE void pack_b(float *dst, int64_t ldd, const float *src, int64_t lds, int nc,
                          int ncp, int64_t kc) {
    for (int64_t p = 0; p < kc; p++) {
        memcpy(dst + p * ldd, src + p * lds, sizeof(float) * (size_t)nc);
        memset(dst + p * ldd + nc, 0, sizeof(float) * (size_t)(ncp - nc));
    }
}

/* The same for one ragged vector, nc < w (a constant) and ldd = w. */
ALWAYS_INLINE void pack_b_last(const int w, float *dst, const float *src, int64_t lds, int nc,
                               int64_t kc) {
    for (int64_t p = 0; p < kc; p++) {
        memset(dst + p * w, 0, sizeof(float) * (size_t)w);
        for (int j = 0; j < nc; j++) dst[p * w + j] = src[p * lds + j];
    }
}

/* ---- driver ------------------------------------------------------------- */

/* The loops over k passes, column panels of up to nvmax vectors of w floats
 * and blocks of rows. w and nvmax are constants. A panel's last vector
 * ends at its last column and so overlaps the one before when the width is
 * not a multiple of w; both compute the same values. Only when n < w does
 * a vector hang past the end: it is zero-padded and staged through ct. */
/* One k pass [p0, p0 + kc) over one column panel [j0, j0 + nc) of C, all
 * row blocks. */
ALWAYS_INLINE void panel_pass(const int w, const int nvmax, bool ta, bool tb, int64_t m, int64_t kc,
                              int64_t p0, int64_t j0, int64_t nc, float alpha, const float *a,
                              int64_t lda, const float *b, int64_t ldb, float bet, float *c,
                              int64_t ldc, const float *cin, int64_t ldcin, bool alias,
                              float *pack, float *ct) {
    const int nr = nvmax * w;
    const int64_t ars = ta ? 1 : lda, acs = ta ? lda : 1;
    const int64_t nblk = (m + MR - 1) / MR;   /* row blocks, sizes differ by at most 1 */
    bool whole = nc >= w;
    int nv = (int)(nc + w - 1) / w, jl = whole ? (int)nc - w : 0;
    const float *bp = b + p0 * ldb + j0, *bl = bp + jl;
    int64_t bs = ldb, bls = ldb;
    if (tb) {   /* the panel of B^T */
        pack_bt(w == 16, pack, nr, b + j0 * ldb + p0, ldb, (int)nc, nv * w, kc);
        bp = pack, bs = nr, bl = pack + jl, bls = nr;
    } else if (alias) {
        pack_b(pack, nr, bp, ldb, (int)nc, nv * w, kc);
        bp = pack, bs = nr, bl = pack + jl, bls = nr;
    } else if (!whole) {
        pack_b_last(w, pack, bp, ldb, (int)nc, kc);
        bl = pack, bls = w;
    }
    int64_t i0 = 0;
    for (int64_t ib = 0; ib < nblk; ib++) {
        int mr = (int)((m - i0 + nblk - ib - 1) / (nblk - ib));
        const float *ai = a + i0 * ars + p0 * acs;
        float *ci = c + i0 * ldc + j0;
        const float *cii = cin + i0 * ldcin + j0;
        if (whole) {
            tile_any(w, nvmax, mr, nv, kc, ai, ars, acs, bp, bs, bl, bls, ci, ldc, ci + jl, ldc, cii,
                     ldcin, cii + jl, ldcin, alpha, bet, bet);
        } else {   /* n < w: to ct, then its valid part to C */
            tile_any(w, nvmax, mr, 1, kc, ai, ars, acs, bp, bs, bl, bls, ci, ldc, ct, w, cii, ldcin,
                     ct, w, alpha, bet, 0.0f);
            for (int r = 0; r < mr; r++)
                for (int j = 0; j < w; j++) {   /* to w, not nc: no memcpy call */
                    float *cij = ci + r * ldc + j, t = ct[r * w + j];
                    if (j < nc) *cij = bet == 0.0f ? t : t + bet * cii[r * ldcin + j];
                }
        }
        i0 += mr;
    }
}

/* Most bytes of A for which the panels go outermost (below). */
#define A_SMALL (256 << 10)

/* The loops over k passes, column panels of up to nvmax vectors of w floats
 * and blocks of rows. w and nvmax are constants. A panel's last vector
 * ends at its last column and so overlaps the one before when the width is
 * not a multiple of w; both compute the same values. Only when n < w does
 * a vector hang past the end: it is zero-padded and staged through ct.
 * When A is small (in L2) the panels go outermost and the k passes inside,
 * so that a panel of C stays in L1 between passes (GFLOP/s k-outermost ->
 * panel-outermost: 32 x 384 x 600 NN, a convolution, 100 -> 132; 256 x
 * 512 x 256 TN 103 -> 140; 50 x 784 x 64 TN 105 -> 129); else the k passes
 * go outermost, so that A is not read again for every panel. */
ALWAYS_INLINE void gemm_body(const int w, const int nvmax, bool ta, bool tb, int64_t m,
                             int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                             const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
                             const float *cin, int64_t ldcin) {
    float pack[KC_NT * PANEL] __attribute__((aligned(64)));
    float ct[MR * 16] __attribute__((aligned(64)));
    const int nr = nvmax * w;
    const int64_t nblk = (m + MR - 1) / MR;
    const int64_t kmax = tb ? KC_NT : KC, npass = (k + kmax - 1) / kmax;
    const int64_t kstep = (k + npass - 1) / npass;   /* passes of equal size */
    /* B's rows share L1 sets: 4096 / gcd(4 ldb, 4096) set offsets among
     * them. Copy the panel when 4 or fewer (ldb % 256 == 0), or 8 and
     * enough row blocks to pay for the copy: 32 x 384 x 600 NN, 8 offsets,
     * 6 blocks: 130 GFLOP/s in place, 96 copied; 256 x 128 x 256, 43
     * blocks: 117 in place, 145 copied; 64 x 768 x 256, 4 offsets: 73 in
     * place, 113 copied. */
    const bool alias = !tb && nblk > 1 && (ldb % 256 == 0 || (ldb % 128 == 0 && nblk >= 12));
    const bool panels_outer = m * k * (int64_t)sizeof(float) <= A_SMALL;
    /* leave no last panel narrower than a vector */
#define PANEL_WIDTH(j0) (n - (j0) <= nr ? n - (j0) : n - (j0) - nr >= w ? nr : n - (j0) - w)
#define PASS(p0, j0, nc) \
    panel_pass(w, nvmax, ta, tb, m, k - (p0) < kstep ? k - (p0) : kstep, p0, j0, nc, alpha, a, \
               lda, b, ldb, (p0) == 0 ? beta : 1.0f, c, ldc, (p0) == 0 ? cin : c, \
               (p0) == 0 ? ldcin : ldc, alias, pack, ct)
    if (panels_outer) {
        for (int64_t j0 = 0, nc; j0 < n; j0 += nc) {
            nc = PANEL_WIDTH(j0);
            for (int64_t p0 = 0; p0 < k; p0 += kstep) PASS(p0, j0, nc);
        }
    } else {
        for (int64_t p0 = 0; p0 < k; p0 += kstep)
            for (int64_t j0 = 0, nc; j0 < n; j0 += nc) {
                nc = PANEL_WIDTH(j0);
                PASS(p0, j0, nc);
            }
    }
#undef PASS
#undef PANEL_WIDTH
}

/* cin, ldcin: where beta's term is read (C itself, or a bias row with
 * ldcin 0) */
#define GEMM_ARGS bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, \
    const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc, \
    const float *cin, int64_t ldcin
#define GEMM_PASS ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, cin, ldcin

/* Built for the compiler's target (wider with -march=native). */
static void gemm_base(GEMM_ARGS) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
    gemm_body(16, 4, GEMM_PASS);
#elif defined(__AVX2__) && defined(__FMA__)
    gemm_body(8, 2, GEMM_PASS);
#else
    gemm_body(4, 2, GEMM_PASS);
#endif
}

typedef void (*gemm_fn)(GEMM_ARGS);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(DG_NO_CLONES)
#define TARGET_AVX2 "avx2,fma,bmi,bmi2,popcnt"
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq," TARGET_AVX2)))
static void gemm_avx512(GEMM_ARGS) {
    gemm_body(16, 4, GEMM_PASS);
}

__attribute__((target(TARGET_AVX2))) static void gemm_avx2(GEMM_ARGS) {
    gemm_body(8, 2, GEMM_PASS);
}

static gemm_fn isa_fn(dg_gemm_isa isa) {
    __builtin_cpu_init();
#define HAS(f) __builtin_cpu_supports(f)
    bool avx2 = HAS("avx2") && HAS("fma") && HAS("bmi") && HAS("bmi2") && HAS("popcnt");
    bool avx512 = avx2 && HAS("avx512f") && HAS("avx512vl") && HAS("avx512bw") && HAS("avx512dq");
#undef HAS
    switch (isa) {
    case DG_GEMM_ISA_BASE: return gemm_base;
    case DG_GEMM_ISA_AVX2: return avx2 ? gemm_avx2 : NULL;
    case DG_GEMM_ISA_AVX512: return avx512 ? gemm_avx512 : NULL;
    }
    return NULL;
}
#else
static gemm_fn isa_fn(dg_gemm_isa isa) {
    return isa == DG_GEMM_ISA_BASE ? gemm_base : NULL;
}
#endif

dg_gemm_isa dg_gemm_small_isa(void) {
    int isa = DG_GEMM_ISA_AVX512;
    while (isa > DG_GEMM_ISA_BASE && !isa_fn((dg_gemm_isa)isa)) isa--;
    return (dg_gemm_isa)isa;
}

/* fn, after the cases that need no product */
static void gemm_run(gemm_fn fn, GEMM_ARGS) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) {   /* A and B are not read */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * cin[i * ldcin + j];
        return;
    }
    fn(GEMM_PASS);
}

static gemm_fn best_fn(void) {
    static _Atomic(gemm_fn) best;   /* racing first callers store the same value */
    gemm_fn fn = best;
    if (!fn) best = fn = isa_fn(dg_gemm_small_isa());
    return fn;
}

bool dg_gemm_small_with(dg_gemm_isa isa, bool trans_a, bool trans_b, int64_t m, int64_t n,
                        int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                        int64_t ldb, float beta, float *c, int64_t ldc) {
    gemm_fn fn = isa_fn(isa);
    if (fn) gemm_run(fn, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, c, ldc);
    return fn != NULL;
}

bool dg_gemm_small_bias_with(dg_gemm_isa isa, bool trans_a, bool trans_b, int64_t m, int64_t n,
                             int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                             int64_t ldb, const float *bias, float *c, int64_t ldc) {
    gemm_fn fn = isa_fn(isa);
    if (fn) gemm_run(fn, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, 1.0f, c, ldc, bias, 0);
    return fn != NULL;
}

void dg_gemm_small(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                   float *c, int64_t ldc) {
    gemm_run(best_fn(), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, c, ldc);
}

void dg_gemm_small_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb,
                        const float *bias, float *c, int64_t ldc) {
    gemm_run(best_fn(), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, 1.0f, c, ldc, bias, 0);
}

/* The crossover, measured with bench/gemm_bench.c --sweep (one thread) on
 * an AVX-512 Xeon (family 6 model 207) against OpenBLAS 0.3.21 with
 * OPENBLAS_CORETYPE=Cooperlake, its fastest kernels there: over NN, TN, NT
 * and m in 16..1024, n in 64..2048, k in 64..784 the median ratio
 * (ours / OpenBLAS) is 0.9-1.1 below m n k = 2^20 (tiny products, where
 * fixed costs weigh), 1.1-1.4 from 2^20 to 2^25, 1.0 at 2^26 (e.g. 400^3:
 * 0.97-1.04), then falls to 0.9 at 2^27 and 0.65 at 2^30. The MLP's
 * products stay below it up to batch 1024 (1024 x 50 x 784 = 2^25.3: 1.15
 * to 1.2). Debian's default Prescott kernels are 3-7x slower than ours on
 * all of these. dg_gemm_small uses one thread: with dg_set_num_threads > 1
 * OpenBLAS would win earlier on products near the limit. */
bool dg_gemm_small_fits(int64_t m, int64_t n, int64_t k) {
    return (double)m * (double)n * (double)k <= (double)(1 << 26);
}
