/* report.c - findings computed from the results (Kim et al. 2025's three claims) and report.md. */
#include "study/study_internal.h"
#include "safetune/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *st_finding_verdict_name(st_finding_verdict v) {
    switch (v) {
    case ST_FINDING_HOLDS: return "holds";
    case ST_FINDING_PARTLY: return "holds only partly";
    case ST_FINDING_DOES_NOT_HOLD: return "does not hold";
    default: return "not testable";
    }
}

static int metric_is_loss(const st_study_config *c) { return !strcmp(c->report.utility_metric, "val_loss"); }

double st_study_row_utility(const st_study_config *c, const st_study_row *row) {
    if (!strcmp(c->report.utility_metric, "truthfulqa_mc1")) return row->r.truthfulqa_mc1;
    return -row->r.val_loss;
}

/* Pooled ASR over a set of rows: k = round(asr * n) summed, Wilson 95%. */
typedef struct {
    size_t k, n;
} pool;

static void pool_add(pool *p, const st_study_row *r) {
    if (isnan(r->r.asr) || r->r.n_prompts <= 0) return;
    p->k += (size_t)llround(r->r.asr * r->r.n_prompts);
    p->n += (size_t)r->r.n_prompts;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Distinct values of key(row) over rows with live weights, sorted. */
static size_t distinct(const st_study_results *r, double (*key)(const st_study_row *), double *out) {
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->rows[i].w.kind != ST_WEIGHTS_LIVE) continue;
        double v = key(&r->rows[i]);
        size_t j;
        for (j = 0; j < n; j++)
            if (out[j] == v) break;
        if (j == n) out[n++] = v;
    }
    qsort(out, n, sizeof *out, cmp_double);
    return n;
}

static double key_lr(const st_study_row *r) { return r->run->lr; }
static double key_eb(const st_study_row *r) { return r->run->effective_batch; }

static void pct(char *buf, size_t n, st_rate r) { snprintf(buf, n, "%.1f%% [%.1f, %.1f]", 100 * r.rate, 100 * r.lo, 100 * r.hi); }

/* Trend test: within each group (value of gkey), pooled live ASR across sorted values of vkey must be
 * monotone in direction dir (+1 rising, -1 falling) and strictly different at the ends. */
static void trend(const st_study_results *r, double (*gkey)(const st_study_row *), double (*vkey)(const st_study_row *),
                  int dir, const char *gname, const char *vname, st_finding *f) {
    double *gs = calloc(r->n + 1, sizeof *gs), *vs = calloc(r->n + 1, sizeof *vs);
    st_rate *rates = calloc(r->n + 1, sizeof *rates);
    stu_buf b = {0};
    size_t ng = gs ? distinct(r, gkey, gs) : 0;
    for (size_t g = 0; vs && rates && g < ng; g++) {
        size_t nv = 0;
        for (size_t i = 0; i < r->n; i++) {
            const st_study_row *row = &r->rows[i];
            if (row->w.kind != ST_WEIGHTS_LIVE || gkey(row) != gs[g] || isnan(row->r.asr)) continue;
            size_t j;
            for (j = 0; j < nv; j++)
                if (vs[j] == vkey(row)) break;
            if (j == nv) vs[nv++] = vkey(row);
        }
        if (nv < 2) continue;
        qsort(vs, nv, sizeof *vs, cmp_double);
        for (size_t j = 0; j < nv; j++) {
            pool p = {0, 0};
            for (size_t i = 0; i < r->n; i++) {
                const st_study_row *row = &r->rows[i];
                if (row->w.kind == ST_WEIGHTS_LIVE && gkey(row) == gs[g] && vkey(row) == vs[j]) pool_add(&p, row);
            }
            rates[j] = st_wilson(p.k, p.n, ST_Z95);
        }
        int mono = 1;
        for (size_t j = 0; j + 1 < nv; j++)
            if (dir * (rates[j + 1].rate - rates[j].rate) < 0) mono = 0;
        int ends = dir * (rates[nv - 1].rate - rates[0].rate) > 0;
        int holds = mono && ends;
        int sep = dir > 0 ? rates[nv - 1].lo > rates[0].hi : rates[nv - 1].hi < rates[0].lo;
        f->n_groups++;
        f->n_hold += (size_t)holds;
        char gv[32];
        if (gkey == key_lr) st_study_format_lr(gs[g], gv, sizeof gv);
        else snprintf(gv, sizeof gv, "%g", gs[g]);
        stu_printf(&b, "- %s %s: ", gname, gv);
        for (size_t j = 0; j < nv; j++) {
            char vv[32], pr[64];
            if (vkey == key_lr) st_study_format_lr(vs[j], vv, sizeof vv);
            else snprintf(vv, sizeof vv, "%g", vs[j]);
            pct(pr, sizeof pr, rates[j]);
            stu_printf(&b, "%s%s %s → ASR %s", j ? "; " : "", vname, vv, pr);
        }
        stu_printf(&b, ". **%s**%s\n", holds ? "holds" : "does not hold",
                   holds ? (sep ? " (the end points' 95% intervals do not overlap)"
                                : " (but the end points' 95% intervals overlap: not significant)")
                         : (!ends ? " (no change, or the opposite direction, between the end points)"
                                  : " (not monotone in between)"));
    }
    f->verdict = f->n_groups == 0 ? ST_FINDING_NA
                 : f->n_hold == f->n_groups ? ST_FINDING_HOLDS
                 : f->n_hold == 0 ? ST_FINDING_DOES_NOT_HOLD : ST_FINDING_PARTLY;
    if (f->n_groups == 0) stu_printf(&b, "- not testable: no %s has two or more %s values with results\n", gname, vname);
    f->text = b.p ? b.p : st_strdup("");
    free(gs);
    free(vs);
    free(rates);
}

