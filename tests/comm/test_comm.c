/* test_comm.c - every collective of dgrad/comm.h checked exactly against
 * computed expectations. Run through mpirun -np N (N = 1..4) or as a plain
 * process (world of one).
 *   test_comm [--expect-size N] [--backend NAME]
 */
#define _POSIX_C_SOURCE 200809L

#include "dgrad/comm.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dg_comm *g_comm;
static int g_rank, g_size;
static long g_checks;

#define CHECK(cond, ...) do { \
    g_checks++; \
    if (!(cond)) { \
        fprintf(stderr, "rank %d: CHECK failed: %s (%s:%d): ", g_rank, #cond, \
                __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__); \
        fprintf(stderr, "\n  last error: %s\n", dg_last_error()); \
        exit(1); \
    } \
} while (0)

#define OK(call) do { \
    dg_clear_error(); \
    dg_status st_ = (call); \
    CHECK(st_ == DG_OK, "%s returned DG_ERR", #call); \
} while (0)

static const dg_comm_dtype k_dtypes[] = {DG_COMM_F32, DG_COMM_F64, DG_COMM_I32, DG_COMM_I64};
static const char *const k_dtype_names[] = {"f32", "f64", "i32", "i64"};
static const dg_comm_op k_ops[] = {DG_COMM_SUM, DG_COMM_AVG, DG_COMM_MAX, DG_COMM_MIN};
static const char *const k_op_names[] = {"sum", "avg", "max", "min"};
static const size_t k_lens[] = {0, 1, 7, 1000003};

enum { MODE_BLOCKING, MODE_WAIT, MODE_TEST, MODE_COUNT };
static const char *const k_mode_names[] = {"blocking", "wait", "test+progress"};

/* Small integers (exact in f32 even when summed over 4 ranks); the integer
 * dtypes scale them so that i32 and i64 use their width, and negatives
 * check AVG's truncation toward zero. */
static int64_t base_val(int rank, size_t i) {
    return (int64_t)((i * 7919u) % 2001u) - 1000 + 13 * rank;
}

static void put(void *buf, dg_comm_dtype dt, size_t i, int64_t v) {
    switch (dt) {
    case DG_COMM_F32: ((float *)buf)[i] = (float)v; break;
    case DG_COMM_F64: ((double *)buf)[i] = (double)v; break;
    case DG_COMM_I32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case DG_COMM_I64: ((int64_t *)buf)[i] = v; break;
    case DG_COMM_BF16: DG_ASSERT(!"bfloat16 is tested by test_ddp_bf16"); break;
    }
}

static int64_t val(dg_comm_dtype dt, int rank, size_t i) {
    int64_t b = base_val(rank, i);
    switch (dt) {
    case DG_COMM_I32: return b * 1000 + rank;
    case DG_COMM_I64: return b * ((int64_t)1 << 33) + rank;
    default: return b;
    }
}

static void fill(void *buf, dg_comm_dtype dt, int rank, size_t n, size_t offset) {
    for (size_t i = 0; i < n; i++) put(buf, dt, i, val(dt, rank, offset + i));
}

/* Expected reduction of element i over all ranks, stored into out[0] with
 * the same arithmetic as the library (sum exact, then one division). */
static void expect_reduce(void *out, dg_comm_dtype dt, dg_comm_op op, size_t i) {
    int64_t acc = val(dt, 0, i);
    for (int r = 1; r < g_size; r++) {
        int64_t v = val(dt, r, i);
        if (op == DG_COMM_MAX) acc = v > acc ? v : acc;
        else if (op == DG_COMM_MIN) acc = v < acc ? v : acc;
        else acc += v;
    }
    put(out, dt, 0, acc);
    if (op != DG_COMM_AVG || g_size == 1) return;
    switch (dt) {
    case DG_COMM_F32: ((float *)out)[0] /= (float)g_size; break;
    case DG_COMM_F64: ((double *)out)[0] /= (double)g_size; break;
    case DG_COMM_I32: ((int32_t *)out)[0] /= (int32_t)g_size; break;
    case DG_COMM_I64: ((int64_t *)out)[0] /= (int64_t)g_size; break;
    case DG_COMM_BF16: DG_ASSERT(!"bfloat16 is tested by test_ddp_bf16"); break;
    }
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL, "out of memory (%zu bytes)", n);
    return p;
}

