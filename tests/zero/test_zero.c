/* ZeRO stage 1 (comm/src/zero.c). Run under mpirun with any N, or as a
 * plain process (world of one).
 *
 *   test_zero                 - 300 steps of ZeRO-1 vs DDP + dg_optim (SGD
 *                               with and without momentum, Adam amsgrad,
 *                               AdamW) within 1e-6; every rank ends with
 *                               the same parameters; optimizer state per
 *                               rank is ceil(N/world) * slots floats;
 *                               models of 1 float (N < world) and of 12
 *                               (N divides by the world); bad input.
 *   test_zero save DIR        - AdamW ZeRO run: checkpoint after K steps
 *                               (DIR/ckpt-K.dgck), then on to K+M; rank 0
 *                               writes the final parameters to
 *                               DIR/final-w<N>.bin.
 *   test_zero resume DIR      - resume DIR's checkpoint with ZeRO and run
 *                               M steps. At the saved world size: bitwise
 *                               equal to DIR/final-w<N>.bin. At any world
 *                               size: within 1e-6 of DDP + dg_optim resumed
 *                               from the same checkpoint (unsharded). */
#include "dgrad/ddp.h"
#include "dgrad/dist_checkpoint.h"
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/zero.h"
#include "../ddp/rank_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { IN = 12, HID = 16, OUT = 5, B = 4, STEPS = 300, CK_K = 150, CK_M = 150 };


/* Rows row0.. of the global batch of step `step`, the same on every rank. */
static void make_batch(int step, int rows, int row0, float *x, int32_t *y) {
    for (int r = 0; r < rows; r++) {
        unsigned k = (unsigned)(step * 1000 + row0 + r) * 2654435761u;
        for (int j = 0; j < IN; j++) {
            k = k * 1103515245u + 12345u;
            x[r * IN + j] = (float)((k >> 8) & 0xffff) / 65536.0f - 0.5f;
        }
        y[r] = (int32_t)((k >> 20) % OUT);
    }
}

typedef struct {
    dg_ctx *ctx;
    dg_module *model;
} net;

/* 12-16-16-5 MLP: N = 565 floats (padding included), prime to 2 and 3. */
static net net_new(bool other) {
    net n;
    n.ctx = dg_ctx_new(DG_CPU);
    dg_manual_seed(n.ctx, 1234);
    dg_module *l[5] = { dg_nn_linear(n.ctx, IN, HID, true), dg_nn_relu(n.ctx),
                        dg_nn_linear(n.ctx, HID, HID, true), dg_nn_relu(n.ctx),
                        dg_nn_linear(n.ctx, HID, other ? OUT + 1 : OUT, true) };
    n.model = dg_nn_sequential(n.ctx, 5, l);
    return n;
}

static dg_tensor *loss_of(net *n, int step, int rows, int row0) {
    float x[64 * IN];
    int32_t y[64];
    make_batch(step, rows, row0, x, y);
    int64_t xs[2] = { rows, IN }, ys[1] = { rows };
    dg_tensor *tx = dg_tensor_from(n->ctx, DG_F32, 2, xs, x);
    dg_tensor *ty = dg_tensor_from(n->ctx, DG_I32, 1, ys, y);
    return dg_cross_entropy(dg_module_forward(n->model, tx), ty);
}

static dg_optim *optim_of(dg_ctx *ctx, const dg_zero_opts *o) {
    int np;
    dg_tensor **p = dg_ctx_params(ctx, &np);
    switch (o->kind) {
    case DG_ZERO_SGD: return dg_optim_sgd(p, np, o->sgd);
    case DG_ZERO_ADAM: return dg_optim_adam(p, np, o->adam);
    case DG_ZERO_ADAMW: return dg_optim_adamw(p, np, o->adam);
    }
    return NULL;
}

/* max |a - b| / max(1, |b|) over the flat parameter buffers */
static double max_diff(dg_ctx *a, dg_ctx *b) {
    size_t na, nb;
    const float *pa = dg_ctx_param_buffer(a, &na), *pb = dg_ctx_param_buffer(b, &nb);
    DG_ASSERT(na == nb);
    double worst = 0;
    for (size_t i = 0; i < na; i++) {
        double d = fabs((double)pa[i] - (double)pb[i]) / fmax(1.0, fabs((double)pb[i]));
        if (d > worst) worst = d;
    }
    return worst;
}

