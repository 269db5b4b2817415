/* autograd.c - the tape and the backward pass.
 *
 * Ops append a node to the context's tape as they run (define-by-run).
 * Creation order is a topological order, so backward walks the tape in
 * reverse and calls each node whose output received a gradient. */
#include "impl.h"

#include <stdlib.h>
#include <string.h>

bool dg__needs_grad(dg_ctx *ctx, int nin, dg_tensor *const *in) {
    if (!ctx->grad_enabled) return false;
    for (int i = 0; i < nin; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

dg_node *dg__record(dg_ctx *ctx, const char *name, dg_backward_fn fn, dg_tensor *out,
                    int nin, dg_tensor *const *in) {
    DG_ASSERT(nin <= 3);
    if (ctx->tape_len == ctx->tape_cap) {
        ctx->tape_cap = ctx->tape_cap ? ctx->tape_cap * 2 : 256;
        ctx->tape = realloc(ctx->tape, (size_t)ctx->tape_cap * sizeof *ctx->tape);
        DG_ASSERT(ctx->tape != NULL);
    }
    dg_node *n = dg_arena_alloc(&ctx->meta, sizeof *n);
    memset(n, 0, sizeof *n);
    n->backward = fn;
    n->name = name;
    n->out = out;
    n->nin = nin;
    for (int i = 0; i < nin; i++) {
        dg_tensor *t = in[i];
        n->in[i] = t;
        /* remember the first use of each parameter: its gradient is final
         * once backward has processed that node */
        if (t && t->is_param && t->tape_gen != ctx->tape_gen) {
            t->tape_gen = ctx->tape_gen;
            t->tape_first_use = ctx->tape_len;
        }
    }
    out->grad_fn = n;
    out->requires_grad = true;
    ctx->tape[ctx->tape_len++] = n;
    return n;
}

dg_status dg_backward(dg_tensor *loss) {
    if (!loss) return dg_set_error("dg_backward: loss is NULL");
    char buf[96];
    if (dg_numel(loss) != 1)
        return dg_set_error("dg_backward: grad can be implicitly created only for scalar "
                            "outputs, got shape %s", dg_shape_str(loss, buf, sizeof buf));
    if (!loss->requires_grad)
        return dg_set_error("dg_backward: the tensor does not require grad and has no grad_fn");
    dg_ctx *ctx = loss->ctx;
    if (loss->is_param) {
        ctx->be->fill(loss->grad->data, 1, 1.0f);   /* d loss / d loss, accumulated */
        return DG_OK;
    }
    if (!loss->grad) {
        int64_t one = 1;
        loss->grad = dg__tensor_alloc(ctx, DG_F32, loss->ndim, loss->ndim ? loss->shape : &one);
        ctx->be->fill(loss->grad->data, 1, 1.0f);
    }
    bool saved_mode = ctx->grad_enabled;
    ctx->grad_enabled = false;   /* backward itself records nothing */
    for (int64_t i = ctx->tape_len - 1; i >= 0; i--) {
        dg_node *n = ctx->tape[i];
        if (!n->out->grad) continue;
        n->backward(n);
        if (!ctx->grad_ready) continue;
        for (int k = 0; k < n->nin; k++) {
            dg_tensor *t = n->in[k];
            if (t && t->is_param && t->tape_gen == ctx->tape_gen && t->tape_first_use == i) {
                t->tape_first_use = -1;   /* fire once even if used twice here */
                ctx->grad_ready(t, ctx->grad_ready_user);
            }
        }
    }
    ctx->grad_enabled = saved_mode;
    ctx->tape_len = 0;
    ctx->tape_gen++;
    return DG_OK;
}

dg_tensor *dg_detach(dg_tensor *t) {
    if (!t) return NULL;
    dg_tensor *d = dg__view(t, t->ndim, t->shape, t->stride, t->data);
    return d;
}