/* Completes r the way `mode` says. */
static void finish(dg_comm_request *r, int mode) {
    if (mode == MODE_WAIT) {
        OK(dg_comm_wait(r));
        return;
    }
    bool done = false;
    for (long spins = 0; !done; spins++) {
        OK(dg_comm_progress(g_comm));
        OK(dg_comm_test(r, &done));
    }
}

static void test_topology(const char *want_backend, int expect_size) {
    const char *name = dg_comm_backend_name(g_comm);
    CHECK(strcmp(name, "mpi") == 0 || strcmp(name, "local") == 0, "backend %s", name);
    if (want_backend) CHECK(strcmp(name, want_backend) == 0, "backend %s, want %s", name, want_backend);
    if (expect_size > 0) CHECK(g_size == expect_size, "size %d, want %d", g_size, expect_size);
    if (strcmp(name, "local") == 0) CHECK(g_size == 1, "local size %d", g_size);
    CHECK(g_rank >= 0 && g_rank < g_size, "rank %d", g_rank);

    int me[5] = {g_rank, dg_comm_local_rank(g_comm), dg_comm_local_size(g_comm),
                 dg_comm_node(g_comm), dg_comm_node_count(g_comm)};
    int *all = xmalloc(sizeof me * (size_t)g_size);
    OK(dg_comm_allgather(g_comm, me, all, 5, DG_COMM_I32));
    int nodes = all[4], seen_local = 0;
    for (int r = 0; r < g_size; r++) {
        const int *t = all + 5 * r;
        CHECK(t[0] == r, "allgather of ranks: slot %d holds %d", r, t[0]);
        CHECK(t[4] == nodes, "node_count differs between ranks");
        CHECK(t[3] >= 0 && t[3] < nodes, "node %d of %d", t[3], nodes);
        CHECK(t[1] >= 0 && t[1] < t[2], "local rank %d of %d", t[1], t[2]);
        if (t[3] == me[3]) {
            CHECK(t[2] == me[2], "local_size differs within a node");
            seen_local |= 1 << t[1];
        }
    }
    CHECK(seen_local == (1 << me[2]) - 1, "local ranks of node %d are not 0..%d",
          me[3], me[2] - 1);
    /* Nodes are numbered by their lowest world rank. */
    int next_node = 0;
    for (int r = 0; r < g_size; r++) {
        const int *t = all + 5 * r;
        if (t[1] == 0) {
            CHECK(t[3] == next_node, "leader %d has node %d, want %d", r, t[3], next_node);
            next_node++;
        }
    }
    CHECK(next_node == nodes, "%d leaders, %d nodes", next_node, nodes);
    free(all);
}

static void test_allreduce(void) {
    for (size_t di = 0; di < 4; di++)
    for (size_t oi = 0; oi < 4; oi++)
    for (size_t li = 0; li < sizeof k_lens / sizeof k_lens[0]; li++)
    for (int mode = 0; mode < MODE_COUNT; mode++) {
        dg_comm_dtype dt = k_dtypes[di];
        size_t n = k_lens[li], esz = dg_comm_dtype_size(dt);
        if (n > 7 && mode == MODE_TEST && k_ops[oi] != DG_COMM_SUM) continue;  /* time */
        unsigned char *buf = xmalloc(n * esz);
        fill(buf, dt, g_rank, n, 0);
        if (mode == MODE_BLOCKING) {
            OK(dg_comm_allreduce(g_comm, buf, n, dt, k_ops[oi]));
        } else {
            dg_comm_request *r = NULL;
            OK(dg_comm_iallreduce(g_comm, buf, n, dt, k_ops[oi], &r));
            CHECK(r != NULL, "no request");
            finish(r, mode);
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char want[8];
            expect_reduce(want, dt, k_ops[oi], i);
            CHECK(memcmp(buf + i * esz, want, esz) == 0,
                  "allreduce %s %s n=%zu %s: element %zu wrong",
                  k_dtype_names[di], k_op_names[oi], n, k_mode_names[mode], i);
        }
        free(buf);
    }
}

