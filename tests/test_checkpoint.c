/* test_checkpoint.c - dgrad/checkpoint.h without a communicator: a round
 * trip restores parameters, optimizer state, RNG and training position;
 * --keep pruning; dg_checkpoint_latest skips invalid and temporary files;
 * bad input (truncated, bit-flipped, wrong version, bad magic, another
 * model, another optimizer) fails with a message naming the file and
 * changes nothing. Buffers (dg_train_state.buffers): restored bitwise; a
 * count, shape or dtype mismatch, or buffers in the file but none in the
 * model, fails before anything changes; a checkpoint without buffers
 * loads with none; corrupt stored buffers are caught by
 * dg_checkpoint_check_buffer. Exit 77 (skip) when dgrad has no protobuf-c. */
#define _XOPEN_SOURCE 700
#include "dgrad/dist_checkpoint.h"
#include "dgrad/nn.h"
#include "test_util.h"

#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    dg_ctx *ctx;
    dg_optim *opt;
    dg_tensor **params;
    int np;
} model;

/* Linear(6, hid) -> ReLU -> Linear(hid, 3), Adam; state filled from seed */
static model make_model(uint64_t seed, int64_t hid) {
    model m;
    m.ctx = dg_ctx_new(DG_CPU);
    DG_ASSERT(m.ctx != NULL);
    dg_manual_seed(m.ctx, seed);
    dg_module *layers[3] = { dg_nn_linear(m.ctx, 6, hid, true), dg_nn_relu(m.ctx), dg_nn_linear(m.ctx, hid, 3, true) };
    m.np = dg_module_parameters(dg_nn_sequential(m.ctx, 3, layers), &m.params);
    m.opt = dg_optim_adam(m.params, m.np, dg_adam_defaults());
    DG_ASSERT(m.opt != NULL);
    for (int i = 0; i < m.np; i++)
        for (int s = 0; s < dg_optim_num_slots(m.opt); s++) dg_init_uniform(dg_optim_state(m.opt, i, s), 0.0f, 1.0f);
    dg_optim_set_step_count(m.opt, (int64_t)seed * 10);
    dg_optim_set_lr(m.opt, 1e-3f * (float)seed);
    return m;
}

/* FNV-1a over parameters and optimizer state */
static uint64_t model_hash(model *m) {
    uint64_t h = 1469598103934665603ULL;
    float buf[64];
    for (int i = 0; i < m->np; i++)
        for (int s = -1; s < dg_optim_num_slots(m->opt); s++) {
            dg_tensor *t = s < 0 ? m->params[i] : dg_optim_state(m->opt, i, s);
            DG_ASSERT(dg_numel(t) <= 64);
            dg_tensor_to_host(t, buf);
            const unsigned char *b = (const unsigned char *)buf;
            for (size_t k = 0; k < (size_t)dg_numel(t) * sizeof(float); k++) h = (h ^ b[k]) * 1099511628211ULL;
        }
    for (int i = 0; i < m->np; i++) h = (h ^ (uint64_t)dg_optim_param_step_count(m->opt, i)) * 1099511628211ULL;
    return h ^ (uint64_t)dg_optim_step_count(m->opt);
}

static size_t read_file(const char *path, unsigned char **buf) {
    FILE *f = fopen(path, "rb");
    DG_ASSERT(f != NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = malloc((size_t)n);
    size_t got = fread(*buf, 1, (size_t)n, f);
    DG_ASSERT(got == (size_t)n);
    fclose(f);
    return (size_t)n;
}

static void write_file(const char *path, const unsigned char *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    DG_ASSERT(f != NULL);
    size_t put = fwrite(buf, 1, n, f);
    DG_ASSERT(put == n);
    fclose(f);
}

/* FNV-1a over the bytes of n tensors (any dtype) */
static uint64_t tensors_hash(dg_tensor **t, int n) {
    uint64_t h = 1469598103934665603ULL;
    unsigned char buf[512];
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)dg_numel(t[i]) * dg_dtype_size(t[i]->dtype);
        DG_ASSERT(bytes <= sizeof buf);
        dg_tensor_to_host(t[i], buf);
        for (size_t k = 0; k < bytes; k++) h = (h ^ buf[k]) * 1099511628211ULL;
    }
    return h;
}

