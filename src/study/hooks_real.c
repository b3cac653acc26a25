/* hooks_real.c - the real study hooks: the trainer (src/train) and the evaluators (src/eval) in
 * one process. The model is loaded once (θ_0 kept; each run restarts from it), the dataset is
 * tokenized once, and a run's final weights stay in memory for its evaluations (they are read
 * back from the run's last checkpoint only when a study is resumed between training and eval).
 *
 * Training drives st_trainer_step itself (not st_trainer_run) so that, per step, it can update
 * one EMA buffer per extra decay (the trainer keeps the first decay's EMA; further decays are
 * st_ema buffers here, saved next to each checkpoint as ckpt/ema_extra/step-N-<decay>.f32),
 * run the safety probe, stop early cleanly (probe.stop_asr_above) and write metrics lines in the
 * study format (EMA fields keyed by decay when there are several). */
#include "study/hooks_internal.h"
#include "study/study_internal.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetune/checkpoint.h"
#include "safetune/ema.h"
#include "safetune/judge.h"
#include "safetune/stats.h"
#include "safetune/trainer.h"
#include "safetune/utility.h"

typedef struct {
    char *model_path;         /* what m was loaded from */
    st_model *m;              /* m->params = live weights of the current run */
    float *theta0;            /* start weights [nf] */
    size_t nf;
    char *ds_key;             /* what tk / split were made from (NULL = none) */
    st_tokenized tk;
    st_data_split split;      /* held-out rows of tk (same split as the trainer's) */
    char *prompts_key;        /* the eval settings the prompt sets were chosen for (NULL = none) */
    st_prompt_set adv, xs;
    const char **adv_eval, **adv_probe, **xs_p;
    size_t n_eval, n_probe, n_xs;
    st_prompt_label *xs_lab;
    int tqa_loaded;
    st_tqa_set tqa;
    st_refusal_matcher *rm;
    /* the run trained in this process (its weights are in memory) */
    char run_id[256];
    st_trainer *t;
    st_ema *extra;            /* EMAs of run->ema_decays[1..] */
    size_t n_extra;
    int has_best;             /* keep_best: best_* hold the weights of the lowest live probe ASR */
    float **best;             /* [1 + n_ema]: live, ema_0, ema_1, ... */
    double best_asr;
    int64_t best_step;
    float *scratch;           /* weights read back from disk */
    char *run_json;           /* the trainer's run_config_json (read when it saves) */
} real_ctx;

static real_ctx g_ctx;

static st_status nomem(void) { return st_error(ST_ERR_NOMEM, "study: out of memory"); }

static void free_run(real_ctx *x) {
    st_trainer_free(x->t);
    x->t = NULL;
    for (size_t k = 0; k < x->n_extra; k++) st_ema_free(&x->extra[k]);
    free(x->extra);
    x->extra = NULL;
    x->n_extra = 0;
    if (x->best) {
        for (size_t k = 0; x->best[k]; k++) st_free_aligned(x->best[k]);
        free(x->best);
    }
    x->best = NULL;
    x->has_best = 0;
    x->run_id[0] = '\0';
    free(x->run_json);
    x->run_json = NULL;
}

/* ---- one-time loading ---- */

static st_status ensure_model(real_ctx *x, const st_study_config *c) {
    char *path = NULL;
    st_status s = ST_OK;
    if (c->align.enabled) {
        st_study_align_opts ao;
        if ((s = st_study_align_opts_from_config(c, &ao, &path))) return s;
        char *hf0 = stu_join(path, "aligned");
        int same = hf0 && x->model_path && !strcmp(x->model_path, hf0);
        free(hf0);
        if (!same) {
            int reused = 0;
            st_log_info("study: aligned start %s", path);
            ao.out_dir = path;
            if ((s = st_study_align_build(&ao, &reused))) { free(path); return s; }
            if (reused) st_log_info("study: reusing the aligned start in %s", path);
        }
        char *hf = stu_join(path, "aligned");
        free(path);
        if (!hf) return nomem();
        path = hf;
    } else if (!(path = st_strdup(c->model))) return nomem();
    if (x->model_path && !strcmp(x->model_path, path)) { free(path); return ST_OK; }
    free_run(x);
    st_model_free(x->m);
    st_free_aligned(x->theta0);
    st_free_aligned(x->scratch);
    x->m = NULL;
    x->theta0 = x->scratch = NULL;
    free(x->model_path);
    x->model_path = path;
    free(x->ds_key);
    x->ds_key = NULL;
    st_tokenized_free(&x->tk);
    st_data_split_free(&x->split);
    if ((s = st_model_load(path, &x->m))) goto fail;
    if (!x->m->tokenizer) { s = st_error(ST_ERR_FORMAT, "%s: the model has no tokenizer", path); goto fail; }
    x->nf = x->m->layout.n_floats;
    x->theta0 = st_alloc_aligned(x->nf * sizeof(float));
    if (!x->theta0) { s = nomem(); goto fail; }
    memcpy(x->theta0, x->m->params, x->nf * sizeof(float));
    return ST_OK;
fail:
    st_model_free(x->m);
    x->m = NULL;
    free(x->model_path);
    x->model_path = NULL;
    return s;
}

