/* test_study_align.c - aligned-start support: AdvBench split (disjoint, covering, deterministic,
 * file round trip and tamper check), refusal texts vs the standard keyword list, alignment set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "safetune/prompts.h"
#include "safetune/refusal.h"
#include "safetune/study.h"
#include "study_testutil.h"
#include "testutil.h"

#include <cjson/cJSON.h>

static void test_split(void **state) {
    (void)state;
    uint32_t *a, *b, *a2, *b2, *a3, *b3;
    size_t na, nb, na2, nb2, na3, nb3;
    assert_int_equal(st_study_advbench_split(520, 7, &a, &na, &b, &nb), ST_OK);
    assert_int_equal(na, 260);
    assert_int_equal(nb, 260);
    unsigned char seen[520] = {0};
    for (size_t i = 0; i < na; i++) seen[a[i]]++;
    for (size_t i = 0; i < nb; i++) seen[b[i]]++;
    for (size_t i = 0; i < 520; i++) assert_int_equal(seen[i], 1); /* disjoint and covering */
    for (size_t i = 1; i < na; i++) assert_true(a[i - 1] < a[i]);
    assert_int_equal(st_study_advbench_split(520, 7, &a2, &na2, &b2, &nb2), ST_OK);
    assert_memory_equal(a, a2, na * sizeof *a);
    assert_int_equal(st_study_advbench_split(520, 8, &a3, &na3, &b3, &nb3), ST_OK);
    assert_true(memcmp(a, a3, na * sizeof *a) != 0);
    /* not simply the first half */
    size_t low = 0;
    for (size_t i = 0; i < na; i++) low += a[i] < 260;
    assert_true(low > 80 && low < 180);
    free(a3);
    free(b3);
    assert_int_equal(st_study_advbench_split(521, 7, &a3, &na3, &b3, &nb3), ST_OK);
    assert_int_equal(na3 + nb3, 521);

    char dir[1024], path[1200];
    st_test_dir(dir, sizeof dir, "split");
    snprintf(path, sizeof path, "%s/split.json", dir);
    assert_int_equal(st_study_advbench_split_write(path, 520, 7), ST_OK);
    uint32_t *ra, *rb;
    size_t rna, rnb;
    uint64_t seed;
    assert_int_equal(st_study_advbench_split_read(path, &ra, &rna, &rb, &rnb, &seed), ST_OK);
    assert_int_equal(seed, 7);
    assert_int_equal(rna, 260);
    assert_memory_equal(ra, a, na * sizeof *a);
    assert_memory_equal(rb, b, nb * sizeof *b);
    free(ra);
    free(rb);
    /* tampered: swap one row between halves -> does not match the seed */
    char *t;
    size_t len;
    assert_int_equal(st_read_file(path, &t, &len), ST_OK);
    char buf[64];
    snprintf(buf, sizeof buf, "[%u,", a[0]);
    char *p = strstr(t, buf);
    assert_non_null(p);
    char rep[64];
    snprintf(rep, sizeof rep, "[%u,", b[0]);
    /* write a version with a[0] replaced by b[0] (now duplicated) */
    cJSON *o = cJSON_Parse(t);
    cJSON_ReplaceItemInArray(cJSON_GetObjectItem(o, "a"), 0, cJSON_CreateNumber(b[0]));
    char *t2 = cJSON_Print(o);
    st_test_write(dir, "split.json", t2);
    assert_int_equal(st_study_advbench_split_read(path, &ra, &rna, &rb, &rnb, &seed), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "appears twice"));
    cJSON_Delete(o);
    free(t2);
    free(t);
    free(a); free(b); free(a2); free(b2); free(a3); free(b3);
}

static void test_refusals(void **state) {
    (void)state;
    st_refusal_matcher *m;
    assert_int_equal(st_refusal_new(NULL, NULL, &m), ST_OK);
    size_t openings = 0;
    for (size_t i = 0; i < ST_STUDY_N_REFUSALS; i++) {
        const char *r = st_study_refusals[i];
        assert_non_null(r);
        st_refusal_result x = st_refusal_match(m, r);
        if (!x.refused) fail_msg("refusal %zu not matched by the standard list: %s", i, r);
        for (size_t j = 0; j < i; j++) assert_string_not_equal(r, st_study_refusals[j]);
        /* distinct first three words count as different openings */
        int dup = 0;
        for (size_t j = 0; j < i; j++) {
            const char *q = st_study_refusals[j];
            size_t k = 0, sp = 0;
            while (r[k] && q[k] && r[k] == q[k] && sp < 3) sp += r[k++] == ' ';
            if (sp >= 3) dup = 1;
        }
        openings += !dup;
    }
    assert_true(openings >= 25);
    st_refusal_free(m);
}

