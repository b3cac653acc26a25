/* test_study_config.c - study config validation: every error case gives one line naming the
 * source file and key; presets and overrides; fingerprint and output-folder checks. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "safetune/study.h"
#include "study_testutil.h"
#include "testutil.h"

static char g_dir[4096];

/* Load cfg with extra keys; return status, message in st_last_error(). */
static st_status load_extra(const char *extra, st_study_config *c, char *path, size_t cap) {
    st_test_config(g_dir, extra, path, cap);
    return st_study_config_load(NULL, path, c);
}

static void expect_error(const char *extra, const char *needle1, const char *needle2) {
    st_study_config c;
    char path[4200];
    st_status s = load_extra(extra, &c, path, sizeof path);
    if (s == ST_OK) {
        st_study_config_free(&c);
        fail_msg("config was accepted: %s", extra);
    }
    const char *e = st_last_error();
    if (!strstr(e, path)) fail_msg("error does not name the file: %s", e);
    if (!strstr(e, needle1)) fail_msg("error '%s' lacks '%s'", e, needle1);
    if (needle2 && !strstr(e, needle2)) fail_msg("error '%s' lacks '%s'", e, needle2);
    assert_null(strchr(e, '\n'));
}

static int setup(void **state) {
    (void)state;
    unsetenv("SAFETUNE_GNUPLOT");
    return st_test_dir(g_dir, sizeof g_dir, "cfg") ? 0 : -1;
}

static void test_valid_minimal(void **state) {
    (void)state;
    st_study_config c;
    char path[4200];
    st_status s = load_extra("\"lr\": [1e-5, 5e-5], \"batch_size\": 4, \"max_steps\": [20], \"ema_decay\": [\"none\", 0.99]",
                             &c, path, sizeof path);
    if (s) fail_msg("%s", st_last_error());
    assert_int_equal(c.n_lr, 2);
    assert_true(c.lr[1] == 5e-5);
    assert_int_equal(c.n_batch_size, 1); /* a single value is a one-element list */
    assert_int_equal(c.batch_size[0], 4);
    assert_int_equal(c.n_grad_accum, 1); /* default */
    assert_int_equal(c.grad_accum[0], 1);
    assert_int_equal(c.n_ema_decay, 2);
    assert_true(c.ema_decay[0] == 0.0 && c.ema_decay[1] == 0.99);
    assert_string_equal(c.lr_schedule[0], "constant");
    assert_int_equal(strlen(c.fingerprint), 16);
    assert_string_equal(c.datasets[0].name, "train");
    st_study_config_free(&c);
}

static void test_unknown_key(void **state) {
    (void)state;
    expect_error("\"lr\": [1e-5], \"batchsize\": [4], \"max_steps\": [20]", "unknown key 'batchsize'", "did you mean 'batch_size'");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"eval\": {\"max_new_token\": 8}",
                 "unknown key 'eval.max_new_token'", "did you mean 'eval.max_new_tokens'");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"frobnicate\": 1", "unknown key 'frobnicate'", NULL);
    /* no far-fetched suggestion */
    st_study_config c;
    char path[4200];
    assert_int_not_equal(load_extra("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"frobnicate\": 1", &c, path, sizeof path), ST_OK);
    assert_null(strstr(st_last_error(), "did you mean"));
}

static void test_wrong_type(void **state) {
    (void)state;
    expect_error("\"lr\": \"fast\", \"batch_size\": [4], \"max_steps\": [20]", "key 'lr'", "expected a list of numbers");
    expect_error("\"lr\": [1e-5, \"x\"], \"batch_size\": [4], \"max_steps\": [20]", "key 'lr[1]'", "expected a number");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4.5], \"max_steps\": [20]", "key 'batch_size[0]'", "expected an integer");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"max_seq_len\": \"512\"", "key 'max_seq_len'", "expected an integer");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"eval\": {\"xstest\": 1}", "key 'eval.xstest'", "true or false");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"ema_decay\": [\"off\"]", "key 'ema_decay[0]'", "\"none\"");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"eval\": 3", "key 'eval'", "expected an object");
}