/* Whether every rank holds rank 0's parameters bit for bit. */
static bool same_on_all_ranks(dg_comm *comm, dg_ctx *ctx) {
    size_t n;
    const float *p = dg_ctx_param_buffer(ctx, &n);
    float *r0 = malloc(n * sizeof *r0);
    DG_ASSERT(r0 != NULL);
    memcpy(r0, p, n * sizeof *r0);
    DG_ASSERT(dg_comm_broadcast(comm, r0, n, DG_COMM_F32, 0) == DG_OK);
    int same = !memcmp(r0, p, n * sizeof *r0);
    free(r0);
    DG_ASSERT(dg_comm_allreduce(comm, &same, 1, DG_COMM_I32, DG_COMM_MIN) == DG_OK);
    return same;
}

/* One training step of each: DDP + dg_optim and ZeRO, same data. */
static void train_both(dg_comm *comm, net *ref, dg_ddp *ddp, dg_optim *opt, net *zn, dg_zero *z, int step) {
    int rank = dg_comm_rank(comm);
    if (ref) {
        dg_optim_zero_grad(opt);
        CHECK(dg_ddp_backward(ddp, loss_of(ref, step, B, rank * B)) == DG_OK, "%s", dg_last_error());
        dg_optim_step(opt);
        dg_ctx_reset_step(ref->ctx);
    }
    if (zn) {
        dg_zero_zero_grad(z);
        CHECK(dg_backward(loss_of(zn, step, B, rank * B)) == DG_OK, "%s", dg_last_error());
        CHECK(dg_zero_step(z) == DG_OK, "dg_zero_step: %s", dg_last_error());
        dg_ctx_reset_step(zn->ctx);
    }
}

static void equivalence(dg_comm *comm, const char *label, dg_zero_opts o) {
    int W = dg_comm_size(comm), rank = dg_comm_rank(comm);
    net ref = net_new(false), zn = net_new(false);
    /* ranks start from different values: both must broadcast rank 0's */
    if (rank > 0) {
        dg_init_uniform(dg_ctx_params(ref.ctx, NULL)[0], -1, 1);
        dg_init_uniform(dg_ctx_params(zn.ctx, NULL)[0], -1, 1);
    }
    dg_optim *opt = optim_of(ref.ctx, &o);
    dg_ddp *ddp = NULL;
    dg_zero *z = NULL;
    CHECK(opt && dg_ddp_new(&ddp, ref.ctx, comm, dg_ddp_defaults()) == DG_OK, "%s", dg_last_error());
    CHECK(dg_zero_new(&z, zn.ctx, comm, o) == DG_OK, "dg_zero_new: %s", dg_last_error());
    if (g_fail) return;
    for (int s = 0; s < STEPS; s++) train_both(comm, &ref, ddp, opt, &zn, z, s);
    double d = max_diff(zn.ctx, ref.ctx);
    CHECK(d <= 1e-6, "%s: after %d steps ZeRO differs from DDP by %g", label, STEPS, d);
    CHECK(same_on_all_ranks(comm, zn.ctx), "%s: ranks hold different parameters", label);
    CHECK(dg_zero_step_count(z) == STEPS, "%s: %lld steps", label, (long long)dg_zero_step_count(z));

    /* memory: ceil(N / world) * slots floats of state on this rank */
    dg_zero_stats st;
    dg_zero_get_stats(z, &st);
    size_t numel;
    dg_ctx_param_buffer(zn.ctx, &numel);
    int slots = dg_optim_num_slots(opt);
    size_t want = (numel + (size_t)W - 1) / (size_t)W * (size_t)slots * sizeof(float);
    size_t unsharded = 0;   /* what dg_optim allocated, per parameter */
    int np;
    dg_ctx_params(ref.ctx, &np);
    for (int i = 0; i < np; i++)
        for (int k = 0; k < slots; k++) unsharded += (size_t)dg_numel(dg_optim_state(opt, i, k)) * sizeof(float);
    CHECK(st.state_bytes == want && st.numel == (int64_t)numel && st.num_slots == slots,
          "%s: state %zu bytes for N=%zu slots=%d, want %zu", label, st.state_bytes, numel, slots, want);
    CHECK(unsharded <= st.unsharded_state_bytes, "%s: dg_optim holds %zu bytes, more than %zu", label, unsharded,
          st.unsharded_state_bytes);
    if (rank == 0)
        printf("ok: %-12s %d steps, max diff vs DDP %.3g; N=%zu, state per rank %zu bytes (%d x %lld floats), "
               "unsharded %zu bytes (dg_optim allocated %zu)\n",
               label, STEPS, d, numel, st.state_bytes, slots, (long long)st.shard_len, st.unsharded_state_bytes,
               unsharded);
    dg_zero_free(z);
    dg_ddp_free(ddp);
    dg_ctx_free(ref.ctx);
    dg_ctx_free(zn.ctx);
}

