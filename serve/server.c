/* server.c - see server.h. One mutex guards the queue, the model and the
 * metrics; inference itself runs outside it. */
#define _POSIX_C_SOURCE 200809L
#include "server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const double latency_buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 };
#define NLAT ((int)(sizeof latency_buckets / sizeof latency_buckets[0]))
static const int batch_buckets[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256 };
#define NBATCH ((int)(sizeof batch_buckets / sizeof batch_buckets[0]))
#define MAX_SERIES 64

typedef struct {
    char endpoint[16];
    int code;
    uint64_t count;
} response_series;

typedef struct {
    dgs_server *s;
    int id;
    pthread_t th;
    dgs_model *model;           /* the model of ctx (a reference) */
    dg_infer_ctx *ctx;
    float *x, *y;               /* max_batch samples */
} worker;

struct dgs_server {
    dgs_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;     /* a request arrived, or stop */
    pthread_cond_t idle_cv;     /* a batch finished */
    dgs_request *head, *tail;
    int queued;                 /* requests in the queue */
    int running;                /* requests taken by workers, not done */
    bool stop, draining;
    dgs_model *cur;
    worker *w;
    int nworkers;
    /* metrics */
    response_series series[MAX_SERIES];
    int nseries;
    uint64_t lat_counts[NLAT + 1];
    double lat_sum;
    uint64_t lat_n;
    uint64_t batch_counts[NBATCH + 1];
    uint64_t batches, batched_samples, rejected_full, infer_errors;
    uint64_t reload_ok, reload_err;
};

