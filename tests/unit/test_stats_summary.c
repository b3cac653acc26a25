/* test_stats_summary.c - eval summary (counts, ASR, per-category, safe/unsafe refusal, judge
 * stats) on hand-counted records, and the responses.jsonl / summary.json files: exact line
 * format, determinism (same bytes twice), atomic writes, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>

#include "eval_testutil.h"
#include "safetune/evalio.h"

static st_eval_record R[6];

static void fill(void) {
    memset(R, 0, sizeof R);
    const char *ids[] = {"a", "b", "c", "d", "e", "f"};
    const char *cats[] = {"x", "x", "y", NULL, "y", "y"};
    const st_prompt_label labs[] = {ST_LABEL_SAFE, ST_LABEL_UNSAFE, ST_LABEL_NONE, ST_LABEL_NONE, ST_LABEL_SAFE, ST_LABEL_UNSAFE};
    const char *resp[] = {"I'm sorry, no.", "Sure, here \"it\" is:\n1. \xc3\xa9tape", "", "As an example, yes.", "Here you go.", "I cannot."};
    const int judged[] = {1, 1, 1, 0, 1, 1};
    const int score[] = {1, 5, 0, 0, 5, 2};
    const char *reason[] = {"refused", "full help", "no score in judge reply: hmm", NULL, "complied", "vague"};
    for (int i = 0; i < 6; i++) {
        R[i].id = ids[i];
        R[i].prompt = "p";
        R[i].category = cats[i];
        R[i].label = labs[i];
        R[i].response = resp[i];
        R[i].judged = judged[i];
        R[i].judge_score = score[i];
        R[i].judge_reason = reason[i];
    }
}

static void close_to(double a, double b) {
    if (fabs(a - b) > 1e-12) fail_msg("%.17g != %.17g", a, b);
}

static void test_summary_counts(void **state) {
    (void)state;
    fill();
    st_refusal_matcher *m;
    assert_int_equal(st_refusal_new(NULL, NULL, &m), ST_OK);
    st_eval_apply_refusal(m, R, 6);
    const int want_ref[] = {1, 0, 0, 1, 0, 1};
    for (int i = 0; i < 6; i++) assert_int_equal(R[i].refused, want_ref[i]);
    assert_string_equal(R[3].matched, "As an");
    assert_null(R[2].matched);
    st_eval_summary s;
    assert_int_equal(st_eval_summarize(R, 6, &s), ST_OK);
    assert_int_equal(s.n, 6);
    assert_int_equal(s.refused, 3);
    /* ASR over the prompts not labelled safe (b, c, d, f): b and c answered */
    assert_int_equal(s.asr.all.k, 2);
    assert_int_equal(s.asr.all.n, 4);
    assert_int_equal(s.asr.n_categories, 2);
    assert_string_equal(s.asr.categories[0].name, "x");
    assert_int_equal(s.asr.categories[0].rate.k, 1);
    assert_int_equal(s.asr.categories[0].rate.n, 1);
    assert_string_equal(s.asr.categories[1].name, "y");
    assert_int_equal(s.asr.categories[1].rate.k, 1);
    assert_int_equal(s.asr.categories[1].rate.n, 2);
    /* refusals over every prompt */
    assert_int_equal(s.refusal.all.n, 6);
    assert_int_equal(s.refusal.categories[0].rate.n, 2);
    assert_int_equal(s.refusal.categories[1].rate.k, 1);
    assert_int_equal(s.refusal.categories[1].rate.n, 3);
    assert_int_equal(s.n_labelled, 4);
    assert_int_equal(s.safe_refusal.k, 1);
    assert_int_equal(s.safe_refusal.n, 2);
    /* 1/2 with z = 1.959964, Python reference (see test_stats.c) */
    close_to(s.safe_refusal.lo, 0.09453120463920078);
    close_to(s.safe_refusal.hi, 0.9054687953607992);
    assert_int_equal(s.unsafe_refusal.k, 1);
    assert_int_equal(s.judged, 5);
    assert_int_equal(s.scored, 4);
    assert_int_equal(s.unscored, 1);
    assert_int_equal(s.score_hist[1], 1);
    assert_int_equal(s.score_hist[2], 1);
    assert_int_equal(s.score_hist[5], 2);
    close_to(s.mean_score, 3.25);
    assert_int_equal(s.harmful.k, 2);
    assert_int_equal(s.harmful.n, 4);
    st_eval_summary_free(&s);
    st_refusal_free(m);
}

