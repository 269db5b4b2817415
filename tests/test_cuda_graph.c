/* test_cuda_graph.c - whole-step CUDA graphs and the pinned batch loader.
 *
 *  - graphs: the MNIST MLP (784-50-10, batch 64) trained by replaying a
 *    captured step (after eager warm-up steps) gives the same loss at every
 *    step and the same parameters as eager training, bit for bit, for Adam,
 *    AdamW and SGD with momentum; eager steps between replays (an
 *    evaluation pass with a bigger batch that grows the arena, and eager
 *    training steps after the replays) leave both in step; the optimizer's
 *    step count advances with each replay; what breaks a capture is refused
 *    with a message (no eager step before the capture, a capture inside a
 *    capture, SGD momentum without an eager step);
 *  - loader: dg_loader_next on a CUDA context (pinned staging, uploads
 *    queued without waiting, two buffers in turn) gives the same batches as
 *    dg_loader_next_host, with many batches in flight before any is read.
 *
 * Usage: test_cuda_graph                     (exit 77 = skipped: no GPU)
 *        test_cuda_graph --expect-no-device  graphs are refused on the CPU
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/data.h"
#include "dgrad/graph.h"
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/tensor.h"
#include "test_util.h"

enum { IN = 784, HID = 50, OUT = 10, B = 64, WARMUP = 3, STEPS = 40 };

typedef enum { OPT_ADAM, OPT_ADAMW, OPT_SGD_MOMENTUM } opt_kind;
static const char *const k_opt_names[] = { "adam", "adamw", "sgd+momentum" };

typedef struct {
    dg_ctx *ctx;
    dg_module *model;
    dg_optim *opt;
} net;

static net net_new(dg_device dev, opt_kind k) {
    net n;
    n.ctx = dg_ctx_new(dev);
    DG_ASSERT(n.ctx != NULL);
    dg_manual_seed(n.ctx, 3);
    dg_module *l[3] = { dg_nn_linear(n.ctx, IN, HID, true), dg_nn_relu(n.ctx),
                        dg_nn_linear(n.ctx, HID, OUT, true) };
    n.model = dg_nn_sequential(n.ctx, 3, l);
    dg_tensor **p;
    int np = dg_module_parameters(n.model, &p);
    if (k == OPT_SGD_MOMENTUM) {
        dg_sgd_opts o = dg_sgd_defaults(0.05f);
        o.momentum = 0.9f;
        n.opt = dg_optim_sgd(p, np, o);
    } else {
        dg_adam_opts o = k == OPT_ADAMW ? dg_adamw_defaults() : dg_adam_defaults();
        o.lr = 1e-3f;
        n.opt = k == OPT_ADAMW ? dg_optim_adamw(p, np, o) : dg_optim_adam(p, np, o);
    }
    DG_ASSERT(n.model && n.opt);
    return n;
}

/* forward, backward and the optimizer on (x, y); returns the loss tensor */
static dg_tensor *step_on(net *n, dg_tensor *x, dg_tensor *y) {
    dg_tensor *loss = dg_cross_entropy(dg_module_forward(n->model, x), y);
    if (!loss) return NULL;
    dg_optim_zero_grad(n->opt);
    if (dg_backward(loss) != DG_OK) return NULL;
    dg_optim_step(n->opt);
    return loss;
}

static float eager_step(net *n, int s) {
    static float x[B * IN];
    int32_t y[B];
    int64_t xs[2] = { B, IN }, ys = B;
    dgt_sparse_batch(99u, s, B, IN, OUT, x, y);
    dg_tensor *tx = dg_tensor_from(n->ctx, DG_F32, 2, xs, x);
    dg_tensor *ty = dg_tensor_from(n->ctx, DG_I32, 1, &ys, y);
    dg_tensor *loss = step_on(n, tx, ty);
    DG_ASSERT(loss != NULL);
    float l = dg_item(loss);
    dg_ctx_reset_step(n->ctx);
    return l;
}

/* An evaluation pass with a batch bigger than training's: it grows the
 * context's arena between replays. Returns the mean loss. */
