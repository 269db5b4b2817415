/* timeline.c - spans in memory, written as a Chrome trace at close. */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/timeline.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DEPTH 16
#define MAX_LANES 65536

typedef struct {
    int64_t ts, dur;    /* microseconds */
    int32_t name;       /* index into names */
    int32_t lane;
} event;

typedef struct {
    int depth;
    bool used;
    int64_t start[MAX_DEPTH];
    int32_t name[MAX_DEPTH];
} lane_state;

struct dg_timeline {
    FILE *f;
    char *path;
    int rank;
    int64_t wall0_us, mono0_us;
    event *ev;
    size_t nev, cap;
    char **names;               /* interned names */
    int32_t nnames, names_cap;
    int32_t *slots;             /* open-addressing hash: name index or -1 */
    size_t nslots;              /* power of two, > 2 * nnames */
    lane_state *lanes;
    int nlanes;
    size_t lost;                /* events dropped for lack of memory */
};

static int64_t clock_us(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t dg_timeline_now_us(const dg_timeline *tl) {
    if (!tl) return 0;
    return tl->wall0_us + (clock_us(CLOCK_MONOTONIC) - tl->mono0_us);
}

size_t dg_timeline_num_events(const dg_timeline *tl) { return tl ? tl->nev : 0; }

dg_status dg_timeline_open(dg_timeline **out, const char *path, int rank) {
    *out = NULL;
    if (!path || !path[0]) return dg_set_error("dg_timeline_open: empty path");
    if (rank < 0) return dg_set_error("dg_timeline_open: negative rank %d", rank);
    dg_timeline *tl = calloc(1, sizeof *tl);
    if (!tl) return dg_set_error("dg_timeline_open: out of memory");
    tl->rank = rank;
    tl->path = malloc(strlen(path) + 1);
    tl->nslots = 64;
    tl->slots = malloc(sizeof(int32_t) * tl->nslots);
    if (!tl->path || !tl->slots) {
        dg_timeline_close(tl);
        return dg_set_error("dg_timeline_open: out of memory");
    }
    strcpy(tl->path, path);
    memset(tl->slots, 0xFF, sizeof(int32_t) * tl->nslots);   /* -1: empty */
    tl->f = fopen(path, "w");
    if (!tl->f) {
        dg_set_error("dg_timeline_open: cannot create '%s': %s", path, strerror(errno));
        dg_timeline_close(tl);
        return DG_ERR;
    }
    tl->wall0_us = clock_us(CLOCK_REALTIME);
    tl->mono0_us = clock_us(CLOCK_MONOTONIC);
    *out = tl;
    return DG_OK;
}

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static bool rehash(dg_timeline *tl, size_t nslots) {
    int32_t *s = malloc(sizeof(int32_t) * nslots);
    if (!s) return false;
    memset(s, 0xFF, sizeof(int32_t) * nslots);
    for (int32_t i = 0; i < tl->nnames; i++) {
        size_t j = hash_str(tl->names[i]) & (nslots - 1);
        while (s[j] >= 0) j = (j + 1) & (nslots - 1);
        s[j] = i;
    }
    free(tl->slots);
    tl->slots = s;
    tl->nslots = nslots;
    return true;
}

/* name's index, added on first use; -1 when out of memory */
static int32_t intern(dg_timeline *tl, const char *name) {
    if (!name) name = "";
    uint64_t h = hash_str(name);
    size_t j = h & (tl->nslots - 1);
    for (; tl->slots[j] >= 0; j = (j + 1) & (tl->nslots - 1))
        if (!strcmp(tl->names[tl->slots[j]], name)) return tl->slots[j];
    /* new name: keep the table at most half full (a full one would loop) */
    if ((size_t)(tl->nnames + 1) * 2 > tl->nslots) {
        if (!rehash(tl, tl->nslots * 2)) return -1;
        for (j = h & (tl->nslots - 1); tl->slots[j] >= 0; j = (j + 1) & (tl->nslots - 1)) {}
    }
    if (tl->nnames == tl->names_cap) {
        int32_t cap = tl->names_cap ? 2 * tl->names_cap : 16;
        char **n = realloc(tl->names, sizeof(char *) * (size_t)cap);
        if (!n) return -1;
        tl->names = n;
        tl->names_cap = cap;
    }
    char *copy = malloc(strlen(name) + 1);
    if (!copy) return -1;
    strcpy(copy, name);
    int32_t id = tl->nnames++;
    tl->names[id] = copy;
    tl->slots[j] = id;
    return id;
}

static lane_state *get_lane(dg_timeline *tl, int lane) {
    DG_ASSERT(lane >= 0 && lane < MAX_LANES);
    if (lane >= tl->nlanes) {
        int n = tl->nlanes ? tl->nlanes : 4;
        while (n <= lane) n *= 2;
        lane_state *l = realloc(tl->lanes, sizeof *l * (size_t)n);
        if (!l) return NULL;
        memset(l + tl->nlanes, 0, sizeof *l * (size_t)(n - tl->nlanes));
        tl->lanes = l;
        tl->nlanes = n;
    }
    return &tl->lanes[lane];
}

static void push_event(dg_timeline *tl, int32_t name, int lane, int64_t ts, int64_t dur) {
    if (tl->nev == tl->cap) {
        size_t cap = tl->cap ? 2 * tl->cap : 4096;
        event *e = realloc(tl->ev, sizeof *e * cap);
        if (!e) {
            tl->lost++;
            return;
        }
        tl->ev = e;
        tl->cap = cap;
    }
    tl->ev[tl->nev++] = (event){ .ts = ts, .dur = dur < 0 ? 0 : dur, .name = name, .lane = lane };
}

void dg_timeline_begin(dg_timeline *tl, const char *name, int lane) {
    if (!tl) return;
    lane_state *l = get_lane(tl, lane);
    int32_t id = intern(tl, name);
    if (!l || id < 0) {
        tl->lost++;
        return;
    }
    DG_ASSERT(l->depth < MAX_DEPTH);
    l->used = true;
    l->name[l->depth] = id;
    l->start[l->depth++] = dg_timeline_now_us(tl);
}

void dg_timeline_end(dg_timeline *tl, int lane) {
    if (!tl) return;
    int64_t t = dg_timeline_now_us(tl);
    if (lane < 0 || lane >= tl->nlanes || tl->lanes[lane].depth == 0) return;
    lane_state *l = &tl->lanes[lane];
    l->depth--;
    push_event(tl, l->name[l->depth], lane, l->start[l->depth], t - l->start[l->depth]);
}

void dg_timeline_complete(dg_timeline *tl, const char *name, int lane, int64_t ts_us, int64_t dur_us) {
    if (!tl) return;
    lane_state *l = get_lane(tl, lane);
    int32_t id = intern(tl, name);
    if (!l || id < 0) {
        tl->lost++;
        return;
    }
    l->used = true;
    push_event(tl, id, lane, ts_us, dur_us);
}

static void put_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static const char *lane_category(int lane) {
    return lane == DG_TIMELINE_COMPUTE ? "compute" : lane == DG_TIMELINE_DATA ? "data" : "comm";
}

static void write_trace(dg_timeline *tl) {
    FILE *f = tl->f;
    fprintf(f, "{\"traceEvents\": [\n");
    fprintf(f, "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, \"args\": {\"name\": \"rank %d\"}},\n",
            tl->rank, tl->rank);
    fprintf(f, "{\"name\": \"process_sort_index\", \"ph\": \"M\", \"pid\": %d, \"args\": {\"sort_index\": %d}}",
            tl->rank, tl->rank);
    for (int i = 0; i < tl->nlanes; i++) {
        if (!tl->lanes[i].used) continue;
        char lname[32];
        if (i < DG_TIMELINE_COMM) snprintf(lname, sizeof lname, "%s", lane_category(i));
        else if (i == DG_TIMELINE_COMM) snprintf(lname, sizeof lname, "comm");
        else snprintf(lname, sizeof lname, "comm %d", i - DG_TIMELINE_COMM);
        fprintf(f, ",\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": %d, "
                   "\"args\": {\"name\": \"%s\"}}", tl->rank, i, lname);
        fprintf(f, ",\n{\"name\": \"thread_sort_index\", \"ph\": \"M\", \"pid\": %d, \"tid\": %d, "
                   "\"args\": {\"sort_index\": %d}}", tl->rank, i, i);
    }
    for (size_t i = 0; i < tl->nev; i++) {
        const event *e = &tl->ev[i];
        fputs(",\n{\"name\": ", f);
        put_json_string(f, tl->names[e->name]);
        fprintf(f, ", \"cat\": \"%s\", \"ph\": \"X\", \"ts\": %lld, \"dur\": %lld, \"pid\": %d, \"tid\": %d}",
                lane_category(e->lane), (long long)e->ts, (long long)e->dur, tl->rank, (int)e->lane);
    }
    fprintf(f, "\n], \"displayTimeUnit\": \"ms\"}\n");
}

dg_status dg_timeline_close(dg_timeline *tl) {
    if (!tl) return DG_OK;
    dg_status st = DG_OK;
    if (tl->f) {
        write_trace(tl);
        bool bad = ferror(tl->f) != 0;
        if (fclose(tl->f) != 0) bad = true;
        if (bad) st = dg_set_error("dg_timeline_close: writing '%s' failed", tl->path);
        else if (tl->lost)
            st = dg_set_error("dg_timeline_close: out of memory, %zu events of '%s' lost", tl->lost, tl->path);
    }
    for (int32_t i = 0; i < tl->nnames; i++) free(tl->names[i]);
    free(tl->names);
    free(tl->slots);
    free(tl->lanes);
    free(tl->ev);
    free(tl->path);
    free(tl);
    return st;
}