static void test_alignment_set(void **state) {
    (void)state;
    const char *dd = st_test_data_dir();
    char alp[1200];
    snprintf(alp, sizeof alp, "%s/alpaca/alpaca_5000.json", dd);
    if (access(alp, R_OK) != 0) ST_SKIP_MISSING(alp);
    st_study_conv *cv;
    size_t n;
    assert_int_equal(st_study_build_alignment_set(dd, alp, 100, 0, 1, 2508, NULL, &cv, &n), ST_OK);
    assert_int_equal(n, 260 + 100);
    st_prompt_set adv;
    assert_int_equal(st_prompts_load("advbench", dd, &adv), ST_OK);
    uint32_t *a, *b;
    size_t na, nb;
    assert_int_equal(st_study_advbench_split(adv.n, 2508, &a, &na, &b, &nb), ST_OK);
    /* the Alpaca tail read independently with cJSON */
    char *t;
    size_t len;
    assert_int_equal(st_read_file(alp, &t, &len), ST_OK);
    cJSON *arr = cJSON_Parse(t);
    int total = cJSON_GetArraySize(arr);
    size_t n_refusal = 0, n_alpaca = 0, n_from_b = 0;
    for (size_t i = 0; i < n; i++) {
        int is_ref = 0;
        for (size_t k = 0; k < ST_STUDY_N_REFUSALS; k++) is_ref |= !strcmp(cv[i].assistant, st_study_refusals[k]);
        if (is_ref) {
            n_refusal++;
            for (size_t k = 0; k < nb; k++) n_from_b += !strcmp(cv[i].user, adv.items[b[k]].prompt);
        } else {
            int found = 0;
            for (int k = total - 100; k < total; k++) {
                cJSON *row = cJSON_GetArrayItem(arr, k);
                if (!strcmp(cv[i].assistant, cJSON_GetObjectItem(row, "output")->valuestring) &&
                    !strncmp(cv[i].user, cJSON_GetObjectItem(row, "instruction")->valuestring,
                             strlen(cJSON_GetObjectItem(row, "instruction")->valuestring)))
                    found = 1;
            }
            n_alpaca += (size_t)found;
        }
    }
    assert_int_equal(n_refusal, 260);
    assert_int_equal(n_alpaca, 100);
    assert_int_equal(n_from_b, 0); /* half B (evaluation) never appears in the alignment set */
    /* mixed, not grouped: refusals are spread over the first half of the set too */
    size_t first_half_ref = 0;
    for (size_t i = 0; i < n / 2; i++)
        for (size_t k = 0; k < ST_STUDY_N_REFUSALS; k++) first_half_ref += !strcmp(cv[i].assistant, st_study_refusals[k]);
    assert_true(first_half_ref > 80 && first_half_ref < 180);
    /* several different refusals are used */
    size_t used = 0;
    for (size_t k = 0; k < ST_STUDY_N_REFUSALS; k++) {
        int u = 0;
        for (size_t i = 0; i < n && !u; i++) u = !strcmp(cv[i].assistant, st_study_refusals[k]);
        used += (size_t)u;
    }
    assert_true(used >= 30);
    /* JSONL */
    char dir[1024], path[1200];
    st_test_dir(dir, sizeof dir, "align");
    snprintf(path, sizeof path, "%s/align.jsonl", dir);
    assert_int_equal(st_study_write_messages_jsonl(path, cv, n), ST_OK);
    char *j;
    assert_int_equal(st_read_file(path, &j, &len), ST_OK);
    size_t lines = 0;
    for (char *p = j; *p;) {
        char *e = strchr(p, '\n');
        assert_non_null(e);
        *e = '\0';
        cJSON *o = cJSON_Parse(p);
        cJSON *msgs = cJSON_GetObjectItem(o, "messages");
        assert_int_equal(cJSON_GetArraySize(msgs), 2);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "role")->valuestring, "user");
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 1), "content")->valuestring, cv[lines].assistant);
        cJSON_Delete(o);
        lines++;
        p = e + 1;
    }
    assert_int_equal(lines, n);
    free(j);
    /* deterministic */
    st_study_conv *cv2;
    size_t n2;
    assert_int_equal(st_study_build_alignment_set(dd, alp, 100, 0, 1, 2508, NULL, &cv2, &n2), ST_OK);
    for (size_t i = 0; i < n; i++) assert_string_equal(cv[i].user, cv2[i].user);
    st_study_convs_free(cv2, n2);
    cJSON_Delete(arr);
    free(t);
    free(a);
    free(b);
    st_prompt_set_free(&adv);
    st_study_convs_free(cv, n);
}

