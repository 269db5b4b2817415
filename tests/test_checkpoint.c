/* test_checkpoint.c - dgrad/checkpoint.h without a communicator: a round
 * trip restores parameters, optimizer state, RNG and training position;
 * --keep pruning; dg_checkpoint_latest skips invalid and temporary files;
 * bad input (truncated, bit-flipped, wrong version, bad magic, another
 * model, another optimizer) fails with a message naming the file and
 * changes nothing. Exit 77 (skip) when dgrad has no protobuf-c. */
#define _XOPEN_SOURCE 700
#include "dgrad/checkpoint.h"
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

/* Loading path into m must fail with a message naming path and holding
 * want, and must leave m unchanged. */
static void expect_bad(model *m, const char *path, const char *want, const char *optimizer) {
    uint64_t before = model_hash(m);
    float lr = dg_optim_get_lr(m->opt);
    dg_train_state st = { .step = -1, .optimizer = optimizer };
    dg_clear_error();
    dg_status s = dg_checkpoint_load(path, m->ctx, m->opt, &st, NULL, NULL, 0);
    CHECKF(s == DG_ERR, "loading %s should fail", path);
    const char *e = dg_last_error();
    CHECKF(strstr(e, path) != NULL, "message names the file: %s", e);
    CHECKF(strstr(e, want) != NULL, "message says '%s': %s", want, e);
    CHECKF(!strchr(e, '\n'), "one line: %s", e);
    CHECKF(model_hash(m) == before && dg_optim_get_lr(m->opt) == lr && st.step == -1,
           "nothing loaded from %s", path);
    printf("  %s -> %s\n", path, e);
    dg_clear_error();
}

int main(void) {
    char dir[] = "/tmp/dg_ckpt_testXXXXXX", path[4096], p2[4096];
    char *made = mkdtemp(dir);
    DG_ASSERT(made != NULL);
    model a = make_model(1, 5);
    dg_sampler sampler;
    dg_status ok = dg_sampler_init(&sampler, 1000, 0, 1, true, 42, false);
    DG_ASSERT(ok == DG_OK);
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