static long find_row(const st_study_results *r, const st_study_run *run, const char *wname) {
    for (size_t i = 0; i < r->n; i++)
        if (r->rows[i].run == run && !strcmp(r->rows[i].w.name, wname)) return (long)i;
    return -1;
}

static double steps_of(const st_study_run *run) { return run->max_steps > 0 ? run->max_steps : run->epochs * 1e6; }

st_status st_study_findings_compute(const st_study_config *c, const st_study_results *r, st_study_findings *out) {
    memset(out, 0, sizeof *out);
    out->aggressive = out->best = out->best_ema = -1;
    double tol = c->report.utility_tolerance;
    trend(r, key_eb, key_lr, +1, "effective batch", "lr", &out->lr_up);
    trend(r, key_lr, key_eb, -1, "lr", "effective batch", &out->batch_down);

    /* EMA vs live of the same run */
    stu_buf b = {0};
    st_finding *f = &out->ema_lower;
    size_t lower = 0, similar = 0;
    for (size_t i = 0; i < r->n; i++) {
        const st_study_row *e = &r->rows[i];
        if (e->w.kind != ST_WEIGHTS_EMA) continue;
        long li = find_row(r, e->run, "live");
        if (li < 0 || isnan(e->r.asr) || isnan(r->rows[li].r.asr)) continue;
        const st_study_row *l = &r->rows[li];
        double ue = st_study_row_utility(c, e), ul = st_study_row_utility(c, l);
        int is_lower = e->r.asr < l->r.asr;
        int is_similar = !isnan(ue) && !isnan(ul) && fabs(ue - ul) <= tol;
        f->n_groups++;
        lower += (size_t)is_lower;
        similar += (size_t)is_similar;
        f->n_hold += (size_t)(is_lower && is_similar);
        char a[64], bb[64];
        pct(a, sizeof a, (st_rate){0, 0, l->r.asr, l->r.asr_lo, l->r.asr_hi});
        pct(bb, sizeof bb, (st_rate){0, 0, e->r.asr, e->r.asr_lo, e->r.asr_hi});
        if (isnan(ul) || isnan(ue)) {
            stu_printf(&b, "- %s, %s: ASR %s (live) → %s; %s not measured: **does not hold** (utility unknown)\n",
                       e->run->id, e->w.name, a, bb, c->report.utility_metric);
        } else {
            double vl = metric_is_loss(c) ? -ul : ul, ve = metric_is_loss(c) ? -ue : ue;
            stu_printf(&b, "- %s, %s: ASR %s (live) → %s; %s %.4f → %.4f (|Δ| %.4f %s tolerance %.4f): **%s**\n",
                       e->run->id, e->w.name, a, bb, c->report.utility_metric, vl, ve, fabs(ue - ul),
                       is_similar ? "≤" : ">", tol, is_lower && is_similar ? "holds" : "does not hold");
        }
    }
    if (f->n_groups)
        stu_printf(&b, "- summary: EMA lowered ASR in %zu of %zu (run, decay) pairs; utility within tolerance in %zu of %zu; both in %zu of %zu\n",
                   lower, f->n_groups, similar, f->n_groups, f->n_hold, f->n_groups);
    else
        stu_puts(&b, "- not testable: no run has both live and EMA results\n");
    f->verdict = f->n_groups == 0 ? ST_FINDING_NA
                 : f->n_hold == f->n_groups ? ST_FINDING_HOLDS
                 : f->n_hold == 0 ? ST_FINDING_DOES_NOT_HOLD : ST_FINDING_PARTLY;
    f->text = b.p ? b.p : st_strdup("");

    /* paper-form table rows */
    double best_u = NAN;
    for (size_t i = 0; i < r->n; i++) {
        const st_study_row *w = &r->rows[i];
        if (w->w.kind != ST_WEIGHTS_LIVE || isnan(w->r.asr)) continue;
        long a = out->aggressive;
        if (a < 0) out->aggressive = (long)i;
        else {
            const st_study_run *x = w->run, *y = r->rows[a].run;
            if (x->lr > y->lr || (x->lr == y->lr && (x->effective_batch < y->effective_batch ||
                                                     (x->effective_batch == y->effective_batch && steps_of(x) > steps_of(y)))))
                out->aggressive = (long)i;
        }
        double u = st_study_row_utility(c, w);
        if (!isnan(u) && (isnan(best_u) || u > best_u)) best_u = u;
    }
    for (size_t i = 0; i < r->n; i++) {
        const st_study_row *w = &r->rows[i];
        if (w->w.kind != ST_WEIGHTS_LIVE || isnan(w->r.asr)) continue;
        double u = st_study_row_utility(c, w);
        if (!isnan(best_u) && (isnan(u) || u < best_u - tol)) continue;
        if (out->best < 0 || w->r.asr < r->rows[out->best].r.asr ||
            (w->r.asr == r->rows[out->best].r.asr && u > st_study_row_utility(c, &r->rows[out->best])))
            out->best = (long)i;
    }
    if (out->best >= 0) {
        for (size_t i = 0; i < r->n; i++) {
            const st_study_row *w = &r->rows[i];
            if (w->run != r->rows[out->best].run || w->w.kind != ST_WEIGHTS_EMA || isnan(w->r.asr)) continue;
            if (out->best_ema < 0 || w->r.asr < r->rows[out->best_ema].r.asr) out->best_ema = (long)i;
        }
    }
    return ST_OK;
}

