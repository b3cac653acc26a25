/* compare.c - the defense and finetune axes compared (DEFENSES.md §9): weight sets pooled over
 * seeds, matched at equal utility and at equal ‖θ−θ0‖, the wall-time multiplier over plain
 * fine-tuning, and the finding "EMA is at least as safe as the defenses that need safety data, at
 * similar utility" (rules in study.h). */
#include "study/study_internal.h"
#include "safetune/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

long st_study_match_nearest(const double *v, size_t n, double target, double tol, int relative) {
    if (isnan(target)) return -1;
    const double lim = relative ? tol * fabs(target) : tol;
    long best = -1;
    double bd = INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (isnan(v[i])) continue;
        const double d = fabs(v[i] - target);
        if (d <= lim + 1e-12 * (1 + fabs(target)) && d < bd) {
            bd = d;
            best = (long)i;
        }
    }
    return best;
}

static const char *family(const st_study_weights *w, char *buf, size_t n) {
    if (w->kind == ST_WEIGHTS_MERGE) snprintf(buf, n, "merge");
    else snprintf(buf, n, "%s", w->name);
    return buf;
}

void st_study_method_key(const st_study_config *c, const st_study_run *run, const st_study_weights *w, char *buf,
                         size_t n) {
    char f[48];
    snprintf(buf, n, "%s / %s / %s", st_study_defense_name(c, run), st_study_finetune_name(c, run),
             family(w, f, sizeof f));
}

/* Plain fine-tuning: defense "none" (no settings) and the first full finetune entry (else the
 * first entry). */
static int is_plain_defense(const st_study_config *c, const st_study_run *r) {
    return !c->n_defenses || c->defenses[r->defense].n == 0;
}

static size_t plain_finetune(const st_study_config *c) {
    for (size_t i = 0; i < c->n_finetunes; i++)
        if (c->finetunes[i].finetune == ST_FINETUNE_FULL) return i;
    return 0;
}

/* Train wall time of row i ÷ that of the plain run of the same base cell and seed. */
static double multiplier(const st_study_config *c, const st_study_results *r, size_t i) {
    const st_study_run *x = r->rows[i].run;
    const size_t pf = plain_finetune(c);
    for (size_t j = 0; j < r->n; j++) {
        const st_study_run *y = r->rows[j].run;
        if (y->base_cell == x->base_cell && y->seed == x->seed && is_plain_defense(c, y) &&
            (!c->n_finetunes || y->finetune == pf)) {
            double a = r->rows[i].cost.train_time_s, b = r->rows[j].cost.train_time_s;
            return a >= 0 && b > 0 ? a / b : NAN;
        }
    }
    return NAN;
}

static double mean_nan(double sum, size_t n, int any_nan) { return any_nan || !n ? NAN : sum / (double)n; }

static st_status build_sets(const st_study_config *c, const st_study_results *r, st_study_defense_cmp *d) {
    d->sets = calloc(r->n + 1, sizeof *d->sets);
    if (!d->sets) return st_error(ST_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < r->n; i++) {
        const st_study_row *row = &r->rows[i];
        size_t j;
        for (j = 0; j < d->n_sets; j++)
            if (d->sets[j].run->cell == row->run->cell && !strcmp(d->sets[j].w.name, row->w.name)) break;
        if (j == d->n_sets) {
            d->sets[j].run = row->run;
            d->sets[j].w = row->w;
            d->sets[j].first_row = (long)i;
            d->n_sets++;
        }
    }
    for (size_t j = 0; j < d->n_sets; j++) {
        st_study_wset *s = &d->sets[j];
        double su = 0, sx = 0, st = 0, sm = 0;
        int nu = 0, nx = 0, nt = 0, nm = 0;
        for (size_t i = 0; i < r->n; i++) {
            const st_study_row *row = &r->rows[i];
            if (row->run->cell != s->run->cell || strcmp(row->w.name, s->w.name)) continue;
            s->n_seeds++;
            if (!isnan(row->r.asr) && row->r.n_prompts > 0) {
                s->k += (size_t)llround(row->r.asr * row->r.n_prompts);
                s->n += (size_t)row->r.n_prompts;
            }
            double u = st_study_row_utility(c, row), m = multiplier(c, r, i);
            su += u, nu |= isnan(u);
            sx += row->r.xstest_safe_refusal, nx |= isnan(row->r.xstest_safe_refusal);
            st += row->r.theta_dist, nt |= isnan(row->r.theta_dist);
            sm += m, nm |= isnan(m);
        }
        s->asr = s->n ? (double)s->k / (double)s->n : NAN;
        s->utility = mean_nan(su, s->n_seeds, nu);
        s->utility_raw = !strcmp(c->report.utility_metric, "val_loss") ? -s->utility : s->utility;
        s->xstest_safe_refusal = mean_nan(sx, s->n_seeds, nx);
        s->theta_dist = mean_nan(st, s->n_seeds, nt);
        s->wall_multiplier = mean_nan(sm, s->n_seeds, nm);
    }
    return ST_OK;
}

