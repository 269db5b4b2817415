/* test_train_api.c - bad input to libdgrad_train (dgrad/train.h) and to the
 * dataset interface: each case must return its exit code and print one
 * line on stderr that names the culprit, never crash. Also the CSV loader
 * and a custom dataset, and the flag table on its own. */
#define _POSIX_C_SOURCE 200809L
#include "dgrad/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
static char tmpdir[] = "/tmp/dg_train_api_XXXXXX";

#define CHECK(cond, ...)                                     \
    do {                                                     \
        if (!(cond)) {                                       \
            fprintf(stdout, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stdout, __VA_ARGS__);                    \
            fprintf(stdout, "\n");                           \
            failures++;                                      \
        }                                                    \
    } while (0)

/* ---- a tiny custom dataset: 64 points in 2 classes ---------------------- */
typedef struct {
    int bad_label;      /* return this label for sample 5 */
    int out_features;   /* the model's output width */
} cfg;

static dg_status tiny_get(const dg_dataset *ds, int64_t i, float *x, int32_t *y) {
    const cfg *c = ds->user;
    x[0] = (float)(i % 2) - 0.5f;
    x[1] = (float)(i % 7) / 7.0f;
    *y = (int32_t)(i % 2);
    if (c && c->bad_label && i == 5) *y = c->bad_label;
    return DG_OK;
}

static cfg g_cfg;
static int g_shape_mismatch;

static dg_status tiny_data(const dg_train_opts *o, dg_dataset *train, dg_dataset *test, void *user) {
    (void)o; (void)user;
    dg_dataset d = { .n = 64, .sample_size = 2, .ndim_sample = 1, .sample_shape = { 2 }, .num_classes = 2,
                     .get = tiny_get, .user = &g_cfg, .name = "tiny" };
    if (g_shape_mismatch) d.sample_shape[0] = 3;
    *train = d;
    *test = d;
    return DG_OK;
}

static dg_module *tiny_model(dg_ctx *ctx, const dg_train_opts *o, void *user) {
    (void)o; (void)user;
    int w = g_cfg.out_features ? g_cfg.out_features : 2;
    dg_module *m[3] = { dg_nn_linear(ctx, 2, 8, true), dg_nn_relu(ctx), dg_nn_linear(ctx, 8, w, true) };
    return dg_nn_sequential(ctx, 3, m);
}

static dg_module *null_model(dg_ctx *ctx, const dg_train_opts *o, void *user) {
    (void)ctx; (void)o; (void)user;
    return NULL;
}

/* Runs p with args, stderr into a file; checks the exit code and that
 * stderr is one line containing want. */