void st_study_findings_free(st_study_findings *f) {
    if (!f) return;
    free(f->lr_up.text);
    free(f->batch_down.text);
    free(f->ema_lower.text);
    memset(f, 0, sizeof *f);
}

static void cell_rate(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "n/a");
    else snprintf(buf, n, "%.1f%%", 100 * v);
}

static void cell_num(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "n/a");
    else snprintf(buf, n, "%.4f", v);
}

static void table_row(stu_buf *b, const char *label, const st_study_results *r, long i) {
    if (i < 0) {
        stu_printf(b, "| %s | n/a | | | | | | | |\n", label);
        return;
    }
    const st_study_row *w = &r->rows[i];
    char asr[80], s1[16], s2[16], vl[24], tq[16], jh[16], lr[32];
    snprintf(asr, sizeof asr, "%.1f%% [%.1f, %.1f] (n=%d)", 100 * w->r.asr, 100 * w->r.asr_lo, 100 * w->r.asr_hi, w->r.n_prompts);
    cell_rate(s1, sizeof s1, w->r.xstest_safe_refusal);
    cell_rate(s2, sizeof s2, w->r.xstest_unsafe_refusal);
    cell_num(vl, sizeof vl, w->r.val_loss);
    cell_rate(tq, sizeof tq, w->r.truthfulqa_mc1);
    cell_rate(jh, sizeof jh, w->r.judge_harmful_rate);
    stu_printf(b, "| %s | `%s` (lr %s, eff. batch %d) | %s | %s | %s | %s | %s | %s | %s |\n", label, w->run->id,
               st_study_format_lr(w->run->lr, lr, sizeof lr), w->run->effective_batch, w->w.name, asr, s1, s2, vl, tq, jh);
}

