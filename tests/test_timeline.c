/* test_timeline.c - Chrome trace output of dgrad/timeline.h: nested and
 * overlapping spans, lanes, escaping, growth past the first buffer, bad
 * paths. The file has one event per line, which the checks rely on;
 * tests/cmake/see.cmake also parses it with python3's json module.
 *
 *   test_timeline [PATH]   writes the trace to PATH (default: a temp file,
 *                          removed at the end)
 */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/timeline.h"
#include "test_util.h"

#include <time.h>
#include <unistd.h>

#define NMANY 20000

typedef struct {
    char name[64];
    long long ts, dur;
    int pid, tid;
} ev;

/* The "X" events of the file, in order. */
static int read_events(const char *path, ev *out, int cap) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"ph\": \"X\"")) continue;
        ev e;
        const char *q = strstr(line, "\"name\": \"");
        CHECK(q != NULL);
        if (!q) continue;
        q += 9;
        size_t k = 0;
        while (*q && !(*q == '"' && q[-1] != '\\') && k + 1 < sizeof e.name) e.name[k++] = *q++;
        e.name[k] = '\0';
        const char *t = strstr(line, "\"ts\": ");
        CHECK(t && sscanf(t, "\"ts\": %lld, \"dur\": %lld, \"pid\": %d, \"tid\": %d", &e.ts, &e.dur, &e.pid,
                          &e.tid) == 4);
        if (n < cap) out[n] = e;
        n++;
    }
    fclose(f);
    return n;
}

static void spin_us(dg_timeline *tl, int64_t us) {
    int64_t t0 = dg_timeline_now_us(tl);
    while (dg_timeline_now_us(tl) - t0 < us) {}
}