static void test_empty_list(void **state) {
    (void)state;
    expect_error("\"lr\": [], \"batch_size\": [4], \"max_steps\": [20]", "key 'lr'", "empty list");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"ema_decay\": []", "key 'ema_decay'", "empty list");
}

static void test_bad_values(void **state) {
    (void)state;
    expect_error("\"lr\": [0], \"batch_size\": [4], \"max_steps\": [20]", "key 'lr'", "out of range");
    expect_error("\"lr\": [1e-5], \"batch_size\": [0], \"max_steps\": [20]", "key 'batch_size'", ">= 1");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"ema_decay\": [1.5]", "key 'ema_decay'", "(0, 1)");
    /* the trainer's name table: every name `train --lr-schedule` takes, nothing else */
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"lr_schedule\": [\"wavy\"]", "key 'lr_schedule'",
                 "unknown value 'wavy' (one of constant, constant_with_warmup, warmup-constant, warmup_constant, linear, cosine, step)");
    expect_error("\"lr\": [1e-5, 1e-5], \"batch_size\": [4], \"max_steps\": [20]", "key 'lr'", "duplicate");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"epochs\": [1]", "'max_steps', 'epochs' and 'train_examples' exclude", NULL);
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"train_examples\": [64], \"epochs\": [1]", "exclude each other", NULL);
    expect_error("\"lr\": [1e-5], \"batch_size\": [4]", "'max_steps', 'epochs' or 'train_examples' is required", NULL);
    /* equal data: examples must be a whole number of effective batches */
    expect_error("\"lr\": [1e-5], \"batch_size\": [1, 3], \"grad_accum\": [2], \"train_examples\": [64]", "key 'train_examples'",
                 "not a multiple of the effective batch 6");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"seed\": [1, 2, 1]", "key 'seed'", "duplicate");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"seed\": [-1]", "key 'seed'", ">= 0");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"eval\": {\"advbench_split\": \"c\"}",
                 "key 'eval.advbench_split'", NULL);
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"eval\": {\"precision\": \"fp16\"}",
                 "key 'eval.precision'", "\"fp32\" or \"bf16\" (got 'fp16')");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"align\": {\"answer_max_new_tokens\": 0}",
                 "key 'align.answer_max_new_tokens'", NULL);
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"align\": {\"xstest_safe_repeat\": 0}",
                 "key 'align.xstest_safe_repeat'", ">= 1");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"align\": {\"xstest_safe_repeat\": 101}",
                 "key 'align.xstest_safe_repeat'", "<= 100");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"align\": {\"n_advbench\": -1}",
                 "key 'align.n_advbench'", ">= 0");
    /* past the prompts there are: refused at load, not cut silently or found after training starts */
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"align\": {\"n_advbench\": 261}",
                 "key 'align.n_advbench'", "more than the 260 goals of AdvBench half a");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"eval\": {\"advbench_split\": \"b\", "
                 "\"advbench_limit\": 261}", "key 'eval.advbench_limit'", "more than the 260 prompts of an AdvBench half");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"eval\": {\"advbench_limit\": 521}",
                 "key 'eval.advbench_limit'", "more than the 520 prompts of AdvBench");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"eval\": {\"advbench_split\": \"b\", "
                 "\"xstest_limit\": 235}", "key 'eval.xstest_limit'", "more than the 234 XSTest prompts evaluated (half 'b')");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"report\": {\"utility_metric\": \"judge_mean\"}",
                 "key 'report.utility_metric'", "not a utility metric");
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"report\": {\"utility_metric\": \"bleu\"}",
                 "key 'report.utility_metric'", "unknown metric 'bleu'");
}

