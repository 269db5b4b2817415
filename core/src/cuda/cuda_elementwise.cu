/* cuda_elementwise.cu - fill, binary (strided/broadcast views), unary and the
 * optimizer steps. Each op: a kernel with a grid-stride loop, and a host
 * launcher that queues it on the backend stream and checks the launch.
 * Formulas are those of backend_cpu.c, term for term. */
#include "cuda-impl.h"

#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

/* ---- fill ----------------------------------------------------------------- */

__global__ void fill_kernel(float *dst, int64_t n, float v) {
    GRID_STRIDE(i, n) dst[i] = v;
}

void dg__cuda_fill(float *dst, int64_t n, float value) {
    if (n <= 0) return;
    dg__cuda_bind();
    fill_kernel<<<dg__cuda_blocks(n, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(dst, n, value);
    cudaCheckLaunch();
}

/* (m x n, ldc) c = beta == 0 ? 0 : beta * c */
__global__ void scale_matrix_kernel(float *c, int64_t m, int64_t n, int64_t ldc, float beta) {
    GRID_STRIDE(i, m * n) {
        float *p = c + (i / n) * ldc + i % n;
        *p = beta == 0.0f ? 0.0f : beta * *p;
    }
}

void dg__cuda_scale_matrix(float *c, int64_t m, int64_t n, int64_t ldc, float beta) {
    scale_matrix_kernel<<<dg__cuda_blocks(m * n, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0,
                          dg__cuda.stream>>>(c, m, n, ldc, beta);
    cudaCheckLaunch();
}

/* ---- binary ------------------------------------------------------------------ */

/* Shape and strides (elements) of out, a and b after merging dims, passed
 * by value. The last dim varies fastest. */
typedef struct {
    int nd;
    int64_t shape[DG_MAX_DIMS];
    int64_t so[DG_MAX_DIMS], sa[DG_MAX_DIMS], sb[DG_MAX_DIMS];
} bin_geom;

/* As collapse() in backend_cpu.c: drop size-1 dims and merge adjacent dims
 * that are contiguous with each other in all three views. */
static void bin_collapse(const dg_tensor *o, const dg_tensor *a, const dg_tensor *b, bin_geom *g) {
    int nd = 0;
    for (int d = 0; d < o->ndim; d++) {
        if (o->shape[d] == 1) continue;
        if (nd > 0 && g->so[nd - 1] == o->stride[d] * o->shape[d] &&
            g->sa[nd - 1] == a->stride[d] * o->shape[d] && g->sb[nd - 1] == b->stride[d] * o->shape[d]) {
            g->shape[nd - 1] *= o->shape[d];
            g->so[nd - 1] = o->stride[d];
            g->sa[nd - 1] = a->stride[d];
            g->sb[nd - 1] = b->stride[d];
            continue;
        }
        g->shape[nd] = o->shape[d];
        g->so[nd] = o->stride[d];
        g->sa[nd] = a->stride[d];
        g->sb[nd] = b->stride[d];
        nd++;
    }
    if (nd == 0) {
        g->shape[0] = 1;
        g->so[0] = g->sa[0] = g->sb[0] = 1;
        nd = 1;
    }
    g->nd = nd;
}

template <int OP> __device__ __forceinline__ float bin_apply(float x, float y) {
    switch (OP) {
    case DG_BIN_ADD: return x + y;
    case DG_BIN_SUB: return x - y;
    case DG_BIN_MUL: return x * y;
    case DG_BIN_DIV: return x / y;
    case DG_BIN_COPY: return x;
    default: return y <= 0.0f ? 0.0f : x;   /* DG_BIN_RELU_BWD; y NaN: x, as PyTorch */
    }
}

/* All three views contiguous over n elements. */
template <int OP>
__global__ void binary_contig_kernel(float *o, const float *a, const float *b, int64_t n,
                                     float alpha, bool acc) {
    GRID_STRIDE(i, n) {
        float v = alpha * bin_apply<OP>(a[i], b[i]);
        o[i] = acc ? o[i] + v : v;
    }
}

template <int OP>
__global__ void binary_strided_kernel(float *o, const float *a, const float *b, int64_t n,
                                      bin_geom g, float alpha, bool acc) {
    GRID_STRIDE(i, n) {
        int64_t rem = i, oo = 0, oa = 0, ob = 0;
        for (int d = g.nd - 1; d >= 0; d--) {
            int64_t idx = rem % g.shape[d];
            rem /= g.shape[d];
            oo += idx * g.so[d];
            oa += idx * g.sa[d];
            ob += idx * g.sb[d];
        }
        float v = alpha * bin_apply<OP>(a[oa], b[ob]);
        o[oo] = acc ? o[oo] + v : v;
    }
}

template <int OP>
static void binary_launch(float *o, const float *a, const float *b, int64_t n, const bin_geom *g,
                          float alpha, bool acc) {
    unsigned blocks = dg__cuda_blocks(n, DG_CUDA_BLOCK);
    if (g->nd == 1 && g->so[0] == 1 && g->sa[0] == 1 && g->sb[0] == 1)
        binary_contig_kernel<OP><<<blocks, DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(o, a, b, n, alpha, acc);
    else
        binary_strided_kernel<OP><<<blocks, DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(o, a, b, n, *g, alpha, acc);
    cudaCheckLaunch();
}

void dg__cuda_binary(dg_binop op, const dg_tensor *out, const dg_tensor *a, const dg_tensor *b,
                     float alpha, bool acc) {
    if (op == DG_BIN_COPY) b = a;
    int64_t n = 1;
    for (int d = 0; d < out->ndim; d++) n *= out->shape[d];
    if (n == 0) return;
    dg__cuda_bind();
    bin_geom g;
    bin_collapse(out, a, b, &g);
    float *o = (float *)out->data;
    const float *pa = (const float *)a->data, *pb = (const float *)b->data;
    switch (op) {
    case DG_BIN_ADD: binary_launch<DG_BIN_ADD>(o, pa, pb, n, &g, alpha, acc); break;
    case DG_BIN_SUB: binary_launch<DG_BIN_SUB>(o, pa, pb, n, &g, alpha, acc); break;
    case DG_BIN_MUL: binary_launch<DG_BIN_MUL>(o, pa, pb, n, &g, alpha, acc); break;
    case DG_BIN_DIV: binary_launch<DG_BIN_DIV>(o, pa, pb, n, &g, alpha, acc); break;
    case DG_BIN_COPY: binary_launch<DG_BIN_COPY>(o, pa, pb, n, &g, alpha, acc); break;
    case DG_BIN_RELU_BWD: binary_launch<DG_BIN_RELU_BWD>(o, pa, pb, n, &g, alpha, acc); break;
    default: DG_ASSERT(!"cuda binary: bad op");
    }
}

/* ---- unary ------------------------------------------------------------------------ */

__global__ void unary_kernel(dg_unop op, float *out, const float *a, int64_t n, float alpha) {
    GRID_STRIDE(i, n) {
        float x = a[i], y;
        switch (op) {
        case DG_UN_RELU: y = x < 0.0f ? 0.0f : x; break;   /* NaN, -0 stay */
        case DG_UN_EXP: y = expf(x); break;
        case DG_UN_LOG: y = logf(x); break;
        case DG_UN_SCALE: y = alpha * x; break;
        default: y = x + alpha; break;   /* DG_UN_ADD_SCALAR */
        }
        out[i] = y;
    }
}

void dg__cuda_unary(dg_unop op, float *out, const float *a, int64_t n, float alpha) {
    if (n <= 0) return;
    DG_ASSERT((unsigned)op <= DG_UN_ADD_SCALAR);
    dg__cuda_bind();
    unary_kernel<<<dg__cuda_blocks(n, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(op, out, a, n, alpha);
    cudaCheckLaunch();
}

/* ---- optimizers (torch.optim 1.13 single-tensor formulas, as backend_cpu.c) ---- */

__global__ void sgd_kernel(float *p, const float *g, float *buf, int64_t n, float lr,
                           float momentum, float dampening, float weight_decay, bool nesterov,
                           bool first_step) {
    GRID_STRIDE(i, n) {
        float d = g[i];
        if (weight_decay != 0.0f) d = d + weight_decay * p[i];
        if (momentum != 0.0f) {
            float b = first_step ? d : buf[i] * momentum + (1.0f - dampening) * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[i] = p[i] + (-lr) * d;
    }
}

void dg__cuda_sgd_step(float *p, const float *g, float *buf, int64_t n, float lr, float momentum,
                       float dampening, float weight_decay, bool nesterov, bool first_step) {
    if (n <= 0) return;
    DG_ASSERT(momentum == 0.0f || buf != NULL);
    dg__cuda_bind();
    sgd_kernel<<<dg__cuda_blocks(n, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(
        p, g, buf, n, lr, momentum, dampening, weight_decay, nesterov, first_step);
    cudaCheckLaunch();
}

/* Constants are rounded on the host exactly as backend_cpu.c does. With dk
 * (adam_step_dev, graph capture) ss, bc2 and decay come from device memory
 * instead, rounded the same way on the host before each replay. */
typedef struct {
    float beta1, beta2, omb1, omb2, ss, bc2, decay, l2, eps;
    bool decay_p;
} adam_consts;

__global__ void adam_kernel(float *__restrict__ p, const float *__restrict__ g,
                            float *__restrict__ m, float *__restrict__ v,
                            float *__restrict__ vmax, int64_t n, adam_consts k,
                            const float *__restrict__ dk) {
    if (dk) {
        k.ss = dk[0];
        k.bc2 = dk[1];
        k.decay = dk[2];
    }
    GRID_STRIDE(i, n) {
        float pi = p[i];
        if (k.decay_p) pi = pi * k.decay;
        float grad = k.l2 != 0.0f ? g[i] + k.l2 * pi : g[i];
        float mi = m[i] * k.beta1 + grad * k.omb1;
        float vi = v[i] * k.beta2 + k.omb2 * grad * grad;
        m[i] = mi;
        v[i] = vi;
        if (vmax) {
            float vm = vmax[i] > vi ? vmax[i] : vi;
            vmax[i] = vm;
            vi = vm;
        }
        p[i] = pi + k.ss * (mi / (sqrtf(vi) / k.bc2 + k.eps));
    }
}

void dg__cuda_adam_step(float *p, const float *g, float *m, float *v, float *vmax, int64_t n,
                        float lr, float beta1, float beta2, float eps, float weight_decay,
                        bool decoupled, double step_size, double bc2_sqrt) {
    if (n <= 0) return;
    dg__cuda_bind();
    adam_consts k;
    k.beta1 = beta1;
    k.beta2 = beta2;
    k.omb1 = (float)(1.0 - (double)beta1);
    k.omb2 = (float)(1.0 - (double)beta2);
    k.ss = (float)(-step_size);
    k.bc2 = (float)bc2_sqrt;
    k.decay = (float)(1.0 - (double)lr * (double)weight_decay);
    k.l2 = decoupled ? 0.0f : weight_decay;
    k.eps = eps;
    k.decay_p = decoupled && weight_decay != 0.0f;
    adam_kernel<<<dg__cuda_blocks(n, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(
        p, g, m, v, vmax, n, k, nullptr);
    cudaCheckLaunch();
}

void dg__cuda_adam_step_dev(float *p, const float *g, float *m, float *v, float *vmax, int64_t n,
                            float beta1, float beta2, float eps, float weight_decay,
                            bool decoupled, const float *consts) {
    if (n <= 0) return;
    DG_ASSERT(consts != NULL);
    dg__cuda_bind();
    adam_consts k;
    k.beta1 = beta1;
    k.beta2 = beta2;
    k.omb1 = (float)(1.0 - (double)beta1);
    k.omb2 = (float)(1.0 - (double)beta2);
    k.ss = k.bc2 = k.decay = 0.0f;   /* from consts */
    k.l2 = decoupled ? 0.0f : weight_decay;
    k.eps = eps;
    k.decay_p = decoupled && weight_decay != 0.0f;
    adam_kernel<<<dg__cuda_blocks(n, DG_CUDA_BLOCK), DG_CUDA_BLOCK, 0, dg__cuda.stream>>>(
        p, g, m, v, vmax, n, k, consts);
    cudaCheckLaunch();
}
