/* progress.c - the progress bar and log lines of dgrad/progress.h. */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/progress.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 20
#define FRAME_INTERVAL 0.1   /* seconds between frames */

struct dg_progress {
    FILE *out;
    dg_progress_mode mode;
    double (*clock)(void *user);
    void *clock_user;
    int epoch, epochs;
    int64_t steps, step, samples;
    double loss_sum;
    double t_start, t_frame;
    bool drawn;                 /* a bar is on the current line */
    size_t frame_len;           /* its length, to blank it out */
};

static double mono_clock(void *user) {
    (void)user;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

dg_status dg_progress_new(dg_progress **out, FILE *stream, dg_progress_mode mode) {
    *out = NULL;
    if (!stream) return dg_set_error("dg_progress_new: NULL stream");
    if (mode == DG_PROGRESS_AUTO) {
        const char *env = getenv("DG_PROGRESS");
        if (env && env[0]) {
            if (!strcmp(env, "bar")) mode = DG_PROGRESS_BAR;
            else if (!strcmp(env, "lines")) mode = DG_PROGRESS_LINES;
            else if (!strcmp(env, "quiet")) mode = DG_PROGRESS_QUIET;
            else return dg_set_error("DG_PROGRESS='%s': expected bar, lines or quiet", env);
        } else {
            /* Open MPI hands its ranks a pseudo-terminal for stdout whether
             * or not mpirun's own output goes to one: no bar there */
            bool ompi = getenv("OMPI_COMM_WORLD_SIZE") != NULL;
            mode = isatty(fileno(stream)) && !ompi ? DG_PROGRESS_BAR : DG_PROGRESS_LINES;
        }
    }
    dg_progress *p = calloc(1, sizeof *p);
    if (!p) return dg_set_error("dg_progress_new: out of memory");
    p->out = stream;
    p->mode = mode;
    p->clock = mono_clock;
    *out = p;
    return DG_OK;
}

/* blank out the bar and go back to the line's start */
static void clear_bar(dg_progress *p) {
    if (!p->drawn) return;
    fprintf(p->out, "\r%*s\r", (int)p->frame_len, "");
    p->drawn = false;
    p->frame_len = 0;
}

void dg_progress_free(dg_progress *p) {
    if (!p) return;
    if (p->drawn) {
        fputc('\n', p->out);   /* keep the last frame */
        fflush(p->out);
    }
    free(p);
}

dg_progress_mode dg_progress_get_mode(const dg_progress *p) { return p->mode; }

void dg_progress_set_clock(dg_progress *p, double (*clock)(void *user), void *user) {
    p->clock = clock ? clock : mono_clock;
    p->clock_user = user;
}

void dg_progress_start_epoch(dg_progress *p, int epoch, int epochs, int64_t steps) {
    p->epoch = epoch;
    p->epochs = epochs;
    p->steps = steps > 0 ? steps : 0;
    p->step = p->samples = 0;
    p->loss_sum = 0.0;
    p->t_start = p->clock(p->clock_user);
    p->t_frame = -INFINITY;
}

char *dg_progress_format_duration(char *buf, size_t size, double seconds) {
    if (!(seconds >= 0.0) || !isfinite(seconds) || seconds > 1e9) {
        snprintf(buf, size, "?");
        return buf;
    }
    long long s = (long long)(seconds + 0.5);
    if (s < 3600) snprintf(buf, size, "%lld:%02lld", s / 60, s % 60);
    else snprintf(buf, size, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    return buf;
}

static void draw(dg_progress *p, double now) {
    double elapsed = now - p->t_start;
    char bar[BAR_WIDTH + 1], eta[32], line[256];
    int fill = p->steps ? (int)((double)BAR_WIDTH * (double)p->step / (double)p->steps) : 0;
    if (fill > BAR_WIDTH) fill = BAR_WIDTH;
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(BAR_WIDTH - fill));
    bar[BAR_WIDTH] = '\0';
    if (p->steps && p->step > 0)
        dg_progress_format_duration(eta, sizeof eta,
                                    elapsed / (double)p->step * (double)(p->steps - p->step));
    else
        snprintf(eta, sizeof eta, "?");
    double rate = elapsed > 0.0 ? (double)p->samples / elapsed : 0.0;
    int n;
    if (p->steps)
        n = snprintf(line, sizeof line, "epoch %d/%d [%s] %*lld/%lld  loss %.4f  %.0f samples/s  ETA %s",
                     p->epoch + 1, p->epochs, bar, (int)snprintf(NULL, 0, "%lld", (long long)p->steps),
                     (long long)p->step, (long long)p->steps, p->loss_sum / (double)p->step, rate, eta);
    else
        n = snprintf(line, sizeof line, "epoch %d/%d  step %lld  loss %.4f  %.0f samples/s",
                     p->epoch + 1, p->epochs, (long long)p->step, p->loss_sum / (double)p->step, rate);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof line ? sizeof line - 1 : (size_t)n;
    /* pad with blanks over a longer previous frame */
    fprintf(p->out, "\r%s%*s", line, p->frame_len > len ? (int)(p->frame_len - len) : 0, "");
    fflush(p->out);
    p->drawn = true;
    p->frame_len = len;
    p->t_frame = now;
}

void dg_progress_step(dg_progress *p, double loss, int64_t samples) {
    p->step++;
    p->samples += samples;
    p->loss_sum += loss;
    if (p->mode != DG_PROGRESS_BAR) return;
    double now = p->clock(p->clock_user);
    if (now - p->t_frame >= FRAME_INTERVAL || p->step == p->steps) draw(p, now);
}

void dg_progress_log(dg_progress *p, const char *fmt, ...) {
    if (p->mode == DG_PROGRESS_QUIET) return;
    clear_bar(p);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->out, fmt, ap);
    va_end(ap);
    fputc('\n', p->out);
    fflush(p->out);
}