static void test_missing_files(void **state) {
    (void)state;
    st_study_config c;
    char path[4200], body[8192];
    st_test_config(g_dir, "", path, sizeof path);
    snprintf(body, sizeof body,
             "{\"model\": \"%s/model.gguf\", \"data_dir\": \"%s\", \"datasets\": [{\"path\": \"nope.json\", \"format\": \"alpaca\"}],"
             " \"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"report\": {\"plots\": false}}", g_dir, g_dir);
    st_test_write(g_dir, "missing.json", body);
    snprintf(path, sizeof path, "%s/missing.json", g_dir);
    assert_int_equal(st_study_config_load(NULL, path, &c), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), path));
    assert_non_null(strstr(st_last_error(), "datasets[0].path"));
    assert_non_null(strstr(st_last_error(), "does not exist"));

    snprintf(body, sizeof body,
             "{\"model\": \"%s/nomodel.gguf\", \"data_dir\": \"%s\", \"datasets\": [{\"path\": \"train.json\", \"format\": \"alpaca\"}],"
             " \"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"report\": {\"plots\": false}}", g_dir, g_dir);
    st_test_write(g_dir, "missing.json", body);
    assert_int_equal(st_study_config_load(NULL, path, &c), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "key 'model'"));

    /* a dataset format we do not know */
    snprintf(body, sizeof body,
             "{\"model\": \"%s/model.gguf\", \"data_dir\": \"%s\", \"datasets\": [{\"path\": \"train.json\", \"format\": \"csv\"}],"
             " \"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"report\": {\"plots\": false}}", g_dir, g_dir);
    st_test_write(g_dir, "missing.json", body);
    assert_int_equal(st_study_config_load(NULL, path, &c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "datasets[0].format"));
}

/* A key given twice (cJSON would keep both and the loader read the first) is refused with both
 * lines and its path, at the top and inside a defense entry. */
static void test_duplicate_keys(void **state) {
    (void)state;
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20],\n \"lr\": [2e-5]",
                 "line 5: key 'lr' appears twice in one object (first on line 4); keep one", NULL);
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"defense\": [\"none\",\n"
                 " {\"name\": \"l2\", \"l2sp_alpha\": 0.1,\n \"l2sp_alpha\": 0.2}]",
                 "line 6: key 'defense[1].l2sp_alpha' appears twice in one object (first on line 5)", NULL);
    expect_error("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"eval\": {\"xstest\": true, \"xstest\": false}",
                 "line 4: key 'eval.xstest' appears twice", NULL);
}

static void test_bad_json_and_preset(void **state) {
    (void)state;
    st_study_config c;
    char path[4200];
    st_test_write(g_dir, "bad.json", "{\n  \"lr\": [1e-5,\n  \"x\" }\n");
    snprintf(path, sizeof path, "%s/bad.json", g_dir);
    assert_int_equal(st_study_config_load(NULL, path, &c), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), path));
    assert_non_null(strstr(st_last_error(), "line 3"));
    assert_int_equal(st_study_config_load("huge", NULL, &c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "unknown preset 'huge'"));
    assert_non_null(strstr(st_last_error(), "quick"));
    assert_int_equal(st_study_config_load(NULL, NULL, &c), ST_ERR_ARG);
}

