/* tensor.c - the context, its arenas, parameters, tensor creation, RNG. */
#include "impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#define DG_ALIGN 64

/* ---- backends ------------------------------------------------------------ */

static const dg_backend *g_backends[DG_DEVICE_COUNT] = { &dg_backend_cpu,
#ifdef DG_HAVE_CUDA
                                                          &dg_backend_cuda,
#endif
};

const dg_backend *dg_backend_get(dg_device device) {
    if ((int)device < 0 || device >= DG_DEVICE_COUNT) return NULL;
    return g_backends[device];
}

/* ---- arena ------------------------------------------------------------- */

static void *arena_sys_alloc(const dg_backend *be, size_t n) {
    if (be) return be->mem.alloc(n);
    return aligned_alloc(DG_ALIGN, (n + DG_ALIGN - 1) / DG_ALIGN * DG_ALIGN);
}

static void arena_sys_free(const dg_backend *be, void *p) {
    if (be) be->mem.free(p);
    else free(p);
}

static dg_arena_chunk *arena_new_chunk(dg_arena *a, size_t size) {
    dg_arena_chunk *c = malloc(sizeof *c);
    DG_ASSERT(c != NULL);
    c->mem = arena_sys_alloc(a->be, size);
    DG_ASSERT(c->mem != NULL);
    c->size = size;
    c->used = 0;
    c->next = a->chunks;
    a->chunks = c;
    a->capacity += size;
    a->mallocs++;
    return c;
}

void *dg_arena_alloc(dg_arena *a, size_t nbytes) {
    nbytes = (nbytes + DG_ALIGN - 1) / DG_ALIGN * DG_ALIGN;
    if (nbytes == 0) nbytes = DG_ALIGN;
    dg_arena_chunk *c = a->chunks;
    if (!c || c->used + nbytes > c->size) {
        size_t size = c ? c->size * 2 : (size_t)1 << 20;
        while (size < nbytes) size *= 2;
        c = arena_new_chunk(a, size);
    }
    void *p = (char *)c->mem + c->used;
    c->used += nbytes;
    return p;
}

/* Rewind. If the step needed several chunks, replace them by one chunk of
 * the total size, so later steps fit in a single chunk and malloc nothing. */
void dg_arena_reset(dg_arena *a) {
    if (a->chunks && a->chunks->next) {
        size_t total = a->capacity;
        dg_arena_release(a);
        arena_new_chunk(a, total);
    } else if (a->chunks) {
        a->chunks->used = 0;
    }
}

void dg_arena_release(dg_arena *a) {
    dg_arena_chunk *c = a->chunks;
    while (c) {
        dg_arena_chunk *next = c->next;
        arena_sys_free(a->be, c->mem);
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->capacity = 0;
}

/* ---- context ------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

dg_ctx *dg_ctx_new(dg_device device) {
    const dg_backend *be = dg_backend_get(device);
    if (!be) {
        dg_set_error("dg_ctx_new: device %s has no backend in this build",
                     device == DG_CUDA ? "cuda" : "unknown");
        return NULL;
    }
    if (be->init && !be->init()) return NULL;
    dg_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) { dg_set_error("dg_ctx_new: out of memory"); return NULL; }
    ctx->device = device;
    ctx->be = be;
    ctx->meta.be = NULL;
    ctx->data.be = be;
    ctx->grad_enabled = true;
    ctx->tape_gen = 1;
    dg_manual_seed(ctx, 0);
    return ctx;
}

void dg_ctx_free(dg_ctx *ctx) {
    if (!ctx) return;
    dg_arena_release(&ctx->meta);
    dg_arena_release(&ctx->data);
    for (int i = 0; i < ctx->nparams; i++) {
        free(ctx->params[i]->grad);
        free(ctx->params[i]);
    }
    free(ctx->params);
    if (ctx->param_buf) ctx->be->mem.free(ctx->param_buf);
    if (ctx->grad_buf) ctx->be->mem.free(ctx->grad_buf);
    dg_persist *p = ctx->persist;
    while (p) {
        dg_persist *next = p->next;
        if (p->data) ctx->be->mem.free(p->data);
        free(p->header);
        free(p);
        p = next;
    }
    for (int i = 0; i < ctx->nowned; i++) free(ctx->owned[i]);
    free(ctx->owned);
    free(ctx->tape);
    free(ctx);
}

dg_device dg_ctx_device(const dg_ctx *ctx) { return ctx->device; }

void dg_ctx_reset_step(dg_ctx *ctx) {
    /* a persistent tensor that requires grad got its gradient in the arena */
    for (dg_persist *p = ctx->persist; p; p = p->next)
        if (p->header) p->header->grad = NULL;
    dg_arena_reset(&ctx->meta);
    dg_arena_reset(&ctx->data);
    ctx->tape_len = 0;
    ctx->tape_gen++;
}

