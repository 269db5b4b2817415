/* test_data.c - IDX reader, datasets, distributed sampler and loader.
 *
 * Synthetic files (valid and broken) are written to a temp dir. Real MNIST
 * is read from $DG_MNIST_DIR; when that is empty those checks are skipped
 * and, if everything else passed, the test exits 77 (CTest: skipped).
 */
#define _POSIX_C_SOURCE 200809L  /* mkdtemp */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "dgrad/data.h"
#include "test_util.h"

/* ---- temp files --------------------------------------------------------- */

static char g_tmpdir[256];
static char g_paths[64][512];
static int g_npaths;

static const char *tmp_path(const char *name) {
    DG_ASSERT(g_npaths < 64);
    snprintf(g_paths[g_npaths], sizeof g_paths[0], "%s/%s", g_tmpdir, name);
    return g_paths[g_npaths++];
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    DG_ASSERT(f != NULL);
    DG_ASSERT(fwrite(p, 1, n, f) == n);
    fclose(f);
}

/* gzip-compress src into a malloc'd buffer. */
static uint8_t *gz_bytes(const uint8_t *src, size_t n, size_t *outn) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    DG_ASSERT(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    size_t cap = deflateBound(&zs, (uLong)n) + 64;
    uint8_t *out = malloc(cap);
    DG_ASSERT(out != NULL);
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    DG_ASSERT(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    *outn = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

static void write_gz(const char *path, const uint8_t *p, size_t n) {
    size_t gn;
    uint8_t *g = gz_bytes(p, n, &gn);
    write_bytes(path, g, gn);
    free(g);
}

/* IDX bytes: type 0x08 header with dims, then data (n_data bytes given). */
static size_t make_idx(uint8_t *buf, int ndim, const uint32_t *dims, const uint8_t *data,
                       size_t n_data) {
    size_t k = 0;
    buf[k++] = 0;
    buf[k++] = 0;
    buf[k++] = 0x08;
    buf[k++] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[k++] = (uint8_t)(dims[i] >> 24);
        buf[k++] = (uint8_t)(dims[i] >> 16);
        buf[k++] = (uint8_t)(dims[i] >> 8);
        buf[k++] = (uint8_t)dims[i];
    }
    memcpy(buf + k, data, n_data);
    return k + n_data;
}

/* Expect DG_ERR from dg_idx_read(path) with path and `what` in the message. */
#define EXPECT_IDX_ERR(path, what) \
    do { \
        dg_idx idx_; \
        dg_clear_error(); \
        dg_status st_ = dg_idx_read((path), &idx_); \
        CHECKF(st_ == DG_ERR, "dg_idx_read(%s) should fail (%s)", (path), (what)); \
        CHECK_CONTAINS(dg_last_error(), (path)); \
        CHECK_CONTAINS(dg_last_error(), (what)); \
        CHECK(idx_.data == NULL); \
        if (st_ == DG_OK) dg_idx_free(&idx_); \
    } while (0)

/* ---- IDX ---------------------------------------------------------------- */

static void test_idx_valid(void) {
    uint8_t data[24], buf[64];
    for (int i = 0; i < 24; i++) data[i] = (uint8_t)(i * 11);
    uint32_t dims[3] = {4, 3, 2};
    size_t n = make_idx(buf, 3, dims, data, 24);
    const char *plain = tmp_path("ok-idx3"), *gz = tmp_path("ok-idx3.gz");
    write_bytes(plain, buf, n);
    write_gz(gz, buf, n);
    const char *paths[2] = {plain, gz};
    for (int p = 0; p < 2; p++) {
        dg_idx idx;
        dg_clear_error();
        CHECKF(dg_idx_read(paths[p], &idx) == DG_OK, "read %s", paths[p]);
        CHECK_EQ_INT(idx.ndim, 3);
        CHECK_EQ_INT(idx.dims[0], 4);
        CHECK_EQ_INT(idx.dims[1], 3);
        CHECK_EQ_INT(idx.dims[2], 2);
        CHECKF(idx.data && memcmp(idx.data, data, 24) == 0, "data of %s", paths[p]);
        dg_idx_free(&idx);
        CHECK(idx.data == NULL);
    }
    /* gzip with two members (as `cat a.gz b.gz` makes) is still valid gzip. */
    size_t g1, g2;
    uint8_t *a = gz_bytes(buf, 10, &g1), *b = gz_bytes(buf + 10, n - 10, &g2);
    uint8_t *cat = malloc(g1 + g2);
    DG_ASSERT(cat != NULL);
    memcpy(cat, a, g1);
    memcpy(cat + g1, b, g2);
    const char *multi = tmp_path("multi.gz");
    write_bytes(multi, cat, g1 + g2);
    dg_idx idx;
    dg_clear_error();
    CHECKF(dg_idx_read(multi, &idx) == DG_OK, "two-member gzip %s", multi);
    CHECK(idx.data && memcmp(idx.data, data, 24) == 0);
    dg_idx_free(&idx);
    free(a);
    free(b);
    free(cat);
}

static void test_idx_errors(void) {
    uint8_t data[24] = {0}, buf[64], bad[64];
    uint32_t dims[3] = {4, 3, 2};
    size_t n = make_idx(buf, 3, dims, data, 24);   /* 16 header + 24 data */

    EXPECT_IDX_ERR(tmp_path("does-not-exist-idx3-ubyte"), "cannot open");

    const char *p = tmp_path("empty");
    write_bytes(p, buf, 0);
    EXPECT_IDX_ERR(p, "truncated header");

    p = tmp_path("short-header");
    write_bytes(p, buf, 10);                   /* magic + 1.5 dims */
    EXPECT_IDX_ERR(p, "truncated header");
    p = tmp_path("short-header.gz");
    write_gz(p, buf, 10);
    EXPECT_IDX_ERR(p, "truncated header");

    p = tmp_path("short-data");
    write_bytes(p, buf, n - 5);
    EXPECT_IDX_ERR(p, "truncated: expected 24 bytes of data, got 19");
    p = tmp_path("short-data.gz");
    write_gz(p, buf, n - 5);
    EXPECT_IDX_ERR(p, "truncated: expected 24 bytes of data, got 19");

    memcpy(bad, buf, n);
    bad[n] = 7;
    bad[n + 1] = 9;
    p = tmp_path("trailing");
    write_bytes(p, bad, n + 2);
    EXPECT_IDX_ERR(p, "2 trailing bytes");
    p = tmp_path("trailing.gz");
    write_gz(p, bad, n + 2);
    EXPECT_IDX_ERR(p, "2 trailing bytes");

    /* garbage after a complete gzip stream */
    size_t gn;
    uint8_t *g = gz_bytes(buf, n, &gn);
    uint8_t *g2 = malloc(gn + 8);
    DG_ASSERT(g2 != NULL);
    memcpy(g2, g, gn);
    memcpy(g2 + gn, "GARBAGE!", 8);
    p = tmp_path("garbage-after.gz");
    write_bytes(p, g2, gn + 8);
    EXPECT_IDX_ERR(p, "trailing garbage");
    g2[gn] = 'X';
    p = tmp_path("garbage1-after.gz");
    write_bytes(p, g2, gn + 1);
    EXPECT_IDX_ERR(p, "trailing garbage");

    /* corrupt gzip: a broken deflate stream, a bad CRC, a cut-off stream */
    memcpy(g2, g, gn);
    for (size_t i = 10; i < gn - 8; i++) g2[i] ^= 0x5a;
    p = tmp_path("corrupt.gz");
    write_bytes(p, g2, gn);
    EXPECT_IDX_ERR(p, "corrupt gzip");
    memcpy(g2, g, gn);
    g2[gn - 8] ^= 0xff;                        /* CRC32 of the trailer */
    p = tmp_path("badcrc.gz");
    write_bytes(p, g2, gn);
    EXPECT_IDX_ERR(p, "corrupt gzip");
    p = tmp_path("cut.gz");
    write_bytes(p, g, gn - 12);
    EXPECT_IDX_ERR(p, "corrupt gzip");
    free(g);
    free(g2);

    memcpy(bad, buf, n);
    bad[0] = 0x01;
    p = tmp_path("bad-magic");
    write_bytes(p, bad, n);
    EXPECT_IDX_ERR(p, "bad magic number 0x01000803");
    p = tmp_path("bad-magic.gz");
    write_gz(p, bad, n);
    EXPECT_IDX_ERR(p, "bad magic");

    memcpy(bad, buf, n);
    bad[2] = 0x0d;                             /* float32 */
    p = tmp_path("float-type");
    write_bytes(p, bad, n);
    EXPECT_IDX_ERR(p, "unsupported element type 0x0d");

    memcpy(bad, buf, n);
    bad[3] = 0;
    p = tmp_path("ndim0");
    write_bytes(p, bad, n);
    EXPECT_IDX_ERR(p, "number of dims 0");
    bad[3] = 7;
    p = tmp_path("ndim7");
    write_bytes(p, bad, n);
    EXPECT_IDX_ERR(p, "number of dims 7");

    uint32_t zdims[3] = {4, 0, 2};
    size_t zn = make_idx(bad, 3, zdims, data, 0);
    p = tmp_path("zero-dim");
    write_bytes(p, bad, zn);
    EXPECT_IDX_ERR(p, "bad size 0 for dim 1");

    uint32_t hdims[2] = {0x7fffffffu, 0x7fffffffu};
    size_t hn = make_idx(bad, 2, hdims, data, 4);
    p = tmp_path("huge.gz");
    write_gz(p, bad, hn);
    EXPECT_IDX_ERR(p, "more than");
}

/* ---- datasets ----------------------------------------------------------- */

static void test_dataset_synthetic(void) {
    uint8_t px[5 * 2 * 3], lb[5] = {0, 1, 2, 1, 0}, buf[128];
    for (int i = 0; i < 30; i++) px[i] = (uint8_t)(i * 8);
    uint32_t idims[3] = {5, 2, 3}, ldims[1] = {5};
    const char *ip = tmp_path("ds-images.gz"), *lp = tmp_path("ds-labels");
    write_gz(ip, buf, make_idx(buf, 3, idims, px, 30));
    write_bytes(lp, buf, make_idx(buf, 1, ldims, lb, 5));

    dg_dataset ds;
    dg_clear_error();
    CHECK(dg_dataset_load_idx(ip, lp, 3, &ds) == DG_OK);
    CHECK_EQ_INT(ds.n, 5);
    CHECK_EQ_INT(ds.sample_size, 6);
    CHECK_EQ_INT(ds.ndim_sample, 2);
    CHECK_EQ_INT(ds.sample_shape[0], 2);
    CHECK_EQ_INT(ds.sample_shape[1], 3);
    CHECK_EQ_INT(ds.num_classes, 3);
    CHECK(ds.images && memcmp(ds.images, px, 30) == 0);
    for (int i = 0; i < 5; i++) CHECK_EQ_INT(ds.labels[i], lb[i]);
    dg_dataset_free(&ds);

    /* label 2 is out of range for 2 classes: first at index 2 */
    dg_clear_error();
    CHECK(dg_dataset_load_idx(ip, lp, 2, &ds) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), lp);
    CHECK_CONTAINS(dg_last_error(), "label 2 at index 2 out of range [0, 2)");
    CHECK(ds.images == NULL && ds.labels == NULL);

    /* count mismatch names both files */
    uint32_t l4[1] = {4};
    const char *lp4 = tmp_path("ds-labels4.gz");
    write_gz(lp4, buf, make_idx(buf, 1, l4, lb, 4));
    dg_clear_error();
    CHECK(dg_dataset_load_idx(ip, lp4, 3, &ds) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), ip);
    CHECK_CONTAINS(dg_last_error(), lp4);
    CHECK_CONTAINS(dg_last_error(), "5 images");
    CHECK_CONTAINS(dg_last_error(), "4 labels");

    /* wrong dims: labels as images, images as labels */
    dg_clear_error();
    CHECK(dg_dataset_load_idx(lp, lp, 3, &ds) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "images need at least 2 dims");
    CHECK_CONTAINS(dg_last_error(), lp);
    dg_clear_error();
    CHECK(dg_dataset_load_idx(ip, ip, 3, &ds) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "labels need 1 dim");
    dg_clear_error();
    CHECK(dg_dataset_load_idx(ip, lp, 0, &ds) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "num_classes 0");

    /* a broken labels file reports that file */
    const char *missing = tmp_path("no-such-labels.gz");
    dg_clear_error();
    CHECK(dg_dataset_load_idx(ip, missing, 3, &ds) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), missing);

    /* load_mnist in a dir without the files names the dir and file */
    dg_clear_error();
    CHECK(dg_dataset_load_mnist(g_tmpdir, true, &ds) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), g_tmpdir);
    CHECK_CONTAINS(dg_last_error(), "train-images-idx3-ubyte");
    dg_clear_error();
    CHECK(dg_dataset_load_mnist("/nonexistent/mnist", false, &ds) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "/nonexistent/mnist");
    CHECK_CONTAINS(dg_last_error(), "t10k-images-idx3-ubyte");
}