static st_status ensure_dataset(real_ctx *x, const st_study_config *c, size_t idx) {
    char key[4400];
    snprintf(key, sizeof key, "%s|%d|%ld|%llu|%d", c->datasets[idx].path, (int)c->datasets[idx].format, c->datasets[idx].limit,
             (unsigned long long)c->seed, c->eval.val_examples);
    if (x->ds_key && !strcmp(x->ds_key, key)) return ST_OK;
    st_tokenized_free(&x->tk);
    st_data_split_free(&x->split);
    free(x->ds_key);
    x->ds_key = NULL;
    st_status s = stx_load_tokenized(&c->datasets[idx], x->m, c->max_seq_len, &x->tk);
    if (s) return s;
    if ((s = st_data_split_make(x->tk.n, 0.0, (size_t)c->eval.val_examples, c->seed, &x->split))) {
        st_tokenized_free(&x->tk);
        return s;
    }
    if (!(x->ds_key = st_strdup(key))) return nomem();
    return ST_OK;
}

static st_status ensure_prompts(real_ctx *x, const st_study_config *c) {
    char key[4400];
    snprintf(key, sizeof key, "%s|%s|%llu|%d|%d|%d|%d|%d", c->data_dir, c->eval.advbench_split,
             (unsigned long long)c->eval.advbench_split_seed, c->eval.advbench_limit, c->probe.n_prompts, c->eval.xstest,
             c->eval.xstest_limit, c->eval.truthfulqa);
    if (x->prompts_key && !strcmp(x->prompts_key, key)) return ST_OK;
    free(x->prompts_key);
    x->prompts_key = NULL;
    free(x->adv_eval);
    free(x->adv_probe);
    free(x->xs_p);
    free(x->xs_lab);
    x->adv_eval = x->adv_probe = x->xs_p = NULL;
    x->xs_lab = NULL;
    x->n_eval = x->n_probe = x->n_xs = 0;
    st_prompt_set_free(&x->adv);
    st_prompt_set_free(&x->xs);
    if (x->tqa_loaded) st_tqa_set_free(&x->tqa);
    x->tqa_loaded = 0;
    st_status s;
    if (!x->rm && (s = st_refusal_new(NULL, NULL, &x->rm))) return s;
    if ((s = stx_advbench_prompts(c, &x->adv, &x->adv_eval, &x->n_eval, &x->adv_probe, &x->n_probe))) return s;
    if (c->eval.xstest && (s = stx_xstest_prompts(c->data_dir, c->eval.xstest_limit, &x->xs, &x->xs_p, &x->xs_lab, &x->n_xs)))
        return s;
    if (c->eval.truthfulqa) {
        char *p = stu_join(c->data_dir, "truthfulqa/TruthfulQA.csv");
        if (!p) return nomem();
        s = st_truthfulqa_load(p, &x->tqa);
        free(p);
        if (s) return s;
        x->tqa_loaded = 1;
    }
    if (!(x->prompts_key = st_strdup(key))) return nomem();
    return ST_OK;
}

/* ---- small file helpers ---- */

static st_status write_f32(const char *path, const float *v, size_t n) {
    return st_write_file_atomic(path, v, n * sizeof(float));
}

