/* dgrad/timeline.h - a per-rank timeline in Chrome's trace format, in the
 * manner of Horovod's timeline.
 *
 * Each rank records spans (forward, backward, a bucket's all-reduce, the
 * optimizer step, data loading) into memory and writes them at
 * dg_timeline_close as a JSON trace that Perfetto (ui.perfetto.dev) and
 * chrome://tracing load:
 *     {"traceEvents": [{"name": "forward", "cat": "compute", "ph": "X",
 *                       "ts": <us>, "dur": <us>, "pid": <rank>, "tid": <lane>}, ...]}
 * pid is the rank and tid a lane: DG_TIMELINE_COMPUTE, DG_TIMELINE_DATA, or
 * DG_TIMELINE_COMM + k for concurrent communication k (DDP puts bucket k's
 * all-reduce on lane DG_TIMELINE_COMM + k). Timestamps are wall-clock
 * microseconds since the Unix epoch, measured with a monotonic clock from
 * dg_timeline_open on, so files of several ranks (one machine, or machines
 * with synchronized clocks) line up. scripts/merge_timeline.py merges the
 * files of all ranks into one trace.
 *
 * Events go to an array that grows geometrically: no allocation per event
 * once it is big enough (24 bytes an event). Names are copied into a table
 * on their first use, so any string will do.
 *
 * Every function accepts tl == NULL and then does nothing, so code can
 * record unconditionally. A timeline is not thread-safe.
 */
#ifndef DGRAD_TIMELINE_H
#define DGRAD_TIMELINE_H

#include "dgrad/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_timeline dg_timeline;   /* opaque */

/* Lanes (trace "tid"s). Lanes >= DG_TIMELINE_COMM are named "comm", "comm 1",
 * "comm 2", ... and have the category "comm". */
enum {
    DG_TIMELINE_COMPUTE = 0,
    DG_TIMELINE_DATA = 1,
    DG_TIMELINE_COMM = 2,
};

/* Opens a timeline for rank that dg_timeline_close writes to path. The file
 * is created (truncated) now, so a bad path fails here: DG_ERR naming it. */
dg_status dg_timeline_open(dg_timeline **tl, const char *path, int rank);

/* Starts a span named name on lane. Spans on one lane nest: each end closes
 * the innermost open span of its lane (at most 16 open per lane). Spans
 * that overlap without nesting go on different lanes. */
void dg_timeline_begin(dg_timeline *tl, const char *name, int lane);
/* Ends the innermost open span of lane; nothing if none is open. */
void dg_timeline_end(dg_timeline *tl, int lane);

/* A span measured by the caller: start ts_us (dg_timeline_now_us's clock)
 * and duration dur_us. */
void dg_timeline_complete(dg_timeline *tl, const char *name, int lane, int64_t ts_us, int64_t dur_us);

/* The timeline's clock, in microseconds (0 if tl is NULL). */
int64_t dg_timeline_now_us(const dg_timeline *tl);

/* Number of events recorded so far. */
size_t dg_timeline_num_events(const dg_timeline *tl);

/* Writes the trace (spans still open are dropped), closes the file and
 * frees tl (NULL is fine). DG_ERR if writing failed or if memory ran out
 * while recording (then events were lost); tl is freed either way. */
dg_status dg_timeline_close(dg_timeline *tl);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_TIMELINE_H */
