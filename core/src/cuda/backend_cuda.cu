/* backend_cuda.cu - the CUDA backend: lazy init and device choice, memory,
 * gemm through cuBLAS, and the backend table. The kernels are in
 * cuda_elementwise.cu and cuda_reduce.cu. cuBLAS is opened with dlopen at
 * init (dg__cublas_load), so that CPU runs of a CUDA build do not map it.
 *
 * One device per process and one stream on it: every kernel, copy and cuBLAS
 * call is queued on that stream, so ops stay ordered without events and only
 * to_host, synchronize, free and the cross-entropy label check wait for it.
 *
 * Device: env DG_DEVICE if set (an index < the device count, else init
 * fails), else LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID
 * (first one set) modulo the device count, else the local rank that a
 * communicator created before the first CUDA context reported
 * (dg__cuda_set_local_rank) modulo the count, else device 0.
 *
 * Graph capture (graph.c): cuBLAS gets a fixed workspace at init, so gemms
 * never allocate; while capturing, calls that would synchronize or
 * allocate abort with a message, and the cross-entropy label check (a read
 * back) is skipped.
 *
 * Math: full FP32. cuBLAS runs in CUBLAS_DEFAULT_MATH (no TF32) and the .cu
 * files build with --fmad=false and IEEE div/sqrt, so elementwise kernels
 * round like the CPU backend; expf/logf and summation order differ, so
 * results match the CPU within ~1e-5 relative, not bit for bit. */
#include "cuda-impl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dg_cuda_state dg__cuda;
thread_local bool dg__cuda_capturing;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static bool g_ok;
static char g_msg[256];
static thread_local bool t_bound;
static int g_local_rank_hint = -1;

/* cuBLAS's recommended workspace on Hopper (4 MiB is enough before it). */
#define DG_CUBLAS_WORKSPACE ((size_t)32 << 20)

void dg__cuda_fail(const char *call, const char *err, const char *file, int line) {
    fflush(stdout);
    fprintf(stderr, "dgrad: CUDA error: %s: %s (%s:%d)\n", call, err, file, line);
    fflush(stderr);
    abort();
}

void dg__cuda_bind(void) {
    if (t_bound) return;
    cudaCheck(cudaSetDevice(dg__cuda.device));
    t_bound = true;
}

/* ---- cuBLAS, loaded on first use (see cuda-impl.h) ------------------------------ */

/* The library's exported names: cublas_v2.h maps cublasCreate and the others
 * to their _v2 symbols; the pointer types come from the declarations. */
static struct {
    void *lib;
    decltype(&cublasCreate_v2) create;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasSetMathMode) set_math_mode;
    decltype(&cublasSetWorkspace_v2) set_workspace;
    decltype(&cublasGetStatusString) status_string;
    decltype(&cublasSgemm_v2) sgemm;
} g_cublas;

#define DG_STR_(x) #x
#define DG_STR(x) DG_STR_(x)

extern "C" dg_status dg__cublas_load(char *msg, size_t n) {
    if (g_cublas.sgemm) return DG_OK;
    /* the build's own copy first (DG_CUBLAS_PATH, from CMake), then the
     * soname through the usual search (RUNPATH, LD_LIBRARY_PATH, ldconfig) */
    const char *names[] = {
#ifdef DG_CUBLAS_PATH
        DG_CUBLAS_PATH,
#endif
        "libcublas.so." DG_STR(CUBLAS_VER_MAJOR), "libcublas.so",
    };
    void *lib = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++)
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(msg, n, "cannot load cuBLAS (libcublas.so.%d): %s", CUBLAS_VER_MAJOR, dlerror());
        return DG_ERR;
    }
    struct { void **slot; const char *name; } syms[] = {
        { (void **)&g_cublas.create, "cublasCreate_v2" },
        { (void **)&g_cublas.set_stream, "cublasSetStream_v2" },
        { (void **)&g_cublas.set_math_mode, "cublasSetMathMode" },
        { (void **)&g_cublas.set_workspace, "cublasSetWorkspace_v2" },
        { (void **)&g_cublas.status_string, "cublasGetStatusString" },
        { (void **)&g_cublas.sgemm, "cublasSgemm_v2" },   /* last: it marks success */
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].slot = dlsym(lib, syms[i].name);
        if (!*syms[i].slot) {
            snprintf(msg, n, "cuBLAS library lacks %s", syms[i].name);
            g_cublas.sgemm = NULL;
            dlclose(lib);
            return DG_ERR;
        }
    }
    g_cublas.lib = lib;
    return DG_OK;
}

extern "C" const char *dg__cublas_status(cublasStatus_t st) {
    return g_cublas.status_string ? g_cublas.status_string(st) : "cuBLAS error";
}