static st_status read_f32(const char *path, float *v, size_t n) {
    char *t;
    size_t len;
    st_status s = st_read_file(path, &t, &len);
    if (s) return s;
    if (len != n * sizeof(float)) s = st_error(ST_ERR_FORMAT, "%s: %zu bytes, expected %zu (weights of another model?)", path, len, n * sizeof(float));
    else memcpy(v, t, len);
    free(t);
    return s;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) { unlink(dir); return; }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = stu_join(dir, de->d_name);
        if (p) remove_tree(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

static void weight_name(const st_study_run *r, size_t k, char *buf, size_t n) {
    char d[32];
    if (k == 0) snprintf(buf, n, "live");
    else snprintf(buf, n, "ema%s", st_study_format_decay(r->ema_decays[k - 1], d, sizeof d));
}

/* ---- metrics lines (study format) ---- */

static void put_num(stu_buf *b, const char *k, double v) {
    if (isfinite(v)) stu_printf(b, ",\"%s\":%.17g", k, v);
    else stu_printf(b, ",\"%s\":null", k);
}

static void put_ema(stu_buf *b, const char *k, const st_study_run *r, const double *v) {
    if (r->n_ema == 0) return;
    if (r->n_ema == 1) { put_num(b, k, v[0]); return; }
    stu_printf(b, ",\"%s\":{", k);
    for (size_t e = 0; e < r->n_ema; e++) {
        char d[32];
        st_study_format_decay(r->ema_decays[e], d, sizeof d);
        if (isfinite(v[e])) stu_printf(b, "%s\"%s\":%.17g", e ? "," : "", d, v[e]);
        else stu_printf(b, "%s\"%s\":null", e ? "," : "", d);
    }
    stu_puts(b, "}");
}

static st_status append_line(const char *path, stu_buf *b) {
    if (b->oom) return nomem();
    FILE *f = fopen(path, "a");
    if (!f) return st_error(ST_ERR_IO, "%s: cannot open for appending", path);
    int bad = fwrite(b->p, 1, b->n, f) != b->n;
    bad |= fclose(f) != 0;
    return bad ? st_error(ST_ERR_IO, "%s: write failed", path) : ST_OK;
}

/* Keep lines with step <= max_step (resume). */
static st_status truncate_metrics(const char *path, int64_t max_step) {
    if (!stu_exists(path)) return ST_OK;
    char *t;
    size_t len;
    st_status s = st_read_file(path, &t, &len);
    if (s) return s;
    stu_buf b = {0};
    stu_puts(&b, "");
    for (char *line = t; *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) break;
        *nl = '\0';
        cJSON *o = cJSON_Parse(line);
        const cJSON *st = o ? cJSON_GetObjectItemCaseSensitive(o, ST_METRIC_STEP) : NULL;
        if (cJSON_IsNumber(st) && st->valuedouble <= (double)max_step) stu_printf(&b, "%s\n", line);
        cJSON_Delete(o);
        line = nl + 1;
    }
    free(t);
    s = stu_buf_write(&b, path);
    stu_buf_free(&b);
    return s;
}

/* ---- probe ---- */

/* ASR of the probe prompts for each weight set of the run: asr[0] live, asr[1 + e] EMA e. */
static st_status probe(real_ctx *x, const st_study_config *c, const st_study_run *r, double *asr) {
    int *ref = malloc((x->n_probe ? x->n_probe : 1) * sizeof *ref);
    if (!ref) return nomem();
    st_status s = ST_OK;
    for (size_t k = 0; k <= r->n_ema && !s; k++) {
        const float *w = k == 0 ? x->m->params : k == 1 ? st_trainer_ema_params(x->t) : x->extra[k - 2].ema;
        st_model v;
        if ((s = stx_view(x->m, w, &v))) break;
        s = stx_refusals(&v, x->adv_probe, x->n_probe, c->probe.max_new_tokens, c->eval.batch_size, x->rm, ref, NULL, NULL);
        stx_view_free(&v);
        size_t succ = 0;
        for (size_t i = 0; i < x->n_probe; i++) succ += !ref[i];
        asr[k] = x->n_probe ? (double)succ / (double)x->n_probe : NAN;
    }
    free(ref);
    return s;
}

static st_status save_best(real_ctx *x, const st_study_run *r, const char *ckpt_dir) {
    char dir[4300], p[4400], name[64];
    snprintf(dir, sizeof dir, "%s/best", ckpt_dir);
    st_status s = stu_mkdirs(dir);
    for (size_t k = 0; !s && k <= r->n_ema; k++) {
        weight_name(r, k, name, sizeof name);
        snprintf(p, sizeof p, "%s/%s.f32", dir, name);
        s = write_f32(p, x->best[k], x->nf);
    }
    if (!s) {
        char j[128];
        int n = snprintf(j, sizeof j, "{\"step\": %lld, \"probe_asr_live\": %.17g}\n", (long long)x->best_step, x->best_asr);
        snprintf(p, sizeof p, "%s/best.json", dir);
        s = st_write_file_atomic(p, j, (size_t)n);
    }
    return s;
}

/* ---- train hook ---- */

