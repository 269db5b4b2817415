/* dgserve - an HTTP/1.1 inference server for ONNX models, on dgrad.
 *
 *   dgserve --model PATH.onnx | --model-dir DIR  [--name NAME] [--host 127.0.0.1] [--port 8080]
 *           [--workers 2] [--max-batch 32] [--max-delay-ms 2] [--queue 128]
 *           [--max-request-batch 1024] [--max-body-mb 64] [--drain-timeout-s 30]
 *           [--client-timeout-s 30]
 *           [--blas-threads 1] [--access-log FILE|-]
 *
 * Endpoints (JSON in and out; errors are {"error": "<field>: <what>"}):
 *   GET  /v2/health/live, /v2/health/ready     KServe v2 health
 *   GET  /v2, /v2/models/NAME, /v2/models/NAME/ready    metadata
 *   POST /v2/models/NAME/infer     {"inputs": [{"name", "shape": [n, ...],
 *                                   "datatype": "FP32", "data": [...]}]}
 *   GET  /v1/models/NAME           TF Serving model status
 *   POST /v1/models/NAME:predict   {"instances": [sample, ...]} -> {"predictions": [...]}
 *   GET  /metrics                  Prometheus text format
 * Requests are batched across clients (server.h). A full queue answers 503
 * with Retry-After. SIGHUP reloads the model file (requests in flight
 * finish on the old model; a file that does not load keeps the old one).
 * --model-dir DIR serves the newest *.onnx file of DIR (by mtime) and
 * watches DIR (inotify): a .onnx file written and closed, or renamed into
 * it, is loaded if it is the newest, as SIGHUP would. A broken file is
 * counted as a failed reload once, and not tried again until it changes.
 * SIGTERM or SIGINT: stop listening, finish what was accepted, exit 0.
 * --client-timeout-s X: a connection silent for X s is closed, and so is
 *   one whose request body is still arriving X s after its headers
 *   (counted as code 408 in /metrics).
 * --access-log FILE (appended; - for stderr): one JSON line per request,
 *   {"time": "2026-12-06T13:40:00.123Z", "method", "path", "status",
 *    "latency_ms", "batch" (samples of an infer/predict body, else 0),
 *    "bytes_in" (body), "bytes_out" (response body)}.
 */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/onnx.h"
#include "request.h"
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *model_path;     /* --model, or NULL with --model-dir */
    const char *model_dir;      /* --model-dir: the newest *.onnx there, watched */
    char name[128];
    const char *host;
    int port;
    int64_t max_request_batch;
    size_t max_body;
    double drain_timeout_s;
    double client_timeout_s;    /* a request not received in full by then: closed */
    FILE *access_log;           /* NULL: none */
} options;

typedef struct {
    options o;
    dgs_server *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active;                 /* requests begun and not completed */
    pthread_mutex_t reload_mu;  /* one reload at a time (SIGHUP, the watcher) */
    char served[4096];          /* the file served, and its identity: */
    struct stat served_st;      /* a --model-dir file is loaded once per version */
    int stop_fd[2];             /* the watcher's wake-up pipe */
} app;

static void active_add(app *a, int d) {
    pthread_mutex_lock(&a->mu);
    a->active += d;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* Waits until no request is active, at most until deadline (dgs_now). */
static bool wait_no_active(app *a, double deadline) {
    pthread_mutex_lock(&a->mu);
    while (a->active && dgs_now() < deadline) {
        pthread_mutex_unlock(&a->mu);
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&a->mu);
    }
    bool none = a->active == 0;
    pthread_mutex_unlock(&a->mu);
    return none;
}

/* per connection (request) */
typedef struct {
    char *body;
    size_t len, cap;
    bool too_big;
    double t0;
} conn_state;

/* ---- responses ------------------------------------------------------------------ */

/* What the access log needs of the request being answered on this thread
 * (a thread per connection): set by send_text and infer. */