/* Loading path into m with st (st->step must be -1) must fail with a
 * message naming path and holding want, and must leave m and st's buffers
 * unchanged. */
static void expect_bad_st(model *m, const char *path, const char *want, dg_train_state *st) {
    uint64_t before = model_hash(m), bbefore = tensors_hash(st->buffers, st->num_buffers);
    float lr = dg_optim_get_lr(m->opt);
    dg_clear_error();
    dg_status s = dg_checkpoint_load(path, m->ctx, m->opt, st, NULL, NULL, 0);
    CHECKF(s == DG_ERR, "loading %s should fail", path);
    const char *e = dg_last_error();
    CHECKF(strstr(e, path) != NULL, "message names the file: %s", e);
    CHECKF(strstr(e, want) != NULL, "message says '%s': %s", want, e);
    CHECKF(!strchr(e, '\n'), "one line: %s", e);
    CHECKF(model_hash(m) == before && dg_optim_get_lr(m->opt) == lr && st->step == -1,
           "nothing loaded from %s", path);
    CHECKF(tensors_hash(st->buffers, st->num_buffers) == bbefore, "no buffer loaded from %s", path);
    printf("  %s -> %s\n", path, e);
    dg_clear_error();
}

static void expect_bad(model *m, const char *path, const char *want, const char *optimizer) {
    dg_train_state st = { .step = -1, .optimizer = optimizer };
    expect_bad_st(m, path, want, &st);
}

/* A persistent tensor of m's context whose bytes are b, b + 1, ... */
static dg_tensor *pattern_tensor(model *m, dg_dtype dtype, int ndim, const int64_t *shape, unsigned b) {
    dg_tensor *t = dg_tensor_persistent(m->ctx, dtype, ndim, shape);
    DG_ASSERT(t != NULL);
    unsigned char buf[512];
    size_t bytes = (size_t)dg_numel(t) * dg_dtype_size(dtype);
    DG_ASSERT(bytes <= sizeof buf);
    for (size_t k = 0; k < bytes; k++) buf[k] = (unsigned char)(b + k);
    dg_tensor_copy_from_host(t, buf);
    return t;
}

/* CRC32C, to re-seal a checkpoint file after editing its payload */
static uint32_t crc32c(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

/* buf is a whole checkpoint file: magic, version (2 bytes), then the
 * payload (field 2) and its CRC (field 3, the last 4 bytes). Recompute it. */
static void reseal(unsigned char *buf, size_t n) {
    DG_ASSERT(buf[10] == 0x12);
    size_t len = 0, at = 11;
    int sh = 0;
    for (; buf[at] & 0x80; sh += 7) len |= (size_t)(buf[at++] & 0x7f) << sh;
    len |= (size_t)buf[at++] << sh;
    DG_ASSERT(at + len + 5 == n && buf[n - 5] == 0x1d);
    uint32_t c = crc32c(buf + at, len);
    for (int k = 0; k < 4; k++) buf[n - 4 + k] = (unsigned char)(c >> (8 * k));
}

/* Offset of the first occurrence of pat (m bytes) in buf, or -1 */
static long find_bytes(const unsigned char *buf, size_t n, const unsigned char *pat, size_t m) {
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(buf + i, pat, m)) return (long)i;
    return -1;
}

/* Buffers: a round trip restores them bitwise; mismatches fail before
 * anything changes; old-style checkpoints (no buffers) load without. dir
 * holds old, a checkpoint of a model like make_model(x, 5) without
 * buffers. */
