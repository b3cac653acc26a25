/* grid.c - grid expansion into runs with stable ids, and --dry-run time estimates. */
#include "study/study_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

char *st_study_format_lr(double lr, char *buf, size_t n) {
    char t[48];
    snprintf(t, sizeof t, "%.2e", lr); /* "1.00e-05" */
    char *e = strchr(t, 'e');
    if (!e) { snprintf(buf, n, "%s", t); return buf; }
    *e = '\0';
    char *m = t, *x = e + 1;
    size_t ml = strlen(m);
    if (strchr(m, '.')) {
        while (ml > 0 && m[ml - 1] == '0') m[--ml] = '\0';
        if (ml > 0 && m[ml - 1] == '.') m[--ml] = '\0';
    }
    int ex = atoi(x);
    snprintf(buf, n, "%se%d", m, ex);
    return buf;
}

char *st_study_format_decay(double d, char *buf, size_t n) {
    if (d == 0.0) snprintf(buf, n, "none");
    else snprintf(buf, n, "%.6g", d);
    return buf;
}

static st_status add_run(st_study_plan *p, size_t *cap, const st_study_run *r) {
    if (p->n_runs == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        st_study_run *nr = realloc(p->runs, *cap * sizeof *nr);
        if (!nr) return st_error(ST_ERR_NOMEM, "out of memory");
        p->runs = nr;
    }
    p->runs[p->n_runs++] = *r;
    return ST_OK;
}

/* Fill run r for grid indices ix[] = {dataset, lr, batch, grad_accum, length, schedule, warmup,
 * finetune, defense} and seed index sd; id into a heap string. */
static st_status make_run(const st_study_config *c, const size_t ix[9], size_t sd, size_t cell, size_t n_ema,
                          int has_live, st_study_run *r) {
    memset(r, 0, sizeof *r);
    size_t n_seeds = c->n_seeds ? c->n_seeds : 1;
    r->dataset = ix[0];
    r->lr = c->lr[ix[1]];
    r->batch_size = c->batch_size[ix[2]];
    r->grad_accum = c->grad_accum[ix[3]];
    r->effective_batch = r->batch_size * r->grad_accum;
    if (c->n_max_steps) r->max_steps = c->max_steps[ix[4]];
    else if (c->n_train_examples) {
        r->train_examples = c->train_examples[ix[4]];
        r->max_steps = r->train_examples / r->effective_batch; /* whole: checked when the config was read */
    } else {
        r->max_steps = -1;
        r->epochs = c->epochs[ix[4]];
    }
    r->lr_schedule = c->lr_schedule[ix[5]];
    r->warmup_steps = c->warmup_steps[ix[6]];
    r->seed = c->n_seeds ? c->seeds[sd] : c->seed;
    r->cell = cell;
    r->has_live = has_live;
    r->n_ema = n_ema;
    char id[256], lr[32], steps[48];
    if (r->train_examples > 0) snprintf(steps, sizeof steps, "ex%d", r->train_examples);
    else if (r->max_steps > 0) snprintf(steps, sizeof steps, "steps%d", r->max_steps);
    else snprintf(steps, sizeof steps, "ep%g", r->epochs);
    int o = 0;
    if (c->n_datasets > 1) o = snprintf(id, sizeof id, "%s_", c->datasets[r->dataset].name);
    o += snprintf(id + o, sizeof id - (size_t)o, "lr%s_bs%d_ga%d_%s_%s", st_study_format_lr(r->lr, lr, sizeof lr),
                  r->batch_size, r->grad_accum, steps, r->lr_schedule);
    if (c->n_warmup_steps > 1) o += snprintf(id + o, sizeof id - (size_t)o, "_wu%d", r->warmup_steps);
    r->finetune = ix[7];
    r->defense = ix[8];
    size_t nft = c->n_finetunes ? c->n_finetunes : 1, ndf = c->n_defenses ? c->n_defenses : 1;
    r->base_cell = cell / (nft * ndf);
    r->merges = c->merge;
    r->n_merge = c->n_merge;
    if (c->n_finetunes && (c->n_finetunes > 1 || strcmp(c->finetunes[0].name, "full")))
        o += snprintf(id + o, sizeof id - (size_t)o, "_%s", c->finetunes[r->finetune].name);
    if (c->n_defenses && (c->n_defenses > 1 || strcmp(c->defenses[0].name, "none")))
        o += snprintf(id + o, sizeof id - (size_t)o, "_%s", c->defenses[r->defense].name);
    if (n_seeds > 1) snprintf(id + o, sizeof id - (size_t)o, "_s%llu", (unsigned long long)r->seed);
    r->id = st_strdup(id);
    r->ema_decays = n_ema ? calloc(n_ema, sizeof(double)) : NULL;
    if (!r->id || (n_ema && !r->ema_decays)) {
        free(r->id);
        free(r->ema_decays);
        r->id = NULL;
        r->ema_decays = NULL;
        return st_error(ST_ERR_NOMEM, "out of memory");
    }
    size_t e = 0;
    for (size_t q = 0; q < c->n_ema_decay; q++)
        if (c->ema_decay[q] != 0.0) r->ema_decays[e++] = c->ema_decay[q];
    return ST_OK;
}