static void test_broadcast(void) {
    for (int root = 0; root < g_size; root++)
    for (size_t di = 0; di < 4; di++)
    for (size_t li = 0; li < sizeof k_lens / sizeof k_lens[0]; li++)
    for (int mode = 0; mode < MODE_COUNT; mode++) {
        dg_comm_dtype dt = k_dtypes[di];
        size_t n = k_lens[li], esz = dg_comm_dtype_size(dt);
        if (n > 7 && root != g_size - 1) continue;  /* large case: one root */
        unsigned char *buf = xmalloc(n * esz), *want = xmalloc(n * esz);
        fill(buf, dt, g_rank, n, 0);
        fill(want, dt, root, n, 0);
        if (mode == MODE_BLOCKING) {
            OK(dg_comm_broadcast(g_comm, buf, n, dt, root));
        } else {
            dg_comm_request *r = NULL;
            OK(dg_comm_ibroadcast(g_comm, buf, n, dt, root, &r));
            finish(r, mode);
        }
        CHECK(n == 0 || memcmp(buf, want, n * esz) == 0,
              "broadcast %s n=%zu root=%d %s wrong", k_dtype_names[di], n, root,
              k_mode_names[mode]);
        free(buf);
        free(want);
    }
}

static void test_allgather(void) {
    for (size_t di = 0; di < 4; di++)
    for (size_t li = 0; li < sizeof k_lens / sizeof k_lens[0]; li++)
    for (int mode = 0; mode < MODE_COUNT; mode++)
    for (int in_place = 0; in_place < 2; in_place++) {
        dg_comm_dtype dt = k_dtypes[di];
        size_t n = k_lens[li], esz = dg_comm_dtype_size(dt), total = n * (size_t)g_size;
        unsigned char *send = xmalloc(n * esz), *recv = xmalloc(total * esz);
        memset(recv, 0xAB, total * esz);
        fill(send, dt, g_rank, n, 0);
        const void *src = send;
        if (in_place) {
            memcpy(recv + (size_t)g_rank * n * esz, send, n * esz);
            src = NULL;
        }
        if (mode == MODE_BLOCKING) {
            OK(dg_comm_allgather(g_comm, src, recv, n, dt));
        } else {
            dg_comm_request *r = NULL;
            OK(dg_comm_iallgather(g_comm, src, recv, n, dt, &r));
            finish(r, mode);
        }
        unsigned char *want = xmalloc(n * esz);
        for (int r = 0; r < g_size; r++) {
            fill(want, dt, r, n, 0);
            CHECK(n == 0 || memcmp(recv + (size_t)r * n * esz, want, n * esz) == 0,
                  "allgather %s n=%zu %s%s: block %d wrong", k_dtype_names[di], n,
                  k_mode_names[mode], in_place ? " in place" : "", r);
        }
        free(want);
        free(send);
        free(recv);
    }
}

static void test_reduce_scatter(void) {
    for (size_t di = 0; di < 4; di++)
    for (size_t oi = 0; oi < 4; oi++)
    for (size_t li = 0; li < sizeof k_lens / sizeof k_lens[0]; li++)
    for (int mode = 0; mode < MODE_COUNT; mode++)
    for (int in_place = 0; in_place < 2; in_place++) {
        dg_comm_dtype dt = k_dtypes[di];
        dg_comm_op op = k_ops[oi];
        size_t n = k_lens[li], esz = dg_comm_dtype_size(dt), total = n * (size_t)g_size;
        if (n > 7 && (mode == MODE_TEST || (in_place && oi != 1))) continue;  /* keep it quick */
        unsigned char *send = xmalloc(total * esz), *recv = xmalloc(total * esz);
        fill(send, dt, g_rank, total, 0);  /* block b, element j = val(rank, b*n + j) */
        const void *src = send;
        if (in_place) {
            memcpy(recv, send, total * esz);
            src = NULL;
        } else {
            memset(recv, 0xAB, n * esz);
        }
        if (mode == MODE_BLOCKING) {
            OK(dg_comm_reduce_scatter(g_comm, src, recv, n, dt, op));
        } else {
            dg_comm_request *r = NULL;
            OK(dg_comm_ireduce_scatter(g_comm, src, recv, n, dt, op, &r));
            finish(r, mode);
        }
        for (size_t j = 0; j < n; j++) {
            unsigned char want[8];
            expect_reduce(want, dt, op, (size_t)g_rank * n + j);
            CHECK(memcmp(recv + j * esz, want, esz) == 0,
                  "reduce_scatter %s %s n=%zu %s%s: element %zu wrong",
                  k_dtype_names[di], k_op_names[oi], n, k_mode_names[mode],
                  in_place ? " in place" : "", j);
        }
        free(send);
        free(recv);
    }
}

