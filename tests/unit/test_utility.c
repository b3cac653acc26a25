/* test_utility.c - utility.h / safety_eval.h pieces that need no real model: TruthfulQA and
 * MT-Bench readers (fields, errors with line numbers), held-out loss on a zero-weight model
 * (uniform logits: every token costs exactly ln V), --weights live|ema resolution, the judge's
 * 1..max score parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "eval_testutil.h"
#include "safetune/judge.h"
#include "safetune/safety_eval.h"
#include "safetune/utility.h"

#include <math.h>
#include <sys/stat.h>

static void test_tqa_load(void **st) {
    (void)st;
    char p[512];
    const char *csv =
        "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
        "Adversarial,Misc,\"Why, really?\",Because,Because; Yes,\"No ; Maybe;  ;Never \",http://x\n"
        "Non-Adversarial,Law,\"Multi\nline?\",Yes,Yes,No,src\n";
    write_tmp(p, sizeof p, "tqa.csv", csv, strlen(csv));
    st_tqa_set s;
    assert_int_equal(st_truthfulqa_load(p, &s), ST_OK);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.items[0].question, "Why, really?");
    assert_string_equal(s.items[0].best, "Because");
    assert_int_equal(s.items[0].n_incorrect, 3);
    assert_string_equal(s.items[0].incorrect[0], "No");
    assert_string_equal(s.items[0].incorrect[1], "Maybe");
    assert_string_equal(s.items[0].incorrect[2], "Never");
    assert_string_equal(s.items[1].question, "Multi\nline?");
    assert_string_equal(s.items[1].category, "Law");
    st_tqa_set_free(&s);

    /* the row after a multi-line field: its line number is the physical line where it starts */
    const char *bad = "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                      "A,B,\"two\nlines\",x,x,y,s\n"
                      "A,B,Q,x,x,,s\n";
    write_tmp(p, sizeof p, "tqa_bad.csv", bad, strlen(bad));
    assert_int_equal(st_truthfulqa_load(p, &s), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "line 4"));
    assert_non_null(strstr(st_last_error(), "Incorrect"));
    const char *hdr = "Type,Category,Prompt,Best Answer,Correct Answers,Incorrect Answers,Source\n";
    write_tmp(p, sizeof p, "tqa_hdr.csv", hdr, strlen(hdr));
    assert_int_equal(st_truthfulqa_load(p, &s), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "line 1"));
    assert_non_null(strstr(st_last_error(), "Question"));
    write_tmp(p, sizeof p, "tqa_empty.csv", "", 0);
    assert_int_not_equal(st_truthfulqa_load(p, &s), ST_OK);
    const char *quote = "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\nA,B,\"Q,x\n";
    write_tmp(p, sizeof p, "tqa_q.csv", quote, strlen(quote));
    assert_int_equal(st_truthfulqa_load(p, &s), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), p));
}

static void test_tqa_real(void **st) {
    (void)st;
    char p[1024];
    snprintf(p, sizeof p, "%s/truthfulqa/TruthfulQA.csv", st_test_data_dir());
    if (access(p, R_OK) != 0) ST_SKIP_MISSING(p);
    st_tqa_set s;
    assert_int_equal(st_truthfulqa_load(p, &s), ST_OK);
    assert_int_equal(s.n, 817); /* SOURCE.md: 817 questions */
    assert_string_equal(s.items[0].question, "What happens to you if you eat watermelon seeds?");
    assert_int_equal(s.items[0].n_incorrect, 7);
    assert_string_equal(s.items[0].incorrect[6], "You digest the watermelon seeds");
    st_tqa_set_free(&s);
}

static void test_mtbench_load(void **st) {
    (void)st;
    char p[512];
    const char *ok = "{\"question_id\": 81, \"category\": \"writing\", \"turns\": [\"First?\", \"Second\"]}\n\n"
                     "{\"question_id\": 82, \"turns\": [\"Only\"]}\n";
    write_tmp(p, sizeof p, "mt.jsonl", ok, strlen(ok));
    st_mtbench_set s;
    assert_int_equal(st_mtbench_load(p, &s), ST_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.items[0].question_id, 81);
    assert_string_equal(s.items[0].turn1, "First?");
    assert_string_equal(s.items[0].category, "writing");
    assert_null(s.items[1].category);
    st_mtbench_set_free(&s);
    const char *bad = "{\"question_id\": 1, \"turns\": [\"a\"]}\n{\"question_id\": 2, \"turns\": []}\n";
    write_tmp(p, sizeof p, "mt_bad.jsonl", bad, strlen(bad));
    assert_int_equal(st_mtbench_load(p, &s), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "line 2"));
    const char *bad2 = "{\"question_id\": 1, \"turns\": [\"a\"]\n";
    write_tmp(p, sizeof p, "mt_bad2.jsonl", bad2, strlen(bad2));
    assert_int_equal(st_mtbench_load(p, &s), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "line 1: invalid JSON"));
}

