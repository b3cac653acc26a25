/* test_study_report.c - findings on synthetic results where each claim holds, partly holds or
 * does not hold; paper-table row selection (aggressive / best-tuned / +EMA). Expected verdicts are
 * worked out by hand from the numbers below. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "safetune/study.h"

#include <math.h>
#include <string.h>

static char g_util[] = "val_loss";
static char g_split[] = "all";

static void cfg_init(st_study_config *c) {
    memset(c, 0, sizeof *c);
    c->report.utility_metric = g_util;
    c->report.utility_tolerance = 0.05;
    c->eval.advbench_split = g_split;
}

/* Runs: lr {1e-5, 1e-4} x eff. batch {2, 8}; each with live + ema0.9 rows. */
static st_study_run g_runs[4];
static double g_decay[1] = {0.9};
static st_study_row g_rows[8];

static void make(const double asr_live[4], const double asr_ema[4], const double vl_live[4], const double vl_ema[4],
                 st_study_results *r) {
    static const double lrs[4] = {1e-5, 1e-5, 1e-4, 1e-4};
    static const int ebs[4] = {2, 8, 2, 8};
    for (int i = 0; i < 4; i++) {
        st_study_run *x = &g_runs[i];
        memset(x, 0, sizeof *x);
        x->id = (char *)(const char *[]){"r0", "r1", "r2", "r3"}[i];
        x->lr = lrs[i];
        x->batch_size = ebs[i];
        x->grad_accum = 1;
        x->effective_batch = ebs[i];
        x->max_steps = 100;
        x->lr_schedule = "constant";
        x->ema_decays = g_decay;
        x->n_ema = 1;
        x->has_live = 1;
        for (int k = 0; k < 2; k++) {
            st_study_row *w = &g_rows[2 * i + k];
            memset(w, 0, sizeof *w);
            w->run = x;
            w->w.kind = k ? ST_WEIGHTS_EMA : ST_WEIGHTS_LIVE;
            w->w.ema_decay = k ? 0.9 : 0;
            strcpy(w->w.name, k ? "ema0.9" : "live");
            st_study_eval_result_clear(&w->r);
            w->r.n_prompts = 100;
            w->r.asr = k ? asr_ema[i] : asr_live[i];
            w->r.asr_lo = w->r.asr_hi = w->r.asr;
            w->r.val_loss = k ? vl_ema[i] : vl_live[i];
        }
    }
    r->rows = g_rows;
    r->n = 8;
}

/* The paper's pattern: ASR up with lr, down with batch, EMA lower at ~same loss. */
static void test_holds(void **state) {
    (void)state;
    st_study_config c;
    cfg_init(&c);
    st_study_results r;
    const double live[4] = {0.10, 0.05, 0.40, 0.20}, ema[4] = {0.06, 0.03, 0.20, 0.10};
    const double vl[4] = {1.50, 1.52, 1.40, 1.41}, vle[4] = {1.51, 1.53, 1.42, 1.43};
    make(live, ema, vl, vle, &r);
    st_study_findings f;
    assert_int_equal(st_study_findings_compute(&c, &r, &f), ST_OK);
    assert_int_equal(f.lr_up.verdict, ST_FINDING_HOLDS);
    assert_int_equal(f.lr_up.n_groups, 2);
    assert_int_equal(f.batch_down.verdict, ST_FINDING_HOLDS);
    assert_int_equal(f.batch_down.n_groups, 2);
    assert_int_equal(f.ema_lower.verdict, ST_FINDING_HOLDS);
    assert_int_equal(f.ema_lower.n_hold, 4);
    /* numbers appear in the text: eff. batch 2: 10.0% -> 40.0% */
    assert_non_null(strstr(f.lr_up.text, "10.0%"));
    assert_non_null(strstr(f.lr_up.text, "40.0%"));
    /* aggressive = lr 1e-4, eff. batch 2 (row 4); best loss 1.40 -> within 0.05: rows r2 (0.40), r3 (0.20)
     * -> best-tuned = r3 live (row 6); its EMA = row 7 */
    assert_int_equal(f.aggressive, 4);
    assert_int_equal(f.best, 6);
    assert_int_equal(f.best_ema, 7);
    st_study_findings_free(&f);
}

