/* results.c - per-weight-set result files and results.csv (deterministic, atomic). */
#include "study/study_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void st_study_eval_result_clear(st_study_eval_result *r) {
    r->asr = r->asr_lo = r->asr_hi = NAN;
    r->n_prompts = 0;
    r->xstest_safe_refusal = r->xstest_unsafe_refusal = NAN;
    r->val_loss = r->truthfulqa_mc1 = NAN;
    r->judge_mean = r->judge_harmful_rate = NAN;
    r->theta_dist = NAN;
    r->asr_outcomes = NULL;
    r->answers_jsonl = NULL;
    r->bench_asr = NULL;
    r->bench_n = NULL;
    r->n_bench = 0;
}

st_status st_study_eval_result_bench_alloc(st_study_eval_result *r, size_t n) {
    free(r->bench_asr);
    free(r->bench_n);
    r->bench_asr = NULL;
    r->bench_n = NULL;
    r->n_bench = 0;
    if (!n) return ST_OK;
    r->bench_asr = malloc(n * sizeof *r->bench_asr);
    r->bench_n = calloc(n, sizeof *r->bench_n);
    if (!r->bench_asr || !r->bench_n) {
        free(r->bench_asr);
        free(r->bench_n);
        r->bench_asr = NULL;
        r->bench_n = NULL;
        return st_error(ST_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) r->bench_asr[i] = NAN;
    r->n_bench = n;
    return ST_OK;
}

void st_study_eval_result_free(st_study_eval_result *r) {
    if (!r) return;
    free(r->asr_outcomes);
    free(r->answers_jsonl);
    free(r->bench_asr);
    free(r->bench_n);
    st_study_eval_result_clear(r);
}

static void add_num(cJSON *o, const char *k, double v) {
    if (isnan(v)) cJSON_AddNullToObject(o, k);
    else cJSON_AddNumberToObject(o, k, v);
}

st_status st_study_eval_result_write(const char *path, const st_study_eval_result *r, const st_study_cost *cost) {
    cJSON *o = cJSON_CreateObject();
    add_num(o, "asr", r->asr);
    add_num(o, "asr_lo", r->asr_lo);
    add_num(o, "asr_hi", r->asr_hi);
    cJSON_AddNumberToObject(o, "n_prompts", r->n_prompts);
    add_num(o, "xstest_safe_refusal", r->xstest_safe_refusal);
    add_num(o, "xstest_unsafe_refusal", r->xstest_unsafe_refusal);
    add_num(o, "val_loss", r->val_loss);
    add_num(o, "truthfulqa_mc1", r->truthfulqa_mc1);
    add_num(o, "judge_mean", r->judge_mean);
    add_num(o, "judge_harmful_rate", r->judge_harmful_rate);
    add_num(o, "theta_dist", r->theta_dist);
    if (r->asr_outcomes) cJSON_AddStringToObject(o, "asr_outcomes", r->asr_outcomes);
    if (r->n_bench) {
        cJSON *a = cJSON_AddArrayToObject(o, "benchmarks");
        for (size_t i = 0; a && i < r->n_bench; i++) {
            cJSON *e = cJSON_CreateObject();
            add_num(e, "asr", r->bench_asr[i]);
            cJSON_AddNumberToObject(e, "n", r->bench_n[i]);
            cJSON_AddItemToArray(a, e);
        }
    }
    add_num(o, "train_time_s", cost ? cost->train_time_s : NAN);
    add_num(o, "train_cpu_s", cost ? cost->train_cpu_s : NAN);
    add_num(o, "eval_time_s", cost ? cost->eval_time_s : NAN);
    add_num(o, "eval_cpu_s", cost ? cost->eval_cpu_s : NAN);
    char *t = cJSON_Print(o);
    cJSON_Delete(o);
    if (!t) return st_error(ST_ERR_NOMEM, "out of memory");
    size_t n = strlen(t);
    char *t2 = realloc(t, n + 2);
    if (!t2) { free(t); return st_error(ST_ERR_NOMEM, "out of memory"); }
    t2[n] = '\n';
    t2[n + 1] = '\0';
    st_status s = st_write_file_atomic(path, t2, n + 1);
    free(t2);
    return s;
}

static st_status read_num(const cJSON *o, const char *k, const char *path, double *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!x || cJSON_IsNull(x)) { *v = NAN; return ST_OK; }
    if (!cJSON_IsNumber(x)) return st_error(ST_ERR_FORMAT, "%s: key '%s': expected a number or null", path, k);
    *v = x->valuedouble;
    return ST_OK;
}