static _Thread_local int tl_status;
static _Thread_local size_t tl_bytes_out;
static _Thread_local int64_t tl_batch;

static enum MHD_Result send_text(struct MHD_Connection *c, int code, char *text, const char *type,
                                 const char *retry_after) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (retry_after) MHD_add_response_header(r, "Retry-After", retry_after);
    tl_status = code;
    tl_bytes_out = strlen(text);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int code, json_t *j) {
    char *text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (!text) return MHD_NO;
    return send_text(c, code, text, "application/json", NULL);
}

static enum MHD_Result send_error(struct MHD_Connection *c, const http_error *e) {
    json_t *j = json_pack("{s:s}", "error", e->msg);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text) return MHD_NO;
    return send_text(c, e->code, text, "application/json", e->retry_after);
}

/* ---- endpoints ------------------------------------------------------------------------ */

static json_t *tensor_meta(const char *name, const int64_t *shape, int nd) {
    json_t *s = json_array();
    json_array_append_new(s, json_integer(-1));
    for (int i = 0; i < nd; i++) json_array_append_new(s, json_integer(shape[i]));
    return json_pack("{s:s,s:s,s:o}", "name", name, "datatype", "FP32", "shape", s);
}

static enum MHD_Result model_metadata(app *a, struct MHD_Connection *c) {
    dgs_model *sm = dgs_model_acquire(a->s);
    int64_t is[DG_MAX_DIMS], os[DG_MAX_DIMS];
    int ind = dg_infer_model_input_shape(sm->m, is), ond = dg_infer_model_output_shape(sm->m, os);
    char ver[32];
    snprintf(ver, sizeof ver, "%lld", (long long)sm->version);
    json_t *j = json_pack("{s:s,s:[s],s:s,s:[o],s:[o]}", "name", a->o.name, "versions", ver, "platform", "onnx",
                          "inputs", tensor_meta("input", is, ind), "outputs", tensor_meta("output", os, ond));
    dgs_model_release(a->s, sm);
    return send_json(c, 200, j);
}

/* A growing response text. */
typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} text;

static void text_need(text *t, size_t n) {
    if (t->oom || t->len + n + 1 <= t->cap) return;
    size_t nc = t->cap ? t->cap : 256;
    while (nc < t->len + n + 1) nc *= 2;
    char *p = realloc(t->s, nc);
    if (!p) {
        t->oom = true;
        return;
    }
    t->s = p;
    t->cap = nc;
}

