/* cuda-impl.h - internals shared by the CUDA backend's .cu files
 * (backend_cuda.cu: init, memory, gemm and the table; cuda_elementwise.cu;
 * cuda_reduce.cu; cuda_conv.cu). Not installed; included only from .cu files. */
#ifndef DGRAD_CUDA_IMPL_H
#define DGRAD_CUDA_IMPL_H

#include <cuda_runtime.h>
#include <cublas_v2.h>

extern "C" {
#include "impl.h"
}

/* Per-process state of the backend: one device, one stream that every
 * kernel, copy and cuBLAS call uses, so ops are ordered without events.
 * The backend table's slots take no context, hence one global. */
typedef struct {
    int device;
    int num_sms;
    cudaStream_t stream;
    cublasHandle_t cublas;
    long long *ce_flag;        /* device: first bad cross-entropy label, or -1 */
    long long *ce_flag_host;   /* pinned host copy of ce_flag */
    bool check_labels;         /* DG_CUDA_CHECK_LABELS != 0 */
    void *cublas_ws;           /* fixed cuBLAS workspace (graph capture) */
} dg_cuda_state;

extern dg_cuda_state dg__cuda;
/* This thread is capturing a graph on the stream (the capture is
 * thread-local: other threads may still allocate and synchronize). */
extern thread_local bool dg__cuda_capturing;

/* A CUDA or cuBLAS failure after init means the device is unusable (most
 * CUDA errors are sticky): print the call, the error and file:line, and
 * abort, as DG_ASSERT does. Never exit(). */
void dg__cuda_fail(const char *call, const char *err, const char *file, int line);

#define cudaCheck(call)                                                            \
    do {                                                                           \
        cudaError_t dg_e_ = (call);                                                \
        if (dg_e_ != cudaSuccess)                                                  \
            dg__cuda_fail(#call, cudaGetErrorString(dg_e_), __FILE__, __LINE__);   \
    } while (0)

#define cublasCheck(call)                                                          \
    do {                                                                           \
        cublasStatus_t dg_s_ = (call);                                             \
        if (dg_s_ != CUBLAS_STATUS_SUCCESS)                                        \
            dg__cuda_fail(#call, dg__cublas_status(dg_s_), __FILE__, __LINE__);     \
    } while (0)

/* cuBLAS is loaded with dlopen when the first CUDA context starts, not
 * linked: mapping it (with cuBLASLt) costs a process about 110 MiB of
 * resident memory, which CPU-only runs of a CUDA-enabled build should not
 * pay. dg__cublas_load: DG_OK, or DG_ERR with msg (n bytes) saying which
 * file or symbol is missing; idempotent. Tested without a GPU. */
extern "C" dg_status dg__cublas_load(char *msg, size_t n);
extern "C" const char *dg__cublas_status(cublasStatus_t st);

/* Calls that wait for the device or (de)allocate are not allowed inside a
 * graph capture: fail with a message that says so. */
#define dg__cuda_no_capture(what)                                                    \
    do {                                                                             \
        if (dg__cuda_capturing)                                                      \
            dg__cuda_fail(what, "not allowed inside a CUDA graph capture (a host "   \
                          "read such as dg_item, a device allocation or a free in "  \
                          "the captured step; see dgrad/graph.h)", __FILE__, __LINE__); \
    } while (0)

/* After every kernel launch. */
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())

/* Make the backend's device current on the calling thread (cudaSetDevice is
 * per thread; this costs one thread-local read after the first call). */
void dg__cuda_bind(void);

#define DG_CUDA_BLOCK 256

/* Blocks for a grid-stride loop over n elements. */
static inline unsigned dg__cuda_blocks(int64_t n, int block) {
    int64_t b = (n + block - 1) / block;
    int64_t cap = (int64_t)dg__cuda.num_sms * 32;
    if (b > cap) b = cap;
    return (unsigned)(b < 1 ? 1 : b);
}

/* ---- launchers (host functions with the dg_backend signatures) ---------- */

/* cuda_elementwise.cu */
void dg__cuda_fill(float *dst, int64_t n, float value);
void dg__cuda_binary(dg_binop op, const dg_tensor *out, const dg_tensor *a,
                     const dg_tensor *b, float alpha, bool acc);
void dg__cuda_unary(dg_unop op, float *out, const float *a, int64_t n, float alpha);
void dg__cuda_sgd_step(float *p, const float *g, float *buf, int64_t n, float lr,
                       float momentum, float dampening, float weight_decay, bool nesterov,
                       bool first_step);
void dg__cuda_adam_step(float *p, const float *g, float *m, float *v, float *vmax, int64_t n,
                        float lr, float beta1, float beta2, float eps, float weight_decay,
                        bool decoupled, double step_size, double bc2_sqrt);
void dg__cuda_adam_step_dev(float *p, const float *g, float *m, float *v, float *vmax, int64_t n,
                            float beta1, float beta2, float eps, float weight_decay,
                            bool decoupled, const float *consts);
/* c[i*ldc + j] = beta == 0 ? 0 : beta * c[...] over m x n (gemm with k = 0) */
void dg__cuda_scale_matrix(float *c, int64_t m, int64_t n, int64_t ldc, float beta);

/* cuda_reduce.cu */
void dg__cuda_reduce_sum(float *out, const float *in, int64_t outer, int64_t red,
                         int64_t inner, float scale, bool acc);
void dg__cuda_softmax(float *out, const float *in, int64_t outer, int64_t d, int64_t inner,
                      bool log);
void dg__cuda_softmax_bwd(float *gin, const float *gout, const float *y, int64_t outer,
                          int64_t d, int64_t inner, bool log, bool acc);
int64_t dg__cuda_cross_entropy(float *loss, float *count, float *lse, const float *logits,
                               const int32_t *target, int64_t n, int64_t c, int ignore_index,
                               bool known_valid);
void dg__cuda_cross_entropy_bwd(float *dlogits, const float *gout, const float *count,
                                const float *lse, const float *logits, const int32_t *target,
                                int64_t n, int64_t c, int ignore_index, bool acc);
void dg__cuda_argmax(int32_t *out, const float *in, int64_t outer, int64_t d, int64_t inner);

/* cuda_conv.cu (C linkage) */
extern "C" {
void dg__cuda_im2col(float *col, const float *x, const dg_conv_geom *g);
void dg__cuda_col2im(float *x, const float *col, const dg_conv_geom *g, bool acc);
void dg__cuda_maxpool_fwd(float *out, int32_t *idx, const float *x, const dg_conv_geom *g);
void dg__cuda_maxpool_bwd(float *dx, const float *dout, const int32_t *idx,
                          const dg_conv_geom *g, bool acc);
void dg__cuda_avgpool_fwd(float *out, const float *x, const dg_conv_geom *g);
void dg__cuda_avgpool_bwd(float *dx, const float *dout, const dg_conv_geom *g, bool acc);
void dg__cuda_dropout_mask(float *mask, int64_t n, float p, uint64_t seed);
void dg__cuda_bn_stats(float *mean, float *invstd, float *run_mean, float *run_var,
                       const float *x, int64_t n, int64_t c, int64_t hw, float momentum,
                       float eps, bool training);
void dg__cuda_bn_fwd(float *y, const float *x, const float *mean, const float *invstd,
                     const float *w, const float *b, int64_t n, int64_t c, int64_t hw);
void dg__cuda_bn_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *mean, const float *invstd, const float *w, int64_t n,
                     int64_t c, int64_t hw, bool training, bool acc_dx, bool acc_dw, bool acc_db);
}

#endif /* DGRAD_CUDA_IMPL_H */