st_status st_study_eval_result_read(const char *path, st_study_eval_result *r, st_study_cost *cost) {
    cJSON *o;
    st_status s = stu_read_json(path, &o);
    if (s) return s;
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return st_error(ST_ERR_FORMAT, "%s: not a JSON object (delete it to re-evaluate)", path);
    }
    st_study_eval_result_clear(r);
    double np = 0;
    st_study_cost cs = {NAN, NAN, NAN, NAN};
    if (!s) s = read_num(o, "asr", path, &r->asr);
    if (!s) s = read_num(o, "asr_lo", path, &r->asr_lo);
    if (!s) s = read_num(o, "asr_hi", path, &r->asr_hi);
    if (!s) s = read_num(o, "n_prompts", path, &np);
    if (!s) s = read_num(o, "xstest_safe_refusal", path, &r->xstest_safe_refusal);
    if (!s) s = read_num(o, "xstest_unsafe_refusal", path, &r->xstest_unsafe_refusal);
    if (!s) s = read_num(o, "val_loss", path, &r->val_loss);
    if (!s) s = read_num(o, "truthfulqa_mc1", path, &r->truthfulqa_mc1);
    if (!s) s = read_num(o, "judge_mean", path, &r->judge_mean);
    if (!s) s = read_num(o, "judge_harmful_rate", path, &r->judge_harmful_rate);
    if (!s) s = read_num(o, "theta_dist", path, &r->theta_dist);
    if (!s) s = read_num(o, "train_time_s", path, &cs.train_time_s);
    if (!s) s = read_num(o, "train_cpu_s", path, &cs.train_cpu_s);
    if (!s) s = read_num(o, "eval_time_s", path, &cs.eval_time_s);
    if (!s) s = read_num(o, "eval_cpu_s", path, &cs.eval_cpu_s);
    r->n_prompts = isnan(np) ? 0 : (int)np;
    const cJSON *oc = cJSON_GetObjectItemCaseSensitive(o, "asr_outcomes");
    if (!s && oc && !cJSON_IsNull(oc)) {
        const char *t2 = cJSON_IsString(oc) ? oc->valuestring : NULL;
        size_t n = t2 ? strlen(t2) : 0;
        int ok = t2 && n == (size_t)r->n_prompts && strspn(t2, "01") == n;
        if (!ok)
            s = st_error(ST_ERR_FORMAT, "%s: key 'asr_outcomes': expected a string of n_prompts = %d characters 0/1 "
                         "(delete the file to re-evaluate)", path, r->n_prompts);
        else if (!(r->asr_outcomes = st_strdup(t2)))
            s = st_error(ST_ERR_NOMEM, "out of memory");
    }
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(o, "benchmarks");
    if (!s && cJSON_IsArray(bl) && (s = st_study_eval_result_bench_alloc(r, (size_t)cJSON_GetArraySize(bl))) == ST_OK) {
        size_t i = 0;
        for (const cJSON *e = bl->child; !s && e; e = e->next, i++) {
            double n = NAN;
            s = read_num(e, "asr", path, &r->bench_asr[i]);
            if (!s) s = read_num(e, "n", path, &n);
            r->bench_n[i] = isnan(n) ? 0 : (int)n;
        }
    }
    cJSON_Delete(o);
    if (s) st_study_eval_result_free(r);
    if (cost) *cost = cs;
    return s;
}

st_status st_study_results_load(const st_study_config *c, const st_study_plan *p, const char *dir,
                                st_study_results *out) {
    (void)c;
    memset(out, 0, sizeof *out);
    size_t cap = p->n_weight_sets ? p->n_weight_sets : 1;
    out->rows = calloc(cap, sizeof *out->rows);
    if (!out->rows) return st_error(ST_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->n_runs; i++) {
        const st_study_run *r = &p->runs[i];
        for (size_t k = 0; k < st_study_run_n_weights(r); k++) {
            st_study_row row;
            memset(&row, 0, sizeof row);
            row.run = r;
            st_study_run_weights(r, k, &row.w);
            char path[4096];
            snprintf(path, sizeof path, "%s/runs/%s/eval_%s.json", dir, r->id, row.w.name);
            if (!stu_exists(path)) continue;
            st_status s = st_study_eval_result_read(path, &row.r, &row.cost);
            if (s) { st_study_results_free(out); return s; }
            /* the run's training cost is that of its last training (train.json): a run retrained after
             * a stop (no checkpoint kept) has older eval files that carry the first training's time */
            snprintf(path, sizeof path, "%s/runs/%s/train.json", dir, r->id);
            double tt, tc;
            if (stu_exists(path) && stu_read_train_json(path, &tt, &tc) == ST_OK) {
                if (!isnan(tt)) row.cost.train_time_s = tt;
                if (!isnan(tc)) row.cost.train_cpu_s = tc;
            }
            out->rows[out->n++] = row;
        }
    }
    return ST_OK;
}

void st_study_results_free(st_study_results *r) {
    if (!r) return;
    for (size_t i = 0; r->rows && i < r->n; i++) st_study_eval_result_free(&r->rows[i].r);
    free(r->rows);
    memset(r, 0, sizeof *r);
}