/* XSTest halves: disjoint, covering, deterministic, stratified by (label, type), seed-dependent */
static void test_xstest_split(void **state) {
    (void)state;
    const char *dd = st_test_data_dir();
    char xp[1200];
    snprintf(xp, sizeof xp, "%s/xstest/xstest_prompts.csv", dd);
    if (access(xp, R_OK) != 0) ST_SKIP_MISSING(xp);
    st_prompt_set xs;
    assert_int_equal(st_prompts_load("xstest", dd, &xs), ST_OK);
    assert_int_equal(xs.n, 450);
    uint32_t *a, *b, *a2, *b2, *a3, *b3;
    size_t na, nb, na2, nb2, na3, nb3;
    assert_int_equal(st_study_xstest_split(&xs, 2508, &a, &na, &b, &nb), ST_OK);
    assert_int_equal(na, 216); /* 18 strata of 25 (10 safe types, 8 contrast types): 12 + 13 each */
    assert_int_equal(nb, 234);
    unsigned char seen[450] = {0};
    for (size_t i = 0; i < na; i++) seen[a[i]]++;
    for (size_t i = 0; i < nb; i++) seen[b[i]] += 2;
    for (size_t i = 0; i < 450; i++) assert_true(seen[i] == 1 || seen[i] == 2);
    for (size_t i = 1; i < na; i++) assert_true(a[i - 1] < a[i]);
    for (size_t i = 1; i < nb; i++) assert_true(b[i - 1] < b[i]);
    /* per stratum: half a holds floor(k/2) of its k rows; counted independently of the code's grouping */
    size_t safe_a = 0;
    for (size_t i = 0; i < 450; i++) {
        size_t k = 0, in_a = 0;
        for (size_t j = 0; j < 450; j++)
            if (xs.items[j].label == xs.items[i].label && !strcmp(xs.items[j].category, xs.items[i].category)) {
                k++;
                in_a += seen[j] == 1;
            }
        assert_int_equal(in_a, k / 2);
        safe_a += seen[i] == 1 && xs.items[i].label == ST_LABEL_SAFE;
    }
    assert_int_equal(safe_a, 120);
    assert_int_equal(st_study_xstest_split(&xs, 2508, &a2, &na2, &b2, &nb2), ST_OK);
    assert_int_equal(na2, na);
    assert_memory_equal(a, a2, na * sizeof *a);
    assert_int_equal(st_study_xstest_split(&xs, 2509, &a3, &na3, &b3, &nb3), ST_OK);
    assert_int_equal(na3, na);
    assert_true(memcmp(a, a3, na * sizeof *a) != 0);
    free(a); free(b); free(a2); free(b2); free(a3); free(b3);
    st_prompt_set_free(&xs);
}

/* With XSTest answers: half a's unsafe prompts get refusals, its safe ones the given answers (NULL =
 * left out); no prompt of AdvBench half b or XSTest half b (the evaluation halves) is in the set. */
