/* test_checkpoint.c - save -> load round trip is bit-exact; resuming from a checkpoint gives
 * bit-identical training (grads drawn from the checkpointed RNG, data from the checkpointed
 * sampler); interrupted / corrupted checkpoints are rejected and the previous one stays valid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetune/checkpoint.h"

enum { N = 1000, ITEMS = 37 };

typedef struct {
    float params[N], grads[N];
    st_optimizer opt;
    st_ema ema;
    st_data_sampler sampler;
    st_rng rng;
    int64_t step;
} trainer;

static void trainer_init(trainer *t, uint64_t seed) {
    memset(t, 0, sizeof *t);
    st_rng_seed(&t->rng, seed);
    for (int i = 0; i < N; i++) t->params[i] = (float)st_rng_normal(&t->rng);
    st_optim_config c;
    st_optim_config_default(&c, ST_OPTIM_ADAMW);
    c.lr = 1e-2;
    assert_int_equal(st_optim_init(&t->opt, &c, NULL, N), ST_OK);
    assert_int_equal(st_ema_init(&t->ema, t->params, N, (float[]){0.9f, 0.5f}, 2, 2, 1), ST_OK);
    uint32_t items[ITEMS];
    for (int i = 0; i < ITEMS; i++) items[i] = (uint32_t)(i * 7);
    assert_int_equal(st_data_sampler_init(&t->sampler, items, ITEMS, seed + 1, 1, 0, 1), ST_OK);
}

static void trainer_free(trainer *t) {
    st_optim_free(&t->opt);
    st_ema_free(&t->ema);
    st_data_sampler_free(&t->sampler);
}

/* One step: grads from the trainer RNG plus the sampled data item; AdamW; EMA. */
static void trainer_step(trainer *t) {
    uint32_t item = st_data_sampler_next(&t->sampler);
    for (int i = 0; i < N; i++) t->grads[i] = (float)st_rng_normal(&t->rng) + 1e-3f * (float)item;
    st_clip_grad_norm(t->grads, N, 10.0);
    assert_int_equal(st_optim_step(&t->opt, t->params, t->grads, 1e-2), ST_OK);
    st_ema_step(&t->ema, t->params, t->opt.step);
    t->step++;
}

static st_train_state state_of(trainer *t, const char *cfg) {
    st_train_state s = {t->step, t->params, N, &t->opt, &t->ema, &t->sampler, &t->rng, cfg, NULL, 0};
    return s;
}

static void assert_same(const trainer *a, const trainer *b) {
    assert_memory_equal(a->params, b->params, sizeof a->params);
    assert_memory_equal(a->opt.m, b->opt.m, N * sizeof(float));
    assert_memory_equal(a->opt.v, b->opt.v, N * sizeof(float));
    assert_int_equal(a->opt.step, b->opt.step);
    assert_int_equal(a->ema.k, b->ema.k);
    for (int j = 0; j < a->ema.k; j++) assert_memory_equal(a->ema.ema[j], b->ema.ema[j], N * sizeof(float));
    assert_memory_equal(a->ema.theta0, b->ema.theta0, N * sizeof(float));
    assert_int_equal(a->ema.n_updates, b->ema.n_updates);
    assert_memory_equal(&a->rng, &b->rng, sizeof a->rng);
    assert_int_equal(a->sampler.epoch, b->sampler.epoch);
    assert_int_equal(a->sampler.pos, b->sampler.pos);
    assert_int_equal(a->sampler.n_shard, b->sampler.n_shard);
    assert_memory_equal(a->sampler.shard, b->sampler.shard, a->sampler.n_shard * sizeof(uint32_t));
    assert_int_equal(a->step, b->step);
}

static char g_run[4096];

static const char *run_dir(const char *name) {
    const char *dir = getenv("SAFETUNE_TEST_TMP");
    snprintf(g_run, sizeof g_run, "%s/%s", dir ? dir : "/tmp", name);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_run);
    assert_int_equal(system(cmd), 0);
    return g_run;
}