int main(int argc, char **argv) {
    char tmp[] = "/tmp/dg_timeline_XXXXXX";
    const char *path = argc > 1 ? argv[1] : tmp;
    if (argc <= 1) {
        int fd = mkstemp(tmp);
        CHECK(fd >= 0);
        if (fd >= 0) close(fd);
    }

    /* NULL is a no-op everywhere */
    dg_timeline_begin(NULL, "x", 0);
    dg_timeline_end(NULL, 0);
    dg_timeline_complete(NULL, "x", 0, 0, 1);
    CHECK_EQ_INT(dg_timeline_now_us(NULL), 0);
    CHECK(dg_timeline_close(NULL) == DG_OK);

    dg_timeline *tl = NULL;
    CHECK(dg_timeline_open(&tl, path, 3) == DG_OK);
    if (!tl) return dgt_report("test_timeline");
    int64_t t_open = dg_timeline_now_us(tl);
    CHECKF(llabs((long long)(t_open / 1000000 - (int64_t)time(NULL))) < 5, "clock is wall-clock us");

    /* step: data, then forward; backward with two overlapping comm spans */
    dg_timeline_begin(tl, "data", DG_TIMELINE_DATA);
    spin_us(tl, 200);
    dg_timeline_end(tl, DG_TIMELINE_DATA);
    dg_timeline_begin(tl, "step", DG_TIMELINE_COMPUTE);
    dg_timeline_begin(tl, "forward", DG_TIMELINE_COMPUTE);
    spin_us(tl, 200);
    dg_timeline_end(tl, DG_TIMELINE_COMPUTE);
    dg_timeline_begin(tl, "backward", DG_TIMELINE_COMPUTE);
    spin_us(tl, 100);
    dg_timeline_begin(tl, "allreduce", DG_TIMELINE_COMM + 0);
    spin_us(tl, 100);
    dg_timeline_begin(tl, "allreduce", DG_TIMELINE_COMM + 1);
    spin_us(tl, 100);
    dg_timeline_end(tl, DG_TIMELINE_COMPUTE);       /* backward */
    dg_timeline_end(tl, DG_TIMELINE_COMM + 0);
    dg_timeline_end(tl, DG_TIMELINE_COMM + 1);
    dg_timeline_end(tl, DG_TIMELINE_COMPUTE);       /* step */
    dg_timeline_end(tl, DG_TIMELINE_COMPUTE);       /* nothing open: ignored */
    dg_timeline_end(tl, 40);                        /* unknown lane: ignored */
    dg_timeline_complete(tl, "say \"hi\"\\\n", DG_TIMELINE_DATA, t_open, 5);
    dg_timeline_begin(tl, "left open", DG_TIMELINE_DATA);   /* dropped at close */
    CHECK_EQ_INT(dg_timeline_num_events(tl), 7);
    /* many events: the buffer grows; names are interned */
    for (int i = 0; i < NMANY; i++) {
        dg_timeline_begin(tl, i % 2 ? "odd" : "even", DG_TIMELINE_COMM + 5);
        dg_timeline_end(tl, DG_TIMELINE_COMM + 5);
    }
    CHECK_EQ_INT(dg_timeline_num_events(tl), 7 + NMANY);
    CHECK(dg_timeline_close(tl) == DG_OK);

    static ev e[NMANY + 16];
    int n = read_events(path, e, NMANY + 16);
    CHECK_EQ_INT(n, 7 + NMANY);
    if (n == 7 + NMANY) {
        /* in order of their ends */
        const char *names[] = { "data", "forward", "backward", "allreduce", "allreduce", "step", "say \\\"hi\\\"\\\\\\u000a" };
        int tids[] = { 1, 0, 0, 2, 3, 0, 1 };
        for (int i = 0; i < 7; i++) {
            CHECKF(!strcmp(e[i].name, names[i]), "event %d: name %s, want %s", i, e[i].name, names[i]);
            CHECK_EQ_INT(e[i].tid, tids[i]);
            CHECK_EQ_INT(e[i].pid, 3);
        }
        ev *data = &e[0], *fwd = &e[1], *bwd = &e[2], *ar0 = &e[3], *ar1 = &e[4], *step = &e[5];
        CHECK(data->dur >= 200 && fwd->dur >= 200 && bwd->dur >= 300);
        CHECK(fwd->ts >= data->ts + data->dur);
        /* nesting on the compute lane */
        CHECK(step->ts <= fwd->ts && fwd->ts + fwd->dur <= bwd->ts);
        CHECK(bwd->ts + bwd->dur <= step->ts + step->dur);
        /* the all-reduces start during backward and end after it */
        CHECK(ar0->ts > bwd->ts && ar0->ts < bwd->ts + bwd->dur && ar0->ts + ar0->dur >= bwd->ts + bwd->dur);
        CHECK(ar1->ts > ar0->ts && ar1->ts + ar1->dur >= ar0->ts + ar0->dur);
        CHECK(e[6].ts == t_open && e[6].dur == 5);
        CHECK(!strcmp(e[7].name, "even") && !strcmp(e[8].name, "odd") && e[8].tid == 7);
    }
    FILE *f = fopen(path, "r");
    char all[4096] = "";
    if (f) {
        size_t k = fread(all, 1, sizeof all - 1, f);
        all[k] = '\0';
        fclose(f);
    }
    CHECK(strncmp(all, "{\"traceEvents\": [", 17) == 0);
    CHECK_CONTAINS(all, "\"args\": {\"name\": \"rank 3\"}");
    CHECK_CONTAINS(all, "\"tid\": 0, \"args\": {\"name\": \"compute\"}");
    CHECK_CONTAINS(all, "\"tid\": 1, \"args\": {\"name\": \"data\"}");
    CHECK_CONTAINS(all, "\"tid\": 2, \"args\": {\"name\": \"comm\"}");
    CHECK_CONTAINS(all, "\"tid\": 3, \"args\": {\"name\": \"comm 1\"}");
    CHECK(!strstr(all, "left open"));

    /* a path that cannot be created: the message names it */
    tl = (dg_timeline *)1;
    CHECK(dg_timeline_open(&tl, "/nonexistent-dir/trace.json", 0) == DG_ERR && tl == NULL);
    CHECK_CONTAINS(dg_last_error(), "/nonexistent-dir/trace.json");
    dg_clear_error();
    CHECK(dg_timeline_open(&tl, "x.json", -1) == DG_ERR);
    dg_clear_error();

    if (argc <= 1) unlink(tmp);
    return dgt_report("test_timeline");
}