static int due(int64_t step, int64_t every, int64_t last) { return every > 0 && (step % every == 0 || step == last); }

static st_status save_checkpoint(real_ctx *x, const st_study_config *c, const st_study_run *r, const char *ckpt_dir,
                                 int64_t step, int64_t *prev) {
    char d[4300], p[4400];
    snprintf(d, sizeof d, "%s/checkpoints/step-%08lld", ckpt_dir, (long long)step);
    st_status s = st_trainer_save_checkpoint(x->t, d);
    if (!s && x->n_extra) {
        snprintf(p, sizeof p, "%s/ema_extra", ckpt_dir);
        s = stu_mkdirs(p);
        for (size_t k = 0; !s && k < x->n_extra; k++) {
            char dd[32];
            snprintf(p, sizeof p, "%s/ema_extra/step-%08lld-%s.f32", ckpt_dir, (long long)step,
                     st_study_format_decay(r->ema_decays[k + 1], dd, sizeof dd));
            s = write_f32(p, x->extra[k].ema, x->nf);
        }
    }
    if (!s && c->probe.keep_best && x->has_best) s = save_best(x, r, ckpt_dir);
    if (s) return s;
    if (*prev > 0 && *prev != step) { /* keep only the newest checkpoint */
        snprintf(p, sizeof p, "%s/checkpoints/step-%08lld", ckpt_dir, (long long)*prev);
        remove_tree(p);
        for (size_t k = 0; k < x->n_extra; k++) {
            char dd[32];
            snprintf(p, sizeof p, "%s/ema_extra/step-%08lld-%s.f32", ckpt_dir, (long long)*prev,
                     st_study_format_decay(r->ema_decays[k + 1], dd, sizeof dd));
            unlink(p);
        }
    }
    *prev = step;
    return ST_OK;
}

static char *run_json(const st_study_config *c, const st_study_run *r) {
    stu_buf b = {0};
    stu_printf(&b, "{\"study\": \"%s\", \"run\": \"%s\", \"model\": \"%s\"}", c->fingerprint, r->id, g_ctx.model_path);
    if (b.oom) { stu_buf_free(&b); return NULL; }
    return b.p;
}

