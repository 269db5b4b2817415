/* fixture.h - the text fixtures that tests/fixtures/make_*fixtures.py write:
 * a parser shared by the PyTorch reference tests. Include once per test. */
#ifndef DG_TEST_FIXTURE_H
#define DG_TEST_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dgrad/tensor.h"


#define FX_MAX_TENSORS 24
#define FX_MAX_ARGS 16

typedef struct {
    char key[16];
    bool is_int;
    int ndim;
    int64_t shape[DG_MAX_DIMS];
    int64_t n;
    float *f;       /* float values (ints converted too) */
    int32_t *i;     /* int values when is_int */
} fx_tensor;

typedef struct {
    char name[64], op[48];
    int nargs;
    char argk[FX_MAX_ARGS][24], argv[FX_MAX_ARGS][96];
    int nt;
    fx_tensor t[FX_MAX_TENSORS];
} fx_case;

static void fx_case_free(fx_case *c) {
    for (int i = 0; i < c->nt; i++) {
        free(c->t[i].f);
        free(c->t[i].i);
    }
    memset(c, 0, sizeof *c);
}

static int fx_token(FILE *f, char *buf, size_t n) {
    for (;;) {
        if (fscanf(f, "%*[ \t\r\n]") == EOF) return 0;
        int ch = getc(f);
        if (ch == EOF) return 0;
        if (ch == '#') {                   /* comment to end of line */
            while ((ch = getc(f)) != EOF && ch != '\n') {}
            continue;
        }
        ungetc(ch, f);
        char fmt[16];
        snprintf(fmt, sizeof fmt, "%%%zus", n - 1);
        return fscanf(f, fmt, buf) == 1;
    }
}

/* Reads the next case; returns 1, 0 at end of file, -1 on a format error. */
static int fx_read_case(FILE *f, fx_case *c) {
    char tok[128];
    memset(c, 0, sizeof *c);
    if (!fx_token(f, tok, sizeof tok)) return 0;
    if (strcmp(tok, "case") != 0) return -1;
    if (!fx_token(f, c->name, sizeof c->name) || !fx_token(f, c->op, sizeof c->op))
        return -1;
    for (;;) {
        if (!fx_token(f, tok, sizeof tok)) return -1;
        if (strcmp(tok, "end") == 0) return 1;
        char *eq = strchr(tok, '=');
        if (eq) {
            if (c->nargs == FX_MAX_ARGS) return -1;
            *eq = '\0';
            snprintf(c->argk[c->nargs], sizeof c->argk[0], "%.23s", tok);
            snprintf(c->argv[c->nargs], sizeof c->argv[0], "%.95s", eq + 1);
            c->nargs++;
            continue;
        }
        if (strcmp(tok, "t") != 0 || c->nt == FX_MAX_TENSORS) return -1;
        fx_tensor *t = &c->t[c->nt++];
        char kind[8];
        if (!fx_token(f, t->key, sizeof t->key) || !fx_token(f, kind, sizeof kind)) return -1;
        t->is_int = kind[0] == 'i';
        if (fscanf(f, "%d", &t->ndim) != 1 || t->ndim < 0 || t->ndim > DG_MAX_DIMS) return -1;
        t->n = 1;
        for (int d = 0; d < t->ndim; d++) {
            long long v;
            if (fscanf(f, "%lld", &v) != 1) return -1;
            t->shape[d] = v;
            t->n *= v;
        }
        t->f = malloc(sizeof(float) * (size_t)(t->n ? t->n : 1));
        t->i = t->is_int ? malloc(sizeof(int32_t) * (size_t)(t->n ? t->n : 1)) : NULL;
        if (!t->f || (t->is_int && !t->i)) return -1;
        for (int64_t k = 0; k < t->n; k++) {
            if (t->is_int) {
                int v;
                if (fscanf(f, "%d", &v) != 1) return -1;
                t->i[k] = v;
                t->f[k] = (float)v;
            } else if (fscanf(f, "%f", &t->f[k]) != 1) {
                return -1;
            }
        }
    }
}

static const fx_tensor *fx_get(const fx_case *c, const char *key) {
    for (int i = 0; i < c->nt; i++)
        if (strcmp(c->t[i].key, key) == 0) return &c->t[i];
    return NULL;
}

static const char *fx_arg(const fx_case *c, const char *key) {
    for (int i = 0; i < c->nargs; i++)
        if (strcmp(c->argk[i], key) == 0) return c->argv[i];
    return NULL;
}

static double fx_argf(const fx_case *c, const char *key, double def) {
    const char *v = fx_arg(c, key);
    return v ? strtod(v, NULL) : def;
}

static int fx_argi(const fx_case *c, const char *key, int def) {
    const char *v = fx_arg(c, key);
    return v ? (int)strtol(v, NULL, 10) : def;
}

/* Comma-separated ints; returns the count. */
static int fx_argv_ints(const fx_case *c, const char *key, int64_t *out, int max) {
    const char *v = fx_arg(c, key);
    int n = 0;
    while (v && *v && n < max) {
        char *end;
        out[n++] = strtoll(v, &end, 10);
        v = *end == ',' ? end + 1 : end;
        if (end == v && *v) break;
    }
    return n;
}

static FILE *fx_open(const char *file) {
    const char *dir = getenv("DG_FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/fixtures", file);
    FILE *f = fopen(path, "r");
    if (!f) fprintf(stderr, "cannot open fixture %s (set DG_FIXTURES)\n", path);
    return f;
}

#endif /* DG_TEST_FIXTURE_H */