/* ---- sampler ------------------------------------------------------------ */

typedef struct { int n, w, dl, r, off, cnt; } torch_case;

/* Generated with torch 1.13: list(DistributedSampler(range(n), num_replicas=w,
 * rank=r, shuffle=False, drop_last=dl)); {n, w, dl, r, offset, count}. */
static const int64_t torch_flat[] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1,
    0, 1, 0, 1, 0, 1, 0, 0, 1, 2, 0, 1, 2, 0, 2, 1, 0, 0, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0,
    0, 1, 2, 0, 1, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 2, 4, 1, 3, 0, 0, 2, 1, 3, 0, 3, 1, 4,
    2, 0, 0, 1, 2, 0, 4, 1, 0, 2, 1, 3, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1,
    2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 2, 4, 6, 1, 3, 5, 0, 0, 2, 4, 1, 3, 5, 0, 3, 6,
    1, 4, 0, 2, 5, 1, 0, 3, 1, 4, 2, 5, 0, 4, 1, 5, 2, 6, 3, 0, 0, 1, 2, 3, 0, 5, 1, 6, 2,
    0, 3, 1, 4, 2, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8,
    9, 0, 2, 4, 6, 8, 1, 3, 5, 7, 9, 0, 2, 4, 6, 8, 1, 3, 5, 7, 9, 0, 3, 6, 9, 1, 4, 7, 0,
    2, 5, 8, 1, 0, 3, 6, 1, 4, 7, 2, 5, 8, 0, 4, 8, 1, 5, 9, 2, 6, 0, 3, 7, 1, 0, 4, 1, 5,
    2, 6, 3, 7, 0, 5, 1, 6, 2, 7, 3, 8, 4, 9, 0, 5, 1, 6, 2, 7, 3, 8, 4, 9, 0, 1, 2, 3, 4,
    5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9,
    0, 0, 2, 4, 6, 8, 1, 3, 5, 7, 9, 0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 0, 0, 3, 6, 1, 4, 7,
    2, 5, 8, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 0, 0, 4, 1, 5, 2, 6, 3, 7, 0, 5, 10, 1, 6, 0,
    2, 7, 1, 3, 8, 2, 4, 9, 3, 0, 5, 1, 6, 2, 7, 3, 8, 4, 9
};
static const torch_case torch_cases[] = {
    {1,1,0,0,0,1}, {1,1,1,0,1,1}, {1,2,0,0,2,1}, {1,2,0,1,3,1}, {1,2,1,0,4,0},
    {1,2,1,1,4,0}, {1,3,0,0,4,1}, {1,3,0,1,5,1}, {1,3,0,2,6,1}, {1,3,1,0,7,0},
    {1,3,1,1,7,0}, {1,3,1,2,7,0}, {1,4,0,0,7,1}, {1,4,0,1,8,1}, {1,4,0,2,9,1},
    {1,4,0,3,10,1}, {1,4,1,0,11,0}, {1,4,1,1,11,0}, {1,4,1,2,11,0}, {1,4,1,3,11,0},
    {1,5,0,0,11,1}, {1,5,0,1,12,1}, {1,5,0,2,13,1}, {1,5,0,3,14,1}, {1,5,0,4,15,1},
    {1,5,1,0,16,0}, {1,5,1,1,16,0}, {1,5,1,2,16,0}, {1,5,1,3,16,0}, {1,5,1,4,16,0},
    {2,1,0,0,16,2}, {2,1,1,0,18,2}, {2,2,0,0,20,1}, {2,2,0,1,21,1}, {2,2,1,0,22,1},
    {2,2,1,1,23,1}, {2,3,0,0,24,1}, {2,3,0,1,25,1}, {2,3,0,2,26,1}, {2,3,1,0,27,0},
    {2,3,1,1,27,0}, {2,3,1,2,27,0}, {2,4,0,0,27,1}, {2,4,0,1,28,1}, {2,4,0,2,29,1},
    {2,4,0,3,30,1}, {2,4,1,0,31,0}, {2,4,1,1,31,0}, {2,4,1,2,31,0}, {2,4,1,3,31,0},
    {2,5,0,0,31,1}, {2,5,0,1,32,1}, {2,5,0,2,33,1}, {2,5,0,3,34,1}, {2,5,0,4,35,1},
    {2,5,1,0,36,0}, {2,5,1,1,36,0}, {2,5,1,2,36,0}, {2,5,1,3,36,0}, {2,5,1,4,36,0},
    {3,1,0,0,36,3}, {3,1,1,0,39,3}, {3,2,0,0,42,2}, {3,2,0,1,44,2}, {3,2,1,0,46,1},
    {3,2,1,1,47,1}, {3,3,0,0,48,1}, {3,3,0,1,49,1}, {3,3,0,2,50,1}, {3,3,1,0,51,1},
    {3,3,1,1,52,1}, {3,3,1,2,53,1}, {3,4,0,0,54,1}, {3,4,0,1,55,1}, {3,4,0,2,56,1},
    {3,4,0,3,57,1}, {3,4,1,0,58,0}, {3,4,1,1,58,0}, {3,4,1,2,58,0}, {3,4,1,3,58,0},
    {3,5,0,0,58,1}, {3,5,0,1,59,1}, {3,5,0,2,60,1}, {3,5,0,3,61,1}, {3,5,0,4,62,1},
    {3,5,1,0,63,0}, {3,5,1,1,63,0}, {3,5,1,2,63,0}, {3,5,1,3,63,0}, {3,5,1,4,63,0},
    {5,1,0,0,63,5}, {5,1,1,0,68,5}, {5,2,0,0,73,3}, {5,2,0,1,76,3}, {5,2,1,0,79,2},
    {5,2,1,1,81,2}, {5,3,0,0,83,2}, {5,3,0,1,85,2}, {5,3,0,2,87,2}, {5,3,1,0,89,1},
    {5,3,1,1,90,1}, {5,3,1,2,91,1}, {5,4,0,0,92,2}, {5,4,0,1,94,2}, {5,4,0,2,96,2},
    {5,4,0,3,98,2}, {5,4,1,0,100,1}, {5,4,1,1,101,1}, {5,4,1,2,102,1}, {5,4,1,3,103,1},
    {5,5,0,0,104,1}, {5,5,0,1,105,1}, {5,5,0,2,106,1}, {5,5,0,3,107,1}, {5,5,0,4,108,1},
    {5,5,1,0,109,1}, {5,5,1,1,110,1}, {5,5,1,2,111,1}, {5,5,1,3,112,1}, {5,5,1,4,113,1},
    {7,1,0,0,114,7}, {7,1,1,0,121,7}, {7,2,0,0,128,4}, {7,2,0,1,132,4}, {7,2,1,0,136,3},
    {7,2,1,1,139,3}, {7,3,0,0,142,3}, {7,3,0,1,145,3}, {7,3,0,2,148,3}, {7,3,1,0,151,2},
    {7,3,1,1,153,2}, {7,3,1,2,155,2}, {7,4,0,0,157,2}, {7,4,0,1,159,2}, {7,4,0,2,161,2},
    {7,4,0,3,163,2}, {7,4,1,0,165,1}, {7,4,1,1,166,1}, {7,4,1,2,167,1}, {7,4,1,3,168,1},
    {7,5,0,0,169,2}, {7,5,0,1,171,2}, {7,5,0,2,173,2}, {7,5,0,3,175,2}, {7,5,0,4,177,2},
    {7,5,1,0,179,1}, {7,5,1,1,180,1}, {7,5,1,2,181,1}, {7,5,1,3,182,1}, {7,5,1,4,183,1},
    {10,1,0,0,184,10}, {10,1,1,0,194,10}, {10,2,0,0,204,5}, {10,2,0,1,209,5},
    {10,2,1,0,214,5}, {10,2,1,1,219,5}, {10,3,0,0,224,4}, {10,3,0,1,228,4},
    {10,3,0,2,232,4}, {10,3,1,0,236,3}, {10,3,1,1,239,3}, {10,3,1,2,242,3},
    {10,4,0,0,245,3}, {10,4,0,1,248,3}, {10,4,0,2,251,3}, {10,4,0,3,254,3},
    {10,4,1,0,257,2}, {10,4,1,1,259,2}, {10,4,1,2,261,2}, {10,4,1,3,263,2},
    {10,5,0,0,265,2}, {10,5,0,1,267,2}, {10,5,0,2,269,2}, {10,5,0,3,271,2},
    {10,5,0,4,273,2}, {10,5,1,0,275,2}, {10,5,1,1,277,2}, {10,5,1,2,279,2},
    {10,5,1,3,281,2}, {10,5,1,4,283,2}, {11,1,0,0,285,11}, {11,1,1,0,296,11},
    {11,2,0,0,307,6}, {11,2,0,1,313,6}, {11,2,1,0,319,5}, {11,2,1,1,324,5},
    {11,3,0,0,329,4}, {11,3,0,1,333,4}, {11,3,0,2,337,4}, {11,3,1,0,341,3},
    {11,3,1,1,344,3}, {11,3,1,2,347,3}, {11,4,0,0,350,3}, {11,4,0,1,353,3},
    {11,4,0,2,356,3}, {11,4,0,3,359,3}, {11,4,1,0,362,2}, {11,4,1,1,364,2},
    {11,4,1,2,366,2}, {11,4,1,3,368,2}, {11,5,0,0,370,3}, {11,5,0,1,373,3},
    {11,5,0,2,376,3}, {11,5,0,3,379,3}, {11,5,0,4,382,3}, {11,5,1,0,385,2},
    {11,5,1,1,387,2}, {11,5,1,2,389,2}, {11,5,1,3,391,2}, {11,5,1,4,393,2},
};