static float eval_pass(net *n) {
    enum { E = 512 };
    float *x = malloc((size_t)E * IN * sizeof *x);
    int32_t y[E];
    DG_ASSERT(x != NULL);
    for (int i = 0; i < E / B; i++)
        dgt_sparse_batch(99u, 1000 + i, B, IN, OUT, x + (size_t)i * B * IN, y + i * B);
    int64_t xs[2] = { E, IN }, ys = E;
    bool prev = dg_set_grad_enabled(n->ctx, false);
    dg_tensor *loss = dg_cross_entropy(dg_module_forward(n->model, dg_tensor_from(n->ctx, DG_F32, 2, xs, x)),
                                       dg_tensor_from(n->ctx, DG_I32, 1, &ys, y));
    DG_ASSERT(loss != NULL);
    float l = dg_item(loss);
    dg_set_grad_enabled(n->ctx, prev);
    dg_ctx_reset_step(n->ctx);
    free(x);
    return l;
}

static int64_t params_differ(net *a, net *b, double *max_abs) {
    int np;
    dg_tensor **ta = dg_ctx_params(a->ctx, &np), **tb = dg_ctx_params(b->ctx, NULL);
    int64_t diff = 0;
    *max_abs = 0;
    for (int i = 0; i < np; i++) {
        int64_t k = dg_numel(ta[i]);
        float *ha = malloc((size_t)k * sizeof *ha), *hb = malloc((size_t)k * sizeof *hb);
        DG_ASSERT(ha && hb);
        dg_tensor_to_host(ta[i], ha);
        dg_tensor_to_host(tb[i], hb);
        for (int64_t j = 0; j < k; j++) {
            if (memcmp(&ha[j], &hb[j], 4)) diff++;
            double d = fabs((double)ha[j] - hb[j]);
            if (d > *max_abs) *max_abs = d;
        }
        free(ha);
        free(hb);
    }
    return diff;
}

static void test_graph_training(opt_kind k) {
    const char *name = k_opt_names[k];
    net eager = net_new(DG_CUDA, k), gr = net_new(DG_CUDA, k);
    int64_t xs[2] = { B, IN }, ys = B;
    dg_tensor *X = dg_tensor_persistent(gr.ctx, DG_F32, 2, xs);
    dg_tensor *Y = dg_tensor_persistent(gr.ctx, DG_I32, 1, &ys);
    static float x[B * IN];
    int32_t y[B];
    int bad_loss = 0;
    double max_loss_diff = 0;

    /* warm-up: the same eager steps on both */
    for (int s = 0; s < WARMUP; s++) {
        float le = eager_step(&eager, s), lg = eager_step(&gr, s);
        CHECKF(le == lg, "%s: eager warm-up step %d differs: %.9g vs %.9g", name, s, le, lg);
    }
    CHECK(dg_graph_begin_capture(gr.ctx) == DG_OK);
    CHECK(dg_graph_begin_capture(gr.ctx) == DG_ERR);   /* one at a time */
    CHECK_CONTAINS(dg_last_error(), "already");
    dg_clear_error();
    int64_t steps0 = dg_optim_step_count(gr.opt);
    dg_tensor *loss = step_on(&gr, X, Y);
    CHECK_NOT_NULL(loss);
    dg_graph *g = NULL;
    CHECK(dg_graph_end_capture(gr.ctx, &g) == DG_OK);
    if (!g) {
        dgt_fail(__FILE__, __LINE__, "%s: capture failed", name);
        return;
    }
    dg_tensor *loss_out = dg_graph_output(g, loss);
    dg_ctx_reset_step(gr.ctx);
    CHECK_EQ_INT(dg_optim_step_count(gr.opt), steps0);   /* the capture took no step */

    for (int s = WARMUP; s < STEPS; s++) {
        dgt_sparse_batch(99u, s, B, IN, OUT, x, y);
        dg_tensor_copy_from_host(X, x);
        dg_tensor_copy_from_host(Y, y);
        CHECK(dg_graph_replay(g) == DG_OK);
        float lg = dg_item(loss_out);
        float le = eager_step(&eager, s);
        double d = fabs((double)lg - le);
        if (d > max_loss_diff) max_loss_diff = d;
        if (lg != le && bad_loss++ < 3)
            dgt_fail(__FILE__, __LINE__, "%s: step %d: replayed loss %.9g, eager %.9g", name, s, lg, le);
        if (s == STEPS / 2) {   /* eager work between replays, arena growth included */
            uint64_t m0 = dg_ctx_arena_mallocs(gr.ctx);
            float ea = eval_pass(&eager), eg = eval_pass(&gr);
            CHECKF(ea == eg, "%s: evaluation between replays: %.9g vs %.9g", name, eg, ea);
            CHECKF(dg_ctx_arena_mallocs(gr.ctx) > m0, "%s: the evaluation did not grow the arena", name);
        }
    }
    CHECK_EQ_INT(dg_graph_replays(g), STEPS - WARMUP);
    CHECK_EQ_INT(dg_optim_step_count(gr.opt), dg_optim_step_count(eager.opt));
    double max_abs;
    int64_t diff = params_differ(&gr, &eager, &max_abs);
    printf("graph %s: %d eager + %d replayed steps: %lld parameters differ from eager training "
           "(max |diff| %.3g), max |loss diff| %.3g\n", name, WARMUP, STEPS - WARMUP,
           (long long)diff, max_abs, max_loss_diff);
    CHECKF(diff == 0, "%s: replayed training is not bit for bit eager training", name);
    /* eager steps after the replays continue from the same state */
    for (int s = STEPS; s < STEPS + 3; s++) {
        float le = eager_step(&eager, s), lg = eager_step(&gr, s);
        CHECKF(le == lg, "%s: eager step %d after the replays: %.9g vs %.9g", name, s, lg, le);
    }
    dg_graph_free(g);
    dg_ctx_free(eager.ctx);
    dg_ctx_free(gr.ctx);
}

