/* test_nccl.c - the "nccl" communicator and data-parallel training on a GPU.
 *
 * One rank (the device machine has one GPU and no MPI; a world of one still
 * runs every NCCL call):
 *  - collectives on device buffers (all-reduce SUM/AVG/MAX on f32/i32/i64,
 *    broadcast, all-gather and reduce-scatter, in place and not) give back
 *    their input, as they must with one rank; a host buffer on the same
 *    communicator goes through the host communicator; mixed buffers are
 *    refused without failing the communicator;
 *  - order: a collective reads what the ops queued before it on the
 *    compute stream wrote, without a synchronization (checked with an
 *    out-of-place all-gather after a long gemm and a fill);
 *  - DDP on a CUDA context with the nccl communicator, several buckets,
 *    overlap on and off, and with the "local" communicator (the path that
 *    stages gradients through pinned host memory) give the parameters of
 *    training without DDP, bit for bit.
 *
 * Usage: test_nccl                    the test (exit 77 = skipped: no GPU or no NCCL)
 *        test_nccl --expect-no-device dg_comm_init(&c, "nccl") fails cleanly
 *                                     (no GPU, or a build without NCCL), and
 *                                     the host communicators still work after
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/comm.h"
#include "dgrad/ddp.h"
#include "dgrad/nn.h"
#include "dgrad/ops.h"
#include "dgrad/optim.h"
#include "dgrad/tensor.h"
#include "test_util.h"

/* ---- device buffers through the public API --------------------------------------- */

static dg_tensor *dev_buf(dg_ctx *ctx, dg_dtype dt, int64_t n, const void *host) {
    dg_tensor *t = dg_tensor_persistent(ctx, dt, 1, &n);
    DG_ASSERT(t != NULL);
    if (host) dg_tensor_copy_from_host(t, host);
    return t;
}

static bool same_bytes(const dg_tensor *t, const void *ref, size_t nbytes) {
    void *h = malloc(nbytes ? nbytes : 1);
    DG_ASSERT(h != NULL);
    dg_tensor_to_host(t, h);
    bool same = memcmp(h, ref, nbytes) == 0;
    free(h);
    return same;
}