static void text_add(text *t, const char *s, size_t n) {
    text_need(t, n);
    if (t->oom) return;
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void text_str(text *t, const char *s) { text_add(t, s, strlen(s)); }

static void text_floats(text *t, const float *y, int64_t n) {
    text_need(t, (size_t)n * 17 + 2);
    if (t->oom) return;
    t->s[t->len++] = '[';
    for (int64_t i = 0; i < n; i++) {
        if (i) t->s[t->len++] = ',';
        t->len += dgs_format_float(t->s + t->len, y[i]);
    }
    t->s[t->len++] = ']';
    t->s[t->len] = '\0';
}

/* Runs an inference body (v2 or v1); the response text (malloc'd) or an error. */
static int infer(app *a, const conn_state *cs, bool v2, char **out, http_error *e) {
    if (cs->too_big) return dgs_fail(e, 413, "body: larger than %zu bytes", a->o.max_body);
    dgs_model *sm = dgs_model_acquire(a->s);
    float *y = NULL;
    int64_t ms[DG_MAX_DIMS];
    int mnd = dg_infer_model_input_shape(sm->m, ms);
    dgs_body b;
    int code = dgs_parse_request(cs->body, cs->len, v2, ms, mnd, a->o.max_request_batch, &b, e);
    int64_t n = b.n;
    if (!code) tl_batch = n;
    int64_t osz = dg_infer_model_output_size(sm->m);
    if (!code) {
        y = malloc((size_t)(n * osz) * sizeof *y);
        if (!y) code = dgs_fail(e, 500, "out of memory");
    }
    dgs_request req = { .model = sm, .x = b.x, .n = n, .y = y };
    if (!code) {
        dgs_submit_result r = dgs_submit(a->s, &req);
        if (r == DGS_FULL) {
            code = dgs_fail(e, 503, "server busy: the request queue is full; retry later");
            e->retry_after = "1";
        } else if (r == DGS_DRAINING) {
            code = dgs_fail(e, 503, "server shutting down");
        } else {
            dgs_wait(a->s, &req);
            if (req.status) code = dgs_fail(e, 500, "inference failed: %s", req.err);
        }
    }
    for (int64_t i = 0; !code && i < n * osz; i++)   /* JSON has no NaN or infinity */
        if (!isfinite(y[i]))
            code = dgs_fail(e, 500, "inference failed: output %lld of sample %lld is %s", (long long)(i % osz),
                            (long long)(i / osz), isnan(y[i]) ? "NaN" : "infinite");
    if (!code) {
        int64_t os[DG_MAX_DIMS];
        int ond = dg_infer_model_output_shape(sm->m, os);
        text t = { 0 };
        char buf[64];
        if (v2) {
            text_str(&t, "{\"model_name\":\"");
            text_str(&t, a->o.name);   /* checked at start: [A-Za-z0-9_.-] */
            snprintf(buf, sizeof buf, "\",\"model_version\":\"%lld\",", (long long)sm->version);
            text_str(&t, buf);
            text_str(&t, "\"outputs\":[{\"name\":\"output\",\"datatype\":\"FP32\",\"shape\":[");
            snprintf(buf, sizeof buf, "%lld", (long long)n);
            text_str(&t, buf);
            for (int i = 0; i < ond; i++) {
                snprintf(buf, sizeof buf, ",%lld", (long long)os[i]);
                text_str(&t, buf);
            }
            text_str(&t, "],\"data\":");
            text_floats(&t, y, n * osz);
            text_str(&t, "}]");
            if (b.id) {   /* its JSON text, checked by the parser */
                text_str(&t, ",\"id\":\"");
                text_add(&t, b.id, b.id_len);
                text_str(&t, "\"");
            }
            text_str(&t, "}");
        } else {
            text_str(&t, "{\"predictions\":[");
            for (int64_t i = 0; i < n; i++) {
                if (i) text_str(&t, ",");
                text_floats(&t, y + i * osz, osz);
            }
            text_str(&t, "]}");
        }
        if (t.oom) {
            free(t.s);
            code = dgs_fail(e, 500, "out of memory");
        } else {
            *out = t.s;
        }
    }
    free(b.x);
    free(y);
    dgs_model_release(a->s, sm);
    return code;
}

/* "/v2/models/NAME/rest" -> rest, if NAME is ours; NULL otherwise. */
static const char *model_path(const app *a, const char *url, const char *prefix, bool *unknown) {
    size_t pl = strlen(prefix), nl = strlen(a->o.name);
    *unknown = false;
    if (strncmp(url, prefix, pl)) return NULL;
    const char *p = url + pl;
    if (strncmp(p, a->o.name, nl) || (p[nl] && p[nl] != '/' && p[nl] != ':')) {
        *unknown = true;
        return NULL;
    }
    return p + nl;
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                      const char *version, const char *upload, size_t *upload_size,
                                      void **con_cls) {
    (void)version;
    app *a = cls;
    conn_state *cs = *con_cls;
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        cs->t0 = dgs_now();
        *con_cls = cs;
        active_add(a, 1);
        return MHD_YES;
    }
    if (*upload_size && dgs_now() - cs->t0 > a->o.client_timeout_s) {
        /* A client trickling its body. libmicrohttpd cannot answer while an
         * upload is under way (microhttpd.h: no response while upload_data is
         * set), so the connection is closed, and counted as a 408. */
        dgs_count_response(a->s, "other", 408, dgs_now() - cs->t0);
        return MHD_NO;
    }
    if (*upload_size) {
        if (!cs->too_big && cs->len + *upload_size > a->o.max_body) {
            cs->too_big = true;
            free(cs->body);
            cs->body = NULL;
            cs->len = cs->cap = 0;
        }
        if (!cs->too_big) {
            if (cs->len + *upload_size + 1 > cs->cap) {
                size_t nc = cs->cap ? cs->cap : 4096;
                while (nc < cs->len + *upload_size + 1) nc *= 2;
                char *p = realloc(cs->body, nc);
                if (!p) return MHD_NO;
                cs->body = p;
                cs->cap = nc;
            }
            memcpy(cs->body + cs->len, upload, *upload_size);
            cs->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    const char *endpoint = "other", *allow = NULL;
    http_error e = { 0 };
    json_t *j = NULL;
    char *metrics = NULL, *answer = NULL;
    bool unknown_model = false, unknown_v1 = false;
    const char *rest;
    int code = 200;
    if (!strcmp(url, "/v2/health/live")) {
        endpoint = "live";
        if (get) j = json_pack("{s:b}", "live", 1);
        else allow = "GET";
    } else if (!strcmp(url, "/v2/health/ready")) {
        endpoint = "ready";
        bool ready = !dgs_is_draining(a->s);
        if (get) {
            j = json_pack("{s:b}", "ready", ready);
            code = ready ? 200 : 503;
        } else allow = "GET";
    } else if (!strcmp(url, "/v2")) {
        endpoint = "metadata";
        if (get) j = json_pack("{s:s,s:s,s:[]}", "name", "dgserve", "version", dg_version(), "extensions");
        else allow = "GET";
    } else if ((rest = model_path(a, url, "/v2/models/", &unknown_model))) {
        if (!*rest) {
            endpoint = "metadata";
            if (get) return dgs_count_response(a->s, endpoint, 200, 0), model_metadata(a, c);
            allow = "GET";
        } else if (!strcmp(rest, "/ready")) {
            endpoint = "ready";
            bool ready = !dgs_is_draining(a->s);
            if (get) {
                j = json_pack("{s:s,s:b}", "name", a->o.name, "ready", ready);
                code = ready ? 200 : 503;
            } else allow = "GET";
        } else if (!strcmp(rest, "/infer")) {
            endpoint = "infer";
            if (post) code = infer(a, cs, true, &answer, &e) ? e.code : 200;
            else allow = "POST";
        } else {
            code = dgs_fail(&e, 404, "no endpoint %s", url);
        }
    } else if (!unknown_model && (rest = model_path(a, url, "/v1/models/", &unknown_v1))) {
        if (!*rest) {
            endpoint = "status";
            if (get) {
                dgs_model *sm = dgs_model_acquire(a->s);
                char ver[32];
                snprintf(ver, sizeof ver, "%lld", (long long)sm->version);
                dgs_model_release(a->s, sm);
                j = json_pack("{s:[{s:s,s:s,s:{s:s,s:s}}]}", "model_version_status", "version", ver, "state",
                              "AVAILABLE", "status", "error_code", "OK", "error_message", "");
            } else allow = "GET";
        } else if (!strcmp(rest, ":predict")) {
            endpoint = "predict";
            if (post) code = infer(a, cs, false, &answer, &e) ? e.code : 200;
            else allow = "POST";
        } else {
            code = dgs_fail(&e, 404, "no endpoint %s", url);
        }
    } else if (!strcmp(url, "/metrics")) {
        endpoint = "metrics";
        if (get) metrics = dgs_metrics_text(a->s);
        else allow = "GET";
    } else {
        code = dgs_fail(&e, 404, "no endpoint %s", url);
    }
    if (unknown_model || unknown_v1) {
        e.code = 0;
        code = dgs_fail(&e, 404, "model: %s names no model served here (this server serves '%s')", url, a->o.name);
    }
    if (allow && !e.code) code = dgs_fail(&e, 405, "method: %s %s is not supported (use %s)", method, url, allow);
    dgs_count_response(a->s, endpoint, e.code ? e.code : code, dgs_now() - cs->t0);
    if (e.code) {
        json_decref(j);
        free(metrics);
        free(answer);
        if (allow) {
            json_t *ej = json_pack("{s:s}", "error", e.msg);
            char *text = json_dumps(ej, JSON_COMPACT);
            json_decref(ej);
            struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
            MHD_add_response_header(r, "Content-Type", "application/json");
            MHD_add_response_header(r, "Allow", allow);
            tl_status = 405;
            tl_bytes_out = strlen(text);
            enum MHD_Result ret = MHD_queue_response(c, 405, r);
            MHD_destroy_response(r);
            return ret;
        }
        return send_error(c, &e);
    }
    if (metrics) return send_text(c, 200, metrics, "text/plain; version=0.0.4", NULL);
    if (answer) return send_text(c, 200, answer, "application/json", NULL);
    return send_json(c, code, j);
}

/* printable ASCII of s (at most n - 1 bytes), the rest '?': valid JSON strings */
static void printable(char *dst, size_t n, const char *s) {
    size_t i = 0;
    for (; s && s[i] && i + 1 < n; i++) dst[i] = ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f) ? '?' : s[i];
    dst[i] = '\0';
}

static void access_log(app *a, const char *method, const char *url, const conn_state *cs) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40], m[16], path[1024];
    size_t k = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + k, sizeof when - k, ".%03ldZ", ts.tv_nsec / 1000000);
    printable(m, sizeof m, method);
    printable(path, sizeof path, url);
    json_t *j = json_pack("{s:s,s:s,s:s,s:i,s:f,s:I,s:I,s:I}", "time", when, "method", m, "path", path, "status",
                          tl_status, "latency_ms", (dgs_now() - cs->t0) * 1000, "batch", (json_int_t)tl_batch,
                          "bytes_in", (json_int_t)cs->len, "bytes_out", (json_int_t)tl_bytes_out);
    char *line = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(j);
    if (line) {
        fprintf(a->o.access_log, "%s\n", line);   /* one call: lines of threads do not mix */
        fflush(a->o.access_log);
        free(line);
    }
}