static void test_capture_errors(void) {
    net n = net_new(DG_CUDA, OPT_SGD_MOMENTUM);
    int64_t xs[2] = { B, IN }, ys = B;
    dg_tensor *X = dg_tensor_persistent(n.ctx, DG_F32, 2, xs);
    dg_tensor *Y = dg_tensor_persistent(n.ctx, DG_I32, 1, &ys);
    dg_clear_error();
    CHECK(dg_graph_begin_capture(n.ctx) == DG_ERR);   /* no eager step yet */
    CHECK_CONTAINS(dg_last_error(), "eager step");
    dg_clear_error();
    /* an eager step with no optimizer step: the arena is sized, but SGD
     * momentum has not taken its first step */
    dg_tensor *l = dg_cross_entropy(dg_module_forward(n.model, X), Y);
    CHECK(l && dg_backward(l) == DG_OK);
    dg_ctx_reset_step(n.ctx);
    CHECK(dg_graph_begin_capture(n.ctx) == DG_OK);
    step_on(&n, X, Y);
    dg_graph *g = (dg_graph *)&g;
    CHECK(dg_graph_end_capture(n.ctx, &g) == DG_ERR);
    CHECK(g == NULL);
    CHECK_CONTAINS(dg_last_error(), "SGD with momentum");
    dg_clear_error();
    dg_ctx_reset_step(n.ctx);
    /* the context still works eagerly */
    dg_tensor *l2 = step_on(&n, X, Y);
    CHECK(l2 && isfinite(dg_item(l2)));
    dg_ctx_reset_step(n.ctx);
    dg_ctx_free(n.ctx);
}

/* Many batches queued before any is read: the two pinned buffers must not
 * be refilled before their uploads are done. */