static void test_sampler_matches_torch(void) {
    int ncases = (int)(sizeof torch_cases / sizeof torch_cases[0]);
    for (int c = 0; c < ncases; c++) {
        const torch_case *tc = &torch_cases[c];
        dg_sampler s;
        dg_clear_error();
        if (dg_sampler_init(&s, tc->n, tc->r, tc->w, false, 0, tc->dl != 0) != DG_OK) {
            CHECKF(false, "init n=%d w=%d r=%d dl=%d", tc->n, tc->w, tc->r, tc->dl);
            continue;
        }
        CHECKF(s.num_samples == tc->cnt, "n=%d w=%d r=%d dl=%d: num_samples %lld, torch %d",
               tc->n, tc->w, tc->r, tc->dl, (long long)s.num_samples, tc->cnt);
        CHECK_EQ_INT(s.total_size, s.num_samples * tc->w);
        for (int k = 0; k < tc->cnt && k < s.num_samples; k++)
            CHECKF(s.indices[k] == torch_flat[tc->off + k],
                   "n=%d w=%d r=%d dl=%d: index %d is %lld, torch %lld", tc->n, tc->w, tc->r,
                   tc->dl, k, (long long)s.indices[k], (long long)torch_flat[tc->off + k]);
        /* no shuffle: the epoch does not matter */
        dg_sampler_set_epoch(&s, 3);
        for (int k = 0; k < tc->cnt && k < s.num_samples; k++)
            CHECK_EQ_INT(s.indices[k], torch_flat[tc->off + k]);
        dg_sampler_free(&s);
    }
}

