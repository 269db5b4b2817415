/* flags.c - command-line flags from tables (dgrad/train.h): parsing,
 * range checks, one-line errors and the --help text. */
#include "dgrad/train.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool takes_value(const dg_flag *f) { return f->kind != DG_FLAG_SET && f->kind != DG_FLAG_CLEAR; }

static void *field(const dg_flag_table *t, const dg_flag *f) { return (char *)t->target + f->offset; }

static const void *default_field(const dg_flag_table *t, const dg_flag *f) {
    return (const char *)(t->defaults ? t->defaults : t->target) + f->offset;
}

/* "adam, adamw or sgd" */
static void choice_list(char *buf, size_t n, const char *const *choices) {
    buf[0] = '\0';
    for (int i = 0; choices && choices[i]; i++) {
        size_t l = strlen(buf);
        const char *sep = i == 0 ? "" : choices[i + 1] ? ", " : " or ";
        snprintf(buf + l, n - l, "%s%s", sep, choices[i]);
    }
}

/* What a value of f must be, for errors. */
static void expectation(char *buf, size_t n, const dg_flag *f) {
    if (f->expect) {
        snprintf(buf, n, "%s", f->expect);
        return;
    }
    switch (f->kind) {
    case DG_FLAG_INT: case DG_FLAG_I64: case DG_FLAG_U64:
        snprintf(buf, n, "an integer >= %.0f", f->lo);
        break;
    case DG_FLAG_FLOAT: case DG_FLAG_DOUBLE:
        snprintf(buf, n, "a number > %g", f->lo);
        break;
    case DG_FLAG_CHOICE:
        choice_list(buf, n, f->choices);
        break;
    default:
        snprintf(buf, n, "a path");
    }
}

/* Stores v into f's field; false if v is not a valid value. */
static bool store(const dg_flag_table *t, const dg_flag *f, const char *v) {
    void *dst = field(t, f);
    char *end;
    errno = 0;
    switch (f->kind) {
    case DG_FLAG_INT: case DG_FLAG_I64: case DG_FLAG_U64: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || (double)x < f->lo || (double)x > f->hi) return false;
        if (f->kind == DG_FLAG_INT) *(int *)dst = (int)x;
        else if (f->kind == DG_FLAG_I64) *(int64_t *)dst = x;
        else *(uint64_t *)dst = (uint64_t)x;
        return true;
    }
    case DG_FLAG_FLOAT: case DG_FLAG_DOUBLE: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !(x > f->lo) || !(x <= f->hi)) return false;
        if (f->kind == DG_FLAG_FLOAT) *(float *)dst = (float)x;
        else *(double *)dst = x;
        return true;
    }
    case DG_FLAG_PATH:
        if (!v[0]) return false;
        *(const char **)dst = v;
        return true;
    case DG_FLAG_STRING:
        *(const char **)dst = v;
        return true;
    case DG_FLAG_CHOICE:
        for (int i = 0; f->choices && f->choices[i]; i++)
            if (!strcmp(v, f->choices[i])) {
                *(const char **)dst = f->choices[i];
                return true;
            }
        return false;
    case DG_FLAG_SET: case DG_FLAG_CLEAR:
        break;
    }
    DG_ASSERT(!"flag kind without a value");
    return false;
}

static bool find(const dg_flag_table *tables, int ntables, const char *name, const dg_flag_table **t,
                 const dg_flag **f) {
    for (int k = 0; k < ntables; k++)
        for (int i = 0; i < tables[k].count; i++)
            if (!strcmp(tables[k].flags[i].name, name)) {
                *t = &tables[k];
                *f = &tables[k].flags[i];
                return true;
            }
    return false;
}