/* handle_request, and a line of the access log once the answer is queued */
static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    app *a = cls;
    tl_status = 0;
    tl_bytes_out = 0;
    tl_batch = 0;
    enum MHD_Result ret = handle_request(cls, c, url, method, version, upload, upload_size, con_cls);
    if (a->o.access_log && tl_status && *con_cls) access_log(a, method, url, *con_cls);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)c;
    (void)toe;
    conn_state *cs = *con_cls;
    if (cs) {
        free(cs->body);
        free(cs);
        active_add(cls, -1);
    }
    *con_cls = NULL;
}

/* ---- the model file ------------------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The newest regular *.onnx file of dir (latest mtime; of equal ones the
 * last name) into path, its stat into st; false if there is none. */
static bool newest_model(const char *dir, char *path, size_t n, struct stat *st) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    char best[256] = "";
    struct stat bst = { 0 };
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".onnx") || strlen(e->d_name) >= sizeof best) continue;
        char p[4096];
        struct stat s;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &s) || !S_ISREG(s.st_mode)) continue;
        int newer = !found ? 1
                    : s.st_mtim.tv_sec != bst.st_mtim.tv_sec   ? (s.st_mtim.tv_sec > bst.st_mtim.tv_sec ? 1 : -1)
                    : s.st_mtim.tv_nsec != bst.st_mtim.tv_nsec ? (s.st_mtim.tv_nsec > bst.st_mtim.tv_nsec ? 1 : -1)
                                                               : (strcmp(e->d_name, best) > 0 ? 1 : -1);
        if (newer > 0) {
            snprintf(best, sizeof best, "%s", e->d_name);
            bst = s;
            found = true;
        }
    }
    closedir(d);
    if (found) {
        snprintf(path, n, "%s/%s", dir, best);
        *st = bst;
    }
    return found;
}

