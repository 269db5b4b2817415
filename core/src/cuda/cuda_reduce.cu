/* cuda_reduce.cu - reduce_sum, (log_)softmax and its backward, cross entropy
 * and its backward, argmax. Layout [outer, d, inner] as in impl.h.
 *
 * A row (inner == 1) is reduced by one warp, or by one block when long;
 * otherwise each thread owns one (outer, inner) column and loops over d in
 * order, exactly as backend_cpu.c does. */
#include "cuda-impl.h"

#include <limits.h>
#include <math.h>

#define WARPS_PER_BLOCK (DG_CUDA_BLOCK / 32)

/* ---- warp and block reductions ------------------------------------------------ */

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ long long warp_min_ll(long long v) {
    for (int o = 16; o > 0; o >>= 1) {
        long long w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w < v ? w : v;
    }
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the result. */
template <typename T> __device__ T block_sum(T v) {
    __shared__ T part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();   /* part may still be read by a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : (T)0;
    return warp_sum(v);
}

/* The warp's row index (warp per row), or -1 past the end. */
__device__ __forceinline__ int64_t warp_row(int64_t rows) {
    int64_t r = (int64_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    return r < rows ? r : -1;
}

static unsigned warp_row_blocks(int64_t rows) {
    return (unsigned)((rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK);
}

#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

/* ---- reduce_sum ------------------------------------------------------------------ */

/* One thread per output column, summing red values in order. T = double
 * for inner == 1, as the CPU backend does. */
template <typename T>
__global__ void reduce_cols_kernel(float *out, const float *in, int64_t outer, int64_t red,
                                   int64_t inner, float scale, bool acc) {
    GRID_STRIDE(q, outer * inner) {
        int64_t o = q / inner, i = q % inner;
        const float *src = in + o * red * inner + i;
        T s = 0;
        for (int64_t r = 0; r < red; r++) s += src[r * inner];
        float v = scale * (float)s;
        out[q] = acc ? out[q] + v : v;
    }
}

/* One block per row (inner == 1), summing in double. */
__global__ void reduce_rows_kernel(float *out, const float *in, int64_t red, float scale, bool acc) {
    const float *src = in + (int64_t)blockIdx.x * red;
    double s = 0.0;
    for (int64_t r = threadIdx.x; r < red; r += blockDim.x) s += src[r];
    s = block_sum(s);
    if (threadIdx.x == 0) {
        float v = scale * (float)s;
        out[blockIdx.x] = acc ? out[blockIdx.x] + v : v;
    }
}

void dg__cuda_reduce_sum(float *out, const float *in, int64_t outer, int64_t red, int64_t inner,
                         float scale, bool acc) {
    if (outer <= 0 || inner <= 0) return;
    dg__cuda_bind();
    cudaStream_t st = dg__cuda.stream;
    if (inner == 1 && red > 32) {
        DG_ASSERT(outer <= 2147483647);
        reduce_rows_kernel<<<(unsigned)outer, DG_CUDA_BLOCK, 0, st>>>(out, in, red, scale, acc);
    } else if (inner == 1) {
        reduce_cols_kernel<double><<<dg__cuda_blocks(outer, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0, st>>>(
            out, in, outer, red, inner, scale, acc);
    } else {
        reduce_cols_kernel<float><<<dg__cuda_blocks(outer * inner, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0, st>>>(
            out, in, outer, red, inner, scale, acc);
    }
    cudaCheckLaunch();
}

/* ---- softmax ---------------------------------------------------------------------- */

__global__ void softmax_rows_kernel(float *out, const float *in, int64_t rows, int64_t d, bool log) {
    int64_t row = warp_row(rows);
    if (row < 0) return;
    int lane = threadIdx.x & 31;
    const float *x = in + row * d;
    float *y = out + row * d;
    float mx = -INFINITY;
    for (int64_t k = lane; k < d; k += 32) mx = fmaxf(mx, x[k]);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int64_t k = lane; k < d; k += 32) s += expf(x[k] - mx);
    s = warp_sum(s);
    if (log) {
        float ls = logf(s);
        for (int64_t k = lane; k < d; k += 32) y[k] = x[k] - mx - ls;
    } else {
        float inv = 1.0f / s;
        for (int64_t k = lane; k < d; k += 32) y[k] = expf(x[k] - mx) * inv;
    }
}

__global__ void softmax_cols_kernel(float *out, const float *in, int64_t outer, int64_t d,
                                    int64_t inner, bool log) {
    GRID_STRIDE(q, outer * inner) {
        int64_t base = (q / inner) * d * inner + q % inner;
        const float *x = in + base;
        float *y = out + base;
        float mx = -INFINITY;
        for (int64_t k = 0; k < d; k++) mx = fmaxf(mx, x[k * inner]);
        float s = 0.0f;
        for (int64_t k = 0; k < d; k++) s += expf(x[k * inner] - mx);
        if (log) {
            float ls = logf(s);
            for (int64_t k = 0; k < d; k++) y[k * inner] = x[k * inner] - mx - ls;
        } else {
            float inv = 1.0f / s;
            for (int64_t k = 0; k < d; k++) y[k * inner] = expf(x[k * inner] - mx) * inv;
        }
    }
}

void dg__cuda_softmax(float *out, const float *in, int64_t outer, int64_t d, int64_t inner, bool log) {
    if (outer <= 0 || d <= 0 || inner <= 0) return;
    dg__cuda_bind();
    if (inner == 1)
        softmax_rows_kernel<<<warp_row_blocks(outer), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(out, in, outer, d, log);
    else
        softmax_cols_kernel<<<dg__cuda_blocks(outer * inner, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0,
                              dg__cuda.stream>>>(out, in, outer, d, inner, log);
    cudaCheckLaunch();
}

/* log:  gin = g - exp(y) * sum(g);   softmax: gin = y * (g - sum(g * y)) */
__global__ void softmax_bwd_rows_kernel(float *gin, const float *gout, const float *y, int64_t rows,
                                        int64_t d, bool log, bool acc) {
    int64_t row = warp_row(rows);
    if (row < 0) return;
    int lane = threadIdx.x & 31;
    int64_t base = row * d;
    float s = 0.0f;
    for (int64_t k = lane; k < d; k += 32)
        s += log ? gout[base + k] : gout[base + k] * y[base + k];
    s = warp_sum(s);
    for (int64_t k = lane; k < d; k += 32) {
        int64_t i = base + k;
        float v = log ? gout[i] - expf(y[i]) * s : y[i] * (gout[i] - s);
        gin[i] = acc ? gin[i] + v : v;
    }
}

__global__ void softmax_bwd_cols_kernel(float *gin, const float *gout, const float *y, int64_t outer,
                                        int64_t d, int64_t inner, bool log, bool acc) {
    GRID_STRIDE(q, outer * inner) {
        int64_t base = (q / inner) * d * inner + q % inner;
        float s = 0.0f;
        for (int64_t k = 0; k < d; k++) {
            int64_t i = base + k * inner;
            s += log ? gout[i] : gout[i] * y[i];
        }
        for (int64_t k = 0; k < d; k++) {
            int64_t i = base + k * inner;
            float v = log ? gout[i] - expf(y[i]) * s : y[i] * (gout[i] - s);
            gin[i] = acc ? gin[i] + v : v;
        }
    }
}

void dg__cuda_softmax_bwd(float *gin, const float *gout, const float *y, int64_t outer, int64_t d,
                          int64_t inner, bool log, bool acc) {
    if (outer <= 0 || d <= 0 || inner <= 0) return;
    dg__cuda_bind();
    if (inner == 1)
        softmax_bwd_rows_kernel<<<warp_row_blocks(outer), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(
            gin, gout, y, outer, d, log, acc);
    else
        softmax_bwd_cols_kernel<<<dg__cuda_blocks(outer * inner, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0,
                                  dg__cuda.stream>>>(gin, gout, y, outer, d, inner, log, acc);
    cudaCheckLaunch();
}

/* ---- cross entropy ------------------------------------------------------------------ */

/* lse[i] = log-sum-exp of row i (0 for ignored or bad targets): warp per row. */
__global__ void ce_lse_kernel(float *lse, const float *logits, const int32_t *target, int64_t n,
                              int64_t c, int ignore_index) {
    int64_t row = warp_row(n);
    if (row < 0) return;
    int lane = threadIdx.x & 31;
    int32_t t = target[row];
    if (t == ignore_index || t < 0 || t >= c) {
        if (lane == 0) lse[row] = 0.0f;
        return;
    }
    const float *x = logits + row * c;
    float mx = -INFINITY;
    for (int64_t k = lane; k < c; k += 32) mx = fmaxf(mx, x[k]);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int64_t k = lane; k < c; k += 32) s += expf(x[k] - mx);
    s = warp_sum(s);
    if (lane == 0) lse[row] = mx + logf(s);
}

/* One block: loss = mean over counted rows of lse - x[t] (in double),
 * count, and *flag = first bad target index or -1. */
__global__ void ce_finish_kernel(float *loss, float *count, long long *flag, const float *lse,
                                 const float *logits, const int32_t *target, int64_t n, int64_t c,
                                 int ignore_index) {
    __shared__ long long bad_part[32];
    double total = 0.0;
    long long cnt = 0, bad = LLONG_MAX;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        int32_t t = target[i];
        if (t == ignore_index) continue;
        if (t < 0 || t >= c) {
            if (i < bad) bad = i;
            continue;
        }
        total += (double)(lse[i] - logits[i * c + t]);
        cnt++;
    }
    total = block_sum(total);
    cnt = block_sum(cnt);
    bad = warp_min_ll(bad);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) bad_part[warp] = bad;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            if (bad_part[w] < bad) bad = bad_part[w];
        count[0] = (float)cnt;
        loss[0] = (float)(total / (double)cnt);   /* 0/0 = nan, as in PyTorch */
        *flag = bad == LLONG_MAX ? -1 : bad;
    }
}

/* Bad targets: the kernels skip them (no out-of-range read) and record the
 * first one in a device flag. The flag is read back (one small
 * synchronization, which keeps the host from running ahead of the GPU)
 * only when the labels' range is unknown: known_valid says they were
 * uploaded from the host and all lie in [0, c), as every batch from
 * dg_loader_next or dg_tensor_from does. DG_CUDA_CHECK_LABELS=0 skips the
 * read-back always: then labels must be valid. */
int64_t dg__cuda_cross_entropy(float *loss, float *count, float *lse, const float *logits,
                               const int32_t *target, int64_t n, int64_t c, int ignore_index,
                               bool known_valid) {
    dg__cuda_bind();
    cudaStream_t st = dg__cuda.stream;
    if (n > 0) {
        ce_lse_kernel<<<warp_row_blocks(n), DG_CUDA_BLOCK, 0, st>>>(lse, logits, target, n, c, ignore_index);
        cudaCheckLaunch();
    }
    ce_finish_kernel<<<1, 1024, 0, st>>>(loss, count, dg__cuda.ce_flag, lse, logits, target, n, c,
                                         ignore_index);
    cudaCheckLaunch();
    if (known_valid || !dg__cuda.check_labels || dg__cuda_capturing) return -1;   /* graph.h */
    cudaCheck(cudaMemcpyAsync(dg__cuda.ce_flag_host, dg__cuda.ce_flag, sizeof(long long),
                              cudaMemcpyDeviceToHost, st));
    cudaCheck(cudaStreamSynchronize(st));
    return (int64_t)*dg__cuda.ce_flag_host;
}

__global__ void ce_bwd_kernel(float *dlogits, const float *gout, const float *count, const float *lse,
                              const float *logits, const int32_t *target, int64_t n, int64_t c,
                              int ignore_index, bool acc) {
    float scale = gout[0] / count[0];
    GRID_STRIDE(q, n * c) {
        int64_t i = q / c, k = q % c;
        int32_t t = target[i];
        if (t == ignore_index) {
            if (!acc) dlogits[q] = 0.0f;
            continue;
        }
        float v = scale * (expf(logits[q] - lse[i]) - (k == t ? 1.0f : 0.0f));
        dlogits[q] = acc ? dlogits[q] + v : v;
    }
}

void dg__cuda_cross_entropy_bwd(float *dlogits, const float *gout, const float *count,
                                const float *lse, const float *logits, const int32_t *target,
                                int64_t n, int64_t c, int ignore_index, bool acc) {
    if (n <= 0 || c <= 0) return;
    dg__cuda_bind();
    ce_bwd_kernel<<<dg__cuda_blocks(n * c, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(
        dlogits, gout, count, lse, logits, target, n, c, ignore_index, acc);
    cudaCheckLaunch();
}

/* ---- argmax: first maximum; a NaN wins over numbers (as torch.argmax) ---- */

__global__ void argmax_kernel(int32_t *out, const float *in, int64_t outer, int64_t d, int64_t inner) {
    GRID_STRIDE(q, outer * inner) {
        const float *x = in + (q / inner) * d * inner + q % inner;
        int64_t best = 0;
        for (int64_t k = 1; k < d; k++)
            if (x[k * inner] > x[best * inner] || (isnan(x[k * inner]) && !isnan(x[best * inner])))
                best = k;
        out[q] = (int32_t)best;
    }
}

void dg__cuda_argmax(int32_t *out, const float *in, int64_t outer, int64_t d, int64_t inner) {
    if (outer <= 0 || inner <= 0) return;
    dg__cuda_bind();
    argmax_kernel<<<dg__cuda_blocks(outer * inner, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(
        out, in, outer, d, inner);
    cudaCheckLaunch();
}