static void test_collectives(dg_comm *c, dg_ctx *ctx) {
    enum { N = 1000 };
    CHECK(dg_comm_is_device(c));
    CHECK(!strcmp(dg_comm_backend_name(c), "nccl"));
    CHECK_EQ_INT(dg_comm_size(c), 1);
    float f[N];
    int32_t i32[N];
    int64_t i64[N];
    for (int i = 0; i < N; i++) {
        f[i] = (float)(i % 37) * 0.25f - 3.0f;
        i32[i] = i * 7 - 3000;
        i64[i] = (int64_t)i * 1000003 - 77;
    }
    static const dg_comm_op ops[] = { DG_COMM_SUM, DG_COMM_AVG, DG_COMM_MAX, DG_COMM_MIN };
    for (int k = 0; k < 4; k++) {
        dg_tensor *tf = dev_buf(ctx, DG_F32, N, f), *ti = dev_buf(ctx, DG_I32, N, i32),
                  *tl = dev_buf(ctx, DG_I64, N, i64);
        CHECK(dg_comm_allreduce(c, tf->data, N, DG_COMM_F32, ops[k]) == DG_OK);
        CHECK(dg_comm_allreduce(c, ti->data, N, DG_COMM_I32, ops[k]) == DG_OK);
        CHECK(dg_comm_allreduce(c, tl->data, N, DG_COMM_I64, ops[k]) == DG_OK);
        CHECKF(same_bytes(tf, f, sizeof f), "allreduce f32 op %d changed the data", k);
        CHECKF(same_bytes(ti, i32, sizeof i32), "allreduce i32 op %d changed the data", k);
        CHECKF(same_bytes(tl, i64, sizeof i64), "allreduce i64 op %d changed the data", k);
    }
    /* non-blocking, several at once, waited in reverse */
    dg_tensor *a = dev_buf(ctx, DG_F32, N, f), *b = dev_buf(ctx, DG_F32, N, f);
    dg_comm_request *ra, *rb;
    CHECK(dg_comm_iallreduce(c, a->data, N, DG_COMM_F32, DG_COMM_AVG, &ra) == DG_OK);
    CHECK(dg_comm_ibroadcast(c, b->data, N, DG_COMM_F32, 0, &rb) == DG_OK);
    CHECK(dg_comm_wait(rb) == DG_OK);
    CHECK(dg_comm_wait(ra) == DG_OK);
    CHECK(same_bytes(a, f, sizeof f) && same_bytes(b, f, sizeof f));

    /* all-gather and reduce-scatter, out of place and in place */
    dg_tensor *send = dev_buf(ctx, DG_F32, N, f), *recv = dev_buf(ctx, DG_F32, N, NULL);
    CHECK(dg_comm_allgather(c, send->data, recv->data, N, DG_COMM_F32) == DG_OK);
    CHECK(same_bytes(recv, f, sizeof f));
    dg_tensor *inpl = dev_buf(ctx, DG_F32, N, f);
    CHECK(dg_comm_allgather(c, NULL, inpl->data, N, DG_COMM_F32) == DG_OK);
    CHECK(same_bytes(inpl, f, sizeof f));
    dg_tensor *rs = dev_buf(ctx, DG_F32, N, NULL);
    CHECK(dg_comm_reduce_scatter(c, send->data, rs->data, N, DG_COMM_F32, DG_COMM_SUM) == DG_OK);
    CHECK(same_bytes(rs, f, sizeof f));
    dg_tensor *rsi = dev_buf(ctx, DG_F32, N, f);
    CHECK(dg_comm_reduce_scatter(c, NULL, rsi->data, N, DG_COMM_F32, DG_COMM_AVG) == DG_OK);
    CHECK(same_bytes(rsi, f, sizeof f));
    CHECK(dg_comm_barrier(c) == DG_OK);

    /* host buffers on the same communicator: through the host communicator */
    int64_t counts[2] = { 5, 7 };
    double x = 2.5;
    CHECK(dg_comm_allreduce(c, counts, 2, DG_COMM_I64, DG_COMM_SUM) == DG_OK);
    CHECK(dg_comm_allreduce(c, &x, 1, DG_COMM_F64, DG_COMM_AVG) == DG_OK);
    CHECK(counts[0] == 5 && counts[1] == 7 && x == 2.5);
    int64_t gathered[2];
    CHECK(dg_comm_allgather(c, counts, gathered, 2, DG_COMM_I64) == DG_OK);
    CHECK(gathered[0] == 5 && gathered[1] == 7);

    /* a host send and a device recv: refused, the communicator stays usable */
    dg_clear_error();
    CHECK(dg_comm_allgather(c, f, recv->data, N, DG_COMM_F32) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "GPU memory");
    CHECK(!dg_comm_failed(c));
    dg_clear_error();

    /* order: the collective sees what the compute stream wrote before it.
     * A long gemm delays the fill; an out-of-place all-gather copies send
     * to recv, so a copy that ran early would leave zeros. */
    int64_t big[2] = { 2048, 2048 };
    for (int rep = 0; rep < 3; rep++) {
        dg_tensor *src = dev_buf(ctx, DG_F32, N, NULL), *dst = dev_buf(ctx, DG_F32, N, NULL);
        dg_tensor *m = dg_full(ctx, 2, big, 1e-3f);   /* allocations first: they may sync */
        dg_tensor *slow = dg_matmul(dg_matmul(m, m), m);
        CHECK_NOT_NULL(slow);
        dg_init_constant(src, 3.0f + (float)rep);
        CHECK(dg_comm_allgather(c, src->data, dst->data, N, DG_COMM_F32) == DG_OK);
        float h[N];
        dg_tensor_to_host(dst, h);
        int wrong = 0;
        for (int i = 0; i < N; i++) wrong += h[i] != 3.0f + (float)rep;
        CHECKF(wrong == 0, "order: %d of %d values not yet written when NCCL read them", wrong, N);
        dg_ctx_reset_step(ctx);
    }
}

/* ---- DDP: nccl and staged against no DDP ------------------------------------------ */

enum { IN = 784, HID = 50, OUT = 10, B = 64, STEPS = 30 };

typedef struct {
    dg_ctx *ctx;
    dg_module *model;
    dg_optim *opt;
    dg_ddp *ddp;
} net;