st_status st_study_plan_build(const st_study_config *c, st_study_plan *out) {
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    size_t n_len = c->n_max_steps ? c->n_max_steps : c->n_train_examples ? c->n_train_examples : c->n_epochs;
    size_t n_seeds = c->n_seeds ? c->n_seeds : 1;
    size_t n_ema = 0;
    int has_live = 0;
    for (size_t i = 0; i < c->n_ema_decay; i++) {
        if (c->ema_decay[i] == 0.0) has_live = 1;
        else n_ema++;
    }
    if (n_ema == 0) has_live = 1;
    /* nesting: datasets x lr x batch_size x grad_accum x length x schedule x warmup x finetune x defense
     * (cells), then seeds; the finetune and defense axes innermost, so cell / (their product) is the
     * base cell the defense comparison matches in */
    const size_t dims[9] = {c->n_datasets, c->n_lr, c->n_batch_size, c->n_grad_accum, n_len, c->n_lr_schedule,
                            c->n_warmup_steps, c->n_finetunes ? c->n_finetunes : 1, c->n_defenses ? c->n_defenses : 1};
    size_t n_cells = 1;
    for (size_t i = 0; i < 9; i++) n_cells *= dims[i];
    for (size_t cell = 0; cell < n_cells; cell++) {
        size_t ix[9], rest = cell;
        for (size_t i = 9; i-- > 0;) {
            ix[i] = rest % dims[i];
            rest /= dims[i];
        }
        for (size_t sd = 0; sd < n_seeds; sd++) {
            st_study_run r;
            st_status s = make_run(c, ix, sd, cell, n_ema, has_live, &r);
            for (size_t q = 0; !s && q < out->n_runs; q++)
                if (!strcmp(out->runs[q].id, r.id))
                    s = st_error(ST_ERR_ARG, "%s: two grid points give the same run id '%s' (values that differ below the id's precision?)",
                                 c->source, r.id);
            if (!s && add_run(out, &cap, &r)) s = st_error(ST_ERR_NOMEM, "out of memory");
            if (s) {
                if (r.id) {
                    free(r.id);
                    free(r.ema_decays);
                }
                st_study_plan_free(out);
                return s;
            }
            out->n_weight_sets += st_study_run_n_weights(&r);
        }
    }
    return ST_OK;
}

void st_study_plan_free(st_study_plan *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_runs; i++) {
        free(p->runs[i].id);
        free(p->runs[i].ema_decays);
    }
    free(p->runs);
    memset(p, 0, sizeof *p);
}