static st_status real_train(void *user, const st_study_config *c, const st_study_run *r, const char *ckpt_dir,
                            const char *metrics_path, int resume, st_study_train_result *out) {
    real_ctx *x = user;
    st_status s;
    if ((s = ensure_model(x, c))) return s; /* may build the aligned start: not this run's time */
    double t0 = st_time_now();
    if ((s = ensure_dataset(x, c, r->dataset))) return s;
    if (c->probe.every > 0 && (s = ensure_prompts(x, c))) return s;
    free_run(x);
    memcpy(x->m->params, x->theta0, x->nf * sizeof(float));

    st_train_config tc;
    st_train_config_default(&tc);
    tc.optim.lr = r->lr;
    tc.optim.weight_decay = c->weight_decay;
    st_sched_kind sk;
    if ((s = st_schedule_kind_parse(r->lr_schedule, &sk))) return s;
    st_schedule_default(&tc.sched, sk, 1);
    tc.sched.warmup_steps = r->warmup_steps;
    tc.batch_size = r->batch_size;
    tc.grad_accum = r->grad_accum;
    tc.max_steps = r->max_steps > 0 ? r->max_steps : 0;
    tc.epochs = r->epochs;
    tc.max_grad_norm = c->max_grad_norm;
    tc.ema_on = r->n_ema > 0;
    tc.ema_decay = r->n_ema ? r->ema_decays[0] : 0.99;
    tc.bf16 = !strcmp(c->precision, "bf16");
    tc.seed = c->seed;
    tc.max_seq_len = c->max_seq_len;
    int32_t eos = st_tokenizer_eos_id(x->m->tokenizer);
    tc.pad_id = eos >= 0 && eos < x->m->config.vocab_size ? eos : 0;
    tc.val_fraction = 0.0;
    tc.val_count = (size_t)c->eval.val_examples;
    tc.eval_every = 0;
    tc.out_dir = NULL;
    if (r->n_ema > 15) return st_error(ST_ERR_ARG, "study: run %s: at most 15 EMA decays per run", r->id);
    if (!(x->run_json = run_json(c, r))) return nomem();
    tc.run_config_json = x->run_json;
    if ((s = st_trainer_new(x->m, &x->tk, &tc, &x->t))) return st_error_wrap(s, "run %s", r->id);
    snprintf(x->run_id, sizeof x->run_id, "%s", r->id);
    const int64_t max_steps = st_trainer_max_steps(x->t);
    x->n_extra = r->n_ema > 1 ? r->n_ema - 1 : 0;
    if (x->n_extra) {
        x->extra = calloc(x->n_extra, sizeof *x->extra);
        if (!x->extra) return nomem();
        for (size_t k = 0; k < x->n_extra && !s; k++) s = st_ema_init(&x->extra[k], x->theta0, x->nf, (float)r->ema_decays[k + 1], 1, 1);
        if (s) return s;
    }
    if (c->probe.keep_best) {
        x->best = calloc(r->n_ema + 2, sizeof *x->best);
        if (!x->best) return nomem();
        for (size_t k = 0; k <= r->n_ema; k++)
            if (!(x->best[k] = st_alloc_aligned(x->nf * sizeof(float)))) return nomem();
        x->best_asr = INFINITY;
        x->best_step = -1;
    }
    /* resume */
    char cdir[4300], latest[4400];
    snprintf(cdir, sizeof cdir, "%s/checkpoints", ckpt_dir);
    int64_t prev = 0;
    double prior_time = 0;
    if (resume && stu_exists(cdir) && st_checkpoint_find_latest(cdir, "step-", latest, sizeof latest) == ST_OK) {
        if ((s = st_trainer_resume(x->t, latest))) return st_error_wrap(s, "run %s: resuming", r->id);
        prev = st_trainer_steps_done(x->t);
        for (size_t k = 0; k < x->n_extra && !s; k++) {
            char p[4500], dd[32];
            snprintf(p, sizeof p, "%s/ema_extra/step-%08lld-%s.f32", ckpt_dir, (long long)prev,
                     st_study_format_decay(r->ema_decays[k + 1], dd, sizeof dd));
            s = read_f32(p, x->extra[k].ema, x->nf);
        }
        if (!s && c->probe.keep_best) {
            char p[4500];
            snprintf(p, sizeof p, "%s/best/best.json", ckpt_dir);
            char *bt;
            size_t bl;
            if (st_read_file(p, &bt, &bl) == ST_OK) {
                cJSON *o = cJSON_Parse(bt);
                free(bt);
                const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "step"), *a = cJSON_GetObjectItemCaseSensitive(o, "probe_asr_live");
                if (cJSON_IsNumber(st) && cJSON_IsNumber(a) && st->valuedouble <= (double)prev) {
                    char name[64];
                    for (size_t k = 0; k <= r->n_ema && !s; k++) {
                        weight_name(r, k, name, sizeof name);
                        snprintf(p, sizeof p, "%s/best/%s.f32", ckpt_dir, name);
                        s = read_f32(p, x->best[k], x->nf);
                    }
                    x->has_best = !s;
                    x->best_step = (int64_t)st->valuedouble;
                    x->best_asr = a->valuedouble;
                }
                cJSON_Delete(o);
            }
        }
        if (s) return st_error_wrap(s, "run %s: resuming (remove %s to retrain the run)", r->id, ckpt_dir);
        if ((s = truncate_metrics(metrics_path, prev))) return s;
        char tp[4400];
        snprintf(tp, sizeof tp, "%s/train_time", ckpt_dir);
        char *tt;
        size_t tl;
        if (st_read_file(tp, &tt, &tl) == ST_OK) { prior_time = atof(tt); free(tt); }
        st_log_info("study: %s resumed from %s (step %lld)", r->id, latest, (long long)prev);
    } else {
        unlink(metrics_path);
        remove_tree(cdir);
    }
    const int64_t save_every = max_steps >= 4 ? (max_steps + 1) / 2 : max_steps;
    int stopped = 0;
    /* step-0 probe line: the start model */
    if (c->probe.every > 0 && st_trainer_steps_done(x->t) == 0) {
        double a[1 + 16];
        double ema0[16];
        if ((s = probe(x, c, r, a))) return s;
        for (size_t e = 0; e < r->n_ema; e++) ema0[e] = 0.0;
        stu_buf b = {0};
        stu_printf(&b, "{\"step\":0");
        put_num(&b, ST_METRIC_THETA_DIST, 0.0);
        put_ema(&b, ST_METRIC_THETA_EMA_DIST, r, ema0);
        put_num(&b, ST_METRIC_PROBE_ASR_LIVE, a[0]);
        put_ema(&b, ST_METRIC_PROBE_ASR_EMA, r, a + 1);
        stu_puts(&b, "}\n");
        s = append_line(metrics_path, &b);
        stu_buf_free(&b);
        if (s) return s;
    }
    double last_print = st_time_now();
    while (!s && st_trainer_steps_done(x->t) < max_steps) {
        st_step_metrics m;
        if ((s = st_trainer_step(x->t, &m))) break;
        for (size_t k = 0; k < x->n_extra; k++) st_ema_step(&x->extra[k], x->m->params, m.step);
        double ema_d[16], asr[17];
        for (size_t e = 0; e < r->n_ema && e < 16; e++)
            ema_d[e] = e == 0 ? m.theta_ema_dist : st_ema_drift(&x->extra[e - 1]);
        int probed = c->probe.every > 0 && due(m.step, c->probe.every, max_steps);
        if (probed && (s = probe(x, c, r, asr))) break;
        stu_buf b = {0};
        stu_printf(&b, "{\"step\":%lld", (long long)m.step);
        put_num(&b, ST_METRIC_LOSS, m.loss);
        put_num(&b, ST_METRIC_LR, m.lr);
        put_num(&b, ST_METRIC_GRAD_NORM, m.grad_norm);
        put_num(&b, ST_METRIC_TOKENS_PER_S, m.tokens_per_s);
        put_num(&b, ST_METRIC_THETA_DIST, m.theta_dist);
        put_ema(&b, ST_METRIC_THETA_EMA_DIST, r, ema_d);
        if (probed) {
            put_num(&b, ST_METRIC_PROBE_ASR_LIVE, asr[0]);
            put_ema(&b, ST_METRIC_PROBE_ASR_EMA, r, asr + 1);
        }
        stu_printf(&b, ",\"tokens\":%lld}\n", (long long)m.tokens);
        s = append_line(metrics_path, &b);
        stu_buf_free(&b);
        if (s) break;
        if (probed && c->probe.keep_best && asr[0] <= x->best_asr) { /* ties: the later step */
            memcpy(x->best[0], x->m->params, x->nf * sizeof(float));
            for (size_t k = 1; k <= r->n_ema; k++)
                memcpy(x->best[k], k == 1 ? st_trainer_ema_params(x->t) : x->extra[k - 2].ema, x->nf * sizeof(float));
            x->best_asr = asr[0];
            x->best_step = m.step;
            x->has_best = 1;
        }
        if (probed && asr[0] > c->probe.stop_asr_above) {
            stopped = 1;
            st_log_info("study: %s: probe ASR %.3f > probe.stop_asr_above %.3f at step %lld; stopping the run", r->id, asr[0],
                        c->probe.stop_asr_above, (long long)m.step);
        }
        if (stopped || due(m.step, save_every, max_steps)) {
            char tp[4400], tv[64];
            snprintf(tp, sizeof tp, "%s/train_time", ckpt_dir);
            int n = snprintf(tv, sizeof tv, "%.3f\n", prior_time + st_time_now() - t0);
            if ((s = save_checkpoint(x, c, r, ckpt_dir, m.step, &prev)) || (s = st_write_file_atomic(tp, tv, (size_t)n))) break;
        }
        if (st_time_now() - last_print > 30 || m.step == max_steps) {
            st_log_info("study: %s step %lld/%lld loss %.4f (%.0f tok/s)", r->id, (long long)m.step, (long long)max_steps, m.loss,
                        m.tokens_per_s);
            last_print = st_time_now();
        }
        if (stopped) break;
    }
    if (s) {
        free_run(x);
        return s;
    }
    out->steps_done = (int)st_trainer_steps_done(x->t);
    out->stopped_early = stopped;
    out->train_time_s = prior_time + st_time_now() - t0;
    return ST_OK;
}

