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

dg_tensor *dg__grad_slot(dg_tensor *t, bool *acc) {
    *acc = false;
    if (!t || !t->requires_grad) return NULL;
    uint64_t gen = t->ctx->bw_gen;
    if (t->is_param) t->has_grad = true;   /* backward reached it */
    if (t->grad && (t->is_param || t->grad_gen == gen)) {
        *acc = true;
        return t->grad;
    }
    if (!t->grad) t->grad = dg__tensor_alloc(t->ctx, DG_F32, t->ndim, t->shape);
    t->grad_gen = gen;
    return t->grad;
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
    n->index = ctx->tape_len;
    ctx->tape[ctx->tape_len++] = n;
    return n;
}

/* Backward walks the tape down from the loss's node. A tensor's gradient
 * belongs to the current backward pass when its grad_gen matches; nodes
 * whose output got no gradient in this pass are skipped. Each node runs at
 * most once per step: a second backward through it is an error, as in
 * PyTorch without retain_graph. */
dg_status dg_backward(dg_tensor *loss) {
    if (!loss) return dg_set_error("dg_backward: loss is NULL");
    char buf[96];
    if (dg_numel(loss) != 1)
        return dg_set_error("dg_backward: grad can be implicitly created only for scalar "
                            "outputs, got shape %s", dg_shape_str(loss, buf, sizeof buf));
    if (!loss->requires_grad)
        return dg_set_error("dg_backward: the tensor does not require grad and has no grad_fn");
    dg_ctx *ctx = loss->ctx;
    ctx->bw_gen++;
    if (loss->is_param) {   /* d loss / d loss = 1, added to the gradient */
        dg_tensor *one = dg_full(ctx, 0, NULL, 1.0f);
        ctx->be->math.binary(DG_BIN_COPY, loss->grad, one, one, 1.0f, true);
        loss->has_grad = true;
        if (ctx->grad_ready) ctx->grad_ready(loss, ctx->grad_ready_user);
        return DG_OK;
    }
    dg_node *root = loss->grad_fn;
    DG_ASSERT(root != NULL);
    if (root->consumed)
        return dg_set_error("dg_backward: trying to backward through the graph a second time "
                            "(its intermediate results are already consumed)");
    if (!loss->grad) loss->grad = dg__tensor_alloc(ctx, DG_F32, loss->ndim, loss->shape);
    ctx->be->mem.fill(loss->grad->data, 1, 1.0f);
    loss->grad_gen = ctx->bw_gen;
    bool saved_mode = ctx->grad_enabled;
    ctx->grad_enabled = false;   /* backward itself records nothing */
    dg_status st = DG_OK;
    for (int64_t i = root->index; i >= 0; i--) {
        dg_node *n = ctx->tape[i];
        if (n->out->grad && n->out->grad_gen == ctx->bw_gen) {
            if (n->consumed) {
                st = dg_set_error("dg_backward: trying to backward through the graph a second time "
                                  "(at %s)", n->name);
                break;
            }
            n->backward(n);
            n->consumed = true;
        }
        /* a parameter's gradient is final once the walk passes its first
         * use, whether or not that node was reached */
        if (!ctx->grad_ready) continue;
        for (int k = 0; k < n->nin; k++) {
            dg_tensor *t = n->in[k];
            if (t && t->is_param && t->tape_gen == ctx->tape_gen && t->tape_first_use == i &&
                t->ready_gen != ctx->bw_gen) {
                t->ready_gen = ctx->bw_gen;   /* once, even if used twice here */
                ctx->grad_ready(t, ctx->grad_ready_user);
            }
        }
    }
    ctx->grad_enabled = saved_mode;
    return st;
}

dg_tensor *dg_detach(dg_tensor *t) {
    if (!t) return NULL;
    dg_tensor *d = dg__view(t, t->ndim, t->shape, t->stride, t->data);
    return d;
}

const char *dg_grad_fn_name(const dg_tensor *t) {
    return t && t->grad_fn ? t->grad_fn->name : NULL;
}