/* One parameter of n floats, gradient (rank + 1) * w on each rank. n = 1:
 * at 2 ranks and more some shards are all padding; n = 12 divides by 1..4
 * ranks: the path without the staging buffer. */
static void small(dg_comm *comm, int64_t n) {
    int W = dg_comm_size(comm), rank = dg_comm_rank(comm);
    dg_zero_opts o = dg_zero_defaults(DG_ZERO_ADAM, 0);
    o.adam.lr = 0.1f;
    dg_ctx *a = dg_ctx_new(DG_CPU), *b = dg_ctx_new(DG_CPU);
    dg_tensor *pa = dg_param_new(a, "w", 1, &n), *pb = dg_param_new(b, "w", 1, &n);
    float w[16], ga[16], gb[16];
    for (int64_t i = 0; i < n; i++) w[i] = 2.0f + 0.25f * (float)i;
    dg_tensor_copy_from_host(pa, w);
    dg_tensor_copy_from_host(pb, w);
    dg_optim *opt = optim_of(b, &o);
    dg_zero *z = NULL;
    CHECK(dg_zero_new(&z, a, comm, o) == DG_OK, "small: %s", dg_last_error());
    if (!z) return;
    for (int s = 0; s < 20; s++) {
        for (int64_t i = 0; i < n; i++) {
            ga[i] = (float)(rank + 1) * dg_item_at(pa, i);
            gb[i] = 0;
            for (int r = 0; r < W; r++) gb[i] += (float)(r + 1) * dg_item_at(pb, i);
            gb[i] /= (float)W;
        }
        dg_tensor_copy_from_host(pa->grad, ga);
        dg_tensor_copy_from_host(pb->grad, gb);
        dg_param_set_has_grad(pb, true);   /* written by hand, as PyTorch's p.grad = ... */
        CHECK(dg_zero_step(z) == DG_OK, "small: %s", dg_last_error());
        dg_optim_step(opt);
    }
    dg_zero_stats st;
    dg_zero_get_stats(z, &st);
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)dg_item_at(pa, i) - (double)dg_item_at(pb, i)));
    int64_t S = (n + W - 1) / W, valid = n - rank * S;
    valid = valid < 0 ? 0 : valid > S ? S : valid;
    CHECK(d <= 1e-6 && st.numel == n && st.shard_len == S && st.shard_valid == valid,
          "small: N=%lld S=%lld valid=%lld (want %lld), max diff %g", (long long)st.numel,
          (long long)st.shard_len, (long long)st.shard_valid, (long long)valid, d);
    CHECK(same_on_all_ranks(comm, a), "small: ranks hold different parameters");
    if (rank == 0) printf("ok: model of %lld floats, %d ranks (shard %lld): max diff vs dg_optim %.3g\n",
                          (long long)n, W, (long long)S, d);
    dg_zero_free(z);
    dg_ctx_free(a);
    dg_ctx_free(b);
}