static void test_buffers(const char *dir, const char *old) {
    char bdir[2048], bpath[4096], bad[4096];
    snprintf(bdir, sizeof bdir, "%s/buffers", dir);
    model e = make_model(5, 5);
    const int64_t s4[1] = { 4 }, s23[2] = { 2, 3 }, s32[2] = { 3, 2 };
    dg_tensor *eb[2] = { pattern_tensor(&e, DG_F32, 1, s4, 1), pattern_tensor(&e, DG_I64, 2, s23, 100) };
    uint64_t hb = tensors_hash(eb, 2), he = model_hash(&e);
    dg_train_state es = { .step = 3, .optimizer = "adam", .buffers = eb, .num_buffers = 2 };
    CHECK(dg_checkpoint_save(bdir, e.ctx, e.opt, &es, NULL, 0) == DG_OK);
    snprintf(bpath, sizeof bpath, "%s/ckpt-3.dgck", bdir);
    unsigned char *buf;
    size_t n = read_file(bpath, &buf);
    CHECK(dg_checkpoint_check_buffer(buf, n, "mem") == DG_OK);

    /* overwrite, load back into the same model: bitwise equal */
    dg_tensor *scratch[2] = { pattern_tensor(&e, DG_F32, 1, s4, 7), pattern_tensor(&e, DG_I64, 2, s23, 9) };
    for (int i = 0; i < 2; i++) CHECK(dg_tensor_copy(eb[i], scratch[i]) == DG_OK);
    CHECK(tensors_hash(eb, 2) != hb);
    dg_train_state rs = { .optimizer = "adam", .buffers = eb, .num_buffers = 2 };
    CHECK(dg_checkpoint_load(bpath, e.ctx, e.opt, &rs, NULL, NULL, 0) == DG_OK);
    CHECK(tensors_hash(eb, 2) == hb && model_hash(&e) == he && rs.step == 3);
    int64_t iv[6];
    dg_tensor_to_host(eb[1], iv);
    CHECKF(iv[0] == 0x6b6a696867666564LL, "int64 buffer restored bitwise: %llx", (unsigned long long)iv[0]);
    /* and into another model of the same shapes */
    model f = make_model(6, 5);
    dg_tensor *fb[2] = { pattern_tensor(&f, DG_F32, 1, s4, 50), pattern_tensor(&f, DG_I64, 2, s23, 60) };
    dg_train_state fs = { .optimizer = "adam", .buffers = fb, .num_buffers = 2 };
    CHECK(dg_checkpoint_load(bdir, f.ctx, f.opt, &fs, NULL, NULL, 0) == DG_OK);
    CHECK(tensors_hash(fb, 2) == hb && model_hash(&f) == he);

    /* mismatches: model c (other parameters) keeps its parameters and buffers */
    model c = make_model(3, 5);
    dg_tensor *cb[2] = { pattern_tensor(&c, DG_F32, 1, s4, 30), pattern_tensor(&c, DG_I64, 2, s32, 40) };
    dg_train_state cs = { .step = -1, .optimizer = "adam", .buffers = cb, .num_buffers = 1 };
    expect_bad_st(&c, bpath, "checkpoint has 2 buffers [4, 2x3], model has 1 buffers [4]", &cs);
    cs.num_buffers = 2;
    expect_bad_st(&c, bpath, "checkpoint has 2 buffers [4, 2x3], model has 2 buffers [4, 3x2]", &cs);
    cb[1] = pattern_tensor(&c, DG_I32, 2, s23, 40);
    expect_bad_st(&c, bpath, "buffer 1 is int64 in the checkpoint, int32 in the model", &cs);
    /* buffers in the file, none in the state (or no state) */
    expect_bad(&c, bpath, "checkpoint has 2 buffers [4, 2x3], model has 0 buffers []", "adam");
    uint64_t hc = model_hash(&c);
    dg_clear_error();
    CHECK(dg_checkpoint_load(bpath, c.ctx, NULL, NULL, NULL, NULL, 0) == DG_ERR);
    CHECKF(strstr(dg_last_error(), "checkpoint has 2 buffers") != NULL, "st == NULL: %s", dg_last_error());
    CHECK(model_hash(&c) == hc);
    dg_clear_error();
    /* an old-style checkpoint (no buffers): loads with none, not with some */
    dg_train_state os = { .optimizer = "adam" };
    CHECK(dg_checkpoint_load(old, c.ctx, c.opt, &os, NULL, NULL, 0) == DG_OK);
    cb[1] = pattern_tensor(&c, DG_I64, 2, s23, 40);
    cs.step = -1;
    expect_bad_st(&c, old, "checkpoint has 0 buffers [], model has 2 buffers [4, 2x3]", &cs);

    /* corrupt stored buffers: buffer 1's Tensor is shape {2, 3} (packed),
     * dtype 4 (I64), then 48 bytes of data */
    const unsigned char t1[] = { 0x12, 0x02, 0x02, 0x03, 0x18, 0x04, 0x22, 0x30 };
    long at = find_bytes(buf, n, t1, sizeof t1);
    CHECKF(at > 0 && find_bytes(buf + at + 1, n - (size_t)at - 1, t1, sizeof t1) < 0, "buffer 1 found once");
    if (at > 0) {
        buf[at + 3] = 0x04;   /* shape 2x4: needs 64 bytes */
        reseal(buf, n);
        dg_clear_error();
        CHECK(dg_checkpoint_check_buffer(buf, n, "mem") == DG_ERR);
        CHECKF(strstr(dg_last_error(), "mem: corrupt checkpoint: buffer 1 holds 48 bytes, its shape needs 64"),
               "%s", dg_last_error());
        snprintf(bad, sizeof bad, "%s/bufshape.dgck", bdir);
        write_file(bad, buf, n);
        cs.step = -1;
        expect_bad_st(&c, bad, "corrupt checkpoint: buffer 1 holds 48 bytes", &cs);
        buf[at + 3] = 0x03;
        buf[at + 5] = 0x09;   /* unknown dtype */
        reseal(buf, n);
        CHECK(dg_checkpoint_check_buffer(buf, n, "mem") == DG_ERR);
        CHECKF(strstr(dg_last_error(), "buffer 1 has unknown dtype 9"), "%s", dg_last_error());
        buf[at + 5] = 0x04;
        reseal(buf, n);
        dg_clear_error();
        CHECK(dg_checkpoint_check_buffer(buf, n, "mem") == DG_OK);
    }
    /* bad arguments to save */
    dg_train_state ns = { .step = 4, .optimizer = "adam", .num_buffers = 1 };
    CHECK(dg_checkpoint_save(bdir, e.ctx, e.opt, &ns, NULL, 0) == DG_ERR);
    CHECKF(strstr(dg_last_error(), "num_buffers 1 without buffers"), "%s", dg_last_error());
    dg_clear_error();
    free(buf);
    dg_ctx_free(e.ctx);
    dg_ctx_free(f.ctx);
    dg_ctx_free(c.ctx);
}