/* Anchors: EMA weight sets of plain fine-tuning (any finetune entry). */
static int is_anchor(const st_study_config *c, const st_study_wset *s) {
    return s->w.kind == ST_WEIGHTS_EMA && is_plain_defense(c, s->run);
}

/* The methods compared with an anchor: every other method key of the base cell except the EMA
 * families of plain fine-tuning with the anchor's finetune (the method under test). */
static st_status match_table(const st_study_config *c, st_study_defense_cmp *d, int by_distance) {
    st_study_match **out = by_distance ? &d->by_distance : &d->by_utility;
    size_t *nout = by_distance ? &d->n_by_distance : &d->n_by_utility;
    size_t cap = 0;
    double *vals = calloc(d->n_sets + 1, sizeof *vals);
    long *idx = calloc(d->n_sets + 1, sizeof *idx);
    char (*keys)[160] = calloc(d->n_sets + 1, sizeof *keys);
    if (!vals || !idx || !keys) {
        free(vals);
        free(idx);
        free(keys);
        return st_error(ST_ERR_NOMEM, "out of memory");
    }
    for (size_t j = 0; j < d->n_sets; j++) st_study_method_key(c, d->sets[j].run, &d->sets[j].w, keys[j], sizeof keys[j]);
    st_status s = ST_OK;
    for (size_t a = 0; !s && a < d->n_sets; a++) {
        const st_study_wset *A = &d->sets[a];
        if (!is_anchor(c, A)) continue;
        for (size_t m = 0; !s && m < d->n_sets; m++) {
            const st_study_wset *M = &d->sets[m];
            if (M->run->base_cell != A->run->base_cell) continue;
            if (is_plain_defense(c, M->run) && M->run->finetune == A->run->finetune && M->w.kind == ST_WEIGHTS_EMA) continue;
            int first = 1; /* one row per method key: its first weight set in the cell */
            for (size_t q = 0; q < m && first; q++)
                if (d->sets[q].run->base_cell == A->run->base_cell && !strcmp(keys[q], keys[m])) first = 0;
            if (!first) continue;
            size_t nv = 0;
            for (size_t q = m; q < d->n_sets; q++)
                if (d->sets[q].run->base_cell == A->run->base_cell && !strcmp(keys[q], keys[m])) {
                    vals[nv] = by_distance ? d->sets[q].theta_dist : d->sets[q].utility_raw;
                    idx[nv++] = (long)q;
                }
            const double target = by_distance ? A->theta_dist : A->utility_raw;
            const double tol = by_distance ? c->report.distance_tolerance : c->report.utility_tolerance;
            long hit = st_study_match_nearest(vals, nv, target, tol, by_distance);
            st_study_match mr;
            memset(&mr, 0, sizeof mr);
            mr.anchor = (long)a;
            mr.matched = hit >= 0 ? idx[hit] : -1;
            snprintf(mr.method, sizeof mr.method, "%s", keys[m]);
            if (hit >= 0) mr.gap = vals[hit] - target;
            else {
                long near = st_study_match_nearest(vals, nv, target, INFINITY, 0);
                mr.gap = near >= 0 ? vals[near] - target : NAN;
            }
            if (*nout == cap) {
                cap = cap ? 2 * cap : 16;
                st_study_match *nr = realloc(*out, cap * sizeof *nr);
                if (!nr) {
                    s = st_error(ST_ERR_NOMEM, "out of memory");
                    break;
                }
                *out = nr;
            }
            (*out)[(*nout)++] = mr;
        }
    }
    free(vals);
    free(idx);
    free(keys);
    return s;
}

/* Outcome matrix [units, np] of the rows of set S, in results (= seed) order. NULL on OOM or
 * when some row lacks outcomes of length np. */