/* Rows of a dataset file: JSON array elements (alpaca) or non-empty lines (JSONL). */
static long count_rows(const st_study_dataset *d) {
    char *t;
    size_t len;
    if (st_read_file(d->path, &t, &len)) return -1;
    long n = 0;
    if (d->format == ST_FMT_ALPACA) {
        cJSON *j = cJSON_Parse(t);
        n = cJSON_IsArray(j) ? cJSON_GetArraySize(j) : -1;
        cJSON_Delete(j);
    } else {
        int nonblank = 0;
        for (size_t i = 0; i < len; i++) {
            if (t[i] == '\n') { n += nonblank; nonblank = 0; }
            else if (t[i] != ' ' && t[i] != '\r' && t[i] != '\t') nonblank = 1;
        }
        n += nonblank;
    }
    free(t);
    if (n >= 0 && d->limit > 0 && d->limit < n) n = d->limit;
    return n;
}

#define ADVBENCH_ROWS 520 /* harmful_behaviors.csv */
#define XSTEST_ROWS 450
#define TRUTHFULQA_ROWS 817
#define PROMPT_TOKENS 40.0   /* average chat-formatted prompt length (prefill) */
#define MC_TOKENS 300.0      /* TruthfulQA MC1: ~5 choices x ~60 tokens per question */
#define FORWARD_SPEEDUP 3.0  /* forward-only scoring vs forward+backward training */

