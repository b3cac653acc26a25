/* test_study_defense.c - the defense comparison on hand-made tables (DEFENSES.md §9): nearest match
 * within a tolerance (absolute and relative, ties, NaN, no match), the matched-utility and
 * matched-‖θ−θ0‖ tables (which methods, which weight set, the gap printed when none is within
 * tolerance), the wall-time multiplier over plain fine-tuning, and the verdicts of "EMA is at least
 * as safe as the defenses that need safety data, at similar utility": holds, does not hold (less
 * safe; worse utility) and not testable (no erosion; no safety-data defense; outcomes missing).
 * Prompts 0..k-1 are the answered ones, so the paired counts are known by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "safetune/study.h"

#include <math.h>
#include <string.h>

#define NP 100
#define NSEED 2

static char g_util[] = "val_loss";
static char g_split[] = "all";
static uint64_t g_seeds[NSEED] = {1, 2};
static char k_safe[] = "safeinstr_k", v_safe[] = "260", k_l2[] = "l2sp_alpha", v_l2[] = "0.1";
static char *g_ksafe[] = {k_safe}, *g_vsafe[] = {v_safe}, *g_kl2[] = {k_l2}, *g_vl2[] = {v_l2};
static char n_none[] = "none", n_safe[] = "safeinstr", n_l2[] = "l2sp";
static st_study_defense g_def[3];
static double g_decay[1] = {0.9}, g_merge[1] = {0.5};

static void cfg_init(st_study_config *c, int with_safety) {
    memset(c, 0, sizeof *c);
    c->report.utility_metric = g_util;
    c->report.utility_tolerance = 0.05;
    c->report.distance_tolerance = 0.1;
    c->report.safety_margin = 0.05;
    c->eval.advbench_split = g_split;
    c->seed = 1;
    c->seeds = g_seeds;
    c->n_seeds = NSEED;
    c->n_datasets = 1;
    memset(g_def, 0, sizeof g_def);
    g_def[0].name = n_none;
    g_def[1].name = with_safety ? n_safe : n_l2;
    g_def[1].keys = with_safety ? g_ksafe : g_kl2;
    g_def[1].values = with_safety ? g_vsafe : g_vl2;
    g_def[1].n = 1;
    g_def[1].safety_data = g_def[1].needs_align = with_safety;
    g_def[2].name = n_l2;
    g_def[2].keys = g_kl2;
    g_def[2].values = g_vl2;
    g_def[2].n = 1;
    c->defenses = g_def;
    c->n_defenses = 3;
}

/* Per defense d and seed: one run. Plain (d = 0) has live, ema0.9 and merge0.5; the others live. */
typedef struct {
    int k;                   /* answered prompts (0..k-1) */
    double val_loss, theta, train_s;
} spec;

static st_study_run g_runs[3 * NSEED];
static char g_ids[3 * NSEED][48];
static st_study_row g_rows[5 * NSEED];
static char g_out[5 * NSEED][NP + 1];

/* s[0] plain live, s[1] plain ema0.9, s[2] plain merge0.5, s[3] defense 1 live, s[4] defense 2 live;
 * the same numbers for both seeds. outcomes = 0 drops the per-prompt outcomes. */
static void make(const spec s[5], int with_outcomes, st_study_results *r) {
    size_t nr = 0;
    for (size_t d = 0; d < 3; d++)
        for (size_t sd = 0; sd < NSEED; sd++) {
            size_t ri = d * NSEED + sd;
            st_study_run *x = &g_runs[ri];
            memset(x, 0, sizeof *x);
            snprintf(g_ids[ri], sizeof g_ids[ri], "lr1e-4_%s_s%zu", g_def[d].name, sd + 1);
            x->id = g_ids[ri];
            x->lr = 1e-4;
            x->batch_size = x->effective_batch = x->grad_accum = 1;
            x->max_steps = 8;
            x->lr_schedule = "constant";
            x->has_live = 1;
            x->seed = g_seeds[sd];
            x->defense = d;
            x->cell = d;
            x->base_cell = 0;
            if (d == 0) {
                x->ema_decays = g_decay;
                x->n_ema = 1;
                x->merges = g_merge;
                x->n_merge = 1;
            }
            for (size_t w = 0; w < (d == 0 ? 3u : 1u); w++) {
                const spec *p = &s[d == 0 ? w : 2 + d];
                st_study_row *row = &g_rows[nr];
                memset(row, 0, sizeof *row);
                row->run = x;
                st_study_run_weights(x, w, &row->w);
                st_study_eval_result_clear(&row->r);
                row->r.n_prompts = NP;
                row->r.asr = (double)p->k / NP;
                row->r.val_loss = p->val_loss;
                row->r.theta_dist = p->theta;
                row->r.xstest_safe_refusal = 0.1 * (double)d;
                row->cost.train_time_s = p->train_s;
                for (int i = 0; i < NP; i++) g_out[nr][i] = i < p->k ? '1' : '0';
                g_out[nr][NP] = '\0';
                row->r.asr_outcomes = with_outcomes ? g_out[nr] : NULL;
                nr++;
            }
        }
    r->rows = g_rows;
    r->n = nr;
}