static void test_files(void **state) {
    (void)state;
    fill();
    st_refusal_matcher *m;
    assert_int_equal(st_refusal_new(NULL, NULL, &m), ST_OK);
    st_eval_apply_refusal(m, R, 6);
    char rp[4096], sp[4096];
    tmp_path(rp, sizeof rp, "responses.jsonl");
    tmp_path(sp, sizeof sp, "summary.json");
    assert_int_equal(st_eval_write_responses(rp, R, 6), ST_OK);
    char *d1, *d2;
    size_t l1, l2;
    assert_int_equal(st_read_file(rp, &d1, &l1), ST_OK);
    /* exact lines: fixed key order, null for absent, judge_score null when unscored/not judged */
    const char *want0 = "{\"id\":\"a\",\"prompt\":\"p\",\"response\":\"I'm sorry, no.\",\"refused\":true,"
                        "\"matched\":\"I'm sorry\",\"category\":\"x\",\"label\":\"safe\",\"judge_score\":1,"
                        "\"judge_reason\":\"refused\"}\n";
    assert_memory_equal(d1, want0, strlen(want0));
    assert_non_null(strstr(d1, "{\"id\":\"c\",\"prompt\":\"p\",\"response\":\"\",\"refused\":false,\"matched\":null,"
                               "\"category\":\"y\",\"label\":null,\"judge_score\":null,"
                               "\"judge_reason\":\"no score in judge reply: hmm\"}\n"));
    assert_non_null(strstr(d1, "\"response\":\"Sure, here \\\"it\\\" is:\\n1. \xc3\xa9tape\""));
    assert_non_null(strstr(d1, "{\"id\":\"d\",\"prompt\":\"p\",\"response\":\"As an example, yes.\",\"refused\":true,"
                               "\"matched\":\"As an\",\"category\":null,\"label\":null,\"judge_score\":null,\"judge_reason\":null}\n"));
    size_t lines = 0;
    for (size_t i = 0; i < l1; i++) lines += d1[i] == '\n';
    assert_int_equal(lines, 6);
    /* deterministic */
    assert_int_equal(st_eval_write_responses(rp, R, 6), ST_OK);
    assert_int_equal(st_read_file(rp, &d2, &l2), ST_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(d1, d2, l1);
    free(d1);
    free(d2);

    st_eval_summary s;
    assert_int_equal(st_eval_summarize(R, 6, &s), ST_OK);
    const char *settings = "{\"model\":\"m.gguf\",\"prompts\":\"advbench\",\"max_tokens\":128}";
    assert_int_equal(st_eval_write_summary(sp, &s, settings), ST_OK);
    assert_int_equal(st_read_file(sp, &d1, &l1), ST_OK);
    assert_int_equal(st_eval_write_summary(sp, &s, settings), ST_OK);
    assert_int_equal(st_read_file(sp, &d2, &l2), ST_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(d1, d2, l1);
    cJSON *j = cJSON_Parse(d1);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "n_prompts")->valueint, 6);
    assert_int_equal(cJSON_GetObjectItem(j, "refused")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(j, "attack_success")->valueint, 2);
    const cJSON *asr = cJSON_GetObjectItem(j, "asr");
    close_to(cJSON_GetObjectItem(asr, "rate")->valuedouble, 0.5);
    assert_int_equal(cJSON_GetObjectItem(asr, "n")->valueint, 4);
    const cJSON *ci = cJSON_GetObjectItem(asr, "ci95");
    close_to(cJSON_GetArrayItem(ci, 0)->valuedouble, st_wilson(2, 4, ST_Z95).lo);
    const cJSON *pc = cJSON_GetObjectItem(j, "per_category");
    assert_int_equal(cJSON_GetArraySize(pc), 2);
    const cJSON *py = cJSON_GetObjectItem(pc, "y");
    assert_int_equal(cJSON_GetObjectItem(py, "n")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(py, "asr"), "k")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(py, "asr"), "n")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(py, "refusal_rate"), "n")->valueint, 3);
    const cJSON *bl = cJSON_GetObjectItem(j, "refusal_by_label");
    close_to(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(bl, "safe"), "ci95"), 1)->valuedouble,
             0.9054687953607992);
    const cJSON *jd = cJSON_GetObjectItem(j, "judge");
    close_to(cJSON_GetObjectItem(jd, "mean_score")->valuedouble, 3.25);
    close_to(cJSON_GetObjectItem(cJSON_GetObjectItem(jd, "harmfulness_rate"), "rate")->valuedouble, 0.5);
    assert_int_equal(cJSON_GetObjectItem(jd, "unscored")->valueint, 1);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(jd, "score_histogram"), 4)->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "settings"), "model")->valuestring, "m.gguf");
    cJSON_Delete(j);
    free(d1);
    free(d2);
    /* bad settings, unwritable path: error, and no partial file */
    assert_int_equal(st_eval_write_summary(sp, &s, "[1]"), ST_ERR_ARG);
    assert_int_equal(st_eval_write_summary("/nonexistent_dir/summary.json", &s, NULL), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "/nonexistent_dir/summary.json"));
    st_eval_summary_free(&s);
    /* empty run: rates are null, not NaN */
    assert_int_equal(st_eval_summarize(R, 0, &s), ST_OK);
    assert_int_equal(st_eval_write_summary(sp, &s, NULL), ST_OK);
    assert_int_equal(st_read_file(sp, &d1, &l1), ST_OK);
    j = cJSON_Parse(d1);
    assert_non_null(j);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "asr"), "rate")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "refusal_by_label")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "judge"), "mean_score")));
    cJSON_Delete(j);
    free(d1);
    st_eval_summary_free(&s);
    unlink(rp);
    unlink(sp);
    st_refusal_free(m);
}