static void test_roundtrip_and_resume(void **state) {
    (void)state;
    const char *run = run_dir("ckpt_resume");
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/ckpt-000045", run);
    trainer a, b;
    trainer_init(&a, 11);
    for (int s = 0; s < 45; s++) trainer_step(&a); /* > 1 epoch of the 37-item sampler */
    st_train_state sa = state_of(&a, "{\"lr\": 0.01}");
    assert_int_equal(st_checkpoint_save(dir, &sa), ST_OK);
    int64_t step;
    assert_int_equal(st_checkpoint_verify(dir, &step), ST_OK);
    assert_int_equal(step, 45);
    /* config.json is the plain text (readable by users and JSON tools) */
    char cpath[4300], *ctext = NULL;
    size_t clen = 0;
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    assert_int_equal(st_read_file(cpath, &ctext, &clen), ST_OK);
    assert_string_equal(ctext, "{\"lr\": 0.01}");
    free(ctext);

    /* Load into a differently initialised trainer: equal bit for bit. */
    trainer_init(&b, 99);
    st_train_state sb = state_of(&b, NULL);
    char *cfg = NULL;
    assert_int_equal(st_checkpoint_load(dir, &sb, &cfg), ST_OK);
    b.step = sb.step;
    assert_string_equal(cfg, "{\"lr\": 0.01}");
    free(cfg);
    assert_same(&a, &b);
    /* an edited config.json (same length) no longer verifies */
    FILE *cf = fopen(cpath, "r+b");
    assert_non_null(cf);
    fseek(cf, 10, SEEK_SET);
    fputc('2', cf);
    fclose(cf);
    assert_int_equal(st_checkpoint_verify(dir, NULL), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "config.json: checksum mismatch"));
    cf = fopen(cpath, "r+b");
    fseek(cf, 10, SEEK_SET);
    fputc('1', cf);
    fclose(cf);
    assert_int_equal(st_checkpoint_verify(dir, NULL), ST_OK);
    /* checkpoints from before kept the 32-byte blob header on config.json: still loaded */
    {
        char mpath[4300], *man = NULL, *out = NULL;
        size_t mlen = 0;
        snprintf(mpath, sizeof mpath, "%s/MANIFEST", dir);
        assert_int_equal(st_read_file(mpath, &man, &mlen), ST_OK);
        char *line = strstr(man, "blob config.json 12 ");
        assert_non_null(line);
        out = malloc(mlen + 8);
        const size_t pre = (size_t)(line - man);
        memcpy(out, man, pre);
        sprintf(out + pre, "blob config.json 44 %s", line + strlen("blob config.json 12 "));
        assert_int_equal(st_write_file_atomic(mpath, out, strlen(out)), ST_OK);
        unsigned long long h = strtoull(line + strlen("blob config.json 12 "), NULL, 16);
        uint8_t hdr[32] = {0};
        const uint32_t ver = 1;
        const uint64_t nb = 12, hh = h;
        memcpy(hdr, "STCKBLOB", 8);
        memcpy(hdr + 8, &ver, 4);
        memcpy(hdr + 16, &nb, 8);
        memcpy(hdr + 24, &hh, 8);
        FILE *cw = fopen(cpath, "wb");
        fwrite(hdr, 1, 32, cw);
        fputs("{\"lr\": 0.01}", cw);
        fclose(cw);
        char *cfg2 = NULL;
        assert_int_equal(st_checkpoint_load(dir, &sb, &cfg2), ST_OK);
        assert_string_equal(cfg2, "{\"lr\": 0.01}");
        free(cfg2);
        free(man);
        free(out);
    }

    /* Continue both 20 steps: identical trajectories. */
    for (int s = 0; s < 20; s++) {
        trainer_step(&a);
        trainer_step(&b);
    }
    assert_same(&a, &b);
    trainer_free(&a);
    trainer_free(&b);
}

