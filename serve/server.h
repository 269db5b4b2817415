/* server.h - dgserve's core, without HTTP: the served model (reference
 * counted, so that a reload never pulls it from under a request), a
 * bounded request queue, dynamic batching by a pool of workers (each with
 * its own dg_infer_ctx on the shared model), and the Prometheus metrics.
 *
 * Batching: a worker takes the oldest request, then waits at most
 * max_delay for more until the batch holds max_batch samples; requests of
 * one batch were all validated against the same model. A request of more
 * than max_batch samples runs alone.
 */
#ifndef DGSERVE_SERVER_H
#define DGSERVE_SERVER_H

#include "dgrad/infer.h"

#include <pthread.h>

typedef struct {
    int workers;                /* threads running batches */
    int64_t max_batch;          /* samples per batch */
    double max_delay_s;         /* longest a request waits for company */
    int queue_cap;              /* requests waiting for a worker, at most */
    int blas_threads;
    double test_slow_s;         /* tests only: sleep this long per batch */
} dgs_config;

/* A model as served: requests and worker contexts hold references. */
typedef struct dgs_model {
    dg_infer_model *m;
    int refs;
    int64_t version;            /* 1, then +1 per reload */
} dgs_model;

typedef struct dgs_request {
    dgs_model *model;           /* the model it was validated against (a reference) */
    const float *x;             /* n * input_size floats, the caller's */
    int64_t n;
    float *y;                   /* n * output_size floats, the caller's */
    dg_status status;
    char err[512];
    bool done;
    pthread_cond_t cv;
    struct dgs_request *next;
} dgs_request;

typedef struct dgs_server dgs_server;

/* Starts the workers on m (taken over). NULL and a message on error. */
dgs_server *dgs_server_new(const dgs_config *cfg, dg_infer_model *m);
/* Stops the workers (after the queue empties) and frees everything. */
void dgs_server_free(dgs_server *s);

/* The current model, with a reference the caller releases. */
dgs_model *dgs_model_acquire(dgs_server *s);
void dgs_model_release(dgs_server *s, dgs_model *sm);
/* Serves m (taken over) from now on; requests already queued finish on
 * the model they were validated against. Returns the new version. */
int64_t dgs_model_swap(dgs_server *s, dg_infer_model *m);

typedef enum { DGS_QUEUED = 0, DGS_FULL, DGS_DRAINING /* stopped */ } dgs_submit_result;
/* Queues r (r->model, x, n, y set; the rest is initialized here). On
 * DGS_QUEUED the caller must dgs_wait(r) before freeing r's buffers. */
dgs_submit_result dgs_submit(dgs_server *s, dgs_request *r);
void dgs_wait(dgs_server *s, dgs_request *r);

/* Marks the server draining: ready turns false; requests are still taken
 * (those of connections accepted before) until dgs_server_free. */
void dgs_start_drain(dgs_server *s);
bool dgs_is_draining(dgs_server *s);
/* Waits until no request is queued or running, at most timeout_s;
 * true when it got there. */
bool dgs_wait_idle(dgs_server *s, double timeout_s);

/* Metrics */
void dgs_count_response(dgs_server *s, const char *endpoint, int code, double seconds);
void dgs_count_reload(dgs_server *s, bool ok);
/* The Prometheus text exposition (malloc'd, the caller frees). */
char *dgs_metrics_text(dgs_server *s);

double dgs_now(void);   /* monotonic seconds */

#endif