double dgs_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static struct timespec abs_deadline(double t) {
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* ---- models ------------------------------------------------------------------ */

static void release_locked(dgs_model *sm) {
    if (sm && --sm->refs == 0) {
        dg_infer_model_free(sm->m);
        free(sm);
    }
}

dgs_model *dgs_model_acquire(dgs_server *s) {
    pthread_mutex_lock(&s->mu);
    dgs_model *sm = s->cur;
    sm->refs++;
    pthread_mutex_unlock(&s->mu);
    return sm;
}

void dgs_model_release(dgs_server *s, dgs_model *sm) {
    pthread_mutex_lock(&s->mu);
    release_locked(sm);
    pthread_mutex_unlock(&s->mu);
}

int64_t dgs_model_swap(dgs_server *s, dg_infer_model *m) {
    dgs_model *sm = calloc(1, sizeof *sm);
    DG_ASSERT(sm != NULL);
    sm->m = m;
    sm->refs = 1;   /* the server's */
    pthread_mutex_lock(&s->mu);
    sm->version = s->cur ? s->cur->version + 1 : 1;
    dgs_model *old = s->cur;
    s->cur = sm;
    release_locked(old);
    int64_t v = sm->version;
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* ---- workers -------------------------------------------------------------------- */

/* The worker's context on model sm; false (message in err) on failure. */
static bool worker_use(worker *w, dgs_model *sm, char *err, size_t errn) {
    if (w->model == sm) return true;
    dg_infer_ctx *c = dg_infer_ctx_new(sm->m, DG_CPU, w->s->cfg.max_batch);
    if (!c) {
        snprintf(err, errn, "worker %d: %s", w->id, dg_last_error());
        return false;
    }
    dg_infer_ctx_free(w->ctx);
    pthread_mutex_lock(&w->s->mu);
    release_locked(w->model);
    sm->refs++;
    pthread_mutex_unlock(&w->s->mu);
    w->ctx = c;
    w->model = sm;
    size_t nin = (size_t)(w->s->cfg.max_batch * dg_infer_model_input_size(sm->m));
    size_t nout = (size_t)(w->s->cfg.max_batch * dg_infer_model_output_size(sm->m));
    free(w->x);
    free(w->y);
    w->x = malloc(nin * sizeof *w->x);
    w->y = malloc(nout * sizeof *w->y);
    DG_ASSERT(w->x && w->y);
    return true;
}

/* Runs the batch (reqs[0..n), one model); fills status and outputs. */
static void run_batch(worker *w, dgs_request **reqs, int n, int64_t samples) {
    dgs_model *sm = reqs[0]->model;
    char err[512] = "";
    dg_status st = worker_use(w, sm, err, sizeof err) ? DG_OK : DG_ERR;
    if (!st) {
        int64_t in = dg_infer_model_input_size(sm->m), out = dg_infer_model_output_size(sm->m);
        if (n == 1) {   /* alone (maybe more than max_batch): in place */
            st = dg_infer_run(w->ctx, reqs[0]->x, reqs[0]->n, reqs[0]->y);
        } else {
            int64_t off = 0;
            for (int i = 0; i < n; i++) {
                memcpy(w->x + off * in, reqs[i]->x, (size_t)(reqs[i]->n * in) * sizeof *w->x);
                off += reqs[i]->n;
            }
            st = dg_infer_run(w->ctx, w->x, samples, w->y);
            off = 0;
            for (int i = 0; !st && i < n; i++) {
                memcpy(reqs[i]->y, w->y + off * out, (size_t)(reqs[i]->n * out) * sizeof *w->y);
                off += reqs[i]->n;
            }
        }
        if (st) snprintf(err, sizeof err, "%s", dg_last_error());
    }
    if (w->s->cfg.test_slow_s > 0) {
        struct timespec ts = { (time_t)w->s->cfg.test_slow_s,
                               (long)((w->s->cfg.test_slow_s - (double)(time_t)w->s->cfg.test_slow_s) * 1e9) };
        nanosleep(&ts, NULL);
    }
    dgs_server *s = w->s;
    pthread_mutex_lock(&s->mu);
    int b = 0;
    while (b < NBATCH && samples > batch_buckets[b]) b++;
    s->batch_counts[b]++;
    s->batches++;
    s->batched_samples += (uint64_t)samples;
    if (st) s->infer_errors++;
    for (int i = 0; i < n; i++) {
        reqs[i]->status = st;
        if (st) snprintf(reqs[i]->err, sizeof reqs[i]->err, "%s", err);
        reqs[i]->done = true;
        pthread_cond_signal(&reqs[i]->cv);
    }
    s->running -= n;
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
}

static void *worker_main(void *p) {
    worker *w = p;
    dgs_server *s = w->s;
    int cap = 64;
    dgs_request **reqs = malloc((size_t)cap * sizeof *reqs);
    DG_ASSERT(reqs != NULL);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && !s->head) pthread_cond_wait(&s->work_cv, &s->mu);
        if (!s->head) break;   /* stop, and nothing left */
        int n = 0;
        int64_t samples = 0;
        dgs_model *sm = s->head->model;
        double deadline = dgs_now() + s->cfg.max_delay_s;
        for (;;) {
            dgs_request *r = s->head;
            if (r && r->model == sm && (n == 0 || samples + r->n <= s->cfg.max_batch)) {
                s->head = r->next;
                if (!s->head) s->tail = NULL;
                s->queued--;
                s->running++;
                if (n == cap) {
                    cap *= 2;
                    reqs = realloc(reqs, (size_t)cap * sizeof *reqs);
                    DG_ASSERT(reqs != NULL);
                }
                reqs[n++] = r;
                samples += r->n;
                if (samples >= s->cfg.max_batch) break;
                continue;
            }
            if (r || s->stop || dgs_now() >= deadline) break;   /* full, or no more time */
            struct timespec ts = abs_deadline(deadline);
            pthread_cond_timedwait(&s->work_cv, &s->mu, &ts);
        }
        pthread_mutex_unlock(&s->mu);
        run_batch(w, reqs, n, samples);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    free(reqs);
    return NULL;
}

/* ---- the server --------------------------------------------------------------- */

dgs_server *dgs_server_new(const dgs_config *cfg, dg_infer_model *m) {
    if (cfg->workers < 1 || cfg->max_batch < 1 || cfg->queue_cap < 1 || cfg->max_delay_s < 0) {
        dg_set_error("dgs_server_new: workers, max_batch and queue must be positive, max_delay >= 0");
        return NULL;
    }
    dgs_server *s = calloc(1, sizeof *s);
    DG_ASSERT(s != NULL);
    s->cfg = *cfg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->work_cv, &ca);
    pthread_cond_init(&s->idle_cv, &ca);
    pthread_condattr_destroy(&ca);
    dg_set_num_threads(cfg->blas_threads);
    dgs_model_swap(s, m);
    s->w = calloc((size_t)cfg->workers, sizeof *s->w);
    DG_ASSERT(s->w != NULL);
    for (int i = 0; i < cfg->workers; i++) {
        worker *w = &s->w[i];
        w->s = s;
        w->id = i;
        char err[512];
        if (!worker_use(w, s->cur, err, sizeof err)) {   /* contexts made up front: errors now */
            dg_clear_error();
            dg_set_error("%s", err);
            s->nworkers = i + 1;
            dgs_server_free(s);
            return NULL;
        }
    }
    for (int i = 0; i < cfg->workers; i++) {
        if (pthread_create(&s->w[i].th, NULL, worker_main, &s->w[i])) {
            dg_set_error("dgs_server_new: cannot start worker %d: %s", i, strerror(errno));
            s->nworkers = i;
            dgs_server_free(s);
            return NULL;
        }
        s->nworkers = i + 1;
    }
    return s;
}

