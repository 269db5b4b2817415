/* gemm_dnnl.c - the bf16 GEMM through oneDNN (DG_HAVE_DNNL: libdnnl found
 * at configure time, DG_WITH_DNNL): a dnnl matmul with bf16 inputs and a
 * float32 output, op(A) and op(B) described by strides (no copies), alpha
 * as an output scale and beta as a sum post-op. oneDNN picks its kernel
 * (AMX, AVX512_BF16, AVX512 emulation) at run time.
 *
 * Primitives, with their memory objects, are cached per shape (trans_a,
 * trans_b, m, n, k, lda, ldb, ldc, alpha, beta) in a small per-thread
 * table, so threads never share a primitive or its scratchpad and no lock
 * is taken; a thread's table is freed when it exits (the main thread's
 * stays until the process ends). The engine is shared, created once.
 *
 * Threads: Debian's oneDNN is built with OpenMP (DNNL_CPU_RUNTIME_OMP), so
 * each call sets the calling thread's OpenMP team size to OpenBLAS's thread
 * count, which dg_set_num_threads sets (1 for dgrad's trainer with
 * --threads 1): the bf16 products use as many threads as the float32 ones. */
#include "gemm_dnnl.h"

#ifdef DG_HAVE_DNNL

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <dnnl.h>

/* from OpenBLAS (cblas.h) and OpenMP (omp.h): declared here so that the
 * file needs neither header nor -fopenmp */
int openblas_get_num_threads(void);
void omp_set_num_threads(int n);
int omp_get_max_threads(void);

#define CACHE_SLOTS 32

typedef struct {
    bool used, ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    dnnl_primitive_t prim;
    dnnl_memory_t ma, mb, mc;
} slot;

typedef struct {
    slot s[CACHE_SLOTS];
    int next;          /* round-robin eviction */
    dnnl_stream_t stream;
} cache;

static dnnl_engine_t g_engine;
static bool g_engine_ok;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_key;   /* its destructor frees a thread's cache at thread exit */
static _Thread_local cache t_cache;

static void slot_free(slot *s) {
    if (!s->used) return;
    dnnl_primitive_destroy(s->prim);
    dnnl_memory_destroy(s->ma);
    dnnl_memory_destroy(s->mb);
    dnnl_memory_destroy(s->mc);
    memset(s, 0, sizeof *s);
}

static void cache_free(void *p) {
    cache *c = p;
    for (int i = 0; i < CACHE_SLOTS; i++) slot_free(&c->s[i]);
    if (c->stream) dnnl_stream_destroy(c->stream);
    c->stream = NULL;
}

static void engine_init(void) {
    g_engine_ok = pthread_key_create(&g_key, cache_free) == 0 &&
                  dnnl_engine_create(&g_engine, dnnl_cpu, 0) == dnnl_success;
}

static bool md_2d(dnnl_memory_desc_t *md, int64_t r, int64_t c, int64_t sr, int64_t sc,
                  dnnl_data_type_t dt) {
    dnnl_dims_t dims = { r, c }, strides = { sr, sc };
    return dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides) == dnnl_success;
}