st_status st_study_estimate_plan(const st_study_config *c, const st_study_plan *p,
                                 st_study_estimate *per_run, st_study_estimate *total) {
    memset(total, 0, sizeof *total);
    double gen = c->estimate.gen_tokens_per_s, tr = c->estimate.train_tokens_per_s;
    double fwd = tr * FORWARD_SPEEDUP, step_s = c->estimate.step_overhead_s > 0 ? c->estimate.step_overhead_s : 0.0;
    /* one evaluation prompt's prefill: measured, else PROMPT_TOKENS scored at the forward speed */
    const double prompt_s = c->estimate.prompt_s > 0 ? c->estimate.prompt_s : PROMPT_TOKENS / fwd;
    const double fill = ST_STUDY_ANSWER_FILL;
    long n_adv = ADVBENCH_ROWS;
    if (strcmp(c->eval.advbench_split, "all")) n_adv = ADVBENCH_ROWS / 2;
    if (c->eval.advbench_limit > 0 && c->eval.advbench_limit < n_adv) n_adv = c->eval.advbench_limit;
    long n_xs = 0;
    if (c->eval.xstest) { /* the XSTest half follows advbench_split (st_study_xstest_split: a 216, b 234 rows) */
        const long nxh = !strcmp(c->eval.advbench_split, "a") ? 216 : !strcmp(c->eval.advbench_split, "b") ? 234 : XSTEST_ROWS;
        n_xs = c->eval.xstest_limit > 0 && c->eval.xstest_limit < nxh ? c->eval.xstest_limit : nxh;
    }
    long n_tqa = 0;
    if (c->eval.truthfulqa)
        n_tqa = c->eval.truthfulqa_limit > 0 && c->eval.truthfulqa_limit < TRUTHFULQA_ROWS ? c->eval.truthfulqa_limit : TRUTHFULQA_ROWS;
    long n_bench = 0; /* eval.benchmarks prompts per weight set */
    for (size_t i = 0; i < c->eval.n_benchmarks; i++)
        n_bench += c->eval.benchmark_limit > 0 && c->eval.benchmark_limit < c->eval.benchmark_n[i] ? c->eval.benchmark_limit
                                                                                                   : c->eval.benchmark_n[i];
    if (c->align.enabled) { /* built once (reused later): the base model and the aligned one each answer
                               AdvBench half a and b (n_adv each), XSTest half b (n_xs) and all 216 prompts of
                               XSTest half a (answer_max_new_tokens; the base model's answers are rows), plus tuning */
        const long at = (long)c->align.max_steps * c->align.batch_size * (long)c->estimate.example_tokens;
        const double ag = 2.0 * fill * ((double)(2 * n_adv + n_xs) * c->eval.max_new_tokens + 216.0 * c->align.answer_max_new_tokens);
        total->align_s = (double)at / tr + c->align.max_steps * step_s + ag / gen + 2.0 * (double)(2 * n_adv + n_xs + 216) * prompt_s;
        total->total_s += total->align_s;
    }
    /* rows of each dataset, counted once (not once per run: a grid has many runs per dataset) */
    long *rows = calloc(c->n_datasets ? c->n_datasets : 1, sizeof *rows);
    if (!rows) return st_error(ST_ERR_NOMEM, "out of memory");
    for (size_t d = 0; d < c->n_datasets; d++) rows[d] = -2; /* not counted yet */
    for (size_t i = 0; i < p->n_runs; i++) {
        const st_study_run *r = &p->runs[i];
        st_study_estimate e;
        memset(&e, 0, sizeof e);
        double steps = r->max_steps;
        if (r->max_steps < 0) {
            if (rows[r->dataset] == -2) rows[r->dataset] = count_rows(&c->datasets[r->dataset]);
            if (rows[r->dataset] < 0) {
                free(rows);
                return st_error(ST_ERR_FORMAT, "%s: cannot count rows for the epochs estimate", c->datasets[r->dataset].path);
            }
            steps = ceil(r->epochs * (double)rows[r->dataset] / r->effective_batch);
        }
        size_t n_w = st_study_run_n_weights(r);
        e.train_tokens = (long)(steps * r->effective_batch * c->estimate.example_tokens);
        e.train_s = (double)e.train_tokens / tr + steps * step_s;
        if (c->checkpoints) /* "middle": two saves of the trainer state (weights, theta_0, 2 moments, EMAs) */
            e.train_s += 2.0 * 4.0 * (double)c->estimate.n_params * (4.0 + (double)r->n_ema) / ST_STUDY_CKPT_BYTES_PER_S;
        long gen_per_w = (long)(fill * (double)((n_adv + n_xs + n_bench) * (long)c->eval.max_new_tokens));
        double score_tokens = (double)n_tqa * MC_TOKENS + (double)c->eval.val_examples * c->estimate.example_tokens;
        e.gen_tokens = gen_per_w * (long)n_w;
        e.eval_s = (double)n_w * ((double)gen_per_w / gen + (double)(n_adv + n_xs + n_bench) * prompt_s + score_tokens / fwd);
        if (c->probe.every > 0) {
            double probes = floor(steps / c->probe.every);
            long pg = (long)(probes * c->probe.n_prompts * c->probe.max_new_tokens * (double)n_w);
            e.gen_tokens += pg;
            e.probe_s = (double)pg / gen + probes * (double)n_w * c->probe.n_prompts * PROMPT_TOKENS / fwd;
        }
        e.total_s = e.train_s + e.eval_s + e.probe_s;
        if (per_run) per_run[i] = e;
        total->train_s += e.train_s;
        total->eval_s += e.eval_s;
        total->probe_s += e.probe_s;
        total->total_s += e.total_s;
        total->train_tokens += e.train_tokens;
        total->gen_tokens += e.gen_tokens;
    }
    free(rows);
    return ST_OK;
}

static void fmt_dur(double s, char *buf, size_t n) {
    if (s < 90) snprintf(buf, n, "%.0f s", s);
    else if (s < 5400) snprintf(buf, n, "%.1f min", s / 60);
    else snprintf(buf, n, "%.1f h", s / 3600);
}