#define EXPECT_ERR(call, needle, what)                                                              \
    do {                                                                                            \
        dg_clear_error();                                                                           \
        dg_status st_ = (call);                                                                     \
        CHECK(st_ == DG_ERR && strstr(dg_last_error(), needle), "%s: got %d '%s', want an error "   \
              "with '%s'", what, st_, dg_last_error(), needle);                                      \
        if (g_rank == 0 && st_ == DG_ERR) printf("ok: %s: %s\n", what, dg_last_error());           \
        CHECK(!strchr(dg_last_error(), '\n'), "%s: message has a newline", what);                   \
        dg_clear_error();                                                                           \
    } while (0)

static void bad_input(dg_comm *comm) {
    int W = dg_comm_size(comm), rank = dg_comm_rank(comm);
    net n = net_new(false);
    dg_zero *z = NULL;
    dg_zero_opts o = dg_zero_defaults(DG_ZERO_ADAM, 0);
    o.kind = (dg_zero_kind)7;
    EXPECT_ERR(dg_zero_new(&z, n.ctx, comm, o), "unknown optimizer kind 7", "unknown kind");
    CHECK(z == NULL, "unknown kind: got a dg_zero");
    dg_zero_kind k;
    EXPECT_ERR(dg_zero_kind_from_name("lamb", &k), "unknown optimizer kind 'lamb'", "unknown kind name");
    CHECK(dg_zero_kind_from_name("adamw", &k) == DG_OK && k == DG_ZERO_ADAMW, "kind from name");

    o = dg_zero_defaults(DG_ZERO_SGD, 0.1f);
    if (rank == W - 1) o.sgd.lr = -1;   /* one rank refuses: every rank fails */
    EXPECT_ERR(dg_zero_new(&z, n.ctx, comm, o), rank == W - 1 ? "invalid learning rate -1" : "another rank refused",
               "bad lr on the last rank");
    if (W > 1) {
        o = dg_zero_defaults(DG_ZERO_SGD, rank == 0 ? 0.1f : 0.2f);
        EXPECT_ERR(dg_zero_new(&z, n.ctx, comm, o), "options differ between ranks", "options differ");
        net other = net_new(rank == 1);
        o = dg_zero_defaults(DG_ZERO_SGD, 0.1f);
        EXPECT_ERR(dg_zero_new(&z, other.ctx, comm, o), "parameters differ between ranks", "models differ");
        dg_ctx_free(other.ctx);
    }

    o = dg_zero_defaults(DG_ZERO_ADAM, 0);
    CHECK(dg_zero_new(&z, n.ctx, comm, o) == DG_OK, "%s", dg_last_error());
    if (!z) return;
    dg_zero_stats st;
    dg_zero_get_stats(z, &st);
    size_t len = (size_t)st.num_slots * (size_t)st.shard_len;
    float *buf = calloc(len + 1, sizeof *buf);
    dg_zero_shard_info info;
    EXPECT_ERR(dg_zero_shard_get(z, &info, buf, len - 1), "the shard needs", "shard_get, small buffer");
    CHECK(dg_zero_shard_get(z, &info, buf, len) == DG_OK, "%s", dg_last_error());
    CHECK(dg_zero_shard_set(z, &info, buf, len) == DG_OK, "shard round trip: %s", dg_last_error());
    dg_zero_shard_info bad = info;
    bad.world = W + 1;
    EXPECT_ERR(dg_zero_shard_set(z, &bad, buf, len), "saved by a world of", "shard of another world size");
    EXPECT_ERR(dg_zero_shard_set(z, &info, buf, len + 1), "does not fit", "shard of another length");
    bad = info;
    bad.numel += 7;
    EXPECT_ERR(dg_zero_shard_set(z, &bad, buf, len), "does not fit", "shard of another model");
    bad = info;
    bad.kind = DG_ZERO_SGD;
    bad.num_slots = 1;
    EXPECT_ERR(dg_zero_shard_set(z, &bad, buf, len), "optimizer 'sgd'", "shard of another optimizer");
    bad = info;
    bad.rank = (rank + 1) % (W + 1);
    EXPECT_ERR(dg_zero_shard_set(z, &bad, buf, len), "this is rank", "shard of another rank");
    free(buf);

    /* an unsharded optimizer that does not fit: refused on every rank */
    dg_optim *sgd = optim_of(n.ctx, &(dg_zero_opts){ .kind = DG_ZERO_SGD, .sgd = dg_sgd_defaults(0.1f) });
    EXPECT_ERR(dg_zero_scatter_state(z, sgd), "0 state slots per parameter, the dg_zero 2",
               "scatter from an optimizer with other slots");
    EXPECT_ERR(dg_zero_gather_state(z, sgd), "0 state slots per parameter, the dg_zero 2",
               "gather into an optimizer with other slots");

    /* a parameter registered after dg_zero_new */
    int64_t extra = 3;
    dg_param_new(n.ctx, "late", 1, &extra);
    EXPECT_ERR(dg_zero_step(z), "registered after dg_zero_new", "late parameter");
    dg_zero_free(z);
    dg_ctx_free(n.ctx);
}

