/* test_trainer.c - trainer API on a tiny in-memory model: hand-computed losses (all-zero
 * weights give uniform logits, so every masked CE is exactly ln V), argument errors, a
 * non-finite weight stops the step without touching the state, hook fields in metrics.jsonl,
 * checkpoint + resume reproduces the next step bit-exactly. (Parity with PyTorch and the CLI
 * end-to-end checks live in tests/parity/trainer.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetune/trainer.h"

static st_config tiny_cfg(void) {
    st_config c;
    memset(&c, 0, sizeof c);
    c.arch = ST_ARCH_LLAMA;
    c.hidden_size = 16;
    c.intermediate_size = 24;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 4;
    c.vocab_size = 37;
    c.max_position_embeddings = 64;
    c.rope_theta = 10000.0f;
    c.rms_norm_eps = 1e-5f;
    c.bos_token_id = c.eos_token_id = -1;
    return c;
}

/* rows of lengths 4..13, second half trained */
static void synth(st_tokenized *tk, int n) {
    tk->n = (size_t)n;
    tk->offsets = calloc((size_t)n + 1, sizeof *tk->offsets);
    tk->ids = malloc(16 * (size_t)n * sizeof *tk->ids);
    tk->mask = malloc(16 * (size_t)n);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        tk->offsets[i] = o;
        int len = 4 + i % 10;
        for (int t = 0; t < len; t++, o++) {
            tk->ids[o] = (int32_t)((i * 31 + t * 7) % 37);
            tk->mask[o] = t >= len / 2;
        }
    }
    tk->offsets[n] = o;
}

static void random_init(st_model *m, uint64_t seed) {
    st_rng r;
    st_rng_seed(&r, seed);
    for (size_t i = 0; i < m->layout.n_floats; i++) m->params[i] = (float)(0.2 * st_rng_normal(&r));
}

static void base_cfg(st_train_config *c) {
    st_train_config_default(c);
    c->batch_size = 2;
    c->grad_accum = 2;
    c->max_steps = 4;
    c->max_seq_len = 16;
    c->val_fraction = 0.2;
    c->optim.lr = 1e-2;
}

static void test_zero_weights_loss_is_ln_v(void **state) {
    (void)state;
    st_config cfg = tiny_cfg();
    st_model *m;
    assert_int_equal(st_model_new(&cfg, &m), ST_OK); /* zero weights */
    st_tokenized tk;
    synth(&tk, 20);
    st_train_config c;
    base_cfg(&c);
    st_trainer *t;
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_OK);
    assert_int_equal(st_trainer_n_val(t), 4);
    assert_int_equal(st_trainer_n_train(t), 16);
    double v;
    assert_int_equal(st_trainer_eval(t, m->params, &v), ST_OK);
    assert_true(fabs(v - log(37.0)) < 1e-6);
    st_step_metrics sm;
    assert_int_equal(st_trainer_step(t, &sm), ST_OK);
    assert_true(fabs(sm.loss - log(37.0)) < 1e-6);
    assert_int_equal(sm.step, 1);
    assert_true(sm.lr == 1e-2);
    assert_true(sm.targets > 0);
    st_trainer_free(t);
    st_tokenized_free(&tk);
    st_model_free(m);
}

static void test_argument_errors(void **state) {
    (void)state;
    st_config cfg = tiny_cfg();
    st_model *m;
    assert_int_equal(st_model_new(&cfg, &m), ST_OK);
    st_tokenized empty = {0}, tk;
    synth(&tk, 6);
    st_train_config c;
    base_cfg(&c);
    st_trainer *t = NULL;
    assert_int_equal(st_trainer_new(m, &empty, &c, &t), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "no rows"));
    c.batch_size = 8; /* 6 rows, 2 held out -> 4 train rows */
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "batch_size = 8 is larger"));
    base_cfg(&c);
    c.pad_id = 37;
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_ERR_ARG);
    base_cfg(&c);
    c.max_steps = 0;
    c.epochs = 0;
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "max_steps"));
    base_cfg(&c);
    c.ema_decays[0] = 1.5; /* the library's one validator names the key, not a CLI flag */
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "ema_decay = 1.5"));
    assert_null(t);
    st_tokenized_free(&tk);
    st_model_free(m);
}

static void test_nonfinite_weight_stops_without_update(void **state) {
    (void)state;
    st_config cfg = tiny_cfg();
    st_model *m;
    assert_int_equal(st_model_new(&cfg, &m), ST_OK);
    random_init(m, 3);
    m->w.norm[0] = INFINITY;
    st_tokenized tk;
    synth(&tk, 20);
    st_train_config c;
    base_cfg(&c);
    st_trainer *t;
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_OK);
    float *before = malloc(m->layout.n_floats * sizeof(float));
    memcpy(before, m->params, m->layout.n_floats * sizeof(float));
    st_step_metrics sm;
    assert_int_equal(st_trainer_step(t, &sm), ST_ERR_NUMERIC);
    assert_non_null(strstr(st_last_error(), "step 1"));
    assert_int_equal(st_trainer_steps_done(t), 0);
    assert_memory_equal(before, m->params, m->layout.n_floats * sizeof(float));
    free(before);
    st_trainer_free(t);
    st_tokenized_free(&tk);
    st_model_free(m);
}

static st_status hook(st_trainer *t, int64_t step, void *user) {
    (*(int *)user)++;
    return st_trainer_add_metric(t, "probe_asr_live", (double)step / 4.0);
}

static void tmpdir(char *buf, size_t cap, const char *name) {
    const char *base = getenv("SAFETUNE_TEST_TMP");
    snprintf(buf, cap, "%s/unit_trainer_%s_%d", base ? base : "/tmp", name, (int)getpid());
}