static void test_interrupted_and_corrupt(void **state) {
    (void)state;
    const char *run = run_dir("ckpt_interrupt");
    char run_copy[4096], d10[4200], d20[4200], d30[4200], d40[4200], path[4400], latest[4400];
    snprintf(run_copy, sizeof run_copy, "%s", run);
    snprintf(d10, sizeof d10, "%s/ckpt-10", run_copy);
    snprintf(d20, sizeof d20, "%s/ckpt-20", run_copy);
    snprintf(d30, sizeof d30, "%s/ckpt-30", run_copy);
    snprintf(d40, sizeof d40, "%s/ckpt-40", run_copy);
    trainer a;
    trainer_init(&a, 5);
    for (int s = 0; s < 10; s++) trainer_step(&a);
    st_train_state sa = state_of(&a, NULL);
    assert_int_equal(st_checkpoint_save(d10, &sa), ST_OK);
    float saved10[N];
    memcpy(saved10, a.params, sizeof saved10);

    /* ckpt-20: MANIFEST never written (interrupted before the marker). */
    for (int s = 0; s < 10; s++) trainer_step(&a);
    sa = state_of(&a, NULL);
    assert_int_equal(st_checkpoint_save(d20, &sa), ST_OK);
    snprintf(path, sizeof path, "%s/MANIFEST", d20);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(st_checkpoint_verify(d20, NULL), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "no MANIFEST: incomplete checkpoint"));
    assert_non_null(strstr(st_last_error(), d20));
    /* an empty folder is said to be one (not "the save was interrupted") */
    snprintf(path, sizeof path, "%s/empty", run_copy);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(st_checkpoint_verify(path, NULL), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "an empty folder, not a checkpoint"));
    assert_int_equal(rmdir(path), 0);

    /* ckpt-30: a temp file left behind. */
    sa.step = 30;
    assert_int_equal(st_checkpoint_save(d30, &sa), ST_OK);
    snprintf(path, sizeof path, "%s/optim_m.bin.tmp.12345", d30);
    assert_int_equal(st_write_file_atomic(path, "partial", 7), ST_OK);
    trainer b;
    trainer_init(&b, 6);
    st_train_state sb = state_of(&b, NULL);
    float before[N];
    memcpy(before, b.params, sizeof before);
    assert_int_equal(st_checkpoint_load(d30, &sb, NULL), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "unfinished temp file optim_m.bin.tmp.12345"));
    assert_memory_equal(before, b.params, sizeof before); /* nothing was overwritten */

    /* ckpt-40: a flipped byte in params.bin (corruption) and a leftover .partial folder. */
    sa.step = 40;
    assert_int_equal(st_checkpoint_save(d40, &sa), ST_OK);
    snprintf(path, sizeof path, "%s/params.bin", d40);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 100, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 100, SEEK_SET);
    fputc(c ^ 0x01, f);
    fclose(f);
    assert_int_equal(st_checkpoint_load(d40, &sb, NULL), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "params.bin: checksum mismatch"));
    snprintf(path, sizeof path, "%s/ckpt-50.partial.777", run_copy);
    assert_int_equal(mkdir(path, 0755), 0);

    /* The previous complete checkpoint is still found and loads. */
    assert_int_equal(st_checkpoint_find_latest(run_copy, "ckpt-", latest, sizeof latest), ST_OK);
    assert_string_equal(latest, d10);
    assert_int_equal(st_checkpoint_load(latest, &sb, NULL), ST_OK);
    assert_memory_equal(saved10, b.params, sizeof saved10);
    assert_int_equal(sb.step, 10);

    /* Truncated blob. */
    snprintf(path, sizeof path, "%s/optim_v.bin", d10);
    assert_int_equal(truncate(path, 1000), 0);
    assert_int_equal(st_checkpoint_verify(d10, NULL), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "optim_v.bin: truncated"));
    assert_int_equal(st_checkpoint_find_latest(run_copy, "ckpt-", latest, sizeof latest), ST_ERR_IO);
    trainer_free(&a);
    trainer_free(&b);
}