/* Rebuild the global list from every rank's share and check its structure:
 * global[r + k*w] = rank r's k-th index; the first min(n, total) entries
 * are distinct (a permutation when not dropping), the padding repeats the
 * list from its start. Returns false on a mismatch. */
static bool check_epoch_structure(int64_t n, int w, bool dl, bool shuffle, uint64_t seed,
                                  int64_t epoch, int64_t *global_out) {
    bool ok = true;
    int64_t total = -1;
    int64_t *global = calloc((size_t)(n + w), sizeof(int64_t));
    int *seen = calloc((size_t)n, sizeof(int));
    DG_ASSERT(global && seen);
    for (int r = 0; r < w; r++) {
        dg_sampler s;
        dg_clear_error();
        if (dg_sampler_init(&s, n, r, w, shuffle, seed, dl) != DG_OK) {
            CHECKF(false, "init n=%lld w=%d r=%d", (long long)n, w, r);
            ok = false;
            continue;
        }
        dg_sampler_set_epoch(&s, epoch);
        CHECK_EQ_INT(s.epoch, epoch);
        if (total < 0) total = s.total_size;
        CHECK_EQ_INT(s.total_size, total);
        int64_t expect_ns = dl ? n / w : (n + w - 1) / w;
        CHECKF(s.num_samples == expect_ns, "n=%lld w=%d dl=%d: num_samples %lld, want %lld",
               (long long)n, w, dl, (long long)s.num_samples, (long long)expect_ns);
        for (int64_t k = 0; k < s.num_samples; k++) {
            int64_t g = r + k * w, v = s.indices[k];
            if (v < 0 || v >= n) {
                CHECKF(false, "n=%lld w=%d r=%d: index %lld out of range", (long long)n, w, r,
                       (long long)v);
                ok = false;
                continue;
            }
            global[g] = v;
        }
        dg_sampler_free(&s);
    }
    int64_t distinct = total < n ? total : n;
    for (int64_t g = 0; g < distinct; g++) {
        if (seen[global[g]]++) {
            CHECKF(false, "n=%lld w=%d dl=%d shuffle=%d epoch=%lld: index %lld twice in the "
                   "first %lld", (long long)n, w, dl, shuffle, (long long)epoch,
                   (long long)global[g], (long long)distinct);
            ok = false;
        }
    }
    for (int64_t g = n; g < total; g++) {
        if (global[g] != global[g % n]) {
            CHECKF(false, "n=%lld w=%d: padding at %lld is %lld, want %lld", (long long)n, w,
                   (long long)g, (long long)global[g], (long long)global[g % n]);
            ok = false;
        }
    }
    if (!dl) CHECKF(total >= n, "n=%lld w=%d: total %lld < n", (long long)n, w, (long long)total);
    if (!dl && total >= n)
        for (int64_t i = 0; i < n; i++)
            CHECKF(seen[i] == 1, "n=%lld w=%d: index %lld not covered", (long long)n, w,
                   (long long)i);
    if (global_out) memcpy(global_out, global, (size_t)distinct * sizeof(int64_t));
    free(global);
    free(seen);
    return ok;
}

