/* cuda_conv.cu - CUDA kernels for convolutional nets: im2col/col2im,
 * max and average pooling, the dropout mask and batch norm (the dg_backend
 * slots from im2col to bn_bwd; the CPU versions are in conv_cpu.c).
 * Backward kernels gather (one thread per input element) instead of
 * scattering with atomics, so results do not depend on scheduling. */
#include "cuda-impl.h"

#define CONV_GRID(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

namespace {

/* ---- im2col / col2im ------------------------------------------------------ */

/* col [c*kh*kw, n*oh*ow] */
__global__ void im2col_kernel(float *col, const float *x, dg_conv_geom g) {
    const int64_t P = g.oh * g.ow, NP = g.n * P, total = g.c * g.kh * g.kw * NP;
    CONV_GRID(i, total) {
        int64_t r = i / NP, j = i % NP;
        int64_t kx = r % g.kw, ky = (r / g.kw) % g.kh, c = r / (g.kw * g.kh);
        int64_t n = j / P, p = j % P, oy = p / g.ow, ox = p % g.ow;
        int64_t iy = oy * g.sh - g.ph + ky * g.dh, ix = ox * g.sw - g.pw + kx * g.dw;
        col[i] = (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w)
                     ? x[((n * g.c + c) * g.h + iy) * g.w + ix] : 0.0f;
    }
}

/* One thread per x element: the sum of the col entries that read it. */
__global__ void col2im_kernel(float *x, const float *col, dg_conv_geom g, bool acc) {
    const int64_t P = g.oh * g.ow, NP = g.n * P, total = g.n * g.c * g.h * g.w;
    CONV_GRID(i, total) {
        int64_t ix = i % g.w, iy = (i / g.w) % g.h, c = (i / (g.w * g.h)) % g.c, n = i / (g.w * g.h * g.c);
        float s = 0.0f;
        for (int64_t ky = 0; ky < g.kh; ky++) {
            int64_t ty = iy + g.ph - ky * g.dh;
            if (ty < 0 || ty % g.sh) continue;
            int64_t oy = ty / g.sh;
            if (oy >= g.oh) continue;
            for (int64_t kx = 0; kx < g.kw; kx++) {
                int64_t tx = ix + g.pw - kx * g.dw;
                if (tx < 0 || tx % g.sw) continue;
                int64_t ox = tx / g.sw;
                if (ox >= g.ow) continue;
                int64_t r = (c * g.kh + ky) * g.kw + kx;
                s += col[r * NP + n * P + oy * g.ow + ox];
            }
        }
        x[i] = acc ? x[i] + s : s;
    }
}

/* ---- pooling ------------------------------------------------------------- */

__global__ void maxpool_fwd_kernel(float *out, int32_t *idx, const float *x, dg_conv_geom g) {
    const int64_t P = g.oh * g.ow, total = g.n * g.c * P;
    CONV_GRID(i, total) {
        int64_t pl = i / P, p = i % P, oy = p / g.ow, ox = p % g.ow;
        const float *src = x + pl * g.h * g.w;
        float best = -INFINITY;
        int64_t bi = -1;
        for (int64_t ky = 0; ky < g.kh; ky++) {
            int64_t iy = oy * g.sh - g.ph + ky * g.dh;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.kw; kx++) {
                int64_t ix = ox * g.sw - g.pw + kx * g.dw;
                if (ix < 0 || ix >= g.w) continue;
                float v = src[iy * g.w + ix];
                if (bi < 0 || v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    bi = iy * g.w + ix;
                }
            }
        }
        out[i] = best;
        idx[i] = (int32_t)bi;
    }
}

/* Output rows (or columns) whose window covers input position t: [lo, hi]. */
__device__ void covering(int64_t t, int64_t pad, int64_t k, int64_t s, int64_t o, int64_t *lo,
                         int64_t *hi) {
    int64_t a = t + pad - k + 1;   /* oy*s >= a */
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    int64_t b = (t + pad) / s;     /* oy*s <= t + pad */
    *hi = b < o - 1 ? b : o - 1;
}

__global__ void maxpool_bwd_kernel(float *dx, const float *dout, const int32_t *idx, dg_conv_geom g,
                                   bool acc) {
    const int64_t HW = g.h * g.w, P = g.oh * g.ow, total = g.n * g.c * HW;
    CONV_GRID(i, total) {
        int64_t pl = i / HW, q = i % HW, iy = q / g.w, ix = q % g.w;
        int64_t y0, y1, x0, x1;
        covering(iy, g.ph, g.kh, g.sh, g.oh, &y0, &y1);
        covering(ix, g.pw, g.kw, g.sw, g.ow, &x0, &x1);
        float s = 0.0f;
        for (int64_t oy = y0; oy <= y1; oy++)
            for (int64_t ox = x0; ox <= x1; ox++) {
                int64_t o = pl * P + oy * g.ow + ox;
                if (idx[o] == q) s += dout[o];
            }
        dx[i] = acc ? dx[i] + s : s;
    }
}

