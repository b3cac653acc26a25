/* test_train_settings.c - the training settings table (train_settings.h): every row's default
 * parses and is inside its bounds, st_train_config_default equals the documented defaults,
 * values round-trip through their JSON form, bad values are refused with the key named, and the
 * name tables map both ways (aliases to their canonical name). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/train_settings.h"

static void test_rows_and_defaults(void **state) {
    (void)state;
    size_t n;
    const st_train_setting *rows = st_train_settings(&n);
    assert_true(n >= 20);
    st_train_config d;
    st_train_config_default(&d);
    for (size_t i = 0; i < n; i++) {
        st_train_config c;
        memset(&c, 0, sizeof c);
        assert_int_equal(st_train_setting_set(&c, &rows[i], rows[i].def), ST_OK);
        assert_non_null(rows[i].flag);
        assert_ptr_equal(st_train_setting_find(rows[i].key), &rows[i]);
        assert_ptr_equal(st_train_setting_find(rows[i].flag), &rows[i]);
        for (size_t j = 0; j < i; j++) assert_string_not_equal(rows[i].key, rows[j].key);
    }
    /* the documented defaults (trainer.h) */
    assert_true(d.optim.lr == 1e-5 && d.optim.weight_decay == 0 && d.optim.beta1 == 0.9 && d.optim.beta2 == 0.999);
    assert_true(d.optim.eps == 1e-8 && d.max_grad_norm == 1.0);
    assert_int_equal(d.batch_size, 8);
    assert_int_equal(d.grad_accum, 1);
    assert_int_equal(d.sched.kind, ST_SCHED_CONSTANT);
    assert_int_equal(d.n_ema, 1);
    assert_true(d.ema_decays[0] == 0.99);
    assert_int_equal(d.ema_every, 1);
    assert_int_equal(d.ema_start, 1);
    assert_int_equal(d.bf16, 0);
    assert_int_equal(d.seed, 42);
    assert_int_equal(d.max_seq_len, 512);
    assert_true(d.val_fraction == 0.05);
    assert_int_equal(d.keep_checkpoints, 2);
    assert_int_equal(d.max_steps, 0);
    /* no steps asked for: the validator says which keys */
    assert_int_equal(st_train_config_validate(&d), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "max_steps"));
    d.max_steps = 10;
    assert_int_equal(st_train_config_validate(&d), ST_OK);
}

static void test_json_round_trip(void **state) {
    (void)state;
    st_train_config a, b;
    st_train_config_default(&a);
    a.max_steps = 7;
    const st_train_setting *ema = st_train_setting_find("ema_decay");
    assert_int_equal(st_train_setting_set(&a, ema, "0.9,0.5"), ST_OK);
    assert_int_equal(a.n_ema, 2);
    assert_int_equal(st_train_setting_set(&a, st_train_setting_find("lr-schedule"), "warmup-constant"), ST_OK);
    assert_int_equal(a.sched.kind, ST_SCHED_CONSTANT_WARMUP);
    assert_int_equal(st_train_setting_set(&a, st_train_setting_find("precision"), "bf16"), ST_OK);
    assert_int_equal(st_train_setting_set(&a, st_train_setting_find("lr"), "3e-4"), ST_OK);
    cJSON *o = cJSON_CreateObject();
    st_train_config_to_json(&a, o, 0);
    assert_string_equal(cJSON_GetObjectItem(o, "lr_schedule")->valuestring, "constant_with_warmup");
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(o, "ema_decay")));
    /* read back through the text form each row takes (what --config gives the CLI) */
    st_train_config_default(&b);
    size_t n;
    const st_train_setting *rows = st_train_settings(&n);
    for (size_t i = 0; i < n; i++) {
        char txt[128];
        st_train_setting_text(&a, &rows[i], txt, sizeof txt);
        assert_int_equal(st_train_setting_set(&b, &rows[i], txt), ST_OK);
    }
    cJSON *o2 = cJSON_CreateObject();
    st_train_config_to_json(&b, o2, 0);
    assert_true(cJSON_Compare(o, o2, 1));
    /* fingerprint rows only: no logging settings */
    cJSON *f = cJSON_CreateObject();
    st_train_config_to_json(&a, f, 1);
    assert_non_null(cJSON_GetObjectItem(f, "lr"));
    assert_non_null(cJSON_GetObjectItem(f, "ema_decay"));
    assert_null(cJSON_GetObjectItem(f, "eval_every"));
    assert_null(cJSON_GetObjectItem(f, "keep_checkpoints"));
    cJSON_Delete(o);
    cJSON_Delete(o2);
    cJSON_Delete(f);
    /* none / 0 turn EMA off */
    assert_int_equal(st_train_setting_set(&a, ema, "none"), ST_OK);
    assert_int_equal(a.n_ema, 0);
    assert_int_equal(st_train_setting_set(&a, ema, "0.99"), ST_OK);
    assert_int_equal(st_train_setting_set(&a, ema, "0"), ST_OK);
    assert_int_equal(a.n_ema, 0);
}

static void expect_bad(const char *key, const char *text, const char *needle) {
    st_train_config c;
    st_train_config_default(&c);
    assert_int_equal(st_train_setting_set(&c, st_train_setting_find(key), text), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), needle));
}

static void test_bad_values_name_the_key(void **state) {
    (void)state;
    expect_bad("lr", "2", "lr = 2 is out of range");
    expect_bad("lr", "abc", "lr = 'abc'");
    expect_bad("batch_size", "0", "batch_size = 0 is out of range");
    expect_bad("batch_size", "1.5", "batch_size = '1.5': expected an integer");
    expect_bad("seed", "-1", "seed");
    expect_bad("ema_decay", "1", "ema_decay = 1: 1 is not in (0, 1)");
    expect_bad("ema_decay", "0.9,x", "ema_decay = 0.9,x");
    expect_bad("lr_schedule", "wavy", "lr_schedule: unknown value 'wavy'");
    expect_bad("precision", "fp16", "precision: unknown value 'fp16' (one of fp32, bf16)");
    st_train_config c;
    st_train_config_default(&c);
    c.max_steps = 3;
    c.n_ema = 2;
    c.ema_decays[0] = c.ema_decays[1] = 0.9;
    assert_int_equal(st_train_config_validate(&c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "ema_decay: 0.9 is listed twice"));
    c.n_ema = 1;
    c.grad_accum = 0;
    assert_int_equal(st_train_config_validate(&c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "grad_accum = 0"));
}

static void test_name_tables(void **state) {
    (void)state;
    int v;
    assert_int_equal(st_name_lookup(st_lr_schedule_names, "lr_schedule", "cosine", &v), ST_OK);
    assert_int_equal(v, ST_SCHED_COSINE);
    assert_string_equal(st_name_of(st_lr_schedule_names, ST_SCHED_CONSTANT_WARMUP), "constant_with_warmup");
    assert_string_equal(st_schedule_kind_name(ST_SCHED_STEP), "step");
    st_sched_kind k;
    assert_int_equal(st_schedule_kind_parse("warmup_constant", &k), ST_OK);
    assert_int_equal(k, ST_SCHED_CONSTANT_WARMUP);
    assert_string_equal(st_name_of(st_precision_names, 1), "bf16");
    assert_string_equal(st_name_of(st_precision_names, 7), "unknown");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_and_defaults),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_bad_values_name_the_key),
        cmocka_unit_test(test_name_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