size_t dg_ctx_arena_capacity(const dg_ctx *ctx) {
    return ctx->meta.capacity + ctx->data.capacity;
}

uint64_t dg_ctx_arena_mallocs(const dg_ctx *ctx) {
    return ctx->meta.mallocs + ctx->data.mallocs;
}

bool dg_set_grad_enabled(dg_ctx *ctx, bool enabled) {
    bool prev = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return prev;
}

bool dg_is_grad_enabled(const dg_ctx *ctx) { return ctx->grad_enabled; }

void dg_set_num_threads(int n) {
    if (n > 0) openblas_set_num_threads(n);
}

void dg_ctx_set_grad_ready_hook(dg_ctx *ctx, dg_grad_ready_fn fn, void *user) {
    ctx->grad_ready = fn;
    ctx->grad_ready_user = user;
}

/* ---- RNG: xoshiro256** ------------------------------------------------- */

void dg_manual_seed(dg_ctx *ctx, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) ctx->rng[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t dg_rand_u64(dg_ctx *ctx) {
    uint64_t *s = ctx->rng;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float dg_rand_uniform(dg_ctx *ctx) {
    return (float)(dg_rand_u64(ctx) >> 40) * (1.0f / 16777216.0f);
}

void dg_rng_get_state(const dg_ctx *ctx, uint64_t state[4]) {
    memcpy(state, ctx->rng, sizeof ctx->rng);
}

void dg_rng_set_state(dg_ctx *ctx, const uint64_t state[4]) {
    memcpy(ctx->rng, state, sizeof ctx->rng);
}

/* ---- tensors ------------------------------------------------------------- */

size_t dg_dtype_size(dg_dtype dtype) {
    switch (dtype) {
    case DG_F32: return 4;
    case DG_F16: return 2;
    case DG_BF16: return 2;
    case DG_I32: return 4;
    case DG_I64: return 8;
    case DG_U8: return 1;
    default: DG_ASSERT(!"bad dtype"); return 0;
    }
}

const char *dg_dtype_name(dg_dtype dtype) {
    static const char *names[] = { "float32", "float16", "bfloat16", "int32", "int64", "uint8" };
    DG_ASSERT((int)dtype >= 0 && dtype < DG_DTYPE_COUNT);
    return names[dtype];
}

void dg__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i];
    }
}

static int64_t shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

static bool check_shape(const char *fn, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > DG_MAX_DIMS) {
        dg_set_error("%s: %d dims, at most %d are supported", fn, ndim, DG_MAX_DIMS);
        return false;
    }
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            dg_set_error("%s: negative size %lld in dim %d", fn, (long long)shape[i], i);
            return false;
        }
    }
    return true;
}

void dg__tensor_header_init(dg_tensor *t, dg_ctx *ctx, dg_dtype dtype, int ndim,
                            const int64_t *shape, void *data) {
    memset(t, 0, sizeof *t);
    t->ctx = ctx;
    t->dtype = dtype;
    t->device = ctx->device;
    t->ndim = ndim;
    t->param_index = -1;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    dg__contiguous_strides(ndim, shape, t->stride);
    t->data = data;
}

static dg_tensor *tensor_header(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape) {
    dg_tensor *t = dg_arena_alloc(&ctx->meta, sizeof *t);
    dg__tensor_header_init(t, ctx, dtype, ndim, shape, NULL);
    return t;
}

dg_tensor *dg__tensor_alloc(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape) {
    dg_tensor *t = tensor_header(ctx, dtype, ndim, shape);
    t->data = dg_arena_alloc(&ctx->data, (size_t)shape_numel(ndim, shape) * dg_dtype_size(dtype));
    return t;
}

dg_tensor *dg__view(dg_tensor *base, int ndim, const int64_t *shape, const int64_t *stride,
                    void *data) {
    dg_tensor *t = tensor_header(base->ctx, base->dtype, ndim, shape);
    for (int i = 0; i < ndim; i++) t->stride[i] = stride[i];
    t->data = data;
    return t;
}

