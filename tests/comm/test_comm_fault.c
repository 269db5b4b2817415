/* test_comm_fault.c - one rank fails in the middle of a run of allreduces;
 * the others must end in bounded time with a clear message.
 *   test_comm_fault MODE      (run with mpirun -np >= 2)
 * MODE, done by rank 1 at step FAULT_STEP:
 *   kill  - start the step's allreduce, then SIGKILL itself;
 *   exit  - start the step's allreduce, then exit(1);
 *   hang  - never join the step's allreduce (sleeps);
 *   none  - no fault (control run).
 * A survivor whose collective fails prints
 *   "rank R: FAILED: <dg_last_error()>"
 * and exits with status 3. The timeout comes from DG_COMM_TIMEOUT.
 */
#define _POSIX_C_SOURCE 200809L

#include "dgrad/comm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { STEPS = 6, FAULT_STEP = 3, N = 1000 };

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "none";
    if (strcmp(mode, "kill") && strcmp(mode, "exit") && strcmp(mode, "hang") &&
        strcmp(mode, "none")) {
        fprintf(stderr, "usage: %s kill|exit|hang|none\n", argv[0]);
        return 2;
    }
    dg_comm *comm;
    if (dg_comm_init(&comm, NULL) != DG_OK) {
        fprintf(stderr, "dg_comm_init: %s\n", dg_last_error());
        return 1;
    }
    int rank = dg_comm_rank(comm), size = dg_comm_size(comm);
    if (size < 2) {
        fprintf(stderr, "%s needs at least 2 ranks\n", argv[0]);
        dg_comm_free(comm);
        return 2;
    }
    fprintf(stderr, "rank %d: backend %s, timeout %g s, mode %s\n", rank,
            dg_comm_backend_name(comm), dg_comm_timeout(comm), mode);
    static float buf[N];
    for (int step = 0; step < STEPS; step++) {
        for (int i = 0; i < N; i++) buf[i] = (float)(rank + i);
        dg_clear_error();
        dg_status st;
        if (rank == 1 && step == FAULT_STEP && strcmp(mode, "none") != 0) {
            fprintf(stderr, "rank 1: fault '%s' at step %d\n", mode, step);
            fflush(stderr);
            if (strcmp(mode, "hang") == 0) {
                for (;;) {
                    struct timespec t = {3600, 0};
                    nanosleep(&t, NULL);
                }
            }
            dg_comm_request *req;
            st = dg_comm_iallreduce(comm, buf, N, DG_COMM_F32, DG_COMM_SUM, &req);
            (void)dg_comm_progress(comm);
            if (strcmp(mode, "kill") == 0) raise(SIGKILL);
            exit(1);
        }
        st = dg_comm_allreduce(comm, buf, N, DG_COMM_F32, DG_COMM_SUM);
        if (st != DG_OK) {
            fprintf(stderr, "rank %d: FAILED: %s\n", rank, dg_last_error());
            fflush(stderr);
            dg_comm_free(comm);
            return 3;
        }
        float want = (float)(size * (size - 1) / 2 + size * 5);
        if (buf[5] != want) {
            fprintf(stderr, "rank %d: wrong sum %g, want %g\n", rank, buf[5], want);
            return 1;
        }
    }
    fprintf(stderr, "rank %d: all %d steps ok\n", rank, STEPS);
    dg_comm_free(comm);
    return 0;
}