static void test_match_nearest(void **state) {
    (void)state;
    const double v[] = {1.50, NAN, 1.56, 1.44, 1.60};
    assert_int_equal(st_study_match_nearest(v, 5, 1.52, 0.05, 0), 0);  /* 0.02 away */
    assert_int_equal(st_study_match_nearest(v, 5, 1.47, 0.05, 0), 0);  /* 1.50 and 1.44 both 0.03: lower index */
    assert_int_equal(st_study_match_nearest(v, 5, 1.70, 0.05, 0), -1); /* nearest 1.60 is 0.10 away */
    assert_int_equal(st_study_match_nearest(v, 5, 1.70, 0.10, 0), 4);
    assert_int_equal(st_study_match_nearest(v, 5, NAN, 1.0, 0), -1);
    assert_int_equal(st_study_match_nearest(v, 1, 1.0, 0.4, 1), -1);  /* relative: 0.5 > 0.4 x 1.0 */
    assert_int_equal(st_study_match_nearest(v, 1, 1.0, 0.5, 1), 0);
    assert_int_equal(st_study_match_nearest(v + 1, 1, 0.0, 1e9, 0), -1); /* NaN never matches */
}

/* One anchor (plain ema0.9); methods plain live, plain merge, safeinstr live, l2sp live. */
static void test_matched_tables(void **state) {
    (void)state;
    st_study_config c;
    cfg_init(&c, 1);
    const spec s[5] = {{40, 1.50, 20.0, 10.0}, {20, 1.52, 10.0, 10.0}, {10, 1.60, 10.0, 10.0},
                       {15, 1.54, 10.5, 11.0}, {30, 1.70, 15.0, 10.5}};
    st_study_results r;
    make(s, 1, &r);
    st_study_defense_cmp d;
    assert_int_equal(st_study_defense_compare(&c, &r, &d), ST_OK);
    assert_int_equal(d.n_sets, 5);
    /* wall-time multipliers: plain 1, safeinstr 1.1, l2sp 1.05 (EMA and merge share their run's) */
    for (size_t i = 0; i < d.n_sets; i++) {
        double want = d.sets[i].run->defense == 0 ? 1.0 : d.sets[i].run->defense == 1 ? 1.1 : 1.05;
        assert_float_equal(d.sets[i].wall_multiplier, want, 1e-12);
        assert_int_equal(d.sets[i].n_seeds, 2);
    }
    assert_int_equal(d.n_by_utility, 4);
    assert_int_equal(d.n_by_distance, 4);
    int seen = 0;
    for (size_t i = 0; i < d.n_by_utility; i++) {
        const st_study_match *m = &d.by_utility[i];
        assert_string_equal(d.sets[m->anchor].w.name, "ema0.9");
        if (!strcmp(m->method, "none / full / live")) { /* 1.50 vs 1.52: within 0.05 */
            assert_true(m->matched >= 0);
            assert_float_equal(m->gap, -0.02, 1e-9);
            seen |= 1;
        } else if (!strcmp(m->method, "none / full / merge")) { /* 1.60: 0.08 away */
            assert_int_equal(m->matched, -1);
            assert_float_equal(m->gap, 0.08, 1e-9);
            seen |= 2;
        } else if (!strcmp(m->method, "safeinstr / full / live")) {
            assert_true(m->matched >= 0);
            assert_string_equal(d.sets[m->matched].w.name, "live");
            assert_float_equal(d.sets[m->matched].asr, 0.15, 1e-12);
            seen |= 4;
        } else if (!strcmp(m->method, "l2sp / full / live")) {
            assert_int_equal(m->matched, -1);
            assert_float_equal(m->gap, 0.18, 1e-9);
            seen |= 8;
        }
    }
    assert_int_equal(seen, 15);
    seen = 0;
    for (size_t i = 0; i < d.n_by_distance; i++) {
        const st_study_match *m = &d.by_distance[i];
        if (!strcmp(m->method, "none / full / merge")) { /* ‖θ_0.5 − θ0‖ = 10 = the anchor's */
            assert_true(m->matched >= 0);
            assert_float_equal(m->gap, 0.0, 1e-12);
            seen |= 1;
        } else if (!strcmp(m->method, "safeinstr / full / live")) { /* 10.5: within 10% of 10 */
            assert_true(m->matched >= 0);
            seen |= 2;
        } else if (!strcmp(m->method, "l2sp / full / live")) { /* 15: 50% away */
            assert_int_equal(m->matched, -1);
            assert_float_equal(m->gap, 5.0, 1e-9);
            seen |= 4;
        } else if (!strcmp(m->method, "none / full / live")) { /* 20 */
            assert_int_equal(m->matched, -1);
            seen |= 8;
        }
    }
    assert_int_equal(seen, 15);
    /* EMA 20% vs SafeInstr 15%: +5 points, less safe beyond a 5-point margin -> does not hold */
    assert_int_equal(d.ema_vs_defenses.n_group_list, 1);
    const st_finding_group *g = &d.ema_vs_defenses.groups[0];
    assert_float_equal(g->effect, 0.05, 1e-12);
    assert_int_equal(g->n_ema_only, 2 * 5); /* prompts 15..19, both seeds */
    assert_int_equal(g->n_live_only, 0);
    assert_true(g->hi > 0.05);
    assert_int_equal(g->verdict, ST_FINDING_DOES_NOT_HOLD);
    assert_int_equal(d.ema_vs_defenses.verdict, ST_FINDING_DOES_NOT_HOLD);
    st_study_defense_cmp_free(&d);
}