__global__ void avgpool_fwd_kernel(float *out, const float *x, dg_conv_geom g) {
    const int64_t P = g.oh * g.ow, total = g.n * g.c * P;
    const float inv = 1.0f / (float)(g.kh * g.kw);
    CONV_GRID(i, total) {
        int64_t pl = i / P, p = i % P, oy = p / g.ow, ox = p % g.ow;
        const float *src = x + pl * g.h * g.w;
        float s = 0.0f;
        for (int64_t ky = 0; ky < g.kh; ky++) {
            int64_t iy = oy * g.sh - g.ph + ky;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.kw; kx++) {
                int64_t ix = ox * g.sw - g.pw + kx;
                if (ix >= 0 && ix < g.w) s += src[iy * g.w + ix];
            }
        }
        out[i] = s * inv;
    }
}

__global__ void avgpool_bwd_kernel(float *dx, const float *dout, dg_conv_geom g, bool acc) {
    const int64_t HW = g.h * g.w, P = g.oh * g.ow, total = g.n * g.c * HW;
    const float inv = 1.0f / (float)(g.kh * g.kw);
    CONV_GRID(i, total) {
        int64_t pl = i / HW, q = i % HW, iy = q / g.w, ix = q % g.w;
        int64_t y0, y1, x0, x1;
        covering(iy, g.ph, g.kh, g.sh, g.oh, &y0, &y1);
        covering(ix, g.pw, g.kw, g.sw, g.ow, &x0, &x1);
        float s = 0.0f;
        for (int64_t oy = y0; oy <= y1; oy++)
            for (int64_t ox = x0; ox <= x1; ox++) s += dout[pl * P + oy * g.ow + ox] * inv;
        dx[i] = acc ? dx[i] + s : s;
    }
}

/* ---- dropout -------------------------------------------------------------- */

__global__ void dropout_kernel(float *mask, int64_t n, float p, float scale, uint64_t seed) {
    CONV_GRID(i, n) {
        float u;
        DG_DROPOUT_MIX(seed, i, u);
        mask[i] = u < p ? 0.0f : scale;
    }
}

/* ---- batch norm: one block per channel ------------------------------------- */

#define BN_BLOCK 256

/* Sum of v over the block (every thread gets it). */
__device__ double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = BN_BLOCK / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__global__ void bn_stats_kernel(float *mean, float *invstd, float *run_mean, float *run_var,
                                const float *x, int64_t n, int64_t c, int64_t hw, float momentum,
                                float eps, bool training) {
    __shared__ double sh[BN_BLOCK];
    int64_t ch = blockIdx.x, m = n * hw;
    if (!training) {
        if (threadIdx.x == 0) {
            mean[ch] = run_mean[ch];
            invstd[ch] = 1.0f / sqrtf(run_var[ch] + eps);
        }
        return;
    }
    double s = 0.0;
    for (int64_t k = threadIdx.x; k < m; k += BN_BLOCK) s += x[((k / hw) * c + ch) * hw + k % hw];
    double mu = block_sum(s, sh) / (double)m, ss = 0.0;
    for (int64_t k = threadIdx.x; k < m; k += BN_BLOCK) {
        double d = x[((k / hw) * c + ch) * hw + k % hw] - mu;
        ss += d * d;
    }
    ss = block_sum(ss, sh);
    if (threadIdx.x == 0) {
        double var = ss / (double)m;
        mean[ch] = (float)mu;
        invstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
        if (run_mean) {
            double unb = m > 1 ? ss / (double)(m - 1) : var;
            run_mean[ch] = (float)((1.0 - momentum) * run_mean[ch] + momentum * mu);
            run_var[ch] = (float)((1.0 - momentum) * run_var[ch] + momentum * unb);
        }
    }
}

__global__ void bn_fwd_kernel(float *y, const float *x, const float *mean, const float *invstd,
                              const float *w, const float *b, int64_t total, int64_t c, int64_t hw) {
    CONV_GRID(i, total) {
        int64_t ch = (i / hw) % c;
        float sc = invstd[ch] * (w ? w[ch] : 1.0f);
        float shf = (b ? b[ch] : 0.0f) - mean[ch] * sc;
        y[i] = x[i] * sc + shf;
    }
}

__global__ void bn_bwd_kernel(float *dx, float *dw, float *db, const float *dy, const float *x,
                              const float *mean, const float *invstd, const float *w, int64_t n,
                              int64_t c, int64_t hw, bool training, bool acc_dx, bool acc_dw,
                              bool acc_db) {
    __shared__ double sh[BN_BLOCK];
    int64_t ch = blockIdx.x, m = n * hw;
    float mu = mean[ch], is = invstd[ch];
    double a = 0.0, bsum = 0.0;
    for (int64_t k = threadIdx.x; k < m; k += BN_BLOCK) {
        int64_t o = ((k / hw) * c + ch) * hw + k % hw;
        a += dy[o];
        bsum += (double)dy[o] * (double)(x[o] - mu);
    }
    double sdy = block_sum(a, sh), sdyx = block_sum(bsum, sh) * is;
    if (threadIdx.x == 0) {
        if (dw) dw[ch] = (acc_dw ? dw[ch] : 0.0f) + (float)sdyx;
        if (db) db[ch] = (acc_db ? db[ch] : 0.0f) + (float)sdy;
    }
    if (!dx) return;
    float k = is * (w ? w[ch] : 1.0f);
    float mdy = training ? (float)(sdy / (double)m) : 0.0f;
    float mdyx = training ? (float)(sdyx / (double)m) : 0.0f;
    for (int64_t q = threadIdx.x; q < m; q += BN_BLOCK) {
        int64_t o = ((q / hw) * c + ch) * hw + q % hw;
        float v = k * (dy[o] - mdy - (x[o] - mu) * is * mdyx);
        dx[o] = acc_dx ? dx[o] + v : v;
    }
}