dg_tensor *dg_tensor_new(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape) {
    if (!ctx || !check_shape("dg_tensor_new", ndim, shape)) return NULL;
    return dg__tensor_alloc(ctx, dtype, ndim, shape);
}

dg_tensor *dg_zeros(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape) {
    dg_tensor *t = dg_tensor_new(ctx, dtype, ndim, shape);
    if (t) ctx->be->mem.memset0(t->data, (size_t)dg_numel(t) * dg_dtype_size(dtype));
    return t;
}

dg_tensor *dg_full(dg_ctx *ctx, int ndim, const int64_t *shape, float value) {
    dg_tensor *t = dg_tensor_new(ctx, DG_F32, ndim, shape);
    if (t) ctx->be->mem.fill(t->data, dg_numel(t), value);
    return t;
}

dg_tensor *dg_scalar(dg_ctx *ctx, float value) { return dg_full(ctx, 0, NULL, value); }

/* ---- the value range of int32 tensors (labels) ----------------------------
 * A GPU cannot tell the host that a label is out of range without a
 * read-back, which stalls the host once per step. Labels come from the
 * host, so their range is taken there, as they are written. Any later int32
 * write in the context (through the API, or a graph replay) makes every
 * recorded range stale: a write through a view can change a tensor that
 * does not know of it. */

