/* test_cli_report.c - console lines of `safetune eval safety` (src/cli/report.c): a rate with a
 * zero denominator prints "n/a (0 ...)" (never 0%), an all-labelled set (XSTest) prints refusal
 * rates and no ASR line, AdvBench prints its ASR. Expected strings are hand-computed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/report.c" /* the CLI is not part of the library */

static char *summary_text(const st_eval_summary *s) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cli_print_safety_summary(f, s);
    fclose(f);
    return buf;
}

static void test_fmt_rate(void **state) {
    (void)state;
    char b[160];
    st_rate r = st_wilson(1, 4, ST_Z95);
    assert_string_equal(cli_fmt_rate(b, sizeof b, &r, 0, "prompts"), "25.00% (1/4)");
    /* Wilson 95% for 1/4 (z = 1.959964): centre 0.37247, half-width 0.32689 -> [4.56, 69.94] */
    assert_string_equal(cli_fmt_rate(b, sizeof b, &r, 1, "prompts"), "25.00% (1/4) [95% CI 4.56, 69.94]");
    st_rate z = st_wilson(0, 0, ST_Z95);
    assert_string_equal(cli_fmt_rate(b, sizeof b, &z, 1, "prompts scored"), "n/a (0 prompts scored)");
}

static void test_advbench_summary(void **state) {
    (void)state;
    st_eval_record recs[4] = {{0}};
    const char *resp[] = {"Sure", "I'm sorry", "Here", "Okay"};
    for (int i = 0; i < 4; i++) {
        recs[i].prompt = "p";
        recs[i].response = resp[i];
        recs[i].refused = i == 1;
    }
    st_eval_summary s;
    assert_int_equal(st_eval_summarize(recs, 4, &s), ST_OK);
    char *t = summary_text(&s);
    assert_non_null(strstr(t, "prompts: 4  refused: 1  attack success: 3\n"));
    assert_non_null(strstr(t, "ASR: 75.00% (3/4) [95% CI"));
    assert_null(strstr(t, "refusal rate"));
    free(t);
    st_eval_summary_free(&s);
}

static void test_xstest_summary(void **state) {
    (void)state;
    /* 3 safe prompts (1 refused), 0 unsafe ones (a --limit that reaches no contrast prompt) */
    st_eval_record recs[3] = {{0}};
    for (int i = 0; i < 3; i++) {
        recs[i].prompt = "p";
        recs[i].response = "r";
        recs[i].label = ST_LABEL_SAFE;
        recs[i].refused = i == 0;
    }
    st_eval_summary s;
    assert_int_equal(st_eval_summarize(recs, 3, &s), ST_OK);
    char *t = summary_text(&s);
    assert_null(strstr(t, "ASR"));
    assert_null(strstr(t, "attack"));
    assert_non_null(strstr(t, "prompts: 3 (3 safe, 0 unsafe)  refused: 1\n"));
    assert_non_null(strstr(t, "refusal rate: safe prompts 33.33% (1/3) [95% CI"));
    assert_non_null(strstr(t, "unsafe prompts n/a (0 unsafe prompts)\n"));
    assert_null(strstr(t, " 0.00%"));
    free(t);
    st_eval_summary_free(&s);
}

static void test_judge_none_scored(void **state) {
    (void)state;
    st_eval_record recs[2] = {{0}};
    for (int i = 0; i < 2; i++) {
        recs[i].prompt = "p";
        recs[i].response = "r";
        recs[i].judged = 1;
        recs[i].judge_score = 0; /* unscored */
    }
    st_eval_summary s;
    assert_int_equal(st_eval_summarize(recs, 2, &s), ST_OK);
    char *t = summary_text(&s);
    assert_non_null(strstr(t, "judge: 0 scored, 2 unscored, mean n/a, harmfulness rate (score 5) n/a (0 answers scored)"));
    assert_null(strstr(t, " 0.00%"));
    free(t);
    st_eval_summary_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmt_rate),
        cmocka_unit_test(test_advbench_summary),
        cmocka_unit_test(test_xstest_summary),
        cmocka_unit_test(test_judge_none_scored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