void dgs_server_free(dgs_server *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nworkers; i++)
        if (s->w[i].th) pthread_join(s->w[i].th, NULL);
    for (int i = 0; i < s->cfg.workers && s->w; i++) {
        dg_infer_ctx_free(s->w[i].ctx);
        release_locked(s->w[i].model);
        free(s->w[i].x);
        free(s->w[i].y);
    }
    free(s->w);
    release_locked(s->cur);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->idle_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

dgs_submit_result dgs_submit(dgs_server *s, dgs_request *r) {
    r->status = DG_OK;
    r->err[0] = '\0';
    r->done = false;
    r->next = NULL;
    pthread_mutex_lock(&s->mu);
    dgs_submit_result res = DGS_QUEUED;
    if (s->stop) res = DGS_DRAINING;
    else if (s->queued >= s->cfg.queue_cap) {
        res = DGS_FULL;
        s->rejected_full++;
    }
    if (res == DGS_QUEUED) {
        pthread_cond_init(&r->cv, NULL);
        if (s->tail) s->tail->next = r;
        else s->head = r;
        s->tail = r;
        s->queued++;
        pthread_cond_signal(&s->work_cv);
    }
    pthread_mutex_unlock(&s->mu);
    return res;
}

void dgs_wait(dgs_server *s, dgs_request *r) {
    pthread_mutex_lock(&s->mu);
    while (!r->done) pthread_cond_wait(&r->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&r->cv);
}

void dgs_start_drain(dgs_server *s) {
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    pthread_mutex_unlock(&s->mu);
}

bool dgs_is_draining(dgs_server *s) {
    pthread_mutex_lock(&s->mu);
    bool d = s->draining;
    pthread_mutex_unlock(&s->mu);
    return d;
}

bool dgs_wait_idle(dgs_server *s, double timeout_s) {
    double deadline = dgs_now() + timeout_s;
    pthread_mutex_lock(&s->mu);
    while ((s->queued || s->running) && dgs_now() < deadline) {
        struct timespec ts = abs_deadline(deadline);
        pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts);
    }
    bool idle = !s->queued && !s->running;
    pthread_mutex_unlock(&s->mu);
    return idle;
}

/* ---- metrics ------------------------------------------------------------------ */

void dgs_count_response(dgs_server *s, const char *endpoint, int code, double seconds) {
    pthread_mutex_lock(&s->mu);
    int i = 0;
    while (i < s->nseries && (s->series[i].code != code || strcmp(s->series[i].endpoint, endpoint))) i++;
    if (i == s->nseries && s->nseries < MAX_SERIES) {
        snprintf(s->series[i].endpoint, sizeof s->series[i].endpoint, "%s", endpoint);
        s->series[i].code = code;
        s->nseries++;
    }
    if (i < s->nseries) s->series[i].count++;
    if (!strcmp(endpoint, "infer") || !strcmp(endpoint, "predict")) {
        int b = 0;
        while (b < NLAT && seconds > latency_buckets[b]) b++;
        s->lat_counts[b]++;
        s->lat_sum += seconds;
        s->lat_n++;
    }
    pthread_mutex_unlock(&s->mu);
}

void dgs_count_reload(dgs_server *s, bool ok) {
    pthread_mutex_lock(&s->mu);
    if (ok) s->reload_ok++;
    else s->reload_err++;
    pthread_mutex_unlock(&s->mu);
}

typedef struct {
    char *buf;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) DG_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 0) + 256;
        b->buf = realloc(b->buf, b->cap);
        DG_ASSERT(b->buf != NULL);
    }
}