static bool same_file(const struct stat *a, const struct stat *b) {
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Loads the model to serve now: --model's file, or --model-dir's newest.
 * NULL with a message (dg_last_error) when it does not load. With
 * only_new, a --model-dir file already tried gives NULL and *unchanged. */
static dg_infer_model *load_model(app *a, bool only_new, bool *unchanged) {
    *unchanged = false;
    dg_clear_error();
    if (a->o.model_path) {
        snprintf(a->served, sizeof a->served, "%s", a->o.model_path);
        return dg_onnx_load(a->o.model_path);
    }
    char path[4096];
    struct stat st;
    if (!newest_model(a->o.model_dir, path, sizeof path, &st)) {
        dg_set_error("--model-dir %s: no *.onnx file in it", a->o.model_dir);
        return NULL;
    }
    if (only_new && !strcmp(path, a->served) && same_file(&st, &a->served_st)) {
        *unchanged = true;
        return NULL;
    }
    snprintf(a->served, sizeof a->served, "%s", path);   /* tried: a broken file is not retried until it changes */
    a->served_st = st;
    return dg_onnx_load(path);
}

/* Reloads (why: "SIGHUP" or "watch") and swaps the model in; requests in
 * flight finish on the old one, and a file that does not load keeps it. */
static void reload(app *a, const char *why, bool only_new) {
    pthread_mutex_lock(&a->reload_mu);
    bool unchanged;
    dg_infer_model *nm = load_model(a, only_new, &unchanged);
    if (nm) {
        int64_t v = dgs_model_swap(a->s, nm);
        dgs_count_reload(a->s, true);
        printf("dgserve: %s: reloaded %s (version %lld)\n", why, a->served, (long long)v);
    } else if (!unchanged) {
        dgs_count_reload(a->s, false);
        printf("dgserve: %s: reload failed, still serving the previous model: %s\n", why, dg_last_error());
    }
    fflush(stdout);
    pthread_mutex_unlock(&a->reload_mu);
}

/* --model-dir: a file closed after writing, or moved in (write, then
 * rename, as a trainer should), reloads the newest model. */
static void *watch_main(void *p) {
    app *a = p;
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0 || inotify_add_watch(fd, a->o.model_dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
        fprintf(stderr, "dgserve: --model-dir %s: cannot watch it (%s); SIGHUP still reloads\n", a->o.model_dir,
                strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        struct pollfd fds[2] = { { .fd = fd, .events = POLLIN }, { .fd = a->stop_fd[0], .events = POLLIN } };
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[1].revents) break;
        ssize_t n = read(fd, buf, sizeof buf);
        bool model = false;
        for (char *q = buf; n > 0 && q < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)q;
            if (ev->len && ev->name[0] != '.' && ends_with(ev->name, ".onnx")) model = true;
            q += sizeof *ev + ev->len;
        }
        if (model) reload(a, "watch", true);
    }
    close(fd);
    return NULL;
}