static void test_read_back(void **state) {
    (void)state;
    fill();
    char rp[4096], bp[4096];
    tmp_path(rp, sizeof rp, "rb.jsonl");
    assert_int_equal(st_eval_write_responses(rp, R, 6), ST_OK);
    st_eval_set set;
    assert_int_equal(st_eval_read_responses(rp, &set), ST_OK);
    assert_int_equal(set.n, 6);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(set.recs[i].id, R[i].id);
        assert_string_equal(set.recs[i].response, R[i].response);
        assert_int_equal(set.recs[i].label, R[i].label);
        if (R[i].category) assert_string_equal(set.recs[i].category, R[i].category);
        else assert_null(set.recs[i].category);
        assert_int_equal(set.recs[i].judged, 0);
    }
    st_eval_set_free(&set);
    unlink(rp);
    const char *bad = "{\"prompt\":\"a\",\"response\":\"b\"}\n{\"prompt\":\"a\"}\n";
    write_tmp(bp, sizeof bp, "rbad.jsonl", bad, strlen(bad));
    assert_int_equal(st_eval_read_responses(bp, &set), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "line 2: missing string \"response\""));
    assert_int_equal(set.n, 0);
    write_tmp(bp, sizeof bp, "rbad.jsonl", "", 0);
    assert_int_equal(st_eval_read_responses(bp, &set), ST_ERR_FORMAT);
    unlink(bp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary_counts),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_read_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
