/* rank_check.h - CHECK for tests that run on every rank (tests/ddp,
 * tests/zero): a failed check prints "rank R: FAIL file:line: message" and
 * marks this rank failed; rank_check_finish() tells every rank whether any
 * failed and prints "passed on N ranks" or "FAILED on N ranks" (CTest's
 * PASS/FAIL_REGULAR_EXPRESSION match those). Header-only, one per test. */
#ifndef DG_TEST_RANK_CHECK_H
#define DG_TEST_RANK_CHECK_H

#include "dgrad/comm.h"

#include <stdio.h>

static int g_fail, g_rank;

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "rank %d: FAIL %s:%d: ", g_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
            g_fail = 1;                                                          \
        }                                                                        \
    } while (0)

/* Collective: 1 when a check failed on any rank, else 0. */
static inline int rank_check_finish(dg_comm *comm) {
    int fail = g_fail;
    dg_comm_allreduce(comm, &fail, 1, DG_COMM_I32, DG_COMM_MAX);
    if (g_rank == 0) printf("%s on %d ranks\n", fail ? "FAILED" : "passed", dg_comm_size(comm));
    return fail;
}

#endif
