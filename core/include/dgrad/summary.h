/* dgrad/summary.h - TensorBoard event files, written natively.
 *
 * A writer appends Event records to one file
 *     LOGDIR/events.out.tfevents.<unix seconds>.<hostname>.<pid>.<n>
 * in TensorFlow's TFRecord framing (length, masked CRC32C of the length,
 * the serialized Event, masked CRC32C of the data). The first record holds
 * file_version "brain.Event:2", as TensorFlow writes it. TensorBoard, or any
 * reader of TensorFlow event files, reads the result:
 *     tensorboard --logdir LOGDIR
 *
 * Values are read from host memory: copy device tensors to the host first
 * (dg_tensor_to_host). Events are buffered by stdio; dg_summary_flush makes
 * them visible to a running TensorBoard, dg_summary_close flushes too.
 *
 * Needs protobuf-c at build time (DG_HAVE_PROTOBUF); without it
 * dg_summary_writer_open fails with "built without protobuf-c".
 *
 *     dg_summary_writer *w;
 *     if (dg_summary_writer_open(&w, "runs/mlp")) { print dg_last_error(); }
 *     dg_summary_add_scalar(w, "train/loss", loss, step);
 *     dg_summary_add_histogram(w, "weights/fc1", host_values, n, step);
 *     dg_summary_close(w);
 *
 * A writer is not thread-safe: use it from one thread at a time.
 */
#ifndef DGRAD_SUMMARY_H
#define DGRAD_SUMMARY_H

#include "dgrad/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_summary_writer dg_summary_writer;   /* opaque */

/* Creates logdir (and its parents, mode 0777 less the umask) if needed and
 * opens a new event file in it. DG_ERR when logdir exists and is not a
 * directory, cannot be created or written, or without protobuf-c. */
dg_status dg_summary_writer_open(dg_summary_writer **w, const char *logdir);

/* The event file's path; valid until dg_summary_close. */
const char *dg_summary_writer_path(const dg_summary_writer *w);

/* One scalar (TensorBoard's "Scalars" tab). tag: non-empty, e.g.
 * "train/loss"; step: the x axis. */
dg_status dg_summary_add_scalar(dg_summary_writer *w, const char *tag, float value, int64_t step);

/* A histogram of values[0..n) (the "Histograms" and "Distributions" tabs).
 * Buckets are TensorFlow's defaults: limits +-1e-12 * 1.1^k up to 1e20,
 * mirrored around 0, plus +-DBL_MAX at the ends (1551 buckets); bucket i
 * counts values in [limit[i-1], limit[i]). As TensorFlow does, each run of
 * empty buckets is written as one bucket, so a record stays small. min, max,
 * num, sum and sum_squares are exact (sums in double). NaNs are skipped;
 * infinities count in the outermost buckets. n == 0 writes an empty
 * histogram. */
dg_status dg_summary_add_histogram(dg_summary_writer *w, const char *tag, const float *values,
                                   size_t n, int64_t step);

/* Hands buffered events to the operating system. */
dg_status dg_summary_flush(dg_summary_writer *w);

/* Flushes, closes the file and frees w (NULL is fine). DG_ERR if a write
 * failed; w is freed either way. */
dg_status dg_summary_close(dg_summary_writer *w);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_SUMMARY_H */