static void test_barrier(void) {
    OK(dg_comm_barrier(g_comm));
    dg_comm_request *r = NULL;
    OK(dg_comm_ibarrier(g_comm, &r));
    finish(r, MODE_WAIT);
    OK(dg_comm_ibarrier(g_comm, &r));
    finish(r, MODE_TEST);
}

/* More outstanding requests than one pool chunk, completed out of order,
 * mixing kinds; then a batch finished by dg_comm_wait_all. */
static void test_many_outstanding(void) {
    enum { K = 150, N = 7, MAX_RANKS = 16 };
    static int32_t bufs[K][N];
    static int64_t gath[K][MAX_RANKS * N];
    if (g_size > MAX_RANKS) return;
    dg_comm_request *reqs[K];
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < N; i++) bufs[k][i] = (int32_t)(k * 100 + i + g_rank);
        if (k % 3 == 2) {
            int64_t mine[N];
            for (int i = 0; i < N; i++) mine[i] = (int64_t)k << 40 | (int64_t)g_rank << 8 | i;
            memcpy(&gath[k][g_rank * N], mine, sizeof mine);
            OK(dg_comm_iallgather(g_comm, NULL, gath[k], N, DG_COMM_I64, &reqs[k]));
        } else {
            OK(dg_comm_iallreduce(g_comm, bufs[k], N, DG_COMM_I32, DG_COMM_SUM, &reqs[k]));
        }
        if (k % 10 == 0) OK(dg_comm_progress(g_comm));
    }
    for (int k = K - 1; k >= 0; k--) OK(dg_comm_wait(reqs[k]));
    int32_t rank_sum = (int32_t)(g_size * (g_size - 1) / 2);
    for (int k = 0; k < K; k++) {
        if (k % 3 == 2) {
            for (int r = 0; r < g_size; r++)
                for (int i = 0; i < N; i++)
                    CHECK(gath[k][r * N + i] == ((int64_t)k << 40 | (int64_t)r << 8 | i),
                          "outstanding allgather %d rank %d elem %d", k, r, i);
        } else {
            for (int i = 0; i < N; i++)
                CHECK(bufs[k][i] == (int32_t)(g_size * (k * 100 + i)) + rank_sum,
                      "outstanding allreduce %d elem %d = %d", k, i, bufs[k][i]);
        }
    }
    /* Steady state: the pool is reused; wait_all releases everything. */
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < K; k++) {
            bufs[k][0] = 1;
            OK(dg_comm_iallreduce(g_comm, bufs[k], 1, DG_COMM_I32, DG_COMM_AVG, &reqs[k]));
        }
        OK(dg_comm_wait_all(g_comm));
        for (int k = 0; k < K; k++)
            CHECK(bufs[k][0] == 1, "wait_all round %d avg %d = %d", round, k, bufs[k][0]);
    }
}