char *dgs_metrics_text(dgs_server *s) {
    sbuf b = { malloc(4096), 0, 4096 };
    DG_ASSERT(b.buf != NULL);
    pthread_mutex_lock(&s->mu);
    sb_printf(&b, "# HELP dgserve_requests_total HTTP requests answered, by endpoint and status code.\n"
                  "# TYPE dgserve_requests_total counter\n");
    for (int i = 0; i < s->nseries; i++)
        sb_printf(&b, "dgserve_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n", s->series[i].endpoint,
                  s->series[i].code, (unsigned long long)s->series[i].count);
    sb_printf(&b, "# HELP dgserve_request_duration_seconds Inference request latency (receipt of the body to the answer).\n"
                  "# TYPE dgserve_request_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i <= NLAT; i++) {
        cum += s->lat_counts[i];
        if (i < NLAT) sb_printf(&b, "dgserve_request_duration_seconds_bucket{le=\"%g\"} %llu\n", latency_buckets[i], (unsigned long long)cum);
        else sb_printf(&b, "dgserve_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    sb_printf(&b, "dgserve_request_duration_seconds_sum %.9g\ndgserve_request_duration_seconds_count %llu\n", s->lat_sum,
              (unsigned long long)s->lat_n);
    sb_printf(&b, "# HELP dgserve_batch_size Samples per batch run by a worker.\n# TYPE dgserve_batch_size histogram\n");
    cum = 0;
    for (int i = 0; i <= NBATCH; i++) {
        cum += s->batch_counts[i];
        if (i < NBATCH) sb_printf(&b, "dgserve_batch_size_bucket{le=\"%d\"} %llu\n", batch_buckets[i], (unsigned long long)cum);
        else sb_printf(&b, "dgserve_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    sb_printf(&b, "dgserve_batch_size_sum %llu\ndgserve_batch_size_count %llu\n", (unsigned long long)s->batched_samples,
              (unsigned long long)s->batches);
    sb_printf(&b, "# HELP dgserve_queue_depth Requests waiting for a worker.\n# TYPE dgserve_queue_depth gauge\n"
                  "dgserve_queue_depth %d\n", s->queued);
    sb_printf(&b, "# HELP dgserve_requests_running Requests in a batch being run.\n# TYPE dgserve_requests_running gauge\n"
                  "dgserve_requests_running %d\n", s->running);
    sb_printf(&b, "# HELP dgserve_queue_capacity Requests the queue holds before answering 503.\n"
                  "# TYPE dgserve_queue_capacity gauge\ndgserve_queue_capacity %d\n", s->cfg.queue_cap);
    sb_printf(&b, "# HELP dgserve_rejected_total Requests answered 503 because the queue was full.\n"
                  "# TYPE dgserve_rejected_total counter\ndgserve_rejected_total %llu\n", (unsigned long long)s->rejected_full);
    sb_printf(&b, "# HELP dgserve_inference_errors_total Batches whose inference failed.\n"
                  "# TYPE dgserve_inference_errors_total counter\ndgserve_inference_errors_total %llu\n",
              (unsigned long long)s->infer_errors);
    sb_printf(&b, "# HELP dgserve_model_reloads_total Model reloads (SIGHUP), by result.\n"
                  "# TYPE dgserve_model_reloads_total counter\n"
                  "dgserve_model_reloads_total{result=\"ok\"} %llu\ndgserve_model_reloads_total{result=\"error\"} %llu\n",
              (unsigned long long)s->reload_ok, (unsigned long long)s->reload_err);
    sb_printf(&b, "# HELP dgserve_model_version Version of the model served (1, +1 per reload).\n"
                  "# TYPE dgserve_model_version gauge\ndgserve_model_version %lld\n", (long long)s->cur->version);
    sb_printf(&b, "# HELP dgserve_workers Worker threads.\n# TYPE dgserve_workers gauge\ndgserve_workers %d\n",
              s->cfg.workers);
    sb_printf(&b, "# HELP dgserve_draining 1 after SIGTERM.\n# TYPE dgserve_draining gauge\ndgserve_draining %d\n",
              s->draining ? 1 : 0);
    pthread_mutex_unlock(&s->mu);
    return b.buf;
}