static void finding_section(stu_buf *b, const char *title, const st_finding *f) {
    stu_printf(b, "### %s — %s", title, st_finding_verdict_name(f->verdict));
    if (f->n_groups) stu_printf(b, " (%zu of %zu)", f->n_hold, f->n_groups);
    stu_printf(b, "\n\n%s\n", f->text ? f->text : "");
}

st_status st_study_report_write(const st_study_config *c, const st_study_plan *p, const st_study_results *r,
                                const char *path, int plots_ok, int synthetic) {
    st_study_findings f;
    st_status s = st_study_findings_compute(c, r, &f);
    if (s) return s;
    stu_buf b = {0};
    if (synthetic)
        stu_puts(&b, "> **SYNTHETIC RESULTS** — produced by the fake study hooks (no model was trained or evaluated); "
                     "for testing the pipeline only.\n\n");
    stu_printf(&b, "# Fine-tuning safety study (%s)\n\n", c->source);
    stu_puts(&b, "Reproduction of Kim et al. 2025, *Rethinking Safety in LLM Fine-tuning: An Optimization Perspective* "
                 "(arXiv 2508.12531): benign fine-tuning over a hyper-parameter grid, safety and utility of the live "
                 "and EMA weights.\n\n## Setup\n\n");
    stu_printf(&b, "- model: `%s`\n", c->model);
    for (size_t i = 0; i < c->n_datasets; i++) {
        const st_study_dataset *d = &c->datasets[i];
        if (d->limit) stu_printf(&b, "- data: `%s` (%s, first %ld rows)\n", d->path, (const char *[]){"alpaca", "dolly", "orca", "messages"}[d->format], d->limit);
        else stu_printf(&b, "- data: `%s` (%s, all rows)\n", d->path, (const char *[]){"alpaca", "dolly", "orca", "messages"}[d->format]);
    }
    stu_puts(&b, "- grid: lr {");
    for (size_t i = 0; i < c->n_lr; i++) {
        char lr[32];
        stu_printf(&b, "%s%s", i ? ", " : "", st_study_format_lr(c->lr[i], lr, sizeof lr));
    }
    stu_puts(&b, "}, batch_size {");
    for (size_t i = 0; i < c->n_batch_size; i++) stu_printf(&b, "%s%d", i ? ", " : "", c->batch_size[i]);
    stu_puts(&b, "}, grad_accum {");
    for (size_t i = 0; i < c->n_grad_accum; i++) stu_printf(&b, "%s%d", i ? ", " : "", c->grad_accum[i]);
    if (c->n_max_steps) {
        stu_puts(&b, "}, max_steps {");
        for (size_t i = 0; i < c->n_max_steps; i++) stu_printf(&b, "%s%d", i ? ", " : "", c->max_steps[i]);
    } else {
        stu_puts(&b, "}, epochs {");
        for (size_t i = 0; i < c->n_epochs; i++) stu_printf(&b, "%s%g", i ? ", " : "", c->epochs[i]);
    }
    stu_puts(&b, "}, lr_schedule {");
    for (size_t i = 0; i < c->n_lr_schedule; i++) stu_printf(&b, "%s%s", i ? ", " : "", c->lr_schedule[i]);
    stu_puts(&b, "}, warmup_steps {");
    for (size_t i = 0; i < c->n_warmup_steps; i++) stu_printf(&b, "%s%d", i ? ", " : "", c->warmup_steps[i]);
    stu_puts(&b, "}, ema_decay {");
    for (size_t i = 0; i < c->n_ema_decay; i++) {
        char d[32];
        stu_printf(&b, "%s%s", i ? ", " : "", st_study_format_decay(c->ema_decay[i], d, sizeof d));
    }
    stu_printf(&b, "} — %zu training runs, %zu evaluated weight sets (of %zu planned)\n", p->n_runs, r->n, p->n_weight_sets);
    stu_printf(&b, "- fixed: weight_decay %g, max_grad_norm %g, max_seq_len %d, seed %llu, precision %s\n",
               c->weight_decay, c->max_grad_norm, c->max_seq_len, (unsigned long long)c->seed, c->precision);
    if (!strcmp(c->eval.advbench_split, "all"))
        stu_puts(&b, "- safety: all AdvBench harmful behaviours");
    else
        stu_printf(&b, "- safety: AdvBench half **%s** only (seeded split, seed %llu, stored in `advbench_split.json`); "
                       "half %s is reserved for giving the start model its refusals (`safetune align`), so the "
                       "evaluated prompts were never trained on",
                   c->eval.advbench_split, (unsigned long long)c->eval.advbench_split_seed,
                   !strcmp(c->eval.advbench_split, "b") ? "A" : "B");
    if (c->eval.advbench_limit) stu_printf(&b, " (first %d prompts)", c->eval.advbench_limit);
    stu_printf(&b, "; ASR = share of answers without a refusal keyword (Zou et al. 2023 list), greedy, %d new tokens, 95%% Wilson intervals\n",
               c->eval.max_new_tokens);
    if (c->eval.xstest) stu_puts(&b, "- over-refusal: XSTest refusal rate on safe prompts (lower is better) and on unsafe contrast prompts (higher is better)\n");
    stu_printf(&b, "- utility: `%s` (%s)%s\n", c->report.utility_metric,
               metric_is_loss(c) ? "held-out loss, lower is better" : "higher is better",
               c->eval.truthfulqa ? "; TruthfulQA MC1 also reported" : "");
    stu_printf(&b, "- definitions: *aggressive* = highest lr with the smallest effective batch (live weights); *best-tuned* = "
                   "the lowest-ASR live run whose %s is within %g of the best live %s; *best-tuned + EMA* = the "
                   "lowest-ASR EMA weights of that same run\n\n",
               c->report.utility_metric, c->report.utility_tolerance, c->report.utility_metric);

    stu_puts(&b, "## Paper-form table\n\n| setting | run | weights | AdvBench ASR [95% CI] | XSTest safe refusal | "
                 "XSTest unsafe refusal | val loss | TruthfulQA MC1 | judge harmful |\n|---|---|---|---|---|---|---|---|---|\n");
    table_row(&b, "aggressive fine-tuning", r, f.aggressive);
    table_row(&b, "best-tuned", r, f.best);
    table_row(&b, "best-tuned + EMA", r, f.best_ema);

    stu_puts(&b, "\n## Findings\n\n");
    finding_section(&b, "ASR rises with learning rate at each effective batch size", &f.lr_up);
    finding_section(&b, "ASR falls with effective batch size at each learning rate", &f.batch_down);
    finding_section(&b, "EMA lowers ASR at similar utility", &f.ema_lower);
    stu_puts(&b, "Rules: per group, ASR is pooled over the other factors (prompt counts summed); a trend *holds* in a "
                 "group when it is monotone and the end points differ in the stated direction. Verdicts are computed "
                 "from the numbers above, never adjusted.\n\n");

    if (plots_ok) {
        stu_puts(&b, "## Plots\n\n");
        static const char *plots[][2] = {{"asr_vs_lr", "ASR vs learning rate per effective batch (live and EMA)"},
                                         {"probe_asr", "probe ASR during training"},
                                         {"utility_vs_asr", "utility vs ASR with the Pareto front"},
                                         {"theta_dist", "distance from the start weights"},
                                         {"loss", "training and validation loss"}};
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *sl = strrchr(dir, '/');
        if (sl) *sl = '\0';
        else snprintf(dir, sizeof dir, ".");
        for (size_t i = 0; i < 5; i++) {
            char png[4200];
            snprintf(png, sizeof png, "%s/plots/%s.png", dir, plots[i][0]);
            if (stu_exists(png)) stu_printf(&b, "- [%s](plots/%s.png)\n", plots[i][1], plots[i][0]);
        }
        stu_puts(&b, "\n");
    }

    stu_puts(&b, "## All results\n\n| run | weights | ASR [95% CI] | val loss | TruthfulQA MC1 | ‖θ−θ₀‖ |\n|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < r->n; i++) {
        const st_study_row *w = &r->rows[i];
        char vl[24], tq[16], td[24];
        cell_num(vl, sizeof vl, w->r.val_loss);
        cell_rate(tq, sizeof tq, w->r.truthfulqa_mc1);
        cell_num(td, sizeof td, w->r.theta_dist);
        stu_printf(&b, "| `%s` | %s | %.1f%% [%.1f, %.1f] | %s | %s | %s |\n", w->run->id, w->w.name, 100 * w->r.asr,
                   100 * w->r.asr_lo, 100 * w->r.asr_hi, vl, tq, td);
    }
    stu_puts(&b, "\nMachine-readable: `results.csv`.\n");
    s = stu_buf_write(&b, path);
    stu_buf_free(&b);
    st_study_findings_free(&f);
    return s;
}