static void range_from_host(dg_tensor *t, const void *src) {
    if (t->dtype != DG_I32) return;
    uint64_t epoch = ++t->ctx->i32_writes;
    const int32_t *v = src;
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    for (int64_t i = 0, n = dg_numel(t); i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    t->range_min = lo;
    t->range_max = hi;
    t->range_epoch = epoch;
}

bool dg__values_below(const dg_tensor *t, int64_t c) {
    return t->dtype == DG_I32 && t->range_epoch != 0 && t->range_epoch == t->ctx->i32_writes &&
           t->range_min >= 0 && t->range_max < c;
}

dg_tensor *dg_tensor_from(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape,
                          const void *host_data) {
    dg_tensor *t = dg_tensor_new(ctx, dtype, ndim, shape);
    if (t) {
        ctx->be->mem.from_host(t->data, host_data, (size_t)dg_numel(t) * dg_dtype_size(dtype));
        range_from_host(t, host_data);
    }
    return t;
}

void *dg__ctx_calloc(dg_ctx *ctx, size_t nbytes) {
    if (ctx->nowned == ctx->owned_cap) {
        ctx->owned_cap = ctx->owned_cap ? ctx->owned_cap * 2 : 16;
        ctx->owned = realloc(ctx->owned, (size_t)ctx->owned_cap * sizeof *ctx->owned);
        DG_ASSERT(ctx->owned != NULL);
    }
    void *p = calloc(1, nbytes ? nbytes : 1);
    DG_ASSERT(p != NULL);
    ctx->owned[ctx->nowned++] = p;
    return p;
}

static dg_persist *persist_new(dg_ctx *ctx, size_t nbytes) {
    dg_persist *p = calloc(1, sizeof *p);
    DG_ASSERT(p != NULL);
    p->data = ctx->be->mem.alloc(nbytes ? nbytes : 1);
    DG_ASSERT(p->data != NULL);
    ctx->be->mem.memset0(p->data, nbytes ? nbytes : 1);
    p->next = ctx->persist;
    ctx->persist = p;
    return p;
}

void *dg__persist_alloc(dg_ctx *ctx, size_t nbytes) { return persist_new(ctx, nbytes)->data; }

dg_tensor *dg_tensor_persistent(dg_ctx *ctx, dg_dtype dtype, int ndim, const int64_t *shape) {
    if (!ctx || !check_shape("dg_tensor_persistent", ndim, shape)) return NULL;
    dg_persist *p = persist_new(ctx, (size_t)shape_numel(ndim, shape) * dg_dtype_size(dtype));
    dg_tensor *t = malloc(sizeof *t);
    DG_ASSERT(t != NULL);
    p->header = t;
    dg__tensor_header_init(t, ctx, dtype, ndim, shape, p->data);
    return t;
}

/* ---- parameters ---------------------------------------------------------- */

/* Grow the flat buffers, keeping contents, and re-point every view. */
static void params_grow(dg_ctx *ctx, size_t need) {
    size_t cap = ctx->param_cap ? ctx->param_cap : 4096;
    while (cap < need) cap *= 2;
    float *p = ctx->be->mem.alloc(cap * sizeof(float));
    float *g = ctx->be->mem.alloc(cap * sizeof(float));
    DG_ASSERT(p != NULL && g != NULL);
    ctx->be->mem.memset0(p, cap * sizeof(float));
    ctx->be->mem.memset0(g, cap * sizeof(float));
    if (ctx->param_buf) {
        ctx->be->mem.copy(p, ctx->param_buf, ctx->param_numel * sizeof(float));
        ctx->be->mem.copy(g, ctx->grad_buf, ctx->param_numel * sizeof(float));
        ctx->be->mem.free(ctx->param_buf);
        ctx->be->mem.free(ctx->grad_buf);
    }
    for (int i = 0; i < ctx->nparams; i++) {
        dg_tensor *t = ctx->params[i];
        size_t off = (size_t)((float *)t->data - ctx->param_buf);
        t->data = p + off;
        t->grad->data = g + off;
    }
    ctx->param_buf = p;
    ctx->grad_buf = g;
    ctx->param_cap = cap;
}

dg_tensor *dg_param_new(dg_ctx *ctx, const char *name, int ndim, const int64_t *shape) {
    if (!ctx || !check_shape("dg_param_new", ndim, shape)) return NULL;
    size_t n = (size_t)shape_numel(ndim, shape);
    /* keep every parameter 16-float aligned (64 bytes) */
    size_t off = (ctx->param_numel + 15) / 16 * 16;
    if (off + n > ctx->param_cap) params_grow(ctx, off + n);
    if (ctx->nparams == ctx->params_cap) {
        ctx->params_cap = ctx->params_cap ? ctx->params_cap * 2 : 16;
        ctx->params = realloc(ctx->params, (size_t)ctx->params_cap * sizeof *ctx->params);
        DG_ASSERT(ctx->params != NULL);
    }
    dg_tensor *t = malloc(sizeof *t);
    dg_tensor *g = malloc(sizeof *g);
    DG_ASSERT(t != NULL && g != NULL);
    dg__tensor_header_init(t, ctx, DG_F32, ndim, shape, ctx->param_buf + off);
    dg__tensor_header_init(g, ctx, DG_F32, ndim, shape, ctx->grad_buf + off);
    t->grad = g;
    t->requires_grad = true;
    t->is_param = true;
    t->param_index = ctx->nparams;
    t->name = name;
    ctx->params[ctx->nparams++] = t;
    ctx->param_numel = off + n;
    return t;
}

dg_tensor **dg_ctx_params(dg_ctx *ctx, int *count) {
    if (count) *count = ctx->nparams;
    return ctx->params;
}

float *dg_ctx_param_buffer(dg_ctx *ctx, size_t *numel) {
    if (numel) *numel = ctx->param_numel;
    return ctx->param_buf;
}

float *dg_ctx_grad_buffer(dg_ctx *ctx, size_t *numel) {
    if (numel) *numel = ctx->param_numel;
    return ctx->grad_buf;
}

size_t dg_param_offset(const dg_tensor *param) {
    DG_ASSERT(param->is_param);
    return (size_t)((const float *)param->data - param->ctx->param_buf);
}

void dg_ctx_zero_grad(dg_ctx *ctx) {
    if (ctx->grad_buf) ctx->be->mem.memset0(ctx->grad_buf, ctx->param_numel * sizeof(float));
    for (int i = 0; i < ctx->nparams; i++) ctx->params[i]->has_grad = false;
}

bool dg_param_has_grad(const dg_tensor *p) {
    DG_ASSERT(p && p->is_param);
    return p->has_grad;
}

void dg_param_set_has_grad(dg_tensor *p, bool has) {
    DG_ASSERT(p && p->is_param);
    p->has_grad = has;
}

/* ---- initializers ---------------------------------------------------------- */

static void init_from_host(dg_tensor *t, const float *vals) {
    DG_ASSERT(t->dtype == DG_F32 && dg_is_contiguous(t));
    t->ctx->be->mem.from_host(t->data, vals, (size_t)dg_numel(t) * sizeof(float));
}

void dg_init_uniform(dg_tensor *t, float lo, float hi) {
    int64_t n = dg_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    DG_ASSERT(v != NULL);
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * dg_rand_uniform(t->ctx);
    init_from_host(t, v);
    free(v);
}

void dg_init_normal(dg_tensor *t, float mean, float std) {
    int64_t n = dg_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    DG_ASSERT(v != NULL);
    for (int64_t i = 0; i < n; i += 2) {
        /* Box-Muller: two normals from two uniforms in (0, 1] */
        double u1 = 1.0 - (double)(dg_rand_u64(t->ctx) >> 11) * 0x1.0p-53;
        double u2 = (double)(dg_rand_u64(t->ctx) >> 11) * 0x1.0p-53;
        double r = sqrt(-2.0 * log(u1));
        v[i] = (float)(mean + std * r * cos(2 * 3.14159265358979323846 * u2));
        if (i + 1 < n) v[i + 1] = (float)(mean + std * r * sin(2 * 3.14159265358979323846 * u2));
    }
    init_from_host(t, v);
    free(v);
}

void dg_init_constant(dg_tensor *t, float value) {
    DG_ASSERT(t->dtype == DG_F32 && dg_is_contiguous(t));
    t->ctx->be->mem.fill(t->data, dg_numel(t), value);
}

/* ---- inspection ------------------------------------------------------------ */

int64_t dg_numel(const dg_tensor *t) { return shape_numel(t->ndim, t->shape); }

bool dg_is_contiguous(const dg_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

const char *dg_shape_str(const dg_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

void dg_tensor_to_host(const dg_tensor *t, void *dst) {
    size_t es = dg_dtype_size(t->dtype);
    int64_t n = dg_numel(t);
    if (dg_is_contiguous(t)) {
        t->ctx->be->mem.to_host(dst, t->data, (size_t)n * es);
        return;
    }
    /* strided: gather element by element through a contiguous copy */
    int64_t idx[DG_MAX_DIMS] = { 0 };
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0;
        for (int d = 0; d < t->ndim; d++) off += idx[d] * t->stride[d];
        t->ctx->be->mem.to_host((char *)dst + i * (int64_t)es, (const char *)t->data + off * (int64_t)es, es);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

dg_status dg_tensor_copy(dg_tensor *dst, const dg_tensor *src) {
    if (!dst || !src) return dg_set_error("dg_tensor_copy: NULL tensor");
    if (dst->ctx != src->ctx || dst->dtype != src->dtype || dg_numel(dst) != dg_numel(src) ||
        !dg_is_contiguous(dst) || !dg_is_contiguous(src))
        return dg_set_error("dg_tensor_copy: need two contiguous tensors of one context with the "
                            "same dtype and element count");
    dst->ctx->be->mem.copy(dst->data, src->data, (size_t)dg_numel(src) * dg_dtype_size(src->dtype));
    if (dst->dtype == DG_I32) {   /* dst gets src's range, if src's is current */
        bool known = src->range_epoch != 0 && src->range_epoch == src->ctx->i32_writes;
        dst->range_epoch = ++dst->ctx->i32_writes;
        if (known) {
            dst->range_min = src->range_min;
            dst->range_max = src->range_max;
        } else {
            dst->range_epoch = 0;
        }
    }
    return DG_OK;
}

void dg_tensor_copy_from_host(dg_tensor *t, const void *src) {
    DG_ASSERT(dg_is_contiguous(t));
    t->ctx->be->mem.from_host(t->data, src, (size_t)dg_numel(t) * dg_dtype_size(t->dtype));
    range_from_host(t, src);
}

float dg_item_at(const dg_tensor *t, int64_t i) {
    DG_ASSERT(i >= 0 && i < dg_numel(t));
    int64_t off = 0, rem = i;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (rem % t->shape[d]) * t->stride[d];
        rem /= t->shape[d];
    }
    size_t es = dg_dtype_size(t->dtype);
    unsigned char buf[8];
    t->ctx->be->mem.to_host(buf, (const char *)t->data + off * (int64_t)es, es);
    switch (t->dtype) {
    case DG_F32: { float v; memcpy(&v, buf, 4); return v; }
    case DG_I32: { int32_t v; memcpy(&v, buf, 4); return (float)v; }
    case DG_I64: { int64_t v; memcpy(&v, buf, 8); return (float)v; }
    case DG_U8: return (float)buf[0];
    case DG_BF16: { uint32_t v = (uint32_t)(buf[0] | buf[1] << 8) << 16; float f; memcpy(&f, &v, 4); return f; }
    default: DG_ASSERT(!"dg_item_at: dtype not supported"); return 0;
    }
}

float dg_item(const dg_tensor *t) {
    DG_ASSERT(dg_numel(t) == 1);
    return dg_item_at(t, 0);
}
