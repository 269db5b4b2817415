/* dgrad/progress.h - a training progress bar, or plain log lines.
 *
 * On a terminal the bar is redrawn in place with '\r', at most 10 times a
 * second:
 *     epoch 1/3 [#######.............]  348/938  loss 0.6132  41250 samples/s  ETA 0:02
 * Anywhere else (a pipe, a file, a CI log) only the lines given to
 * dg_progress_log are printed, so logs stay readable. Quiet mode prints
 * nothing. Typical use, on rank 0 (other ranks use DG_PROGRESS_QUIET):
 *
 *     dg_progress *p;
 *     dg_progress_new(&p, stdout, quiet ? DG_PROGRESS_QUIET : DG_PROGRESS_AUTO);
 *     for each epoch:
 *         dg_progress_start_epoch(p, epoch, epochs, steps_per_epoch);
 *         for each step: ...; dg_progress_step(p, loss, samples_in_step);
 *         dg_progress_log(p, "epoch %d/%d  loss %.4f ...", ...);   (replaces the bar)
 *     dg_progress_free(p);
 */
#ifndef DGRAD_PROGRESS_H
#define DGRAD_PROGRESS_H

#include <stdio.h>

#include "dgrad/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_progress dg_progress;   /* opaque */

typedef enum {
    DG_PROGRESS_AUTO = 0,   /* the environment variable DG_PROGRESS (bar, lines
                               or quiet) when set, else BAR when the stream is a
                               terminal, else LINES. Under Open MPI's mpirun
                               (OMPI_COMM_WORLD_SIZE set) LINES: its ranks'
                               stdout is always a pseudo-terminal, even when
                               mpirun's output goes to a file */
    DG_PROGRESS_BAR,        /* the bar, and the lines */
    DG_PROGRESS_LINES,      /* the lines only */
    DG_PROGRESS_QUIET,      /* nothing */
} dg_progress_mode;

/* Writes to stream (which must outlive p). DG_ERR when DG_PROGRESS holds
 * another value than bar, lines or quiet (mode AUTO only). */
dg_status dg_progress_new(dg_progress **p, FILE *stream, dg_progress_mode mode);
void dg_progress_free(dg_progress *p);

/* The resolved mode: BAR, LINES or QUIET. */
dg_progress_mode dg_progress_get_mode(const dg_progress *p);

/* Replaces the monotonic clock (seconds) that times steps, e.g. in tests. */
void dg_progress_set_clock(dg_progress *p, double (*clock)(void *user), void *user);

/* A new epoch: epoch counts from 0 and is shown from 1; steps is the
 * number of steps in it (0 if unknown: no ETA then). */
void dg_progress_start_epoch(dg_progress *p, int epoch, int epochs, int64_t steps);

/* One step done: its loss (the bar shows the epoch's mean loss so far) and
 * its samples (throughput counts these; pass the global count to show the
 * global rate). Redraws the bar when 0.1 s have passed since the last frame,
 * or at the epoch's last step. */
void dg_progress_step(dg_progress *p, double loss, int64_t samples);

/* Prints one line (a newline is added). In bar mode it replaces the bar,
 * which comes back at the next frame. Nothing in quiet mode. */
void dg_progress_log(dg_progress *p, const char *fmt, ...) DG_PRINTF(2, 3);

/* "m:ss" below an hour, "h:mm:ss" above, "?" for a negative or non-finite
 * number. Returns buf. */
char *dg_progress_format_duration(char *buf, size_t size, double seconds);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_PROGRESS_H */