/* ---- checkpoints ----------------------------------------------------------- */

static dg_zero_opts ckpt_opts(void) {
    dg_zero_opts o = dg_zero_defaults(DG_ZERO_ADAMW, 0);
    o.adam.lr = 5e-3f;
    return o;
}

static int ckpt_save(dg_comm *comm, const char *dir) {
    int W = dg_comm_size(comm);
    net zn = net_new(false);
    dg_zero *z = NULL;
    CHECK(dg_zero_new(&z, zn.ctx, comm, ckpt_opts()) == DG_OK, "%s", dg_last_error());
    if (!z) return 1;
    for (int s = 0; s < CK_K; s++) train_both(comm, NULL, NULL, NULL, &zn, z, s);
    dg_train_state st = { .step = CK_K, .batch_size = B };
    CHECK(dg_zero_checkpoint_save(dir, z, &st, 0) == DG_OK, "save: %s", dg_last_error());
    for (int s = CK_K; s < CK_K + CK_M; s++) train_both(comm, NULL, NULL, NULL, &zn, z, s);
    if (dg_comm_rank(comm) == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/final-w%d.bin", dir, W);
        size_t n;
        const float *p = dg_ctx_param_buffer(zn.ctx, &n);
        FILE *f = fopen(path, "wb");
        CHECK(f && fwrite(p, sizeof *p, n, f) == n && fclose(f) == 0, "cannot write %s", path);
        printf("ok: saved %s/ckpt-%d.dgck at %d ranks and %s after %d steps\n", dir, CK_K, W, path, CK_K + CK_M);
    }
    dg_zero_free(z);
    dg_ctx_free(zn.ctx);
    return 0;
}