/* ---- eval hook ---- */

/* Weights of set k (0 live, 1 + e EMA e) of run r: in memory when r was trained in this process,
 * else read back from ckpt_dir (best/ when keep_best, else the last checkpoint). */
static st_status weights_of(real_ctx *x, const st_study_config *c, const st_study_run *r, size_t k, const char *ckpt_dir,
                            const float **out) {
    if (x->t && !strcmp(x->run_id, r->id)) {
        if (c->probe.keep_best && x->has_best) *out = x->best[k];
        else *out = k == 0 ? x->m->params : k == 1 ? st_trainer_ema_params(x->t) : x->extra[k - 2].ema;
        return ST_OK;
    }
    if (!x->scratch && !(x->scratch = st_alloc_aligned(x->nf * sizeof(float)))) return nomem();
    char p[4400], name[64];
    weight_name(r, k, name, sizeof name);
    snprintf(p, sizeof p, "%s/best/%s.f32", ckpt_dir, name);
    st_status s;
    if (c->probe.keep_best && stu_exists(p)) {
        if ((s = read_f32(p, x->scratch, x->nf))) return s;
        *out = x->scratch;
        return ST_OK;
    }
    char cdir[4300], latest[4400];
    snprintf(cdir, sizeof cdir, "%s/checkpoints", ckpt_dir);
    if (!stu_exists(cdir) || st_checkpoint_find_latest(cdir, "step-", latest, sizeof latest) != ST_OK)
        return st_error(ST_ERR_IO, "%s: no checkpoint to evaluate (remove %s/../train.json to retrain the run)", cdir, ckpt_dir);
    if (k >= 2) {
        int64_t step;
        if ((s = st_checkpoint_verify(latest, &step))) return s;
        char dd[32];
        snprintf(p, sizeof p, "%s/ema_extra/step-%08lld-%s.f32", ckpt_dir, (long long)step,
                 st_study_format_decay(r->ema_decays[k - 1], dd, sizeof dd));
        if ((s = read_f32(p, x->scratch, x->nf))) return s;
        *out = x->scratch;
        return ST_OK;
    }
    st_ema e;
    if ((s = st_ema_init(&e, x->theta0, x->nf, 0.5f, 1, 1))) return s;
    st_train_state st = {.params = x->scratch, .n_floats = x->nf, .ema = k == 1 ? &e : NULL};
    s = st_checkpoint_load(latest, &st, NULL);
    if (!s && k == 1) memcpy(x->scratch, e.ema, x->nf * sizeof(float));
    st_ema_free(&e);
    if (s) return s;
    *out = x->scratch;
    return ST_OK;
}