/* The presets parse and type-check; overriding keys from a file replaces them one by one. */
static void test_preset_override(void **state) {
    (void)state;
    for (size_t i = 0; st_study_preset_names[i]; i++) assert_non_null(st_study_preset_json(st_study_preset_names[i]));
    const char *dd = st_test_data_dir();
    char alp[4200];
    snprintf(alp, sizeof alp, "%s/alpaca/alpaca_5000.json", dd);
    if (access(alp, R_OK) != 0) ST_SKIP_MISSING(alp);
    char body[8192], path[4200];
    st_test_write(g_dir, "model.gguf", "GGUF");
    snprintf(body, sizeof body, "{\"model\": \"%s/model.gguf\", \"data_dir\": \"%s\", \"lr\": [3e-4], \"report\": {\"plots\": false},"
                                " \"eval\": {\"max_new_tokens\": 7}, \"epochs\": [1]}", g_dir, dd);
    st_test_write(g_dir, "over.json", body);
    snprintf(path, sizeof path, "%s/over.json", g_dir);
    st_study_config c;
    if (st_study_config_load("quick", path, &c)) fail_msg("%s", st_last_error());
    assert_int_equal(c.n_lr, 1);
    assert_true(c.lr[0] == 3e-4);
    assert_int_equal(c.n_batch_size, 2);      /* from the preset */
    assert_int_equal(c.eval.max_new_tokens, 7); /* overridden */
    assert_int_equal(c.eval.xstest_limit, 100); /* kept from the preset's eval object */
    assert_int_equal(c.n_max_steps, 0);          /* epochs replaced the preset's train_examples */
    assert_int_equal(c.n_train_examples, 0);
    assert_int_equal(c.n_seeds, 3);              /* from the preset */
    assert_int_equal(c.n_epochs, 1);
    assert_int_equal(c.datasets[0].limit, 4500);
    assert_non_null(strstr(c.source, "preset:quick"));
    st_study_config_free(&c);
    /* an error in the override names the override file */
    snprintf(body, sizeof body, "{\"model\": \"%s/model.gguf\", \"data_dir\": \"%s\", \"lr\": []}", g_dir, dd);
    st_test_write(g_dir, "over.json", body);
    assert_int_equal(st_study_config_load("quick", path, &c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), path));
}

static void test_fingerprint_and_dir(void **state) {
    (void)state;
    st_study_config a, b, a2;
    char path[4200];
    if (load_extra("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20]", &a, path, sizeof path)) fail_msg("%s", st_last_error());
    if (load_extra("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"estimate\": {\"gen_tokens_per_s\": 9}", &a2, path, sizeof path))
        fail_msg("%s", st_last_error());
    if (load_extra("\"lr\": [2e-5], \"batch_size\": [4], \"max_steps\": [20]", &b, path, sizeof path)) fail_msg("%s", st_last_error());
    assert_string_equal(a.fingerprint, a2.fingerprint); /* estimate speeds do not change results */
    /* one seed, as a number or a one-element list, is the same study (and as before seed took lists) */
    st_study_config s1, s2;
    if (load_extra("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"seed\": [42]", &s1, path, sizeof path))
        fail_msg("%s", st_last_error());
    if (load_extra("\"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"seed\": [42, 7]", &s2, path, sizeof path))
        fail_msg("%s", st_last_error());
    assert_string_equal(a.fingerprint, s1.fingerprint);
    assert_string_not_equal(a.fingerprint, s2.fingerprint);
    assert_int_equal(s2.n_seeds, 2);
    assert_true(s2.seed == 42 && s2.seeds[1] == 7);
    st_study_config_free(&s1);
    st_study_config_free(&s2);
    assert_string_not_equal(a.fingerprint, b.fingerprint);

    char out[4300];
    snprintf(out, sizeof out, "%s/out", g_dir);
    st_study_plan p;
    assert_int_equal(st_study_plan_build(&a, &p), ST_OK);
    st_study_hooks h;
    st_study_fake_hooks(&h, 0);
    if (st_study_run_all(&a, &p, out, &h, NULL)) fail_msg("%s", st_last_error());
    int res = -1;
    assert_int_equal(st_study_check_dir(&a2, out, &res), ST_OK);
    assert_int_equal(res, 1);
    assert_int_equal(st_study_check_dir(&b, out, &res), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "holds another study"));
    assert_non_null(strstr(st_last_error(), "study.json"));
    /* a non-empty folder without study.json */
    st_test_write(g_dir, "junk.txt", "x");
    assert_int_equal(st_study_check_dir(&a, g_dir, &res), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "not empty"));
    st_study_plan_free(&p);
    st_study_config_free(&a);
    st_study_config_free(&a2);
    st_study_config_free(&b);
}