static void test_mismatch_and_overwrite(void **state) {
    (void)state;
    const char *run = run_dir("ckpt_mismatch");
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/a/b/ckpt", run); /* parents created */
    trainer a;
    trainer_init(&a, 1);
    trainer_step(&a);
    st_train_state sa = state_of(&a, NULL);
    assert_int_equal(st_checkpoint_save(dir, &sa), ST_OK);
    /* overwrite in place with a later step */
    trainer_step(&a);
    sa = state_of(&a, NULL);
    assert_int_equal(st_checkpoint_save(dir, &sa), ST_OK);
    int64_t step;
    assert_int_equal(st_checkpoint_verify(dir, &step), ST_OK);
    assert_int_equal(step, 2);

    /* a run with a different parameter count is refused */
    float small[N / 2];
    st_train_state s2 = {0, small, N / 2, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    assert_int_equal(st_checkpoint_load(dir, &s2, NULL), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "parameters"));
    /* a run using SGD cannot take AdamW state */
    st_optim_config c;
    st_optim_config_default(&c, ST_OPTIM_SGD);
    st_optimizer sgd;
    assert_int_equal(st_optim_init(&sgd, &c, NULL, N), ST_OK);
    st_train_state s3 = {0, NULL, N, &sgd, NULL, NULL, NULL, NULL, NULL, 0};
    assert_int_equal(st_checkpoint_load(dir, &s3, NULL), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "optimizer is adamw"));
    st_optim_free(&sgd);
    /* a checkpoint saved without EMA cannot restore one */
    char d2[4300];
    snprintf(d2, sizeof d2, "%s/noema", run);
    st_train_state s4 = {3, a.params, N, &a.opt, NULL, NULL, NULL, NULL, NULL, 0};
    assert_int_equal(st_checkpoint_save(d2, &s4), ST_OK);
    s4.ema = &a.ema;
    assert_int_equal(st_checkpoint_load(d2, &s4, NULL), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "no EMA state"));
    /* extra state blobs round-trip; a checkpoint with 2 decays refuses a run with 1 */
    {
        char d3[4300];
        snprintf(d3, sizeof d3, "%s/extra", run);
        double meta[2] = {0.25, 7}, back[2] = {0, 0};
        st_checkpoint_blob xb = {"best_meta", meta, sizeof meta};
        st_train_state s5 = {3, a.params, N, NULL, &a.ema, NULL, NULL, NULL, &xb, 1};
        assert_int_equal(st_checkpoint_save(d3, &s5), ST_OK);
        st_checkpoint_blob rb = {"best_meta", back, sizeof back};
        st_train_state s6 = {0, NULL, N, NULL, NULL, NULL, NULL, NULL, &rb, 1};
        assert_int_equal(st_checkpoint_load(d3, &s6, NULL), ST_OK);
        assert_memory_equal(meta, back, sizeof meta);
        float one[N];
        assert_int_equal(st_checkpoint_read_blob(d3, "ema", 1, one, sizeof one), ST_OK);
        assert_memory_equal(one, a.ema.ema[1], sizeof one);
        st_ema e1;
        assert_int_equal(st_ema_init(&e1, a.params, N, (float[]){0.9f}, 1, 2, 1), ST_OK);
        st_train_state s7 = {0, NULL, N, NULL, &e1, NULL, NULL, NULL, NULL, 0};
        assert_int_equal(st_checkpoint_load(d3, &s7, NULL), ST_ERR_FORMAT);
        assert_non_null(strstr(st_last_error(), "2 EMA decays, this run 1"));
        st_ema_free(&e1);
    }
    /* not a folder */
    assert_int_equal(st_checkpoint_verify("/nonexistent/ckpt", NULL), ST_ERR_IO);
    trainer_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_resume),
        cmocka_unit_test(test_interrupted_and_corrupt),
        cmocka_unit_test(test_mismatch_and_overwrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
