/* graph.c - whole-step capture and replay (dgrad/graph.h) over the backend's
 * optional graph slots. The captured step allocates from the graph's own
 * arena, swapped in for the context's step arena during the capture. */
#include "dgrad/graph.h"
#include "impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    dg_replay_hook fn;
    void *user;
} replay_hook;

typedef struct graph_output {
    struct graph_output *next;
    dg_tensor t;
    dg_tensor *sum;            /* dg_graph_output_sum: += t after each replay */
} graph_output;

struct dg_graph {
    dg_ctx *ctx;
    void *exec;                /* the backend's executable graph */
    dg_arena arena;            /* device memory of the captured step */
    dg_arena saved;            /* the context's step arena, during the capture */
    replay_hook *hooks;
    int nhooks, hooks_cap;
    graph_output *outputs;
    int64_t replays;
    bool failed;
    char msg[256];
};

bool dg_graph_supported(const dg_ctx *ctx) {
    return ctx && ctx->be->stream.capture_begin && ctx->be->stream.capture_end && ctx->be->stream.graph_launch &&
           ctx->be->stream.graph_free;
}

void dg__graph_fail(dg_ctx *ctx, const char *fmt, ...) {
    dg_graph *g = ctx->capture;
    if (!g || g->failed) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->msg, sizeof g->msg, fmt, ap);
    va_end(ap);
    g->failed = true;
}

void dg__graph_on_replay(dg_ctx *ctx, dg_replay_hook fn, void *user) {
    dg_graph *g = ctx->capture;
    DG_ASSERT(g != NULL);
    for (int i = 0; i < g->nhooks; i++) {
        if (g->hooks[i].fn == fn && g->hooks[i].user == user) {
            dg__graph_fail(ctx, "dg_graph_end_capture: the captured step calls dg_optim_step "
                                "twice on one optimizer; capture one step per graph");
            return;
        }
    }
    if (g->nhooks == g->hooks_cap) {
        g->hooks_cap = g->hooks_cap ? 2 * g->hooks_cap : 4;
        g->hooks = realloc(g->hooks, (size_t)g->hooks_cap * sizeof *g->hooks);
        DG_ASSERT(g->hooks != NULL);
    }
    g->hooks[g->nhooks++] = (replay_hook){ fn, user };
}

static void graph_release(dg_graph *g) {
    if (g->exec) g->ctx->be->stream.graph_free(g->exec);   /* waits for the stream */
    dg_arena_release(&g->arena);
    graph_output *o = g->outputs;
    while (o) {
        graph_output *next = o->next;
        free(o);
        o = next;
    }
    free(g->hooks);
    free(g);
}

dg_status dg_graph_begin_capture(dg_ctx *ctx) {
    const char *fn = "dg_graph_begin_capture";
    if (!ctx) return dg_set_error("%s: NULL context", fn);
    if (!dg_graph_supported(ctx))
        return dg_set_error("%s: the %s backend has no graphs (CUDA only)", fn, ctx->be->name);
    if (ctx->capture) return dg_set_error("%s: a capture is already under way", fn);
    if (ctx->data.capacity == 0)
        return dg_set_error("%s: run at least one eager step of the same shapes first: it sizes "
                            "the arena, which cannot grow inside a capture", fn);
    dg_ctx_reset_step(ctx);
    dg_graph *g = calloc(1, sizeof *g);
    if (!g) return dg_set_error("%s: out of memory", fn);
    g->ctx = ctx;
    /* One chunk the size of the warmed-up arena, plus slack. */
    g->arena.be = ctx->be;
    (void)dg_arena_alloc(&g->arena, ctx->data.capacity + ((size_t)1 << 20));
    dg_arena_reset(&g->arena);
    g->saved = ctx->data;
    ctx->data = g->arena;
    if (!ctx->be->stream.capture_begin()) {
        g->arena = ctx->data;
        ctx->data = g->saved;
        graph_release(g);
        return DG_ERR;
    }
    ctx->capture = g;
    return DG_OK;
}

dg_status dg_graph_end_capture(dg_ctx *ctx, dg_graph **out) {
    const char *fn = "dg_graph_end_capture";
    DG_ASSERT(out);
    *out = NULL;
    if (!ctx || !ctx->capture) return dg_set_error("%s: no capture under way", fn);
    dg_graph *g = ctx->capture;
    g->exec = ctx->be->stream.capture_end();
    ctx->capture = NULL;
    g->arena = ctx->data;
    ctx->data = g->saved;
    memset(&g->saved, 0, sizeof g->saved);
    if (g->failed || !g->exec) {
        if (g->failed) dg_set_error("%s", g->msg);
        else if (!dg_has_error()) dg_set_error("%s: the capture failed", fn);
        graph_release(g);
        return DG_ERR;
    }
    DG_ASSERT(g->arena.chunks && !g->arena.chunks->next);   /* it never grew */
    *out = g;
    return DG_OK;
}

dg_tensor *dg_graph_output(dg_graph *g, const dg_tensor *t) {
    DG_ASSERT(g && t && t->ctx == g->ctx);
    graph_output *o = calloc(1, sizeof *o);
    DG_ASSERT(o != NULL);
    o->t = *t;
    o->t.grad = NULL;
    o->t.grad_fn = NULL;
    o->t.requires_grad = false;
    o->t.is_param = false;
    o->t.param_index = -1;
    o->next = g->outputs;
    g->outputs = o;
    return &o->t;
}

dg_tensor *dg_graph_output_sum(dg_graph *g, const dg_tensor *t) {
    DG_ASSERT(g && t && t->dtype == DG_F32 && dg_is_contiguous(t));
    dg_tensor *out = dg_graph_output(g, t);
    graph_output *o = g->outputs;
    DG_ASSERT(&o->t == out);
    o->sum = dg_tensor_persistent(g->ctx, DG_F32, t->ndim, t->shape);   /* zero-filled */
    DG_ASSERT(o->sum != NULL);
    return o->sum;
}

dg_status dg_graph_replay(dg_graph *g) {
    DG_ASSERT(g && g->exec);
    const dg_backend *be = g->ctx->be;
    if (g->ctx->capture) return dg_set_error("dg_graph_replay: a capture is under way");
    for (int i = 0; i < g->nhooks; i++) g->hooks[i].fn(g->hooks[i].user);
    be->stream.graph_launch(g->exec);
    g->ctx->i32_writes++;   /* the replay may write int32 tensors: ranges are stale */
    for (graph_output *o = g->outputs; o; o = o->next)
        if (o->sum) be->math.binary(DG_BIN_ADD, o->sum, o->sum, &o->t, 1.0f, false);
    g->replays++;
    return DG_OK;
}

int64_t dg_graph_replays(const dg_graph *g) { return g->replays; }

void dg_graph_free(dg_graph *g) {
    if (g) graph_release(g);
}