st_status st_study_results_write_csv(const st_study_config *c, const st_study_results *r, const char *path) {
    stu_buf b = {0};
    stu_puts(&b, "run_id,dataset,lr,batch_size,grad_accum,effective_batch,steps,schedule,warmup_steps,seed,defense,"
                 "finetune,ema_decay,merge_lambda,weights,asr,asr_lo,asr_hi,n_prompts,xstest_safe_refusal,xstest_unsafe_refusal,val_loss,"
                 "truthfulqa_mc1,judge_mean,judge_harmful_rate,theta_dist");
    for (size_t k = 0; k < c->eval.n_benchmarks; k++)
        stu_printf(&b, ",%s_asr,%s_n", c->eval.benchmark_tags[k], c->eval.benchmark_tags[k]);
    stu_puts(&b, "\n");
    for (size_t i = 0; i < r->n; i++) {
        const st_study_row *w = &r->rows[i];
        const st_study_run *run = w->run;
        char lr[32], dec[32], steps[32], f[12][40], lam[40] = "";
        if (w->w.kind == ST_WEIGHTS_MERGE) snprintf(lam, sizeof lam, "%.6g", w->w.merge_lambda);
        if (run->max_steps > 0) snprintf(steps, sizeof steps, "%d", run->max_steps);
        else snprintf(steps, sizeof steps, "%gep", run->epochs);
        stu_fmt_num(f[0], 40, w->r.asr, 6);
        stu_fmt_num(f[1], 40, w->r.asr_lo, 6);
        stu_fmt_num(f[2], 40, w->r.asr_hi, 6);
        stu_fmt_num(f[3], 40, w->r.xstest_safe_refusal, 6);
        stu_fmt_num(f[4], 40, w->r.xstest_unsafe_refusal, 6);
        stu_fmt_num(f[5], 40, w->r.val_loss, 6);
        stu_fmt_num(f[6], 40, w->r.truthfulqa_mc1, 6);
        stu_fmt_num(f[7], 40, w->r.judge_mean, 6);
        stu_fmt_num(f[8], 40, w->r.judge_harmful_rate, 6);
        stu_fmt_num(f[9], 40, w->r.theta_dist, 6);
        stu_printf(&b, "%s,%s,%s,%d,%d,%d,%s,%s,%d,%llu,%s,%s,%s,%s,%s,%s,%s,%s,%d,%s,%s,%s,%s,%s,%s,%s", run->id,
                   c->datasets[run->dataset].name, st_study_format_lr(run->lr, lr, sizeof lr), run->batch_size,
                   run->grad_accum, run->effective_batch, steps, run->lr_schedule, run->warmup_steps,
                   (unsigned long long)run->seed, st_study_defense_name(c, run), st_study_finetune_name(c, run),
                   st_study_format_decay(w->w.ema_decay, dec, sizeof dec), lam,
                   w->w.kind == ST_WEIGHTS_LIVE ? "live" : w->w.kind == ST_WEIGHTS_EMA ? "ema" : "merge",
                   f[0], f[1], f[2], w->r.n_prompts, f[3], f[4], f[5], f[6], f[7], f[8], f[9]);
        for (size_t k = 0; k < c->eval.n_benchmarks; k++) {
            char v[40] = "", nn[24] = "";
            if (k < w->r.n_bench) {
                stu_fmt_num(v, sizeof v, w->r.bench_asr[k], 6);
                snprintf(nn, sizeof nn, "%d", w->r.bench_n[k]);
            }
            stu_printf(&b, ",%s,%s", v, nn);
        }
        stu_puts(&b, "\n");
    }
    st_status s = stu_buf_write(&b, path);
    stu_buf_free(&b);
    return s;
}

st_status st_study_timings_write_csv(const st_study_config *c, const st_study_results *r, const char *path) {
    stu_buf b = {0};
    stu_puts(&b, "run_id,seed,weights,train_time_s,train_cpu_s,eval_time_s,eval_cpu_s,train_multiplier\n");
    size_t pf = 0; /* plain fine-tuning: defense none, the first full finetune entry */
    for (size_t i = c->n_finetunes; i-- > 0;)
        if (c->finetunes[i].finetune == ST_FINETUNE_FULL) pf = i;
    for (size_t i = 0; i < r->n; i++) {
        const st_study_cost *k = &r->rows[i].cost;
        const st_study_run *x = r->rows[i].run;
        double mult = NAN;
        for (size_t j = 0; j < r->n && isnan(mult); j++) {
            const st_study_run *y = r->rows[j].run;
            if (y->base_cell == x->base_cell && y->seed == x->seed && (!c->n_defenses || !c->defenses[y->defense].n) &&
                y->finetune == pf && k->train_time_s >= 0 && r->rows[j].cost.train_time_s > 0)
                mult = k->train_time_s / r->rows[j].cost.train_time_s;
        }
        char t[5][40];
        stu_fmt_num(t[0], 40, k->train_time_s, 3);
        stu_fmt_num(t[1], 40, k->train_cpu_s, 3);
        stu_fmt_num(t[2], 40, k->eval_time_s, 3);
        stu_fmt_num(t[3], 40, k->eval_cpu_s, 3);
        stu_fmt_num(t[4], 40, mult, 3);
        stu_printf(&b, "%s,%llu,%s,%s,%s,%s,%s,%s\n", x->id, (unsigned long long)x->seed, r->rows[i].w.name, t[0], t[1],
                   t[2], t[3], t[4]);
    }
    st_status s = stu_buf_write(&b, path);
    stu_buf_free(&b);
    return s;
}