static st_finding_verdict verdict_of(const spec s[5], int with_safety, int with_outcomes, st_finding_group *out,
                                     size_t *n_groups) {
    st_study_config c;
    cfg_init(&c, with_safety);
    st_study_results r;
    make(s, with_outcomes, &r);
    st_study_defense_cmp d;
    assert_int_equal(st_study_defense_compare(&c, &r, &d), ST_OK);
    st_finding_verdict v = d.ema_vs_defenses.verdict;
    *n_groups = d.ema_vs_defenses.n_group_list;
    if (*n_groups) *out = d.ema_vs_defenses.groups[0];
    assert_non_null(d.ema_vs_defenses.text);
    st_study_defense_cmp_free(&d);
    return v;
}

static void test_verdicts(void **state) {
    (void)state;
    st_finding_group g;
    size_t ng;
    /* holds: EMA 10% vs SafeInstr 12%, EMA's utility better */
    const spec holds[5] = {{40, 1.50, 20, 10}, {10, 1.50, 10, 10}, {20, 1.5, 10, 10}, {12, 1.52, 15, 11}, {30, 1.5, 15, 10}};
    assert_int_equal(verdict_of(holds, 1, 1, &g, &ng), ST_FINDING_HOLDS);
    assert_int_equal(ng, 1);
    assert_true(g.effect < 0 && g.hi <= 0.05);
    assert_int_equal(g.n_live_only, 2 * 2); /* answered by SafeInstr only: prompts 10, 11 of both seeds */
    assert_true(g.utility_similar);
    /* equal ASR but EMA's loss 0.1 worse than the defense's: not at similar utility */
    const spec worse[5] = {{40, 1.50, 20, 10}, {10, 1.62, 10, 10}, {20, 1.5, 10, 10}, {10, 1.52, 15, 11}, {30, 1.5, 15, 10}};
    assert_int_equal(verdict_of(worse, 1, 1, &g, &ng), ST_FINDING_DOES_NOT_HOLD);
    assert_false(g.utility_similar);
    assert_non_null(strstr(g.reason, "utility"));
    /* far less safe: the interval lies above 0 */
    const spec less[5] = {{40, 1.50, 20, 10}, {35, 1.50, 10, 10}, {20, 1.5, 10, 10}, {5, 1.52, 15, 11}, {30, 1.5, 15, 10}};
    assert_int_equal(verdict_of(less, 1, 1, &g, &ng), ST_FINDING_DOES_NOT_HOLD);
    assert_true(g.lo > 0);
    assert_non_null(strstr(g.reason, "significantly less safe"));
    /* plain fine-tuning shows no erosion: not testable */
    const spec none[5] = {{0, 1.50, 20, 10}, {0, 1.50, 10, 10}, {0, 1.5, 10, 10}, {0, 1.52, 15, 11}, {0, 1.5, 15, 10}};
    assert_int_equal(verdict_of(none, 1, 1, &g, &ng), ST_FINDING_NA);
    assert_int_equal(ng, 1);
    assert_non_null(strstr(g.reason, "no erosion"));
    /* outcomes missing: not testable */
    assert_int_equal(verdict_of(holds, 1, 0, &g, &ng), ST_FINDING_NA);
    assert_non_null(strstr(g.reason, "outcomes"));
    /* no defense with safety data (L2-SP only): no group, not testable */
    assert_int_equal(verdict_of(holds, 0, 1, &g, &ng), ST_FINDING_NA);
    assert_int_equal(ng, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_nearest),
        cmocka_unit_test(test_matched_tables),
        cmocka_unit_test(test_verdicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
