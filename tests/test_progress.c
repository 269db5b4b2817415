/* test_progress.c - the progress bar and log lines (dgrad/progress.h),
 * driven by a fake clock and written to a temporary file. */
#define _XOPEN_SOURCE 700
#include "dgrad/progress.h"
#include "test_util.h"

#include <fcntl.h>
#include <unistd.h>

static double fake_now;
static double fake_clock(void *user) {
    (void)user;
    return fake_now;
}

/* everything written to f so far, as a string (caller frees) */
static char *contents(FILE *f) {
    fflush(f);
    long n = ftell(f);
    char *s = calloc((size_t)n + 1, 1);
    rewind(f);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = '\0';
    fseek(f, 0, SEEK_END);
    return s;
}

static int count(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
    return n;
}

static dg_progress *make(FILE *f, dg_progress_mode mode) {
    dg_progress *p = NULL;
    CHECK(dg_progress_new(&p, f, mode) == DG_OK);
    if (p) dg_progress_set_clock(p, fake_clock, NULL);
    return p;
}

static void test_durations(void) {
    char b[32];
    struct { double s; const char *want; } cases[] = {
        { 0, "0:00" }, { 59.4, "0:59" }, { 59.6, "1:00" }, { 75, "1:15" }, { 3599, "59:59" },
        { 3600, "1:00:00" }, { 3723, "1:02:03" }, { 100 * 3600.0 + 5, "100:00:05" },
        { -1, "?" }, { NAN, "?" }, { INFINITY, "?" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECKF(!strcmp(dg_progress_format_duration(b, sizeof b, cases[i].s), cases[i].want),
               "duration %g: \"%s\", want \"%s\"", cases[i].s, b, cases[i].want);
}

static void test_lines(void) {
    FILE *f = tmpfile();
    dg_progress *p = make(f, DG_PROGRESS_LINES);
    CHECK(dg_progress_get_mode(p) == DG_PROGRESS_LINES);
    dg_progress_start_epoch(p, 0, 2, 10);
    for (int i = 0; i < 10; i++) {
        fake_now += 1.0;
        dg_progress_step(p, 0.5, 64);
    }
    dg_progress_log(p, "epoch %d/%d  loss %.4f", 1, 2, 0.5);
    dg_progress_free(p);
    char *s = contents(f);
    CHECKF(!strcmp(s, "epoch 1/2  loss 0.5000\n"), "lines mode wrote \"%s\"", s);
    free(s);
    fclose(f);
}

static void test_quiet(void) {
    FILE *f = tmpfile();
    dg_progress *p = make(f, DG_PROGRESS_QUIET);
    dg_progress_start_epoch(p, 0, 1, 3);
    for (int i = 0; i < 3; i++) dg_progress_step(p, 1.0, 1);
    dg_progress_log(p, "hello");
    dg_progress_free(p);
    CHECK_EQ_INT(ftell(f), 0);
    fclose(f);
}

static void test_bar_frames(void) {
    /* 100 steps of 1/32 s: one frame at the first step, then one each
     * 0.1 s (every 4th step: 0.125 s), and the last step */
    FILE *f = tmpfile();
    fake_now = 0.0;
    dg_progress *p = make(f, DG_PROGRESS_BAR);
    dg_progress_start_epoch(p, 0, 3, 100);
    for (int i = 0; i < 100; i++) {
        fake_now += 1.0 / 32;
        dg_progress_step(p, 1.0, 10);
    }
    char *s = contents(f);
    int frames = count(s, "\repoch 1/3 [");
    CHECKF(frames == 26, "%d frames, want 26 (at most 10 a second)", frames);
    CHECK(strchr(s, '\n') == NULL);   /* a bar alone never ends the line */
    CHECK_CONTAINS(s, "\repoch 1/3 [....................]   1/100  loss 1.0000  320 samples/s  ETA 0:03");
    CHECK_CONTAINS(s, "\repoch 1/3 [####################] 100/100  loss 1.0000  320 samples/s  ETA 0:00");
    free(s);
    /* a line replaces the bar: blanks over it, then the line */
    long before = ftell(f);
    dg_progress_log(p, "epoch 1/3  done");
    s = contents(f);
    CHECK_CONTAINS(s + before, "\r                    ");
    CHECK(strstr(s + before, "\repoch 1/3  done\n") != NULL);
    free(s);
    dg_progress_free(p);
    fclose(f);
}

static void test_bar_eta(void) {
    /* 2 s a step of 64 samples, 100 steps: ETA = remaining steps * 2 s */
    FILE *f = tmpfile();
    fake_now = 10.0;
    dg_progress *p = make(f, DG_PROGRESS_BAR);
    dg_progress_start_epoch(p, 1, 2, 100);
    for (int i = 0; i < 50; i++) {
        fake_now += 2.0;
        dg_progress_step(p, i < 25 ? 2.0 : 1.0, 64);
    }
    char *s = contents(f);
    CHECK_EQ_INT(count(s, "\repoch 2/2 ["), 50);
    CHECK_CONTAINS(s, "   1/100  loss 2.0000  32 samples/s  ETA 3:18");
    CHECK_CONTAINS(s, "[##########..........]  50/100  loss 1.5000  32 samples/s  ETA 1:40");
    free(s);
    /* a shorter frame blanks out the rest of a longer one */
    dg_progress_start_epoch(p, 1, 2, 0);
    fake_now += 1.0;
    long before = ftell(f);
    dg_progress_step(p, 0.25, 1);
    s = contents(f);
    CHECK_CONTAINS(s + before, "\repoch 2/2  step 1  loss 0.2500  1 samples/s      ");
    free(s);
    dg_progress_free(p);   /* ends the bar's line */
    s = contents(f);
    CHECK(s[strlen(s) - 1] == '\n');
    free(s);
    fclose(f);
}

/* AUTO on a terminal (a pseudo-terminal here): the bar, but not under
 * Open MPI, whose ranks always get a pseudo-terminal */
static void test_auto_terminal(void) {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) {
        printf("test_progress: no pseudo-terminal, skipping the terminal case\n");
        if (master >= 0) close(master);
        return;
    }
    FILE *tty = fopen(ptsname(master), "w");
    CHECK(tty != NULL);
    if (tty) {
        dg_progress *p = NULL;
        CHECK(dg_progress_new(&p, tty, DG_PROGRESS_AUTO) == DG_OK);
        CHECK(p && dg_progress_get_mode(p) == DG_PROGRESS_BAR);
        dg_progress_free(p);
        setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
        CHECK(dg_progress_new(&p, tty, DG_PROGRESS_AUTO) == DG_OK);
        CHECK(p && dg_progress_get_mode(p) == DG_PROGRESS_LINES);
        dg_progress_free(p);
        setenv("DG_PROGRESS", "bar", 1);   /* forced */
        CHECK(dg_progress_new(&p, tty, DG_PROGRESS_AUTO) == DG_OK);
        CHECK(p && dg_progress_get_mode(p) == DG_PROGRESS_BAR);
        dg_progress_free(p);
        unsetenv("DG_PROGRESS");
        unsetenv("OMPI_COMM_WORLD_SIZE");
        fclose(tty);
    }
    close(master);
}

static void test_auto(void) {
    FILE *f = tmpfile();
    dg_progress *p = NULL;
    unsetenv("DG_PROGRESS");
    unsetenv("OMPI_COMM_WORLD_SIZE");
    test_auto_terminal();
    CHECK(dg_progress_new(&p, f, DG_PROGRESS_AUTO) == DG_OK);
    CHECK(p && dg_progress_get_mode(p) == DG_PROGRESS_LINES);   /* a file is no terminal */
    dg_progress_free(p);
    const char *env[] = { "bar", "lines", "quiet" };
    dg_progress_mode want[] = { DG_PROGRESS_BAR, DG_PROGRESS_LINES, DG_PROGRESS_QUIET };
    for (int i = 0; i < 3; i++) {
        setenv("DG_PROGRESS", env[i], 1);
        CHECK(dg_progress_new(&p, f, DG_PROGRESS_AUTO) == DG_OK);
        CHECKF(p && dg_progress_get_mode(p) == want[i], "DG_PROGRESS=%s", env[i]);
        dg_progress_free(p);
    }
    /* an explicit mode wins over the environment */
    CHECK(dg_progress_new(&p, f, DG_PROGRESS_LINES) == DG_OK);
    CHECK(p && dg_progress_get_mode(p) == DG_PROGRESS_LINES);
    dg_progress_free(p);
    setenv("DG_PROGRESS", "fancy", 1);
    p = (dg_progress *)1;
    CHECK(dg_progress_new(&p, f, DG_PROGRESS_AUTO) == DG_ERR && p == NULL);
    CHECK_CONTAINS(dg_last_error(), "DG_PROGRESS='fancy'");
    dg_clear_error();
    unsetenv("DG_PROGRESS");
    fclose(f);
}

int main(void) {
    test_durations();
    test_lines();
    test_quiet();
    test_bar_frames();
    test_bar_eta();
    test_auto();
    return dgt_report("test_progress");
}