static void test_gnuplot_missing(void **state) {
    (void)state;
    setenv("SAFETUNE_GNUPLOT", "/nonexistent/gnuplot", 1);
    st_study_config c;
    char path[4200];
    st_test_config(g_dir, "", path, sizeof path);
    char body[8192];
    snprintf(body, sizeof body,
             "{\"model\": \"%s/model.gguf\", \"data_dir\": \"%s\", \"datasets\": [{\"path\": \"train.json\", \"format\": \"alpaca\"}],"
             " \"lr\": [1e-5], \"batch_size\": [4], \"max_steps\": [20], \"report\": {\"plots\": true}}", g_dir, g_dir);
    st_test_write(g_dir, "gp.json", body);
    snprintf(path, sizeof path, "%s/gp.json", g_dir);
    assert_int_equal(st_study_config_load(NULL, path, &c), ST_ERR_UNSUPPORTED);
    assert_non_null(strstr(st_last_error(), "gnuplot not found"));
    assert_non_null(strstr(st_last_error(), "gnuplot-nox"));
    assert_non_null(strstr(st_last_error(), "report.plots"));
    assert_int_equal(st_study_gnuplot_check(), ST_ERR_UNSUPPORTED);
    unsetenv("SAFETUNE_GNUPLOT");
}

/* The defense and finetune axes and the merge list: a valid config with all three (the plan crosses
 * them with the grid; ids name them), and every bad value refused before training, naming the key. */