static unsigned char *outcomes(const st_study_results *r, const st_study_wset *S, size_t np, size_t *nu, uint64_t *seeds) {
    unsigned char *m = malloc(S->n_seeds * np + 1);
    if (!m) return NULL;
    size_t u = 0;
    for (size_t i = 0; i < r->n; i++) {
        const st_study_row *row = &r->rows[i];
        if (row->run->cell != S->run->cell || strcmp(row->w.name, S->w.name)) continue;
        if (!row->r.asr_outcomes || (size_t)row->r.n_prompts != np) {
            free(m);
            return NULL;
        }
        for (size_t j = 0; j < np; j++) m[u * np + j] = row->r.asr_outcomes[j] == '1';
        seeds[u++] = row->run->seed;
    }
    *nu = u;
    return m;
}

static void cell_text(const st_study_config *c, const st_study_run *run, char *buf, size_t n) {
    char lr[32];
    int o = snprintf(buf, n, "lr %s, eff. batch %d", st_study_format_lr(run->lr, lr, sizeof lr), run->effective_batch);
    if (c->n_datasets > 1 && o < (int)n) snprintf(buf + o, n - (size_t)o, ", %s", c->datasets[run->dataset].name);
}

static st_status safety_finding(const st_study_config *c, const st_study_results *r, st_study_defense_cmp *d) {
    st_finding *f = &d->ema_vs_defenses;
    stu_buf b = {0};
    st_status s = ST_OK;
    const double tol = c->report.utility_tolerance, margin = c->report.safety_margin;
    size_t k0 = 0, n0 = 0; /* the aligned start's own ASR on the same prompts (as in the EMA finding) */
    const int have_start = stu_align_start_asr(c, &k0, &n0);
    for (size_t a = 0; !s && a < d->n_sets; a++) {
        const st_study_wset *E = &d->sets[a];
        if (!is_anchor(c, E)) continue;
        const st_study_wset *P = NULL; /* plain fine-tuning's live weights of the same cell */
        for (size_t q = 0; q < d->n_sets; q++)
            if (d->sets[q].run->cell == E->run->cell && d->sets[q].w.kind == ST_WEIGHTS_LIVE) P = &d->sets[q];
        for (size_t q = 0; !s && q < d->n_sets; q++) {
            const st_study_wset *D = &d->sets[q];
            if (D->w.kind != ST_WEIGHTS_LIVE || D->run->base_cell != E->run->base_cell ||
                D->run->finetune != E->run->finetune || !c->n_defenses || !c->defenses[D->run->defense].safety_data)
                continue;
            st_finding_group g;
            memset(&g, 0, sizeof g);
            char ct[96];
            cell_text(c, E->run, ct, sizeof ct);
            snprintf(g.label, sizeof g.label, "%s, %s: plain %s vs %s", ct, st_study_finetune_name(c, E->run), E->w.name,
                     st_study_defense_name(c, D->run));
            g.start_asr = D->asr; /* the defense */
            g.end_asr = E->asr;   /* EMA */
            g.effect = E->asr - D->asr;
            g.lo = g.hi = g.p_value = NAN;
            g.utility_live = D->utility_raw; /* here: the defense's utility */
            g.utility_ema = E->utility_raw;
            const double du = E->utility - D->utility; /* oriented: > 0 = EMA better */
            g.utility_similar = !isnan(du) && du >= -tol - 1e-12;
            size_t np = E->n_seeds ? E->n / E->n_seeds : 0, ue = 0, ud = 0;
            uint64_t *se = calloc(E->n_seeds + 1, sizeof *se), *sd = calloc(D->n_seeds + 1, sizeof *sd);
            unsigned char *A = se && np ? outcomes(r, E, np, &ue, se) : NULL;
            unsigned char *B = sd && np ? outcomes(r, D, np, &ud, sd) : NULL;
            int paired = A && B && ue == ud && ue > 0;
            for (size_t u = 0; paired && u < ue; u++) paired = se[u] == sd[u];
            if (paired) {
                for (size_t i = 0; i < ue * np; i++) {
                    g.n_live_only += B[i] && !A[i]; /* the defense answered, EMA refused */
                    g.n_ema_only += A[i] && !B[i];
                }
                g.p_value = st_mcnemar_exact(g.n_live_only, g.n_ema_only, 0);
                st_boot_ci ci;
                s = st_bootstrap_diff(A, ue, B, ud, np, ST_STUDY_N_BOOT, stu_boot_seed(c, g.label), &ci);
                if (!s) {
                    g.effect = ci.diff;
                    g.lo = ci.lo;
                    g.hi = ci.hi;
                }
            }
            free(A);
            free(B);
            free(se);
            free(sd);
            if (s) break;
            if (!paired) {
                g.verdict = ST_FINDING_NA;
                snprintf(g.reason, sizeof g.reason, "per-prompt outcomes of the two weight sets are missing or do not pair "
                                                     "by seed (delete the eval_*.json files to re-evaluate)");
            } else if (P && P->k == 0) {
                g.verdict = ST_FINDING_NA;
                snprintf(g.reason, sizeof g.reason, "plain fine-tuning shows no erosion (live ASR 0 of %zu): there is nothing "
                                                     "to defend against", P->n);
            } else if (P && have_start && n0 == np && st_wilson(P->k, P->n, ST_Z95).lo <= (double)k0 / (double)n0) {
                g.verdict = ST_FINDING_NA;
                snprintf(g.reason, sizeof g.reason, "plain fine-tuning shows no erosion: its live ASR (%zu/%zu) does not rise "
                                                     "above the aligned start's own %.1f%% (%zu/%zu), so there is nothing to "
                                                     "defend against", P->k, P->n, 100.0 * (double)k0 / (double)n0, k0, n0);
            } else if (g.hi <= margin && g.utility_similar) {
                g.verdict = ST_FINDING_HOLDS;
                snprintf(g.reason, sizeof g.reason, "the 95%% interval of ASR(EMA) − ASR(%s) lies below the margin of %.1f "
                                                     "points, at similar utility", st_study_defense_name(c, D->run),
                         100 * margin);
            } else {
                g.verdict = ST_FINDING_DOES_NOT_HOLD;
                int o = 0;
                if (g.hi > margin)
                    o = snprintf(g.reason, sizeof g.reason, "%s", g.lo > 0 ? "EMA is significantly less safe (the interval "
                                                                              "lies above 0)"
                                                                            : "the interval reaches above the margin: EMA "
                                                                              "is not shown at least as safe");
                if (!g.utility_similar)
                    snprintf(g.reason + o, sizeof g.reason - (size_t)o, "%s%s", o ? "; " : "",
                             isnan(du) ? "utility not measured" : "EMA's utility is worse than the defense's by more than the "
                                                                  "tolerance");
            }
            stu_printf(&b, "- %s: ASR %.1f%% (%s, %zu/%zu) vs %.1f%% (EMA, %zu/%zu)", g.label, 100 * D->asr,
                       st_study_defense_name(c, D->run), D->k, D->n, 100 * E->asr, E->k, E->n);
            if (paired)
                stu_printf(&b, "; ASR(EMA) − ASR(defense) %+.1f points [%+.1f, %+.1f] (paired bootstrap over prompts and "
                               "seeds), prompts answered by the defense only %zu, by EMA only %zu, McNemar p = %.3g",
                           100 * g.effect, 100 * g.lo, 100 * g.hi, g.n_live_only, g.n_ema_only, g.p_value);
            if (isnan(du)) stu_printf(&b, "; %s not measured", c->report.utility_metric);
            else
                stu_printf(&b, "; %s %.4f (defense) vs %.4f (EMA), EMA %s", c->report.utility_metric, D->utility_raw,
                           E->utility_raw, du > 0 ? "better" : du < 0 ? (g.utility_similar ? "worse, within tolerance" : "worse")
                                                                      : "equal");
            stu_printf(&b, ". **%s**: %s\n", st_finding_verdict_name(g.verdict), g.reason);
            s = stu_finding_add(f, &g);
        }
    }
    if (!s)
        stu_finding_finish(f, &b, "the grid needs plain fine-tuning with an EMA decay and a defense that uses safety data "
                                  "(SafeInstr: safeinstr_k > 0) in the same cells");
    stu_buf_free(&b);
    return s;
}

st_status st_study_defense_compare(const st_study_config *c, const st_study_results *r, st_study_defense_cmp *out) {
    memset(out, 0, sizeof *out);
    st_status s = build_sets(c, r, out);
    if (!s) s = match_table(c, out, 0);
    if (!s) s = match_table(c, out, 1);
    if (!s) s = safety_finding(c, r, out);
    if (s) st_study_defense_cmp_free(out);
    return s;
}

void st_study_defense_cmp_free(st_study_defense_cmp *d) {
    if (!d) return;
    free(d->sets);
    free(d->by_utility);
    free(d->by_distance);
    free(d->ema_vs_defenses.text);
    free(d->ema_vs_defenses.groups);
    memset(d, 0, sizeof *d);
}