static void test_sampler_structure(void) {
    int64_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 12, 13, 100, 1001};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (int w = 1; w <= 4; w++)
            for (int dl = 0; dl < 2; dl++)
                for (int sh = 0; sh < 2; sh++)
                    for (int64_t ep = 0; ep < 2; ep++)
                        check_epoch_structure(sizes[i], w, dl, sh, 1234, ep, NULL);

    /* disjoint across ranks when nothing is padded */
    dg_sampler a, b;
    CHECK(dg_sampler_init(&a, 1001, 0, 2, true, 7, true) == DG_OK);
    CHECK(dg_sampler_init(&b, 1001, 1, 2, true, 7, true) == DG_OK);
    CHECK_EQ_INT(a.num_samples, 500);
    for (int64_t i = 0; i < a.num_samples; i++)
        for (int64_t j = 0; j < b.num_samples; j++)
            if (a.indices[i] == b.indices[j]) {
                CHECKF(false, "rank 0 and 1 share index %lld", (long long)a.indices[i]);
                i = a.num_samples;
                break;
            }
    dg_sampler_free(&a);
    dg_sampler_free(&b);
}

static void test_sampler_shuffle(void) {
    enum { N = 100 };
    int64_t e0[N], e1[N], e0b[N], s2[N];
    check_epoch_structure(N, 3, false, true, 42, 0, e0);
    check_epoch_structure(N, 3, false, true, 42, 1, e1);
    check_epoch_structure(N, 3, false, true, 42, 0, e0b);
    check_epoch_structure(N, 3, false, true, 43, 0, s2);
    CHECK(memcmp(e0, e0b, sizeof e0) == 0);
    CHECK(memcmp(e0, e1, sizeof e0) != 0);
    /* seed + epoch: seed 42 epoch 1 is seed 43 epoch 0, as in torch */
    CHECK(memcmp(e1, s2, sizeof e1) == 0);
    int identity = 1;
    for (int i = 0; i < N; i++) identity &= e0[i] == i;
    CHECK(!identity);

    /* set_epoch back to 0 restores epoch 0; a fresh sampler agrees */
    dg_sampler s, t;
    CHECK(dg_sampler_init(&s, N, 1, 3, true, 42, false) == DG_OK);
    CHECK(dg_sampler_init(&t, N, 1, 3, true, 42, false) == DG_OK);
    dg_sampler_set_epoch(&s, 5);
    dg_sampler_set_epoch(&s, 0);
    CHECK(memcmp(s.indices, t.indices, (size_t)s.num_samples * sizeof(int64_t)) == 0);
    dg_sampler_free(&s);
    dg_sampler_free(&t);

    /* Pin the PRNG: the permutation must not change between builds, or
     * checkpoints resumed mid-epoch would see other data. */
    static const int64_t golden[10] = {7, 3, 8, 9, 5, 6, 4, 1, 0, 2};
    CHECK(dg_sampler_init(&s, 10, 0, 1, true, 42, false) == DG_OK);
    for (int i = 0; i < 10; i++)
        CHECKF(s.indices[i] == golden[i], "seed 42 epoch 0 n 10: [%d] = %lld, golden %lld", i,
               (long long)s.indices[i], (long long)golden[i]);
    dg_sampler_free(&s);
}