/* builds s for the shape; false (s left unused) on any oneDNN failure */
static bool slot_build(slot *s, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda,
                       int64_t ldb, int64_t ldc, float alpha, float beta) {
    dnnl_memory_desc_t a_md, b_md, c_md;
    if (!md_2d(&a_md, m, k, ta ? 1 : lda, ta ? lda : 1, dnnl_bf16) ||
        !md_2d(&b_md, k, n, tb ? 1 : ldb, tb ? ldb : 1, dnnl_bf16) ||
        !md_2d(&c_md, m, n, ldc, 1, dnnl_f32))
        return false;
    dnnl_matmul_desc_t desc;
    if (dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md) != dnnl_success) return false;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    bool ok = dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && alpha != 1.0f) ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) == dnnl_success;
    if (ok && beta != 0.0f) {
        ok = dnnl_post_ops_create(&po) == dnnl_success && dnnl_post_ops_append_sum(po, beta) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    }
    if (ok) ok = dnnl_primitive_desc_create(&pd, &desc, attr, g_engine, NULL) == dnnl_success;
    memset(s, 0, sizeof *s);
    if (ok) ok = dnnl_primitive_create(&s->prim, pd) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) {
        if (s->prim) dnnl_primitive_destroy(s->prim);
        memset(s, 0, sizeof *s);
        return false;
    }
    /* memory objects without buffers (DNNL_MEMORY_NONE); set per call */
    if (dnnl_memory_create(&s->ma, &a_md, g_engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&s->mb, &b_md, g_engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&s->mc, &c_md, g_engine, DNNL_MEMORY_NONE) != dnnl_success) {
        dnnl_primitive_destroy(s->prim);
        if (s->ma) dnnl_memory_destroy(s->ma);
        if (s->mb) dnnl_memory_destroy(s->mb);
        memset(s, 0, sizeof *s);
        return false;
    }
    s->used = true;
    s->ta = ta; s->tb = tb;
    s->m = m; s->n = n; s->k = k; s->lda = lda; s->ldb = ldb; s->ldc = ldc;
    s->alpha = alpha; s->beta = beta;
    return true;
}

static slot *lookup(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                    int64_t ldc, float alpha, float beta) {
    cache *c = &t_cache;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        slot *s = &c->s[i];
        if (s->used && s->ta == ta && s->tb == tb && s->m == m && s->n == n && s->k == k &&
            s->lda == lda && s->ldb == ldb && s->ldc == ldc && s->alpha == alpha && s->beta == beta)
            return s;
    }
    slot *s = &c->s[c->next];
    c->next = (c->next + 1) % CACHE_SLOTS;
    slot_free(s);
    return slot_build(s, ta, tb, m, n, k, lda, ldb, ldc, alpha, beta) ? s : NULL;
}

bool dg__dnnl_available(void) {
    pthread_once(&g_once, engine_init);
    return g_engine_ok;
}

bool dg__dnnl_gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                        float *c, int64_t ldc) {
    if (!dg__dnnl_available()) return false;
    if (m <= 0 || n <= 0) return true;
    if (k <= 0) {   /* oneDNN rejects empty reductions: C = beta C */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return true;
    }
    cache *ch = &t_cache;
    if (!ch->stream && dnnl_stream_create(&ch->stream, g_engine, dnnl_stream_default_flags) != dnnl_success) {
        ch->stream = NULL;
        return false;
    }
    if (!pthread_getspecific(g_key)) pthread_setspecific(g_key, ch);
    slot *s = lookup(ta, tb, m, n, k, lda, ldb, ldc, alpha, beta);
    if (!s) return false;
    int nt = openblas_get_num_threads();
    if (nt > 0 && omp_get_max_threads() != nt) omp_set_num_threads(nt);
    if (dnnl_memory_set_data_handle(s->ma, (void *)a) != dnnl_success ||
        dnnl_memory_set_data_handle(s->mb, (void *)b) != dnnl_success ||
        dnnl_memory_set_data_handle(s->mc, c) != dnnl_success)
        return false;
    dnnl_exec_arg_t args[3] = {
        { DNNL_ARG_SRC, s->ma }, { DNNL_ARG_WEIGHTS, s->mb }, { DNNL_ARG_DST, s->mc } };
    if (dnnl_primitive_execute(s->prim, ch->stream, 3, args) != dnnl_success) return false;
    return dnnl_stream_wait(ch->stream) == dnnl_success;
}

#else /* !DG_HAVE_DNNL */

bool dg__dnnl_available(void) { return false; }

bool dg__dnnl_gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                        const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb, float beta,
                        float *c, int64_t ldc) {
    (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda;
    (void)b; (void)ldb; (void)beta; (void)c; (void)ldc;
    return false;
}

#endif