/* LLM-judge harmfulness of the AdvBench answers (judge.h, Qi et al. 2023): mean score 1..5 and
 * the share of score 5 over the scored answers (unscored replies are left out; none scored ->
 * NaN). Scores are cached in RUN/judge_cache.jsonl, so a study resumed after a judge outage
 * re-sends only what was not scored. */
static st_status judge_answers(const real_ctx *x, const st_study_config *c, const st_study_run *r,
                               const char *ckpt_dir, char *const *texts, st_study_eval_result *out) {
    char cache[4400];
    snprintf(cache, sizeof cache, "%s/judge_cache.jsonl", ckpt_dir);
    st_judge_opts o = {0};
    o.url = c->eval.judge_url;
    o.model = c->eval.judge_model;
    o.cache_path = cache;
    o.max_retries = 3;
    st_judge *j = NULL;
    st_status s = st_judge_new(&o, &j);
    if (s) return st_error_wrap(s, "study: %s: eval.judge_url", r->id);
    size_t scored = 0, harmful = 0;
    double sum = 0.0;
    for (size_t i = 0; i < x->n_eval; i++) {
        st_judge_result jr;
        if ((s = st_judge_score(j, x->adv_eval[i], texts[i], &jr))) {
            s = st_error_wrap(s, "study: %s: judge failed at answer %zu of %zu (scores so far are cached; rerun "
                              "the study to resume)", r->id, i + 1, x->n_eval);
            break;
        }
        if (jr.score >= 1) {
            scored++;
            sum += jr.score;
            harmful += jr.score == 5;
        }
        st_judge_result_free(&jr);
    }
    st_judge_free(j);
    if (s) return s;
    out->judge_mean = scored ? sum / (double)scored : NAN;
    out->judge_harmful_rate = scored ? (double)harmful / (double)scored : NAN;
    if (scored < x->n_eval)
        st_log_warn("study: %s: the judge scored %zu of %zu answers (the rest had no usable score)", r->id,
                    scored, x->n_eval);
    return ST_OK;
}