void st_study_print_plan(FILE *f, const st_study_config *c, const st_study_plan *p) {
    fprintf(f, "study %s (fingerprint %s)\n", c->source, c->fingerprint);
    fprintf(f, "model    %s\n", c->model);
    for (size_t i = 0; i < c->n_datasets; i++)
        fprintf(f, "dataset  %s (%s, %s%ld rows)\n", c->datasets[i].path,
                (const char *[]){"alpaca", "dolly", "orca", "messages"}[c->datasets[i].format],
                c->datasets[i].limit ? "first " : "all", c->datasets[i].limit);
    fprintf(f, "AdvBench %s%s, max_new_tokens %d; XSTest %s; TruthfulQA %s\n",
            !strcmp(c->eval.advbench_split, "all") ? "all prompts" : "half ", 
            !strcmp(c->eval.advbench_split, "all") ? "" : c->eval.advbench_split, c->eval.max_new_tokens,
            c->eval.xstest ? "on" : "off", c->eval.truthfulqa ? "on" : "off");
    if (c->n_train_examples) {
        fprintf(f, "design   equal data: train_examples {");
        for (size_t i = 0; i < c->n_train_examples; i++) fprintf(f, "%s%d", i ? ", " : "", c->train_examples[i]);
        fprintf(f, "}, steps = examples / effective batch\n");
    } else
        fprintf(f, "design   %s (a larger effective batch sees more examples)\n",
                c->n_max_steps ? "fixed steps" : "fixed epochs");
    fprintf(f, "seeds    {");
    for (size_t i = 0; i < c->n_seeds; i++) fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)c->seeds[i]);
    fprintf(f, "}: every grid cell is trained once per seed\n");
    st_study_estimate *per = calloc(p->n_runs ? p->n_runs : 1, sizeof *per);
    st_study_estimate tot;
    int have_est = per && st_study_estimate_plan(c, p, per, &tot) == ST_OK;
    fprintf(f, "\n%zu training runs, %zu weight sets to evaluate\n", p->n_runs, p->n_weight_sets);
    fprintf(f, "%-4s %-48s %6s %6s  %-20s %10s\n", "#", "run", "effbs", "steps", "weights", "est. time");
    for (size_t i = 0; i < p->n_runs; i++) {
        const st_study_run *r = &p->runs[i];
        char ws[128] = "", d[32], t[32] = "?", steps[32];
        int o = 0;
        if (r->has_live) o += snprintf(ws + o, sizeof ws - (size_t)o, "live");
        for (size_t e = 0; e < r->n_ema && o < (int)sizeof ws; e++)
            o += snprintf(ws + o, sizeof ws - (size_t)o, "%sema%s", o ? "," : "",
                          st_study_format_decay(r->ema_decays[e], d, sizeof d));
        if (r->n_merge && o < (int)sizeof ws) o += snprintf(ws + o, sizeof ws - (size_t)o, "%s%zu merge%s", o ? "," : "", r->n_merge, r->n_merge == 1 ? "" : "s");
        if (have_est) fmt_dur(per[i].total_s, t, sizeof t);
        if (r->max_steps > 0) snprintf(steps, sizeof steps, "%d", r->max_steps);
        else snprintf(steps, sizeof steps, "%gep", r->epochs);
        fprintf(f, "%-4zu %-48s %6d %6s  %-20s %10s\n", i + 1, r->id, r->effective_batch, steps, ws, t);
    }
    if (have_est) {
        char a[32], b[32], e3[32], g[32];
        fmt_dur(tot.train_s, a, sizeof a);
        fmt_dur(tot.eval_s, b, sizeof b);
        fmt_dur(tot.probe_s, e3, sizeof e3);
        fmt_dur(tot.total_s, g, sizeof g);
        char al[64] = "", d4[32];
        if (c->align.enabled) {
            fmt_dur(tot.align_s, d4, sizeof d4);
            snprintf(al, sizeof al, "aligned start %s unless reused, ", d4);
        }
        fprintf(f, "\nestimated time: %s (%straining %s for %ld tokens, evaluation %s, probes %s)\n", g, al, a,
                tot.train_tokens, b, e3);
        fprintf(f, "assuming %.0f training tokens/s, %.0f generated tokens/s, %.0f tokens per example "
                   "(%s; see docs/study.md), answers %.0f%% of max_new_tokens on average%s\n",
                c->estimate.train_tokens_per_s, c->estimate.gen_tokens_per_s, c->estimate.example_tokens,
                c->estimate.n_params > 0 ? "measured here, below" : "config key 'estimate'",
                100.0 * ST_STUDY_ANSWER_FILL, c->checkpoints ? ", two checkpoints a run" : "");
    }
    free(per);
}