unsigned blocks(int64_t n) { return dg__cuda_blocks(n, DG_CUDA_BLOCK); }

}  // namespace

/* ---- launchers --------------------------------------------------------------- */

extern "C" {

void dg__cuda_im2col(float *col, const float *x, const dg_conv_geom *g) {
    int64_t n = g->c * g->kh * g->kw * g->n * g->oh * g->ow;
    if (n <= 0) return;
    dg__cuda_bind();
    im2col_kernel<<<blocks(n), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(col, x, *g);
    cudaCheckLaunch();
}

void dg__cuda_col2im(float *x, const float *col, const dg_conv_geom *g, bool acc) {
    int64_t n = g->n * g->c * g->h * g->w;
    if (n <= 0) return;
    dg__cuda_bind();
    col2im_kernel<<<blocks(n), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(x, col, *g, acc);
    cudaCheckLaunch();
}

void dg__cuda_maxpool_fwd(float *out, int32_t *idx, const float *x, const dg_conv_geom *g) {
    int64_t n = g->n * g->c * g->oh * g->ow;
    if (n <= 0) return;
    dg__cuda_bind();
    maxpool_fwd_kernel<<<blocks(n), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(out, idx, x, *g);
    cudaCheckLaunch();
}

void dg__cuda_maxpool_bwd(float *dx, const float *dout, const int32_t *idx, const dg_conv_geom *g,
                          bool acc) {
    int64_t n = g->n * g->c * g->h * g->w;
    if (n <= 0) return;
    dg__cuda_bind();
    maxpool_bwd_kernel<<<blocks(n), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(dx, dout, idx, *g, acc);
    cudaCheckLaunch();
}

void dg__cuda_avgpool_fwd(float *out, const float *x, const dg_conv_geom *g) {
    int64_t n = g->n * g->c * g->oh * g->ow;
    if (n <= 0) return;
    dg__cuda_bind();
    avgpool_fwd_kernel<<<blocks(n), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(out, x, *g);
    cudaCheckLaunch();
}

void dg__cuda_avgpool_bwd(float *dx, const float *dout, const dg_conv_geom *g, bool acc) {
    int64_t n = g->n * g->c * g->h * g->w;
    if (n <= 0) return;
    dg__cuda_bind();
    avgpool_bwd_kernel<<<blocks(n), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(dx, dout, *g, acc);
    cudaCheckLaunch();
}

void dg__cuda_dropout_mask(float *mask, int64_t n, float p, uint64_t seed) {
    if (n <= 0) return;
    dg__cuda_bind();
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    dropout_kernel<<<blocks(n), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(mask, n, p, scale, seed);
    cudaCheckLaunch();
}

void dg__cuda_bn_stats(float *mean, float *invstd, float *run_mean, float *run_var, const float *x,
                       int64_t n, int64_t c, int64_t hw, float momentum, float eps, bool training) {
    if (c <= 0) return;
    dg__cuda_bind();
    bn_stats_kernel<<<(unsigned)c, BN_BLOCK, 0, dg__cuda.stream>>>(mean, invstd, run_mean, run_var, x, n,
                                                                   c, hw, momentum, eps, training);
    cudaCheckLaunch();
}

void dg__cuda_bn_fwd(float *y, const float *x, const float *mean, const float *invstd, const float *w,
                     const float *b, int64_t n, int64_t c, int64_t hw) {
    int64_t total = n * c * hw;
    if (total <= 0) return;
    dg__cuda_bind();
    bn_fwd_kernel<<<blocks(total), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(y, x, mean, invstd, w, b, total,
                                                                        c, hw);
    cudaCheckLaunch();
}

void dg__cuda_bn_bwd(float *dx, float *dw, float *db, const float *dy, const float *x, const float *mean,
                     const float *invstd, const float *w, int64_t n, int64_t c, int64_t hw, bool training,
                     bool acc_dx, bool acc_dw, bool acc_db) {
    if (c <= 0) return;
    dg__cuda_bind();
    bn_bwd_kernel<<<(unsigned)c, BN_BLOCK, 0, dg__cuda.stream>>>(dx, dw, db, dy, x, mean, invstd, w, n, c,
                                                                 hw, training, acc_dx, acc_dw, acc_db);
    cudaCheckLaunch();
}

}  /* extern "C" */