/* ---- init ------------------------------------------------------------------ */

static bool parse_index(const char *s, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 0) return false;
    *out = v;
    return true;
}

/* The environment's settings, checked before any device is asked for, so
 * that a typo is named even where no GPU is; false with g_msg set. */
static bool check_env(void) {
    const char *s = getenv("DG_DEVICE");
    long v;
    if (s && *s && !parse_index(s, &v)) {
        snprintf(g_msg, sizeof g_msg,
                 "dg_ctx_new: DG_DEVICE='%s' is not a CUDA device index (0, 1, ...)", s);
        return false;
    }
    s = getenv("DG_CUDA_CHECK_LABELS");
    if (s && *s && strcmp(s, "0") && strcmp(s, "1")) {
        snprintf(g_msg, sizeof g_msg, "dg_ctx_new: DG_CUDA_CHECK_LABELS='%s' must be 0 or 1", s);
        return false;
    }
    return true;
}

/* The device index, or -1 with g_msg set. */
static int choose_device(int count) {
    const char *s = getenv("DG_DEVICE");
    long v;
    if (s && *s) {
        if (!parse_index(s, &v) || v >= count) {
            snprintf(g_msg, sizeof g_msg,
                     "dg_ctx_new: DG_DEVICE='%s' is not a CUDA device index (this machine has %d)",
                     s, count);
            return -1;
        }
        return (int)v;
    }
    const char *ranks[] = { "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID" };
    for (int i = 0; i < 3; i++) {
        s = getenv(ranks[i]);
        if (s && *s && parse_index(s, &v)) return (int)(v % count);
    }
    if (g_local_rank_hint >= 0) return g_local_rank_hint % count;
    return 0;
}

extern "C" void dg__cuda_set_local_rank(int local_rank) { g_local_rank_hint = local_rank; }
extern "C" void *dg__cuda_stream(void) { return (void *)dg__cuda.stream; }
extern "C" int dg__cuda_device(void) { return dg__cuda.device; }

#define INIT_TRY(call)                                                                   \
    do {                                                                                 \
        cudaError_t e_ = (call);                                                         \
        if (e_ != cudaSuccess) {                                                         \
            snprintf(g_msg, sizeof g_msg, "dg_ctx_new: CUDA init failed: %s: %s", #call, \
                     cudaGetErrorString(e_));                                            \
            cudaGetLastError();                                                          \
            return;                                                                      \
        }                                                                                \
    } while (0)

static void init_once(void) {
    if (!check_env()) return;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(g_msg, sizeof g_msg, "dg_ctx_new: no CUDA device: cudaGetDeviceCount: %s",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError();
        return;
    }
    int dev = choose_device(count);
    if (dev < 0) return;
    dg_cuda_state *s = &dg__cuda;
    s->device = dev;
    INIT_TRY(cudaSetDevice(dev));
    INIT_TRY(cudaDeviceGetAttribute(&s->num_sms, cudaDevAttrMultiProcessorCount, dev));
    INIT_TRY(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    char why[192];
    if (dg__cublas_load(why, sizeof why) != DG_OK) {
        snprintf(g_msg, sizeof g_msg, "dg_ctx_new: CUDA init failed: %s", why);
        return;
    }
    cublasStatus_t st = g_cublas.create(&s->cublas);
    if (st == CUBLAS_STATUS_SUCCESS) st = g_cublas.set_stream(s->cublas, s->stream);
    if (st == CUBLAS_STATUS_SUCCESS) st = g_cublas.set_math_mode(s->cublas, CUBLAS_DEFAULT_MATH);
    if (st == CUBLAS_STATUS_SUCCESS) {
        INIT_TRY(cudaMalloc(&s->cublas_ws, DG_CUBLAS_WORKSPACE));
        st = g_cublas.set_workspace(s->cublas, s->cublas_ws, DG_CUBLAS_WORKSPACE);
    }
    if (st != CUBLAS_STATUS_SUCCESS) {
        snprintf(g_msg, sizeof g_msg, "dg_ctx_new: CUDA init failed: cuBLAS: %s",
                 dg__cublas_status(st));
        return;
    }
    INIT_TRY(cudaMalloc((void **)&s->ce_flag, sizeof *s->ce_flag));
    INIT_TRY(cudaMallocHost((void **)&s->ce_flag_host, sizeof *s->ce_flag_host));
    const char *cl = getenv("DG_CUDA_CHECK_LABELS");
    s->check_labels = !(cl && !strcmp(cl, "0"));
    t_bound = true;
    g_ok = true;
}

/* Optional slot: called by dg_ctx_new. The state lives until exit. */
static bool cuda_init(void) {
    pthread_once(&g_once, init_once);
    if (!g_ok) dg_set_error("%s", g_msg);
    return g_ok;
}

/* ---- memory -------------------------------------------------------------------- */

static void *cuda_alloc(size_t n) {
    dg__cuda_no_capture("cudaMalloc");
    dg__cuda_bind();
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n ? n : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();   /* allocation errors are not sticky: clear it */
        dg_set_error("cuda: cudaMalloc of %zu bytes failed: %s", n, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_free(void *p) {
    if (!p) return;
    dg__cuda_no_capture("cudaFree");
    dg__cuda_bind();
    cudaCheck(cudaStreamSynchronize(dg__cuda.stream));   /* queued kernels may still use p */
    cudaCheck(cudaFree(p));
}

static void cuda_to_host(void *dst, const void *src, size_t n) {
    if (!n) return;
    dg__cuda_no_capture("to_host (a device-to-host read)");
    dg__cuda_bind();
    cudaCheck(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, dg__cuda.stream));
    cudaCheck(cudaStreamSynchronize(dg__cuda.stream));
}

/* Queued on the stream. From pageable memory the data is staged before the
 * call returns, so the caller may reuse src at once; from pinned memory
 * (cudaMallocHost) the copy overlaps, and src must stay unchanged until the
 * next synchronize or to_host. */
static void cuda_from_host(void *dst, const void *src, size_t n) {
    if (!n) return;
    dg__cuda_bind();
    cudaCheck(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, dg__cuda.stream));
}

static void cuda_copy(void *dst, const void *src, size_t n) {
    if (!n || dst == src) return;
    dg__cuda_bind();
    cudaCheck(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, dg__cuda.stream));
}