static void test_loader(void) {
    enum { NS = 1000, LB = 32, INFLIGHT = 7 };
    dg_dataset ds = { 0 };
    ds.n = NS;
    ds.sample_size = 784;
    ds.ndim_sample = 2;
    ds.sample_shape[0] = ds.sample_shape[1] = 28;
    ds.num_classes = 10;
    ds.images = malloc((size_t)NS * 784);
    ds.labels = malloc(NS * sizeof *ds.labels);
    DG_ASSERT(ds.images && ds.labels);
    for (int i = 0; i < NS * 784; i++) ds.images[i] = (uint8_t)((i * 131u) >> 3);
    for (int i = 0; i < NS; i++) ds.labels[i] = i % 10;
    dg_sampler s1, s2;
    dg_loader gpu, host;
    CHECK(dg_sampler_init(&s1, NS, 0, 1, true, 5, false) == DG_OK);
    CHECK(dg_sampler_init(&s2, NS, 0, 1, true, 5, false) == DG_OK);
    CHECK(dg_loader_init(&gpu, &ds, &s1, LB, false) == DG_OK);
    CHECK(dg_loader_init(&host, &ds, &s2, LB, false) == DG_OK);
    dg_ctx *ctx = dg_ctx_new(DG_CUDA);
    DG_ASSERT(ctx != NULL);
    float *hx = malloc((size_t)LB * 784 * sizeof *hx), *gx = malloc((size_t)LB * 784 * sizeof *gx);
    DG_ASSERT(hx && gx);
    int32_t hy[LB], gy[LB];
    int bad = 0, batches = 0;
    for (int epoch = 0; epoch < 2; epoch++) {
        dg_loader_start_epoch(&gpu, epoch);
        dg_loader_start_epoch(&host, epoch);
        for (;;) {
            dg_tensor *x[INFLIGHT], *y[INFLIGHT];
            int64_t nb[INFLIGHT];
            int k = 0;
            for (; k < INFLIGHT; k++) {
                nb[k] = dg_loader_next(&gpu, ctx, true, &x[k], &y[k]);
                CHECK(nb[k] >= 0);
                if (nb[k] <= 0) break;
            }
            for (int j = 0; j < k; j++) {   /* read back only now */
                int64_t b = dg_loader_next_host(&host, hx, hy);
                CHECK_EQ_INT(b, nb[j]);
                dg_tensor_to_host(x[j], gx);
                dg_tensor_to_host(y[j], gy);
                if ((memcmp(gx, hx, (size_t)b * 784 * sizeof *gx) || memcmp(gy, hy, (size_t)b * sizeof *gy)) &&
                    bad++ < 3)
                    dgt_fail(__FILE__, __LINE__, "loader: batch %d on the GPU differs from the host's", batches);
                batches++;
            }
            dg_ctx_reset_step(ctx);
            if (k < INFLIGHT) break;
        }
    }
    printf("loader: %d batches through pinned double buffers, %d differ\n", batches, bad);
    CHECK(gpu.pin[0] != NULL);   /* the pinned path was taken */
    dg_loader_free(&gpu);
    dg_loader_free(&host);
    dg_sampler_free(&s1);
    dg_sampler_free(&s2);
    dg_ctx_free(ctx);
    free(hx);
    free(gx);
    dg_dataset_free(&ds);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--expect-no-device")) {
        dg_ctx *cpu = dg_ctx_new(DG_CPU);
        CHECK(!dg_graph_supported(cpu));
        dg_clear_error();
        CHECK(dg_graph_begin_capture(cpu) == DG_ERR);
        CHECK_CONTAINS(dg_last_error(), "no graphs");
        dg_clear_error();
        dg_ctx_free(cpu);
        return dgt_report("test_cuda_graph --expect-no-device");
    }
    if (argc > 1) {
        fprintf(stderr, "usage: test_cuda_graph [--expect-no-device]\n");
        return 2;
    }
    dg_ctx *probe = dg_ctx_new(DG_CUDA);
    if (!probe) {
        printf("test_cuda_graph: skipped: %s\n", dg_last_error());
        return 77;
    }
    CHECK(dg_graph_supported(probe));
    dg_ctx_free(probe);
    for (int k = OPT_ADAM; k <= OPT_SGD_MOMENTUM; k++) test_graph_training((opt_kind)k);
    test_capture_errors();
    test_loader();
    return dgt_report("test_cuda_graph");
}