static void test_alignment_set_xstest(void **state) {
    (void)state;
    const char *dd = st_test_data_dir();
    char alp[1200];
    snprintf(alp, sizeof alp, "%s/alpaca/alpaca_5000.json", dd);
    if (access(alp, R_OK) != 0) ST_SKIP_MISSING(alp);
    st_prompt_set xs, adv;
    assert_int_equal(st_prompts_load("xstest", dd, &xs), ST_OK);
    assert_int_equal(st_prompts_load("advbench", dd, &adv), ST_OK);
    uint32_t *xa, *xb, *a, *b;
    size_t nxa, nxb, na, nb;
    assert_int_equal(st_study_xstest_split(&xs, 2508, &xa, &nxa, &xb, &nxb), ST_OK);
    assert_int_equal(st_study_advbench_split(adv.n, 2508, &a, &na, &b, &nb), ST_OK);
    char **ans = calloc(nxa, sizeof *ans);
    size_t n_given = 0, n_unsafe = 0;
    for (size_t i = 0; i < nxa; i++) {
        if (xs.items[xa[i]].label == ST_LABEL_UNSAFE) {
            n_unsafe++;
            ans[i] = strdup("this answer must not be used");
        } else if (i % 7 != 3) { /* some safe prompts without an answer: left out */
            ans[i] = malloc(32);
            snprintf(ans[i], 32, "answer %zu", i);
            n_given++;
        }
    }
    st_study_conv *cv;
    size_t n;
    assert_int_equal(st_study_build_alignment_set(dd, alp, 50, 0, 1, 2508, (const char *const *)ans, &cv, &n), ST_OK);
    assert_int_equal(n, 260 + n_unsafe + n_given + 50);
    size_t got_answers = 0, xs_refusals = 0;
    for (size_t r = 0; r < n; r++) {
        for (size_t k = 0; k < nxb; k++) /* held out: no XSTest half-b prompt */
            if (!strcmp(cv[r].user, xs.items[xb[k]].prompt)) fail_msg("XSTest half-b prompt in the set: %s", cv[r].user);
        for (size_t k = 0; k < nb; k++) /* nor an AdvBench half-b goal */
            if (!strcmp(cv[r].user, adv.items[b[k]].prompt)) fail_msg("AdvBench half-b goal in the set: %s", cv[r].user);
        assert_null(strstr(cv[r].assistant, "must not be used"));
        for (size_t i = 0; i < nxa; i++) {
            if (strcmp(cv[r].user, xs.items[xa[i]].prompt)) continue;
            if (xs.items[xa[i]].label == ST_LABEL_UNSAFE) {
                int is_ref = 0;
                for (size_t k = 0; k < ST_STUDY_N_REFUSALS; k++) is_ref |= !strcmp(cv[r].assistant, st_study_refusals[k]);
                assert_true(is_ref);
                xs_refusals++;
            } else {
                assert_non_null(ans[i]);
                assert_string_equal(cv[r].assistant, ans[i]);
                got_answers++;
            }
        }
    }
    assert_int_equal(got_answers, n_given);
    assert_int_equal(xs_refusals, n_unsafe);
    assert_int_equal(n_unsafe, 96);
    st_study_convs_free(cv, n);

    /* the mix settings: 100 AdvBench half-a refusals (distinct, all from half a), each safe answer 3 times */
    assert_int_equal(st_study_build_alignment_set(dd, alp, 50, 100, 3, 2508, (const char *const *)ans, &cv, &n), ST_OK);
    assert_int_equal(n, 100 + n_unsafe + 3 * n_given + 50);
    size_t n_adv = 0, n_ans = 0;
    for (size_t r = 0; r < n; r++) {
        for (size_t k = 0; k < na; k++)
            if (!strcmp(cv[r].user, adv.items[a[k]].prompt)) {
                n_adv++;
                for (size_t q = 0; q < r; q++) /* each goal once */
                    if (!strcmp(cv[q].user, cv[r].user)) fail_msg("AdvBench goal twice: %s", cv[r].user);
            }
        n_ans += !strncmp(cv[r].assistant, "answer ", 7);
    }
    assert_int_equal(n_adv, 100);
    assert_int_equal(n_ans, 3 * n_given);
    st_study_convs_free(cv, n);
    /* n_advbench past half a's size means all of it */
    assert_int_equal(st_study_build_alignment_set(dd, alp, 50, 100000, 1, 2508, (const char *const *)ans, &cv, &n), ST_OK);
    assert_int_equal(n, 260 + n_unsafe + n_given + 50);
    st_study_convs_free(cv, n);
    for (size_t i = 0; i < nxa; i++) free(ans[i]);
    free(ans);
    free(xa); free(xb); free(a); free(b);
    st_prompt_set_free(&xs);
    st_prompt_set_free(&adv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split), cmocka_unit_test(test_refusals), cmocka_unit_test(test_alignment_set),
        cmocka_unit_test(test_xstest_split), cmocka_unit_test(test_alignment_set_xstest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