#define AX "\"lr\": [1e-4], \"batch_size\": 2, \"max_steps\": [4], "
#define ALIGN ", \"eval\": {\"advbench_split\": \"b\"}, \"align\": {\"enabled\": true, \"n_alpaca\": 0}"
static void test_defense_axes(void **state) {
    (void)state;
    st_study_config c;
    char path[4200];
    st_status s = load_extra(AX "\"ema_decay\": [\"none\", 0.9], \"defense\": [\"none\", {\"name\": \"l2sp\", \"l2sp_alpha\": 0.01},"
                             " {\"name\": \"si\", \"safeinstr_k\": 135}, {\"name\": \"la\", \"lookahead\": \"real\", \"lookahead_m\": 3}],"
                             " \"finetune\": [\"full\", {\"finetune\": \"lora\", \"lora_r\": 4, \"lora_targets\": \"q_proj,v_proj\"}],"
                             " \"merge\": [0, 0.5, 1]" ALIGN,
                             &c, path, sizeof path);
    if (s) fail_msg("%s", st_last_error());
    assert_int_equal(c.n_defenses, 4);
    assert_int_equal(c.n_finetunes, 2);
    assert_int_equal(c.n_merge, 3);
    assert_true(c.defenses[2].safety_data && !c.defenses[1].safety_data);
    assert_string_equal(st_study_defense_get(&c.defenses[1], "l2sp_alpha"), "0.01");
    assert_string_equal(c.finetunes[1].name, "lora");
    assert_int_equal(c.finetunes[1].lora_r, 4);
    st_study_plan p;
    assert_int_equal(st_study_plan_build(&c, &p), ST_OK);
    assert_int_equal(p.n_runs, 8); /* 1 cell x 2 finetunes x 4 defenses */
    assert_int_equal(p.n_weight_sets, 8 * 5); /* live, ema0.9, 3 merges */
    assert_string_equal(p.runs[0].id, "lr1e-4_bs2_ga1_steps4_constant_full_none");
    assert_string_equal(p.runs[7].id, "lr1e-4_bs2_ga1_steps4_constant_lora_la");
    for (size_t i = 0; i < p.n_runs; i++) assert_int_equal(p.runs[i].base_cell, 0);
    assert_int_equal(p.runs[5].finetune, 1);
    assert_int_equal(p.runs[5].defense, 1);
    st_study_weights w;
    st_study_run_weights(&p.runs[0], 4, &w);
    assert_string_equal(w.name, "merge1");
    assert_int_equal(w.kind, ST_WEIGHTS_MERGE);
    st_study_plan_free(&p);
    st_study_config_free(&c);
    /* without the axes the run ids are what they were */
    assert_int_equal(load_extra(AX "\"ema_decay\": [0.9]", &c, path, sizeof path), ST_OK);
    assert_int_equal(st_study_plan_build(&c, &p), ST_OK);
    assert_string_equal(p.runs[0].id, "lr1e-4_bs2_ga1_steps4_constant");
    st_study_plan_free(&p);
    st_study_config_free(&c);

    expect_error(AX "\"defense\": [\"none\", \"l2sp\"]", "defense[1]", "unknown defense 'l2sp'");
    expect_error(AX "\"defense\": [{\"name\": \"x\", \"l2sp_alfa\": 1}]", "defense[0].l2sp_alfa", "did you mean 'l2sp_alpha'");
    expect_error(AX "\"defense\": [{\"name\": \"x\", \"lr\": 1e-3}]", "defense[0].lr", "set by the grid");
    expect_error(AX "\"defense\": [{\"name\": \"x\", \"lora_r\": 8}]", "defense[0].lora_r", "finetune axis");
    expect_error(AX "\"defense\": [{\"name\": \"x\", \"l2sp_alpha\": -1}]", "defense[0].l2sp_alpha", "out of range");
    expect_error(AX "\"defense\": [{\"name\": \"none\", \"l2sp_alpha\": 1}]", "defense[0]", "takes no settings");
    expect_error(AX "\"defense\": [{\"name\": \"x\"}]", "defense[0]", "sets no training setting");
    expect_error(AX "\"defense\": [{\"name\": \"A B\", \"l2sp_alpha\": 1}]", "defense[0].name", "a-z");
    expect_error(AX "\"defense\": [{\"name\": \"x\", \"l2sp_alpha\": 1}, {\"name\": \"x\", \"l2sp_alpha\": 2}]", "defense[1]",
                 "used twice");
    expect_error(AX "\"defense\": [{\"name\": \"x\", \"l2sp_alpha\": 1, \"l2sp_alpha_decoupled\": 1}]", "defense[0]",
                 "two variants of one defense");
    expect_error(AX "\"defense\": [{\"name\": \"x\", \"l2sp_alpha_decoupled\": 1e4}]", "defense[0]", "l2sp_alpha_decoupled");
    expect_error(AX "\"defense\": [{\"name\": \"si\", \"safeinstr_k\": 135}]", "defense[0].safeinstr_k", "align.enabled");
    expect_error(AX "\"defense\": [{\"name\": \"p\", \"poison\": 0.1}]", "defense[0].poison", "alignment set");
    expect_error(AX "\"defense\": [{\"name\": \"p\", \"poison\": 1.5}]" ALIGN, "defense[0].poison", "outside [0, 1]");
    expect_error(AX "\"defense\": [{\"name\": \"la\", \"lookahead\": \"both\"}]", "defense[0].lookahead", "unknown value");
    expect_error(AX "\"defense\": [{\"name\": \"la\", \"lookahead\": \"virtual\", \"lookahead_m\": 3}]",
                 "defense[0].lookahead_m", "real");
    expect_error(AX "\"defense\": []", "'defense'", "empty list");
    expect_error(AX "\"defense\": \"none\"", "'defense'", "expected a list");
    expect_error(AX "\"merge\": [0.5, 1.5]", "merge[1]", "outside [0, 1]");
    expect_error(AX "\"merge\": [-0.1]", "merge[0]", "outside [0, 1]");
    expect_error(AX "\"merge\": [0.5, 0.5]", "merge[1]", "duplicate");
    expect_error(AX "\"finetune\": [{\"finetune\": \"full\", \"lora_r\": 8}]", "finetune[0].lora_r", "applies to LoRA");
    expect_error(AX "\"finetune\": [\"qlora\"]", "finetune[0]", "unknown value 'qlora'");
    expect_error(AX "\"finetune\": [{\"finetune\": \"lora\", \"lora_targets\": \"q_proj,w_proj\"}]", "finetune[0].lora_targets", "w_proj");
    expect_error(AX "\"finetune\": [{\"finetune\": \"lora\", \"lora_r\": 0}]", "finetune[0].lora_r", "out of range");
    expect_error(AX "\"finetune\": [\"lora\", {\"finetune\": \"lora\", \"lora_r\": 4}]", "finetune[1]", "used twice");
    expect_error(AX "\"finetune\": [\"lora\"], \"probe\": {\"every\": 2, \"keep_best\": true}", "probe.keep_best", "lora");
}