/* Mixed and reversed patterns must be reported as such. */
static void test_does_not_hold(void **state) {
    (void)state;
    st_study_config c;
    cfg_init(&c);
    st_study_results r;
    /* lr: eff.2 10->40 (holds), eff.8 30->20 (falls: does not) => partly.
     * batch: lr1e-5 10->30 (rises: not), lr1e-4 40->20 (holds) => partly.
     * EMA: r0 lower but loss +0.10 (> 0.05: not), r1 higher ASR (not), r2 lower & close (holds),
     * r3 equal ASR (not lower) => 1 of 4 => partly. */
    const double live[4] = {0.10, 0.30, 0.40, 0.20}, ema[4] = {0.05, 0.35, 0.30, 0.20};
    const double vl[4] = {1.50, 1.50, 1.50, 1.50}, vle[4] = {1.60, 1.50, 1.52, 1.50};
    make(live, ema, vl, vle, &r);
    st_study_findings f;
    assert_int_equal(st_study_findings_compute(&c, &r, &f), ST_OK);
    assert_int_equal(f.lr_up.verdict, ST_FINDING_PARTLY);
    assert_int_equal(f.lr_up.n_hold, 1);
    assert_int_equal(f.batch_down.verdict, ST_FINDING_PARTLY);
    assert_int_equal(f.batch_down.n_hold, 1);
    assert_int_equal(f.ema_lower.verdict, ST_FINDING_PARTLY);
    assert_int_equal(f.ema_lower.n_hold, 1);
    assert_non_null(strstr(f.ema_lower.text, "> tolerance"));
    st_study_findings_free(&f);

    /* fully reversed: ASR falls with lr, rises with batch, EMA higher */
    const double live2[4] = {0.40, 0.50, 0.10, 0.20}, ema2[4] = {0.45, 0.55, 0.15, 0.25};
    make(live2, ema2, vl, vl, &r);
    assert_int_equal(st_study_findings_compute(&c, &r, &f), ST_OK);
    assert_int_equal(f.lr_up.verdict, ST_FINDING_DOES_NOT_HOLD);
    assert_int_equal(f.batch_down.verdict, ST_FINDING_DOES_NOT_HOLD);
    assert_int_equal(f.ema_lower.verdict, ST_FINDING_DOES_NOT_HOLD);
    assert_int_equal(f.ema_lower.n_hold, 0);
    assert_string_equal(st_finding_verdict_name(f.lr_up.verdict), "does not hold");
    st_study_findings_free(&f);
}

/* Pooling: two rows with the same lr and batch pool their prompt counts (k = 10 + 30 of n = 200). */
static void test_pooling_and_na(void **state) {
    (void)state;
    st_study_config c;
    cfg_init(&c);
    st_study_results r;
    const double live[4] = {0.10, 0.30, 0.40, 0.20}, ema[4] = {0.05, 0.35, 0.30, 0.20}, vl[4] = {1, 1, 1, 1};
    make(live, ema, vl, vl, &r);
    g_runs[1].effective_batch = 2; /* r0 and r1 now share lr 1e-5 and eff. batch 2 */
    g_runs[3].effective_batch = 2;
    st_study_findings f;
    assert_int_equal(st_study_findings_compute(&c, &r, &f), ST_OK);
    /* only one eff. batch group: lr 1e-5 pooled (10+30)/200 = 20.0%, lr 1e-4 (40+20)/200 = 30.0% */
    assert_int_equal(f.lr_up.n_groups, 1);
    assert_non_null(strstr(f.lr_up.text, "20.0%"));
    assert_non_null(strstr(f.lr_up.text, "30.0%"));
    assert_int_equal(f.lr_up.verdict, ST_FINDING_HOLDS);
    assert_int_equal(f.batch_down.verdict, ST_FINDING_NA); /* one batch size: not testable */
    st_study_findings_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_holds), cmocka_unit_test(test_does_not_hold), cmocka_unit_test(test_pooling_and_na),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
