/* test_cli_modelpath.c - MODEL folders that safetune writes but that are not models
 * (src/cli/modelpath.c): each gets one line saying what it is and which path to pass; model
 * files and Hugging Face folders get none. The folders are built here by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/modelpath.c" /* the CLI is not part of the library */

static char root[512];

static void touch(const char *rel, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static const char *dir(const char *rel) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    mkdir(p, 0755);
    return p;
}

/* Hint for root/rel, or NULL. */
static const char *hint(const char *rel) {
    static char msg[8192];
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    return cli_model_hint(p, msg, sizeof msg) ? msg : NULL;
}

static void test_hints(void **state) {
    (void)state;
    const char *t = getenv("SAFETUNE_TEST_TMP");
    snprintf(root, sizeof root, "%s/modelpath_%d", t ? t : "/tmp", (int)getpid());
    mkdir(root, 0755);
    const char *h;

    /* a Hugging Face folder and a file: no hint */
    dir("hf");
    touch("hf/config.json", "{\"model_type\": \"llama\"}");
    touch("hf/model.safetensors", "x");
    assert_null(hint("hf"));
    touch("m.gguf", "GGUF");
    assert_null(hint("m.gguf"));
    assert_null(hint("missing"));

    /* train output with final/ and final-ema/ */
    dir("run");
    dir("run/final");
    dir("run/final-ema");
    touch("run/config.json", "{\"run\": {\"lr\": 1e-5}}");
    assert_non_null(h = hint("run"));
    assert_non_null(strstr(h, "`safetune train` output folder"));
    assert_non_null(strstr(h, "run/final (live weights)"));
    assert_non_null(strstr(h, "run/final-ema (EMA weights)"));

    /* a trainer checkpoint */
    dir("run/checkpoints");
    dir("run/checkpoints/step-00000002");
    touch("run/checkpoints/step-00000002/MANIFEST", "");
    touch("run/checkpoints/step-00000002/state.bin", "");
    touch("run/checkpoints/step-00000002/config.json", "STCKBLOB");
    assert_non_null(h = hint("run/checkpoints/step-00000002"));
    assert_non_null(strstr(h, "trainer checkpoint"));
    assert_non_null(strstr(h, "--resume"));

    /* unfinished runs: checkpoints/ only, or only the run's config.json (also next to weights) */
    dir("unf");
    dir("unf/checkpoints");
    assert_non_null(h = hint("unf"));
    assert_non_null(strstr(h, "has not finished"));
    assert_non_null(strstr(h, "--resume auto"));
    dir("unf2");
    touch("unf2/config.json", "{\"lr\": 1e-5, \"data\": \"a.json\", \"model\": \"m.gguf\"}");
    assert_non_null(h = hint("unf2"));
    assert_non_null(strstr(h, "config.json holds the run's settings"));

    /* study folder, study run folder, align folder */
    dir("study");
    touch("study/study.json", "{}");
    assert_non_null(h = hint("study"));
    assert_non_null(strstr(h, "`safetune study` folder"));
    dir("study/runs");
    dir("study/runs/lr1e-5_bs8");
    dir("study/runs/lr1e-5_bs8/ckpt");
    touch("study/runs/lr1e-5_bs8/train.json", "{}");
    assert_non_null(h = hint("study/runs/lr1e-5_bs8"));
    assert_non_null(strstr(h, "run folder of `safetune study`"));
    dir("al");
    dir("al/aligned");
    touch("al/align.json", "{}");
    assert_non_null(h = hint("al"));
    assert_non_null(strstr(h, "al/aligned"));

    /* cli_check_model_path: a HF folder passes, the others fail with the hint */
    char p[1024];
    snprintf(p, sizeof p, "%s/hf", root);
    assert_int_equal(cli_check_model_path("t", p), 0);
    snprintf(p, sizeof p, "%s/unf2", root);
    assert_int_equal(cli_check_model_path("t", p), 1);
    touch("unf2/model.safetensors", "x"); /* run settings next to weights: still not loadable */
    assert_int_equal(cli_check_model_path("t", p), 1);
    snprintf(p, sizeof p, "%s/missing", root);
    assert_int_equal(cli_check_model_path("t", p), 1);
}

/* cli_resolve_weights(model, weights) succeeds with the path `want`. */
static void expect_resolved(const char *model, const char *weights, const char *want) {
    char *out = NULL;
    assert_int_equal(cli_resolve_weights(model, weights, &out), ST_OK);
    assert_string_equal(out, want);
    free(out);
}

/* cli_resolve_weights(model, weights) fails with code, no path, and every needle in the message. */
static void expect_unresolved(const char *model, const char *weights, st_status code, const char *n1, const char *n2) {
    char *out = NULL;
    assert_int_equal(cli_resolve_weights(model, weights, &out), code);
    assert_null(out);
    if (n1) assert_non_null(strstr(st_last_error(), n1));
    if (n2) assert_non_null(strstr(st_last_error(), n2));
}

/* --weights live|ema on a training output folder, a model file and a missing path; the error
 * for a missing final-ema/ gives the reason from the run's config.json. */
static void test_resolve_weights(void **state) {
    (void)state;
    const char *t = getenv("SAFETUNE_TEST_TMP");
    snprintf(root, sizeof root, "%s/resolve_%d", t ? t : "/tmp", (int)getpid());
    mkdir(root, 0755);
    char d[1100], want[1200];
    snprintf(d, sizeof d, "%s", dir("out"));
    dir("out/final");
    snprintf(want, sizeof want, "%s/final", d);
    expect_resolved(d, "live", want);
    expect_unresolved(d, "ema", ST_ERR_ARG, "no EMA weights", "trained without EMA");
    assert_non_null(strstr(st_last_error(), d));
    touch("out/config.json", "{\"lr\": 1e-5, \"data\": \"a.json\", \"ema_decay\": 0.99, \"save_weights\": \"live\"}");
    expect_unresolved(d, "ema", ST_ERR_ARG, "--save-weights live", NULL);
    dir("out/final-ema");
    snprintf(want, sizeof want, "%s/final-ema", d);
    expect_resolved(d, "ema", want);
    expect_unresolved(d, "best", ST_ERR_ARG, NULL, NULL);
    /* a plain model file: itself for live, an error for ema */
    touch("m.gguf", "x");
    snprintf(want, sizeof want, "%s/m.gguf", root);
    expect_resolved(want, "live", want);
    expect_unresolved(want, "ema", ST_ERR_ARG, "final-ema", NULL);
    expect_unresolved("/nonexistent/model", "live", ST_ERR_IO, NULL, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_hints), cmocka_unit_test(test_resolve_weights)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