static void test_preset_defenses(void **state) {
    (void)state;
    const char *j = st_study_preset_json("defenses");
    assert_non_null(j);
    assert_non_null(strstr(j, "\"defense\""));
    assert_non_null(strstr(j, "\"finetune\""));
    assert_non_null(strstr(j, "\"merge\""));
}

/* The quick preset meets the sizes docs/study.md promises (issue: a study whose findings are
 * evidence): >= 3 seeds, >= 128 AdvBench half-B prompts at >= 64 new tokens, >= 100 prompts of
 * XSTest's evaluation half (234 rows), lr x effective batch at equal data, EMA off and >= 2 decays
 * that keep >= 30% of theta_0 after the longest run (beta^steps), bf16 evaluation, the aligned start on. */
static void test_quick_preset_sizes(void **state) {
    (void)state;
    const char *dd = st_test_data_dir();
    char alp[4200], body[8192], path[4200];
    snprintf(alp, sizeof alp, "%s/alpaca/alpaca_5000.json", dd);
    if (access(alp, R_OK) != 0) ST_SKIP_MISSING(alp);
    st_test_write(g_dir, "model.gguf", "GGUF"); /* only the model and data paths are replaced */
    snprintf(body, sizeof body, "{\"model\": \"%s/model.gguf\", \"data_dir\": \"%s\"}", g_dir, dd);
    st_test_write(g_dir, "paths.json", body);
    snprintf(path, sizeof path, "%s/paths.json", g_dir);
    st_study_config c;
    if (st_study_config_load("quick", path, &c)) fail_msg("%s", st_last_error());
    assert_true(c.n_seeds >= 3);
    assert_string_equal(c.eval.advbench_split, "b");
    assert_true(c.eval.advbench_limit >= 128 && c.eval.advbench_limit <= 260);
    assert_true(c.eval.max_new_tokens >= 64);
    assert_true(c.eval.xstest);
    assert_true(c.eval.xstest_limit >= 100 && c.eval.xstest_limit <= 234);
    assert_string_equal(c.eval.precision, "bf16");
    assert_true(c.n_lr >= 2);
    assert_true(c.n_batch_size * c.n_grad_accum >= 2);
    assert_int_equal(c.n_train_examples, 1); /* equal data */
    int min_eb = 1 << 30;
    for (size_t i = 0; i < c.n_batch_size; i++)
        for (size_t j = 0; j < c.n_grad_accum; j++)
            if (c.batch_size[i] * c.grad_accum[j] < min_eb) min_eb = c.batch_size[i] * c.grad_accum[j];
    const int longest = c.train_examples[0] / min_eb;
    size_t n_none = 0, n_ema = 0;
    for (size_t i = 0; i < c.n_ema_decay; i++) {
        if (c.ema_decay[i] == 0) { n_none++; continue; }
        n_ema++;
        if (pow(c.ema_decay[i], longest) < 0.3)
            fail_msg("ema_decay %g keeps %.0f%% of theta_0 after %d steps", c.ema_decay[i], 100 * pow(c.ema_decay[i], longest), longest);
    }
    assert_int_equal(n_none, 1);
    assert_true(n_ema >= 2);
    assert_true(c.align.enabled);
    st_study_config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_minimal),     cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_defense_axes),      cmocka_unit_test(test_preset_defenses),
        cmocka_unit_test(test_wrong_type),        cmocka_unit_test(test_empty_list),
        cmocka_unit_test(test_bad_values),        cmocka_unit_test(test_missing_files),
        cmocka_unit_test(test_bad_json_and_preset), cmocka_unit_test(test_preset_override),
        cmocka_unit_test(test_quick_preset_sizes),
        cmocka_unit_test(test_fingerprint_and_dir), cmocka_unit_test(test_gnuplot_missing),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