int main(void) {
    char dir[] = "/tmp/dg_ckpt_testXXXXXX", path[4096], p2[4096];
    char *made = mkdtemp(dir);
    DG_ASSERT(made != NULL);
    model a = make_model(1, 5);
    dg_sampler sampler;
    dg_status ok = dg_sampler_init(&sampler, 1000, 0, 1, true, 42, false);
    DG_ASSERT(ok == DG_OK);
    dg_optim_set_param_step_count(a.opt, 1, 3);   /* a parameter that had no gradient at 7 steps */
    dg_train_state st = { .step = 7, .epoch = 2, .pos = 96, .batch_size = 32, .optimizer = "adam",
                          .sampler = &sampler, .num_stats = 2, .stats = { 3.25, 3.0 } };
    dg_clear_error();
    if (dg_checkpoint_save(dir, a.ctx, a.opt, &st, NULL, 2)) {
        if (strstr(dg_last_error(), "without protobuf-c")) {
            printf("test_checkpoint: skipped (%s)\n", dg_last_error());
            return 77;
        }
        CHECKF(false, "save");
    }
    for (int s = 8; s <= 9; s++) {
        st.step = s;
        CHECK(dg_checkpoint_save(dir, a.ctx, a.opt, &st, NULL, 2) == DG_OK);
    }
    snprintf(path, sizeof path, "%s/ckpt-7.dgck", dir);
    CHECKF(access(path, F_OK) != 0, "keep=2 removed ckpt-7");
    CHECK(dg_checkpoint_latest(dir, path, sizeof path) == DG_OK);
    snprintf(p2, sizeof p2, "%s/ckpt-9.dgck", dir);
    CHECKF(!strcmp(path, p2), "latest is %s", path);

    /* round trip into a differently initialized model of the same shape */
    model b = make_model(2, 5);
    uint64_t ha = model_hash(&a);
    CHECK(model_hash(&b) != ha);
    dg_sampler sb;
    ok = dg_sampler_init(&sb, 1000, 0, 1, true, 7, false);
    DG_ASSERT(ok == DG_OK);
    dg_train_state rs = { .batch_size = 32, .optimizer = "adam", .sampler = &sb };
    char loaded[4096];
    CHECK(dg_checkpoint_load(dir, b.ctx, b.opt, &rs, NULL, loaded, sizeof loaded) == DG_OK);
    CHECKF(!strcmp(loaded, p2), "loaded %s", loaded);
    CHECK(model_hash(&b) == ha);
    CHECK(dg_optim_param_step_count(b.opt, 1) == 3 && dg_optim_param_step_count(b.opt, 0) == 10);
    CHECK(dg_optim_get_lr(b.opt) == dg_optim_get_lr(a.opt));
    CHECK(dg_rand_u64(a.ctx) == dg_rand_u64(b.ctx));
    CHECK_EQ_INT(rs.step, 9);
    CHECK_EQ_INT(rs.epoch, 2);
    CHECK_EQ_INT(rs.pos, 96);
    CHECK_EQ_INT(rs.epoch_samples, 96);
    CHECK_EQ_INT(rs.saved_world_size, 1);
    CHECK(rs.num_stats == 2 && rs.stats[0] == 3.25 && rs.stats[1] == 3.0);
    CHECK(sb.seed == 42 && sb.epoch == 2);
    CHECK(sb.indices[0] == sampler.indices[0] || sampler.epoch != 2);

    /* another batch size: continue at the next global batch boundary */
    dg_train_state rs2 = { .batch_size = 64, .optimizer = "adam" };
    CHECK(dg_checkpoint_load(p2, b.ctx, b.opt, &rs2, NULL, NULL, 0) == DG_OK);
    CHECK_EQ_INT(rs2.pos, 128);

    /* a whole file checks from memory */
    unsigned char *buf;
    size_t n = read_file(p2, &buf);
    CHECK(dg_checkpoint_check_buffer(buf, n, "mem") == DG_OK);

    /* bad input: each in its own file, loaded into model c */
    model c = make_model(3, 5);
    char bad[4096];
    snprintf(bad, sizeof bad, "%s/truncated.dgck", dir);
    write_file(bad, buf, n / 2);
    expect_bad(&c, bad, "truncated or corrupt", "adam");
    snprintf(bad, sizeof bad, "%s/flipped.dgck", dir);
    buf[n / 2] ^= 0x10;
    write_file(bad, buf, n);
    buf[n / 2] ^= 0x10;
    expect_bad(&c, bad, "checksum mismatch", "adam");
    /* per-parameter step counts (field 6, packed): 10, 3, 10, 10; one
     * beyond the optimizer's step count is corrupt */
    const unsigned char ps[] = { 0x32, 0x04, 0x0a, 0x03, 0x0a, 0x0a };
    long at = find_bytes(buf, n, ps, sizeof ps);
    CHECKF(at > 0 && find_bytes(buf + at + 1, n - (size_t)at - 1, ps, sizeof ps) < 0, "param_steps found once");
    if (at > 0) {
        buf[at + 3] = 0x0b;
        reseal(buf, n);
        snprintf(bad, sizeof bad, "%s/psteps.dgck", dir);
        write_file(bad, buf, n);
        expect_bad(&c, bad, "corrupt checkpoint: parameter 1's step count 11 is outside [0, 10]", "adam");
        buf[at + 3] = 0x03;
        reseal(buf, n);
    }
    snprintf(bad, sizeof bad, "%s/version.dgck", dir);
    CHECK(buf[8] == 0x08 && buf[9] == DG_CHECKPOINT_VERSION);   /* field 1, varint */
    buf[9] = 99;
    write_file(bad, buf, n);
    buf[9] = DG_CHECKPOINT_VERSION;
    expect_bad(&c, bad, "unsupported checkpoint format version 99", "adam");
    snprintf(bad, sizeof bad, "%s/magic.dgck", dir);
    buf[0] = 'X';
    write_file(bad, buf, n);
    buf[0] = 'D';
    expect_bad(&c, bad, "bad magic", "adam");
    snprintf(bad, sizeof bad, "%s/empty.dgck", dir);
    write_file(bad, buf, 0);
    expect_bad(&c, bad, "bad magic", "adam");
    snprintf(bad, sizeof bad, "%s/missing.dgck", dir);
    expect_bad(&c, bad, "cannot open", "adam");
    expect_bad(&c, p2, "optimizer 'adam', this run uses 'sgd'", "sgd");
    /* another model: hidden size 4 */
    char other[2048];
    snprintf(other, sizeof other, "%s/other", dir);
    model d = make_model(4, 4);
    dg_train_state ds = { .step = 1, .optimizer = "adam" };
    CHECK(dg_checkpoint_save(other, d.ctx, d.opt, &ds, NULL, 0) == DG_OK);
    snprintf(bad, sizeof bad, "%s/ckpt-1.dgck", other);
    expect_bad(&c, bad, "checkpoint has 4 parameters [4x6, 4, 3x4, 3], model has 4 parameters [5x6, 5, 3x5, 3]",
               "adam");

    /* latest: skips a corrupt newest file and temporary files */
    snprintf(bad, sizeof bad, "%s/ckpt-10.dgck", dir);
    write_file(bad, buf, n / 3);
    snprintf(bad, sizeof bad, "%s/.ckpt-11.dgck.tmp.123", dir);
    write_file(bad, buf, n);
    CHECK(dg_checkpoint_latest(dir, path, sizeof path) == DG_OK);
    CHECKF(!strcmp(path, p2), "latest skips corrupt and temporary files: %s", path);
    /* only invalid ones: an error naming the newest */
    char only[2048];
    snprintf(only, sizeof only, "%s/only", dir);
    int mk = mkdir(only, 0777);
    DG_ASSERT(mk == 0);
    snprintf(bad, sizeof bad, "%s/ckpt-3.dgck", only);
    write_file(bad, buf, n / 2);
    dg_clear_error();
    CHECK(dg_checkpoint_latest(only, path, sizeof path) == DG_ERR);
    CHECKF(strstr(dg_last_error(), bad) != NULL, "names %s: %s", bad, dg_last_error());
    expect_bad(&c, only, "ckpt-3.dgck", "adam");
    dg_clear_error();
    /* no checkpoint at all: OK and "" */
    snprintf(bad, sizeof bad, "%s/none", dir);
    CHECK(dg_checkpoint_latest(bad, path, sizeof path) == DG_OK && path[0] == '\0');

    test_buffers(dir, p2);

    free(buf);
    dg_sampler_free(&sampler);
    dg_sampler_free(&sb);
    dg_ctx_free(a.ctx);
    dg_ctx_free(b.ctx);
    dg_ctx_free(c.ctx);
    dg_ctx_free(d.ctx);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "test_checkpoint: could not remove %s\n", dir);
    return dgt_report("test_checkpoint");
}