static net net_new(dg_comm *comm, bool overlap) {
    net n = { 0 };
    n.ctx = dg_ctx_new(DG_CUDA);
    DG_ASSERT(n.ctx != NULL);
    dg_manual_seed(n.ctx, 7);
    dg_module *l[3] = { dg_nn_linear(n.ctx, IN, HID, true), dg_nn_relu(n.ctx),
                        dg_nn_linear(n.ctx, HID, OUT, true) };
    n.model = dg_nn_sequential(n.ctx, 3, l);
    dg_tensor **p;
    int np = dg_module_parameters(n.model, &p);
    dg_adam_opts o = dg_adam_defaults();
    o.lr = 1e-3f;
    n.opt = dg_optim_adam(p, np, o);
    DG_ASSERT(n.model && n.opt);
    if (comm) {
        dg_ddp_opts d = dg_ddp_defaults();
        d.first_bucket_cap_bytes = 1024;   /* several buckets: b2+W2, b1, W1 */
        d.bucket_cap_bytes = 4096;
        d.overlap = overlap;
        if (dg_ddp_new(&n.ddp, n.ctx, comm, d) != DG_OK)
            dgt_fail(__FILE__, __LINE__, "dg_ddp_new(%s)", dg_comm_backend_name(comm));
    }
    return n;
}

static void train(net *n, int steps) {
    static float x[B * IN];
    int32_t y[B];
    int64_t xs[2] = { B, IN }, ys = B;
    for (int s = 0; s < steps; s++) {
        dgt_sparse_batch(12345u, s, B, IN, OUT, x, y);
        dg_tensor *tx = dg_tensor_from(n->ctx, DG_F32, 2, xs, x);
        dg_tensor *ty = dg_tensor_from(n->ctx, DG_I32, 1, &ys, y);
        dg_tensor *loss = dg_cross_entropy(dg_module_forward(n->model, tx), ty);
        DG_ASSERT(loss != NULL);
        dg_optim_zero_grad(n->opt);
        dg_status st = n->ddp ? dg_ddp_backward(n->ddp, loss) : dg_backward(loss);
        if (st != DG_OK) {
            dgt_fail(__FILE__, __LINE__, "backward at step %d", s);
            return;
        }
        dg_optim_step(n->opt);
        dg_ctx_reset_step(n->ctx);
    }
}

static void compare_params(const char *what, net *a, net *ref) {
    size_t na, nr;
    dg_ctx_param_buffer(a->ctx, &na);
    dg_ctx_param_buffer(ref->ctx, &nr);
    CHECK_EQ_INT(na, nr);
    int np;
    dg_tensor **pa = dg_ctx_params(a->ctx, &np), **pr = dg_ctx_params(ref->ctx, NULL);
    int64_t diff = 0, total = 0;
    double max_abs = 0;
    for (int i = 0; i < np; i++) {
        int64_t n = dg_numel(pa[i]);
        float *ha = malloc((size_t)n * sizeof *ha), *hr = malloc((size_t)n * sizeof *hr);
        DG_ASSERT(ha && hr);
        dg_tensor_to_host(pa[i], ha);
        dg_tensor_to_host(pr[i], hr);
        for (int64_t j = 0; j < n; j++) {
            if (memcmp(&ha[j], &hr[j], 4)) diff++;
            double d = fabs((double)ha[j] - hr[j]);
            if (d > max_abs) max_abs = d;
        }
        total += n;
        free(ha);
        free(hr);
    }
    printf("%s: %lld of %lld parameters differ from training without DDP (max |diff| %.3g)\n",
           what, (long long)diff, (long long)total, max_abs);
    CHECKF(diff == 0, "%s: parameters are not bit for bit those of training without DDP", what);
}