static void test_sampler_errors(void) {
    dg_sampler s;
    dg_clear_error();
    CHECK(dg_sampler_init(&s, 10, 0, 0, false, 0, false) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "world_size 0");
    CHECK(s.indices == NULL);
    dg_sampler_free(&s);
    dg_clear_error();
    CHECK(dg_sampler_init(&s, 10, 4, 4, false, 0, false) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "rank 4 out of range [0, 4)");
    dg_clear_error();
    CHECK(dg_sampler_init(&s, 10, -1, 4, false, 0, false) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "rank -1");
    dg_clear_error();
    CHECK(dg_sampler_init(&s, 0, 0, 1, false, 0, false) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "dataset_size 0");
    dg_clear_error();
}

/* ---- loader ------------------------------------------------------------- */

/* n samples of 2x3 pixels; pixel j of sample i is (i * 7 + j * 40) % 256,
 * label i % 3. Sample i is identified by pixel 0 (unique for i < 37). */
static void make_dataset(dg_dataset *ds, int64_t n) {
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->sample_size = 6;
    ds->ndim_sample = 2;
    ds->sample_shape[0] = 2;
    ds->sample_shape[1] = 3;
    ds->num_classes = 3;
    ds->images = malloc((size_t)n * 6);
    ds->labels = malloc((size_t)n * sizeof(int32_t));
    DG_ASSERT(ds->images && ds->labels);
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < 6; j++) ds->images[i * 6 + j] = (uint8_t)((i * 7 + j * 40) % 256);
        ds->labels[i] = (int32_t)(i % 3);
    }
}

static void test_loader_host(void) {
    dg_dataset ds;
    make_dataset(&ds, 10);
    dg_sampler s;
    dg_loader l;
    float x[4 * 6];
    int32_t y[4];
    for (int dl = 0; dl < 2; dl++) {
        CHECK(dg_sampler_init(&s, 10, 0, 1, true, 3, false) == DG_OK);
        CHECK(dg_loader_init(&l, &ds, &s, 4, dl != 0) == DG_OK);
        CHECK(l.scale == 1.0f / 255.0f && l.shift == 0.0f);
        CHECK_EQ_INT(dg_loader_num_batches(&l), dl ? 2 : 3);
        for (int64_t ep = 0; ep < 3; ep++) {
            dg_loader_start_epoch(&l, ep);
            int seen[10] = {0};
            int64_t nb = 0, b, sizes[4] = {0};
            while ((b = dg_loader_next_host(&l, x, y)) > 0) {
                if (nb < 4) sizes[nb] = b;
                nb++;
                for (int64_t i = 0; i < b; i++) {
                    int id = -1;
                    for (int c = 0; c < 10; c++)
                        if (ds.images[c * 6] == (uint8_t)(x[i * 6] * 255.0f + 0.5f)) id = c;
                    if (id < 0) {
                        CHECKF(false, "batch %lld row %lld: unknown sample", (long long)nb,
                               (long long)i);
                        continue;
                    }
                    seen[id]++;
                    CHECK_EQ_INT(y[i], ds.labels[id]);
                    for (int j = 0; j < 6; j++) {
                        float want = (float)ds.images[id * 6 + j] / 255.0f;
                        CHECKF(x[i * 6 + j] == want, "sample %d pixel %d: %.9g, want %.9g", id,
                               j, x[i * 6 + j], want);
                    }
                }
            }
            CHECK_EQ_INT(nb, dg_loader_num_batches(&l));
            CHECK_EQ_INT(sizes[0], 4);
            CHECK_EQ_INT(sizes[1], 4);
            CHECK_EQ_INT(sizes[2], dl ? 0 : 2);
            CHECK_EQ_INT(dg_loader_next_host(&l, x, y), 0);   /* stays at the end */
            int total = 0;
            for (int c = 0; c < 10; c++) {
                CHECKF(seen[c] <= 1, "epoch %lld: sample %d seen %d times", (long long)ep, c,
                       seen[c]);
                total += seen[c];
            }
            CHECK_EQ_INT(total, dl ? 8 : 10);
        }
        dg_loader_free(&l);
        CHECK(l.xbuf == NULL);
        dg_sampler_free(&s);
    }

    /* custom scale/shift, and the order follows the sampler */
    CHECK(dg_sampler_init(&s, 10, 1, 3, false, 0, false) == DG_OK);   /* 1, 4, 7, 0 */
    CHECK(dg_loader_init(&l, &ds, &s, 3, false) == DG_OK);
    l.scale = 2.0f;
    l.shift = -1.0f;
    CHECK_EQ_INT(dg_loader_num_batches(&l), 2);
    dg_loader_start_epoch(&l, 0);
    CHECK_EQ_INT(dg_loader_next_host(&l, x, y), 3);
    int64_t order[4] = {1, 4, 7, 0};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(y[i], order[i] % 3);
        CHECK(x[i * 6 + 5] == (float)ds.images[order[i] * 6 + 5] * 2.0f - 1.0f);
    }
    CHECK_EQ_INT(dg_loader_next_host(&l, x, y), 1);
    CHECK_EQ_INT(y[0], 0);
    CHECK_EQ_INT(dg_loader_next_host(&l, x, y), 0);
    dg_loader_free(&l);
    dg_sampler_free(&s);

    /* bad arguments */
    dg_clear_error();
    CHECK(dg_sampler_init(&s, 9, 0, 1, false, 0, false) == DG_OK);
    CHECK(dg_loader_init(&l, &ds, &s, 4, false) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "sampler covers 9 samples but the dataset has 10");
    dg_sampler_free(&s);
    dg_clear_error();
    CHECK(dg_sampler_init(&s, 10, 0, 1, false, 0, false) == DG_OK);
    CHECK(dg_loader_init(&l, &ds, &s, 0, false) == DG_ERR);
    CHECK_CONTAINS(dg_last_error(), "batch_size 0");
    dg_sampler_free(&s);
    dg_clear_error();
    dg_dataset_free(&ds);
}