static void expect(const char *what, const dg_train_program *p, int want_rc, const char *want, int argc,
                   char **argv) {
    char path[256];
    snprintf(path, sizeof path, "%s/err", tmpdir);
    fflush(stderr);
    int saved = dup(2);
    FILE *f = freopen(path, "w", stderr);
    DG_ASSERT(f != NULL);
    int rc = dg_train_main(p, argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[2048] = "";
    FILE *r = fopen(path, "r");
    size_t n = r ? fread(buf, 1, sizeof buf - 1, r) : 0;
    if (r) fclose(r);
    buf[n] = '\0';
    int lines = 0;
    for (char *c = buf; *c; c++) lines += *c == '\n';
    CHECK(rc == want_rc, "%s: exit %d, want %d (stderr: %s)", what, rc, want_rc, buf);
    CHECK(lines == 1 && strstr(buf, want), "%s: stderr should be one line naming '%s', got %d lines: %s", what,
          want, lines, buf);
    if (rc == want_rc && lines == 1 && strstr(buf, want)) printf("ok: %s -> %s", what, buf);
}

static dg_train_program tiny_program(void) {
    dg_train_program p = dg_train_program_defaults("tiny", tiny_model);
    p.flat_input = true;
    p.load_data = tiny_data;
    p.defaults.batch_size = 16;
    return p;
}

static void test_bad_programs(void) {
    char *argv[] = { "tiny", "--quiet", NULL };
    expect("NULL program", NULL, 1, "no program", 2, argv);
    dg_train_program p = tiny_program();
    p.build = NULL;
    expect("NULL build", &p, 1, "build is NULL", 2, argv);
    p = tiny_program();
    p.build = null_model;
    expect("model NULL", &p, 1, "model: build returned NULL", 2, argv);
    p = tiny_program();
    g_shape_mismatch = 1;
    expect("dataset shape", &p, 1, "training set: tiny: sample_size = 2 but sample_shape holds 3 values", 2, argv);
    g_shape_mismatch = 0;
    g_cfg = (cfg){ .bad_label = 7 };
    expect("dataset label", &p, 1, "tiny: sample 5 has label 7, outside [0, 2)", 2, argv);
    g_cfg = (cfg){ .out_features = 5 };
    expect("output shape", &p, 1, "model output has shape [16x5]", 2, argv);
    g_cfg = (cfg){ 0 };
    char *bad[] = { "tiny", "--frobnicate", NULL };
    expect("unknown flag", &p, 2, "unknown flag '--frobnicate'", 2, bad);
    char *val[] = { "tiny", "--batch-size", "0", NULL };
    expect("bad value", &p, 2, "invalid value '0' for --batch-size", 3, val);
}

/* A good run of the tiny program returns 0. */
static void test_good_run(void) {
    dg_train_program p = tiny_program();
    char *argv[] = { "tiny", "--quiet", "--epochs", "2", NULL };
    CHECK(dg_train_main(&p, 4, argv) == 0, "tiny program: %s", dg_last_error());
}

/* The flag table on its own: values land in the target, extra tables too. */
static void test_flags(void) {
    typedef struct { int n; bool on; double x; const char *mode; } my;
    static const char *const modes[] = { "a", "b", NULL };
    const dg_flag fl[] = {
        { "--n", DG_FLAG_INT, offsetof(my, n), "N", "a count", 1, 10, NULL, NULL },
        { "--on", DG_FLAG_SET, offsetof(my, on), NULL, "switch", 0, 0, NULL, NULL },
        { "--x", DG_FLAG_DOUBLE, offsetof(my, x), "X", "a number", 0, 5, NULL, NULL },
        { "--mode", DG_FLAG_CHOICE, offsetof(my, mode), "M", "a mode", 0, 0, modes, NULL },
    };
    my v = { 1, false, 1.0, "a" };
    dg_flag_table t = { fl, 4, &v, NULL };
    char *argv[] = { "p", "--n", "7", "--on", "--x", "2.5", "--mode", "b", NULL };
    CHECK(dg_flags_parse(&t, 1, 8, argv, "p", NULL) == 0, "flags parse");
    CHECK(v.n == 7 && v.on && v.x == 2.5 && !strcmp(v.mode, "b"), "flags values %d %d %g %s", v.n, v.on, v.x,
          v.mode);
    char *out_of_range[] = { "p", "--n", "11", NULL };
    fflush(stderr);
    int saved = dup(2);
    FILE *f = freopen("/dev/null", "w", stderr);
    DG_ASSERT(f != NULL);
    int rc = dg_flags_parse(&t, 1, 3, out_of_range, "p", NULL);
    char *no_value[] = { "p", "--x", NULL };
    int rc2 = dg_flags_parse(&t, 1, 2, no_value, "p", NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    CHECK(rc == 2 && rc2 == 2, "out of range / missing value: %d %d", rc, rc2);
    CHECK(v.n == 7, "a rejected value must not be stored");
}

/* The CSV loader: a header, a label column, a reshape, and its errors. */
static void test_csv(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/d.csv", tmpdir);
    FILE *f = fopen(path, "w");
    DG_ASSERT(f != NULL);
    fprintf(f, "label,a,b,c,d\n1,0.5,1,2,3\n0,4,5,6,7.25\n\n2,-1,-2,-3,-4\n");
    fclose(f);
    dg_dataset ds;
    int64_t shape[2] = { 2, 2 };
    CHECK(dg_dataset_load_csv(path, 0, 3, 2, shape, &ds) == DG_OK, "csv: %s", dg_last_error());
    if (ds.n == 3) {
        float x[4];
        int32_t y;
        CHECK(dg_dataset_get(&ds, 1, x, &y) == DG_OK && y == 0 && x[0] == 4.0f && x[3] == 7.25f,
              "csv row 1: y %d x %g %g", y, x[0], x[3]);
        CHECK(ds.ndim_sample == 2 && ds.sample_shape[1] == 2 && ds.sample_size == 4, "csv shape");
        CHECK(dg_dataset_check(&ds) == DG_OK, "csv check: %s", dg_last_error());
    } else {
        CHECK(0, "csv: %lld rows, want 3", (long long)ds.n);
    }
    dg_dataset_free(&ds);
    struct { const char *body, *want; } bad[] = {
        { "1,2,3\n0,4\n", "d.csv:2: 2 columns, the first row has 3" },
        { "1,2,3\n0,x,4\n", "d.csv:2: column 2 is not a finite number" },
        { "1,2,3\n5,1,1\n", "d.csv:2: label 5 in column 1 is not an integer in [0, 3)" },
        { "1.5,2,3\n", "d.csv:1: label 1.5" },
        { "0,1,1\n1,nan,3\n", "d.csv:2: column 2 is not a finite number" },
        { "label,a\n", "d.csv: no data rows" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fopen(path, "w");
        DG_ASSERT(f != NULL);
        fputs(bad[i].body, f);
        fclose(f);
        dg_clear_error();
        CHECK(dg_dataset_load_csv(path, 0, 3, 0, NULL, &ds) == DG_ERR && strstr(dg_last_error(), bad[i].want),
              "csv case %zu: want '%s', got '%s'", i, bad[i].want, dg_last_error());
        CHECK(ds.n == 0 && !ds.features, "csv case %zu: nothing kept on error", i);
    }
    dg_clear_error();
    CHECK(dg_dataset_load_csv("/nonexistent/x.csv", 0, 3, 0, NULL, &ds) == DG_ERR &&
              strstr(dg_last_error(), "/nonexistent/x.csv"), "csv missing file: %s", dg_last_error());
    int64_t wrong[1] = { 3 };
    dg_clear_error();
    f = fopen(path, "w");
    fputs("1,2,3\n", f);
    fclose(f);
    CHECK(dg_dataset_load_csv(path, 0, 3, 1, wrong, &ds) == DG_ERR &&
              strstr(dg_last_error(), "rows have 2 features, sample_shape holds 3"),
          "csv wrong shape: %s", dg_last_error());
}

int main(void) {
    DG_ASSERT(mkdtemp(tmpdir) != NULL);
    test_flags();
    test_csv();
    test_bad_programs();
    test_good_run();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