int dg_flags_parse(const dg_flag_table *tables, int ntables, int argc, char **argv, const char *prog,
                   const char *usage_head) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            dg_flags_help(stdout, tables, ntables, prog, usage_head);
            return -1;
        }
        const dg_flag_table *t;
        const dg_flag *f;
        if (!find(tables, ntables, a, &t, &f)) {
            fprintf(stderr, "%s: unknown flag '%s' (see --help)\n", prog, a);
            return 2;
        }
        if (!takes_value(f)) {
            *(bool *)field(t, f) = f->kind == DG_FLAG_SET;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: flag %s needs a value\n", prog, a);
            return 2;
        }
        const char *v = argv[++i];
        if (!store(t, f, v)) {
            char want[160];
            expectation(want, sizeof want, f);
            fprintf(stderr, "%s: invalid value '%s' for %s (expected %s)\n", prog, v, a, want);
            return 2;
        }
    }
    return 0;
}

/* " (default 64)", or "" when there is nothing to say: also when a
 * numeric default lies outside the flag's range, where it stands for
 * "not given" (--limit-train's 0: every sample) and could not be passed. */
static void default_text(char *buf, size_t n, const dg_flag_table *t, const dg_flag *f) {
    const void *d = default_field(t, f);
    buf[0] = '\0';
    double v = 0.0;
    bool numeric = true, closed = true;
    switch (f->kind) {
    case DG_FLAG_INT: v = *(const int *)d; break;
    case DG_FLAG_I64: v = (double)*(const int64_t *)d; break;
    case DG_FLAG_U64: v = (double)*(const uint64_t *)d; break;
    case DG_FLAG_FLOAT: v = *(const float *)d; closed = false; break;
    case DG_FLAG_DOUBLE: v = *(const double *)d; closed = false; break;
    default: numeric = false;
    }
    if (numeric && (v > f->hi || (closed ? v < f->lo : v <= f->lo))) return;
    switch (f->kind) {
    case DG_FLAG_INT: snprintf(buf, n, " (default %d)", *(const int *)d); break;
    case DG_FLAG_I64: snprintf(buf, n, " (default %lld)", (long long)*(const int64_t *)d); break;
    case DG_FLAG_U64: snprintf(buf, n, " (default %llu)", (unsigned long long)*(const uint64_t *)d); break;
    case DG_FLAG_FLOAT: snprintf(buf, n, " (default %g)", (double)*(const float *)d); break;
    case DG_FLAG_DOUBLE: snprintf(buf, n, " (default %g)", *(const double *)d); break;
    case DG_FLAG_PATH: case DG_FLAG_STRING: case DG_FLAG_CHOICE: {
        const char *s = *(const char *const *)d;
        if (s) snprintf(buf, n, " (default %s)", s);
        break;
    }
    case DG_FLAG_SET: if (*(const bool *)d) snprintf(buf, n, " (on by default)"); break;
    case DG_FLAG_CLEAR: break;
    }
}

void dg_flags_help(FILE *out, const dg_flag_table *tables, int ntables, const char *prog,
                   const char *usage_head) {
    fprintf(out, "usage: %s [flags]\n", prog);
    if (usage_head) fprintf(out, "%s\n", usage_head);
    fprintf(out, "\nflags:\n");
    for (int k = 0; k < ntables; k++)
        for (int i = 0; i < tables[k].count; i++) {
            const dg_flag *f = &tables[k].flags[i];
            char head[96], def[96], choices[160] = "";
            snprintf(head, sizeof head, "%s%s%s", f->name, f->metavar ? " " : "", f->metavar ? f->metavar : "");
            default_text(def, sizeof def, &tables[k], f);
            if (f->kind == DG_FLAG_CHOICE) {
                char list[128];
                choice_list(list, sizeof list, f->choices);
                snprintf(choices, sizeof choices, " [%s]", list);
            }
            fprintf(out, "  %-22s", head);
            if (strlen(head) > 22) fprintf(out, "\n  %-22s", "");
            /* continuation lines of the help keep the column */
            for (const char *h = f->help ? f->help : ""; *h; h++) {
                fputc(*h, out);
                if (*h == '\n') fprintf(out, "  %-22s", "");
            }
            fprintf(out, "%s%s\n", choices, def);
        }
}