/* Every rank's loader together covers the dataset once per epoch. */
static void test_loader_ranks(void) {
    dg_dataset ds;
    make_dataset(&ds, 30);
    int seen[30] = {0};
    float x[8 * 6];
    int32_t y[8];
    for (int r = 0; r < 3; r++) {
        dg_sampler s;
        dg_loader l;
        CHECK(dg_sampler_init(&s, 30, r, 3, true, 99, false) == DG_OK);
        CHECK(dg_loader_init(&l, &ds, &s, 8, false) == DG_OK);
        dg_loader_start_epoch(&l, 2);
        int64_t b, nb = 0;
        while ((b = dg_loader_next_host(&l, x, y)) > 0) {
            nb++;
            for (int64_t i = 0; i < b; i++) {
                int id = (int)(x[i * 6] * 255.0f + 0.5f) / 7;   /* pixel 0 = 7 * i */
                if (id >= 0 && id < 30) seen[id]++;
            }
        }
        CHECK_EQ_INT(nb, 2);   /* 10 samples, batch 8 */
        dg_loader_free(&l);
        dg_sampler_free(&s);
    }
    for (int i = 0; i < 30; i++) CHECKF(seen[i] == 1, "sample %d seen %d times", i, seen[i]);
    dg_dataset_free(&ds);
}

/* dg_loader_next: arena tensors with the right shapes and contents. */
static void test_loader_tensors(void) {
    dg_dataset ds;
    make_dataset(&ds, 5);
    dg_ctx *ctx = dg_ctx_new(DG_CPU);
    CHECK_NOT_NULL(ctx);
    if (!ctx) { dg_dataset_free(&ds); return; }
    dg_sampler s;
    dg_loader l;
    CHECK(dg_sampler_init(&s, 5, 0, 1, false, 0, false) == DG_OK);
    CHECK(dg_loader_init(&l, &ds, &s, 2, false) == DG_OK);
    for (int flat = 0; flat < 2; flat++) {
        dg_loader_start_epoch(&l, 0);
        dg_tensor *x, *y;
        int64_t b, nb = 0, row = 0;
        while ((b = dg_loader_next(&l, ctx, flat != 0, &x, &y)) > 0) {
            nb++;
            CHECK_EQ_INT(b, nb < 3 ? 2 : 1);
            CHECK_NOT_NULL(x);
            CHECK_NOT_NULL(y);
            if (!x || !y) break;
            CHECK_EQ_INT(x->dtype, DG_F32);
            CHECK_EQ_INT(y->dtype, DG_I32);
            CHECK_EQ_INT(y->ndim, 1);
            CHECK_EQ_INT(y->shape[0], b);
            CHECK_EQ_INT(x->shape[0], b);
            if (flat) {
                CHECK_EQ_INT(x->ndim, 2);
                CHECK_EQ_INT(x->shape[1], 6);
            } else {
                CHECK_EQ_INT(x->ndim, 4);
                CHECK_EQ_INT(x->shape[1], 1);
                CHECK_EQ_INT(x->shape[2], 2);
                CHECK_EQ_INT(x->shape[3], 3);
            }
            float hx[12];
            int32_t hy[2];
            dg_tensor_to_host(x, hx);
            dg_tensor_to_host(y, hy);
            for (int64_t i = 0; i < b; i++, row++) {
                CHECK_EQ_INT(hy[i], ds.labels[row]);
                for (int j = 0; j < 6; j++)
                    CHECK(hx[i * 6 + j] == (float)ds.images[row * 6 + j] / 255.0f);
            }
            dg_ctx_reset_step(ctx);
        }
        CHECK_EQ_INT(b, 0);
        CHECK_EQ_INT(nb, 3);
        CHECK_EQ_INT(row, 5);
    }
    dg_loader_free(&l);
    dg_sampler_free(&s);
    dg_ctx_free(ctx);
    dg_dataset_free(&ds);
}

/* ---- real MNIST ---------------------------------------------------------- */

/* Decompress src (gzip) to dst with zlib, for the plain-vs-gz comparison. */
static bool gunzip_file(const char *src, const char *dst) {
    gzFile in = gzopen(src, "rb");
    FILE *out = fopen(dst, "wb");
    bool ok = in && out;
    char buf[1 << 16];
    int n = 0;
    while (ok && (n = gzread(in, buf, sizeof buf)) > 0)
        ok = fwrite(buf, 1, (size_t)n, out) == (size_t)n;
    if (ok && n < 0) ok = false;
    if (in) gzclose(in);
    if (out) fclose(out);
    return ok;
}

static uint64_t sum_bytes(const uint8_t *p, int64_t n) {
    uint64_t s = 0;
    for (int64_t i = 0; i < n; i++) s += p[i];
    return s;
}

typedef struct {
    bool train;
    int64_t n;
    int32_t first[5];
    uint64_t pixel_sum, label_sum, first_img_sum, last_img_sum;
} mnist_ref;

/* Computed with numpy from the IDX files (sums over all uint8 pixels). */
static const mnist_ref g_mnist_ref[2] = {
    {true, 60000, {5, 0, 4, 1, 9}, 1567298545ULL, 267236ULL, 27525ULL, 20920ULL},
    {false, 10000, {7, 2, 1, 0, 4}, 264923200ULL, 44434ULL, 18454ULL, 41833ULL},
};