static void cuda_memset0(void *dst, size_t n) {
    if (!n) return;
    dg__cuda_bind();
    cudaCheck(cudaMemsetAsync(dst, 0, n, dg__cuda.stream));
}

static void cuda_synchronize(void) {
    dg__cuda_no_capture("cudaStreamSynchronize");
    dg__cuda_bind();
    cudaCheck(cudaStreamSynchronize(dg__cuda.stream));
}

/* ---- pinned host memory and events ----------------------------------------------- */

static void *cuda_alloc_host(size_t n) {
    dg__cuda_no_capture("cudaMallocHost");
    dg__cuda_bind();
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, n ? n : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        dg_set_error("cuda: cudaMallocHost of %zu bytes failed: %s", n, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_free_host(void *p) {
    if (!p) return;
    dg__cuda_no_capture("cudaFreeHost");
    dg__cuda_bind();
    cudaCheck(cudaStreamSynchronize(dg__cuda.stream));   /* a queued copy may still read p */
    cudaCheck(cudaFreeHost(p));
}

static void cuda_to_host_async(void *dst, const void *src, size_t n) {
    if (!n) return;
    dg__cuda_bind();
    cudaCheck(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, dg__cuda.stream));
}

static void *cuda_event_new(void) {
    dg__cuda_bind();
    cudaEvent_t e;
    cudaCheck(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return (void *)e;
}

static void cuda_event_free(void *ev) {
    if (ev) cudaCheck(cudaEventDestroy((cudaEvent_t)ev));
}

static void cuda_event_record(void *ev) {
    dg__cuda_bind();
    cudaCheck(cudaEventRecord((cudaEvent_t)ev, dg__cuda.stream));
}

static bool cuda_event_done(void *ev) {
    cudaError_t e = cudaEventQuery((cudaEvent_t)ev);
    if (e == cudaErrorNotReady) {
        (void)cudaGetLastError();   /* not an error: do not leave it for the next check */
        return false;
    }
    cudaCheck(e);
    return true;
}

static void cuda_event_wait(void *ev) {
    dg__cuda_no_capture("cudaEventSynchronize");
    cudaCheck(cudaEventSynchronize((cudaEvent_t)ev));
}

/* ---- graphs ----------------------------------------------------------------------- */

static bool cuda_capture_begin(void) {
    DG_ASSERT(!dg__cuda_capturing);
    dg__cuda_bind();
    /* thread-local: other threads may still allocate and synchronize */
    cudaError_t e = cudaStreamBeginCapture(dg__cuda.stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cudaGetLastError();
        dg_set_error("dg_graph_begin_capture: cudaStreamBeginCapture: %s", cudaGetErrorString(e));
        return false;
    }
    dg__cuda_capturing = true;
    return true;
}

static void *cuda_capture_end(void) {
    DG_ASSERT(dg__cuda_capturing);
    dg__cuda_bind();
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(dg__cuda.stream, &g);
    dg__cuda_capturing = false;
    if (e != cudaSuccess) {
        cudaGetLastError();
        dg_set_error("dg_graph_end_capture: cudaStreamEndCapture: %s", cudaGetErrorString(e));
        if (g) cudaCheck(cudaGraphDestroy(g));
        return NULL;
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaCheck(cudaGraphDestroy(g));
    if (e != cudaSuccess) {
        cudaGetLastError();
        dg_set_error("dg_graph_end_capture: cudaGraphInstantiate: %s", cudaGetErrorString(e));
        return NULL;
    }
    cudaCheck(cudaGraphUpload(x, dg__cuda.stream));
    return (void *)x;
}

static void cuda_graph_launch(void *exec) {
    dg__cuda_bind();
    cudaCheck(cudaGraphLaunch((cudaGraphExec_t)exec, dg__cuda.stream));
}

static void cuda_graph_free(void *exec) {
    if (!exec) return;
    dg__cuda_no_capture("cudaGraphExecDestroy");
    dg__cuda_bind();
    cudaCheck(cudaStreamSynchronize(dg__cuda.stream));
    cudaCheck(cudaGraphExecDestroy((cudaGraphExec_t)exec));
}

/* ---- gemm ------------------------------------------------------------------------ */

/* Row-major C = alpha op(A) op(B) + beta C is column-major
 * C^T = alpha op(B)^T op(A)^T + beta C^T: swap the operands, keep the
 * leading dimensions. */
static void cuda_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                      float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    dg__cuda_bind();
    if (k == 0) {
        dg__cuda_scale_matrix(c, m, n, ldc, beta);
        return;
    }
    const int64_t lim = 2147483647;
    DG_ASSERT(m <= lim && n <= lim && k <= lim && lda <= lim && ldb <= lim && ldc <= lim);
    cublasCheck(g_cublas.sgemm(dg__cuda.cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                            ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, b,
                            (int)ldb, a, (int)lda, &beta, c, (int)ldc));
}

/* ---- the table ----------------------------------------------------------------------- */

extern "C" const dg_backend dg_backend_cuda = {
    .name = "cuda",
    .device = DG_CUDA,
    .init = cuda_init,
    .mem = {
        .alloc = cuda_alloc,
        .free = cuda_free,
        .to_host = cuda_to_host,
        .from_host = cuda_from_host,
        .copy = cuda_copy,
        .memset0 = cuda_memset0,
        .fill = dg__cuda_fill,
        .synchronize = cuda_synchronize,
    },
    .math = {
        .binary = dg__cuda_binary,
        .unary = dg__cuda_unary,
        .gemm = cuda_gemm,
        .gemm_bias = NULL,   /* the engine writes the bias into C, then gemm with beta 1 */
        .reduce_sum = dg__cuda_reduce_sum,
        .softmax = dg__cuda_softmax,
        .softmax_bwd = dg__cuda_softmax_bwd,
        .cross_entropy = dg__cuda_cross_entropy,
        .cross_entropy_bwd = dg__cuda_cross_entropy_bwd,
        .argmax = dg__cuda_argmax,
    },
    .optim = {
        .sgd_step = dg__cuda_sgd_step,
        .adam_step = dg__cuda_adam_step,
        .adam_step_dev = dg__cuda_adam_step_dev,
    },
    .stream = {
        .alloc_host = cuda_alloc_host,
        .free_host = cuda_free_host,
        .to_host_async = cuda_to_host_async,
        .event_new = cuda_event_new,
        .event_free = cuda_event_free,
        .event_record = cuda_event_record,
        .event_done = cuda_event_done,
        .event_wait = cuda_event_wait,
        .capture_begin = cuda_capture_begin,
        .capture_end = cuda_capture_end,
        .graph_launch = cuda_graph_launch,
        .graph_free = cuda_graph_free,
    },
    .cnn = {
        .im2col = dg__cuda_im2col,
        .col2im = dg__cuda_col2im,
        .maxpool_fwd = dg__cuda_maxpool_fwd,
        .maxpool_bwd = dg__cuda_maxpool_bwd,
        .avgpool_fwd = dg__cuda_avgpool_fwd,
        .avgpool_bwd = dg__cuda_avgpool_bwd,
        .dropout_mask = dg__cuda_dropout_mask,
        .bn_stats = dg__cuda_bn_stats,
        .bn_fwd = dg__cuda_bn_fwd,
        .bn_stats_fwd = NULL,   /* bn_stats then bn_fwd */
        .bn_pool_fwd = NULL,   /* no fusion */
        .bn_pool_bwd = NULL,
        .bn_bwd = dg__cuda_bn_bwd,
    },
    .seq = {},    /* no fused LSTM/attention kernels yet: the ops compose generic ones */
    .lowp = {},   /* no bfloat16 kernels yet: dg_autocast_begin fails with a message */
};