static char *read_all(const char *path) {
    char *txt = NULL;
    size_t len;
    if (st_read_file(path, &txt, &len)) return NULL;
    return txt;
}

static void test_run_hook_checkpoint_resume(void **state) {
    (void)state;
    st_config cfg = tiny_cfg();
    st_model *m;
    assert_int_equal(st_model_new(&cfg, &m), ST_OK);
    random_init(m, 5);
    float *init = malloc(m->layout.n_floats * sizeof(float));
    memcpy(init, m->params, m->layout.n_floats * sizeof(float));
    st_tokenized tk;
    synth(&tk, 20);
    char out[512], metrics[600], ck[700];
    tmpdir(out, sizeof out, "run");
    st_train_config c;
    base_cfg(&c);
    c.out_dir = out;
    c.save_every = 2;
    c.eval_every = 2;
    st_trainer *t;
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_OK);
    int calls = 0;
    st_trainer_set_hook(t, hook, &calls);
    assert_int_equal(st_trainer_run(t), ST_OK);
    assert_int_equal(calls, 5); /* step 0 (θ_0) and steps 1-4 */
    double loss4 = st_trainer_last_metrics(t)->loss;
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
    char *txt = read_all(metrics);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "\"step\":4,"));
    assert_non_null(strstr(txt, "\"probe_asr_live\":1}"));
    assert_non_null(strstr(txt, "\"val_loss\":"));
    assert_non_null(strstr(txt, "\"theta_ema_dist\":"));
    free(txt);
    snprintf(ck, sizeof ck, "%s/checkpoints/step-00000002", out);
    st_trainer_free(t);
    /* fresh trainer from θ_0, resume at step 2, replay steps 3-4: identical final loss */
    memcpy(m->params, init, m->layout.n_floats * sizeof(float));
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_OK);
    assert_int_equal(st_trainer_resume(t, ck), ST_OK);
    assert_int_equal(st_trainer_steps_done(t), 2);
    st_step_metrics sm;
    assert_int_equal(st_trainer_step(t, &sm), ST_OK);
    assert_int_equal(st_trainer_step(t, &sm), ST_OK);
    assert_true(sm.loss == loss4);
    st_trainer_free(t);
    /* a run with different settings refuses the checkpoint */
    c.batch_size = 3;
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_OK);
    assert_int_equal(st_trainer_resume(t, ck), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "batch_size"));
    st_trainer_free(t);
    free(init);
    st_tokenized_free(&tk);
    st_model_free(m);
}

/* Issue 11: 7 rows, batch 1, grad_accum 3, 1 epoch -> windows of 3, 3 and 1 micro-batches, 3
 * optimiser steps (one LR step each), every row exactly once, exact epoch values; the second
 * epoch starts a new window (it never takes the rest of the first epoch's last one). */
static void test_epoch_last_window_is_short(void **state) {
    (void)state;
    st_config cfg = tiny_cfg();
    st_model *m;
    assert_int_equal(st_model_new(&cfg, &m), ST_OK);
    random_init(m, 9);
    st_tokenized tk;
    synth(&tk, 7);
    st_train_config c;
    base_cfg(&c);
    c.batch_size = 1;
    c.grad_accum = 3;
    c.max_steps = 0;
    c.epochs = 1;
    c.val_fraction = 0;
    st_schedule_default(&c.sched, ST_SCHED_LINEAR, 1);
    st_trainer *t;
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_OK);
    assert_int_equal(st_trainer_max_steps(t), 3);
    const int want_micro[3] = {3, 3, 1};
    const double want_epoch[3] = {3.0 / 7.0, 6.0 / 7.0, 1.0};
    int seen[7] = {0};
    for (int k = 0; k < 3; k++) {
        st_step_metrics sm;
        assert_int_equal(st_trainer_step(t, &sm), ST_OK);
        assert_int_equal(sm.n_micro, want_micro[k]);
        assert_true(sm.epoch == want_epoch[k]);
        /* linear schedule over 3 steps: lr = base·(3 − k)/3, one LR step per optimiser step */
        assert_true(fabs(sm.lr - 1e-2 * (3 - k) / 3.0) < 1e-15);
        for (int i = 0; i < sm.n_micro; i++) {
            const st_batch *b = st_trainer_batch(t, i);
            assert_non_null(b);
            assert_int_equal(b->B, 1);
            /* which row: the first input token identifies it (synth: ids[0] = i·31 mod 37) */
            int row = -1;
            for (int r = 0; r < 7; r++) if (b->inputs[0] == (int32_t)((r * 31) % 37)) row = r;
            assert_true(row >= 0);
            seen[row]++;
        }
        assert_null(st_trainer_batch(t, sm.n_micro));
    }
    for (int r = 0; r < 7; r++) assert_int_equal(seen[r], 1);
    st_trainer_free(t);
    /* two epochs: 6 steps, the 4th starts epoch 2 with a full window */
    c.epochs = 2;
    assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_OK);
    assert_int_equal(st_trainer_max_steps(t), 6);
    st_step_metrics sm;
    for (int k = 0; k < 4; k++) assert_int_equal(st_trainer_step(t, &sm), ST_OK);
    assert_int_equal(sm.n_micro, 3);
    assert_true(sm.epoch == 1.0 + 3.0 / 7.0);
    st_trainer_free(t);
    st_tokenized_free(&tk);
    st_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_weights_loss_is_ln_v),
        cmocka_unit_test(test_argument_errors),
        cmocka_unit_test(test_nonfinite_weight_stops_without_update),
        cmocka_unit_test(test_run_hook_checkpoint_resume),
        cmocka_unit_test(test_epoch_last_window_is_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