static void test_ddp(dg_comm *nccl) {
    net ref = net_new(NULL, true);
    train(&ref, STEPS);
    for (int overlap = 1; overlap >= 0; overlap--) {
        net n = net_new(nccl, overlap);
        if (!n.ddp) continue;
        train(&n, STEPS);
        dg_ddp_stats st;
        dg_ddp_get_stats(n.ddp, &st);
        printf("ddp nccl overlap=%d: %d buckets, %lld synced steps, %lld buckets started during backward\n",
               overlap, st.num_buckets, (long long)st.synced_steps, (long long)st.overlapped_buckets);
        CHECK(st.num_buckets >= 3);
        CHECK_EQ_INT(st.synced_steps, STEPS);
        if (overlap) CHECK(st.overlapped_buckets > 0);
        compare_params(overlap ? "ddp nccl (overlap)" : "ddp nccl (no overlap)", &n, &ref);
        dg_ddp_free(n.ddp);
        dg_ctx_free(n.ctx);
    }
    /* staged: a host communicator with GPU tensors */
    dg_comm *local;
    CHECK(dg_comm_init(&local, "local") == DG_OK);
    CHECK(!dg_comm_is_device(local));
    for (int overlap = 1; overlap >= 0; overlap--) {
        net n = net_new(local, overlap);
        if (!n.ddp) continue;
        train(&n, STEPS);
        dg_ddp_stats st;
        dg_ddp_get_stats(n.ddp, &st);
        printf("ddp staged (local) overlap=%d: %d buckets, %lld buckets started during backward\n",
               overlap, st.num_buckets, (long long)st.overlapped_buckets);
        CHECK_EQ_INT(st.synced_steps, STEPS);
        compare_params(overlap ? "ddp staged (overlap)" : "ddp staged (no overlap)", &n, &ref);
        /* the broadcast of a persistent tensor stages too */
        int64_t four = 4;
        dg_tensor *t = dg_tensor_persistent(n.ctx, DG_F32, 1, &four);
        float v[4] = { 1, 2, 3, 4 }, w[4];
        dg_tensor_copy_from_host(t, v);
        CHECK(dg_ddp_broadcast_tensor(n.ddp, t) == DG_OK);
        dg_tensor_to_host(t, w);
        CHECK(!memcmp(v, w, sizeof v));
        dg_ddp_free(n.ddp);
        dg_ctx_free(n.ctx);
    }
    dg_comm_free(local);
    dg_ctx_free(ref.ctx);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--expect-no-device")) {
        dg_comm *c = (dg_comm *)&c;
        dg_clear_error();
        CHECK(dg_comm_init(&c, "nccl") == DG_ERR);
        CHECK(c == NULL);
        printf("dg_comm_init(nccl): %s\n", dg_last_error());
        CHECK_CONTAINS(dg_last_error(), "nccl");
        if (dg_comm_has_backend("nccl")) CHECK_CONTAINS(dg_last_error(), "CUDA");
        dg_clear_error();
        /* a host communicator still works afterwards */
        CHECK(dg_comm_init(&c, "local") == DG_OK);
        CHECK(c && !dg_comm_is_device(c));
        int64_t v = 3;
        CHECK(c && dg_comm_allreduce(c, &v, 1, DG_COMM_I64, DG_COMM_SUM) == DG_OK && v == 3);
        dg_comm_free(c);
        CHECK(dg_comm_has_backend("local") && !dg_comm_has_backend("tpu"));
        return dgt_report("test_nccl --expect-no-device");
    }
    if (argc > 1) {
        fprintf(stderr, "usage: test_nccl [--expect-no-device]\n");
        return 2;
    }
    if (!dg_comm_has_backend("nccl")) {
        printf("test_nccl: skipped: this build has no NCCL\n");
        return 77;
    }
    dg_comm *c;
    if (dg_comm_init(&c, "nccl") != DG_OK) {
        printf("test_nccl: dg_comm_init(nccl): %s\n", dg_last_error());
        dg_clear_error();
        dg_ctx *probe = dg_ctx_new(DG_CUDA);
        if (!probe) {
            printf("test_nccl: skipped: %s\n", dg_last_error());
            return 77;
        }
        dg_ctx_free(probe);
        dgt_fail(__FILE__, __LINE__, "dg_comm_init(nccl) failed on a machine with a GPU");
        return dgt_report("test_nccl");
    }
    dg_ctx *ctx = dg_ctx_new(DG_CUDA);
    CHECK_NOT_NULL(ctx);
    if (ctx) {
        test_collectives(c, ctx);
        dg_ctx_free(ctx);
        test_ddp(c);
    }
    dg_comm_free(c);
    return dgt_report("test_nccl");
}