/* ---- main ----------------------------------------------------------------------------------- */

static int usage(const char *msg) {
    if (msg) fprintf(stderr, "dgserve: %s\n", msg);
    fprintf(stderr,
            "usage: dgserve --model PATH.onnx | --model-dir DIR  [--name NAME] [--host ADDR] [--port N]\n"
            "               [--workers N]\n"
            "               [--max-batch N] [--max-delay-ms X] [--queue N] [--max-request-batch N]\n"
            "               [--max-body-mb N] [--drain-timeout-s X] [--client-timeout-s X] [--blas-threads N]\n"
            "               [--access-log FILE|-]\n");
    return 2;
}

static bool parse_num(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "dgserve: %s: '%s' is not a number in [%g, %g]\n", flag, s, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv) {
    app a = { .o = { .host = "127.0.0.1", .port = 8080, .max_request_batch = 1024, .max_body = (size_t)64 << 20,
                     .drain_timeout_s = 30, .client_timeout_s = 30 } };
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    dgs_config cfg = { .workers = 2, .max_batch = 32, .max_delay_s = 0.002, .queue_cap = 128, .blas_threads = 1 };
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            usage(NULL);
            return 0;
        }
        if (i + 1 >= argc) return usage("a flag lacks its value, or an unknown flag");
        const char *v = argv[++i];
        double d;
        if (!strcmp(f, "--model")) a.o.model_path = v;
        else if (!strcmp(f, "--model-dir")) a.o.model_dir = v;
        else if (!strcmp(f, "--name")) name = v;
        else if (!strcmp(f, "--host")) a.o.host = v;
        else if (!strcmp(f, "--port")) {
            if (!parse_num(f, v, 0, 65535, &d)) return 2;
            a.o.port = (int)d;
        } else if (!strcmp(f, "--workers")) {
            if (!parse_num(f, v, 1, 256, &d)) return 2;
            cfg.workers = (int)d;
        } else if (!strcmp(f, "--max-batch")) {
            if (!parse_num(f, v, 1, 1 << 20, &d)) return 2;
            cfg.max_batch = (int64_t)d;
        } else if (!strcmp(f, "--max-delay-ms")) {
            if (!parse_num(f, v, 0, 10000, &d)) return 2;
            cfg.max_delay_s = d / 1000;
        } else if (!strcmp(f, "--queue")) {
            if (!parse_num(f, v, 1, 1 << 20, &d)) return 2;
            cfg.queue_cap = (int)d;
        } else if (!strcmp(f, "--max-request-batch")) {
            if (!parse_num(f, v, 1, 1 << 24, &d)) return 2;
            a.o.max_request_batch = (int64_t)d;
        } else if (!strcmp(f, "--max-body-mb")) {
            if (!parse_num(f, v, 1, 4096, &d)) return 2;
            a.o.max_body = (size_t)d << 20;
        } else if (!strcmp(f, "--client-timeout-s")) {
            if (!parse_num(f, v, 0.1, 3600, &d)) return 2;
            a.o.client_timeout_s = d;
        } else if (!strcmp(f, "--drain-timeout-s")) {
            if (!parse_num(f, v, 0, 3600, &d)) return 2;
            a.o.drain_timeout_s = d;
        } else if (!strcmp(f, "--blas-threads")) {
            if (!parse_num(f, v, 0, 256, &d)) return 2;
            cfg.blas_threads = (int)d;
        } else if (!strcmp(f, "--access-log")) {
            if (a.o.access_log && a.o.access_log != stderr) fclose(a.o.access_log);
            a.o.access_log = !strcmp(v, "-") ? stderr : fopen(v, "a");
            if (!a.o.access_log) {
                fprintf(stderr, "dgserve: --access-log: cannot open %s: %s\n", v, strerror(errno));
                return 2;
            }
        } else if (!strcmp(f, "--test-slow-ms")) {   /* tests: make each batch take this long */
            if (!parse_num(f, v, 0, 60000, &d)) return 2;
            cfg.test_slow_s = d / 1000;
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown flag %s", f);
            return usage(msg);
        }
    }
    if (!a.o.model_path == !a.o.model_dir) return usage("give one of --model PATH.onnx and --model-dir DIR");
    if (a.o.model_dir) {
        struct stat st;
        if (stat(a.o.model_dir, &st) || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "dgserve: --model-dir %s: not a directory\n", a.o.model_dir);
            return 2;
        }
    }
    if (name) snprintf(a.o.name, sizeof a.o.name, "%s", name);
    else {   /* the file's name without .onnx, or the directory's */
        char p[4096];
        snprintf(p, sizeof p, "%s", a.o.model_path ? a.o.model_path : a.o.model_dir);
        for (size_t k = strlen(p); k > 1 && p[k - 1] == '/'; k--) p[k - 1] = '\0';
        const char *b = strrchr(p, '/');
        snprintf(a.o.name, sizeof a.o.name, "%s", b ? b + 1 : p);
        char *dot = a.o.model_path ? strrchr(a.o.name, '.') : NULL;
        if (dot && dot != a.o.name) *dot = '\0';
    }
    if (!a.o.name[0] || a.o.name[strspn(a.o.name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")])
        return usage("--name: must be non-empty, of letters, digits, '_', '.' and '-' (the model file's name is the default)");
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)a.o.port) };
    if (inet_pton(AF_INET, a.o.host, &addr.sin_addr) != 1) return usage("--host: not an IPv4 address");

    pthread_mutex_init(&a.reload_mu, NULL);
    bool unchanged;
    dg_infer_model *m = load_model(&a, false, &unchanged);
    if (!m) {
        fprintf(stderr, "dgserve: %s\n", dg_last_error());
        return 1;
    }
    /* signals go to sigwait below; threads started from here inherit the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    a.s = dgs_server_new(&cfg, m);
    if (!a.s) {
        fprintf(stderr, "dgserve: %s\n", dg_last_error());
        return 1;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL,
        NULL, handle, &a, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, completed,
        &a, MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)(a.o.client_timeout_s + 0.999),
        MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "dgserve: cannot listen on %s:%d: %s\n", a.o.host, a.o.port, strerror(errno));
        dgs_server_free(a.s);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = info ? info->port : a.o.port;
    pthread_t watcher;
    bool watching = false;
    if (a.o.model_dir) {
        if (pipe(a.stop_fd) || pthread_create(&watcher, NULL, watch_main, &a)) {
            fprintf(stderr, "dgserve: --model-dir: cannot start the watcher: %s\n", strerror(errno));
            MHD_stop_daemon(d);
            dgs_server_free(a.s);
            return 1;
        }
        watching = true;
    }
    {
        dgs_model *sm = dgs_model_acquire(a.s);
        int64_t is[DG_MAX_DIMS], os[DG_MAX_DIMS];
        char b1[128], b2[128];
        int ind = dg_infer_model_input_shape(sm->m, is), ond = dg_infer_model_output_shape(sm->m, os);
        printf("dgserve: serving '%s' (input %s, output %s, %d ops) on http://%s:%d with %d workers, "
               "max batch %lld, max delay %g ms, queue %d; from %s%s\n",
               a.o.name, dgs_shape_text(is, ind, true, b1, sizeof b1), dgs_shape_text(os, ond, true, b2, sizeof b2),
               dg_infer_model_num_ops(sm->m), a.o.host, port, cfg.workers, (long long)cfg.max_batch,
               cfg.max_delay_s * 1000, cfg.queue_cap, a.served, a.o.model_dir ? " (watching its directory)" : "");
        fflush(stdout);
        dgs_model_release(a.s, sm);
    }
    int rc = 0;
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig)) continue;
        if (sig == SIGHUP) {
            reload(&a, "SIGHUP", false);
            continue;
        }
        printf("dgserve: %s: draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        fflush(stdout);
        MHD_socket ls = MHD_quiesce_daemon(d);   /* no new connections */
        if (ls != MHD_INVALID_SOCKET) close(ls);
        dgs_start_drain(a.s);
        double deadline = dgs_now() + a.o.drain_timeout_s;
        if (!wait_no_active(&a, deadline) || !dgs_wait_idle(a.s, deadline - dgs_now())) {
            fprintf(stderr, "dgserve: drain timed out after %g s with requests left\n", a.o.drain_timeout_s);
            rc = 1;
        }
        break;
    }
    if (watching) {
        if (write(a.stop_fd[1], "x", 1) != 1) DG_ASSERT(!"cannot wake the watcher");
        pthread_join(watcher, NULL);
    }
    MHD_stop_daemon(d);   /* waits for the connection threads, which have their answers */
    dgs_server_free(a.s);
    if (a.o.access_log && a.o.access_log != stderr) fclose(a.o.access_log);
    printf("dgserve: stopped\n");
    return rc;
}