/* Zero weights: every hidden state is 0 after the final RMSNorm, logits are all 0, so each
 * target costs ln V exactly; only assistant-masked targets count. */
static void test_heldout_uniform(void **st) {
    (void)st;
    const char *cfgj = "{\"model_type\": \"llama\", \"hidden_size\": 16, \"intermediate_size\": 32, "
                       "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                       "\"vocab_size\": 50, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5}";
    st_config cfg;
    assert_int_equal(st_config_from_hf_json_text(cfgj, "tiny", &cfg), ST_OK);
    st_model *m;
    assert_int_equal(st_model_new(&cfg, &m), ST_OK);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    int32_t ids[] = {1, 2, 3, 4, 5, 6, /* row 0 */ 7, 8, 9, 10, /* row 1 */ 11, 12, 13, 14, 15, 16, 17};
    uint8_t mask[] = {0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1};
    size_t off[] = {0, 6, 10, 17};
    st_tokenized tk = {ids, mask, off, 3};
    uint32_t rows[] = {2, 0, 1};
    st_heldout_result r;
    assert_int_equal(st_heldout_loss(ic, &tk, rows, 3, 64, 2, &r), ST_OK);
    /* targets: row0 mask[1..5] = 0,1,1,0,1 -> 3; row1 mask[1..3] -> 3; row2 mask[1..6] -> 4 */
    assert_int_equal(r.n_tokens, 10);
    assert_int_equal(r.n_rows, 3);
    assert_true(fabs(r.loss - log(50.0)) < 1e-5);
    assert_true(fabs(r.perplexity - 50.0) < 1e-3);
    /* truncation to 4 tokens: row2 keeps 11..14 -> targets at 12,13,14 with mask 0,0,1 -> 1 */
    assert_int_equal(st_heldout_loss(ic, &tk, rows, 3, 4, 3, &r), ST_OK);
    assert_int_equal(r.n_truncated, 2);
    assert_int_equal(r.n_tokens, 2 + 3 + 1);
    uint32_t none[] = {5};
    assert_int_equal(st_heldout_loss(ic, &tk, none, 1, 64, 2, &r), ST_ERR_ARG);
    uint8_t zero[17] = {0};
    st_tokenized tz = {ids, zero, off, 3};
    assert_int_equal(st_heldout_loss(ic, &tz, rows, 3, 64, 2, &r), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "no assistant tokens"));
    st_infer_ctx_free(ic);
    st_model_free(m);
}

static void test_parse_max(void **st) {
    (void)st;
    char *r = NULL;
    assert_int_equal(st_judge_parse_reply_max("{\"reason\": \"ok\", \"score\": 10}", 10, &r), 10);
    assert_string_equal(r, "ok");
    free(r);
    assert_int_equal(st_judge_parse_reply_max("{\"score\": 10}", 5, NULL), 0);
    assert_int_equal(st_judge_parse_reply("{\"score\": 10}", NULL), 0);
    assert_int_equal(st_judge_parse_reply_max("#thescore: 7\n", 10, NULL), 7);
    assert_int_equal(st_judge_parse_reply_max("#thescore: 10", 10, NULL), 10);
    assert_int_equal(st_judge_parse_reply_max("#thescore: 11", 10, NULL), 0);
    assert_int_equal(st_judge_parse_reply_max("#thescore: 7.5", 10, NULL), 0);
    assert_int_equal(st_judge_parse_reply("#thescore: 12", NULL), 0);
    assert_int_equal(st_judge_parse_reply("#thescore: 4", NULL), 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tqa_load),      cmocka_unit_test(test_tqa_real),
        cmocka_unit_test(test_mtbench_load),  cmocka_unit_test(test_heldout_uniform),
        cmocka_unit_test(test_parse_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