static void check_mnist(const dg_dataset *ds, const mnist_ref *ref, const char *what) {
    CHECKF(ds->n == ref->n, "%s: n %lld, want %lld", what, (long long)ds->n, (long long)ref->n);
    CHECK_EQ_INT(ds->ndim_sample, 2);
    CHECK_EQ_INT(ds->sample_shape[0], 28);
    CHECK_EQ_INT(ds->sample_shape[1], 28);
    CHECK_EQ_INT(ds->sample_size, 784);
    CHECK_EQ_INT(ds->num_classes, 10);
    if (ds->n != ref->n) return;
    for (int i = 0; i < 5; i++)
        CHECKF(ds->labels[i] == ref->first[i], "%s: label[%d] = %d, want %d", what, i,
               ds->labels[i], ref->first[i]);
    uint64_t ps = sum_bytes(ds->images, ds->n * 784), ls = 0;
    for (int64_t i = 0; i < ds->n; i++) ls += (uint64_t)ds->labels[i];
    CHECKF(ps == ref->pixel_sum, "%s: pixel sum %llu, want %llu", what,
           (unsigned long long)ps, (unsigned long long)ref->pixel_sum);
    CHECKF(ls == ref->label_sum, "%s: label sum %llu, want %llu", what,
           (unsigned long long)ls, (unsigned long long)ref->label_sum);
    CHECK_EQ_INT(sum_bytes(ds->images, 784), ref->first_img_sum);
    CHECK_EQ_INT(sum_bytes(ds->images + (ds->n - 1) * 784, 784), ref->last_img_sum);
}

static void test_real_mnist(const char *dir) {
    static const char *names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    /* a plain copy of the four files */
    char plain_dir[300];
    snprintf(plain_dir, sizeof plain_dir, "%s/plain", g_tmpdir);
    DG_ASSERT(mkdir(plain_dir, 0700) == 0);
    bool have_plain = true;
    for (int i = 0; i < 4; i++) {
        char src[1024], dst[64];
        snprintf(src, sizeof src, "%s/%s.gz", dir, names[i]);
        snprintf(dst, sizeof dst, "plain/%s", names[i]);
        if (access(src, R_OK) != 0) snprintf(src, sizeof src, "%s/%s", dir, names[i]);
        if (!gunzip_file(src, tmp_path(dst))) {
            CHECKF(false, "could not decompress %s", src);
            have_plain = false;
        }
    }
    for (int t = 0; t < 2; t++) {
        const mnist_ref *ref = &g_mnist_ref[t];
        dg_dataset gz, pl;
        dg_clear_error();
        if (dg_dataset_load_mnist(dir, ref->train, &gz) != DG_OK) {
            CHECKF(false, "load %s split from %s", ref->train ? "train" : "t10k", dir);
            continue;
        }
        check_mnist(&gz, ref, ref->train ? "train" : "t10k");
        if (have_plain) {
            dg_clear_error();
            if (dg_dataset_load_mnist(plain_dir, ref->train, &pl) == DG_OK) {
                check_mnist(&pl, ref, ref->train ? "plain train" : "plain t10k");
                CHECK(pl.n == gz.n && memcmp(pl.images, gz.images, (size_t)gz.n * 784) == 0);
                CHECK(pl.n == gz.n &&
                      memcmp(pl.labels, gz.labels, (size_t)gz.n * sizeof(int32_t)) == 0);
                dg_dataset_free(&pl);
            } else {
                CHECKF(false, "load plain copy from %s", plain_dir);
            }
        }
        if (ref->train) {
            /* two ranks, batch 64: 30000 samples each, 469 batches, values / 255 */
            dg_sampler s;
            dg_loader l;
            CHECK(dg_sampler_init(&s, gz.n, 1, 2, true, 0, false) == DG_OK);
            CHECK(dg_loader_init(&l, &gz, &s, 64, false) == DG_OK);
            CHECK_EQ_INT(dg_loader_num_batches(&l), 469);
            float *x = malloc(64 * 784 * sizeof(float));
            int32_t y[64];
            DG_ASSERT(x != NULL);
            dg_loader_start_epoch(&l, 0);
            int64_t b, nb = 0, rows = 0;
            while ((b = dg_loader_next_host(&l, x, y)) > 0) {
                for (int64_t i = 0; i < b; i++) {
                    int64_t id = s.indices[rows + i];
                    CHECK_EQ_INT(y[i], gz.labels[id]);
                    CHECK(x[i * 784 + 400] == (float)gz.images[id * 784 + 400] / 255.0f);
                }
                rows += b;
                nb++;
            }
            CHECK_EQ_INT(nb, 469);
            CHECK_EQ_INT(rows, 30000);
            free(x);
            dg_loader_free(&l);
            dg_sampler_free(&s);
        }
        dg_dataset_free(&gz);
    }
    dg_clear_error();
}

int main(void) {
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/dg_test_data_XXXXXX");
    DG_ASSERT(mkdtemp(g_tmpdir) != NULL);

    test_idx_valid();
    test_idx_errors();
    test_dataset_synthetic();
    test_sampler_matches_torch();
    test_sampler_structure();
    test_sampler_shuffle();
    test_sampler_errors();
    test_loader_host();
    test_loader_ranks();
    test_loader_tensors();

    const char *mnist = getenv("DG_MNIST_DIR");
    bool skipped = !mnist || !mnist[0];
    if (skipped)
        printf("test_data: DG_MNIST_DIR is empty: real-MNIST checks skipped\n");
    else
        test_real_mnist(mnist);

    for (int i = g_npaths - 1; i >= 0; i--) unlink(g_paths[i]);
    char plain_dir[300];
    snprintf(plain_dir, sizeof plain_dir, "%s/plain", g_tmpdir);
    rmdir(plain_dir);
    rmdir(g_tmpdir);

    int rc = dgt_report("test_data");
    return rc == 0 && skipped ? 77 : rc;
}