static int ckpt_resume(dg_comm *comm, const char *dir) {
    int W = dg_comm_size(comm), rank = dg_comm_rank(comm);
    dg_zero_opts o = ckpt_opts();
    net zn = net_new(false), ref = net_new(false);
    dg_zero *z = NULL;
    dg_ddp *ddp = NULL;
    dg_optim *opt = optim_of(ref.ctx, &o);
    CHECK(dg_zero_new(&z, zn.ctx, comm, o) == DG_OK, "%s", dg_last_error());
    CHECK(opt && dg_ddp_new(&ddp, ref.ctx, comm, dg_ddp_defaults()) == DG_OK, "%s", dg_last_error());
    if (g_fail) return 1;

    /* a checkpoint of another optimizer kind is refused, and changes nothing */
    dg_zero *sgd = NULL;
    net other = net_new(false);
    dg_zero_opts so = dg_zero_defaults(DG_ZERO_SGD, 0.1f);
    so.sgd.momentum = 0.9f;
    CHECK(dg_zero_new(&sgd, other.ctx, comm, so) == DG_OK, "%s", dg_last_error());
    EXPECT_ERR(dg_zero_checkpoint_load(dir, sgd, NULL, NULL, 0), "written with optimizer 'adamw'",
               "checkpoint of another optimizer");
    dg_zero_free(sgd);
    dg_ctx_free(other.ctx);

    dg_train_state st = { .batch_size = B }, rst = { .batch_size = B, .optimizer = "adamw" };
    char path[4096] = "";
    CHECK(dg_zero_checkpoint_load(dir, z, &st, path, sizeof path) == DG_OK, "load: %s", dg_last_error());
    CHECK(dg_checkpoint_load(dir, ref.ctx, opt, &rst, comm, NULL, 0) == DG_OK, "unsharded load: %s",
          dg_last_error());
    if (g_fail) return 1;
    CHECK(st.step == CK_K && dg_zero_step_count(z) == CK_K && dg_optim_step_count(opt) == CK_K,
          "resumed at step %lld, zero %lld, optim %lld", (long long)st.step, (long long)dg_zero_step_count(z),
          (long long)dg_optim_step_count(opt));
    CHECK(st.optimizer == NULL, "st->optimizer was changed");
    int saved = st.saved_world_size;
    for (int s = CK_K; s < CK_K + CK_M; s++) train_both(comm, &ref, ddp, opt, &zn, z, s);
    double d = max_diff(zn.ctx, ref.ctx);
    CHECK(d <= 1e-6, "resumed at %d ranks (saved at %d): ZeRO differs from unsharded DDP by %g", W, saved, d);
    CHECK(same_on_all_ranks(comm, zn.ctx), "ranks hold different parameters");
    if (rank == 0) printf("ok: %s saved at %d ranks, resumed at %d: %d steps, max diff vs unsharded DDP %.3g\n",
                          path, saved, W, CK_M, d);
    if (saved == W && rank == 0) {
        char fin[4096];
        snprintf(fin, sizeof fin, "%s/final-w%d.bin", dir, W);
        size_t n;
        const float *p = dg_ctx_param_buffer(zn.ctx, &n);
        float *want = malloc(n * sizeof *want);
        FILE *f = fopen(fin, "rb");
        CHECK(want && f && fread(want, sizeof *want, n, f) == n && fgetc(f) == EOF, "cannot read %s", fin);
        if (f) fclose(f);
        size_t first = n;
        for (size_t i = 0; want && i < n && first == n; i++)
            if (memcmp(&p[i], &want[i], sizeof *p)) first = i;
        CHECK(first == n, "resumed run differs from the uninterrupted one at float %zu: %.9g vs %.9g", first,
              first < n ? p[first] : 0.0, first < n ? want[first] : 0.0);
        if (first == n) printf("ok: resumed at the same world size (%d): bitwise equal to %s\n", W, fin);
        free(want);
    }
    dg_zero_free(z);
    dg_ddp_free(ddp);
    dg_ctx_free(zn.ctx);
    dg_ctx_free(ref.ctx);
    return 0;
}

int main(int argc, char **argv) {
    dg_comm *comm;
    if (dg_comm_init(&comm, NULL)) {
        fprintf(stderr, "test_zero: %s\n", dg_last_error());
        return 1;
    }
    g_rank = dg_comm_rank(comm);
    if (argc == 3 && !strcmp(argv[1], "save")) {
        ckpt_save(comm, argv[2]);
    } else if (argc == 3 && !strcmp(argv[1], "resume")) {
        ckpt_resume(comm, argv[2]);
    } else if (argc == 1) {
        dg_zero_opts o = dg_zero_defaults(DG_ZERO_SGD, 0.05f);
        equivalence(comm, "sgd", o);
        o.sgd.momentum = 0.9f;
        o.sgd.nesterov = true;
        o.sgd.weight_decay = 1e-4f;
        equivalence(comm, "sgd-nesterov", o);
        o = dg_zero_defaults(DG_ZERO_ADAM, 0);
        o.adam.lr = 5e-3f;
        o.adam.amsgrad = true;
        o.adam.weight_decay = 1e-4f;
        equivalence(comm, "adam-amsgrad", o);
        o = dg_zero_defaults(DG_ZERO_ADAMW, 0);
        o.adam.lr = 5e-3f;
        equivalence(comm, "adamw", o);
        small(comm, 1);
        small(comm, 12);
        bad_input(comm);
    } else {
        fprintf(stderr, "usage: test_zero [save DIR | resume DIR]\n");
        dg_comm_free(comm);
        return 2;
    }
    int fail = rank_check_finish(comm);
    dg_comm_free(comm);
    return fail;
}