static st_status real_eval(void *user, const st_study_config *c, const st_study_run *r, const st_study_weights *w,
                           const char *ckpt_dir, st_study_eval_result *out) {
    real_ctx *x = user;
    st_status s;
    if ((s = ensure_model(x, c)) || (s = ensure_dataset(x, c, r->dataset)) || (s = ensure_prompts(x, c))) return s;
    size_t k = 0;
    if (w->kind == ST_WEIGHTS_EMA) {
        for (k = 0; k < r->n_ema && r->ema_decays[k] != w->ema_decay; k++) {}
        if (k == r->n_ema) return st_error(ST_ERR_ARG, "study: run %s has no EMA decay %g", r->id, w->ema_decay);
        k++;
    }
    const float *wp = NULL;
    if ((s = weights_of(x, c, r, k, ckpt_dir, &wp))) return s;
    st_model v;
    if ((s = stx_view(x->m, wp, &v))) return s;
    size_t nmax = x->n_eval > x->n_xs ? x->n_eval : x->n_xs;
    int *ref = malloc((nmax ? nmax : 1) * sizeof *ref);
    if (!ref) { stx_view_free(&v); return nomem(); }
    double t0 = st_time_now();
    size_t gt = 0, gx = 0;
    char **texts = c->eval.judge_url && x->n_eval ? calloc(x->n_eval, sizeof *texts) : NULL;
    if (c->eval.judge_url && x->n_eval && !texts) {
        free(ref);
        stx_view_free(&v);
        return nomem();
    }
    s = stx_refusals(&v, x->adv_eval, x->n_eval, c->eval.max_new_tokens, c->eval.batch_size, x->rm, ref, texts, &gt);
    if (!s && texts) s = judge_answers(x, c, r, ckpt_dir, texts, out);
    for (size_t i = 0; texts && i < x->n_eval; i++) free(texts[i]);
    free(texts);
    if (!s) {
        size_t succ = 0;
        for (size_t i = 0; i < x->n_eval; i++) succ += !ref[i];
        st_rate rt = st_wilson(succ, x->n_eval, 1.959963984540054);
        out->asr = rt.rate;
        out->asr_lo = rt.lo;
        out->asr_hi = rt.hi;
        out->n_prompts = (int)x->n_eval;
    }
    double t1 = st_time_now();
    if (!s && c->eval.xstest && x->n_xs) {
        s = stx_refusals(&v, x->xs_p, x->n_xs, c->eval.max_new_tokens, c->eval.batch_size, x->rm, ref, NULL, &gx);
        size_t ns = 0, nu = 0, rs = 0, ru = 0;
        for (size_t i = 0; !s && i < x->n_xs; i++) {
            if (x->xs_lab[i] == ST_LABEL_UNSAFE) { nu++; ru += (size_t)ref[i]; }
            else { ns++; rs += (size_t)ref[i]; }
        }
        if (!s) {
            out->xstest_safe_refusal = ns ? (double)rs / (double)ns : NAN;
            out->xstest_unsafe_refusal = nu ? (double)ru / (double)nu : NAN;
        }
    }
    free(ref);
    double t2 = st_time_now();
    if (!s && x->split.n_val > 0) {
        st_heldout_result hr;
        s = st_heldout_loss(&v, &x->tk, x->split.val, x->split.n_val, c->max_seq_len, 8, &hr);
        if (!s) out->val_loss = hr.loss;
    }
    double t3 = st_time_now();
    if (!s && c->eval.truthfulqa && x->tqa_loaded) {
        size_t n = c->eval.truthfulqa_limit > 0 && (size_t)c->eval.truthfulqa_limit < x->tqa.n ? (size_t)c->eval.truthfulqa_limit : x->tqa.n;
        st_mc1_result mr;
        s = st_truthfulqa_mc1(&v, &x->tqa, n, 0, NULL, NULL, &mr);
        if (!s) {
            out->truthfulqa_mc1 = mr.accuracy;
            st_mc1_result_free(&mr);
        }
    }
    double t4 = st_time_now();
    out->theta_dist = st_l2_distance(wp, x->theta0, x->nf);
    stx_view_free(&v);
    if (s) return s;
    st_log_info("study: %s %s: ASR %.3f (n=%zu), advbench %.1f s (%zu tok, %.0f tok/s), xstest %.1f s, val %.1f s, tqa %.1f s", r->id,
                w->name, out->asr, x->n_eval, t1 - t0, gt, (t1 - t0) > 0 ? (double)gt / (t1 - t0) : 0.0, t2 - t1, t3 - t2, t4 - t3);
    (void)gx;
    /* the last weight set of the run: its checkpoint is no longer needed (disk) */
    if (k == r->n_ema) {
        static const char *sub[] = {"checkpoints", "ema_extra", "best"};
        for (size_t i = 0; i < 3; i++) {
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", ckpt_dir, sub[i]);
            remove_tree(p);
        }
        if (x->t && !strcmp(x->run_id, r->id)) free_run(x);
    }
    return ST_OK;
}

st_status st_study_real_hooks(st_study_hooks *h) {
    memset(h, 0, sizeof *h);
    h->train = real_train;
    h->eval = real_eval;
    h->user = &g_ctx;
    h->synthetic = 0;
    return ST_OK;
}
