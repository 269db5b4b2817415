/* allreduce_raw - the reference for DDP's gradient-reduction cost: a bare
 * MPI_Allreduce(MPI_IN_PLACE, float32, count, MPI_SUM) called `iters` times
 * back to back, as many times as training takes steps.
 *
 *   mpicc -O2 -o allreduce_raw bench/allreduce_raw.c
 *   mpirun -n 2 ./allreduce_raw COUNT ITERS [WARMUP [nonblocking]]
 *
 * Rank 0 prints one JSON line: the total seconds of the ITERS calls (the
 * slowest rank's), and the median and minimum of one call in microseconds.
 * With "nonblocking" each call is MPI_Iallreduce + MPI_Wait instead, the
 * calls dgrad's DDP makes (a diagnostic, not the reference).
 * Built and run by bench/bench_ddp.py; not part of the CMake build.
 */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 3) {
        if (rank == 0) fprintf(stderr, "usage: allreduce_raw COUNT ITERS [WARMUP [nonblocking]]\n");
        MPI_Finalize();
        return 2;
    }
    long count = strtol(argv[1], NULL, 10), iters = strtol(argv[2], NULL, 10);
    long warmup = argc > 3 ? strtol(argv[3], NULL, 10) : 20;
    int nonblocking = argc > 4 && !strcmp(argv[4], "nonblocking");
    if (count < 1 || iters < 1 || warmup < 0) {
        if (rank == 0) fprintf(stderr, "allreduce_raw: COUNT and ITERS must be >= 1\n");
        MPI_Finalize();
        return 2;
    }
    /* zeros: the in-place sums stay finite however many calls there are */
    float *buf = calloc((size_t)count, sizeof *buf);
    double *per = malloc((size_t)iters * sizeof *per);
    if (!buf || !per) MPI_Abort(MPI_COMM_WORLD, 1);

    MPI_Request req;
#define REDUCE()                                                                        \
    do {                                                                                \
        if (nonblocking) {                                                              \
            MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM,           \
                           MPI_COMM_WORLD, &req);                                       \
            MPI_Wait(&req, MPI_STATUS_IGNORE);                                          \
        } else {                                                                        \
            MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); \
        }                                                                               \
    } while (0)
    for (long i = 0; i < warmup; i++) REDUCE();
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = now();
    for (long i = 0; i < iters; i++) {
        double a = now();
        REDUCE();
        per[i] = now() - a;
    }
    double total = now() - t0, max_total;
    MPI_Reduce(&total, &max_total, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    qsort(per, (size_t)iters, sizeof *per, cmp_double);
    if (rank == 0)
        printf("{\"ranks\": %d, \"call\": \"%s\", \"count\": %ld, \"bytes\": %ld, \"iters\": %ld, "
               "\"seconds\": %.6f, \"median_call_us\": %.2f, \"min_call_us\": %.2f}\n",
               size, nonblocking ? "MPI_Iallreduce+MPI_Wait" : "MPI_Allreduce", count, count * (long)sizeof(float), iters, max_total,
               1e6 * per[iters / 2], 1e6 * per[0]);
    free(per);
    free(buf);
    MPI_Finalize();
    return 0;
}