static void test_bad_args(void) {
    float x[4] = {0};
    dg_clear_error();
    CHECK(dg_comm_broadcast(g_comm, x, 4, DG_COMM_F32, g_size) == DG_ERR, "root = size accepted");
    CHECK(strstr(dg_last_error(), "dg_comm_broadcast") && strstr(dg_last_error(), "root"),
          "message: %s", dg_last_error());
    dg_clear_error();
    CHECK(dg_comm_broadcast(g_comm, x, 4, DG_COMM_F32, -1) == DG_ERR, "root -1 accepted");
    dg_clear_error();
    CHECK(dg_comm_allreduce(g_comm, NULL, 4, DG_COMM_F32, DG_COMM_SUM) == DG_ERR, "NULL buf");
    dg_clear_error();
    CHECK(dg_comm_allreduce(g_comm, x, 4, DG_COMM_F32, (dg_comm_op)42) == DG_ERR, "bad op");
    dg_clear_error();
    float big[16];
    CHECK(dg_comm_allgather(g_comm, big, big, 1, DG_COMM_F32) == DG_ERR, "overlap accepted");
    CHECK(strstr(dg_last_error(), "overlap"), "message: %s", dg_last_error());
    dg_clear_error();
    dg_comm_request *r = (dg_comm_request *)1;
    CHECK(dg_comm_ireduce_scatter(g_comm, big, big, 1, DG_COMM_F32, DG_COMM_SUM, &r) == DG_ERR
          && r == NULL, "overlap accepted");
    dg_clear_error();
    CHECK(!dg_comm_failed(g_comm), "argument errors must not fail the communicator");
    /* Still usable. */
    x[0] = 1;
    OK(dg_comm_allreduce(g_comm, x, 1, DG_COMM_F32, DG_COMM_SUM));
    CHECK(x[0] == (float)g_size, "after bad args: %g", x[0]);

    double t = dg_comm_timeout(g_comm);
    dg_comm_set_timeout(g_comm, 12.5);
    CHECK(dg_comm_timeout(g_comm) == 12.5, "timeout %g", dg_comm_timeout(g_comm));
    dg_comm_set_timeout(g_comm, t);

    /* Errors of dg_comm_init that happen before any backend work. */
    dg_comm *c = (dg_comm *)1;
    dg_clear_error();
    CHECK(dg_comm_init(&c, "nccl") == DG_ERR && c == NULL, "backend nccl accepted");
    CHECK(strstr(dg_last_error(), "nccl"), "message: %s", dg_last_error());
    dg_clear_error();
#ifndef DG_TEST_HAVE_MPI
    CHECK(dg_comm_init(&c, "mpi") == DG_ERR, "mpi accepted without MPI");
    dg_clear_error();
#endif
    char *old = getenv("DG_COMM_TIMEOUT");
    char saved[64] = "";
    if (old) snprintf(saved, sizeof saved, "%s", old);
    setenv("DG_COMM_TIMEOUT", "soon", 1);
    CHECK(dg_comm_init(&c, "local") == DG_ERR, "DG_COMM_TIMEOUT=soon accepted");
    CHECK(strstr(dg_last_error(), "DG_COMM_TIMEOUT"), "message: %s", dg_last_error());
    dg_clear_error();
    setenv("DG_COMM_TIMEOUT", "7", 1);
    OK(dg_comm_init(&c, "local"));
    CHECK(dg_comm_timeout(c) == 7.0 && dg_comm_size(c) == 1, "local comm");
    dg_comm_free(c);
    if (old) setenv("DG_COMM_TIMEOUT", saved, 1);
    else unsetenv("DG_COMM_TIMEOUT");
}

int main(int argc, char **argv) {
    int expect_size = 0;
    const char *backend = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--expect-size") == 0 && i + 1 < argc) expect_size = atoi(argv[++i]);
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) backend = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--expect-size N] [--backend NAME]\n", argv[0]);
            return 2;
        }
    }
    const char *alg_var = "OMPI_MCA_coll_libnbc_iallreduce_algorithm";
    bool user_alg = getenv(alg_var) != NULL;
    if (dg_comm_init(&g_comm, backend) != DG_OK) {
        fprintf(stderr, "dg_comm_init: %s\n", dg_last_error());
        return 1;
    }
    g_rank = dg_comm_rank(g_comm);
    g_size = dg_comm_size(g_comm);
    /* under Open MPI's mpirun with 2-8 ranks, libnbc's ring (see comm_mpi.c) */
    if (!user_alg && !strcmp(dg_comm_backend_name(g_comm), "mpi") && getenv("OMPI_COMM_WORLD_SIZE") &&
        g_size >= 2 && g_size <= 8)
        CHECK(getenv(alg_var) && !strcmp(getenv(alg_var), "1"), "%s is %s, want 1 (the ring)", alg_var,
              getenv(alg_var) ? getenv(alg_var) : "unset");

    test_topology(backend, expect_size);
    test_allreduce();
    test_broadcast();
    test_allgather();
    test_reduce_scatter();
    test_barrier();
    test_many_outstanding();
    test_bad_args();
    OK(dg_comm_barrier(g_comm));

    printf("rank %d/%d (%s, local %d/%d, node %d/%d): %ld checks passed\n", g_rank,
           g_size, dg_comm_backend_name(g_comm), dg_comm_local_rank(g_comm),
           dg_comm_local_size(g_comm), dg_comm_node(g_comm), dg_comm_node_count(g_comm),
           g_checks);
    dg_comm_free(g_comm);
    return 0;
}
